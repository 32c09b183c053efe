//! Timers the engine's select loops share.

use tokio::time::Instant;

/// Sleeps until `deadline`, or forever when there is none (a disabled branch of a `select!`).
pub async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
