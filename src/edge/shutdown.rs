//! Graceful shutdown: SIGTERM (or Ctrl-C) drains calls instead of dropping them.

use std::sync::Arc;
use std::time::Duration;

use crate::call::registry::CallRegistry;

/// How long closed calls get to finish their close handshake after the grace period.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Resolves on SIGTERM or Ctrl-C.
pub async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {},
                    _ = tokio::signal::ctrl_c() => {},
                }
            }
            Err(err) => {
                tracing::warn!(%err, "cannot listen for SIGTERM; only Ctrl-C stops Parley");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Stops admitting calls, waits up to `grace` for live ones to end, then closes the rest.
pub(crate) async fn drain(registry: &Arc<CallRegistry>, grace: Duration) {
    registry.start_draining();
    let live = registry.active();
    tracing::info!(live_calls = live, grace_secs = grace.as_secs(), "draining: no new calls are taken");
    if registry.wait_idle(grace).await {
        tracing::info!("every call ended within the grace period");
        return;
    }
    tracing::warn!(live_calls = registry.active(), "grace period over: closing the remaining calls");
    registry.close_all();
    if !registry.wait_idle(CLOSE_TIMEOUT).await {
        tracing::error!(live_calls = registry.active(), "calls did not close in time");
    }
}
