//! Manifests are read and validated as the apiserver would: schema, typed fields, CEL rules.

// Test code through and through, helpers included: a panic is how a check fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use metricshard_crds::manifest::{ManifestObject, parse_documents};

fn problems_of(yaml: &str) -> Vec<String> {
    parse_documents(yaml)
        .into_iter()
        .filter_map(Result::err)
        .flat_map(|e| e.problems.into_iter().map(|p| p.to_string()))
        .collect()
}

const VALID_INPUT: &str = r#"
apiVersion: metricshard.io/v1alpha1
kind: MetricInput
metadata: {name: web, namespace: shop}
spec:
  interval: 10s
  source: {prometheus: {staticTargets: ["127.0.0.1:8080"]}}
  outputs: [{name: console}]
"#;

#[test]
fn every_example_parses_without_problems() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut seen = 0;
    for dir in std::fs::read_dir(&root).unwrap() {
        for file in std::fs::read_dir(dir.unwrap().path()).unwrap() {
            let path = file.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            for result in parse_documents(&text) {
                if let Err(error) = result {
                    panic!("{}: {error}", path.display());
                }
                seen += 1;
            }
        }
    }
    assert!(seen >= 4, "expected the examples to hold several objects, saw {seen}");
}

#[test]
fn defaults_are_applied_like_the_apiserver() {
    let objects = parse_documents(VALID_INPUT);
    let Ok(ManifestObject::Input(input)) = &objects[0] else { panic!("{objects:?}") };
    assert_eq!(input.spec.interval.as_str(), "10s");
    assert_eq!(input.spec.effective_timeout(), std::time::Duration::from_secs(10));
    assert_eq!(input.spec.source.prometheus.as_ref().unwrap().metrics_path, "/metrics");
    assert_eq!(input.metadata.namespace.as_deref(), Some("shop"));
}

#[test]
fn namespace_defaults_to_default() {
    let yaml = VALID_INPUT.replace(", namespace: shop", "");
    let Ok(ManifestObject::Input(input)) = &parse_documents(&yaml)[0] else { panic!() };
    assert_eq!(input.metadata.namespace.as_deref(), Some("default"));
}

#[test]
fn cel_rules_run_client_side_with_field_paths() {
    let yaml = VALID_INPUT.replace("interval: 10s", "interval: 10s\n  timeout: 20s");
    assert_eq!(problems_of(&yaml), vec!["spec.timeout: spec.timeout must not exceed spec.interval"]);

    let yaml = VALID_INPUT.replace("{prometheus: {staticTargets: [\"127.0.0.1:8080\"]}}", "{}");
    assert_eq!(problems_of(&yaml), vec!["spec.source: exactly one source must be set"]);

    let yaml = VALID_INPUT.replace("127.0.0.1:8080", "http://127.0.0.1:8080/metrics");
    assert_eq!(problems_of(&yaml), vec!["spec.source.prometheus.staticTargets: every static target must be host:port"]);

    let yaml = VALID_INPUT.replace("interval: 10s", "interval: 0s");
    assert!(problems_of(&yaml).iter().any(|p| p.contains("spec.interval must be greater than zero")), "{:?}", problems_of(&yaml));
}

#[test]
fn schema_violations_name_the_field() {
    let yaml = VALID_INPUT.replace("interval: 10s", "interval: 1d");
    let problems = problems_of(&yaml);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].starts_with("spec.interval: \"1d\" should match"), "{problems:?}");

    let yaml = VALID_INPUT.replace("outputs: [{name: console}]", "outputs: []");
    assert_eq!(problems_of(&yaml), vec!["spec.outputs: must have at least 1 items, has 0"]);

    let yaml = VALID_INPUT.replace("outputs: [{name: console}]", "outputs: [{name: console, kind: Elsewhere}]");
    assert!(problems_of(&yaml)[0].starts_with("spec.outputs[0].kind: unsupported value \"Elsewhere\""));

    let yaml = VALID_INPUT.replace("interval: 10s", "interval: 10s\n  intervall: 5s");
    assert_eq!(problems_of(&yaml), vec!["spec.intervall: unknown field"]);

    let yaml = VALID_INPUT.replace("name: web", "name: Web_1");
    assert!(problems_of(&yaml)[0].starts_with("metadata.name: \"Web_1\" is not a valid name"));
}

#[test]
fn one_bad_document_does_not_hide_the_others() {
    let yaml = format!("{VALID_INPUT}---\n{}---\n{VALID_INPUT}", VALID_INPUT.replace("10s", "ten seconds"));
    let results = parse_documents(&yaml);
    assert_eq!(results.len(), 3);
    assert!(results[0].is_ok() && results[2].is_ok());
    let error = results[1].as_ref().unwrap_err();
    assert_eq!(error.document, 2);
    assert_eq!(error.object.as_deref(), Some("MetricInput shop/web"));
}

#[test]
fn foreign_kinds_are_skipped_and_unknown_versions_refused() {
    let deployment = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n";
    assert!(parse_documents(deployment).is_empty());
    let yaml = VALID_INPUT.replace("v1alpha1", "v9");
    assert!(problems_of(&yaml)[0].contains("unsupported apiVersion"));
}

#[test]
fn yaml_syntax_errors_are_reported_not_panicked() {
    let results = parse_documents("apiVersion: [unclosed\n");
    assert!(results[0].as_ref().unwrap_err().problems[0].message.starts_with("invalid YAML"));
}

#[test]
fn output_urls_are_checked_client_side_like_the_apiserver() {
    let output = |protocol: &str| {
        format!("apiVersion: metricshard.io/v1alpha1\nkind: MetricOutput\nmetadata: {{name: out}}\nspec:\n  protocol:\n    {protocol}\n")
    };
    assert!(problems_of(&output("remoteWrite: {url: \"http://vm:8428/api/v1/write\"}")).is_empty());
    assert!(problems_of(&output("influx: {url: \"https://influx:8086\", database: m}")).is_empty());
    assert_eq!(
        problems_of(&output("remoteWrite: {url: \"ftp://vm/api/v1/write\"}")),
        vec!["spec.protocol.remoteWrite.url: url must be an absolute http or https URL"]
    );
    assert_eq!(
        problems_of(&output("openTSDB: {url: \"opentsdb:4242\"}")),
        vec!["spec.protocol.openTSDB.url: url must be an absolute http or https URL"]
    );
    let two = "apiVersion: metricshard.io/v1alpha1\nkind: MetricOutput\nmetadata: {name: out}\nspec:\n  protocol: {stdout: {}, openTSDB: {url: \"http://t:4242\"}}\n";
    assert_eq!(problems_of(two), vec!["spec.protocol: exactly one protocol must be set"]);
}
