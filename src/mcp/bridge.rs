//! [`McpBridge`]: every configured MCP server's tools as one tool set for the engine.

use std::collections::HashMap;
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use rmcp::model::RequestMetaObject;
use serde_json::Value;
use tokio::sync::{oneshot, watch};
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::llm::{ToolCall, ToolSpec};
use crate::mcp::config::McpConfig;
use crate::mcp::names;
use crate::mcp::report::{McpReport, ServerReport, ServerStatus, ToolReport};
use crate::mcp::schema::{self, PreparedSchema};
use crate::mcp::server::{ServerConnection, Timing};
use crate::mcp::McpError;
use crate::tool_executor::{ToolCallContext, ToolExecutor, ToolOutcome};

/// `_meta` keys Parley puts on every `tools/call`, so the backend can tie an action to the phone call.
pub const META_CALL_SID: &str = "parley/callSid";
/// Only with `mcp.send_caller_number = true` (and `twilio.redact_numbers` off).
pub const META_CALLER_NUMBER: &str = "parley/callerNumber";
pub const META_TURN_INDEX: &str = "parley/turnIndex";

/// One tool as offered to the LLM.
struct Entry {
    name: String,
    server: usize,
    mcp_name: String,
    description: String,
    schema: Arc<PreparedSchema>,
    destructive: bool,
    timeout: Duration,
}

/// The tools currently offered, rebuilt whenever a server connects, drops, or changes its list.
#[derive(Default)]
struct Catalog {
    entries: Vec<Entry>,
    by_name: HashMap<String, usize>,
}

impl Catalog {
    fn get(&self, name: &str) -> Option<&Entry> {
        self.by_name.get(name).and_then(|i| self.entries.get(*i))
    }
}

struct Shared {
    config: McpConfig,
    servers: Vec<Arc<ServerConnection>>,
    catalog: RwLock<Arc<Catalog>>,
    changes: watch::Sender<u64>,
    shutdown: CancellationToken,
    tasks: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// Stops the supervisors (and so the child processes) when the last handle to the bridge is dropped.
    _stop_on_drop: DropGuard,
}

/// The MCP tool bridge. Cheap to clone; all clones share the connections. Dropping the last clone stops the
/// background reconnect tasks and the stdio servers.
#[derive(Clone)]
pub struct McpBridge {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for McpBridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("McpBridge").field("servers", &self.shared.config.servers.len()).finish_non_exhaustive()
    }
}

impl McpBridge {
    /// Validates the configuration, starts one connection per server, and waits until each has made its first
    /// connection attempt (bounded by `connect_timeout_ms`), so tools of reachable servers are there from the first
    /// call. Servers that are down don't fail this: they are reported and retried in the background.
    pub async fn connect(config: McpConfig) -> Result<McpBridge, McpError> {
        config.validate()?;
        let timing = Timing::from_config(&config);
        let shutdown = CancellationToken::new();
        let (changes, _) = watch::channel(0u64);
        let shared = Arc::new_cyclic(|weak: &Weak<Shared>| {
            let servers = config
                .servers
                .iter()
                .map(|server| {
                    let weak = weak.clone();
                    let on_change: Arc<dyn Fn() + Send + Sync> = Arc::new(move || {
                        if let Some(shared) = weak.upgrade() {
                            shared.rebuild();
                        }
                    });
                    Arc::new(ServerConnection::new(server.clone(), timing, on_change))
                })
                .collect();
            Shared {
                config: config.clone(),
                servers,
                catalog: RwLock::new(Arc::new(Catalog::default())),
                changes,
                shutdown: shutdown.clone(),
                tasks: std::sync::Mutex::new(Vec::new()),
                _stop_on_drop: shutdown.clone().drop_guard(),
            }
        });
        let mut first_attempts = Vec::new();
        let mut tasks = Vec::new();
        for server in &shared.servers {
            let (done, first_attempt) = oneshot::channel();
            tasks.push(tokio::spawn(Arc::clone(server).run(shutdown.child_token(), done)));
            first_attempts.push(first_attempt);
        }
        if let Ok(mut held) = shared.tasks.lock() {
            held.extend(tasks);
        }
        for first_attempt in first_attempts {
            // An error only means the supervisor ended early (shutdown); nothing to wait for then.
            let _ = first_attempt.await;
        }
        let bridge = McpBridge { shared };
        let report = bridge.report();
        tracing::info!(tools = bridge.tool_count(), servers = report.servers.len(), "mcp bridge ready");
        Ok(bridge)
    }

    /// Which servers are reachable and which tools each one contributes, for `parley check` and logs.
    pub fn report(&self) -> McpReport {
        let catalog = self.shared.catalog();
        let servers = self
            .shared
            .servers
            .iter()
            .enumerate()
            .map(|(index, server)| {
                let snapshot = server.snapshot();
                let tools = catalog
                    .entries
                    .iter()
                    .filter(|e| e.server == index)
                    .map(|e| ToolReport {
                        name: e.name.clone(),
                        mcp_name: e.mcp_name.clone(),
                        destructive: e.destructive,
                        timeout_ms: u64::try_from(e.timeout.as_millis()).unwrap_or(u64::MAX),
                    })
                    .collect();
                ServerReport {
                    name: server.config.name.clone(),
                    target: server.target(),
                    status: snapshot.status,
                    server_info: snapshot.server_info,
                    tools,
                    dropped: snapshot.dropped.as_ref().clone(),
                }
            })
            .collect();
        McpReport { servers }
    }

    /// Whether the tool the LLM knows as `name` needs the caller's spoken confirmation before it runs: the server
    /// marked it `destructiveHint: true` (and the server's config asks to honour that), or the config lists it in
    /// `confirm`. Unknown names are not destructive (the call will fail anyway).
    pub fn is_destructive(&self, name: &str) -> bool {
        self.shared.catalog().get(name).is_some_and(|e| e.destructive)
    }

    /// How many tools are offered right now.
    pub fn tool_count(&self) -> usize {
        self.shared.catalog().entries.len()
    }

    /// The (server name, real MCP tool name) behind a name the LLM uses.
    pub fn resolve(&self, name: &str) -> Option<(String, String)> {
        let catalog = self.shared.catalog();
        let entry = catalog.get(name)?;
        let server = self.shared.servers.get(entry.server)?;
        Some((server.config.name.clone(), entry.mcp_name.clone()))
    }

    /// A counter that changes whenever the tool set changes (a server connected, dropped, or re-listed), so the
    /// engine can refresh the tools it offers between turns.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.shared.changes.subscribe()
    }

    /// Stops reconnecting, closes every connection (stdio servers are asked to exit, then killed), and waits.
    pub async fn shutdown(&self) {
        self.shared.shutdown.cancel();
        let tasks: Vec<_> = match self.shared.tasks.lock() {
            Ok(mut tasks) => tasks.drain(..).collect(),
            Err(_) => Vec::new(),
        };
        for task in tasks {
            let _ = task.await;
        }
    }
}

impl Shared {
    fn catalog(&self) -> Arc<Catalog> {
        Arc::clone(&self.catalog.read().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// Rebuilds the catalog from every connected server's tools: safe unique names, in configured server order,
    /// prefixed only as [`names`] describes.
    fn rebuild(&self) {
        let snapshots: Vec<_> = self.servers.iter().map(|s| s.snapshot()).collect();
        let configured: Vec<names::ConfiguredServer> = self
            .servers
            .iter()
            .zip(&snapshots)
            .map(|(server, snapshot)| names::ConfiguredServer {
                name: &server.config.name,
                prefix: server.config.prefix.as_deref(),
                listed: &snapshot.listed_names,
            })
            .collect();
        let mut offered = Vec::new();
        let mut picked = Vec::new();
        for (index, snapshot) in snapshots.iter().enumerate() {
            if snapshot.status != ServerStatus::Up {
                continue;
            }
            for listed in snapshot.tools.iter() {
                let tool: &str = listed.tool.name.as_ref();
                let server = self.servers[index].config.name.as_str();
                offered.push(names::Offered { server, prefix: names::prefix_for(&configured, index, tool), tool });
                picked.push((index, listed));
            }
        }
        let names = names::assign(&offered);
        let mut catalog = Catalog::default();
        for (name, (index, listed)) in names.into_iter().zip(picked) {
            let server = &self.servers[index].config;
            let tool = &listed.tool;
            let hinted = tool.annotations.as_ref().and_then(|a| a.destructive_hint) == Some(true);
            let description =
                tool.description.as_deref().map(str::to_string).or_else(|| tool.title.clone()).unwrap_or_default();
            catalog.by_name.insert(name.clone(), catalog.entries.len());
            catalog.entries.push(Entry {
                name,
                server: index,
                mcp_name: tool.name.to_string(),
                description,
                schema: Arc::clone(&listed.schema),
                destructive: server.forces_confirmation(&tool.name)
                    || (server.require_confirmation_for_destructive && hinted),
                timeout: server.timeout_for(&tool.name),
            });
        }
        *self.catalog.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(catalog);
        self.changes.send_modify(|generation| *generation += 1);
    }
}

/// The `_meta` of a `tools/call` for this context: call SID, turn index, the W3C `traceparent` (when tracing is
/// on), and the caller's number only when `send_caller_number` (the `mcp.send_caller_number` setting) allows it and
/// the number is known.
pub fn call_meta(context: &ToolCallContext, send_caller_number: bool) -> RequestMetaObject {
    let mut meta = RequestMetaObject::new();
    meta.insert(META_CALL_SID.to_string(), Value::String(context.call_sid.clone()));
    if let Some(number) = context.caller_number.as_ref().filter(|_| send_caller_number) {
        meta.insert(META_CALLER_NUMBER.to_string(), Value::String(number.clone()));
    }
    meta.insert(META_TURN_INDEX.to_string(), Value::from(context.turn_index));
    if let Some(traceparent) = &context.traceparent {
        meta.set_traceparent(traceparent.clone());
    }
    meta
}

#[async_trait]
impl ToolExecutor for McpBridge {
    fn needs_confirmation(&self, name: &str) -> bool {
        self.is_destructive(name)
    }

    fn server_of(&self, name: &str) -> Option<String> {
        self.resolve(name).map(|(server, _)| server)
    }

    fn specs(&self) -> Vec<ToolSpec> {
        self.shared
            .catalog()
            .entries
            .iter()
            .map(|e| ToolSpec {
                name: e.name.clone(),
                description: e.description.clone(),
                parameters: e.schema.parameters.clone(),
            })
            .collect()
    }

    async fn call(&self, call: &ToolCall, context: &ToolCallContext, cancel: CancellationToken) -> ToolOutcome {
        let catalog = self.shared.catalog();
        let Some(entry) = catalog.get(&call.name) else {
            let known: Vec<&str> = catalog.entries.iter().map(|e| e.name.as_str()).collect();
            let known = if known.is_empty() { "none".to_string() } else { known.join(", ") };
            return ToolOutcome::error(format!("There is no tool named {}. Available tools: {known}.", call.name));
        };
        let arguments = match schema::parse_arguments(&call.arguments) {
            Ok(arguments) => arguments,
            Err(problem) => {
                return ToolOutcome::error(format!(
                    "{} was not called: {problem}. Call it again with a JSON object matching its parameters.",
                    entry.name
                ))
            }
        };
        if let Err(problems) = entry.schema.check(&Value::Object(arguments.clone())) {
            return ToolOutcome::error(format!(
                "{} was not called because its arguments are invalid: {problems}. Fix the arguments and call it again.",
                entry.name
            ));
        }
        let Some(server) = self.shared.servers.get(entry.server) else {
            return ToolOutcome::error(format!("{} is not available.", entry.name));
        };
        tracing::debug!(tool = %entry.name, server = %server.config.name, mcp_name = %entry.mcp_name, "mcp tool call");
        server
            .call(
                &entry.mcp_name,
                arguments,
                call_meta(context, self.shared.config.send_caller_number),
                entry.timeout,
                cancel,
                self.shared.config.result_max_chars,
            )
            .await
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn full_context() -> ToolCallContext {
        ToolCallContext {
            call_sid: "CA123".into(),
            caller_number: Some("+15550100".into()),
            turn_index: 3,
            traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01".into()),
        }
    }

    #[test]
    fn meta_carries_no_caller_number_by_default() {
        assert!(!McpConfig::default().send_caller_number);
        let meta = serde_json::to_value(call_meta(&full_context(), McpConfig::default().send_caller_number)).unwrap();
        assert_eq!(
            meta,
            json!({
                "parley/callSid": "CA123",
                "parley/turnIndex": 3,
                "traceparent": "00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01"
            })
        );
    }

    #[test]
    fn meta_carries_the_call_context() {
        let meta = serde_json::to_value(call_meta(&full_context(), true)).unwrap();
        assert_eq!(
            meta,
            json!({
                "parley/callSid": "CA123",
                "parley/callerNumber": "+15550100",
                "parley/turnIndex": 3,
                "traceparent": "00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01"
            })
        );
    }

    #[test]
    fn meta_omits_what_is_unknown() {
        let context = ToolCallContext { call_sid: "CA1".into(), ..Default::default() };
        let meta = serde_json::to_value(call_meta(&context, true)).unwrap();
        assert_eq!(meta, json!({"parley/callSid": "CA1", "parley/turnIndex": 0}));
    }

    #[tokio::test]
    async fn no_servers_means_no_tools() {
        let bridge = McpBridge::connect(McpConfig::default()).await.unwrap();
        assert!(bridge.specs().is_empty());
        assert_eq!(bridge.tool_count(), 0);
        let outcome = bridge
            .call(
                &ToolCall { id: "1".into(), name: "x".into(), arguments: "{}".into() },
                &ToolCallContext::default(),
                CancellationToken::new(),
            )
            .await;
        assert!(outcome.is_error);
        assert!(outcome.content.contains("no tool named x"), "{}", outcome.content);
    }
}
