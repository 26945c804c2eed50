//! Scrape options and Secret references as manifests: accepted in full, refused with the field
//! and reason (the same CEL rules the apiserver runs, evaluated client-side), and `v1` Secret
//! documents read for local mode.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use metricshard_crds::manifest::{ManifestObject, parse_documents};

fn invalid(file: &str) -> Vec<String> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../e2e/testdata/invalid").join(file);
    parse_documents(&std::fs::read_to_string(path).unwrap())
        .into_iter()
        .filter_map(Result::err)
        .flat_map(|e| e.problems.into_iter().map(|p| p.to_string()))
        .collect()
}

#[test]
fn every_option_is_accepted_and_read() {
    let yaml = r#"
apiVersion: metricshard.io/v1alpha1
kind: MetricInput
metadata: {name: web, namespace: team-a}
spec:
  source:
    prometheus:
      staticTargets: ["10.0.0.1:443"]
      scheme: https
      honorLabels: true
      honorTimestamps: false
      sampleLimit: 1000
      labelLimit: 30
      labelNameLengthLimit: 128
      labelValueLengthLimit: 1024
      bodySizeLimit: 10MiB
      tlsConfig:
        ca: {secret: {name: scrape-tls, key: ca.crt}}
        cert: {secret: {name: scrape-tls, key: tls.crt}}
        keySecret: {name: scrape-tls, key: tls.key}
        serverName: metrics.internal
      authorization:
        credentials: {name: scrape-auth, key: token}
  outputs: [{name: console}]
"#;
    let objects = parse_documents(yaml);
    let Ok(ManifestObject::Input(input)) = &objects[0] else { panic!("{objects:?}") };
    let source = input.spec.source.prometheus.as_ref().unwrap();
    assert!(source.honor_labels);
    assert_eq!(source.honor_timestamps, Some(false));
    assert_eq!(source.body_size_limit.as_deref(), Some("10MiB"));
    assert_eq!(source.authorization.as_ref().unwrap().scheme(), "Bearer");
    let names: Vec<(&str, &str)> = source.secret_refs().iter().map(|s| (s.name.as_str(), s.key.as_str())).collect();
    assert_eq!(names, [("scrape-tls", "ca.crt"), ("scrape-tls", "tls.crt"), ("scrape-tls", "tls.key"), ("scrape-auth", "token")]);
}

#[test]
fn invalid_combinations_are_refused_with_field_and_reason() {
    for (file, expected) in [
        ("metricinput-basic-auth-and-authorization.yaml", "spec.source.prometheus: at most one of basicAuth and authorization may be set"),
        (
            "metricinput-authorization-type-basic.yaml",
            "spec.source.prometheus.authorization.type: authorization.type cannot be Basic; use basicAuth",
        ),
        (
            "metricinput-tls-cert-without-key.yaml",
            "spec.source.prometheus.tlsConfig: tlsConfig.cert and tlsConfig.keySecret must be set together",
        ),
        ("metricinput-body-size-limit-invalid.yaml", "spec.source.prometheus.bodySizeLimit"),
        ("metricinput-secret-ref-with-namespace.yaml", "spec.source.prometheus.authorization.credentials.namespace"),
        (
            "metricoutput-remote-write-basic-auth-and-authorization.yaml",
            "spec.protocol.remoteWrite: at most one of basicAuth and authorization may be set",
        ),
    ] {
        let problems = invalid(file);
        assert!(problems.iter().any(|p| p.starts_with(expected)), "{file}: {problems:?}");
    }
}

#[test]
fn secret_documents_are_read_and_bad_data_names_the_key_only() {
    let yaml = "apiVersion: v1\nkind: Secret\nmetadata: {name: auth, namespace: team-a}\ndata: {password: aHVudGVyMg==}\nstringData: {token: abc}\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: bad}\ndata: {password: 'hunter2!!'}\n";
    let results = parse_documents(yaml);
    let Ok(ManifestObject::Secret(secret)) = &results[0] else { panic!("{results:?}") };
    assert_eq!(secret.data["password"], b"hunter2");
    assert_eq!(secret.data["token"], b"abc");
    let error = results[1].as_ref().unwrap_err().to_string();
    assert_eq!(error, "document 2 (Secret default/bad): data.password: must be a base64 string");
}
