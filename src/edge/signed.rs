//! Public URLs and signature checks for requests that claim to come from Twilio.

use axum::http::{HeaderMap, StatusCode, Uri};

use super::AppState;

const SIGNATURE_HEADER: &str = "x-twilio-signature";

/// The base URL Twilio reaches Parley at: configured, or (only when validation is off) taken from `Host`.
pub(crate) fn public_base(state: &AppState, headers: &HeaderMap) -> String {
    match &state.config.server.public_url {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None => {
            let host = headers.get("host").and_then(|h| h.to_str().ok()).unwrap_or("localhost");
            format!("http://{host}")
        }
    }
}

/// The same base with the WebSocket scheme Twilio signs upgrade requests with.
pub(crate) fn websocket_base(http_base: &str) -> String {
    if let Some(rest) = http_base.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = http_base.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        http_base.to_owned()
    }
}

/// The URL Twilio signed for this request: the public base plus the path and query Parley received.
pub(crate) fn signed_url(base: &str, uri: &Uri) -> String {
    let path_and_query = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    format!("{base}{path_and_query}")
}

/// A request failed the signature check; logged without the signature or any secret.
pub(crate) fn refuse(what: &str, url: &str, reason: &str) -> StatusCode {
    tracing::warn!(request = what, ?url, reason, "refused a request that failed Twilio signature or token validation");
    StatusCode::FORBIDDEN
}

/// Checks form-encoded (or parameterless) requests. `Ok` when validation is off.
pub(crate) fn verify_form(
    state: &AppState,
    what: &str,
    url: &str,
    params: &[(String, String)],
    headers: &HeaderMap,
) -> Result<(), StatusCode> {
    let Some(validator) = &state.validator else { return Ok(()) };
    let Some(signature) = headers.get(SIGNATURE_HEADER).and_then(|h| h.to_str().ok()) else {
        return Err(refuse(what, url, "no X-Twilio-Signature header"));
    };
    if validator.validate(url, params, signature) {
        Ok(())
    } else {
        Err(refuse(what, url, "signature does not match"))
    }
}

/// Checks a JSON-body request signed through its `bodySHA256` query parameter.
pub(crate) fn verify_json(
    state: &AppState,
    what: &str,
    url: &str,
    body: &[u8],
    headers: &HeaderMap,
) -> Result<(), StatusCode> {
    let Some(validator) = &state.validator else { return Ok(()) };
    let Some(signature) = headers.get(SIGNATURE_HEADER).and_then(|h| h.to_str().ok()) else {
        return Err(refuse(what, url, "no X-Twilio-Signature header"));
    };
    if validator.validate_json_body(url, body, signature) {
        Ok(())
    } else {
        Err(refuse(what, url, "signature or bodySHA256 does not match"))
    }
}
