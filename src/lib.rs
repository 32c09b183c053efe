//! Parley: a voice-agent sidecar between Twilio Media Streams and a business backend.
//!
//! The crate is split by concern, in the order of the call path:
//! - [`twilio`]: the pure wire protocol (Media Stream messages, signatures, TwiML), no I/O.
//! - [`edge`]: the HTTP/WebSocket server that speaks it: webhook, media socket, health, metrics, shutdown.
//! - [`websocket`]: WebSocket settings and the one handshake the socket providers share.
//! - [`audio`]: the G.711 μ-law codec, framing, the inbound jitter queue and the outbound playout queue.
//! - [`call`]: per-call information, the agent interface, the echo agent, the registry of live calls, call taps.
//! - [`engine`]: the cascade agent's loop: turn-taking, barge-in, failover, tools, call control, latency.
//! - [`stt`], [`llm`], [`tts`]: one trait per provider kind, one module per streaming provider; [`failover`] lists
//!   of providers of one stage, and [`tool_executor`], the interface the engine calls and [`mcp`] implements.
//! - [`local`]: the local engines' shared parts (Whisper model, resampling, WAV, utterance segmentation).
//! - [`mcp`]: the backend's MCP servers as the engine's tools.
//! - [`archive`]: every call's recording, timeline and metadata.
//! - [`transcribe`]: offline Whisper transcripts of archived calls.
//! - [`telemetry`]: logs, OpenTelemetry traces and metrics, Prometheus.
//! - [`config`]: the configuration file, environment overrides and secrets.
//! - `import_rules` (tests only): imports point down the call path; nothing below [`engine`] imports it, [`cli`]
//!   or [`eval`].
//! - [`assembly`]: the composition root building providers, MCP servers and telemetry from the configuration.
//! - [`cli`]: the `parley` commands (`serve`, `check`, `demo`, `archive`, `transcribe`, `eval`).
//! - [`eval`]: `parley eval`, the simulated caller's client and the scoring of scenario calls.
//!
//! [`deadline`] is the per-frame select loops' wake-up, and [`wake_gate`] keeps their rare inputs from being polled
//! on every frame. A private `http_client` module holds the HTTP client settings the providers share.

pub mod archive;
pub mod assembly;
pub mod audio;
pub mod call;
pub mod cli;
pub mod config;
pub mod cost;
pub mod deadline;
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
pub mod settings;
pub mod stt;
pub mod telemetry;
pub mod text;
pub mod tool_executor;
pub mod transcribe;
pub mod tts;
pub mod turn_model;
pub mod twilio;
pub mod viewer;
pub mod wake_gate;
pub mod websocket;
