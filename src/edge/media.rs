//! `GET /twilio/media`: the Media Stream WebSocket upgrade, signature-checked and admitted against the call cap.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use super::signed::{public_base, signed_url, verify_form, websocket_base};
use super::{session, AppState};
use crate::telemetry::metrics::{self, RefusedCall};

/// Hard ceiling of one WebSocket message; frames between `max_frame_bytes` and this are skipped with an error
/// instead of tearing the call down.
const HARD_MESSAGE_LIMIT: usize = 1024 * 1024;

pub(crate) async fn upgrade(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    uri: Uri,
    ws: WebSocketUpgrade,
) -> Response {
    let url = signed_url(&websocket_base(&public_base(&state, &headers)), &uri);
    if let Err(status) = verify_form(&state, "media stream upgrade", &url, &[], &headers) {
        metrics::global().call_refused(RefusedCall::BadSignature);
        return status.into_response();
    }
    let permit = match state.registry.admit() {
        Ok(permit) => permit,
        Err(refusal) => {
            metrics::global().call_refused(RefusedCall::from(&refusal));
            tracing::warn!(%peer, %refusal, "refused a media stream");
            return (StatusCode::SERVICE_UNAVAILABLE, refusal.to_string()).into_response();
        }
    };
    let limit = HARD_MESSAGE_LIMIT.max(state.config.server.max_frame_bytes);
    ws.read_buffer_size(crate::websocket::READ_BUFFER_BYTES)
        .max_message_size(limit)
        .max_frame_size(limit)
        .on_failed_upgrade(move |err| tracing::warn!(%peer, %err, "media stream upgrade failed"))
        .on_upgrade(move |socket| session::run(socket, state, permit, peer))
}
