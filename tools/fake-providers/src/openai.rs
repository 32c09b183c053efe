//! Fake OpenAI Chat Completions server.
//!
//! A real HTTP server on 127.0.0.1 (ephemeral port) answering `POST /v1/chat/completions` (and
//! `/chat/completions`, so a base URL with or without `/v1` works) with a `text/event-stream` body: either replayed
//! from `proto-fixtures/openai/*.sse` or generated from a string in the documented chunk shape. Replies come from
//! rules ("if the last user message contains X"), then an ordered script, then a fallback. Timing is configurable
//! (first token, between tokens) so latency can be measured, and faults can be injected: HTTP errors with OpenAI's
//! error body, a server that never answers, a stream that stalls or is cut mid-way.
//!
//! Every request body is recorded, so tests can assert the conversation Parley sent (e.g. a truncated assistant
//! message after barge-in), and every stream the client abandoned is counted, so tests can assert that cancellation
//! reached the server. Like OpenAI, the fake rejects a history in which an assistant tool call is left unanswered.
//! The server stops when the [`FakeOpenAi`] handle is dropped.
//!
//! Usage is reported as OpenAI reports it, prompt caching included: the fake counts a prompt at four bytes of JSON a
//! token, remembers the prompts it has seen, and reports the longest prefix shared with one of them as
//! `prompt_tokens_details.cached_tokens` (from 1,024 tokens, in steps of 128, as OpenAI does). With
//! [`FakeOpenAiOptions::prefill`] the first token waits in proportion to the uncached tokens, so a benchmark can see
//! what a long, uncached prompt costs in time to first token.

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

/// Errors starting or feeding the fake.
#[derive(Debug, thiserror::Error)]
pub enum FakeOpenAiError {
    #[error("fixture {name}: {detail}")]
    Fixture { name: String, detail: String },
    #[error("could not bind the fake OpenAI server: {0}")]
    Bind(#[from] std::io::Error),
}

/// One scripted answer to a request.
#[derive(Debug, Clone, PartialEq)]
pub enum FakeReply {
    /// Replay a fixture file from the fixtures directory (e.g. `"tool_call_fragmented.sse"`), event by event.
    Fixture(String),
    /// Stream this text as a reply, split into token-sized deltas (role chunk, deltas, `stop`, usage if asked, DONE).
    Text(String),
    /// Stream optional text, then these calls with their arguments fragmented, finishing with `tool_calls`.
    ToolCalls { text: String, calls: Vec<FakeToolCall> },
    /// Answer with this HTTP status and the JSON body of a fixture file (e.g. `"http_429.json"`), before streaming.
    Http { status: u16, fixture: String },
    /// Accept the request and never answer it (not even headers).
    Hang,
    /// Send the first `after_events` events of `reply`, then stall or cut the connection.
    Interrupted { reply: Box<FakeReply>, after_events: usize, how: Interruption },
}

/// How an [`FakeReply::Interrupted`] stream ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interruption {
    /// Stop sending but keep the connection open (until the client goes away or the fake shuts down).
    Stall,
    /// Abort the connection without finishing the chunked body.
    Close,
}

/// A tool call for [`FakeReply::ToolCalls`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeToolCall {
    pub id: String,
    pub name: String,
    /// Raw arguments text, sent in fragments; need not be valid JSON.
    pub arguments: String,
}

impl FakeReply {
    /// Replay `proto-fixtures/openai/<name>`.
    pub fn fixture(name: impl Into<String>) -> Self {
        FakeReply::Fixture(name.into())
    }
    /// A streamed text reply.
    pub fn text(text: impl Into<String>) -> Self {
        FakeReply::Text(text.into())
    }
    /// A reply made of one tool call.
    pub fn tool_call(id: impl Into<String>, name: impl Into<String>, arguments: impl Into<String>) -> Self {
        let call = FakeToolCall { id: id.into(), name: name.into(), arguments: arguments.into() };
        FakeReply::ToolCalls { text: String::new(), calls: vec![call] }
    }
    /// HTTP 500 with OpenAI's server error body.
    pub fn http_500() -> Self {
        FakeReply::Http { status: 500, fixture: "http_500.json".into() }
    }
    /// HTTP 429 with OpenAI's rate limit body and a `retry-after` header.
    pub fn rate_limited() -> Self {
        FakeReply::Http { status: 429, fixture: "http_429.json".into() }
    }
    /// Never answer.
    pub fn hang() -> Self {
        FakeReply::Hang
    }
    /// This reply's first `events` events, then silence with the connection open.
    pub fn stall_after(self, events: usize) -> Self {
        FakeReply::Interrupted { reply: Box::new(self), after_events: events, how: Interruption::Stall }
    }
    /// This reply's first `events` events, then the connection is cut.
    pub fn close_after(self, events: usize) -> Self {
        FakeReply::Interrupted { reply: Box::new(self), after_events: events, how: Interruption::Close }
    }

    fn fixture_names(&self) -> Vec<&str> {
        match self {
            FakeReply::Fixture(name) | FakeReply::Http { fixture: name, .. } => vec![name.as_str()],
            FakeReply::Interrupted { reply, .. } => reply.fixture_names(),
            FakeReply::Text(_) | FakeReply::ToolCalls { .. } | FakeReply::Hang => Vec::new(),
        }
    }
}

/// "If the last user message contains `last_user_contains`, answer with `reply`" (rules are not consumed).
#[derive(Debug, Clone, PartialEq)]
pub struct FakeRule {
    pub last_user_contains: String,
    pub reply: FakeReply,
}

/// How the fake behaves.
#[derive(Debug, Clone)]
pub struct FakeOpenAiOptions {
    /// Replies used in order, one per request not matched by a rule.
    pub script: Vec<FakeReply>,
    /// Checked first, in order, against the last user message.
    pub rules: Vec<FakeRule>,
    /// Used when no rule matches and the script is used up.
    pub fallback: FakeReply,
    /// Answers a request whose last message is a tool result (checked before the rules); `{result}` in a text
    /// reply is replaced by that result, the way a model reads a tool's answer back to the caller.
    pub after_tool: Option<FakeReply>,
    /// Delay before the first event of a stream (time to first token).
    pub first_token_delay: Duration,
    /// Delay before each later event.
    pub inter_token_delay: Duration,
    /// Added to the first-token delay per prompt token not read from the prefix cache: the prefill time real
    /// servers spend on a prompt, roughly in proportion to its uncached length.
    pub prefill_per_token: Duration,
    /// Report (and charge) cached prefixes; off, every prompt token counts as new.
    pub prompt_cache: bool,
    /// Reject (400, as OpenAI does) a history where an assistant tool call is not answered by a tool message.
    pub validate_tool_rounds: bool,
    /// Where fixture files are read from.
    pub fixtures_dir: PathBuf,
}

impl Default for FakeOpenAiOptions {
    fn default() -> Self {
        FakeOpenAiOptions {
            script: Vec::new(),
            rules: Vec::new(),
            fallback: FakeReply::text("Okay."),
            after_tool: None,
            first_token_delay: Duration::from_millis(300),
            inter_token_delay: Duration::from_millis(15),
            prefill_per_token: Duration::ZERO,
            prompt_cache: true,
            validate_tool_rounds: true,
            fixtures_dir: default_fixtures_dir(),
        }
    }
}

impl FakeOpenAiOptions {
    /// Appends a reply to the script.
    pub fn reply(mut self, reply: FakeReply) -> Self {
        self.script.push(reply);
        self
    }
    /// Adds a rule.
    pub fn rule(mut self, last_user_contains: impl Into<String>, reply: FakeReply) -> Self {
        self.rules.push(FakeRule { last_user_contains: last_user_contains.into(), reply });
        self
    }
    /// Sets the fallback reply.
    pub fn after_tool(mut self, reply: FakeReply) -> Self {
        self.after_tool = Some(reply);
        self
    }

    pub fn fallback(mut self, reply: FakeReply) -> Self {
        self.fallback = reply;
        self
    }
    /// Sets both delays.
    pub fn delays(mut self, first_token: Duration, inter_token: Duration) -> Self {
        self.first_token_delay = first_token;
        self.inter_token_delay = inter_token;
        self
    }
    /// Charges `per_token` of first-token time for every uncached prompt token.
    pub fn prefill(mut self, per_token: Duration) -> Self {
        self.prefill_per_token = per_token;
        self
    }
    /// No delays at all (fast functional tests).
    pub fn no_delays(self) -> Self {
        self.delays(Duration::ZERO, Duration::ZERO)
    }
}

/// `proto-fixtures/openai` of this workspace.
pub fn default_fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto-fixtures/openai")
}

/// One request the fake received.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedRequest {
    pub path: String,
    /// The `Authorization` header, if sent.
    pub authorization: Option<String>,
    /// The JSON body (`Value::Null` if it was not JSON).
    pub body: Value,
}

impl RecordedRequest {
    /// The `messages` array of the body.
    pub fn messages(&self) -> Vec<Value> {
        self.body.get("messages").and_then(Value::as_array).cloned().unwrap_or_default()
    }

    /// Content of the last `user` message.
    pub fn last_user_message(&self) -> Option<String> {
        last_user_text(&self.body)
    }
}

/// A running fake. Dropping it stops the server.
#[derive(Debug)]
pub struct FakeOpenAi {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

#[derive(Debug)]
struct Shared {
    inner: Mutex<Inner>,
    fixtures_dir: PathBuf,
    rules: Vec<FakeRule>,
    fallback: FakeReply,
    after_tool: Option<FakeReply>,
    first_token_delay: Duration,
    inter_token_delay: Duration,
    prefill_per_token: Duration,
    prompt_cache: bool,
    validate_tool_rounds: bool,
    requests_seen: watch::Sender<usize>,
    disconnects: watch::Sender<usize>,
    shutdown: watch::Sender<bool>,
}

#[derive(Debug, Default)]
struct Inner {
    script: VecDeque<FakeReply>,
    fixtures: HashMap<String, String>,
    requests: Vec<RecordedRequest>,
    /// Prompts seen, for the prefix cache (the newest last).
    prompts: VecDeque<String>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Starts a fake on 127.0.0.1 with an ephemeral port. Every fixture the options mention is loaded (and checked) now.
pub async fn start(options: FakeOpenAiOptions) -> Result<FakeOpenAi, FakeOpenAiError> {
    let mut fixtures = HashMap::new();
    let all = options.script.iter().chain(options.rules.iter().map(|r| &r.reply)).chain([&options.fallback]);
    for reply in all {
        load_fixtures(&options.fixtures_dir, reply, &mut fixtures)?;
    }
    let shared = Arc::new(Shared {
        inner: Mutex::new(Inner {
            script: options.script.into(),
            fixtures,
            requests: Vec::new(),
            prompts: VecDeque::new(),
        }),
        fixtures_dir: options.fixtures_dir,
        rules: options.rules,
        fallback: options.fallback,
        after_tool: options.after_tool,
        first_token_delay: options.first_token_delay,
        inter_token_delay: options.inter_token_delay,
        prefill_per_token: options.prefill_per_token,
        prompt_cache: options.prompt_cache,
        validate_tool_rounds: options.validate_tool_rounds,
        requests_seen: watch::Sender::new(0),
        disconnects: watch::Sender::new(0),
        shutdown: watch::Sender::new(false),
    });
    let router = Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/chat/completions", post(chat_completions))
        .with_state(shared.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, router).await {
            tracing::warn!(%error, "fake OpenAI server stopped");
        }
    });
    Ok(FakeOpenAi { addr, shared, task })
}

impl FakeOpenAi {
    /// The API root to configure the client with: `http://127.0.0.1:<port>/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Appends a reply to the script while running (its fixtures are loaded now).
    pub fn enqueue(&self, reply: FakeReply) -> Result<(), FakeOpenAiError> {
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

impl Drop for FakeOpenAi {
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

fn load_fixtures(dir: &Path, reply: &FakeReply, into: &mut HashMap<String, String>) -> Result<(), FakeOpenAiError> {
    for name in reply.fixture_names() {
        if into.contains_key(name) {
            continue;
        }
        let text = std::fs::read_to_string(dir.join(name))
            .map_err(|error| FakeOpenAiError::Fixture { name: name.to_owned(), detail: error.to_string() })?;
        into.insert(name.to_owned(), text);
    }
    Ok(())
}

async fn chat_completions(
    State(shared): State<Arc<Shared>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let parsed: Option<Value> = serde_json::from_slice(&body).ok();
    let (reply, prompt) = {
        let mut inner = shared.lock();
        let mut prompt = parsed.as_ref().map(|body| prompt_usage(&mut inner.prompts, body)).unwrap_or_default();
        if !shared.prompt_cache {
            prompt.cached = 0;
        }
        inner.requests.push(RecordedRequest {
            path: uri.path().to_owned(),
            authorization: headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).map(str::to_owned),
            body: parsed.clone().unwrap_or(Value::Null),
        });
        (parsed.as_ref().map(|body| choose_reply(&shared, &mut inner, body)), prompt)
    };
    let request_number = {
        let mut number = 0;
        shared.requests_seen.send_modify(|seen| {
            *seen += 1;
            number = *seen;
        });
        number
    };
    let (Some(body), Some(reply)) = (parsed, reply) else {
        return error_response(StatusCode::BAD_REQUEST, "We could not parse the JSON body of your request.");
    };
    if shared.validate_tool_rounds {
        if let Err(message) = check_tool_rounds(&body) {
            return error_response(StatusCode::BAD_REQUEST, &message);
        }
    }
    respond(shared, reply, &body, request_number, prompt).await
}

/// Tokens per byte of prompt JSON the fake counts (a rough tokenizer: four bytes a token).
const BYTES_PER_TOKEN: usize = 4;
/// Like OpenAI's automatic prompt caching: prefixes from 1,024 tokens on, in steps of 128.
const CACHE_MIN_TOKENS: usize = 1_024;
const CACHE_STEP_TOKENS: usize = 128;
/// Prompts the prefix cache remembers.
const CACHED_PROMPTS: usize = 32;

/// A request's prompt tokens and how many of them the prefix cache held.
#[derive(Debug, Clone, Copy, Default)]
struct PromptUsage {
    tokens: usize,
    cached: usize,
}

/// Counts the prompt (tools, then messages, as the server would render them) and looks its longest prefix up
/// among the prompts seen before; then remembers it.
fn prompt_usage(prompts: &mut VecDeque<String>, body: &Value) -> PromptUsage {
    let mut prompt = body.get("tools").map(Value::to_string).unwrap_or_default();
    for message in body.get("messages").and_then(Value::as_array).into_iter().flatten() {
        prompt.push_str(&message.to_string());
    }
    let common = prompts.iter().map(|seen| common_prefix(seen, &prompt)).max().unwrap_or(0) / BYTES_PER_TOKEN;
    let cached = if common >= CACHE_MIN_TOKENS { common / CACHE_STEP_TOKENS * CACHE_STEP_TOKENS } else { 0 };
    let tokens = prompt.len() / BYTES_PER_TOKEN;
    if prompts.len() == CACHED_PROMPTS {
        prompts.pop_front();
    }
    prompts.push_back(prompt);
    PromptUsage { tokens, cached }
}

fn common_prefix(a: &str, b: &str) -> usize {
    a.bytes().zip(b.bytes()).take_while(|(x, y)| x == y).count()
}

fn choose_reply(shared: &Shared, inner: &mut Inner, body: &Value) -> FakeReply {
    if let (Some(reply), Some(result)) = (&shared.after_tool, last_tool_result(body)) {
        return match reply {
            FakeReply::Text(template) => FakeReply::Text(template.replace("{result}", &result)),
            other => other.clone(),
        };
    }
    let last_user = last_user_text(body).unwrap_or_default();
    if let Some(rule) = shared.rules.iter().find(|rule| last_user.contains(&rule.last_user_contains)) {
        return rule.reply.clone();
    }
    inner.script.pop_front().unwrap_or_else(|| shared.fallback.clone())
}

/// The content of the last message when it is a tool result.
fn last_tool_result(body: &Value) -> Option<String> {
    let last = body.get("messages")?.as_array()?.last()?;
    if last.get("role").and_then(Value::as_str) != Some("tool") {
        return None;
    }
    last.get("content").and_then(Value::as_str).map(str::to_owned)
}

fn last_user_text(body: &Value) -> Option<String> {
    let messages = body.get("messages")?.as_array()?;
    let last = messages.iter().rev().find(|m| m.get("role").and_then(Value::as_str) == Some("user"))?;
    match last.get("content")? {
        Value::String(text) => Some(text.clone()),
        // Content parts: join the text parts.
        Value::Array(parts) => Some(parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect()),
        _ => None,
    }
}

/// OpenAI's rules for tool rounds: each assistant `tool_calls` id answered by a following `tool` message, no `tool`
/// message without a call before it, and `arguments` always a string.
fn check_tool_rounds(body: &Value) -> Result<(), String> {
    let messages = body.get("messages").and_then(Value::as_array).cloned().unwrap_or_default();
    let mut open: Vec<String> = Vec::new();
    let mut in_round = false;
    for (position, message) in messages.iter().enumerate() {
        let role = message.get("role").and_then(Value::as_str).unwrap_or_default();
        if role == "tool" {
            let id = message.get("tool_call_id").and_then(Value::as_str).unwrap_or_default();
            if !in_round {
                return Err(format!("Invalid parameter: messages with role 'tool' must be a response to a preceeding message with 'tool_calls'. (messages.[{position}])"));
            }
            open.retain(|open_id| open_id != id);
            continue;
        }
        unanswered(&open)?;
        in_round = false;
        let calls = message.get("tool_calls").and_then(Value::as_array).cloned().unwrap_or_default();
        if role == "assistant" && !calls.is_empty() {
            for call in &calls {
                if !call.pointer("/function/arguments").is_some_and(Value::is_string) {
                    return Err(format!(
                        "Invalid type for 'messages.[{position}].tool_calls.function.arguments': expected a string."
                    ));
                }
            }
            open = calls.iter().filter_map(|c| c.get("id").and_then(Value::as_str)).map(str::to_owned).collect();
            in_round = true;
        }
    }
    unanswered(&open)
}

fn unanswered(open: &[String]) -> Result<(), String> {
    if open.is_empty() {
        return Ok(());
    }
    Err(format!(
        "An assistant message with 'tool_calls' must be followed by tool messages responding to each 'tool_call_id'. The following tool_call_ids did not have response messages: {}",
        open.join(", ")
    ))
}

fn error_response(status: StatusCode, message: &str) -> Response {
    let body = json!({"error": {"message": message, "type": "invalid_request_error", "param": null, "code": null}});
    (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

async fn respond(
    shared: Arc<Shared>,
    reply: FakeReply,
    request: &Value,
    request_number: usize,
    prompt: PromptUsage,
) -> Response {
    let (reply, interruption) = match reply {
        FakeReply::Interrupted { reply, after_events, how } => (*reply, Some((after_events, how))),
        other => (other, None),
    };
    let events = match reply {
        FakeReply::Http { status, fixture } => return http_reply(&shared, status, &fixture),
        FakeReply::Hang => {
            let mut shutdown = shared.shutdown.subscribe();
            let _ = shutdown.wait_for(|stop| *stop).await;
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        }
        FakeReply::Fixture(name) => fixture_events(&shared.lock().fixtures.get(&name).cloned().unwrap_or_default()),
        FakeReply::Text(text) => generated_events(request, request_number, &text, &[], prompt),
        FakeReply::ToolCalls { text, calls } => generated_events(request, request_number, &text, &calls, prompt),
        FakeReply::Interrupted { .. } => Vec::new(), // nested interruptions: nothing sensible to send
    };
    let body = EventBody {
        events: events.into(),
        sent: 0,
        interruption,
        first_delay: shared.first_token_delay + shared.prefill_per_token * (prompt.tokens - prompt.cached) as u32,
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
        .header("x-request-id", format!("req_fake_{request_number}"))
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

fn http_reply(shared: &Shared, status: u16, fixture: &str) -> Response {
    let body = shared.lock().fixtures.get(fixture).cloned().unwrap_or_default();
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, [(header::CONTENT_TYPE, "application/json")], body).into_response();
    if status == StatusCode::TOO_MANY_REQUESTS {
        response.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from_static("20"));
    }
    response
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
    interruption: Option<(usize, Interruption)>,
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
        if let Some((after, how)) = self.interruption {
            if self.sent >= after {
                self.ended = true;
                return self.interrupt(how).await;
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
            // Everything was handed over: a client leaving now is not abandoning the stream.
            self.guard.finished = true;
        }
        Some(Ok(Bytes::from(format!("{event}\n\n"))))
    }

    async fn interrupt(&mut self, how: Interruption) -> Option<Result<Bytes, std::io::Error>> {
        match how {
            Interruption::Stall => {
                // Ends only when the fake shuts down; a client that goes away drops this body (counted by the guard).
                let _ = self.shutdown.wait_for(|stop| *stop).await;
                self.guard.finished = true;
                None
            }
            Interruption::Close => {
                // Let the server flush what was sent so far (it flushes when the body is pending), then cut.
                tokio::task::yield_now().await;
                tokio::time::sleep(Duration::from_millis(20)).await;
                self.guard.finished = true;
                Some(Err(std::io::Error::new(std::io::ErrorKind::ConnectionAborted, "fake: connection cut mid-stream")))
            }
        }
    }
}

/// A generated reply in OpenAI's chunk shape: optional text deltas, fragmented tool calls, finish, usage, DONE.
fn generated_events(
    request: &Value,
    request_number: usize,
    text: &str,
    calls: &[FakeToolCall],
    prompt: PromptUsage,
) -> Vec<String> {
    let include_usage = request.pointer("/stream_options/include_usage").and_then(Value::as_bool).unwrap_or(false);
    let model = request.get("model").and_then(Value::as_str).unwrap_or("gpt-4o-mini");
    let chunk = ChunkMaker { id: format!("chatcmpl-fake-{request_number}"), model: model.to_owned(), include_usage };
    let mut events = vec![chunk.choice(json!({"role": "assistant", "content": ""}), None)];
    let pieces = token_pieces(text);
    let mut completion_tokens = pieces.len();
    events.extend(pieces.into_iter().map(|piece| chunk.choice(json!({ "content": piece }), None)));
    for (index, call) in calls.iter().enumerate() {
        let head = json!({"index": index, "id": call.id, "type": "function",
                          "function": {"name": call.name, "arguments": ""}});
        events.push(chunk.choice(json!({ "tool_calls": [head] }), None));
        for piece in argument_pieces(&call.arguments) {
            completion_tokens += 1;
            let fragment = json!({"index": index, "function": {"arguments": piece}});
            events.push(chunk.choice(json!({ "tool_calls": [fragment] }), None));
        }
    }
    let reason = if calls.is_empty() { "stop" } else { "tool_calls" };
    events.push(chunk.choice(json!({}), Some(reason)));
    if include_usage {
        events.push(chunk.usage(prompt, completion_tokens));
    }
    events.push("data: [DONE]".to_owned());
    events
}

struct ChunkMaker {
    id: String,
    model: String,
    include_usage: bool,
}

impl ChunkMaker {
    fn envelope(&self, choices: Value) -> serde_json::Map<String, Value> {
        let mut chunk = serde_json::Map::new();
        chunk.insert("id".into(), json!(self.id));
        chunk.insert("object".into(), json!("chat.completion.chunk"));
        chunk.insert("created".into(), json!(1_739_386_209));
        chunk.insert("model".into(), json!(self.model));
        chunk.insert("choices".into(), choices);
        chunk
    }

    fn choice(&self, delta: Value, finish_reason: Option<&str>) -> String {
        let choice = json!([{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason}]);
        let mut chunk = self.envelope(choice);
        if self.include_usage {
            chunk.insert("usage".into(), Value::Null);
        }
        format!("data: {}", Value::Object(chunk))
    }

    fn usage(&self, prompt: PromptUsage, completion_tokens: usize) -> String {
        let mut chunk = self.envelope(json!([]));
        chunk.insert(
            "usage".into(),
            json!({"prompt_tokens": prompt.tokens, "completion_tokens": completion_tokens,
                   "total_tokens": prompt.tokens + completion_tokens,
                   "prompt_tokens_details": {"cached_tokens": prompt.cached}}),
        );
        format!("data: {}", Value::Object(chunk))
    }
}

/// Splits text the way a tokenizer roughly would: words with their leading space, punctuation on its own.
pub fn token_pieces(text: &str) -> Vec<String> {
    let mut pieces: Vec<String> = Vec::new();
    let mut current = String::new();
    let mut previous: Option<char> = None;
    for c in text.chars() {
        let starts_piece = match previous {
            None => false,
            Some(p) => {
                (c.is_whitespace() && !p.is_whitespace()) || c.is_ascii_punctuation() || p.is_ascii_punctuation()
            }
        };
        if starts_piece && !current.is_empty() {
            pieces.push(std::mem::take(&mut current));
        }
        current.push(c);
        previous = Some(c);
    }
    if !current.is_empty() {
        pieces.push(current);
    }
    pieces
}

/// Arguments in small fragments, as OpenAI streams them.
fn argument_pieces(arguments: &str) -> Vec<String> {
    let chars: Vec<char> = arguments.chars().collect();
    chars.chunks(8).map(|piece| piece.iter().collect()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_pieces_keep_all_text() {
        let text = "Your order 456 shipped, and arrives Friday.";
        let pieces = token_pieces(text);
        assert_eq!(pieces.concat(), text);
        assert_eq!(pieces[..3], ["Your", " order", " 456"]);
        assert!(pieces.contains(&",".to_owned()) && pieces.contains(&".".to_owned()), "{pieces:?}");
        assert!(token_pieces("").is_empty());
    }

    #[test]
    fn a_repeated_prefix_is_reported_cached_like_openai_does() {
        let mut prompts = VecDeque::new();
        let long = "x".repeat(6_000);
        let first = json!({"messages": [{"role": "system", "content": long}, {"role": "user", "content": "Hi"}]});
        let second = json!({"messages": [{"role": "system", "content": long}, {"role": "user", "content": "Hi"},
                                         {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Bye"}]});
        let cold = prompt_usage(&mut prompts, &first);
        assert_eq!(cold.cached, 0);
        let warm = prompt_usage(&mut prompts, &second);
        assert!(warm.tokens > cold.tokens);
        assert!(warm.cached >= CACHE_MIN_TOKENS && warm.cached <= cold.tokens, "{warm:?}");
        assert_eq!(warm.cached % CACHE_STEP_TOKENS, 0);
        let short = json!({"messages": [{"role": "user", "content": "Hi"}]});
        prompt_usage(&mut prompts, &short);
        assert_eq!(prompt_usage(&mut prompts, &short).cached, 0, "prefixes under 1,024 tokens are not cached");
    }

    #[test]
    fn generated_reply_has_the_documented_shape() {
        let request = json!({"model": "m", "stream_options": {"include_usage": true}, "messages": []});
        let calls =
            [FakeToolCall { id: "call_1".into(), name: "f".into(), arguments: "{\"order_id\":\"456\"}".into() }];
        let events = generated_events(&request, 3, "Hi.", &calls, PromptUsage { tokens: 40, cached: 0 });
        assert_eq!(events.last().map(String::as_str), Some("data: [DONE]"));
        let chunks: Vec<Value> = events
            .iter()
            .filter_map(|e| e.strip_prefix("data: "))
            .filter_map(|d| serde_json::from_str(d).ok())
            .collect();
        assert_eq!(chunks.len(), events.len() - 1);
        let usage = &chunks[chunks.len() - 1];
        assert_eq!(usage["choices"], json!([]));
        assert!(usage["usage"]["completion_tokens"].as_u64().is_some());
        assert_eq!(chunks[chunks.len() - 2]["choices"][0]["finish_reason"], json!("tool_calls"));
        let args: String = chunks
            .iter()
            .filter_map(|c| c.pointer("/choices/0/delta/tool_calls/0/function/arguments").and_then(Value::as_str))
            .collect();
        assert_eq!(args, "{\"order_id\":\"456\"}");
    }

    #[test]
    fn tool_round_validation_follows_openai() {
        let answered = json!({"messages": [
            {"role": "user", "content": "x"},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "a", "type": "function", "function": {"name": "f", "arguments": "{}"}},
                {"id": "b", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "b", "content": "ok"},
            {"role": "tool", "tool_call_id": "a", "content": "ok"},
            {"role": "user", "content": "y"}]});
        assert_eq!(check_tool_rounds(&answered), Ok(()));

        let mut missing = answered.clone();
        if let Some(messages) = missing["messages"].as_array_mut() {
            messages.remove(3);
        }
        assert!(check_tool_rounds(&missing).is_err_and(|e| e.contains("did not have response messages: a")));

        let orphan = json!({"messages": [{"role": "tool", "tool_call_id": "a", "content": "ok"}]});
        assert!(check_tool_rounds(&orphan).is_err());

        let object_args = json!({"messages": [{"role": "assistant", "tool_calls": [
            {"id": "a", "type": "function", "function": {"name": "f", "arguments": {}}}]},
            {"role": "tool", "tool_call_id": "a", "content": "ok"}]});
        assert!(check_tool_rounds(&object_args).is_err());
    }

    #[test]
    fn fixture_events_split_on_blank_lines() {
        let events = fixture_events("data: {\"a\":1}\r\n\r\ndata: [DONE]\n\n\n");
        assert_eq!(events, vec!["data: {\"a\":1}", "data: [DONE]"]);
    }

    #[test]
    fn every_shipped_fixture_is_well_formed() {
        let dir = default_fixtures_dir();
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .map(|d| d.filter_map(Result::ok).filter_map(|e| e.file_name().into_string().ok()).collect())
            .unwrap_or_default();
        names.retain(|name| name.ends_with(".sse") || name.ends_with(".json"));
        assert!(names.len() >= 10, "fixtures missing in {}: {names:?}", dir.display());
        let mut loaded = HashMap::new();
        for name in &names {
            let reply = FakeReply::fixture(name.clone());
            assert!(load_fixtures(&dir, &reply, &mut loaded).is_ok(), "{name}");
            let text = loaded.get(name).cloned().unwrap_or_default();
            if name.ends_with(".json") {
                assert!(
                    serde_json::from_str::<Value>(&text).is_ok_and(|v| v["error"]["message"].is_string()),
                    "{name}"
                );
                continue;
            }
            let events = fixture_events(&text);
            assert!(!events.is_empty(), "{name}");
            for event in events {
                let data = event.strip_prefix("data: ").unwrap_or_default();
                assert!(data == "[DONE]" || serde_json::from_str::<Value>(data).is_ok(), "{name}: {event}");
            }
        }
        assert!(load_fixtures(&dir, &FakeReply::fixture("nope.sse"), &mut loaded).is_err());
    }
}
