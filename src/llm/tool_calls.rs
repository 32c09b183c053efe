//! Accumulates streamed tool-call fragments into complete [`ToolCall`]s.
//!
//! OpenAI streams each call as fragments keyed by `index`: the first carries `id` and `function.name`, later ones only
//! pieces of `function.arguments`. Servers that speak the OpenAI shape deviate from that in known ways, and a phone
//! call must not fail because the model runs on one of them, so the accumulator is deliberately lenient:
//!
//! - a fragment at an already-used index that carries a *different* id and a name starts a new call (Ollama reports
//!   every parallel call at index 0), unless the current call's arguments are still an unfinished JSON text (servers
//!   that send a fresh id with every fragment);
//! - repeated identical ids and repeated names are ignored (names are never doubled);
//! - a missing `index` continues the call fragmented last (or starts call 0);
//! - `arguments` may be a string piece or a complete JSON object;
//! - a call without an id gets a synthetic one, because the `tool_call_id` round trip needs one.
//!
//! Arguments are never parsed here: the raw text is delivered as produced, even when it is invalid JSON, so the
//! caller can answer the model with an error instead of crashing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use super::ToolCall;

/// One fragment of a streamed tool call, already lifted out of the provider's JSON.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ToolCallFragment {
    /// Position of the call in the response; `None` when the server omitted it.
    pub index: Option<u64>,
    /// The call id; usually only on the first fragment.
    pub id: Option<String>,
    /// The function name; usually only on the first fragment.
    pub name: Option<String>,
    /// A piece of the arguments: a JSON string piece, or (from some servers) a whole JSON object.
    pub arguments: Option<serde_json::Value>,
}

/// Collects fragments in arrival order and turns them into complete calls at the end of the stream.
#[derive(Debug, Default)]
pub struct ToolCallAccumulator {
    calls: Vec<PartialCall>,
    /// Wire index -> position in `calls` of the call currently receiving fragments for that index.
    by_index: HashMap<u64, usize>,
    /// Position of the call that received the last fragment (target of fragments without an index).
    last: Option<usize>,
}

#[derive(Debug, Default)]
struct PartialCall {
    id: String,
    name: String,
    arguments: String,
}

impl PartialCall {
    fn has_unfinished_arguments(&self) -> bool {
        let trimmed = self.arguments.trim();
        !trimmed.is_empty() && serde_json::from_str::<serde_json::Value>(trimmed).is_err()
    }

    fn has_complete_arguments(&self) -> bool {
        let trimmed = self.arguments.trim();
        !trimmed.is_empty() && serde_json::from_str::<serde_json::Value>(trimmed).is_ok()
    }
}

impl ToolCallAccumulator {
    /// An empty accumulator, one per response.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether any call has started.
    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    /// Merges one fragment.
    pub fn push(&mut self, fragment: ToolCallFragment) {
        let position = self.target(&fragment);
        self.last = Some(position);
        let call = &mut self.calls[position];
        if let Some(id) = fragment.id.filter(|id| !id.is_empty()) {
            if call.id.is_empty() {
                call.id = id;
            }
        }
        if let Some(name) = fragment.name.filter(|name| !name.is_empty()) {
            merge_name(&mut call.name, &name);
        }
        match fragment.arguments {
            Some(serde_json::Value::String(piece)) => call.arguments.push_str(&piece),
            Some(serde_json::Value::Null) | None => {}
            Some(whole) => call.arguments.push_str(&whole.to_string()),
        }
    }

    /// The complete calls in the order they started. Calls without a name are dropped (nothing could run them);
    /// calls without an id get a synthetic, process-unique one.
    pub fn finish(self) -> Vec<ToolCall> {
        self.calls
            .into_iter()
            .filter(|call| !call.name.is_empty())
            .map(|call| ToolCall {
                id: if call.id.is_empty() { synthetic_id() } else { call.id },
                name: call.name,
                arguments: call.arguments,
            })
            .collect()
    }

    /// Picks (or creates) the call a fragment belongs to.
    fn target(&mut self, fragment: &ToolCallFragment) -> usize {
        let current = match fragment.index {
            Some(index) => self.by_index.get(&index).copied(),
            None => self.last,
        };
        match current {
            Some(position) if !starts_new_call(&self.calls[position], fragment) => position,
            _ => {
                self.calls.push(PartialCall::default());
                let position = self.calls.len() - 1;
                self.by_index.insert(fragment.index.unwrap_or(0), position);
                position
            }
        }
    }
}

/// Whether `fragment` opens a new call rather than continuing `call`.
fn starts_new_call(call: &PartialCall, fragment: &ToolCallFragment) -> bool {
    let Some(name) = fragment.name.as_deref().filter(|name| !name.is_empty()) else {
        return false; // only arguments (or only an id): a continuation
    };
    match fragment.id.as_deref().filter(|id| !id.is_empty()) {
        Some(id) => !call.id.is_empty() && id != call.id && !call.has_unfinished_arguments(),
        None => name != call.name && !call.name.is_empty() && call.has_complete_arguments(),
    }
}

/// Names arrive whole on the first fragment; some servers resend them on every fragment (keep one copy), a few
/// split them (append the new piece).
fn merge_name(current: &mut String, piece: &str) {
    if current.is_empty() || piece.starts_with(current.as_str()) {
        *current = piece.to_owned();
    } else if !current.ends_with(piece) {
        current.push_str(piece);
    }
}

/// A call id for servers that omit it, unique within this process so tool results can never be mixed up.
fn synthetic_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!("call_parley_{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn frag(index: Option<u64>, id: Option<&str>, name: Option<&str>, arguments: Option<&str>) -> ToolCallFragment {
        ToolCallFragment {
            index,
            id: id.map(str::to_owned),
            name: name.map(str::to_owned),
            arguments: arguments.map(|a| json!(a)),
        }
    }

    fn accumulate(fragments: Vec<ToolCallFragment>) -> Vec<ToolCall> {
        let mut acc = ToolCallAccumulator::new();
        for fragment in fragments {
            acc.push(fragment);
        }
        acc.finish()
    }

    fn call(id: &str, name: &str, arguments: &str) -> ToolCall {
        ToolCall { id: id.into(), name: name.into(), arguments: arguments.into() }
    }

    #[test]
    fn documented_fragments_concatenate_arguments_per_index() {
        let calls = accumulate(vec![
            frag(Some(0), Some("call_abc"), Some("lookup_order"), Some("")),
            frag(Some(0), None, None, Some("{\"order_")),
            frag(Some(0), None, None, Some("id\":\"456\"}")),
        ]);
        assert_eq!(calls, vec![call("call_abc", "lookup_order", "{\"order_id\":\"456\"}")]);
    }

    #[test]
    fn interleaved_parallel_calls_keep_their_order() {
        let calls = accumulate(vec![
            frag(Some(0), Some("call_a"), Some("get_weather"), Some("")),
            frag(Some(1), Some("call_b"), Some("get_time"), Some("")),
            frag(Some(0), None, None, Some("{\"city\":")),
            frag(Some(1), None, None, Some("{\"tz\":\"UTC\"}")),
            frag(Some(0), None, None, Some("\"Paris\"}")),
        ]);
        assert_eq!(
            calls,
            vec![call("call_a", "get_weather", "{\"city\":\"Paris\"}"), call("call_b", "get_time", "{\"tz\":\"UTC\"}")]
        );
    }

    #[test]
    fn same_index_with_a_new_id_starts_a_new_call() {
        // Ollama: every parallel call at index 0, whole calls, distinguishable only by id.
        let calls = accumulate(vec![
            frag(Some(0), Some("call_1"), Some("run"), Some("{\"cmd\":\"ls\"}")),
            frag(Some(0), Some("call_2"), Some("run"), Some("{\"cmd\":\"pwd\"}")),
        ]);
        assert_eq!(calls, vec![call("call_1", "run", "{\"cmd\":\"ls\"}"), call("call_2", "run", "{\"cmd\":\"pwd\"}")]);
    }

    #[test]
    fn repeated_identical_id_and_name_are_ignored() {
        let calls = accumulate(vec![
            frag(Some(0), Some("call_1"), Some("read_file"), Some("{\"pa")),
            frag(Some(0), Some("call_1"), Some("read_file"), Some("th\":\"a\"}")),
        ]);
        assert_eq!(calls, vec![call("call_1", "read_file", "{\"path\":\"a\"}")]);
    }

    #[test]
    fn a_fresh_id_on_every_fragment_does_not_split_the_call() {
        let calls = accumulate(vec![
            frag(Some(0), Some("id_1"), Some("lookup_order"), Some("{\"order_")),
            frag(Some(0), Some("id_2"), None, Some("id\":")),
            frag(Some(0), Some("id_3"), Some("lookup_order"), Some("\"456\"}")),
        ]);
        assert_eq!(calls, vec![call("id_1", "lookup_order", "{\"order_id\":\"456\"}")]);
    }

    #[test]
    fn missing_index_continues_the_last_call_and_new_ids_start_calls() {
        let calls = accumulate(vec![
            frag(None, Some("a"), Some("f"), Some("{\"x\":")),
            frag(None, None, None, Some("1}")),
            frag(None, Some("b"), Some("g"), Some("{}")),
        ]);
        assert_eq!(calls, vec![call("a", "f", "{\"x\":1}"), call("b", "g", "{}")]);
    }

    #[test]
    fn arguments_as_a_json_object_are_serialized() {
        let mut acc = ToolCallAccumulator::new();
        acc.push(ToolCallFragment {
            index: Some(0),
            id: Some("c".into()),
            name: Some("lookup_order".into()),
            arguments: Some(json!({"order_id": "456"})),
        });
        assert_eq!(acc.finish(), vec![call("c", "lookup_order", "{\"order_id\":\"456\"}")]);
    }

    #[test]
    fn a_missing_id_gets_a_unique_synthetic_one() {
        let calls =
            accumulate(vec![frag(Some(0), None, Some("f"), Some("{}")), frag(Some(1), None, Some("g"), Some("{}"))]);
        assert_eq!(calls.len(), 2);
        assert!(calls[0].id.starts_with("call_parley_"));
        assert_ne!(calls[0].id, calls[1].id);
    }

    #[test]
    fn a_split_name_is_joined() {
        let calls = accumulate(vec![
            frag(Some(0), Some("c"), Some("lookup_"), None),
            frag(Some(0), None, Some("order"), Some("{}")),
        ]);
        assert_eq!(calls, vec![call("c", "lookup_order", "{}")]);
    }

    #[test]
    fn invalid_arguments_are_kept_raw() {
        let calls = accumulate(vec![frag(Some(0), Some("c"), Some("f"), Some("{\"order_id\":\"45"))]);
        assert_eq!(calls, vec![call("c", "f", "{\"order_id\":\"45")]);
    }

    #[test]
    fn calls_without_a_name_are_dropped() {
        let calls = accumulate(vec![frag(Some(0), Some("c"), None, Some("{}"))]);
        assert!(calls.is_empty());
    }

    #[test]
    fn no_fragments_no_calls() {
        let acc = ToolCallAccumulator::new();
        assert!(acc.is_empty());
        assert!(acc.finish().is_empty());
    }
}
