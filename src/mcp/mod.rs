//! The MCP tool bridge: the business backend's actions, served by MCP servers, offered to the LLM as function tools.
//!
//! [`McpBridge`] connects to every configured server at start-up (a server that is down is reported and retried in
//! the background; its tools are absent until it is back), lists their tools, makes names and schemas acceptable to
//! LLM providers, and implements the engine's [`ToolExecutor`](crate::tool_executor::ToolExecutor): it validates the
//! LLM's arguments, calls the tool with a timeout and the call's context in `_meta`, cancels it at the backend on
//! barge-in or hang-up, and turns the result into text for the LLM.
//!
//! Modules: [`config`] (the `[mcp]` section), [`names`] and [`schema`] and [`result`] (pure mapping rules),
//! [`http`] (the HTTP client), `server` (one connection and its reconnect loop), [`failure`] (connection failures
//! in plain words), [`bridge`] (the executor), [`report`] (what `parley check` prints).

pub mod bridge;
pub mod config;
pub mod failure;
pub mod http;
pub mod names;
pub mod report;
pub mod result;
pub mod schema;
mod server;

pub use bridge::McpBridge;
pub use config::{McpConfig, McpConfigError, McpServerConfig, McpTransportConfig};
pub use report::{DroppedTool, McpReport, ServerReport, ServerStatus, ToolReport};

/// Why the bridge could not be built. Unreachable servers are not an error (they are retried); only a configuration
/// Parley cannot run with is.
#[derive(Debug, thiserror::Error)]
pub enum McpError {
    #[error("invalid [mcp] configuration: {0}")]
    Config(#[from] McpConfigError),
}

/// rmcp's HTTP client uses rustls without a built-in crypto provider (Parley's other TLS users are on `ring`, and a
/// second provider would make rustls unable to pick a default). Installs `ring` as the process default if none is.
pub(crate) fn ensure_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing a race with another thread installing one is fine: any installed provider will do.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}
