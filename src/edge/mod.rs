//! The HTTP/WebSocket edge Twilio talks to: the voice webhook, the Media Stream socket, health, and shutdown.

mod health;
mod idle_memory;
mod media;
mod replay;
mod serve;
mod session;
mod shutdown;
mod signed;
mod webhook;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::{get, post};
use axum::Router;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::call::agent::AgentFactory;
use crate::call::registry::CallRegistry;
use crate::call::tap::Taps;
use crate::config::{Config, Secrets};
use crate::twilio::signature::SignatureValidator;
use crate::twilio::stream_token::StreamTokens;

pub use idle_memory::limit_allocator_arenas;
pub use serve::connections_refused_at_cap;
pub use shutdown::wait_for_signal;

/// Paths Parley serves; Twilio is pointed at the first.
pub const VOICE_PATH: &str = "/twilio/voice";
pub const MEDIA_PATH: &str = "/twilio/media";
/// The Media Stream path with its per-call token (see [`crate::twilio::stream_token`]); the TwiML names this one
/// whenever signatures are validated.
pub const MEDIA_TOKEN_PATH: &str = "/twilio/media/{token}";
pub const STREAM_STATUS_PATH: &str = "/twilio/stream-status";
/// Prometheus scrapes this (when `telemetry.prometheus` is on).
pub const METRICS_PATH: &str = "/metrics";

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("configuration is not usable: {0}")]
    Config(String),
}

/// Shared by every handler.
pub(crate) struct AppState {
    pub config: Config,
    pub validator: Option<SignatureValidator>,
    /// Per-call Stream URL tokens: on whenever signatures are validated (keyed from the same auth token).
    pub tokens: Option<StreamTokens>,
    pub used_tokens: replay::UsedTokens,
    pub registry: Arc<CallRegistry>,
    pub agents: Arc<dyn AgentFactory>,
    pub taps: Taps,
}

/// A server that is accepting calls.
pub struct RunningServer {
    pub local_addr: SocketAddr,
    registry: Arc<CallRegistry>,
    stop_http: CancellationToken,
    task: JoinHandle<std::io::Result<()>>,
    grace: Duration,
}

impl RunningServer {
    pub fn registry(&self) -> &Arc<CallRegistry> {
        &self.registry
    }

    /// The graceful shutdown sequence: stop admitting calls, let live ones finish within the grace period, close
    /// the rest cleanly, then stop serving HTTP.
    pub async fn shutdown(self) -> std::io::Result<()> {
        shutdown::drain(&self.registry, self.grace).await;
        self.stop_http.cancel();
        match self.task.await {
            Ok(result) => result,
            Err(join) => Err(std::io::Error::other(join)),
        }
    }
}

/// Binds the listener and starts serving.
/// `taps` (the archive) gets a copy of every call, when given.
pub async fn start(
    config: Config,
    secrets: Secrets,
    agents: Arc<dyn AgentFactory>,
    taps: Taps,
) -> Result<RunningServer, EdgeError> {
    start_with(config, secrets, agents, taps, Router::new()).await
}

/// [`start`], with more routes on the same listener (the call viewer), under the same connection limits.
pub async fn start_with(
    config: Config,
    secrets: Secrets,
    agents: Arc<dyn AgentFactory>,
    taps: Taps,
    more: Router,
) -> Result<RunningServer, EdgeError> {
    let (validator, tokens) = match (config.twilio.validate_signatures, &secrets.twilio_auth_token) {
        (true, Some(token)) => {
            (Some(SignatureValidator::new(token.expose())), Some(StreamTokens::from_auth_token(token.expose())))
        }
        (true, None) => {
            return Err(EdgeError::Config("signature validation is on but TWILIO_AUTH_TOKEN is not set".into()))
        }
        (false, _) => (None, None),
    };
    if validator.is_some() && config.server.public_url.is_none() {
        return Err(EdgeError::Config("signature validation needs server.public_url".into()));
    }
    let addr = config.server.listen;
    let listener = TcpListener::bind(addr).await.map_err(|source| EdgeError::Bind { addr, source })?;
    let local_addr = listener.local_addr().map_err(|source| EdgeError::Bind { addr, source })?;
    let registry = CallRegistry::new(config.server.max_concurrent_calls);
    crate::telemetry::metrics::global().watch_registry(&registry);
    idle_memory::spawn(registry.watch_active());
    let grace = Duration::from_secs(config.server.shutdown_grace_secs);
    let limits = serve::ServeLimits {
        header_read_timeout: Duration::from_millis(config.server.header_read_timeout_ms),
        max_pending_connections: config.server.max_pending_connections,
    };
    let state = Arc::new(AppState {
        config,
        validator,
        tokens,
        used_tokens: replay::UsedTokens::default(),
        registry: Arc::clone(&registry),
        agents,
        taps,
    });
    let stop_http = CancellationToken::new();
    let stop = stop_http.clone();
    let app = router(state).merge(more);
    let task = tokio::spawn(serve::serve(listener, app, limits, stop));
    tracing::info!(%local_addr, "Parley is listening");
    Ok(RunningServer { local_addr, registry, stop_http, task, grace })
}

fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route(VOICE_PATH, post(webhook::incoming_call))
        .route(STREAM_STATUS_PATH, post(webhook::stream_status))
        .route(MEDIA_PATH, get(media::upgrade))
        .route(MEDIA_TOKEN_PATH, get(media::upgrade_with_token))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route(METRICS_PATH, get(metrics))
        .with_state(state)
}

/// `GET /metrics`: every metric in the Prometheus text format (404 when `telemetry.prometheus` is off).
async fn metrics(axum::extract::State(state): axum::extract::State<Arc<AppState>>) -> axum::response::Response {
    use axum::response::IntoResponse;
    if !state.config.telemetry.prometheus {
        return axum::http::StatusCode::NOT_FOUND.into_response();
    }
    let body = crate::telemetry::metrics::global().prometheus_text();
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}
