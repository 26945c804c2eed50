//! Reads metricshard objects from multi-document YAML, exactly what `kubectl apply -f` takes, and
//! validates them as the apiserver would: the structural schema (types, enums, patterns, lengths,
//! unknown fields), the typed fields, then the CRD's own CEL rules evaluated client-side. Every
//! problem names its document and field path, so local mode can report a bad file precisely.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::OnceLock;

use kube::CustomResourceExt;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::schema_check;
use crate::{ClusterMetricOutput, MetricInput, MetricOutput};

/// The API group and version every metricshard kind is served at.
pub const API_VERSION: &str = "metricshard.io/v1alpha1";

/// One object read from a manifest.
#[derive(Debug, Clone)]
pub enum ManifestObject {
    /// A `MetricInput`.
    Input(Box<MetricInput>),
    /// A `MetricOutput`.
    Output(Box<MetricOutput>),
    /// A `ClusterMetricOutput`.
    ClusterOutput(Box<ClusterMetricOutput>),
    /// A core `Namespace`, whose labels `ClusterMetricOutput` namespace selectors match against.
    Namespace {
        /// Namespace name.
        name: String,
        /// Its labels as written.
        labels: BTreeMap<String, String>,
    },
    /// A core `Secret` (local mode reads credentials from these).
    Secret(crate::secret_ref::SecretDocument),
}

/// A problem with one field of one document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldProblem {
    /// Dotted field path (`spec.source.prometheus.staticTargets[1]`), empty for the whole document.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for FieldProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() { f.write_str(&self.message) } else { write!(f, "{}: {}", self.path, self.message) }
    }
}

/// Why one document of a manifest was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct DocumentError {
    /// 1-based position of the document in its file.
    pub document: usize,
    /// `Kind namespace/name` when it could be read.
    pub object: Option<String>,
    /// Every problem found.
    pub problems: Vec<FieldProblem>,
}

impl fmt::Display for DocumentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "document {}", self.document)?;
        if let Some(object) = &self.object {
            write!(f, " ({object})")?;
        }
        let problems: Vec<String> = self.problems.iter().map(ToString::to_string).collect();
        write!(f, ": {}", problems.join("; "))
    }
}

/// Parses every document of a YAML stream. Documents of other API groups are skipped (so a
/// directory may also hold, say, a Deployment); empty documents are skipped. A YAML syntax error
/// ends the stream, as it does for `kubectl`.
pub fn parse_documents(source: &str) -> Vec<Result<ManifestObject, DocumentError>> {
    let mut results = Vec::new();
    for (index, document) in serde_yaml::Deserializer::from_str(source).enumerate() {
        let number = index + 1;
        let value: serde_yaml::Value = match serde::Deserialize::deserialize(document) {
            Ok(value) => value,
            Err(error) => {
                results.push(Err(whole_document_error(number, None, format!("invalid YAML: {error}"))));
                break;
            }
        };
        if value.is_null() {
            continue;
        }
        match serde_json::to_value(&value) {
            Ok(json) => {
                if let Some(result) = parse_object(number, json) {
                    results.push(result);
                }
            }
            Err(error) => results.push(Err(whole_document_error(number, None, format!("not representable as JSON: {error}")))),
        }
    }
    results
}

fn whole_document_error(document: usize, object: Option<String>, message: String) -> DocumentError {
    DocumentError { document, object, problems: vec![FieldProblem { path: String::new(), message }] }
}

fn string_at<'a>(value: &'a Value, pointer: &str) -> Option<&'a str> {
    value.pointer(pointer).and_then(Value::as_str)
}

fn parse_object(document: usize, json: Value) -> Option<Result<ManifestObject, DocumentError>> {
    let api_version = string_at(&json, "/apiVersion").unwrap_or_default().to_owned();
    let kind = string_at(&json, "/kind").unwrap_or_default().to_owned();
    if api_version == "v1" && kind == "Namespace" {
        return Some(parse_namespace(document, &json));
    }
    if api_version == "v1" && kind == "Secret" {
        let label = |secret: &str| format!("Secret {}/{secret}", string_at(&json, "/metadata/namespace").unwrap_or("default"));
        return Some(crate::secret_ref::SecretDocument::from_json(&json).map(ManifestObject::Secret).map_err(|problems| {
            DocumentError {
                document,
                object: Some(label(string_at(&json, "/metadata/name").unwrap_or_default())),
                problems: problems.into_iter().map(|(path, message)| FieldProblem { path, message }).collect(),
            }
        }));
    }
    if !api_version.starts_with("metricshard.io/") {
        if api_version.is_empty() || kind.is_empty() {
            return Some(Err(whole_document_error(document, None, "apiVersion and kind are required".to_owned())));
        }
        return None;
    }
    let name = string_at(&json, "/metadata/name").unwrap_or_default().to_owned();
    let namespace = string_at(&json, "/metadata/namespace").unwrap_or("default").to_owned();
    let label = match kind.as_str() {
        "ClusterMetricOutput" => format!("{kind} {name}"),
        _ => format!("{kind} {namespace}/{name}"),
    };
    if api_version != API_VERSION {
        return Some(Err(whole_document_error(
            document,
            Some(label),
            format!("unsupported apiVersion {api_version:?}: this collector serves {API_VERSION}"),
        )));
    }
    let result = match kind.as_str() {
        "MetricInput" => validate::<MetricInput>(json, &name).map(|o| ManifestObject::Input(Box::new(o))),
        "MetricOutput" => validate::<MetricOutput>(json, &name).map(|o| ManifestObject::Output(Box::new(o))),
        "ClusterMetricOutput" => {
            validate::<ClusterMetricOutput>(json, &name).map(|o| ManifestObject::ClusterOutput(Box::new(o)))
        }
        other => Err(vec![FieldProblem {
            path: "kind".to_owned(),
            message: format!("unknown kind {other:?}: expected MetricInput, MetricOutput or ClusterMetricOutput"),
        }]),
    };
    Some(result.map(|object| with_default_namespace(object, &namespace)).map_err(|problems| DocumentError {
        document,
        object: Some(label),
        problems,
    }))
}

fn with_default_namespace(object: ManifestObject, namespace: &str) -> ManifestObject {
    match object {
        ManifestObject::Input(mut input) => {
            input.metadata.namespace = Some(namespace.to_owned());
            ManifestObject::Input(input)
        }
        ManifestObject::Output(mut output) => {
            output.metadata.namespace = Some(namespace.to_owned());
            ManifestObject::Output(output)
        }
        other => other,
    }
}

fn parse_namespace(document: usize, json: &Value) -> Result<ManifestObject, DocumentError> {
    let name = string_at(json, "/metadata/name").unwrap_or_default().to_owned();
    if name.is_empty() {
        return Err(whole_document_error(document, Some("Namespace".to_owned()), "metadata.name is required".to_owned()));
    }
    let labels = json
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|labels| {
            labels.iter().filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned()))).collect()
        })
        .unwrap_or_default();
    Ok(ManifestObject::Namespace { name, labels })
}

/// Validation every kind goes through: the name, the structural schema, the typed fields, CEL.
trait ValidatedKind: CustomResourceExt + DeserializeOwned + serde::Serialize {
    fn schema() -> &'static Value;
    fn cel(&self) -> Result<(), kube::core::cel::ValidationErrors>;
}

macro_rules! validated_kind {
    ($kind:ty) => {
        impl ValidatedKind for $kind {
            fn schema() -> &'static Value {
                static SCHEMA: OnceLock<Value> = OnceLock::new();
                SCHEMA.get_or_init(|| openapi_schema(&<$kind>::crd()))
            }
            fn cel(&self) -> Result<(), kube::core::cel::ValidationErrors> {
                self.validate_cel()
            }
        }
    };
}

validated_kind!(MetricInput);
validated_kind!(MetricOutput);
validated_kind!(ClusterMetricOutput);

/// The CRD's schema plus the fields every object has, which the apiserver knows implicitly.
fn openapi_schema(crd: &k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition) -> Value {
    let mut schema = crd
        .spec
        .versions
        .first()
        .and_then(|version| version.schema.as_ref())
        .and_then(|schema| schema.open_api_v3_schema.as_ref())
        .and_then(|schema| serde_json::to_value(schema).ok())
        .unwrap_or(Value::Null);
    if let Some(properties) = schema.get_mut("properties").and_then(Value::as_object_mut) {
        properties.insert("apiVersion".to_owned(), serde_json::json!({"type": "string"}));
        properties.insert("kind".to_owned(), serde_json::json!({"type": "string"}));
        properties.insert("metadata".to_owned(), serde_json::json!({"type": "object"}));
    }
    schema
}

fn validate<K: ValidatedKind>(mut json: Value, name: &str) -> Result<K, Vec<FieldProblem>> {
    let mut problems = Vec::new();
    if let Err(message) = check_object_name(name) {
        problems.push(FieldProblem { path: "metadata.name".to_owned(), message });
    }
    // The status of a manifest is never applied; drop it as the apiserver does for the main resource.
    if let Some(object) = json.as_object_mut() {
        object.remove("status");
    }
    problems.extend(
        schema_check::check(K::schema(), &json)
            .into_iter()
            .map(|violation| FieldProblem { path: violation.path, message: violation.message }),
    );
    if !problems.is_empty() {
        return Err(problems);
    }
    let typed: K = serde_path_to_error::deserialize(json).map_err(|error| {
        vec![FieldProblem { path: error.path().to_string(), message: error.inner().to_string() }]
    })?;
    typed.cel().map_err(|errors| {
        errors
            .as_slice()
            .iter()
            .map(|error| FieldProblem { path: error.field_path.clone(), message: error.message.clone() })
            .collect::<Vec<_>>()
    })?;
    Ok(typed)
}

/// Object names follow the DNS subdomain rule of the apiserver.
fn check_object_name(name: &str) -> Result<(), String> {
    static NAME: OnceLock<Option<regex::Regex>> = OnceLock::new();
    let pattern = NAME.get_or_init(|| regex::Regex::new(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$").ok());
    if name.is_empty() {
        return Err("required field is missing".to_owned());
    }
    match pattern {
        Some(pattern) if name.len() <= 253 && pattern.is_match(name) => Ok(()),
        _ => Err(format!("{name:?} is not a valid name: lowercase letters, digits, '-' and '.', at most 253 characters")),
    }
}
