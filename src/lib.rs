//! Parley: a voice-agent sidecar between Twilio Media Streams and a business backend.
//!
//! The crate is split by concern: [`twilio`] holds the pure wire protocol (messages, signatures, TwiML), [`edge`] the
//! HTTP/WebSocket server that speaks it, [`audio`] the G.711 codec and frame queues, [`call`] the per-call sessions and
//! agents, and [`stt`], [`llm`], [`tts`] the streaming providers of the cascade, with what they share: [`failover`]
//! lists, the [`websocket`] session opening, and the [`tool_executor`] interface the engine calls and [`mcp`]
//! implements. Imports point down the call path: nothing below [`engine`] imports it, [`cli`] or [`eval`].

pub mod archive;
pub mod audio;
pub mod call;
pub mod cli;
pub mod config;
pub mod edge;
pub mod engine;
pub mod eval;
pub mod failover;
mod http_client;
#[cfg(test)]
mod import_rules;
pub mod llm;
pub mod local;
pub mod mcp;
pub mod stt;
pub mod telemetry;
pub mod tool_executor;
pub mod transcribe;
pub mod tts;
pub mod twilio;
pub mod websocket;
