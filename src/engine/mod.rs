//! The call/turn engine: the cascade agent and the parts it is made of.
//!
//! [`cascade`] runs one call's loop, which only decides; its parts: [`links`] (the STT and TTS sessions, opened and
//! fed in tasks), [`in_flight`] (the reply being spoken), [`conversation`] (the history as the caller heard it),
//! [`outcome`] (giving up, call actions, transfers). [`turn`] decides end of turn and barge-in; [`vad`] classifies
//! frames on worker threads; [`reply`] streams one LLM answer through the [`chunker`] and runs its tools; [`heard`]
//! works out what the caller heard of an interrupted reply; [`resume`] recovers from false interruptions; [`latency`] accounts each turn; [`tools`] is what the
//! engine needs from a tool executor.

pub mod call_control;
pub mod cascade;
pub mod chunker;
pub mod clock;
pub mod config;
pub mod conversation;
pub mod heard;
pub mod in_flight;
pub mod keypad;
pub mod links;
pub mod outcome;
pub mod replay;
pub mod reply;
pub mod reports;
pub mod resume;
pub mod turn;
pub mod turn_text;
pub mod vad;

/// Per-turn latency accounting lives with telemetry (which records it); the engine fills it in.
pub use crate::telemetry::latency;
/// The tool-execution interface lives below the engine, so its implementation ([`crate::mcp`]) need not import the
/// engine.
pub use crate::tool_executor as tools;

#[cfg(test)]
mod tests;
