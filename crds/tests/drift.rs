//! The committed CRD YAML must be exactly what the Rust types generate.

// Test code through and through, helpers included: a panic is how a check fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

#[test]
fn committed_crd_yaml_matches_the_rust_types() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("yaml");
    for (file, crd) in metricshard_crds::all_crds() {
        let generated = metricshard_crds::render_crd_yaml(&crd).unwrap();
        let committed = std::fs::read_to_string(dir.join(file))
            .unwrap_or_else(|e| panic!("crds/yaml/{file} is missing ({e}); run `cargo run -p metricshard-crds --bin crdgen`"));
        assert!(
            generated == committed,
            "crds/yaml/{file} is out of date with the Rust types; run `cargo run -p metricshard-crds --bin crdgen` and commit the result"
        );
    }
}

#[test]
fn every_field_has_a_description() {
    fn walk(value: &serde_json::Value, path: &str, missing: &mut Vec<String>) {
        let Some(properties) = value.get("properties").and_then(|p| p.as_object()) else { return };
        for (name, child) in properties {
            let child_path = format!("{path}.{name}");
            // apiVersion/kind/metadata are described by Kubernetes itself.
            if !["apiVersion", "kind", "metadata"].contains(&name.as_str()) && child.get("description").is_none() {
                missing.push(child_path.clone());
            }
            walk(child, &child_path, missing);
            if let Some(items) = child.get("items") {
                walk(items, &format!("{child_path}[]"), missing);
            }
        }
    }
    let mut missing = Vec::new();
    for (file, crd) in metricshard_crds::all_crds() {
        let schema = serde_json::to_value(&crd.spec.versions[0].schema).unwrap();
        walk(&schema["openAPIV3Schema"], file, &mut missing);
    }
    assert!(missing.is_empty(), "fields without a description (kubectl explain would be empty): {missing:#?}");
}
