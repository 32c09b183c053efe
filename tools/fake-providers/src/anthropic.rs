//! Fake Anthropic Messages server.
//!
//! A real HTTP server on 127.0.0.1 (ephemeral port) answering `POST /v1/messages` with a `text/event-stream` body of
//! named events: either replayed from `proto-fixtures/anthropic/*.sse` or generated from a string in the documented
//! event shape (`message_start`, content blocks, `message_delta`, `message_stop`). Replies come from an ordered
//! script, then a fallback; a reply for requests ending in tool results can be set apart. Timing is configurable and
//! faults can be injected: HTTP errors with Anthropic's error body, a server that never answers, a stream that stalls
//! or is cut mid-way.
//!
//! Every request is recorded (body and the two Anthropic headers) and every stream the client abandoned is counted.
//! Like Anthropic, the fake answers 401 without `x-api-key`, 400 without `anthropic-version` or `max_tokens`, and 400
//! when a `tool_use` is not answered by a `tool_result` at the start of the next user message, or when a message has
//! the `system` role. The server stops when the [`FakeAnthropic`] handle is dropped.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::openai::token_pieces;

/// Errors starting or feeding the fake.
#[derive(Debug, thiserror::Error)]
pub enum FakeAnthropicError {
    #[error("fixture {name}: {detail}")]
    Fixture { name: String, detail: String },
    #[error("could not bind the fake Anthropic server: {0}")]
    Bind(#[from] std::io::Error),
}

/// One scripted answer to a request.
#[derive(Debug, Clone, PartialEq)]
pub enum FakeReply {
    /// Replay a fixture file from the fixtures directory (e.g. `"text_then_tool_use.sse"`), event by event.
    Fixture(String),
    /// Stream this text as one text block in word-sized deltas, `stop_reason: "end_turn"`.
    Text(String),
    /// Stream optional text, then one `tool_use` block per call with its input in small `input_json_delta` pieces.
    ToolUse { text: String, calls: Vec<FakeToolUse> },
    /// Answer with this HTTP status and the JSON body of a fixture file (e.g. `"http_529.json"`), before streaming.
    Http { status: u16, fixture: String },
    /// Accept the request and never answer it (not even headers).
    Hang,
    /// Send the first `after_events` events of `reply`, then stall (`close: false`) or cut the connection.
    Interrupted { reply: Box<FakeReply>, after_events: usize, close: bool },
}

/// A tool call for [`FakeReply::ToolUse`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeToolUse {
    pub id: String,
    pub name: String,
    /// Raw input JSON text, streamed in pieces.
    pub input: String,
}

impl FakeReply {
    /// Replay `proto-fixtures/anthropic/<name>`.
    pub fn fixture(name: impl Into<String>) -> Self {
        FakeReply::Fixture(name.into())
    }
    /// A streamed text reply.
    pub fn text(text: impl Into<String>) -> Self {
        FakeReply::Text(text.into())
    }
    /// A reply made of one tool call.
    pub fn tool_use(id: impl Into<String>, name: impl Into<String>, input: impl Into<String>) -> Self {
        let call = FakeToolUse { id: id.into(), name: name.into(), input: input.into() };
        FakeReply::ToolUse { text: String::new(), calls: vec![call] }
    }
    /// HTTP 529 with Anthropic's `overloaded_error` body.
    pub fn overloaded() -> Self {
        FakeReply::Http { status: 529, fixture: "http_529.json".into() }
    }
    /// Never answer.
    pub fn hang() -> Self {
        FakeReply::Hang
    }
    /// This reply's first `events` events, then silence with the connection open.
    pub fn stall_after(self, events: usize) -> Self {
        FakeReply::Interrupted { reply: Box::new(self), after_events: events, close: false }
    }
    /// This reply's first `events` events, then the connection is cut.
    pub fn close_after(self, events: usize) -> Self {
        FakeReply::Interrupted { reply: Box::new(self), after_events: events, close: true }
    }

    fn fixture_names(&self) -> Vec<&str> {
        match self {
            FakeReply::Fixture(name) | FakeReply::Http { fixture: name, .. } => vec![name.as_str()],
            FakeReply::Interrupted { reply, .. } => reply.fixture_names(),
            FakeReply::Text(_) | FakeReply::ToolUse { .. } | FakeReply::Hang => Vec::new(),
        }
    }
}

/// How the fake behaves.
#[derive(Debug, Clone)]
pub struct FakeAnthropicOptions {
    /// Replies used in order, one per request.
    pub script: Vec<FakeReply>,
    /// Used when the script is used up.
    pub fallback: FakeReply,
    /// Answers a request whose last user message starts with tool results (before the script); `{result}` in a text
    /// reply is replaced by the first result's content.
    pub after_tool: Option<FakeReply>,
    /// Delay before the first event of a stream (time to first token).
    pub first_token_delay: Duration,
    /// Delay before each later event.
    pub inter_token_delay: Duration,
    /// Where fixture files are read from.
    pub fixtures_dir: PathBuf,
}

impl Default for FakeAnthropicOptions {
    fn default() -> Self {
        FakeAnthropicOptions {
            script: Vec::new(),
            fallback: FakeReply::text("Okay."),
            after_tool: None,
            first_token_delay: Duration::from_millis(300),
            inter_token_delay: Duration::from_millis(15),
            fixtures_dir: default_fixtures_dir(),
        }
    }
}

impl FakeAnthropicOptions {
    /// Appends a reply to the script.
    pub fn reply(mut self, reply: FakeReply) -> Self {
        self.script.push(reply);
        self
    }
    /// Sets the reply to requests that carry tool results.
    pub fn after_tool(mut self, reply: FakeReply) -> Self {
        self.after_tool = Some(reply);
        self
    }
    /// Sets the fallback reply.
    pub fn fallback(mut self, reply: FakeReply) -> Self {
        self.fallback = reply;
        self
    }
    /// No delays at all (fast functional tests).
    pub fn no_delays(mut self) -> Self {
        self.first_token_delay = Duration::ZERO;
        self.inter_token_delay = Duration::ZERO;
        self
    }
}

/// `proto-fixtures/anthropic` of this workspace.
pub fn default_fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto-fixtures/anthropic")
}

/// One request the fake received.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedRequest {
    pub path: String,
    /// The `x-api-key` header, if sent.
    pub api_key: Option<String>,
    /// The `anthropic-version` header, if sent.
    pub version: Option<String>,
    /// The JSON body (`Value::Null` if it was not JSON).
    pub body: Value,
}

impl RecordedRequest {
    /// The `messages` array of the body.
    pub fn messages(&self) -> Vec<Value> {
        self.body.get("messages").and_then(Value::as_array).cloned().unwrap_or_default()
    }
}

/// A running fake. Dropping it stops the server.
#[derive(Debug)]
pub struct FakeAnthropic {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

#[derive(Debug)]
struct Shared {
    inner: Mutex<Inner>,
    fixtures_dir: PathBuf,
    fallback: FakeReply,
    after_tool: Option<FakeReply>,
    first_token_delay: Duration,
    inter_token_delay: Duration,
    requests_seen: watch::Sender<usize>,
    disconnects: watch::Sender<usize>,
    shutdown: watch::Sender<bool>,
}

#[derive(Debug, Default)]
struct Inner {
    script: VecDeque<FakeReply>,
    fixtures: HashMap<String, String>,
    requests: Vec<RecordedRequest>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Starts a fake on 127.0.0.1 with an ephemeral port. Every fixture the options mention is loaded (and checked) now.
pub async fn start(options: FakeAnthropicOptions) -> Result<FakeAnthropic, FakeAnthropicError> {
    let mut fixtures = HashMap::new();
    for reply in options.script.iter().chain([&options.fallback]).chain(options.after_tool.iter()) {
        load_fixtures(&options.fixtures_dir, reply, &mut fixtures)?;
    }
    let shared = Arc::new(Shared {
        inner: Mutex::new(Inner { script: options.script.into(), fixtures, requests: Vec::new() }),
        fixtures_dir: options.fixtures_dir,
        fallback: options.fallback,
        after_tool: options.after_tool,
        first_token_delay: options.first_token_delay,
        inter_token_delay: options.inter_token_delay,
        requests_seen: watch::Sender::new(0),
        disconnects: watch::Sender::new(0),
        shutdown: watch::Sender::new(false),
    });
    let router = Router::new().route("/v1/messages", post(messages)).with_state(shared.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, router).await {
            tracing::warn!(%error, "fake Anthropic server stopped");
        }
    });
    Ok(FakeAnthropic { addr, shared, task })
}

impl FakeAnthropic {
    /// The API root to configure the client with: `http://127.0.0.1:<port>`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Appends a reply to the script while running (its fixtures are loaded now).
    pub fn enqueue(&self, reply: FakeReply) -> Result<(), FakeAnthropicError> {
        let mut inner = self.shared.lock();
        load_fixtures(&self.shared.fixtures_dir, &reply, &mut inner.fixtures)?;
        inner.script.push_back(reply);
        Ok(())
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().requests.clone()
    }

    /// The most recent request.
    pub fn last_request(&self) -> Option<RecordedRequest> {
        self.shared.lock().requests.last().cloned()
    }

    /// How many streams the client abandoned before they were complete (cancellation reaching the server).
    pub fn disconnects(&self) -> usize {
        *self.shared.disconnects.borrow()
    }

    /// Waits until at least `count` streams were abandoned by the client; false if `timeout` passed first.
    pub async fn wait_for_disconnects(&self, count: usize, timeout: Duration) -> bool {
        wait_for_count(&self.shared.disconnects, count, timeout).await
    }

    /// Waits until at least `count` requests arrived; false if `timeout` passed first.
    pub async fn wait_for_requests(&self, count: usize, timeout: Duration) -> bool {
        wait_for_count(&self.shared.requests_seen, count, timeout).await
    }
}

impl Drop for FakeAnthropic {
    fn drop(&mut self) {
        self.shared.shutdown.send_replace(true);
        self.task.abort();
    }
}

async fn wait_for_count(counter: &watch::Sender<usize>, count: usize, timeout: Duration) -> bool {
    let mut receiver = counter.subscribe();
    let reached = tokio::time::timeout(timeout, receiver.wait_for(|seen| *seen >= count)).await;
    matches!(reached, Ok(Ok(_)))
}

fn load_fixtures(dir: &Path, reply: &FakeReply, into: &mut HashMap<String, String>) -> Result<(), FakeAnthropicError> {
    for name in reply.fixture_names() {
        if into.contains_key(name) {
            continue;
        }
        let text = std::fs::read_to_string(dir.join(name))
            .map_err(|error| FakeAnthropicError::Fixture { name: name.to_owned(), detail: error.to_string() })?;
        into.insert(name.to_owned(), text);
    }
    Ok(())
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

async fn messages(
    State(shared): State<Arc<Shared>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let parsed: Option<Value> = serde_json::from_slice(&body).ok();
    let api_key = header(&headers, "x-api-key");
    let version = header(&headers, "anthropic-version");
    let reply = {
        let mut inner = shared.lock();
        inner.requests.push(RecordedRequest {
            path: uri.path().to_owned(),
            api_key: api_key.clone(),
            version: version.clone(),
            body: parsed.clone().unwrap_or(Value::Null),
        });
        parsed.as_ref().map(|body| choose_reply(&shared, &mut inner, body))
    };
    let mut request_number = 0;
    shared.requests_seen.send_modify(|seen| {
        *seen += 1;
        request_number = *seen;
    });
    if api_key.is_none_or(|key| key.trim().is_empty()) {
        return error_response(StatusCode::UNAUTHORIZED, "authentication_error", "x-api-key header is required");
    }
    if version.is_none() {
        return error_response(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "anthropic-version header is required",
        );
    }
    let (Some(body), Some(reply)) = (parsed, reply) else {
        return error_response(StatusCode::BAD_REQUEST, "invalid_request_error", "request body is not valid JSON");
    };
    if let Err(message) = validate(&body) {
        return error_response(StatusCode::BAD_REQUEST, "invalid_request_error", &message);
    }
    respond(shared, reply, &body, request_number).await
}

fn choose_reply(shared: &Shared, inner: &mut Inner, body: &Value) -> FakeReply {
    if let (Some(reply), Some(result)) = (&shared.after_tool, first_tool_result(body)) {
        return match reply {
            FakeReply::Text(template) => FakeReply::Text(template.replace("{result}", &result)),
            other => other.clone(),
        };
    }
    inner.script.pop_front().unwrap_or_else(|| shared.fallback.clone())
}

/// The content of the first `tool_result` block of the last message, when it is a user message carrying results.
fn first_tool_result(body: &Value) -> Option<String> {
    let last = body.get("messages")?.as_array()?.last()?;
    let blocks = last.get("content")?.as_array()?;
    let result = blocks.iter().find(|b| b.get("type").and_then(Value::as_str) == Some("tool_result"))?;
    match result.get("content")? {
        Value::String(text) => Some(text.clone()),
        other => Some(other.to_string()),
    }
}

/// The Messages API rules a client is most likely to break.
fn validate(body: &Value) -> Result<(), String> {
    if !body.get("max_tokens").is_some_and(Value::is_u64) {
        return Err("max_tokens: Field required".into());
    }
    let messages = body.get("messages").and_then(Value::as_array).cloned().unwrap_or_default();
    let mut open: Vec<String> = Vec::new();
    for (position, message) in messages.iter().enumerate() {
        let role = message.get("role").and_then(Value::as_str).unwrap_or_default();
        if role != "user" && role != "assistant" {
            return Err(format!("messages.{position}.role: Input should be 'user' or 'assistant'"));
        }
        let blocks = match message.get("content") {
            Some(Value::Array(blocks)) => blocks.clone(),
            Some(Value::String(text)) => vec![json!({"type": "text", "text": text})],
            _ => return Err(format!("messages.{position}.content: Field required")),
        };
        let kinds: Vec<&str> =
            blocks.iter().map(|b| b.get("type").and_then(Value::as_str).unwrap_or_default()).collect();
        if !open.is_empty() {
            let leading: Vec<&str> = blocks
                .iter()
                .take_while(|b| b.get("type").and_then(Value::as_str) == Some("tool_result"))
                .filter_map(|b| b.get("tool_use_id").and_then(Value::as_str))
                .collect();
            open.retain(|id| !leading.contains(&id.as_str()));
            if role != "user" || !open.is_empty() {
                return Err(format!("messages.{position}: `tool_use` ids were found without `tool_result` blocks immediately after: {}. Each `tool_use` block must have a corresponding `tool_result` block in the next message.", open.join(", ")));
            }
        }
        if role == "assistant" {
            for block in blocks.iter().filter(|b| b.get("type").and_then(Value::as_str) == Some("tool_use")) {
                if !block.get("input").is_some_and(Value::is_object) {
                    return Err(format!("messages.{position}.content: tool_use.input: Input should be an object"));
                }
                open.extend(block.get("id").and_then(Value::as_str).map(str::to_owned));
            }
        }
        if kinds
            .iter()
            .zip(blocks.iter())
            .any(|(kind, b)| *kind == "text" && b.get("text").and_then(Value::as_str) == Some(""))
        {
            return Err(format!("messages.{position}: text content blocks must be non-empty"));
        }
    }
    if open.is_empty() {
        Ok(())
    } else {
        Err(format!("`tool_use` ids were found without `tool_result` blocks immediately after: {}", open.join(", ")))
    }
}

fn error_response(status: StatusCode, kind: &str, message: &str) -> Response {
    let body = json!({"type": "error", "error": {"type": kind, "message": message}});
    (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

async fn respond(shared: Arc<Shared>, reply: FakeReply, request: &Value, request_number: usize) -> Response {
    let (reply, interruption) = match reply {
        FakeReply::Interrupted { reply, after_events, close } => (*reply, Some((after_events, close))),
        other => (other, None),
    };
    let events = match reply {
        FakeReply::Http { status, fixture } => {
            let body = shared.lock().fixtures.get(&fixture).cloned().unwrap_or_default();
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return (status, [(header::CONTENT_TYPE, "application/json")], body).into_response();
        }
        FakeReply::Hang => {
            let mut shutdown = shared.shutdown.subscribe();
            let _ = shutdown.wait_for(|stop| *stop).await;
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        }
        FakeReply::Fixture(name) => fixture_events(&shared.lock().fixtures.get(&name).cloned().unwrap_or_default()),
        FakeReply::Text(text) => generated_events(request, request_number, &text, &[]),
        FakeReply::ToolUse { text, calls } => generated_events(request, request_number, &text, &calls),
        FakeReply::Interrupted { .. } => Vec::new(),
    };
    let body = EventBody {
        events: events.into(),
        sent: 0,
        interruption,
        first_delay: shared.first_token_delay,
        inter_delay: shared.inter_token_delay,
        shutdown: shared.shutdown.subscribe(),
        guard: DisconnectGuard { shared: shared.clone(), finished: false },
        ended: false,
    };
    let stream =
        futures_util::stream::unfold(body, |mut body| async move { body.next().await.map(|item| (item, body)) });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream; charset=utf-8")
        .header(header::CACHE_CONTROL, "no-cache")
        .header("request-id", format!("req_fake_{request_number}"))
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// The events of a fixture file: blocks separated by blank lines, each sent as is.
fn fixture_events(text: &str) -> Vec<String> {
    text.replace("\r\n", "\n").split("\n\n").map(str::trim).filter(|b| !b.is_empty()).map(str::to_owned).collect()
}

/// Counts a stream as abandoned by the client when it is dropped before it was finished.
struct DisconnectGuard {
    shared: Arc<Shared>,
    finished: bool,
}

impl Drop for DisconnectGuard {
    fn drop(&mut self) {
        if !self.finished {
            self.shared.disconnects.send_modify(|count| *count += 1);
        }
    }
}

/// The response body: events paced by the configured delays, possibly interrupted.
struct EventBody {
    events: VecDeque<String>,
    sent: usize,
    /// After how many events, and whether to cut (true) or stall (false).
    interruption: Option<(usize, bool)>,
    first_delay: Duration,
    inter_delay: Duration,
    shutdown: watch::Receiver<bool>,
    guard: DisconnectGuard,
    ended: bool,
}

impl EventBody {
    async fn next(&mut self) -> Option<Result<Bytes, std::io::Error>> {
        if self.ended {
            return None;
        }
        if let Some((after, close)) = self.interruption {
            if self.sent >= after {
                self.ended = true;
                if close {
                    // Let the server flush what was sent so far, then cut.
                    tokio::task::yield_now().await;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    self.guard.finished = true;
                    return Some(Err(std::io::Error::new(std::io::ErrorKind::ConnectionAborted, "fake: cut")));
                }
                // Ends only when the fake shuts down; a client that goes away drops this body (counted by the guard).
                let _ = self.shutdown.wait_for(|stop| *stop).await;
                self.guard.finished = true;
                return None;
            }
        }
        let Some(event) = self.events.pop_front() else {
            self.ended = true;
            self.guard.finished = true;
            return None;
        };
        let delay = if self.sent == 0 { self.first_delay } else { self.inter_delay };
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        self.sent += 1;
        if self.events.is_empty() && self.interruption.is_none() {
            self.guard.finished = true;
        }
        Some(Ok(Bytes::from(format!("{event}\n\n"))))
    }
}

fn event(data: Value) -> String {
    let kind = data.get("type").and_then(Value::as_str).unwrap_or("unknown").to_owned();
    format!("event: {kind}\ndata: {data}")
}

/// A generated reply in the documented event shape: text block, `tool_use` blocks, `message_delta`, `message_stop`.
fn generated_events(request: &Value, request_number: usize, text: &str, calls: &[FakeToolUse]) -> Vec<String> {
    let model = request.get("model").and_then(Value::as_str).unwrap_or("claude-sonnet-4-5");
    let input_tokens = request.get("messages").map(|m| m.to_string().len() / 4).unwrap_or(0);
    let mut events = vec![event(json!({"type": "message_start", "message": {
        "id": format!("msg_fake_{request_number}"), "type": "message", "role": "assistant", "content": [],
        "model": model, "stop_reason": null, "stop_sequence": null,
        "usage": {"input_tokens": input_tokens, "output_tokens": 1}}}))];
    let mut index = 0;
    let mut output_tokens = 1;
    if !text.is_empty() {
        events.push(event(
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ));
        for piece in token_pieces(text) {
            output_tokens += 1;
            events.push(event(json!({"type": "content_block_delta", "index": 0,
                                     "delta": {"type": "text_delta", "text": piece}})));
        }
        events.push(event(json!({"type": "content_block_stop", "index": 0})));
        index += 1;
    }
    for call in calls {
        events.push(event(json!({"type": "content_block_start", "index": index,
            "content_block": {"type": "tool_use", "id": call.id, "name": call.name, "input": {}}})));
        let chars: Vec<char> = call.input.chars().collect();
        for piece in chars.chunks(8) {
            output_tokens += 1;
            let piece: String = piece.iter().collect();
            events.push(event(json!({"type": "content_block_delta", "index": index,
                                     "delta": {"type": "input_json_delta", "partial_json": piece}})));
        }
        events.push(event(json!({"type": "content_block_stop", "index": index})));
        index += 1;
    }
    let reason = if calls.is_empty() { "end_turn" } else { "tool_use" };
    events.push(event(json!({"type": "message_delta", "delta": {"stop_reason": reason, "stop_sequence": null},
                             "usage": {"output_tokens": output_tokens}})));
    events.push(event(json!({"type": "message_stop"})));
    events
}
