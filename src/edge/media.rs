//! `GET /twilio/media[/{token}]`: the Media Stream WebSocket upgrade, signature-checked, its per-call token checked
//! and taken once, and admitted against the call cap.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use super::signed::{public_base, refuse, signed_url, verify_form, websocket_base};
use super::{session, AppState};
use crate::telemetry::metrics::{self, RefusedCall};
use crate::twilio::stream_token::unix_now;

/// Hard ceiling of one WebSocket message; frames between `max_frame_bytes` and this are skipped with an error
/// instead of tearing the call down.
/// Read buffer of a media socket. Twilio's messages are ~400 bytes (a media frame) and the buffer is zeroed up to its
/// size before every read, fifty a second a call: 2 KiB holds several messages and costs a quarter of the 8 KiB
/// providers' sockets use. A larger message is read in several steps.
const MEDIA_READ_BUFFER_BYTES: usize = 2 * 1024;
const HARD_MESSAGE_LIMIT: usize = 1024 * 1024;

/// The upgrade without a token: only accepted while signatures (and so tokens) are off.
pub(crate) async fn upgrade(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    uri: Uri,
    ws: WebSocketUpgrade,
) -> Response {
    accept(state, peer, &headers, &uri, None, ws)
}

/// The upgrade of a Stream URL that carries the call's token.
pub(crate) async fn upgrade_with_token(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(token): Path<String>,
    headers: HeaderMap,
    uri: Uri,
    ws: WebSocketUpgrade,
) -> Response {
    accept(state, peer, &headers, &uri, Some(&token), ws)
}

fn accept(
    state: Arc<AppState>,
    peer: SocketAddr,
    headers: &HeaderMap,
    uri: &Uri,
    token: Option<&str>,
    ws: WebSocketUpgrade,
) -> Response {
    let url = signed_url(&websocket_base(&public_base(&state, headers)), uri);
    if let Err(status) = verify_form(&state, "media stream upgrade", &url, &[], headers) {
        metrics::global().call_refused(RefusedCall::BadSignature);
        return status.into_response();
    }
    // With tokens on, the token names the call `start` must name; it is checked here, before a slot is taken.
    let expected_call_sid = match (&state.tokens, token) {
        (None, _) => None,
        (Some(_), None) => return refuse_token(&url, "the Stream URL has no token").into_response(),
        (Some(tokens), Some(token)) => {
            let now = unix_now();
            match tokens.verify(token, now) {
                Err(err) => return refuse_token(&url, &err.to_string()).into_response(),
                Ok(verified) if !state.used_tokens.take(token, verified.expires_at, now) => {
                    return refuse_token(&url, "the token was used before (a replayed upgrade)").into_response()
                }
                Ok(verified) => Some(verified.call_sid),
            }
        }
    };
    let permit = match state.registry.admit() {
        Ok(permit) => permit,
        Err(refusal) => {
            metrics::global().call_refused(RefusedCall::from(&refusal));
            tracing::warn!(%peer, %refusal, "refused a media stream");
            return (StatusCode::SERVICE_UNAVAILABLE, refusal.to_string()).into_response();
        }
    };
    let limit = HARD_MESSAGE_LIMIT.max(state.config.server.max_frame_bytes);
    ws.read_buffer_size(MEDIA_READ_BUFFER_BYTES)
        .max_message_size(limit)
        .max_frame_size(limit)
        .on_failed_upgrade(move |err| tracing::warn!(%peer, %err, "media stream upgrade failed"))
        .on_upgrade(move |socket| session::run(socket, state, permit, peer, expected_call_sid))
}

fn refuse_token(url: &str, reason: &str) -> StatusCode {
    refuse("media stream upgrade", url, reason)
}
