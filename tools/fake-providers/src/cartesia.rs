//! Fake Cartesia TTS WebSocket (`/tts/websocket`) server.
//!
//! A real WebSocket server on 127.0.0.1 that speaks Cartesia's context protocol: for each context it waits
//! `first_audio_delay` (plus, for a context that is still taking text, the documented server-side text buffer:
//! `max_buffer_delay_ms`, 3000 ms when the request leaves it out, 0–5000 accepted), then streams base64 μ-law chunks of a quiet tone whose length is proportional to the text
//! received (`ms_per_char`), and sends `done` once the context got `continue: false` and all its audio is out.
//! `cancel` stops a context (optionally followed by one deliberately late chunk, to prove clients drop it). Everything
//! it receives is recorded for assertions, and faults (handshake rejection, error for a context in either error shape,
//! dropped connection) can be injected.
//!
//! Messages are built from the documented examples in `proto-fixtures/cartesia/`.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use base64::Engine as _;
use serde_json::{json, Value};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tokio::time::{sleep_until, Instant};

use crate::deepgram::mulaw_encode;

/// Cartesia's server-side text buffer when a request does not set `max_buffer_delay_ms`.
const DEFAULT_BUFFER_DELAY_MS: u64 = 3000;
/// The largest `max_buffer_delay_ms` Cartesia accepts.
const MAX_BUFFER_DELAY_MS: u64 = 5000;

const CHUNK: &str = include_str!("../../../proto-fixtures/cartesia/chunk.json");
const DONE: &str = include_str!("../../../proto-fixtures/cartesia/done.json");
const ERROR: &str = include_str!("../../../proto-fixtures/cartesia/error.json");
const ERROR_LEGACY: &str = include_str!("../../../proto-fixtures/cartesia/error_legacy.json");

/// μ-law bytes per millisecond of 8 kHz mono audio.
const BYTES_PER_MS: usize = 8;

/// Every byte of the deliberately late chunk sent after a cancel, so a test can spot it if a client leaks it.
pub const LATE_CHUNK_BYTE: u8 = 0x55;

// ---------------------------------------------------------------------------------------------------------------
// Options and records
// ---------------------------------------------------------------------------------------------------------------

/// Which documented error shape the fake sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ErrorShape {
    /// `title`, `message`, `error_code` (current API versions).
    #[default]
    Current,
    /// A single `error` string (older API versions).
    Legacy,
}

/// How the fake behaves.
#[derive(Debug, Clone)]
pub struct FakeCartesiaOptions {
    /// Wait between a context's first request and its first chunk (time to first audio).
    pub first_audio_delay: Duration,
    /// Milliseconds of audio produced per character of transcript.
    pub ms_per_char: u32,
    /// Milliseconds of audio per chunk.
    pub chunk_ms: u32,
    /// Wall-clock gap between chunks of one context (generation runs faster than real time).
    pub chunk_interval: Duration,
    /// After a cancel, still send one chunk (every byte [`LATE_CHUNK_BYTE`]) and a `done` for the cancelled context,
    /// as in-flight audio would arrive.
    pub late_chunk_after_cancel: bool,
    /// Answer this context with an error message instead of audio.
    pub fail_context: Option<String>,
    /// The shape of that error message (the fake always adds the `context_id`).
    pub error_shape: ErrorShape,
    /// Refuse the WebSocket upgrade with this HTTP status (e.g. 401).
    pub reject_handshake: Option<u16>,
    /// Drop the TCP connection, without a close frame, right after sending this many messages.
    pub drop_after_messages: Option<usize>,
    /// Connection faults (`drop_after_messages`) hit only the first this many connections (`None`: every one), so
    /// a client's reconnect can be shown to work.
    pub faulty_connections: Option<usize>,
    /// Record every request received and message sent in the [`ConnectionRecord`]s. On for tests; a load run turns
    /// it off so the records of a thousand calls neither cost the fake time nor grow without bound.
    pub record: bool,
}

impl Default for FakeCartesiaOptions {
    fn default() -> Self {
        Self {
            first_audio_delay: Duration::from_millis(90),
            ms_per_char: 60,
            chunk_ms: 100,
            chunk_interval: Duration::from_millis(20),
            late_chunk_after_cancel: false,
            fail_context: None,
            error_shape: ErrorShape::Current,
            reject_handshake: None,
            drop_after_messages: None,
            faulty_connections: None,
            record: true,
        }
    }
}

/// Everything one connection attempt showed the fake.
#[derive(Debug, Clone, Default)]
pub struct ConnectionRecord {
    /// The request path.
    pub path: String,
    /// Query parameters in order.
    pub query: Vec<(String, String)>,
    /// The `Authorization` header as sent.
    pub authorization: Option<String>,
    /// The `Cartesia-Version` header as sent.
    pub version_header: Option<String>,
    /// The status the handshake was refused with, if it was.
    pub rejected: Option<u16>,
    /// Text frames received, parsed; a frame that is not JSON is kept as a JSON string.
    pub received: Vec<Value>,
    /// Binary frames received (the protocol has none).
    pub binary_frames: usize,
    /// Messages the fake sent, in order.
    pub sent: Vec<Value>,
    /// The session is over (closed by either side or dropped).
    pub ended: bool,
}

impl ConnectionRecord {
    /// The first value of a query parameter.
    pub fn query_param(&self, key: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// The generation requests received for a context, in order.
    pub fn requests_for(&self, context: &str) -> Vec<&Value> {
        self.received.iter().filter(|m| m["context_id"] == context && m.get("transcript").is_some()).collect()
    }

    /// The context's transcript as the server concatenates it (verbatim).
    pub fn transcript_of(&self, context: &str) -> String {
        self.requests_for(context).iter().filter_map(|m| m["transcript"].as_str()).collect()
    }

    /// Contexts the client cancelled, in order.
    pub fn cancels(&self) -> Vec<String> {
        self.received
            .iter()
            .filter(|m| m["cancel"] == true)
            .filter_map(|m| m["context_id"].as_str().map(str::to_owned))
            .collect()
    }

    /// Messages the fake sent for a context, in order.
    pub fn sent_for(&self, context: &str) -> Vec<&Value> {
        self.sent.iter().filter(|m| m["context_id"] == context).collect()
    }
}

struct Shared {
    options: FakeCartesiaOptions,
    records: Mutex<Vec<ConnectionRecord>>,
    changed: Notify,
    shutdown: watch::Receiver<bool>,
}

impl Shared {
    fn records(&self) -> MutexGuard<'_, Vec<ConnectionRecord>> {
        self.records.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn update(&self, index: usize, change: impl FnOnce(&mut ConnectionRecord)) {
        if let Some(record) = self.records().get_mut(index) {
            change(record);
        }
        self.changed.notify_waiters();
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------------------------------------------------

/// A running fake Cartesia. Dropping it stops the server and ends every open session.
pub struct FakeCartesia {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl FakeCartesia {
    /// Binds 127.0.0.1 on an ephemeral port and starts serving `/tts/websocket`.
    pub async fn start(options: FakeCartesiaOptions) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (shutdown, shutdown_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            options,
            records: Mutex::new(Vec::new()),
            changed: Notify::new(),
            shutdown: shutdown_rx.clone(),
        });
        let app = Router::new().route("/tts/websocket", get(websocket)).with_state(shared.clone());
        let task = tokio::spawn(async move {
            let mut stop = shutdown_rx;
            let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
                let _ = stop.wait_for(|stopped| *stopped).await;
            });
            if let Err(error) = serve.await {
                tracing::warn!(%error, "fake cartesia server stopped");
            }
        });
        Ok(Self { addr, shared, shutdown, task })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `ws://127.0.0.1:<port>`, the value for a client's base URL.
    pub fn base_url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// A snapshot of every connection attempt so far.
    pub fn connections(&self) -> Vec<ConnectionRecord> {
        self.shared.records().clone()
    }

    /// Waits until `check` holds for the recorded connections, or `timeout` passes; returns whether it held.
    pub async fn wait_for(&self, timeout: Duration, check: impl Fn(&[ConnectionRecord]) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let notified = self.shared.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if check(&self.shared.records()) {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return check(&self.shared.records());
            }
        }
    }
}

impl Drop for FakeCartesia {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        self.task.abort();
    }
}

/// The `/tts/websocket` handler: record the attempt, refuse it if asked to, otherwise upgrade.
async fn websocket(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<Vec<(String, String)>>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let record = ConnectionRecord {
        path: "/tts/websocket".to_owned(),
        query,
        authorization: header("authorization"),
        version_header: header("cartesia-version"),
        rejected: shared.options.reject_handshake,
        ..ConnectionRecord::default()
    };
    let index = {
        let mut records = shared.records();
        records.push(record);
        records.len() - 1
    };
    shared.changed.notify_waiters();
    if let Some(status) = shared.options.reject_handshake {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
        return (status, "rejected by the fake server's options").into_response();
    }
    upgrade.read_buffer_size(crate::READ_BUFFER_BYTES).on_upgrade(move |socket| async move {
        Session::new(socket, shared.clone(), index).run().await;
        shared.update(index, |record| record.ended = true);
    })
}

// ---------------------------------------------------------------------------------------------------------------
// Session
// ---------------------------------------------------------------------------------------------------------------

/// One live context's generation state.
#[derive(Debug)]
struct Context {
    /// Audio bytes still to produce for the text received so far.
    remaining: usize,
    /// When the next chunk (or `done`) may go out.
    next_at: Instant,
    /// The client sent `continue: false`.
    closed: bool,
    /// Samples produced so far, so the tone stays continuous across chunks.
    samples: usize,
}

impl Context {
    fn has_work(&self) -> bool {
        self.remaining > 0 || self.closed
    }
}

/// The session ended because the fault injection dropped the connection.
struct Dropped;

struct Session {
    socket: WebSocket,
    shared: Arc<Shared>,
    index: usize,
    contexts: BTreeMap<String, Context>,
    /// Contexts that are over (cancelled, failed or done): later input for them is ignored.
    over: HashSet<String>,
    sent: usize,
}

impl Session {
    fn new(socket: WebSocket, shared: Arc<Shared>, index: usize) -> Self {
        Self { socket, shared, index, contexts: BTreeMap::new(), over: HashSet::new(), sent: 0 }
    }

    async fn run(mut self) {
        let mut shutdown = self.shared.shutdown.clone();
        // One registration for the whole session rather than one per message.
        let stop = shutdown.changed();
        tokio::pin!(stop);
        loop {
            let wake = self.next_wake();
            let outcome = tokio::select! {
                _ = &mut stop => return,
                frame = self.socket.recv() => match frame {
                    Some(Ok(message)) => self.on_message(message).await,
                    Some(Err(_)) | None => return,
                },
                _ = sleep_until(wake.unwrap_or_else(Instant::now)), if wake.is_some() => {
                    self.generate().await.map(|()| true)
                }
            };
            match outcome {
                Ok(true) => {}
                Ok(false) | Err(Dropped) => return,
            }
        }
    }

    fn next_wake(&self) -> Option<Instant> {
        self.contexts.values().filter(|c| c.has_work()).map(|c| c.next_at).min()
    }

    /// Handles one client frame; `Ok(false)` ends the session.
    async fn on_message(&mut self, message: Message) -> Result<bool, Dropped> {
        match message {
            Message::Text(text) => {
                let value =
                    serde_json::from_str::<Value>(text.as_str()).unwrap_or_else(|_| Value::String(text.to_string()));
                if self.shared.options.record {
                    self.shared.update(self.index, |record| record.received.push(value.clone()));
                }
                self.on_request(value).await?;
                Ok(true)
            }
            Message::Binary(_) => {
                self.shared.update(self.index, |record| record.binary_frames += 1);
                Ok(true)
            }
            Message::Close(_) => Ok(false),
            Message::Ping(_) | Message::Pong(_) => Ok(true),
        }
    }

    async fn on_request(&mut self, request: Value) -> Result<(), Dropped> {
        let Some(context) = request["context_id"].as_str().map(str::to_owned) else {
            return self.send_error(None, "request without a context_id").await;
        };
        if request["cancel"] == true {
            return self.cancel(context).await;
        }
        let Some(transcript) = request["transcript"].as_str() else {
            return self.send_error(Some(&context), "request without a transcript").await;
        };
        if self.over.contains(&context) {
            return Ok(());
        }
        if self.shared.options.fail_context.as_deref() == Some(context.as_str()) {
            self.over.insert(context.clone());
            self.contexts.remove(&context);
            return self.send_error(Some(&context), "").await;
        }
        let format = &request["output_format"];
        if format["container"] != "raw" || format["encoding"] != "pcm_mulaw" || format["sample_rate"] != 8000 {
            self.over.insert(context.clone());
            return self.send_error(Some(&context), "the fake only produces raw pcm_mulaw at 8000 Hz").await;
        }
        let buffer_ms = match &request["max_buffer_delay_ms"] {
            Value::Null => DEFAULT_BUFFER_DELAY_MS,
            value => match value.as_u64().filter(|ms| *ms <= MAX_BUFFER_DELAY_MS) {
                Some(ms) => ms,
                None => {
                    self.over.insert(context.clone());
                    let message = "max_buffer_delay_ms must be an integer between 0 and 5000";
                    return self.send_error(Some(&context), message).await;
                }
            },
        };
        // A context that is still taking text waits for more of it up to the buffer delay; its last input starts
        // generation at once.
        let buffer = if request["continue"] == true { Duration::from_millis(buffer_ms) } else { Duration::ZERO };
        let bytes = transcript.chars().count() * self.shared.options.ms_per_char as usize * BYTES_PER_MS;
        let first_audio_delay = self.shared.options.first_audio_delay;
        let entry = self.contexts.entry(context).or_insert_with(|| Context {
            remaining: 0,
            next_at: Instant::now() + first_audio_delay + buffer,
            closed: false,
            samples: 0,
        });
        entry.remaining += bytes;
        entry.closed |= request["continue"] != true;
        if entry.closed && entry.samples == 0 {
            // The last input flushes the buffer: generation starts now rather than when the buffer delay ends.
            entry.next_at = entry.next_at.min(Instant::now() + first_audio_delay);
        }
        Ok(())
    }

    async fn cancel(&mut self, context: String) -> Result<(), Dropped> {
        let live = self.contexts.remove(&context);
        self.over.insert(context.clone());
        if self.shared.options.late_chunk_after_cancel && live.is_some() {
            let audio = vec![LATE_CHUNK_BYTE; self.chunk_bytes().max(BYTES_PER_MS)];
            self.send_audio(&context, &audio).await?;
            self.send_done(&context).await?;
        }
        Ok(())
    }

    fn chunk_bytes(&self) -> usize {
        self.shared.options.chunk_ms as usize * BYTES_PER_MS
    }

    /// Sends what is due: the next chunk of each context whose time has come, or its `done`.
    async fn generate(&mut self) -> Result<(), Dropped> {
        let now = Instant::now();
        let due: Vec<String> =
            self.contexts.iter().filter(|(_, c)| c.has_work() && c.next_at <= now).map(|(id, _)| id.clone()).collect();
        let chunk_bytes = self.chunk_bytes().max(BYTES_PER_MS);
        let interval = self.shared.options.chunk_interval;
        for id in due {
            let Some(mut context) = self.contexts.remove(&id) else {
                continue;
            };
            if context.remaining > 0 {
                let size = context.remaining.min(chunk_bytes);
                context.remaining -= size;
                context.next_at = now + interval;
                self.send_chunk(&id, &mut context, size).await?;
                self.contexts.insert(id, context);
            } else {
                self.over.insert(id.clone());
                self.send_done(&id).await?;
            }
        }
        Ok(())
    }

    async fn send_chunk(&mut self, id: &str, context: &mut Context, size: usize) -> Result<(), Dropped> {
        let audio = tone(context.samples, size);
        context.samples += size;
        self.send_audio(id, &audio).await
    }

    async fn send_audio(&mut self, id: &str, audio: &[u8]) -> Result<(), Dropped> {
        let mut chunk = template(CHUNK);
        chunk["data"] = json!(base64::engine::general_purpose::STANDARD.encode(audio));
        chunk["context_id"] = json!(id);
        self.send(chunk).await
    }

    async fn send_done(&mut self, id: &str) -> Result<(), Dropped> {
        let mut done = template(DONE);
        done["context_id"] = json!(id);
        self.send(done).await
    }

    /// Sends an error in the configured shape; `detail` (when not empty) replaces the documented example's text.
    async fn send_error(&mut self, context: Option<&str>, detail: &str) -> Result<(), Dropped> {
        let mut error = match self.shared.options.error_shape {
            ErrorShape::Current => template(ERROR),
            ErrorShape::Legacy => template(ERROR_LEGACY),
        };
        if !detail.is_empty() {
            let field = match self.shared.options.error_shape {
                ErrorShape::Current => "message",
                ErrorShape::Legacy => "error",
            };
            error[field] = json!(detail);
        }
        match context {
            Some(id) => error["context_id"] = json!(id),
            None => {
                if let Some(object) = error.as_object_mut() {
                    object.remove("context_id");
                }
            }
        }
        self.send(error).await
    }

    /// Sends one message, recording it; drops the connection when the fault injection says so.
    async fn send(&mut self, message: Value) -> Result<(), Dropped> {
        let text = message.to_string();
        if self.socket.send(Message::Text(text.into())).await.is_err() {
            return Err(Dropped);
        }
        if self.shared.options.record {
            self.shared.update(self.index, |record| record.sent.push(message));
        }
        self.sent += 1;
        let faulty = self.shared.options.faulty_connections.is_none_or(|n| self.index < n);
        match self.shared.options.drop_after_messages {
            Some(limit) if faulty && self.sent >= limit => Err(Dropped),
            _ => Ok(()),
        }
    }
}

fn template(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| json!({}))
}

/// Samples after which the 440 Hz tone repeats exactly at 8 kHz (11 periods).
const TONE_CYCLE: usize = 200;

/// `len` μ-law bytes of a quiet 440 Hz tone starting at sample `from`: one cycle is computed once and copied, as
/// the fake voices every reply of every call.
fn tone(from: usize, len: usize) -> Vec<u8> {
    static CYCLE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    let cycle = CYCLE.get_or_init(|| (0..TONE_CYCLE).map(tone_sample).collect());
    (from..from + len).map(|n| cycle[n % TONE_CYCLE]).collect()
}

fn tone_sample(n: usize) -> u8 {
    let phase = 2.0 * std::f64::consts::PI * 440.0 * n as f64 / 8000.0;
    mulaw_encode((phase.sin() * 2000.0) as i16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tone_table_is_the_computed_tone() {
        let direct: Vec<u8> = (190..1190).map(tone_sample).collect();
        assert_eq!(tone(190, 1000), direct);
    }

    #[test]
    fn templates_are_the_documented_shapes() {
        for (text, kind) in [(CHUNK, "chunk"), (DONE, "done"), (ERROR, "error"), (ERROR_LEGACY, "error")] {
            assert_eq!(template(text)["type"], kind);
        }
        assert!(template(ERROR_LEGACY).get("error").is_some());
        assert!(template(ERROR).get("error_code").is_some());
    }

    #[test]
    fn tone_is_continuous_and_not_silent() {
        let whole = tone(0, 800);
        let mut split = tone(0, 300);
        split.extend(tone(300, 500));
        assert_eq!(whole, split);
        assert!(whole.iter().any(|&b| b != 0xff));
    }

    #[test]
    fn records_concatenate_transcripts_verbatim() {
        let record = ConnectionRecord {
            received: vec![
                json!({"context_id": "a", "transcript": "Thanks for coming, ", "continue": true}),
                json!({"context_id": "b", "transcript": "other", "continue": false}),
                json!({"context_id": "a", "transcript": "it was great.", "continue": false}),
                json!({"context_id": "b", "cancel": true}),
            ],
            ..ConnectionRecord::default()
        };
        assert_eq!(record.transcript_of("a"), "Thanks for coming, it was great.");
        assert_eq!(record.cancels(), ["b"]);
        assert_eq!(record.requests_for("a").len(), 2);
    }
}
