//! The demo backend's tools: their MCP definitions (schemas, descriptions, annotations) and what each one does.

use std::sync::Arc;

use rmcp::model::{CallToolResult, ContentBlock, JsonObject, Tool, ToolAnnotations};
use serde_json::{json, Value};

use crate::store::{Change, Store, StoreError};

fn object(value: Value) -> Arc<JsonObject> {
    match value {
        Value::Object(map) => Arc::new(map),
        _ => Arc::new(JsonObject::new()),
    }
}

/// Every tool the backend offers, in a fixed order (stable order keeps LLM prompt caches warm).
pub fn definitions() -> Vec<Tool> {
    vec![
        Tool::new(
            "lookup_order",
            "Look up a shop order by its order number: status (processing, shipped, delivered, cancelled), \
             expected delivery, and items.",
            object(json!({
                "type": "object",
                "properties": {
                    "order_id": {"type": "string", "description": "The order number the caller gives, digits only, e.g. \"456\"."}
                },
                "required": ["order_id"],
                "additionalProperties": false
            })),
        )
        .with_annotations(ToolAnnotations::new().read_only(true).destructive(false).idempotent(true).open_world(false)),
        Tool::new(
            "cancel_order",
            "Cancel a shop order that has not shipped yet. Only call this after the caller has clearly confirmed they \
             want the order cancelled.",
            object(json!({
                "type": "object",
                "properties": {
                    "order_id": {"type": "string", "description": "The order number to cancel, digits only."}
                },
                "required": ["order_id"],
                "additionalProperties": false
            })),
        )
        .with_annotations(ToolAnnotations::new().read_only(false).destructive(true).idempotent(true).open_world(false)),
        Tool::new(
            "list_open_slots",
            "List the clinic's open appointment slots, earliest first, optionally only on one date.",
            object(json!({
                "type": "object",
                "properties": {
                    "date": {
                        "type": "string",
                        "pattern": "^\\d{4}-\\d{2}-\\d{2}$",
                        "description": "Only slots on this date, as YYYY-MM-DD. Omit to list every open slot."
                    }
                },
                "additionalProperties": false
            })),
        )
        .with_annotations(ToolAnnotations::new().read_only(true).destructive(false).idempotent(true).open_world(false)),
        Tool::new(
            "book_appointment",
            "Book an open clinic slot for a patient. Returns the appointment id to read back to the caller.",
            object(json!({
                "type": "object",
                "properties": {
                    "slot_id": {"type": "string", "description": "The slot id from list_open_slots, e.g. \"S-101\"."},
                    "patient_name": {"type": "string", "minLength": 1, "description": "The patient's full name."}
                },
                "required": ["slot_id", "patient_name"],
                "additionalProperties": false
            })),
        )
        .with_annotations(ToolAnnotations::new().read_only(false).destructive(false).idempotent(false).open_world(false)),
        Tool::new(
            "cancel_appointment",
            "Cancel a booked clinic appointment, freeing its slot. Only call this after the caller has clearly \
             confirmed the cancellation.",
            object(json!({
                "type": "object",
                "properties": {
                    "appointment_id": {"type": "string", "description": "The appointment id, e.g. \"A-1001\"."}
                },
                "required": ["appointment_id"],
                "additionalProperties": false
            })),
        )
        .with_annotations(ToolAnnotations::new().read_only(false).destructive(true).idempotent(true).open_world(false)),
    ]
}

/// Why a call could not run at all (as opposed to a business refusal, which is an `isError` result).
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("unknown tool {0}")]
    UnknownTool(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn string_arg<'a>(arguments: &'a JsonObject, name: &str) -> Result<&'a str, CallToolResult> {
    match arguments.get(name) {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.trim()),
        Some(_) => Err(failure(format!("Argument {name} must be a non-empty string."))),
        None => Err(failure(format!("Missing required argument {name}."))),
    }
}

fn failure(text: String) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(text)])
}

fn success(text: String, structured: Value) -> CallToolResult {
    let mut result = CallToolResult::success(vec![ContentBlock::text(text)]);
    result.structured_content = Some(structured);
    result
}

/// Runs one tool against the store. Bad arguments and business refusals come back as `isError` results the caller's
/// LLM can read; only an unknown tool or a database failure is an `Err`.
pub fn run(store: &Store, tool: &str, arguments: &JsonObject) -> Result<CallToolResult, CallError> {
    let result = match tool {
        "lookup_order" => lookup_order(store, arguments)?,
        "cancel_order" => cancel_order(store, arguments)?,
        "list_open_slots" => list_open_slots(store, arguments)?,
        "book_appointment" => book_appointment(store, arguments)?,
        "cancel_appointment" => cancel_appointment(store, arguments)?,
        other => return Err(CallError::UnknownTool(other.to_string())),
    };
    Ok(result)
}

fn lookup_order(store: &Store, arguments: &JsonObject) -> Result<CallToolResult, StoreError> {
    let order_id = match string_arg(arguments, "order_id") {
        Ok(id) => id,
        Err(result) => return Ok(result),
    };
    Ok(match store.order(order_id)? {
        None => failure(format!("There is no order {order_id}.")),
        Some(order) => {
            let eta = order.eta.as_deref().map(|eta| format!(", arriving {eta}")).unwrap_or_default();
            let text = format!("Order {}: {}{} ({}).", order.order_id, order.status, eta, order.items);
            success(text, json!(order))
        }
    })
}

fn cancel_order(store: &Store, arguments: &JsonObject) -> Result<CallToolResult, StoreError> {
    let order_id = match string_arg(arguments, "order_id") {
        Ok(id) => id,
        Err(result) => return Ok(result),
    };
    Ok(match store.cancel_order(order_id)? {
        None => failure(format!("There is no order {order_id}.")),
        Some(Change::Refused(reason)) => failure(reason),
        Some(Change::Done(order)) => success(format!("Order {order_id} is now cancelled."), json!(order)),
    })
}

fn list_open_slots(store: &Store, arguments: &JsonObject) -> Result<CallToolResult, StoreError> {
    let date = match arguments.get("date") {
        None | Some(Value::Null) => None,
        Some(Value::String(d)) if is_iso_date(d) => Some(d.as_str()),
        Some(_) => return Ok(failure("Argument date must be a date like 2026-03-14.".to_string())),
    };
    let slots = store.open_slots(date)?;
    if slots.is_empty() {
        return Ok(success("There are no open slots.".to_string(), json!({"slots": []})));
    }
    let lines: Vec<String> =
        slots.iter().map(|s| format!("{}: {} at {} with {}", s.slot_id, s.date, s.time, s.clinician)).collect();
    Ok(success(format!("Open slots:\n{}", lines.join("\n")), json!({"slots": slots})))
}

fn book_appointment(store: &Store, arguments: &JsonObject) -> Result<CallToolResult, StoreError> {
    let (slot_id, patient_name) = match (string_arg(arguments, "slot_id"), string_arg(arguments, "patient_name")) {
        (Ok(slot), Ok(name)) => (slot, name),
        (Err(result), _) | (_, Err(result)) => return Ok(result),
    };
    Ok(match store.book(slot_id, patient_name)? {
        Change::Refused(reason) => failure(reason),
        Change::Done(a) => success(
            format!(
                "Booked appointment {} for {} on {} at {} with {}.",
                a.appointment_id, a.patient_name, a.date, a.time, a.clinician
            ),
            json!(a),
        ),
    })
}

fn cancel_appointment(store: &Store, arguments: &JsonObject) -> Result<CallToolResult, StoreError> {
    let appointment_id = match string_arg(arguments, "appointment_id") {
        Ok(id) => id,
        Err(result) => return Ok(result),
    };
    Ok(match store.cancel_appointment(appointment_id)? {
        None => failure(format!("There is no appointment {appointment_id}.")),
        Some(Change::Refused(reason)) => failure(reason),
        Some(Change::Done(a)) => success(format!("Appointment {appointment_id} is cancelled."), json!(a)),
    })
}

fn is_iso_date(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter().enumerate().all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(value: Value) -> JsonObject {
        match value {
            Value::Object(map) => map,
            _ => panic!("not an object"),
        }
    }

    fn text(result: &CallToolResult) -> String {
        result.content.iter().filter_map(|c| c.as_text()).map(|t| t.text.clone()).collect()
    }

    #[test]
    fn definitions_have_object_schemas_and_destructive_hints() {
        let tools = definitions();
        assert_eq!(tools.len(), 5);
        for tool in &tools {
            assert_eq!(tool.input_schema.get("type"), Some(&json!("object")), "{}", tool.name);
        }
        let destructive: Vec<&str> = tools
            .iter()
            .filter(|t| t.annotations.as_ref().and_then(|a| a.destructive_hint) == Some(true))
            .map(|t| t.name.as_ref())
            .collect();
        assert_eq!(destructive, ["cancel_order", "cancel_appointment"]);
    }

    #[test]
    fn lookup_reports_shipped_order_and_missing_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        let found = run(&store, "lookup_order", &args(json!({"order_id": "456"}))).unwrap();
        assert_eq!(found.is_error, Some(false));
        assert!(text(&found).contains("shipped, arriving Friday"), "{}", text(&found));
        let missing = run(&store, "lookup_order", &args(json!({"order_id": "999"}))).unwrap();
        assert_eq!(missing.is_error, Some(true));
        let bad = run(&store, "lookup_order", &args(json!({"order_id": 456}))).unwrap();
        assert_eq!(bad.is_error, Some(true));
        assert!(matches!(run(&store, "nope", &JsonObject::new()), Err(CallError::UnknownTool(_))));
    }

    #[test]
    fn date_check() {
        assert!(is_iso_date("2026-03-14"));
        assert!(!is_iso_date("2026-3-14"));
        assert!(!is_iso_date("tomorrow!!"));
    }
}
