//! References to Kubernetes Secrets and the client settings built from them: HTTP basic
//! authentication, an `Authorization` header, and TLS. Field names and meanings follow the
//! Prometheus Operator's `SecretKeySelector`, `BasicAuth`, `SafeAuthorization` and
//! `SafeTLSConfig`, so a ServiceMonitor's settings carry over unchanged.
//!
//! A reference never names a namespace: a namespaced object (a `MetricInput`, a `MetricOutput`)
//! reads Secrets of its own namespace only; a `ClusterMetricOutput` reads Secrets of the
//! collectors' own namespace (the release namespace). See docs/design.md, "Secrets".

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// One key of one Secret, in the namespace of the object that holds the reference (for a
/// `ClusterMetricOutput`: the namespace the collectors run in).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeySelector {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key within the Secret's `data` (or `stringData`).
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// HTTP basic authentication, both parts read from Secrets.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BasicAuth {
    /// The Secret key holding the user name.
    pub username: SecretKeySelector,
    /// The Secret key holding the password.
    pub password: SecretKeySelector,
}

/// An `Authorization: <type> <credentials>` header, the credentials read from a Secret.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.type) || !self.type.matches('^[Bb][Aa][Ss][Ii][Cc]$')").message("authorization.type cannot be Basic; use basicAuth").field_path(".type"))]
pub struct Authorization {
    /// The scheme of the header; `Bearer` when unset. `Basic` is refused (use `basicAuth`).
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64), regex(pattern = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$"))]
    pub type_: Option<String>,
    /// The Secret key holding the credentials (the token).
    pub credentials: SecretKeySelector,
}

impl Authorization {
    /// The header scheme: `type`, or `Bearer` when unset.
    pub fn scheme(&self) -> &str {
        self.type_.as_deref().unwrap_or("Bearer")
    }
}

/// Where a PEM value comes from. Only Secrets for now; the wrapper keeps the shape of the
/// Prometheus Operator's `SecretOrConfigMap` so ConfigMaps can be added without a new field.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretOrConfigMap {
    /// The Secret key holding the PEM data.
    pub secret: SecretKeySelector,
}

/// TLS settings of an HTTPS client. Without `ca` the server is verified against the system
/// roots (the Mozilla set compiled into the collector).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.cert) == has(self.keySecret)").message("tlsConfig.cert and tlsConfig.keySecret must be set together"))]
pub struct TlsConfig {
    /// PEM certificates of the certificate authorities the server's certificate must chain to;
    /// they replace the system roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<SecretOrConfigMap>,
    /// PEM client certificate (chain) presented to the server; needs `keySecret`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<SecretOrConfigMap>,
    /// The Secret key holding the PEM private key of `cert`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_secret: Option<SecretKeySelector>,
    /// The name the server's certificate must be valid for (and the SNI sent); the target's
    /// host when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub server_name: Option<String>,
    /// Accept any server certificate. Only for testing: it makes TLS worthless against an
    /// active attacker.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure_skip_verify: bool,
}

impl TlsConfig {
    /// Every Secret key these settings read.
    pub fn secret_refs(&self) -> impl Iterator<Item = &SecretKeySelector> {
        [self.ca.as_ref().map(|c| &c.secret), self.cert.as_ref().map(|c| &c.secret), self.key_secret.as_ref()]
            .into_iter()
            .flatten()
    }
}

impl BasicAuth {
    /// Both Secret keys.
    pub fn secret_refs(&self) -> impl Iterator<Item = &SecretKeySelector> {
        [&self.username, &self.password].into_iter()
    }
}

impl crate::PrometheusSource {
    /// Every Secret key the scrape settings read, with the field that names it.
    pub fn secret_refs(&self) -> Vec<&SecretKeySelector> {
        let tls = self.tls_config.iter().flat_map(TlsConfig::secret_refs);
        let basic = self.basic_auth.iter().flat_map(BasicAuth::secret_refs);
        let authorization = self.authorization.iter().map(|a| &a.credentials);
        tls.chain(basic).chain(authorization).collect()
    }
}

impl crate::OutputProtocol {
    /// Every Secret key the protocol's settings read.
    pub fn secret_refs(&self) -> Vec<&SecretKeySelector> {
        let remote_write = self.remote_write.iter().flat_map(|rw| {
            rw.basic_auth.iter().flat_map(BasicAuth::secret_refs).chain(rw.authorization.iter().map(|a| &a.credentials))
        });
        let influx = self.influx.iter().flat_map(|influx| influx.basic_auth.iter().flat_map(BasicAuth::secret_refs));
        remote_write.chain(influx).collect()
    }
}

/// A core `v1` Secret read from a manifest (local mode): its identity and decoded data. Its
/// `Debug` lists key names only, so a value can never reach a log line.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretDocument {
    /// Namespace (`default` when the document names none).
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Every key with its decoded value: `data` (base64) overlaid by `stringData`, as the
    /// apiserver merges them.
    pub data: std::collections::BTreeMap<String, Vec<u8>>,
}

impl std::fmt::Debug for SecretDocument {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretDocument")
            .field("namespace", &self.namespace)
            .field("name", &self.name)
            .field("keys", &self.data.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl SecretDocument {
    /// Reads a `v1` Secret document. Problems name the field and never quote a value.
    pub fn from_json(json: &serde_json::Value) -> Result<Self, Vec<(String, String)>> {
        let mut problems = Vec::new();
        let name = json.pointer("/metadata/name").and_then(serde_json::Value::as_str).unwrap_or_default().to_owned();
        if name.is_empty() {
            problems.push(("metadata.name".to_owned(), "required field is missing".to_owned()));
        }
        let namespace =
            json.pointer("/metadata/namespace").and_then(serde_json::Value::as_str).unwrap_or("default").to_owned();
        let mut data = std::collections::BTreeMap::new();
        let mut read = |field: &str, decode: &dyn Fn(&str) -> Option<Vec<u8>>, what: &str| {
            let Some(value) = json.get(field) else { return };
            let Some(entries) = value.as_object() else {
                problems.push((field.to_owned(), "must be a map of key to string".to_owned()));
                return;
            };
            for (key, value) in entries {
                let path = format!("{field}.{key}");
                if !valid_key(key) {
                    problems.push((path, "a Secret key must consist of alphanumerics, '-', '_' or '.'".to_owned()));
                    continue;
                }
                match value.as_str().and_then(decode) {
                    Some(bytes) => {
                        data.insert(key.clone(), bytes);
                    }
                    None => problems.push((path, format!("must be {what}"))),
                }
            }
        };
        read("data", &base64_decode, "a base64 string");
        read("stringData", &|text| Some(text.as_bytes().to_vec()), "a string");
        if problems.is_empty() { Ok(Self { namespace, name, data }) } else { Err(problems) }
    }
}

fn valid_key(key: &str) -> bool {
    !key.is_empty() && key.len() <= 253 && key.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Standard base64 with canonical padding, as the apiserver encodes Secret data; whitespace is
/// refused.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_decodes_like_the_apiserver_encodes() {
        assert_eq!(base64_decode("aHVudGVyMg==").unwrap(), b"hunter2");
        assert_eq!(base64_decode("YWJj").unwrap(), b"abc");
        assert_eq!(base64_decode("YWI=").unwrap(), b"ab");
        assert_eq!(base64_decode("").unwrap(), b"");
        for bad in ["YWJ", "YW=j", "Y===", "YWJj\n", "YW==YWJj"] {
            assert!(base64_decode(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn a_secret_merges_string_data_over_data_and_never_quotes_values() {
        let json = serde_json::json!({
            "metadata": {"name": "auth", "namespace": "team-a"},
            "data": {"password": "aHVudGVyMg==", "user": "YWRtaW4="},
            "stringData": {"user": "root"},
        });
        let secret = SecretDocument::from_json(&json).unwrap();
        assert_eq!(secret.data["password"], b"hunter2");
        assert_eq!(secret.data["user"], b"root");
        assert_eq!((secret.namespace.as_str(), secret.name.as_str()), ("team-a", "auth"));
        assert!(!format!("{secret:?}").contains("hunter2"));

        let bad = serde_json::json!({"metadata": {"name": "auth"}, "data": {"password": "hunter2!"}});
        let problems = SecretDocument::from_json(&bad).unwrap_err();
        assert_eq!(problems, vec![("data.password".to_owned(), "must be a base64 string".to_owned())]);
    }
}
