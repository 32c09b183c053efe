//! The call viewer: a read-only web page over the archive — the list of calls, and each call with its stereo
//! recording, its timeline (barge-ins and tool calls marked), the per-turn latency waterfall the evaluator draws, and
//! the offline transcript beside the live one with its word error rate.
//!
//! It is off unless configured (`[viewer]`), and every request needs the token from the environment variable
//! `viewer.token_env`: as a bearer token (`Authorization: Bearer …`) or as the password of HTTP basic auth (any user
//! name), which a browser asks for. `parley serve` mounts it at `/calls`; `parley archive serve` serves it alone.
//! Pages are rendered on the server ([`pages`]); nothing runs in the browser but the audio player.

pub mod pages;

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use base64::Engine as _;
use subtle::ConstantTimeEq;

use crate::archive::cli::find_call;
use crate::archive::{list_calls, read_call_legs, read_call_recording, read_call_timeline, ArchiveError, ArchiveStore};
use crate::eval::archived::archived_call_score;
use crate::transcribe::{CallTranscript, TRANSCRIPT_FILE};
use pages::{CallPage, CallRow};

/// The most calls the list shows, newest first.
pub const LIST_LIMIT: usize = 200;

/// What the viewer serves, and to whom.
#[derive(Clone)]
pub struct Viewer {
    store: Arc<dyn ArchiveStore>,
    token: Arc<str>,
    redact_numbers: bool,
}

impl Viewer {
    /// `token` is what every request must present (never logged).
    pub fn new(store: Arc<dyn ArchiveStore>, token: &str, redact_numbers: bool) -> Viewer {
        Viewer { store, token: token.into(), redact_numbers }
    }

    /// The viewer's routes (`/calls`, `/calls/<call>`, `/calls/<call>/recording`), behind the token.
    /// `/calls/<call>/recording.opus`, the recording's earlier address, serves the same.
    pub fn router(self) -> Router {
        let state = Arc::new(self);
        Router::new()
            .route("/calls", get(list))
            .route("/calls/{call}", get(call))
            .route("/calls/{call}/recording", get(recording))
            .route("/calls/{call}/recording.opus", get(recording))
            .route_layer(axum::middleware::from_fn_with_state(Arc::clone(&state), authorize))
            .with_state(state)
    }

    fn allows(&self, headers: &HeaderMap) -> bool {
        let Some(value) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else { return false };
        let presented = if let Some(token) = value.strip_prefix("Bearer ") {
            token.trim().to_owned()
        } else if let Some(encoded) = value.strip_prefix("Basic ") {
            let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).unwrap_or_default();
            let text = String::from_utf8_lossy(&decoded).into_owned();
            text.split_once(':').map(|(_, password)| password.to_owned()).unwrap_or_default()
        } else {
            return false;
        };
        !self.token.is_empty() && bool::from(presented.as_bytes().ct_eq(self.token.as_bytes()))
    }
}

async fn authorize(State(viewer): State<Arc<Viewer>>, request: Request, next: Next) -> Response {
    if viewer.allows(request.headers()) {
        return next.run(request).await;
    }
    let challenge = [(header::WWW_AUTHENTICATE, "Basic realm=\"Parley calls\", charset=\"UTF-8\"")];
    (StatusCode::UNAUTHORIZED, challenge, "the call viewer needs its token\n").into_response()
}

/// Archive reads run on the blocking pool: a store may be a bucket, and decoding a recording takes a moment.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ArchiveError> + Send + 'static,
) -> Result<T, Response> {
    match tokio::task::spawn_blocking(work).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(ArchiveError::NotFound(call))) => {
            Err((StatusCode::NOT_FOUND, format!("no archived call {call}\n")).into_response())
        }
        Ok(Err(error)) => {
            tracing::warn!(%error, "the call viewer could not read the archive");
            Err((StatusCode::INTERNAL_SERVER_ERROR, "the archive could not be read\n").into_response())
        }
        Err(_) => Err(StatusCode::INTERNAL_SERVER_ERROR.into_response()),
    }
}

async fn list(State(viewer): State<Arc<Viewer>>) -> Response {
    let store = Arc::clone(&viewer.store);
    let rows = blocking(move || {
        let calls = list_calls(store.as_ref())?;
        Ok(calls
            .into_iter()
            .take(LIST_LIMIT)
            .map(|(key, metadata)| {
                let timeline = read_call_timeline(store.as_ref(), &key).unwrap_or_default();
                CallRow::new(key.name.clone(), metadata, &timeline)
            })
            .collect::<Vec<_>>())
    })
    .await;
    match rows {
        Ok(rows) => Html(pages::calls_list(&rows, viewer.redact_numbers)).into_response(),
        Err(response) => response,
    }
}

async fn call(State(viewer): State<Arc<Viewer>>, Path(name): Path<String>) -> Response {
    let store = Arc::clone(&viewer.store);
    let page = blocking(move || {
        let key = find_call(store.as_ref(), &name)?;
        let metadata = crate::archive::read_call_metadata(store.as_ref(), &key)?;
        let timeline = read_call_timeline(store.as_ref(), &key)?;
        let waterfall = read_call_legs(store.as_ref(), &key).ok().map(|(caller, agent)| {
            crate::eval::waterfall::render(&archived_call_score(&metadata, &timeline, &caller, &agent))
        });
        let transcript = store
            .get(&key, TRANSCRIPT_FILE)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<CallTranscript>(&bytes).ok());
        Ok(CallPage { name: key.name.clone(), metadata, timeline, waterfall, transcript })
    })
    .await;
    match page {
        Ok(page) => Html(pages::call_page(&page, viewer.redact_numbers)).into_response(),
        Err(response) => response,
    }
}

/// The call's recording in whichever form it has now: the Opus file as `audio/ogg`, or the μ-law one (a call the
/// after-call worker has not reached) converted to 16-bit PCM `audio/wav`, which every browser plays.
async fn recording(State(viewer): State<Arc<Viewer>>, Path(name): Path<String>) -> Response {
    let store = Arc::clone(&viewer.store);
    let playable = blocking(move || {
        let key = find_call(store.as_ref(), &name)?;
        let (form, bytes) = read_call_recording(store.as_ref(), &key)?;
        form.playable(bytes, &key.relative_path().join(form.file_name()))
    })
    .await;
    match playable {
        Ok((bytes, content_type)) => ([(header::CONTENT_TYPE, content_type)], Body::from(bytes)).into_response(),
        Err(response) => response,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn viewer() -> Viewer {
        let dir = std::env::temp_dir().join("parley-viewer-auth-test");
        let store = crate::archive::LocalStore::new(&dir).expect("store");
        Viewer::new(Arc::new(store), "s3cret", false)
    }

    fn headers(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, value.parse().expect("header"));
        headers
    }

    #[test]
    fn only_the_token_opens_the_viewer() {
        let viewer = viewer();
        assert!(viewer.allows(&headers("Bearer s3cret")));
        let basic = base64::engine::general_purpose::STANDARD.encode("anyone:s3cret");
        assert!(viewer.allows(&headers(&format!("Basic {basic}"))));
        assert!(!viewer.allows(&headers("Bearer wrong")));
        let wrong = base64::engine::general_purpose::STANDARD.encode("anyone:wrong");
        assert!(!viewer.allows(&headers(&format!("Basic {wrong}"))));
        assert!(!viewer.allows(&HeaderMap::new()));
        assert!(!Viewer { token: "".into(), ..viewer }.allows(&headers("Bearer ")));
    }
}
