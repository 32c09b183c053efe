//! What the bridge knows about its servers, for `parley check` and logs: which servers are reachable and which tools
//! each one contributes.

use std::fmt;

/// Connection state of one server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerStatus {
    /// The first connection attempt has not finished.
    Connecting,
    /// Connected; its tools are offered.
    Up,
    /// Not reachable; retried in the background. `error` says why the last attempt failed.
    Down { error: String },
}

/// One tool as offered to the LLM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolReport {
    /// The name the LLM sees.
    pub name: String,
    /// The server's own name for it.
    pub mcp_name: String,
    /// Whether the engine should get spoken confirmation before calling it.
    pub destructive: bool,
    pub timeout_ms: u64,
}

/// A tool the server offers that Parley does not pass on, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DroppedTool {
    pub mcp_name: String,
    pub reason: String,
}

/// One configured server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerReport {
    pub name: String,
    /// `http <endpoint>` or `stdio <command>`, without credentials.
    pub target: String,
    pub status: ServerStatus,
    /// The server's self-description from the handshake (`name version`).
    pub server_info: Option<String>,
    pub tools: Vec<ToolReport>,
    /// Tools left out because their schema could not be made acceptable (allow/deny filtering is not listed).
    pub dropped: Vec<DroppedTool>,
}

/// Every configured server.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct McpReport {
    pub servers: Vec<ServerReport>,
}

impl McpReport {
    /// Whether every configured server is connected.
    pub fn all_up(&self) -> bool {
        self.servers.iter().all(|s| s.status == ServerStatus::Up)
    }

    /// The report of the server named `name`.
    pub fn server(&self, name: &str) -> Option<&ServerReport> {
        self.servers.iter().find(|s| s.name == name)
    }
}

impl fmt::Display for McpReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.servers.is_empty() {
            return writeln!(f, "mcp: no servers configured (the agent has no tools)");
        }
        for server in &self.servers {
            let status = match &server.status {
                ServerStatus::Connecting => "connecting".to_string(),
                ServerStatus::Up => "reachable".to_string(),
                ServerStatus::Down { error } => format!("UNREACHABLE: {error}"),
            };
            write!(f, "mcp server {} [{}]: {status}", server.name, server.target)?;
            if let Some(info) = &server.server_info {
                write!(f, ", {info}")?;
            }
            writeln!(f)?;
            for tool in &server.tools {
                let mut notes = Vec::new();
                if tool.name != tool.mcp_name {
                    notes.push(format!("MCP name {}", tool.mcp_name));
                }
                if tool.destructive {
                    notes.push("needs confirmation".to_string());
                }
                notes.push(format!("timeout {} ms", tool.timeout_ms));
                writeln!(f, "  tool {} ({})", tool.name, notes.join(", "))?;
            }
            for dropped in &server.dropped {
                writeln!(f, "  dropped {}: {}", dropped.mcp_name, dropped.reason)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_servers_tools_and_problems() {
        let report = McpReport {
            servers: vec![
                ServerReport {
                    name: "shop".into(),
                    target: "http http://127.0.0.1:1/mcp".into(),
                    status: ServerStatus::Up,
                    server_info: Some("demo-backend 0.1.0".into()),
                    tools: vec![ToolReport {
                        name: "orders_lookup_v2".into(),
                        mcp_name: "orders.lookup/v2".into(),
                        destructive: true,
                        timeout_ms: 500,
                    }],
                    dropped: vec![DroppedTool { mcp_name: "weird".into(), reason: "bad schema".into() }],
                },
                ServerReport {
                    name: "clinic".into(),
                    target: "stdio demo-backend".into(),
                    status: ServerStatus::Down { error: "connection refused at http://127.0.0.1:1/mcp".into() },
                    server_info: None,
                    tools: vec![],
                    dropped: vec![],
                },
            ],
        };
        let text = report.to_string();
        assert!(
            text.contains("mcp server shop [http http://127.0.0.1:1/mcp]: reachable, demo-backend 0.1.0"),
            "{text}"
        );
        assert!(text.contains("tool orders_lookup_v2 (MCP name orders.lookup/v2, needs confirmation, timeout 500 ms)"));
        assert!(text.contains("dropped weird: bad schema"));
        assert!(text.contains(
            "mcp server clinic [stdio demo-backend]: UNREACHABLE: connection refused at http://127.0.0.1:1/mcp\n"
        ));
        assert!(!report.all_up());
        assert!(McpReport::default().to_string().contains("no servers"));
    }
}
