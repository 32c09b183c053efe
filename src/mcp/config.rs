//! Configuration of the MCP tool bridge: which MCP servers to connect to and how to treat their tools.
//!
//! In `parley.toml` this is the `[mcp]` section:
//!
//! ```toml
//! [mcp]
//! result_max_chars = 4000
//!
//! [[mcp.servers]]
//! name = "shop"
//! transport = { type = "http", url = "https://backend.example/mcp", bearer_token_env = "SHOP_MCP_TOKEN" }
//! deny = ["delete_*"]
//! timeout_ms = 8000
//! tool_timeouts_ms = { lookup_order = 3000 }
//!
//! [[mcp.servers]]
//! name = "clinic"
//! transport = { type = "stdio", command = "demo-backend", args = ["--stdio", "--db", "demo.db"] }
//! prefix = "clinic"
//! ```
//!
//! `parley.example.toml` documents every field.
//!
//! Secrets never appear in the file: HTTP tokens and header values are read from the environment variables the
//! config names, at connect time.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

/// The whole `[mcp]` section. The default has no servers, i.e. no tools.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpConfig {
    /// The MCP servers whose tools the LLM may call.
    #[serde(default)]
    pub servers: Vec<McpServerConfig>,
    /// Longest tool result (in characters) handed to the LLM; longer results are cut with a visible marker, because
    /// every character costs prompt tokens and latency on a live call.
    #[serde(default = "default_result_max_chars")]
    pub result_max_chars: usize,
    /// How long connecting to one server (spawn or HTTP, plus the MCP handshake and tool listing) may take.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// First wait before reconnecting to a server that is down; doubles on each failure.
    #[serde(default = "default_reconnect_initial_ms")]
    pub reconnect_initial_ms: u64,
    /// Longest wait between reconnect attempts.
    #[serde(default = "default_reconnect_max_ms")]
    pub reconnect_max_ms: u64,
    /// How often a connected server is pinged, so a dead one is noticed (and reconnected) before a caller needs it.
    /// 0 disables pings.
    #[serde(default = "default_ping_interval_ms")]
    pub ping_interval_ms: u64,
    /// Send the caller's phone number to every MCP server in `_meta` (`parley/callerNumber`). Off by default: the
    /// number is personal data and leaves Parley only when the configuration says so (and never while
    /// `twilio.redact_numbers` is on).
    #[serde(default)]
    pub send_caller_number: bool,
}

impl Default for McpConfig {
    fn default() -> Self {
        McpConfig {
            servers: Vec::new(),
            result_max_chars: default_result_max_chars(),
            connect_timeout_ms: default_connect_timeout_ms(),
            reconnect_initial_ms: default_reconnect_initial_ms(),
            reconnect_max_ms: default_reconnect_max_ms(),
            ping_interval_ms: default_ping_interval_ms(),
            send_caller_number: false,
        }
    }
}

/// One MCP server.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpServerConfig {
    /// Short unique name (`[A-Za-z0-9_-]`, at most 32 characters). Used in logs, in `parley check`, and as the tool-name
    /// prefix of a tool whose name an earlier configured server already uses (see [`crate::mcp::names`]).
    pub name: String,
    /// Prefix every tool of this server as `<prefix>__<tool>` (same characters as `name`). Unset: tools keep their
    /// own names unless an earlier configured server has a tool of the same name.
    #[serde(default)]
    pub prefix: Option<String>,
    /// How to reach the server.
    pub transport: McpTransportConfig,
    /// Only these tools (real MCP names; `*` matches any run of characters). Empty means every tool.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Never these tools (same patterns); wins over `allow`.
    #[serde(default)]
    pub deny: Vec<String>,
    /// Per-call timeout for this server's tools, in milliseconds. A phone caller is waiting, so keep it short.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Per-tool timeout overrides, by real MCP tool name.
    #[serde(default)]
    pub tool_timeouts_ms: BTreeMap<String, u64>,
    /// Report tools the server marks `destructiveHint: true` as needing the caller's spoken confirmation.
    #[serde(default = "default_true")]
    pub require_confirmation_for_destructive: bool,
    /// Tools (same patterns as `allow`) that always need spoken confirmation, whatever their annotations say:
    /// annotations come from the server and are only hints.
    #[serde(default)]
    pub confirm: Vec<String>,
}

impl McpServerConfig {
    /// A server with every optional setting at its default.
    pub fn new(name: impl Into<String>, transport: McpTransportConfig) -> McpServerConfig {
        McpServerConfig {
            name: name.into(),
            prefix: None,
            transport,
            allow: Vec::new(),
            deny: Vec::new(),
            timeout_ms: default_timeout_ms(),
            tool_timeouts_ms: BTreeMap::new(),
            require_confirmation_for_destructive: true,
            confirm: Vec::new(),
        }
    }

    /// The timeout for one call of `tool` (its real MCP name).
    pub fn timeout_for(&self, tool: &str) -> Duration {
        Duration::from_millis(self.tool_timeouts_ms.get(tool).copied().unwrap_or(self.timeout_ms))
    }

    /// Whether `tool` (real MCP name) passes the allow and deny lists.
    pub fn allows(&self, tool: &str) -> bool {
        let allowed = self.allow.is_empty() || self.allow.iter().any(|p| pattern_matches(p, tool));
        allowed && !self.deny.iter().any(|p| pattern_matches(p, tool))
    }

    /// Whether `tool` is forced to need confirmation by the `confirm` list.
    pub fn forces_confirmation(&self, tool: &str) -> bool {
        self.confirm.iter().any(|p| pattern_matches(p, tool))
    }
}

/// How to reach an MCP server.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum McpTransportConfig {
    /// Streamable HTTP.
    Http {
        /// The MCP endpoint, e.g. `https://backend.example/mcp`.
        url: String,
        /// Environment variable holding a bearer token, sent as `Authorization: Bearer …` on every request.
        #[serde(default)]
        bearer_token_env: Option<String>,
        /// Extra HTTP headers: header name -> environment variable holding its value.
        #[serde(default)]
        headers_env: BTreeMap<String, String>,
    },
    /// A child process speaking MCP on stdin/stdout.
    Stdio {
        /// Program to run (looked up in `PATH`).
        command: String,
        #[serde(default)]
        args: Vec<String>,
        /// Environment variables set for the child, literally. The child does not inherit Parley's environment
        /// (which holds provider API keys), only `PATH`, `HOME`, `LANG`, `LC_ALL`, `TMPDIR`, `USER`, plus the
        /// variables named in `inherit_env`.
        #[serde(default)]
        env: BTreeMap<String, String>,
        /// Names of Parley's environment variables passed through to the child (e.g. a backend token).
        #[serde(default)]
        inherit_env: Vec<String>,
        /// Working directory of the child; Parley's own when absent.
        #[serde(default)]
        cwd: Option<String>,
    },
}

/// A configuration Parley refuses to start with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum McpConfigError {
    #[error("mcp server name {0:?} must be 1-32 characters of A-Z, a-z, 0-9, _ or -")]
    BadName(String),
    #[error("mcp server {server}: prefix {prefix:?} must be 1-32 characters of A-Z, a-z, 0-9, _ or -")]
    BadPrefix { server: String, prefix: String },
    #[error("mcp server name {0:?} is used twice")]
    DuplicateName(String),
    #[error("mcp server {server}: {detail}")]
    Invalid { server: String, detail: String },
}

impl McpConfig {
    /// Checks what serde cannot: unique safe names, usable URLs and commands, non-zero timeouts.
    pub fn validate(&self) -> Result<(), McpConfigError> {
        let mut seen = std::collections::BTreeSet::new();
        for server in &self.servers {
            let name = &server.name;
            if !is_safe_label(name) {
                return Err(McpConfigError::BadName(name.clone()));
            }
            if let Some(prefix) = server.prefix.as_ref().filter(|p| !is_safe_label(p)) {
                return Err(McpConfigError::BadPrefix { server: name.clone(), prefix: prefix.clone() });
            }
            if !seen.insert(name.as_str()) {
                return Err(McpConfigError::DuplicateName(name.clone()));
            }
            let invalid = |detail: &str| McpConfigError::Invalid { server: name.clone(), detail: detail.to_string() };
            if server.timeout_ms == 0 || server.tool_timeouts_ms.values().any(|t| *t == 0) {
                return Err(invalid("timeouts must be greater than 0 ms"));
            }
            match &server.transport {
                McpTransportConfig::Http { url, .. } => match url::Url::parse(url) {
                    Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => {}
                    _ => return Err(invalid("transport.url must be an http:// or https:// URL")),
                },
                McpTransportConfig::Stdio { command, .. } => {
                    if command.trim().is_empty() {
                        return Err(invalid("transport.command must not be empty"));
                    }
                }
            }
        }
        Ok(())
    }

    pub(crate) fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms.max(1))
    }
}

/// A server name or prefix: 1-32 characters of `[A-Za-z0-9_-]`, safe in tool names and logs.
fn is_safe_label(label: &str) -> bool {
    !label.is_empty() && label.len() <= 32 && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Matches `name` against a pattern where `*` stands for any run of characters (including none).
pub fn pattern_matches(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first) || name.len() < first.len() + last.len() || !name.ends_with(last) {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(at) => rest = &rest[at + middle.len()..],
            None => return false,
        }
    }
    true
}

fn default_result_max_chars() -> usize {
    4000
}
fn default_connect_timeout_ms() -> u64 {
    10_000
}
fn default_reconnect_initial_ms() -> u64 {
    500
}
fn default_reconnect_max_ms() -> u64 {
    30_000
}
fn default_ping_interval_ms() -> u64 {
    15_000
}
fn default_timeout_ms() -> u64 {
    10_000
}
fn default_true() -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Root {
        mcp: McpConfig,
    }

    fn parse(text: &str) -> Result<McpConfig, toml::de::Error> {
        toml::from_str::<Root>(text).map(|r| r.mcp)
    }

    #[test]
    fn parses_both_transports_with_defaults() {
        let config = parse(
            r#"
            [mcp]
            result_max_chars = 100
            [[mcp.servers]]
            name = "shop"
            transport = { type = "http", url = "http://127.0.0.1:9/mcp", bearer_token_env = "TOKEN", headers_env = { "X-Tenant" = "TENANT" } }
            deny = ["cancel_*"]
            tool_timeouts_ms = { lookup_order = 500 }
            [[mcp.servers]]
            name = "clinic"
            [mcp.servers.transport]
            type = "stdio"
            command = "demo-backend"
            args = ["--stdio"]
            env = { RUST_LOG = "info" }
            "#,
        )
        .unwrap();
        assert_eq!(config.result_max_chars, 100);
        assert_eq!(config.servers.len(), 2);
        let shop = &config.servers[0];
        assert_eq!(shop.timeout_ms, 10_000);
        assert_eq!(shop.timeout_for("lookup_order"), Duration::from_millis(500));
        assert_eq!(shop.timeout_for("other"), Duration::from_millis(10_000));
        assert!(shop.require_confirmation_for_destructive);
        assert!(!shop.allows("cancel_order"));
        assert!(shop.allows("lookup_order"));
        assert!(
            matches!(&config.servers[1].transport, McpTransportConfig::Stdio { command, .. } if command == "demo-backend")
        );
        config.validate().unwrap();
    }

    #[test]
    fn rejects_unknown_fields_and_bad_values() {
        assert!(parse("[mcp]\nbogus = 1").is_err());
        assert!(parse("[[mcp.servers]]\nname = \"a\"\ntransport = { type = \"http\", url = \"http://x\", nope = 1 }")
            .is_err());
        assert!(parse("[[mcp.servers]]\nname = \"a\"\ntransport = { type = \"ftp\", url = \"x\" }").is_err());
        let bad_name =
            parse("[[mcp.servers]]\nname = \"a.b\"\ntransport = { type = \"stdio\", command = \"x\" }").unwrap();
        assert_eq!(bad_name.validate(), Err(McpConfigError::BadName("a.b".into())));
        let dup = parse(
            "[[mcp.servers]]\nname = \"a\"\ntransport = { type = \"stdio\", command = \"x\" }\n\
             [[mcp.servers]]\nname = \"a\"\ntransport = { type = \"stdio\", command = \"y\" }",
        )
        .unwrap();
        assert_eq!(dup.validate(), Err(McpConfigError::DuplicateName("a".into())));
        let bad_prefix =
            parse("[[mcp.servers]]\nname = \"a\"\nprefix = \"a.b\"\ntransport = { type = \"stdio\", command = \"x\" }")
                .unwrap();
        assert!(matches!(bad_prefix.validate(), Err(McpConfigError::BadPrefix { .. })));
        let bad_url =
            parse("[[mcp.servers]]\nname = \"a\"\ntransport = { type = \"http\", url = \"ws://x\" }").unwrap();
        assert!(matches!(bad_url.validate(), Err(McpConfigError::Invalid { .. })));
    }

    #[test]
    fn default_has_no_servers() {
        let config = McpConfig::default();
        assert!(config.servers.is_empty());
        assert_eq!(parse("[mcp]").unwrap(), config);
    }

    #[test]
    fn patterns() {
        assert!(pattern_matches("lookup_order", "lookup_order"));
        assert!(!pattern_matches("lookup_order", "lookup_orders"));
        assert!(pattern_matches("cancel_*", "cancel_order"));
        assert!(pattern_matches("*_order", "cancel_order"));
        assert!(pattern_matches("*", ""));
        assert!(pattern_matches("a*b*c", "axxbyyc"));
        assert!(!pattern_matches("a*b*c", "axxc"));
        assert!(!pattern_matches("ab*ba", "aba"));
    }
}
