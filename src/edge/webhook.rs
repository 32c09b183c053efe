//! `POST /twilio/voice`: Twilio asks what to do with an incoming call; Parley answers with TwiML that connects the
//! call to its Media Stream socket. `POST /twilio/stream-status`: Twilio reports the stream's life.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use super::signed::{public_base, signed_url, verify_form, verify_json, websocket_base};
use super::{AppState, MEDIA_PATH, STREAM_STATUS_PATH};
use crate::telemetry::metrics::{self, RefusedCall};
use crate::telemetry::redact;
use crate::twilio::stream_token::{stream_url_with_token, unix_now};
use crate::twilio::twiml::ConnectStream;
use crate::twilio::validate::is_sid;

/// Form parameters Twilio sends with the voice webhook, as a list (names may repeat).
type Params = Vec<(String, String)>;

pub(crate) async fn incoming_call(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    let base = public_base(&state, &headers);
    let url = signed_url(&base, &uri);
    let params = match verify_body(&state, "voice webhook", &url, &headers, &body) {
        Ok(params) => params,
        Err(status) => {
            metrics::global().call_refused(RefusedCall::BadSignature);
            return status.into_response();
        }
    };
    if let Err((refusal, reason)) = state.registry.has_capacity().then_some(()).ok_or_else(|| refusal_reason(&state)) {
        metrics::global().call_refused(reason);
        tracing::warn!(reason = refusal, "refused an incoming call");
        return (StatusCode::SERVICE_UNAVAILABLE, refusal).into_response();
    }
    let get = |name: &str| params.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let redact_numbers = state.config.twilio.redact_numbers;
    tracing::info!(
        call_sid = ?get("CallSid").as_deref().unwrap_or("-"),
        from = ?redact::phone_number(get("From").as_deref().unwrap_or("-"), redact_numbers),
        to = ?redact::phone_number(get("To").as_deref().unwrap_or("-"), redact_numbers),
        "incoming call"
    );
    let stream_path = match tokenized_stream_path(&state, get("CallSid").as_deref()) {
        Ok(path) => path,
        Err(reason) => {
            tracing::warn!(reason, "refused an incoming call");
            return (StatusCode::BAD_REQUEST, reason).into_response();
        }
    };
    let mut parameters: Vec<(String, String)> = [("callSid", "CallSid"), ("from", "From"), ("to", "To")]
        .into_iter()
        .filter_map(|(name, param)| get(param).map(|v| (name.to_owned(), v)))
        .collect();
    parameters.extend(state.config.twilio.stream_parameters.iter().map(|(k, v)| (k.clone(), v.clone())));
    let twiml = ConnectStream {
        url: format!("{}{stream_path}", websocket_base(&base)),
        status_callback: state.config.twilio.status_callback.then(|| format!("{base}{STREAM_STATUS_PATH}")),
        parameters,
    };
    ([(header::CONTENT_TYPE, "text/xml")], twiml.render()).into_response()
}

pub(crate) async fn stream_status(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> StatusCode {
    let url = signed_url(&public_base(&state, &headers), &uri);
    let params = match verify_body(&state, "stream status callback", &url, &headers, &body) {
        Ok(params) => params,
        Err(status) => return status,
    };
    let get = |name: &str| params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str()).unwrap_or("-");
    let event = get("StreamEvent");
    if event == "stream-error" {
        tracing::error!(
            call_sid = ?get("CallSid"),
            stream_sid = ?get("StreamSid"),
            error = ?get("StreamError"),
            "Twilio reports a stream error"
        );
    } else {
        tracing::info!(call_sid = ?get("CallSid"), stream_sid = ?get("StreamSid"), ?event, "Twilio stream status");
    }
    StatusCode::NO_CONTENT
}

/// Validates the signature of a form or JSON body and returns its parameters (none for JSON).
fn verify_body(
    state: &AppState,
    what: &str,
    url: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Params, StatusCode> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        verify_json(state, what, url, body, headers)?;
        return Ok(json_params(body));
    }
    let params: Params = form_urlencoded::parse(body).map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
    verify_form(state, what, url, &params, headers)?;
    Ok(params)
}

/// Top-level string fields of a JSON webhook body, so the TwiML can pass the call's SID and numbers on.
fn json_params(body: &[u8]) -> Params {
    match serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(body) {
        Ok(map) => map.into_iter().filter_map(|(k, v)| v.as_str().map(|s| (k, s.to_owned()))).collect(),
        Err(_) => Vec::new(),
    }
}

/// The Stream URL's path: with signatures validated, it carries a token for this call (which needs a valid CallSid).
fn tokenized_stream_path(state: &AppState, call_sid: Option<&str>) -> Result<String, &'static str> {
    let Some(tokens) = &state.tokens else { return Ok(MEDIA_PATH.to_owned()) };
    match call_sid {
        Some(call_sid) if is_sid("CA", call_sid) => {
            let expires_at = unix_now() + state.config.twilio.stream_token_ttl_secs;
            Ok(stream_url_with_token(MEDIA_PATH, &tokens.mint(call_sid, expires_at)))
        }
        _ => Err("the webhook carries no valid CallSid"),
    }
}

fn refusal_reason(state: &AppState) -> (&'static str, RefusedCall) {
    if state.registry.is_draining() {
        ("draining", RefusedCall::Draining)
    } else {
        ("at capacity", RefusedCall::Capacity)
    }
}
