//! Parley: a voice-agent sidecar between Twilio Media Streams and a business backend.
//!
//! The crate is split by concern: [`twilio`] holds the pure wire protocol (messages, signatures, TwiML), [`edge`] the
//! HTTP/WebSocket server that speaks it, [`audio`] the G.711 codec and frame queues, [`call`] the per-call sessions and
//! agents, and [`stt`], [`llm`], [`tts`] the streaming providers of the cascade.

pub mod archive;
pub mod audio;
pub mod call;
pub mod cli;
pub mod config;
pub mod edge;
pub mod engine;
pub mod eval;
mod http_client;
pub mod llm;
pub mod local;
pub mod mcp;
pub mod stt;
pub mod telemetry;
pub mod transcribe;
pub mod tts;
pub mod twilio;
pub mod websocket;
