//! Secret values for inputs and outputs, and the fingerprint that restarts exactly the tasks
//! and outputs whose Secrets changed.
//!
//! The [`SecretStore`] holds the data of the Secrets the desired state may reference (read
//! from `kind: Secret` documents in local mode, watched from the apiserver in cluster mode).
//! A [`SecretResolver`] resolves the references of one object, always in that object's own
//! namespace — a reference has no namespace field, so a cross-namespace reference cannot be
//! expressed — and accumulates a fingerprint (a hash of what it read, never the value) that
//! the runtime compares alongside the object's generation.
//!
//! Values never appear in errors, logs or `Debug` output: errors name the Secret and key only.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use metricshard_crds::SecretKeySelector;

use crate::schedule::stable_hash;

/// Why a Secret reference could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// No Secret of that name in the namespace (or the collector may not read it).
    #[error("{field}: Secret {namespace}/{name} not found")]
    NotFound {
        /// The referencing field.
        field: String,
        /// Namespace searched.
        namespace: String,
        /// Secret name.
        name: String,
    },
    /// The Secret exists but has no such key.
    #[error("{field}: Secret {namespace}/{name} has no key {key:?}")]
    KeyMissing {
        /// The referencing field.
        field: String,
        /// Namespace.
        namespace: String,
        /// Secret name.
        name: String,
        /// Missing key.
        key: String,
    },
    /// The value must be text (a user name, a password, a token, PEM) and is not UTF-8.
    #[error("{field}: key {key:?} of Secret {namespace}/{name} is not UTF-8 text")]
    NotText {
        /// The referencing field.
        field: String,
        /// Namespace.
        namespace: String,
        /// Secret name.
        name: String,
        /// The key.
        key: String,
    },
}

impl SecretError {
    /// Short static category for metric labels and status reasons.
    pub fn category(&self) -> &'static str {
        "secret"
    }
}

/// The data of one Secret.
pub type SecretData = BTreeMap<String, Vec<u8>>;

/// Secrets by namespace and name.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretStore {
    secrets: BTreeMap<(String, String), Arc<SecretData>>,
    /// Where a `ClusterMetricOutput`'s references are resolved: the collectors' namespace.
    cluster_namespace: String,
}

// Hand-written: names only, never values.
impl fmt::Debug for SecretStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretStore")
            .field("secrets", &self.secrets.keys().map(|(ns, name)| format!("{ns}/{name}")).collect::<Vec<_>>())
            .field("cluster_namespace", &self.cluster_namespace)
            .finish()
    }
}

impl SecretStore {
    /// An empty store resolving `ClusterMetricOutput` references in `cluster_namespace`.
    pub fn new(cluster_namespace: impl Into<String>) -> Self {
        Self { secrets: BTreeMap::new(), cluster_namespace: cluster_namespace.into() }
    }

    /// Adds or replaces a Secret.
    pub fn insert(&mut self, namespace: impl Into<String>, name: impl Into<String>, data: SecretData) {
        self.secrets.insert((namespace.into(), name.into()), Arc::new(data));
    }

    /// The namespace `ClusterMetricOutput` references are resolved in (`default` when unset).
    pub fn cluster_namespace(&self) -> &str {
        if self.cluster_namespace.is_empty() { "default" } else { &self.cluster_namespace }
    }

    /// How many Secrets are held.
    pub fn len(&self) -> usize {
        self.secrets.len()
    }

    /// True when no Secret is held.
    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    /// A resolver for the references of an object in `namespace`.
    pub fn resolver<'a>(&'a self, namespace: &'a str) -> SecretResolver<'a> {
        SecretResolver { store: self, namespace, read: Vec::new() }
    }

    /// The fingerprint a resolver in `namespace` would have after reading `reads` again, without
    /// building anything: equal to the fingerprint the object was built with exactly when none
    /// of the Secret data it read has changed. (Unread references only matter once an earlier
    /// read changes, and a change of the object's spec changes its generation.)
    pub fn fingerprint_of(&self, namespace: &str, reads: &SecretReads) -> u64 {
        combine(reads.0.iter().map(|selector| (selector_id(selector), self.read_hash(namespace, selector))))
    }

    /// What reading `selector` in `namespace` contributes: a hash of the value, or a code for
    /// why there is none.
    fn read_hash(&self, namespace: &str, selector: &SecretKeySelector) -> u64 {
        match self.secrets.get(&(namespace.to_owned(), selector.name.clone())) {
            None => 1,
            Some(data) => data.get(&selector.key).map_or(2, |value| stable_hash(value)),
        }
    }
}

/// The references an object read while it was built, in order: what
/// [`SecretStore::fingerprint_of`] replays to tell whether it needs building again.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecretReads(Vec<SecretKeySelector>);

/// `name/key`: neither a Secret name nor a data key can contain a slash.
fn selector_id(selector: &SecretKeySelector) -> String {
    format!("{}/{}", selector.name, selector.key)
}

/// One hash of the `(name/key, value hash)` pairs read, 0 when nothing was read.
fn combine(read: impl Iterator<Item = (String, u64)>) -> u64 {
    let mut bytes = Vec::new();
    for (id, hash) in read {
        bytes.extend_from_slice(id.as_bytes());
        bytes.push(0);
        bytes.extend_from_slice(&hash.to_le_bytes());
    }
    if bytes.is_empty() { 0 } else { stable_hash(&bytes) }
}

/// Resolves the references of one object in its namespace and remembers what it read.
pub struct SecretResolver<'a> {
    store: &'a SecretStore,
    namespace: &'a str,
    /// The references read, in resolution order.
    read: Vec<SecretKeySelector>,
}

impl SecretResolver<'_> {
    /// The bytes of `selector`; `field` names the referencing field in errors.
    pub fn bytes(&mut self, field: &str, selector: &SecretKeySelector) -> Result<Vec<u8>, SecretError> {
        self.read.push(selector.clone());
        let Some(data) = self.store.secrets.get(&(self.namespace.to_owned(), selector.name.clone())) else {
            return Err(SecretError::NotFound {
                field: field.to_owned(),
                namespace: self.namespace.to_owned(),
                name: selector.name.clone(),
            });
        };
        let Some(value) = data.get(&selector.key) else {
            return Err(SecretError::KeyMissing {
                field: field.to_owned(),
                namespace: self.namespace.to_owned(),
                name: selector.name.clone(),
                key: selector.key.clone(),
            });
        };
        Ok(value.clone())
    }

    /// The value of `selector` as text.
    pub fn text(&mut self, field: &str, selector: &SecretKeySelector) -> Result<String, SecretError> {
        String::from_utf8(self.bytes(field, selector)?).map_err(|_| SecretError::NotText {
            field: field.to_owned(),
            namespace: self.namespace.to_owned(),
            name: selector.name.clone(),
            key: selector.key.clone(),
        })
    }

    /// A hash of everything read so far (values and failures alike), 0 when nothing was read.
    /// Equal fingerprints mean the object would be built from the same Secret data.
    pub fn fingerprint(&self) -> u64 {
        combine(self.read.iter().map(|selector| (selector_id(selector), self.store.read_hash(self.namespace, selector))))
    }

    /// The references read so far, to replay with [`SecretStore::fingerprint_of`].
    pub fn reads(&self) -> SecretReads {
        SecretReads(self.read.clone())
    }
}

/// A text secret whose `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretText(pub String);

impl fmt::Debug for SecretText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn selector(name: &str, key: &str) -> SecretKeySelector {
        SecretKeySelector { name: name.to_owned(), key: key.to_owned() }
    }

    fn store() -> SecretStore {
        let mut store = SecretStore::new("metricshard");
        store.insert("team-a", "auth", BTreeMap::from([("password".to_owned(), b"hunter2".to_vec())]));
        store.insert("team-b", "other", BTreeMap::from([("password".to_owned(), b"s3cret".to_vec())]));
        store
    }

    #[test]
    fn references_resolve_only_in_the_objects_own_namespace() {
        let store = store();
        assert_eq!(store.resolver("team-a").text("basicAuth.password", &selector("auth", "password")).unwrap(), "hunter2");
        let error = store.resolver("team-a").text("basicAuth.password", &selector("other", "password")).unwrap_err();
        assert_eq!(error.to_string(), "basicAuth.password: Secret team-a/other not found");
        let missing = store.resolver("team-a").text("basicAuth.password", &selector("auth", "token")).unwrap_err();
        assert_eq!(missing.to_string(), "basicAuth.password: Secret team-a/auth has no key \"token\"");
    }

    #[test]
    fn errors_and_debug_output_never_contain_values() {
        let mut store = store();
        store.insert("team-a", "binary", BTreeMap::from([("token".to_owned(), vec![0xff, 0x00, b'x'])]));
        let error = store.resolver("team-a").text("authorization.credentials", &selector("binary", "token")).unwrap_err();
        assert!(error.to_string().contains("is not UTF-8 text"), "{error}");
        let text = format!("{store:?} {:?}", SecretText("hunter2".into()));
        assert!(!text.contains("hunter2") && !text.contains("s3cret"), "{text}");
    }

    #[test]
    fn replayed_reads_give_the_builds_fingerprint_until_the_data_changes() {
        let mut store = store();
        let mut resolver = store.resolver("team-a");
        let _ = resolver.bytes("password", &selector("auth", "password"));
        let _ = resolver.bytes("token", &selector("absent", "token"));
        let (built, reads) = (resolver.fingerprint(), resolver.reads());
        assert_ne!(built, 0);
        assert_eq!(store.fingerprint_of("team-a", &reads), built);
        // Another namespace's Secret of the same name is not what was read.
        assert_ne!(store.fingerprint_of("team-b", &reads), built);
        store.insert("team-a", "absent", BTreeMap::from([("token".to_owned(), b"t".to_vec())]));
        assert_ne!(store.fingerprint_of("team-a", &reads), built, "a Secret that appeared");
        let mut store = self::store();
        store.insert("team-a", "auth", BTreeMap::from([("password".to_owned(), b"changed".to_vec())]));
        assert_ne!(store.fingerprint_of("team-a", &reads), built, "a value that changed");
        assert_eq!(store.fingerprint_of("team-a", &SecretReads::default()), 0);
    }

    #[test]
    fn the_fingerprint_follows_the_data_read_and_nothing_else() {
        let mut store = store();
        let fingerprint = |store: &SecretStore| {
            let mut resolver = store.resolver("team-a");
            let _ = resolver.bytes("f", &selector("auth", "password"));
            resolver.fingerprint()
        };
        let before = fingerprint(&store);
        assert_ne!(before, 0);
        // Another namespace's Secret changing does not matter.
        store.insert("team-b", "other", BTreeMap::from([("password".to_owned(), b"changed".to_vec())]));
        assert_eq!(fingerprint(&store), before);
        // An unrelated key of the same Secret does not matter either.
        store.insert(
            "team-a",
            "auth",
            BTreeMap::from([("password".to_owned(), b"hunter2".to_vec()), ("extra".to_owned(), b"x".to_vec())]),
        );
        assert_eq!(fingerprint(&store), before);
        store.insert("team-a", "auth", BTreeMap::from([("password".to_owned(), b"hunter3".to_vec())]));
        let changed = fingerprint(&store);
        assert_ne!(changed, before);
        // Missing is a state of its own: appearing later changes the fingerprint again.
        let empty = SecretStore::new("x");
        let missing = fingerprint(&empty);
        assert!(missing != changed && missing != before && missing != 0);
        assert_eq!(store.resolver("team-a").fingerprint(), 0);
    }
}
