//! Fake Twilio REST API: the Calls resource update, `POST /2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}.json`.
//!
//! A real HTTP server on 127.0.0.1 that checks HTTP Basic auth (account SID and auth token), reads the
//! form-encoded body and answers with the Call resource (`proto-fixtures/twilio/rest_call_updated.json`, with the
//! request's SIDs filled in), or Twilio's 20404 error for calls it is told are over. Every request is recorded.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use base64::Engine;
use serde_json::Value;
use tokio::task::JoinHandle;

const CALL_FIXTURE: &str = include_str!("../../../proto-fixtures/twilio/rest_call_updated.json");
const NOT_FOUND_FIXTURE: &str = include_str!("../../../proto-fixtures/twilio/rest_error_not_found.json");

/// One call update the fake received.
#[derive(Debug, Clone)]
pub struct CallUpdate {
    pub account_sid: String,
    pub call_sid: String,
    /// The form fields, in order.
    pub form: Vec<(String, String)>,
    /// The Basic auth user and password, when sent.
    pub auth: Option<(String, String)>,
}

impl CallUpdate {
    pub fn field(&self, name: &str) -> Option<&str> {
        self.form.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct Shared {
    auth_token: String,
    ended_calls: Vec<String>,
    updates: Mutex<Vec<CallUpdate>>,
    /// How long an update waits before it is answered, as a slow Twilio API would.
    response_delay: Mutex<std::time::Duration>,
}

/// The running fake; stops when dropped.
pub struct FakeTwilioRest {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

/// Starts the fake. Requests must authenticate with `auth_token`; calls in `ended_calls` answer 404/20404.
pub async fn start(auth_token: &str, ended_calls: &[&str]) -> std::io::Result<FakeTwilioRest> {
    let shared = Arc::new(Shared {
        auth_token: auth_token.to_owned(),
        ended_calls: ended_calls.iter().map(|c| c.to_string()).collect(),
        updates: Mutex::new(Vec::new()),
        response_delay: Mutex::new(std::time::Duration::ZERO),
    });
    let router = Router::new()
        .route("/2010-04-01/Accounts/{account}/Calls/{call}", post(update_call))
        .with_state(Arc::clone(&shared));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Ok(FakeTwilioRest { addr, shared, task })
}

impl FakeTwilioRest {
    /// The API base URL to configure instead of `https://api.twilio.com`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Answers each later update only after `delay` (recorded at once, answered late).
    pub fn set_response_delay(&self, delay: std::time::Duration) {
        *lock(&self.shared.response_delay) = delay;
    }

    /// Every update received, in order (including refused ones).
    pub fn updates(&self) -> Vec<CallUpdate> {
        lock(&self.shared.updates).clone()
    }
}

impl Drop for FakeTwilioRest {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

async fn update_call(
    State(shared): State<Arc<Shared>>,
    Path((account_sid, call)): Path<(String, String)>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let Some(call_sid) = call.strip_suffix(".json").map(str::to_owned) else {
        return error(StatusCode::NOT_FOUND, 20404, "only the .json representation is served");
    };
    let form: Vec<(String, String)> =
        form_urlencoded::parse(body.as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
    let auth = basic_auth(&headers);
    lock(&shared.updates).push(CallUpdate {
        account_sid: account_sid.clone(),
        call_sid: call_sid.clone(),
        form: form.clone(),
        auth: auth.clone(),
    });
    let delay = *lock(&shared.response_delay);
    tokio::time::sleep(delay).await;
    if auth.as_ref() != Some(&(account_sid.clone(), shared.auth_token.clone())) {
        return error(StatusCode::UNAUTHORIZED, 20003, "Authenticate");
    }
    let has = |name: &str| form.iter().any(|(k, _)| k == name);
    if has("Twiml") && has("Url") {
        return error(StatusCode::BAD_REQUEST, 21220, "Twiml and Url are mutually exclusive");
    }
    if shared.ended_calls.contains(&call_sid) {
        let body = NOT_FOUND_FIXTURE.replace("CAXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX", &call_sid);
        return (StatusCode::NOT_FOUND, [(header::CONTENT_TYPE, "application/json")], body).into_response();
    }
    let mut resource: Value = serde_json::from_str(CALL_FIXTURE).unwrap_or_default();
    resource["sid"] = Value::String(call_sid);
    resource["account_sid"] = Value::String(account_sid);
    if let Some((_, status)) = form.iter().find(|(k, _)| k == "Status") {
        resource["status"] = Value::String(status.clone());
    }
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], resource.to_string()).into_response()
}

fn basic_auth(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

fn error(status: StatusCode, code: u32, message: &str) -> Response {
    let body = serde_json::json!({"code": code, "message": message, "more_info": format!("https://www.twilio.com/docs/errors/{code}"), "status": status.as_u16()});
    (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}
