//! Liveness and readiness for load balancers and Kubernetes.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use super::AppState;

/// The process is up.
pub(crate) async fn healthz() -> &'static str {
    "ok"
}

/// Ready for a new call: not draining and under the concurrent-call cap.
pub(crate) async fn readyz(State(state): State<Arc<AppState>>) -> (StatusCode, Json<Value>) {
    let registry = &state.registry;
    let (status, reason) = if registry.is_draining() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining")
    } else if !registry.has_capacity() {
        (StatusCode::SERVICE_UNAVAILABLE, "at capacity")
    } else {
        (StatusCode::OK, "ready")
    };
    (status, Json(json!({ "status": reason, "active_calls": registry.active(), "max_calls": registry.max_calls() })))
}
