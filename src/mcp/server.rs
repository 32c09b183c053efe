//! One MCP server: connecting (child process or Streamable HTTP), listing its tools, keeping that list fresh,
//! reconnecting when the connection fails, and running tool calls on it.
//!
//! Each server has a supervisor task. It connects, publishes the tools, then watches the connection: a
//! `tools/list_changed` notification re-lists, a failed call or ping or a closed transport tears the connection down,
//! and it reconnects with exponential backoff. Calls never wait for a connection: while a server is down its tools are
//! simply absent and a call in flight fails with an error the LLM can relay.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rmcp::model::{
    CallToolRequest, CallToolRequestParams, CancelledNotification, CancelledNotificationParam, ClientCapabilities,
    ClientConfig, ClientNotification, ClientRequest, Implementation, JsonObject, RequestId, RequestMetaObject,
    ServerResult, Tool,
};
use rmcp::service::{NotificationContext, PeerRequestOptions, RunningService};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{ClientHandler, Peer, RoleClient, ServiceError, ServiceExt};
use tokio::io::AsyncBufReadExt;
use tokio::sync::{oneshot, Notify};
use tokio_util::sync::CancellationToken;

use crate::mcp::config::{McpConfig, McpServerConfig, McpTransportConfig};
use crate::mcp::failure;
use crate::mcp::http::TracingHttpClient;
use crate::mcp::report::{DroppedTool, ServerStatus};
use crate::mcp::result;
use crate::mcp::schema::{self, PreparedSchema};
use crate::tool_executor::ToolOutcome;

/// Environment variables a stdio server always gets from Parley's own environment (when set); everything else must
/// be named in `inherit_env` or set in `env`, so provider API keys don't leak into tool servers.
const STDIO_BASE_ENV: [&str; 6] = ["PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "USER"];

/// A tool the server lists (after allow/deny), with its schema prepared once.
pub(crate) struct ListedTool {
    pub tool: Tool,
    pub schema: Arc<PreparedSchema>,
}

/// What the bridge reads to build its catalog and report.
pub(crate) struct Snapshot {
    pub status: ServerStatus,
    pub server_info: Option<String>,
    pub tools: Arc<Vec<ListedTool>>,
    /// Real names of the tools listed last, kept while the server is down (they reserve their names).
    pub listed_names: Arc<Vec<String>>,
    pub dropped: Arc<Vec<DroppedTool>>,
}

struct State {
    status: ServerStatus,
    server_info: Option<String>,
    tools: Arc<Vec<ListedTool>>,
    listed_names: Arc<Vec<String>>,
    dropped: Arc<Vec<DroppedTool>>,
    peer: Option<Peer<RoleClient>>,
    /// Bumped on every new connection, so a failure seen on an old connection doesn't tear down a newer one.
    generation: u64,
    /// Cancelled when a call finds the current connection broken; the supervisor then replaces it.
    broken: CancellationToken,
}

/// Timings shared by every server, from [`McpConfig`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    pub connect_timeout: Duration,
    pub reconnect_initial: Duration,
    pub reconnect_max: Duration,
    /// `None` disables pings.
    pub ping_interval: Option<Duration>,
}

impl Timing {
    pub fn from_config(config: &McpConfig) -> Timing {
        let reconnect_initial = Duration::from_millis(config.reconnect_initial_ms.max(1));
        Timing {
            connect_timeout: config.connect_timeout(),
            reconnect_initial,
            reconnect_max: Duration::from_millis(config.reconnect_max_ms).max(reconnect_initial),
            ping_interval: (config.ping_interval_ms > 0).then(|| Duration::from_millis(config.ping_interval_ms)),
        }
    }
}

/// One configured MCP server and its live connection, if any.
pub(crate) struct ServerConnection {
    pub config: McpServerConfig,
    timing: Timing,
    state: RwLock<State>,
    list_changed: Arc<Notify>,
    on_change: Arc<dyn Fn() + Send + Sync>,
}

type Running = RunningService<RoleClient, BridgeClient>;

impl ServerConnection {
    pub fn new(config: McpServerConfig, timing: Timing, on_change: Arc<dyn Fn() + Send + Sync>) -> ServerConnection {
        ServerConnection {
            config,
            timing,
            state: RwLock::new(State {
                status: ServerStatus::Connecting,
                server_info: None,
                tools: Arc::new(Vec::new()),
                listed_names: Arc::new(Vec::new()),
                dropped: Arc::new(Vec::new()),
                peer: None,
                generation: 0,
                broken: CancellationToken::new(),
            }),
            list_changed: Arc::new(Notify::new()),
            on_change,
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn snapshot(&self) -> Snapshot {
        let state = self.read();
        Snapshot {
            status: state.status.clone(),
            server_info: state.server_info.clone(),
            tools: Arc::clone(&state.tools),
            listed_names: Arc::clone(&state.listed_names),
            dropped: Arc::clone(&state.dropped),
        }
    }

    /// `http <endpoint>` or `stdio <command>`, for reports; the URL loses any credentials and query.
    pub fn target(&self) -> String {
        let kind = match &self.config.transport {
            McpTransportConfig::Http { .. } => "http",
            McpTransportConfig::Stdio { .. } => "stdio",
        };
        format!("{kind} {}", failure::endpoint(&self.config.transport))
    }

    /// The supervisor loop; runs until `shutdown`. Sends on `first_attempt` once the first connection attempt has
    /// finished either way, so start-up can wait for reachable servers without hanging on unreachable ones.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken, first_attempt: oneshot::Sender<()>) {
        let name = self.config.name.clone();
        let mut first_attempt = Some(first_attempt);
        let mut backoff = self.timing.reconnect_initial;
        loop {
            let attempt = tokio::select! {
                attempt = self.connect_once() => attempt,
                () = shutdown.cancelled() => return,
            };
            match attempt {
                Ok((running, tools, dropped, server_info)) => {
                    backoff = self.timing.reconnect_initial;
                    let peer = running.peer().clone();
                    let count = tools.len();
                    let broken = self.set_up(peer.clone(), tools, dropped, server_info);
                    tracing::info!(server = %name, tools = count, "mcp server connected");
                    if let Some(done) = first_attempt.take() {
                        let _ = done.send(());
                    }
                    let reason = self.watch(running, peer, &broken, &shutdown).await;
                    if shutdown.is_cancelled() {
                        self.set_down("shut down".to_string());
                        return;
                    }
                    tracing::warn!(server = %name, %reason, "mcp server connection lost; reconnecting");
                    self.set_down(reason);
                }
                Err(error) => {
                    tracing::warn!(server = %name, %error, retry_in_ms = backoff.as_millis() as u64, "mcp server unreachable");
                    self.set_down(error);
                    if let Some(done) = first_attempt.take() {
                        let _ = done.send(());
                    }
                }
            }
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = shutdown.cancelled() => return,
            }
            backoff = (backoff * 2).min(self.timing.reconnect_max);
        }
    }

    fn set_up(
        &self,
        peer: Peer<RoleClient>,
        tools: Vec<ListedTool>,
        dropped: Vec<DroppedTool>,
        info: Option<String>,
    ) -> CancellationToken {
        let broken = CancellationToken::new();
        {
            let mut state = self.write();
            state.generation += 1;
            state.broken = broken.clone();
            state.status = ServerStatus::Up;
            state.server_info = info;
            state.listed_names = Arc::new(names_of(&tools));
            state.tools = Arc::new(tools);
            state.dropped = Arc::new(dropped);
            state.peer = Some(peer);
        }
        (self.on_change)();
        broken
    }

    fn set_tools(&self, tools: Vec<ListedTool>, dropped: Vec<DroppedTool>) {
        {
            let mut state = self.write();
            state.listed_names = Arc::new(names_of(&tools));
            state.tools = Arc::new(tools);
            state.dropped = Arc::new(dropped);
        }
        (self.on_change)();
    }

    fn set_down(&self, error: String) {
        {
            let mut state = self.write();
            state.status = ServerStatus::Down { error };
            state.peer = None;
            state.tools = Arc::new(Vec::new());
        }
        (self.on_change)();
    }

    /// Watches a live connection until it must be replaced; returns why.
    async fn watch(
        &self,
        running: Running,
        peer: Peer<RoleClient>,
        broken: &CancellationToken,
        shutdown: &CancellationToken,
    ) -> String {
        let mut stop = Some(running.cancellation_token());
        let waiting = running.waiting();
        tokio::pin!(waiting);
        let ping_every = self.timing.ping_interval.unwrap_or(Duration::from_secs(3600));
        let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + ping_every, ping_every);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let reason = loop {
            tokio::select! {
                quit = &mut waiting => return format!("the connection closed ({quit:?})"),
                () = self.list_changed.notified() => match self.list(&peer).await {
                    Ok((tools, dropped)) => {
                        tracing::info!(server = %self.config.name, tools = tools.len(), "mcp tool list changed");
                        self.set_tools(tools, dropped);
                    }
                    Err(error) => break format!("re-listing tools failed: {error}"),
                },
                () = broken.cancelled() => break "a call found the connection broken".to_string(),
                _ = ping.tick(), if self.timing.ping_interval.is_some() => {
                    let ping = peer.send_request(ClientRequest::PingRequest(Default::default()));
                    match tokio::time::timeout(self.timing.connect_timeout, ping).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(error)) => break format!("ping failed: {error}"),
                        Err(_) => break "ping timed out".to_string(),
                    }
                }
                () = shutdown.cancelled() => break "shutting down".to_string(),
            }
        };
        if let Some(stop) = stop.take() {
            stop.cancel();
        }
        // Closing a child process waits for it to exit (and kills it if it won't); bound the wait anyway.
        let _ = tokio::time::timeout(Duration::from_secs(10), waiting).await;
        reason
    }

    /// Connects, handshakes and lists tools, each step within the connect timeout. Failures are one plain
    /// sentence naming the endpoint (see [`failure`]).
    async fn connect_once(&self) -> Result<(Running, Vec<ListedTool>, Vec<DroppedTool>, Option<String>), String> {
        let handler = BridgeClient { server: self.config.name.clone(), list_changed: Arc::clone(&self.list_changed) };
        let endpoint = failure::endpoint(&self.config.transport);
        let handshake = async {
            match &self.config.transport {
                McpTransportConfig::Stdio { command, args, env, inherit_env, cwd } => {
                    let transport = self.spawn_child(command, args, env, inherit_env, cwd.as_deref())?;
                    handler.serve(transport).await.map_err(|e| failure::initialize(&e, &endpoint))
                }
                McpTransportConfig::Http { url, bearer_token_env, headers_env } => {
                    let transport = self.http_transport(url, bearer_token_env.as_deref(), headers_env)?;
                    handler.serve(transport).await.map_err(|e| failure::initialize(&e, &endpoint))
                }
            }
        };
        let running = tokio::time::timeout(self.timing.connect_timeout, handshake)
            .await
            .map_err(|_| failure::no_answer("initialize", self.timing.connect_timeout, &endpoint))??;
        let server_info = running
            .peer()
            .peer_info()
            .and_then(|info| info.server_info.as_ref().map(|i| format!("{} {}", i.name, i.version).trim().to_string()));
        let (tools, dropped) = self.list(running.peer()).await?;
        Ok((running, tools, dropped, server_info))
    }

    fn spawn_child(
        &self,
        command: &str,
        args: &[String],
        env: &std::collections::BTreeMap<String, String>,
        inherit_env: &[String],
        cwd: Option<&str>,
    ) -> Result<TokioChildProcess, String> {
        let mut cmd = tokio::process::Command::new(command);
        cmd.args(args).env_clear().kill_on_drop(true);
        for var in STDIO_BASE_ENV.iter().copied().chain(inherit_env.iter().map(String::as_str)) {
            if let Some(value) = std::env::var_os(var) {
                cmd.env(var, value);
            }
        }
        cmd.envs(env);
        if let Some(dir) = cwd {
            cmd.current_dir(dir);
        }
        let (transport, stderr) = TokioChildProcess::builder(cmd)
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("could not start {command}: {e}"))?;
        if let Some(stderr) = stderr {
            let server = self.config.name.clone();
            tokio::spawn(async move {
                let mut lines = tokio::io::BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    tracing::debug!(target: "parley::mcp::server_stderr", server = %server, "{line}");
                }
            });
        }
        Ok(transport)
    }

    fn http_transport(
        &self,
        url: &str,
        bearer_token_env: Option<&str>,
        headers_env: &std::collections::BTreeMap<String, String>,
    ) -> Result<StreamableHttpClientTransport<TracingHttpClient>, String> {
        let token = match bearer_token_env {
            Some(var) => Some(std::env::var(var).map_err(|_| format!("bearer_token_env {var} is not set"))?),
            None => None,
        };
        let mut headers = HashMap::new();
        for (header, var) in headers_env {
            let value = std::env::var(var).map_err(|_| format!("headers_env {var} (for {header}) is not set"))?;
            let name = reqwest013::header::HeaderName::from_bytes(header.as_bytes())
                .map_err(|_| format!("{header:?} is not a valid HTTP header name"))?;
            let mut value = reqwest013::header::HeaderValue::from_str(&value)
                .map_err(|_| format!("the value of {var} is not a valid HTTP header value"))?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        let mut config = StreamableHttpClientTransportConfig::with_uri(url.to_string()).custom_headers(headers);
        if let Some(token) = token {
            config = config.auth_header(token);
        }
        let client = TracingHttpClient::new(self.timing.connect_timeout).map_err(|e| e.to_string())?;
        Ok(StreamableHttpClientTransport::with_client(client, config))
    }

    /// Lists every tool (following pagination), applies allow/deny, and prepares schemas; tools whose schema can't
    /// be made acceptable are returned separately and logged.
    async fn list(&self, peer: &Peer<RoleClient>) -> Result<(Vec<ListedTool>, Vec<DroppedTool>), String> {
        let endpoint = || failure::endpoint(&self.config.transport);
        let listed = tokio::time::timeout(self.timing.connect_timeout, peer.list_all_tools())
            .await
            .map_err(|_| failure::no_answer("tools/list", self.timing.connect_timeout, &endpoint()))?
            .map_err(|e| format!("tools/list failed at {}: {}", endpoint(), failure::service(&e)))?;
        let mut tools = Vec::new();
        let mut dropped = Vec::new();
        for tool in listed {
            if !self.config.allows(&tool.name) {
                continue;
            }
            match schema::prepare(&tool.input_schema) {
                Ok(prepared) => tools.push(ListedTool { tool, schema: Arc::new(prepared) }),
                Err(error) => {
                    tracing::warn!(server = %self.config.name, tool = %tool.name, %error, "mcp tool dropped: its schema is not usable");
                    dropped.push(DroppedTool { mcp_name: tool.name.to_string(), reason: error.to_string() });
                }
            }
        }
        Ok((tools, dropped))
    }

    /// Runs one `tools/call`. Never fails: problems become error outcomes for the LLM.
    pub async fn call(
        &self,
        tool: &str,
        arguments: JsonObject,
        meta: RequestMetaObject,
        timeout: Duration,
        cancel: CancellationToken,
        max_chars: usize,
    ) -> ToolOutcome {
        let (peer, generation) = {
            let state = self.read();
            (state.peer.clone(), state.generation)
        };
        let Some(peer) = peer else {
            return ToolOutcome::error(format!(
                "{tool} could not run: the {} backend is not reachable right now.",
                self.config.name
            ));
        };
        let params = CallToolRequestParams::new(tool.to_string()).with_arguments(arguments);
        let request = ClientRequest::CallToolRequest(CallToolRequest::new(params));
        let options = PeerRequestOptions::no_options().with_meta(meta);
        let handle = tokio::select! {
            handle = peer.send_request_with_option(request, options) => handle,
            () = cancel.cancelled() => return ToolOutcome::error(format!("{tool} was cancelled before it started.")),
        };
        let handle = match handle {
            Ok(handle) => handle,
            Err(error) => {
                self.connection_failed(generation);
                return ToolOutcome::error(format!("{tool} could not be sent to the backend: {error}"));
            }
        };
        // Until the answer arrives, leaving this function (cancel, timeout, or the caller dropping the future)
        // tells the server to stop.
        let mut in_flight = InFlight { peer: peer.clone(), id: Some(handle.id.clone()), reason: DROPPED };
        let response = handle.await_response();
        tokio::pin!(response);
        let outcome = tokio::select! {
            biased;
            () = cancel.cancelled() => {
                in_flight.reason = "cancelled by the caller (barge-in or hang-up)";
                return ToolOutcome::error(format!("{tool} was cancelled before it finished."));
            }
            () = tokio::time::sleep(timeout) => {
                in_flight.reason = "timed out";
                return ToolOutcome::error(format!(
                    "{tool} timed out after {} ms: the backend did not answer in time.",
                    timeout.as_millis()
                ));
            }
            outcome = &mut response => outcome,
        };
        in_flight.id = None;
        match outcome {
            Ok(ServerResult::CallToolResult(result)) => result::to_outcome(&result, max_chars),
            Ok(ServerResult::InputRequiredResult(_)) => {
                ToolOutcome::error(format!("{tool} asked for interactive input, which Parley cannot provide."))
            }
            Ok(ServerResult::CreateTaskResult(_)) => {
                ToolOutcome::error(format!("{tool} started a background task, which Parley does not support."))
            }
            Ok(_) => ToolOutcome::error(format!("{tool} returned something that is not a tool result.")),
            // A JSON-RPC error: the server is alive and answered, so the connection stays.
            Err(ServiceError::McpError(error)) => {
                ToolOutcome::error(result::cap(&format!("{tool} failed: {}", error.message), max_chars))
            }
            Err(error @ (ServiceError::TransportClosed | ServiceError::TransportSend(_))) => {
                self.connection_failed(generation);
                ToolOutcome::error(format!("{tool} failed: the connection to the backend was lost ({error})."))
            }
            Err(error) => ToolOutcome::error(format!("{tool} failed: {error}")),
        }
    }

    /// After a call failed: a broken connection is marked down at once (its tools disappear before the next turn)
    /// and handed to the supervisor to replace.
    fn connection_failed(&self, generation: u64) {
        {
            let mut state = self.write();
            if state.generation != generation || state.peer.is_none() {
                return;
            }
            state.status = ServerStatus::Down { error: "the connection failed during a call".to_string() };
            state.peer = None;
            state.tools = Arc::new(Vec::new());
            state.broken.cancel();
        }
        (self.on_change)();
    }
}

const DROPPED: &str = "abandoned by Parley";

fn names_of(tools: &[ListedTool]) -> Vec<String> {
    tools.iter().map(|t| t.tool.name.to_string()).collect()
}

/// A `tools/call` awaiting its answer. Dropping it while `id` is set sends `notifications/cancelled` (without making
/// anyone wait), so the server stops working on a call nobody will read.
struct InFlight {
    peer: Peer<RoleClient>,
    id: Option<RequestId>,
    reason: &'static str,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let Some(id) = self.id.take() else { return };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let peer = self.peer.clone();
        let notification = ClientNotification::CancelledNotification(CancelledNotification::new(
            CancelledNotificationParam::new(Some(id), Some(self.reason.to_string())),
        ));
        runtime.spawn(async move {
            match tokio::time::timeout(Duration::from_secs(5), peer.send_notification(notification)).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::debug!(%error, "could not send notifications/cancelled"),
                Err(_) => tracing::debug!("sending notifications/cancelled timed out"),
            }
        });
    }
}

/// Parley's side of the MCP session: identifies itself and reacts to the server's notifications.
#[derive(Clone)]
pub(crate) struct BridgeClient {
    server: String,
    list_changed: Arc<Notify>,
}

impl ClientHandler for BridgeClient {
    fn get_info(&self) -> ClientConfig {
        ClientConfig::new(ClientCapabilities::default(), Implementation::new("parley", env!("CARGO_PKG_VERSION")))
    }

    async fn on_tool_list_changed(&self, _context: NotificationContext<RoleClient>) {
        tracing::debug!(server = %self.server, "mcp server announced a tool list change");
        self.list_changed.notify_one();
    }
}
