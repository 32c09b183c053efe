//! The MCP server side: the rmcp handler that journals every call, applies the test hooks, and runs the tool; plus
//! the two ways to serve it (stdio, Streamable HTTP).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, Implementation, JsonObject, ListToolsResult, PaginatedRequestParams,
    ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, RoleServer, ServerHandler, ServiceExt};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::store::Store;
use crate::tools;

/// Test hooks that make the backend misbehave on purpose, so the client's timeout, cancellation and reconnect paths
/// can be exercised.
#[derive(Debug, Clone, Default)]
pub struct Hooks {
    /// Every tool call waits this long before running (and can be cancelled while waiting).
    pub delay: Duration,
    /// If this file exists when a tool call arrives, the backend deletes it and exits the process at once, as a
    /// crash mid-call. Only meaningful for the binary.
    pub crash_once: Option<PathBuf>,
}

impl Hooks {
    /// Reads the hooks from `DEMO_BACKEND_DELAY_MS` and `DEMO_BACKEND_CRASH_ONCE`.
    pub fn from_env() -> Hooks {
        let delay = std::env::var("DEMO_BACKEND_DELAY_MS")
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_millis)
            .unwrap_or_default();
        let crash_once = std::env::var_os("DEMO_BACKEND_CRASH_ONCE").filter(|v| !v.is_empty()).map(PathBuf::from);
        Hooks { delay, crash_once }
    }
}

/// The demo backend as an MCP server handler. Cheap to clone (one per HTTP session shares the store).
#[derive(Clone)]
pub struct DemoBackend {
    store: Arc<Store>,
    hooks: Arc<Hooks>,
    tools: Arc<Vec<Tool>>,
}

impl DemoBackend {
    /// A backend over an opened store.
    pub fn new(store: Arc<Store>, hooks: Hooks) -> DemoBackend {
        DemoBackend { store, hooks: Arc::new(hooks), tools: Arc::new(tools::definitions()) }
    }

    async fn handle(&self, tool: &str, arguments: JsonObject, context: RequestContext<RoleServer>) -> CallOutcome {
        let meta = serde_json::to_value(&context.meta).unwrap_or(Value::Null);
        let call_sid = meta.get("parley/callSid").and_then(Value::as_str).unwrap_or("-");
        let turn_index = meta.get("parley/turnIndex").and_then(Value::as_u64).unwrap_or_default();
        let traceparent = meta.get("traceparent").and_then(Value::as_str).unwrap_or("-");
        tracing::info!(tool, call_sid, turn_index, traceparent, "tool call");
        let http_traceparent = context
            .extensions
            .get::<axum::http::request::Parts>()
            .and_then(|parts| parts.headers.get("traceparent"))
            .and_then(|value| value.to_str().ok())
            .map(str::to_string);
        let arguments_value = Value::Object(arguments.clone());
        let journal_id = match self.store.journal_start(tool, &arguments_value, &meta, http_traceparent.as_deref()) {
            Ok(id) => Some(id),
            Err(error) => {
                tracing::warn!(%error, "could not journal the call");
                None
            }
        };
        if let Some(marker) = &self.hooks.crash_once {
            if std::fs::remove_file(marker).is_ok() {
                tracing::warn!("crash hook: exiting mid-call");
                std::process::exit(70);
            }
        }
        if !self.hooks.delay.is_zero() {
            tokio::select! {
                () = tokio::time::sleep(self.hooks.delay) => {}
                () = context.ct.cancelled() => {
                    tracing::info!(tool, "call cancelled by the client");
                    self.finish(journal_id, "cancelled");
                    return CallOutcome::Cancelled;
                }
            }
        }
        let store = Arc::clone(&self.store);
        let name = tool.to_string();
        let result = tokio::task::spawn_blocking(move || tools::run(&store, &name, &arguments)).await;
        match result {
            Ok(Ok(result)) => {
                self.finish(journal_id, if result.is_error == Some(true) { "error" } else { "ok" });
                CallOutcome::Done(result.into())
            }
            Ok(Err(tools::CallError::UnknownTool(name))) => {
                self.finish(journal_id, "error");
                CallOutcome::Failed(ErrorData::invalid_params(format!("unknown tool {name}"), None))
            }
            Ok(Err(error)) => {
                self.finish(journal_id, "error");
                CallOutcome::Failed(ErrorData::internal_error(error.to_string(), None))
            }
            Err(join_error) => {
                self.finish(journal_id, "error");
                CallOutcome::Failed(ErrorData::internal_error(join_error.to_string(), None))
            }
        }
    }

    fn finish(&self, journal_id: Option<i64>, outcome: &str) {
        if let Some(id) = journal_id {
            if let Err(error) = self.store.journal_finish(id, outcome) {
                tracing::warn!(%error, "could not journal the call's end");
            }
        }
    }
}

enum CallOutcome {
    Done(CallToolResponse),
    Failed(ErrorData),
    Cancelled,
}

impl ServerHandler for DemoBackend {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("demo-backend", env!("CARGO_PKG_VERSION")))
            .with_instructions("A fictional shop (orders) and clinic (appointments) for Parley's demo and tests.")
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(self.tools.as_ref().clone()))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.tools.iter().find(|t| t.name == name).cloned()
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let arguments = request.arguments.unwrap_or_default();
        match self.handle(&request.name, arguments, context).await {
            CallOutcome::Done(response) => Ok(response),
            CallOutcome::Failed(error) => Err(error),
            CallOutcome::Cancelled => Err(ErrorData::internal_error("cancelled", None)),
        }
    }
}

/// Errors from serving.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("MCP session failed to start: {0}")]
    Start(String),
    #[error("MCP session ended abnormally: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// Serves one MCP session over this process's stdin/stdout until the client closes it.
pub async fn serve_stdio(backend: DemoBackend) -> Result<(), ServeError> {
    let running = backend.serve(rmcp::transport::stdio()).await.map_err(|e| ServeError::Start(e.to_string()))?;
    running.waiting().await?;
    Ok(())
}

/// Serves Streamable HTTP at `/mcp` on `listener` until `shutdown` fires.
pub async fn serve_http(
    listener: TcpListener,
    backend: DemoBackend,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let config = StreamableHttpServerConfig::default().with_cancellation_token(shutdown.child_token());
    let service =
        StreamableHttpService::new(move || Ok(backend.clone()), LocalSessionManager::default().into(), config);
    let router = axum::Router::new().nest_service("/mcp", service);
    axum::serve(listener, router).with_graceful_shutdown(shutdown.cancelled_owned()).await?;
    Ok(())
}
