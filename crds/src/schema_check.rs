//! Checks a JSON value against a CRD's structural OpenAPI schema, the way the apiserver does
//! before it runs CEL rules: types, required fields, enums, patterns, lengths, ranges and
//! unknown fields. Local mode uses it so that a manifest the apiserver would reject is rejected
//! with the same field path without a cluster. Only the keywords our CRDs use are supported.

use serde_json::{Map, Value};

/// One violation, with the field path the apiserver would print (`spec.outputs[0].name`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaViolation {
    /// Dotted path of the offending field.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

/// Returns every violation of `schema` by `value`; empty when the value conforms.
pub fn check(schema: &Value, value: &Value) -> Vec<SchemaViolation> {
    let mut violations = Vec::new();
    walk(schema, value, "", &mut violations);
    violations
}

fn join(path: &str, field: &str) -> String {
    if path.is_empty() { field.to_owned() } else { format!("{path}.{field}") }
}

fn push(out: &mut Vec<SchemaViolation>, path: &str, message: String) {
    out.push(SchemaViolation { path: path.to_owned(), message });
}

fn walk(schema: &Value, value: &Value, path: &str, out: &mut Vec<SchemaViolation>) {
    let Some(schema) = schema.as_object() else { return };
    if value.is_null() {
        if !schema.get("nullable").and_then(Value::as_bool).unwrap_or(false) {
            push(out, path, "must not be null".to_owned());
        }
        return;
    }
    if schema.get("x-kubernetes-preserve-unknown-fields").and_then(Value::as_bool) == Some(true)
        && schema.get("type").is_none()
    {
        return;
    }
    match schema.get("type").and_then(Value::as_str) {
        Some("object") => check_object(schema, value, path, out),
        Some("array") => check_array(schema, value, path, out),
        Some("string") => check_string(schema, value, path, out),
        Some("integer") => check_number(schema, value, path, out, true),
        Some("number") => check_number(schema, value, path, out, false),
        Some("boolean") if !value.is_boolean() => push(out, path, format!("must be a boolean, got {value}")),
        _ => {}
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        let names: Vec<String> = allowed.iter().map(Value::to_string).collect();
        push(out, path, format!("unsupported value {value}: supported values are {}", names.join(", ")));
    }
}

fn check_object(schema: &Map<String, Value>, value: &Value, path: &str, out: &mut Vec<SchemaViolation>) {
    let Some(object) = value.as_object() else {
        push(out, path, format!("must be an object, got {value}"));
        return;
    };
    let properties = schema.get("properties").and_then(Value::as_object);
    if let Some(required) = schema.get("required").and_then(Value::as_array) {
        for field in required.iter().filter_map(Value::as_str) {
            if !object.contains_key(field) {
                push(out, &join(path, field), "required field is missing".to_owned());
            }
        }
    }
    if let Some(max) = schema.get("maxProperties").and_then(Value::as_u64)
        && object.len() as u64 > max
    {
        push(out, path, format!("must have at most {max} entries, has {}", object.len()));
    }
    let additional = schema.get("additionalProperties");
    for (field, child) in object {
        let child_path = join(path, field);
        match (properties.and_then(|p| p.get(field)), additional) {
            (Some(child_schema), _) => walk(child_schema, child, &child_path, out),
            (None, Some(additional_schema)) if additional_schema.is_object() => {
                walk(additional_schema, child, &child_path, out);
            }
            // An object schema without properties (such as `metadata`) is checked elsewhere.
            (None, _) if properties.is_some() && !preserves_unknown(schema) => {
                push(out, &child_path, "unknown field".to_owned());
            }
            (None, _) => {}
        }
    }
}

fn preserves_unknown(schema: &Map<String, Value>) -> bool {
    schema.get("x-kubernetes-preserve-unknown-fields").and_then(Value::as_bool) == Some(true)
}

fn check_array(schema: &Map<String, Value>, value: &Value, path: &str, out: &mut Vec<SchemaViolation>) {
    let Some(items) = value.as_array() else {
        push(out, path, format!("must be a list, got {value}"));
        return;
    };
    if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
        && (items.len() as u64) < min
    {
        push(out, path, format!("must have at least {min} items, has {}", items.len()));
    }
    if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
        && items.len() as u64 > max
    {
        push(out, path, format!("must have at most {max} items, has {}", items.len()));
    }
    if let Some(item_schema) = schema.get("items") {
        for (index, item) in items.iter().enumerate() {
            walk(item_schema, item, &format!("{path}[{index}]"), out);
        }
    }
}

fn check_string(schema: &Map<String, Value>, value: &Value, path: &str, out: &mut Vec<SchemaViolation>) {
    let Some(text) = value.as_str() else {
        push(out, path, format!("must be a string, got {value}"));
        return;
    };
    let length = text.chars().count() as u64;
    if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
        && length < min
    {
        push(out, path, format!("must be at least {min} characters long"));
    }
    if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
        && length > max
    {
        push(out, path, format!("may not be longer than {max} characters"));
    }
    if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
        match regex::Regex::new(pattern) {
            Ok(re) if !re.is_match(text) => push(out, path, format!("{text:?} should match '{pattern}'")),
            Ok(_) => {}
            Err(error) => push(out, path, format!("schema pattern does not compile: {error}")),
        }
    }
}

fn check_number(schema: &Map<String, Value>, value: &Value, path: &str, out: &mut Vec<SchemaViolation>, integer: bool) {
    let Some(number) = value.as_f64() else {
        push(out, path, format!("must be a number, got {value}"));
        return;
    };
    if integer && !(value.is_i64() || value.is_u64()) {
        push(out, path, format!("must be an integer, got {value}"));
    }
    if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
        && number < min
    {
        push(out, path, format!("should be greater than or equal to {min}"));
    }
    if let Some(max) = schema.get("maximum").and_then(Value::as_f64)
        && number > max
    {
        push(out, path, format!("should be less than or equal to {max}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string", "minLength": 1, "pattern": "^[a-z]+$"},
                "count": {"type": "integer", "minimum": 1, "maximum": 10},
                "mode": {"type": "string", "enum": ["A", "B"]},
                "items": {"type": "array", "maxItems": 2, "items": {"type": "string"}},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}}
            }
        })
    }

    fn paths(value: Value) -> Vec<String> {
        check(&schema(), &value).into_iter().map(|v| v.path).collect()
    }

    #[test]
    fn conforming_value_passes() {
        assert!(paths(json!({"name": "ok", "count": 3, "mode": "A", "items": ["x"], "labels": {"a": "b"}})).is_empty());
    }

    #[test]
    fn each_violation_names_its_field() {
        assert_eq!(paths(json!({})), vec!["name"]);
        assert_eq!(paths(json!({"name": "UP"})), vec!["name"]);
        assert_eq!(paths(json!({"name": "ok", "count": 11})), vec!["count"]);
        assert_eq!(paths(json!({"name": "ok", "count": 1.5})), vec!["count"]);
        assert_eq!(paths(json!({"name": "ok", "mode": "C"})), vec!["mode"]);
        assert_eq!(paths(json!({"name": "ok", "items": ["a", "b", "c"]})), vec!["items"]);
        assert_eq!(paths(json!({"name": "ok", "items": [1]})), vec!["items[0]"]);
        assert_eq!(paths(json!({"name": "ok", "labels": {"a": 1}})), vec!["labels.a"]);
        assert_eq!(paths(json!({"name": "ok", "surprise": true})), vec!["surprise"]);
    }
}
