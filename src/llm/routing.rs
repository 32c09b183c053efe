//! Hard turns routed to a larger model, and back to the fast one after.
//!
//! A fast, small model answers most turns of a phone call well and soonest. Some turns need more: a long, tangled
//! request, a chain of tool calls, a backend answer that takes judgement to read. `[llm.route]` names a larger model
//! (on the same provider and account as `[llm]`) and the rules that send a turn, or the rest of a reply, to it. The
//! next caller turn starts on the fast model again. The route each request took is on its `chat` span
//! (`voice.llm.route`).

use std::sync::Arc;

use serde::Deserialize;

use super::{LanguageModel, ToolCall, ToolSpec};

/// The tool offered to the fast model when [`RouteRules::escalation_tool`] is on.
pub const ESCALATION_TOOL: &str = "hand_to_larger_model";

/// What the fast model is told when it handed a turn over.
pub const ESCALATED_RESULT: &str = "The larger model is answering this turn now.";

/// `[llm.route]`: when a turn goes to the larger model.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RouteRules {
    /// The larger model, on `[llm].provider`'s endpoint and key (empty: routing is off).
    pub model: String,
    /// A reply that has made this many tool rounds continues on the larger model (0: never).
    pub after_tool_rounds: usize,
    /// A caller turn of more than this many words goes to the larger model (0: never).
    pub caller_words_over: usize,
    /// Tools whose results the larger model reads: the round after one of them ran goes to it.
    pub tools: Vec<String>,
    /// Offer the fast model a tool ([`ESCALATION_TOOL`]) to hand the turn over itself.
    pub escalation_tool: bool,
}

/// Which model a request goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Fast,
    Large,
}

impl Route {
    /// The name on spans and in logs.
    pub fn name(self) -> &'static str {
        match self {
            Route::Fast => "fast",
            Route::Large => "large",
        }
    }
}

/// The larger model and the rules that lead to it.
pub struct ModelRoute {
    pub large: Arc<dyn LanguageModel>,
    pub rules: RouteRules,
}

impl RouteRules {
    /// Whether a second model is configured.
    pub fn enabled(&self) -> bool {
        !self.model.trim().is_empty()
    }

    /// The route a reply to this caller turn starts on.
    pub fn for_caller_turn(&self, text: &str) -> Route {
        let words = text.split_whitespace().count();
        if self.caller_words_over > 0 && words > self.caller_words_over {
            Route::Large
        } else {
            Route::Fast
        }
    }

    /// The route of a reply's next round, after `rounds_done` tool rounds, the last of which made `calls`.
    pub fn after_tool_round(&self, current: Route, rounds_done: usize, calls: &[ToolCall]) -> Route {
        let by_rounds = self.after_tool_rounds > 0 && rounds_done >= self.after_tool_rounds;
        let by_tool = calls.iter().any(|call| self.tools.contains(&call.name));
        let asked = calls.iter().any(|call| call.name == ESCALATION_TOOL);
        if current == Route::Large || by_rounds || by_tool || asked {
            Route::Large
        } else {
            Route::Fast
        }
    }

    /// The escalation tool's definition, when the fast model is to be offered it.
    pub fn escalation_spec(&self) -> Option<ToolSpec> {
        self.escalation_tool.then(|| ToolSpec {
            name: ESCALATION_TOOL.into(),
            description: "Hand this turn to a larger, slower model. Call it only when the caller's request needs \
                          careful reasoning you are not sure of: several conditions at once, a calculation, a policy \
                          question, or conflicting information from the tools."
                .into(),
            parameters: serde_json::json!({"type": "object", "properties": {}}),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(name: &str) -> ToolCall {
        ToolCall { id: "c".into(), name: name.into(), arguments: "{}".into() }
    }

    fn rules() -> RouteRules {
        RouteRules {
            model: "gpt-4.1".into(),
            after_tool_rounds: 2,
            caller_words_over: 8,
            tools: vec!["refund_order".into()],
            escalation_tool: true,
        }
    }

    #[test]
    fn long_caller_turns_start_on_the_larger_model() {
        assert_eq!(rules().for_caller_turn("Where is my order?"), Route::Fast);
        let long = "I ordered two kettles and a towel but only one kettle came and the towel is the wrong colour";
        assert_eq!(rules().for_caller_turn(long), Route::Large);
        assert_eq!(RouteRules { caller_words_over: 0, ..rules() }.for_caller_turn(long), Route::Fast);
    }

    #[test]
    fn rounds_marked_tools_and_the_models_own_request_lead_to_the_larger_model() {
        let rules = rules();
        assert_eq!(rules.after_tool_round(Route::Fast, 1, &[call("lookup_order")]), Route::Fast);
        assert_eq!(rules.after_tool_round(Route::Fast, 2, &[call("lookup_order")]), Route::Large);
        assert_eq!(rules.after_tool_round(Route::Fast, 1, &[call("refund_order")]), Route::Large);
        assert_eq!(rules.after_tool_round(Route::Fast, 1, &[call(ESCALATION_TOOL)]), Route::Large);
        assert_eq!(rules.after_tool_round(Route::Large, 1, &[call("lookup_order")]), Route::Large);
        assert!(rules.escalation_spec().is_some());
        assert!(RouteRules { escalation_tool: false, ..rules }.escalation_spec().is_none());
    }
}
