//! Making MCP `inputSchema`s acceptable to LLM providers, and checking the LLM's arguments against them.
//!
//! A provider rejects the whole request when one tool's schema is off (an explicit draft-07 `$schema`, a root that is
//! not `type: object`, a dangling `$ref`), so schemas are normalized once when tools are listed, and a tool whose
//! schema cannot be made acceptable is dropped (with a warning) instead of breaking every turn. The same compiled
//! schema then validates each call's arguments before anything is sent to the backend, so the LLM gets a precise
//! error it can correct.

use serde_json::{Map, Value};

/// Why a tool's schema was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaError {
    #[error("the root of the input schema must be type \"object\", found {0}")]
    NotObject(String),
    #[error("\"properties\" must be an object")]
    BadProperties,
    #[error("\"required\" must be an array of property names")]
    BadRequired,
    #[error("\"{0}\" at the root of the input schema is not accepted by LLM providers")]
    RootCombinator(String),
    #[error("the input schema references {0}, outside itself")]
    ExternalRef(String),
    #[error("the input schema's $ref cannot be resolved: {0}")]
    UnresolvedRef(String),
    #[error("the input schema is not valid JSON Schema (draft 2020-12): {0}")]
    Invalid(String),
}

/// A tool's input schema, normalized for the LLM and compiled for argument checks.
pub struct PreparedSchema {
    /// What the LLM is shown as the function's parameters.
    pub parameters: Value,
    validator: jsonschema::Validator,
}

impl std::fmt::Debug for PreparedSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedSchema").field("parameters", &self.parameters).finish_non_exhaustive()
    }
}

const ROOT_COMBINATORS: [&str; 9] = ["anyOf", "oneOf", "allOf", "not", "if", "then", "else", "enum", "const"];

/// Normalizes an MCP `inputSchema` so providers accept it: strips `$schema`/`$id` (the dialect is 2020-12), inlines
/// local `$ref`s (dropping `$defs`/`definitions` once nothing points there), ensures `type: "object"` and a
/// `properties` object. Errors when the schema cannot be made acceptable.
pub fn normalize(input: &Map<String, Value>) -> Result<Value, SchemaError> {
    let mut root = input.clone();
    root.remove("$schema");
    root.remove("$id");
    check_refs_are_local(&Value::Object(root.clone()))?;
    if contains_ref(&Value::Object(root.clone())) {
        let dereferenced = jsonschema::dereference(&Value::Object(root.clone()))
            .map_err(|e| SchemaError::UnresolvedRef(e.to_string()))?;
        root = match dereferenced {
            Value::Object(map) => map,
            other => return Err(SchemaError::NotObject(type_name(&other))),
        };
        let mut without_defs = root.clone();
        without_defs.remove("$defs");
        without_defs.remove("definitions");
        // Recursive schemas keep their refs (and so their definitions); everything else is flattened.
        if !contains_ref(&Value::Object(without_defs.clone())) {
            root = without_defs;
        }
    }
    match root.get("type") {
        None => {
            root.insert("type".into(), Value::String("object".into()));
        }
        Some(Value::String(t)) if t == "object" => {}
        Some(other) => return Err(SchemaError::NotObject(other.to_string())),
    }
    if let Some(keyword) = ROOT_COMBINATORS.iter().find(|k| root.contains_key(**k)) {
        return Err(SchemaError::RootCombinator((*keyword).to_string()));
    }
    match root.get("properties") {
        None => {
            root.insert("properties".into(), Value::Object(Map::new()));
        }
        Some(Value::Object(_)) => {}
        Some(_) => return Err(SchemaError::BadProperties),
    }
    if let Some(required) = root.get("required") {
        let ok = required.as_array().is_some_and(|names| names.iter().all(Value::is_string));
        if !ok {
            return Err(SchemaError::BadRequired);
        }
    }
    Ok(Value::Object(root))
}

/// Normalizes and compiles a tool's input schema.
pub fn prepare(input: &Map<String, Value>) -> Result<PreparedSchema, SchemaError> {
    let parameters = normalize(input)?;
    let validator = jsonschema::draft202012::new(&parameters).map_err(|e| SchemaError::Invalid(e.to_string()))?;
    Ok(PreparedSchema { parameters, validator })
}

impl PreparedSchema {
    /// Checks call arguments; the error lists (up to three) problems in words the LLM can act on.
    pub fn check(&self, arguments: &Value) -> Result<(), String> {
        let problems: Vec<String> = self
            .validator
            .iter_errors(arguments)
            .take(3)
            .map(|error| {
                let path = error.instance_path().as_str().to_string();
                if path.is_empty() {
                    error.to_string()
                } else {
                    format!("at {path}: {error}")
                }
            })
            .collect();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }
}

/// Parses the LLM's raw arguments text into a JSON object. Models send `""` or `null` for tools without
/// parameters; both mean `{}`.
pub fn parse_arguments(raw: &str) -> Result<Map<String, Value>, String> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(Map::new());
    }
    match serde_json::from_str::<Value>(raw) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(Value::Null) => Ok(Map::new()),
        Ok(other) => Err(format!("the arguments must be a JSON object, not {}", type_name(&other))),
        Err(error) => Err(format!("the arguments are not valid JSON ({error})")),
    }
}

fn type_name(value: &Value) -> String {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
    .to_string()
}

fn contains_ref(value: &Value) -> bool {
    match value {
        Value::Object(map) => map.get("$ref").is_some_and(Value::is_string) || map.values().any(contains_ref),
        Value::Array(items) => items.iter().any(contains_ref),
        _ => false,
    }
}

/// Refuses `$ref`s that point outside the schema: resolving them would mean fetching from the network or disk.
fn check_refs_are_local(value: &Value) -> Result<(), SchemaError> {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                if key == "$ref" || key == "$dynamicRef" {
                    if let Value::String(target) = child {
                        if !target.starts_with('#') {
                            return Err(SchemaError::ExternalRef(target.clone()));
                        }
                    }
                }
                check_refs_are_local(child)?;
            }
            Ok(())
        }
        Value::Array(items) => items.iter().try_for_each(check_refs_are_local),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn obj(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => panic!("not an object"),
        }
    }

    #[test]
    fn strips_dialect_and_fills_in_type_and_properties() {
        let normalized = normalize(&obj(json!({"$schema": "http://json-schema.org/draft-07/schema#"}))).unwrap();
        assert_eq!(normalized, json!({"type": "object", "properties": {}}));
        let kept = json!({"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"], "additionalProperties": false});
        assert_eq!(normalize(&obj(kept.clone())).unwrap(), kept);
    }

    #[test]
    fn inlines_local_refs_and_drops_definitions() {
        let schema = json!({
            "type": "object",
            "$defs": {"id": {"type": "string", "minLength": 1}},
            "definitions": {"n": {"type": "integer"}},
            "properties": {"order_id": {"$ref": "#/$defs/id"}, "count": {"$ref": "#/definitions/n"}}
        });
        let normalized = normalize(&obj(schema)).unwrap();
        assert_eq!(normalized["properties"]["order_id"], json!({"type": "string", "minLength": 1}));
        assert_eq!(normalized["properties"]["count"], json!({"type": "integer"}));
        assert!(normalized.get("$defs").is_none() && normalized.get("definitions").is_none(), "{normalized}");
    }

    #[test]
    fn rejects_what_cannot_be_fixed() {
        assert!(matches!(normalize(&obj(json!({"type": "array"}))), Err(SchemaError::NotObject(_))));
        assert!(matches!(normalize(&obj(json!({"type": ["object", "null"]}))), Err(SchemaError::NotObject(_))));
        assert!(matches!(
            normalize(&obj(json!({"anyOf": [{"type": "object"}, {"type": "object"}]}))),
            Err(SchemaError::RootCombinator(k)) if k == "anyOf"
        ));
        assert_eq!(normalize(&obj(json!({"properties": []}))), Err(SchemaError::BadProperties));
        assert_eq!(normalize(&obj(json!({"required": "a"}))), Err(SchemaError::BadRequired));
        assert!(matches!(
            normalize(&obj(json!({"properties": {"a": {"$ref": "https://example.com/s.json"}}}))),
            Err(SchemaError::ExternalRef(_))
        ));
        assert!(matches!(
            normalize(&obj(json!({"properties": {"a": {"$ref": "#/$defs/missing"}}}))),
            Err(SchemaError::UnresolvedRef(_))
        ));
        assert!(matches!(
            prepare(&obj(json!({"properties": {"a": {"type": "strnig"}}}))),
            Err(SchemaError::Invalid(_))
        ));
    }

    #[test]
    fn checks_arguments_with_readable_errors() {
        let schema = prepare(&obj(json!({
            "type": "object",
            "properties": {"order_id": {"type": "string"}},
            "required": ["order_id"],
            "additionalProperties": false
        })))
        .unwrap();
        assert_eq!(schema.check(&json!({"order_id": "456"})), Ok(()));
        let missing = schema.check(&json!({})).unwrap_err();
        assert!(missing.contains("order_id"), "{missing}");
        let wrong_type = schema.check(&json!({"order_id": 456})).unwrap_err();
        assert!(wrong_type.contains("/order_id") && wrong_type.contains("string"), "{wrong_type}");
    }

    #[test]
    fn parses_arguments_leniently_but_only_objects() {
        assert_eq!(parse_arguments("").unwrap(), Map::new());
        assert_eq!(parse_arguments(" null ").unwrap(), Map::new());
        assert_eq!(parse_arguments(r#"{"a":1}"#).unwrap()["a"], json!(1));
        assert!(parse_arguments("[1]").unwrap_err().contains("an array"));
        assert!(parse_arguments("{oops").unwrap_err().contains("not valid JSON"));
    }
}
