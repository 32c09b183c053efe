//! The HTTP/1.1 accept loop, with the limits `axum::serve` does not have: a deadline for a request's headers (also
//! between keep-alive requests), and a cap on connections that have not finished their WebSocket upgrade.
//!
//! Without them a peer that opens TCP connections and sends half a request (or nothing) holds a socket and a file
//! descriptor each, forever, until nothing else can connect. Upgraded Media Streams leave this count as soon as the
//! upgrade is answered: from then on the call cap and the media idle timeout govern them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// How long a failed `accept` (out of file descriptors, most often) waits before the next one.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// The connection limits, from `[server]`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ServeLimits {
    /// A request's headers must arrive within this, counted from the connection (or the previous response).
    pub header_read_timeout: Duration,
    /// Connections still speaking HTTP (not yet upgraded, or idle between requests); beyond it new ones are closed.
    pub max_pending_connections: usize,
}

/// Connections closed at once because the pending cap was reached (process-wide, for logs and tests).
static REFUSED_AT_CAP: AtomicU64 = AtomicU64::new(0);

/// How many connections were closed unserved because too many were still pending.
pub fn connections_refused_at_cap() -> u64 {
    REFUSED_AT_CAP.load(Ordering::Relaxed)
}

/// Accepts connections until `stop`, then lets the ones in flight finish their current request.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ServeLimits,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let pending = Arc::new(Semaphore::new(limits.max_pending_connections.max(1)));
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout).keep_alive(true);
    let connections = TaskTracker::new();
    let mut warned_at_cap = false;
    loop {
        let (tcp, peer) = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::warn!(%err, "could not accept a connection");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let Ok(permit) = Arc::clone(&pending).try_acquire_owned() else {
            REFUSED_AT_CAP.fetch_add(1, Ordering::Relaxed);
            if !warned_at_cap {
                warned_at_cap = true;
                tracing::warn!(
                    %peer,
                    max_pending_connections = limits.max_pending_connections,
                    "too many connections have not finished a request or upgrade; closing new ones until some end"
                );
            }
            drop(tcp);
            continue;
        };
        if pending.available_permits() > limits.max_pending_connections / 2 {
            warned_at_cap = false;
        }
        let _ = tcp.set_nodelay(true);
        // The router for this connection, with the peer's address where `ConnectInfo` finds it.
        let app = app.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            app.clone().oneshot(request)
        });
        let connection = http.serve_connection(TokioIo::new(tcp), service).with_upgrades();
        let stop = stop.clone();
        connections.spawn(async move {
            // Held until the connection is upgraded (the future ends when the upgrade is handed over) or closed.
            let _permit = permit;
            tokio::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                () = stop.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(err) = result {
                tracing::debug!(%peer, %err, "HTTP connection ended with an error");
            }
        });
    }
    connections.close();
    // Connections still open finish their request; the header deadline bounds the wait for idle ones.
    let _ = tokio::time::timeout(limits.header_read_timeout + Duration::from_secs(1), connections.wait()).await;
    Ok(())
}
