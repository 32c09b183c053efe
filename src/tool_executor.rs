//! What the engine needs from whatever executes the LLM's tool calls (the MCP bridge, or nothing).
//!
//! The interface sits below both sides: the engine calls it, [`crate::mcp`] implements it, and neither reaches into
//! the other. `crate::engine::tools` names the same module.

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

pub use crate::llm::history::ToolOutcome;
use crate::llm::{ToolCall, ToolSpec};

/// Context passed with every tool call, so the backend knows which call and turn it serves.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ToolCallContext {
    pub call_sid: String,
    /// The caller's number, or `None` when numbers are redacted.
    pub caller_number: Option<String>,
    /// Index of the caller turn this tool call belongs to (0-based).
    pub turn_index: u64,
    /// W3C `traceparent` of the span the tool call runs under, when tracing is on.
    pub traceparent: Option<String>,
}

/// Executes the LLM's tool calls. Implementations never fail the turn: every problem becomes an error outcome the
/// LLM can read and recover from.
#[async_trait]
pub trait ToolExecutor: Send + Sync {
    /// The tools to offer the LLM, in its function-calling form (names already made safe).
    fn specs(&self) -> Vec<ToolSpec>;

    /// Whether the caller must confirm this tool aloud before it runs (actions the backend marks destructive).
    fn needs_confirmation(&self, _name: &str) -> bool {
        false
    }

    /// The backend server behind a tool, for its span (`None` when unknown).
    fn server_of(&self, _name: &str) -> Option<String> {
        None
    }

    /// Runs one call. `cancel` fires on barge-in or hang-up; the implementation should stop the call at the backend
    /// (MCP `notifications/cancelled`) and return promptly.
    async fn call(&self, call: &ToolCall, context: &ToolCallContext, cancel: CancellationToken) -> ToolOutcome;
}

/// No tools: the agent only talks.
pub struct NoTools;

#[async_trait]
impl ToolExecutor for NoTools {
    fn specs(&self) -> Vec<ToolSpec> {
        Vec::new()
    }

    async fn call(&self, call: &ToolCall, _context: &ToolCallContext, _cancel: CancellationToken) -> ToolOutcome {
        ToolOutcome::error(format!("no tool named {} is available", call.name))
    }
}
