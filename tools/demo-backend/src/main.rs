//! `demo-backend`: serves the demo shop and clinic as an MCP server over stdio or Streamable HTTP.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use demo_backend::{DemoBackend, Hooks, Store};
use tokio_util::sync::CancellationToken;

/// Serves a fictional shop and clinic as MCP tools. Logs go to stderr; stdout carries only MCP (stdio) or the
/// listening line (HTTP). Test hooks: DEMO_BACKEND_DELAY_MS delays every tool call; DEMO_BACKEND_CRASH_ONCE=FILE
/// makes the process exit mid-call if FILE exists (deleting it first).
#[derive(Debug, Parser)]
#[command(name = "demo-backend", version)]
struct Args {
    /// SQLite database file; created and seeded on first start.
    #[arg(long)]
    db: PathBuf,
    /// Serve MCP over stdin/stdout.
    #[arg(long, conflicts_with = "http", required_unless_present = "http")]
    stdio: bool,
    /// Serve MCP over Streamable HTTP at http://ADDR/mcp (port 0 picks a free port).
    #[arg(long, value_name = "ADDR")]
    http: Option<SocketAddr>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let store = Store::open(&args.db).with_context(|| format!("opening {}", args.db.display()))?;
    let backend = DemoBackend::new(Arc::new(store), Hooks::from_env());
    match args.http {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?;
            let local = listener.local_addr()?;
            let mut stdout = std::io::stdout();
            writeln!(stdout, "demo-backend listening on {local}")?;
            stdout.flush()?;
            let shutdown = CancellationToken::new();
            let on_signal = shutdown.clone();
            tokio::spawn(async move {
                let _ = tokio::signal::ctrl_c().await;
                on_signal.cancel();
            });
            demo_backend::serve_http(listener, backend, shutdown).await?;
        }
        None => demo_backend::serve_stdio(backend).await?,
    }
    Ok(())
}
