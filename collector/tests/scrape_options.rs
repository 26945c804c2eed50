//! Scrape options end to end: the real collector binary in local mode scrapes loopback targets
//! and writes to a file output, which the tests read back.
//! - gzip bodies are asked for and decoded, and `bodySizeLimit` applies to the decoded size;
//! - `honorLabels`, `honorTimestamps`, `sampleLimit` and `labelLimit` with Prometheus' semantics;
//! - `tlsConfig` against an HTTPS target that demands a client certificate (test CA from rcgen);
//! - `basicAuth` and `authorization` from `kind: Secret` documents; editing a Secret restarts
//!   only the input using it; a missing Secret sends nothing; no value ever reaches the log.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use common::{Collector, output_manifest, within, write_atomically};
use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// 300 series: about 7 KiB of text that gzip shrinks well below 4 KiB.
fn gzip_body_text() -> String {
    (0..300).map(|i| format!("gz_series{{n=\"{i}\"}} {i}\n")).collect()
}

fn gzip(text: &str) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(text.as_bytes()).unwrap();
    encoder.finish().unwrap()
}

/// `/gzip` answers gzip-encoded (and records the Accept-Encoding it was asked with);
/// `/pushed` exposes a sample with its own `job`, `instance` and timestamp, and a second one.
async fn start_plain_targets() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let accept_encodings = Arc::new(Mutex::new(Vec::new()));
    let seen = accept_encodings.clone();
    let app = axum::Router::new()
        .route(
            "/gzip",
            get(move |headers: HeaderMap| {
                let seen = seen.clone();
                async move {
                    let accepted = headers.get(header::ACCEPT_ENCODING).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
                    seen.lock().unwrap().push(accepted);
                    (
                        [(header::CONTENT_TYPE, "text/plain; version=0.0.4"), (header::CONTENT_ENCODING, "gzip")],
                        gzip(&gzip_body_text()),
                    )
                }
            }),
        )
        .route(
            "/pushed",
            get(|| async {
                "# TYPE pushed gauge\npushed{job=\"from-target\",instance=\"x\"} 1 1700000000000\n# TYPE second gauge\nsecond 2\n"
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (address, accept_encodings)
}

fn input(name: &str, target: SocketAddr, path: &str, options: &str) -> String {
    format!(
        "apiVersion: metricshard.io/v1alpha1\nkind: MetricInput\nmetadata: {{name: {name}, namespace: demo}}\nspec:\n  interval: 200ms\n  timeout: 150ms\n  source:\n    prometheus:\n      staticTargets: [\"{target}\"]\n      metricsPath: {path}\n{options}  outputs: [{{name: file}}]\n"
    )
}

fn written(file: &Path) -> String {
    std::fs::read_to_string(file).unwrap_or_default()
}

/// Lines of the file output for metric `name` of the input `demo/<job>`.
fn lines_of(file: &Path, name: &str, job: &str) -> Vec<String> {
    written(file)
        .lines()
        .filter(|line| line.starts_with(&format!("{name}{{")) && line.contains(&format!("job=\"demo/{job}\"")))
        .map(str::to_owned)
        .collect()
}

/// The value of the last `name` line of input `job`.
fn last_value(file: &Path, name: &str, job: &str) -> Option<f64> {
    lines_of(file, name, job).last().and_then(|line| line.split(' ').nth(1)?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_honor_options_and_limits_behave_as_in_prometheus() {
    let (target, accept_encodings) = start_plain_targets().await;
    // The premise of the body-size check: compressed below the limit, decoded above it.
    assert!(gzip(&gzip_body_text()).len() < 4096 && gzip_body_text().len() > 4096);
    let work = tempfile::tempdir().unwrap();
    let manifests = work.path().join("manifests");
    std::fs::create_dir(&manifests).unwrap();
    let file = work.path().join("samples.prom");
    write_atomically(&manifests.join("output.yaml"), &output_manifest(&file));
    let inputs = [
        input("gzip-full", target, "/gzip", ""),
        input("gzip-limited", target, "/gzip", "      bodySizeLimit: 4KiB\n"),
        input("default", target, "/pushed", ""),
        input("honored", target, "/pushed", "      honorLabels: true\n      honorTimestamps: false\n"),
        input("sample-limited", target, "/pushed", "      sampleLimit: 1\n"),
        input("label-limited", target, "/pushed", "      labelLimit: 4\n"),
        input("label-fits", target, "/pushed", "      labelLimit: 5\n      sampleLimit: 2\n"),
    ];
    write_atomically(&manifests.join("inputs.yaml"), &inputs.join("---\n"));
    let collector = Collector::start(&manifests, work.path());

    within("every input has reported up", Duration::from_secs(15), || async {
        ["gzip-full", "gzip-limited", "default", "honored", "sample-limited", "label-limited", "label-fits"]
            .iter()
            .all(|job| last_value(&file, "up", job).is_some())
    })
    .await;

    // gzip: asked for, decoded, every series arrives.
    assert!(accept_encodings.lock().unwrap().iter().all(|accepted| accepted.contains("gzip")), "{accept_encodings:?}");
    assert_eq!(last_value(&file, "up", "gzip-full"), Some(1.0));
    assert!(written(&file).contains(&format!("gz_series{{instance=\"{target}\",job=\"demo/gzip-full\",n=\"299\"}} 299 ")));
    // The limit is on the decoded body: the small compressed body still fails the scrape.
    assert_eq!(last_value(&file, "up", "gzip-limited"), Some(0.0));
    assert!(lines_of(&file, "gz_series", "gzip-limited").is_empty());

    // honor_labels false: the target's labels win, the exposed ones become exported_*; the
    // exposed timestamp is kept.
    let default = lines_of(&file, "pushed", "default");
    assert_eq!(
        default[0],
        format!("pushed{{exported_instance=\"x\",exported_job=\"from-target\",instance=\"{target}\",job=\"demo/default\"}} 1 1700000000000")
    );
    // honor_labels true: the exposed labels win; honor_timestamps false: the tick time is used.
    let honored: Vec<String> =
        written(&file).lines().filter(|l| l.starts_with("pushed{instance=\"x\",job=\"from-target\"}")).map(str::to_owned).collect();
    assert!(!honored.is_empty(), "{}", written(&file));
    let timestamp: i64 = honored[0].rsplit(' ').next().unwrap().parse().unwrap();
    assert!(timestamp > 1_700_000_000_000 + 1000, "{}", honored[0]);
    // The honoring input's other sample, without labels of its own, gets the target's.
    assert!(!lines_of(&file, "second", "honored").is_empty());

    // sample_limit and label_limit fail the whole scrape: up 0, nothing else, but
    // scrape_samples_scraped still counts what the body held.
    for job in ["sample-limited", "label-limited"] {
        assert_eq!(last_value(&file, "up", job), Some(0.0), "{job}");
        assert_eq!(last_value(&file, "scrape_samples_scraped", job), Some(2.0), "{job}");
        assert!(lines_of(&file, "second", job).is_empty(), "{job} wrote samples past its limit");
    }
    assert_eq!(last_value(&file, "up", "label-fits"), Some(1.0));
    assert_eq!(last_value(&file, "second", "label-fits"), Some(2.0));
    let log = collector.log();
    assert!(log.contains("sample_limit exceeded: 2 samples after relabeling, limit 1"), "{log}");
    assert!(log.contains("label_limit exceeded (metric: pushed, number of labels: 5, limit: 4)"), "{log}");
    assert!(log.contains("body size limit exceeded: more than 4096 bytes (uncompressed)"), "{log}");
}

// ---------------------------------------------------------------------------------------------
// TLS

struct Pki {
    ca_pem: String,
    server: Arc<rustls::ServerConfig>,
    client_cert_pem: String,
    client_key_pem: String,
}

/// A CA; a server certificate valid only for `metrics.internal` (not for 127.0.0.1, so the
/// scrape must name it with `serverName`); a client certificate the server demands.
fn pki() -> Pki {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let ca = Issuer::new(ca_params, ca_key);

    let server_key = KeyPair::generate().unwrap();
    let mut server_params = CertificateParams::new(vec!["metrics.internal".to_owned()]).unwrap();
    server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_cert = server_params.signed_by(&server_key, &ca).unwrap();

    let client_key = KeyPair::generate().unwrap();
    let mut client_params = CertificateParams::new(vec!["scraper".to_owned()]).unwrap();
    client_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client_cert = client_params.signed_by(&client_key, &ca).unwrap();

    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca_cert.der().clone()).unwrap();
    let client_verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone()).build().unwrap();
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(client_verifier)
        .with_single_cert(
            vec![server_cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::try_from(server_key.serialize_der()).unwrap(),
        )
        .unwrap();
    Pki {
        ca_pem: ca_cert.pem(),
        server: Arc::new(server),
        client_cert_pem: client_cert.pem(),
        client_key_pem: client_key.serialize_pem(),
    }
}

/// An HTTPS target: a minimal HTTP/1.1 responder behind rustls; counts completed scrapes.
async fn start_tls_target(config: Arc<rustls::ServerConfig>) -> (SocketAddr, Arc<Mutex<usize>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let served = Arc::new(Mutex::new(0));
    let count = served.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let (acceptor, count) = (acceptor.clone(), count.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                let mut request = Vec::new();
                let mut chunk = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&chunk[..n]),
                    }
                }
                let body = "# TYPE tls_demo gauge\ntls_demo 1\n";
                let response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                if tls.write_all(response.as_bytes()).await.is_ok() {
                    *count.lock().unwrap() += 1;
                }
                let _ = tls.shutdown().await;
            });
        }
    });
    (address, served)
}

fn indent(text: &str, spaces: usize) -> String {
    text.lines().map(|line| format!("{}{line}\n", " ".repeat(spaces))).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_settings_come_from_secrets_and_failures_name_tls() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let pki = pki();
    let (target, served) = start_tls_target(pki.server.clone()).await;
    let work = tempfile::tempdir().unwrap();
    let manifests = work.path().join("manifests");
    std::fs::create_dir(&manifests).unwrap();
    let file = work.path().join("samples.prom");
    write_atomically(&manifests.join("output.yaml"), &output_manifest(&file));
    let secret = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: scrape-tls, namespace: demo}}\nstringData:\n  ca.crt: |\n{}  tls.crt: |\n{}  tls.key: |\n{}",
        indent(&pki.ca_pem, 4),
        indent(&pki.client_cert_pem, 4),
        indent(&pki.client_key_pem, 4)
    );
    write_atomically(&manifests.join("secret.yaml"), &secret);
    let tls = |fields: &[&str]| {
        let mut text = "      scheme: https\n      tlsConfig:\n".to_owned();
        for field in fields {
            text.push_str(match *field {
                "ca" => "        ca: {secret: {name: scrape-tls, key: ca.crt}}\n",
                "client" => "        cert: {secret: {name: scrape-tls, key: tls.crt}}\n        keySecret: {name: scrape-tls, key: tls.key}\n",
                "name" => "        serverName: metrics.internal\n",
                "insecure" => "        insecureSkipVerify: true\n",
                other => panic!("{other}"),
            });
        }
        text
    };
    let inputs = [
        input("tls-ok", target, "/metrics", &tls(&["ca", "client", "name"])),
        input("tls-no-ca", target, "/metrics", &tls(&["client", "name"])),
        input("tls-wrong-name", target, "/metrics", &tls(&["ca", "client"])),
        input("tls-no-client-cert", target, "/metrics", &tls(&["ca", "name"])),
        input("tls-insecure", target, "/metrics", &tls(&["client", "insecure"])),
    ];
    write_atomically(&manifests.join("inputs.yaml"), &inputs.join("---\n"));
    let collector = Collector::start(&manifests, work.path());

    let jobs = ["tls-ok", "tls-no-ca", "tls-wrong-name", "tls-no-client-cert", "tls-insecure"];
    within("every input has reported up", Duration::from_secs(15), || async {
        jobs.iter().all(|job| last_value(&file, "up", job).is_some())
    })
    .await;
    assert_eq!(last_value(&file, "up", "tls-ok"), Some(1.0));
    assert_eq!(last_value(&file, "tls_demo", "tls-ok"), Some(1.0));
    assert_eq!(last_value(&file, "up", "tls-insecure"), Some(1.0));
    for job in ["tls-no-ca", "tls-wrong-name", "tls-no-client-cert"] {
        assert_eq!(last_value(&file, "up", job), Some(0.0), "{job}");
        assert!(lines_of(&file, "tls_demo", job).is_empty(), "{job}");
    }
    assert!(*served.lock().unwrap() >= 2);
    let log = collector.log();
    let reason = |job: &str| {
        log.lines().find(|line| line.contains(&format!("input=demo/{job}")) && line.contains("https://")).unwrap_or_default().to_owned()
    };
    assert!(reason("tls-no-ca").contains("TLS handshake failed") && reason("tls-no-ca").contains("UnknownIssuer"), "{log}");
    assert!(reason("tls-wrong-name").contains("TLS handshake failed") && reason("tls-wrong-name").contains("not valid for name"), "{log}");
    assert!(reason("tls-no-client-cert").contains("TLS handshake failed") && reason("tls-no-client-cert").contains("CertificateRequired"), "{log}");
    assert!(!log.contains("PRIVATE KEY"), "key material reached the log");
}

// ---------------------------------------------------------------------------------------------
// Authentication from Secrets

/// `/basic` wants `user:pass`; `/bearer` wants the token it is told; anything else is 401.
async fn start_auth_target(token: Arc<Mutex<String>>) -> SocketAddr {
    let basic_expected = format!("Basic {}", base64("user:pa55word-x"));
    let app = axum::Router::new()
        .route(
            "/basic",
            get(move |headers: HeaderMap| {
                let ok = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) == Some(basic_expected.as_str());
                async move { if ok { (StatusCode::OK, "basic_ok 1\n").into_response() } else { StatusCode::UNAUTHORIZED.into_response() } }
            }),
        )
        .route(
            "/bearer",
            get(move |headers: HeaderMap| {
                let expected = format!("Bearer {}", token.lock().unwrap());
                let ok = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) == Some(expected.as_str());
                async move { if ok { (StatusCode::OK, "bearer_ok 1\n").into_response() } else { StatusCode::UNAUTHORIZED.into_response() } }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    address
}

fn base64(text: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in text.as_bytes().chunks(3) {
        let group = chunk.iter().enumerate().fold(0u32, |acc, (i, &b)| acc | (u32::from(b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((group >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn auth_secret(token: &str) -> String {
    // `data` (base64) for the basic credentials, `stringData` for the token: both forms work.
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: scrape-auth, namespace: demo}}\ndata:\n  username: {}\n  password: {}\n  wrong: {}\nstringData:\n  token: {token}\n",
        base64("user"),
        base64("pa55word-x"),
        base64("guess")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_come_from_secrets_and_an_edit_restarts_only_their_user() {
    let token = Arc::new(Mutex::new("t0ken-one".to_owned()));
    let target = start_auth_target(token.clone()).await;
    let work = tempfile::tempdir().unwrap();
    let manifests = work.path().join("manifests");
    std::fs::create_dir(&manifests).unwrap();
    let file = work.path().join("samples.prom");
    write_atomically(&manifests.join("output.yaml"), &output_manifest(&file));
    write_atomically(&manifests.join("secret.yaml"), &auth_secret("t0ken-one"));
    // A Secret of the same name in another namespace must never be used by demo's inputs.
    write_atomically(
        &manifests.join("other-namespace.yaml"),
        "apiVersion: v1\nkind: Secret\nmetadata: {name: elsewhere, namespace: other}\nstringData: {token: t0ken-one}\n",
    );
    let basic = |password_key: &str| {
        format!("      basicAuth:\n        username: {{name: scrape-auth, key: username}}\n        password: {{name: scrape-auth, key: {password_key}}}\n")
    };
    let bearer = |secret: &str| format!("      authorization:\n        credentials: {{name: {secret}, key: token}}\n");
    let inputs = [
        input("basic", target, "/basic", &basic("password")),
        input("basic-wrong", target, "/basic", &basic("wrong")),
        input("bearer", target, "/bearer", &bearer("scrape-auth")),
        input("missing", target, "/bearer", &bearer("elsewhere")),
    ];
    write_atomically(&manifests.join("inputs.yaml"), &inputs.join("---\n"));
    let collector = Collector::start(&manifests, work.path());

    within("the inputs with Secrets report up", Duration::from_secs(15), || async {
        ["basic", "basic-wrong", "bearer"].iter().all(|job| last_value(&file, "up", job).is_some())
    })
    .await;
    assert_eq!(last_value(&file, "up", "basic"), Some(1.0));
    assert_eq!(last_value(&file, "basic_ok", "basic"), Some(1.0));
    assert_eq!(last_value(&file, "up", "bearer"), Some(1.0));
    assert_eq!(last_value(&file, "up", "basic-wrong"), Some(0.0));
    let log = collector.log();
    assert!(
        log.lines().any(|l| l.contains("input=demo/basic-wrong") && l.contains("server returned HTTP status 401 Unauthorized")),
        "{log}"
    );
    // The Secret of the same name in namespace `other` is not visible from `demo`: nothing is
    // scraped or sent, and the reason names the Secret.
    within("the missing Secret is reported", Duration::from_secs(5), || async {
        collector.log().lines().any(|l| {
            l.contains("input=demo/missing") && l.contains("gather failed") && l.contains("Secret demo/elsewhere not found")
        })
    })
    .await;
    assert!(written(&file).lines().all(|l| !l.contains("job=\"demo/missing\"")), "an input without its Secret sent samples");

    // Rotating the token: the target wants the new one, the Secret is edited; only the input
    // that reads the token restarts.
    let starts = |job: &'static str| format!("metricshard_input_task_starts_total{{input=\"demo/{job}\"}}");
    for job in ["basic", "basic-wrong", "bearer", "missing"] {
        assert_eq!(collector.metric(&starts(job)).await, Some(1.0), "{job}");
    }
    *token.lock().unwrap() = "t0ken-two".to_owned();
    within("the old token is refused", Duration::from_secs(5), || async { last_value(&file, "up", "bearer") == Some(0.0) }).await;
    write_atomically(&manifests.join("secret.yaml"), &auth_secret("t0ken-two"));
    within("bearer restarts with the new token", Duration::from_secs(5), || async {
        collector.metric(&starts("bearer")).await == Some(2.0)
    })
    .await;
    within("bearer scrapes again", Duration::from_secs(5), || async { last_value(&file, "up", "bearer") == Some(1.0) }).await;
    for job in ["basic", "basic-wrong", "missing"] {
        assert_eq!(collector.metric(&starts(job)).await, Some(1.0), "editing the token restarted {job}");
    }

    // Creating the missing Secret starts that input's scrapes.
    write_atomically(
        &manifests.join("missing.yaml"),
        "apiVersion: v1\nkind: Secret\nmetadata: {name: elsewhere, namespace: demo}\nstringData: {token: t0ken-two}\n",
    );
    within("the input with its Secret now present scrapes", Duration::from_secs(5), || async {
        last_value(&file, "up", "missing") == Some(1.0)
    })
    .await;

    let log = collector.log();
    for value in ["t0ken-one", "t0ken-two", "pa55word-x", &base64("pa55word-x"), &base64("user:pa55word-x")] {
        assert!(!log.contains(value), "the log contains a secret value {value:?}:\n{log}");
    }
}
