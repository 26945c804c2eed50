//! Target groups as Prometheus' file and HTTP service discovery write them:
//! `[{"targets": ["host:port", ...], "labels": {"name": "value"}}]`.

use std::collections::BTreeMap;

use serde::Deserialize;

/// Largest SD document accepted (file or HTTP body); larger ones are an error.
pub const DOCUMENT_SIZE_LIMIT: usize = 16 << 20;

/// A set of targets sharing labels, plus where it came from.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetGroup {
    /// Addresses (`host:port`), each becoming a target's `__address__`.
    #[serde(default)]
    pub targets: Vec<String>,
    /// Labels every target of the group starts with.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// Why a target group document was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetGroupError {
    /// The document is not valid JSON/YAML of the expected shape.
    #[error("invalid {format}: {message}")]
    Syntax {
        /// `JSON` or `YAML`.
        format: &'static str,
        /// The decoder's message.
        message: String,
    },
    /// A group's label name is not a valid Prometheus label name.
    #[error("group {group}: invalid label name {name:?}")]
    LabelName {
        /// Position of the group.
        group: usize,
        /// The offending name.
        name: String,
    },
    /// A target address is empty or contains a `/` (a URL instead of host:port).
    #[error("group {group}: invalid target {target:?} (want host:port)")]
    Target {
        /// Position of the group.
        group: usize,
        /// The offending address.
        target: String,
    },
}

/// How a document is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocumentFormat {
    /// JSON (`.json` files, HTTP SD).
    Json,
    /// YAML (`.yaml` / `.yml` files).
    Yaml,
}

impl DocumentFormat {
    /// The format of a file SD file by its extension, as Prometheus decides it; `None` for
    /// other extensions (Prometheus ignores such files).
    pub fn from_path(path: &std::path::Path) -> Option<Self> {
        match path.extension()?.to_str()? {
            "json" => Some(Self::Json),
            "yaml" | "yml" => Some(Self::Yaml),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Json => "JSON",
            Self::Yaml => "YAML",
        }
    }
}

/// Parses and validates a target group document. An empty YAML document is an empty list.
pub fn parse(text: &str, format: DocumentFormat) -> Result<Vec<TargetGroup>, TargetGroupError> {
    let syntax = |message: String| TargetGroupError::Syntax { format: format.name(), message };
    let groups: Vec<TargetGroup> = match format {
        DocumentFormat::Json => serde_json::from_str(text).map_err(|e| syntax(e.to_string()))?,
        DocumentFormat::Yaml if text.trim().is_empty() => Vec::new(),
        DocumentFormat::Yaml => serde_yaml::from_str(text).map_err(|e| syntax(e.to_string()))?,
    };
    for (index, group) in groups.iter().enumerate() {
        if let Some(name) = group.labels.keys().find(|name| !is_label_name(name)) {
            return Err(TargetGroupError::LabelName { group: index, name: name.clone() });
        }
        if let Some(target) = group.targets.iter().find(|t| t.is_empty() || t.contains('/')) {
            return Err(TargetGroupError::Target { group: index, target: target.clone() });
        }
    }
    Ok(groups)
}

fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_') && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::{any, proptest};

    #[test]
    fn parses_the_prometheus_json_format() {
        let text = r#"[{"targets": ["a:9100", "b:9100"], "labels": {"env": "prod"}}, {"targets": ["c:1"]}]"#;
        let groups = parse(text, DocumentFormat::Json).unwrap();
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].targets, ["a:9100", "b:9100"]);
        assert_eq!(groups[0].labels.get("env").map(String::as_str), Some("prod"));
        assert!(groups[1].labels.is_empty());
    }

    #[test]
    fn parses_the_prometheus_yaml_format_and_empty_documents() {
        let text = "- targets: ['a:1']\n  labels:\n    team: x\n- targets: []\n";
        let groups = parse(text, DocumentFormat::Yaml).unwrap();
        assert_eq!(groups[0].targets, ["a:1"]);
        assert_eq!(groups[0].labels.get("team").map(String::as_str), Some("x"));
        assert!(groups[1].targets.is_empty());
        assert_eq!(parse("", DocumentFormat::Yaml).unwrap(), []);
        assert_eq!(parse("[]", DocumentFormat::Json).unwrap(), []);
    }

    #[test]
    fn malformed_documents_are_errors_with_a_reason() {
        for (text, format, expected) in [
            ("[{\"targets\": [\"a:1\"]", DocumentFormat::Json, "invalid JSON"),
            ("{\"targets\": [\"a:1\"]}", DocumentFormat::Json, "invalid JSON"),
            ("[{\"targets\": \"a:1\"}]", DocumentFormat::Json, "invalid JSON"),
            ("[{\"targets\": [\"a:1\"], \"lables\": {}}]", DocumentFormat::Json, "unknown field"),
            ("null", DocumentFormat::Json, "invalid JSON"),
            ("- targets: [a:1\n", DocumentFormat::Yaml, "invalid YAML"),
            ("targets: ['a:1']\n", DocumentFormat::Yaml, "invalid YAML"),
            ("[{\"targets\": [\"a:1\"], \"labels\": {\"bad-name\": \"x\"}}]", DocumentFormat::Json, "invalid label name \"bad-name\""),
            ("[{\"targets\": [\"http://a:1/metrics\"]}]", DocumentFormat::Json, "invalid target"),
            ("[{\"targets\": [\"\"]}]", DocumentFormat::Json, "invalid target"),
        ] {
            let error = parse(text, format).expect_err(text).to_string();
            assert!(error.contains(expected), "{text}: {error}");
        }
    }

    #[test]
    fn format_follows_the_extension() {
        use std::path::Path;
        assert_eq!(DocumentFormat::from_path(Path::new("/a/b.json")), Some(DocumentFormat::Json));
        assert_eq!(DocumentFormat::from_path(Path::new("/a/b.yml")), Some(DocumentFormat::Yaml));
        assert_eq!(DocumentFormat::from_path(Path::new("/a/b.yaml")), Some(DocumentFormat::Yaml));
        assert_eq!(DocumentFormat::from_path(Path::new("/a/b.txt")), None);
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(text in any::<String>()) {
            let _ = parse(&text, DocumentFormat::Json);
            let _ = parse(&text, DocumentFormat::Yaml);
        }
    }
}
