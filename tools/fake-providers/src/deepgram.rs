//! Fake Deepgram live (`/v1/listen`) server.
//!
//! A real WebSocket server on 127.0.0.1 that listens to the audio it is sent: it decodes the μ-law, detects speech
//! by frame energy, answers speech onset with `SpeechStarted` (when `vad_events=true`), and after `endpointing` ms
//! of silence (audio time, from the query) waits `finalize_delay` and replays the next scripted utterance (interim,
//! finals ending in `speech_final: true`, `UtteranceEnd`). `Finalize` flushes at once with `from_finalize: true`,
//! `CloseStream` flushes, sends `Metadata` and closes. Everything it receives is recorded for assertions, and faults
//! (handshake rejection, dropped connection, malformed JSON) can be injected.
//!
//! Messages are built from the documented examples in `proto-fixtures/deepgram/`.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context as _;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tokio::time::{sleep_until, Instant};

const SCRIPT_DEFAULT: &str = include_str!("../../../proto-fixtures/deepgram/script_default.json");
const SPEECH_STARTED: &str = include_str!("../../../proto-fixtures/deepgram/speech_started.json");
const METADATA: &str = include_str!("../../../proto-fixtures/deepgram/metadata.json");
const ERROR: &str = include_str!("../../../proto-fixtures/deepgram/error.json");

/// μ-law bytes per second of 8 kHz mono audio.
const BYTES_PER_SECOND: f64 = 8000.0;
/// Speech detection works on 20 ms frames, the size Twilio sends.
const FRAME_BYTES: usize = 160;
/// Deepgram's default endpointing when the query does not set it.
const DEFAULT_ENDPOINTING_MS: u64 = 10;

// ---------------------------------------------------------------------------------------------------------------
// Script
// ---------------------------------------------------------------------------------------------------------------

/// The utterances the fake "recognises", in order (wrapping around). Each utterance is a list of server messages in
/// the documented shapes (`Results`, `UtteranceEnd`) whose times are relative to the utterance's speech onset.
#[derive(Debug, Clone)]
pub struct Script {
    utterances: Vec<Vec<Value>>,
}

impl Script {
    /// The built-in script, `proto-fixtures/deepgram/script_default.json`.
    pub fn builtin() -> Self {
        // The embedded fixture is checked by this crate's tests; an unreadable one degrades to an empty script.
        Self::from_json(SCRIPT_DEFAULT).unwrap_or(Self { utterances: Vec::new() })
    }

    /// Parses a script: `{"utterances": [[message, …], …]}`.
    pub fn from_json(text: &str) -> anyhow::Result<Self> {
        let value: Value = serde_json::from_str(text).context("script is not JSON")?;
        let list = value.get("utterances").and_then(Value::as_array).context("script has no \"utterances\" array")?;
        let utterances = list
            .iter()
            .map(|u| u.as_array().cloned().context("an utterance is not an array of messages"))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Self { utterances })
    }

    /// Loads a script file (e.g. another fixture under `proto-fixtures/deepgram/`).
    pub fn from_file(path: impl AsRef<Path>) -> anyhow::Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::from_json(&text)
    }

    /// The scripted utterances.
    pub fn utterances(&self) -> &[Vec<Value>] {
        &self.utterances
    }

    /// The text of an utterance's final results joined with spaces, i.e. what a client should assemble.
    pub fn final_text(&self, index: usize) -> String {
        self.utterances
            .get(index)
            .map(|messages| {
                messages
                    .iter()
                    .filter(|m| m["type"] == "Results" && m["is_final"] == true)
                    .filter_map(transcript_of)
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default()
    }
}

fn transcript_of(message: &Value) -> Option<String> {
    message["channel"]["alternatives"][0]["transcript"].as_str().map(str::to_owned)
}

// ---------------------------------------------------------------------------------------------------------------
// Options and records
// ---------------------------------------------------------------------------------------------------------------

/// How the fake behaves.
#[derive(Debug, Clone)]
pub struct FakeDeepgramOptions {
    /// The utterances to answer speech with.
    pub script: Script,
    /// Wall-clock wait between detecting the endpoint and sending the results (the recogniser's finalization).
    pub finalize_delay: Duration,
    /// Mean absolute 16-bit amplitude of a 20 ms frame above which the frame counts as speech.
    pub speech_threshold: f64,
    /// Speech shorter than this (a click, a cough) yields no results at all, as a real recogniser hears no words in it.
    pub min_utterance: Duration,
    /// Refuse the WebSocket upgrade with this HTTP status (e.g. 401).
    pub reject_handshake: Option<u16>,
    /// Drop the TCP connection, without a close frame, right after sending this many messages.
    pub drop_after_messages: Option<usize>,
    /// Connection faults (`drop_after_messages`) hit only the first this many connections (`None`: every one), so
    /// a client's reconnect can be shown to work.
    pub faulty_connections: Option<usize>,
    /// Send a truncated JSON text frame before each utterance's results.
    pub send_malformed_json: bool,
    /// Send a message of an unknown `type` before each utterance's results.
    pub send_unknown_type: bool,
    /// Record every frame received and message sent in the [`ConnectionRecord`]s. On for tests; a load run turns it
    /// off, since at a thousand calls the records (50 audio frames a second a call) would cost the fake more than
    /// listening does and grow without bound.
    pub record: bool,
    /// Read each connection's frames in batches this often instead of as each arrives (`None`: as they arrive). A
    /// load run sets it: one wake-up and read per batch instead of per 20 ms frame. Results stay on time: an
    /// endpoint found in a batch is dated back by the audio that came after it.
    pub read_interval: Option<Duration>,
}

impl Default for FakeDeepgramOptions {
    fn default() -> Self {
        Self {
            script: Script::builtin(),
            finalize_delay: Duration::from_millis(200),
            speech_threshold: 500.0,
            min_utterance: Duration::ZERO,
            reject_handshake: None,
            drop_after_messages: None,
            faulty_connections: None,
            send_malformed_json: false,
            send_unknown_type: false,
            record: true,
            read_interval: None,
        }
    }
}

/// One frame the fake received.
#[derive(Debug, Clone, PartialEq)]
pub enum ReceivedFrame {
    /// A binary frame (audio) with its bytes.
    Binary(Vec<u8>),
    /// A text frame (control message).
    Text(String),
    /// The client's close frame.
    Close,
}

/// Everything one connection attempt showed the fake.
#[derive(Debug, Clone, Default)]
pub struct ConnectionRecord {
    /// Query parameters in order.
    pub query: Vec<(String, String)>,
    /// The `Authorization` header as sent.
    pub authorization: Option<String>,
    /// The status the handshake was refused with, if it was.
    pub rejected: Option<u16>,
    /// Frames received, in order.
    pub received: Vec<ReceivedFrame>,
    /// Text messages the fake sent, in order.
    pub sent: Vec<String>,
    /// The session is over (closed by either side or dropped).
    pub ended: bool,
}

impl ConnectionRecord {
    /// The first value of a query parameter.
    pub fn query_param(&self, key: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// All audio bytes received, concatenated.
    pub fn audio(&self) -> Vec<u8> {
        self.received
            .iter()
            .filter_map(|frame| match frame {
                ReceivedFrame::Binary(bytes) => Some(bytes.as_slice()),
                _ => None,
            })
            .flatten()
            .copied()
            .collect()
    }

    /// Number of binary frames received.
    pub fn binary_frames(&self) -> usize {
        self.received.iter().filter(|frame| matches!(frame, ReceivedFrame::Binary(_))).count()
    }

    /// The `type` of every text frame received (`KeepAlive`, `Finalize`, `CloseStream`, …), in order; frames that
    /// are not JSON objects with a `type` show as `"<invalid>"`.
    pub fn control_types(&self) -> Vec<String> {
        self.received
            .iter()
            .filter_map(|frame| match frame {
                ReceivedFrame::Text(text) => Some(
                    serde_json::from_str::<Value>(text)
                        .ok()
                        .and_then(|v| v["type"].as_str().map(str::to_owned))
                        .unwrap_or_else(|| "<invalid>".to_owned()),
                ),
                _ => None,
            })
            .collect()
    }
}

struct Shared {
    options: FakeDeepgramOptions,
    /// Each accepted connection's socket by peer address, so a batched session can set its receive low-water mark.
    sockets: Mutex<std::collections::HashMap<SocketAddr, std::os::fd::RawFd>>,
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

/// A running fake Deepgram. Dropping it stops the server and ends every open session.
pub struct FakeDeepgram {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl FakeDeepgram {
    /// Binds 127.0.0.1 on an ephemeral port and starts serving `/v1/listen`.
    pub async fn start(options: FakeDeepgramOptions) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (shutdown, shutdown_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            options,
            records: Mutex::new(Vec::new()),
            sockets: Mutex::new(std::collections::HashMap::new()),
            changed: Notify::new(),
            shutdown: shutdown_rx.clone(),
        });
        let app = Router::new()
            .route("/v1/listen", get(listen))
            .with_state(shared.clone())
            .into_make_service_with_connect_info::<SocketAddr>();
        let sockets = shared.clone();
        let listener = axum::serve::ListenerExt::tap_io(listener, move |tcp: &mut tokio::net::TcpStream| {
            if let Ok(peer) = tcp.peer_addr() {
                use std::os::fd::AsRawFd as _;
                lock(&sockets.sockets).insert(peer, tcp.as_raw_fd());
            }
        });
        let task = tokio::spawn(async move {
            let mut stop = shutdown_rx;
            let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
                let _ = stop.wait_for(|stopped| *stopped).await;
            });
            if let Err(error) = serve.await {
                tracing::warn!(%error, "fake deepgram server stopped");
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

impl Drop for FakeDeepgram {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        self.task.abort();
    }
}

/// The `/v1/listen` handler: record the attempt, refuse it if asked to, otherwise upgrade.
async fn listen(
    State(shared): State<Arc<Shared>>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<SocketAddr>,
    Query(query): Query<Vec<(String, String)>>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let record = ConnectionRecord {
        query,
        authorization: headers.get("authorization").and_then(|v| v.to_str().ok()).map(str::to_owned),
        rejected: shared.options.reject_handshake,
        ..ConnectionRecord::default()
    };
    let params = SessionParams::from_query(&record.query);
    let fd = lock(&shared.sockets).remove(&peer);
    let index = {
        let mut records = shared.records();
        records.push(record);
        records.len() - 1
    };
    shared.changed.notify_waiters();
    if let Some(status) = shared.options.reject_handshake {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
        let body = json!({"err_code": "FAKE_REJECTED", "err_msg": "rejected by the fake server's options"});
        return (status, body.to_string()).into_response();
    }
    upgrade.read_buffer_size(crate::READ_BUFFER_BYTES).on_upgrade(move |socket| async move {
        if let (Some(fd), Some(_)) = (fd, shared.options.read_interval) {
            // Batched reads: the socket only turns readable once about four frames wait, so the runtime is not woken
            // for every 20 ms frame. Control messages still come in time: audio keeps flowing alongside them.
            set_receive_low_water(fd, BATCH_LOW_WATER_BYTES);
        }
        let session = Session::new(socket, shared.clone(), index, params);
        session.run().await;
        shared.update(index, |record| record.ended = true);
    })
}

// ---------------------------------------------------------------------------------------------------------------
// Session
// ---------------------------------------------------------------------------------------------------------------

/// The options a client chose in the query string.
#[derive(Debug, Clone)]
struct SessionParams {
    /// `None` when endpointing is disabled (`endpointing=false`).
    endpointing: Option<f64>,
    interim_results: bool,
    vad_events: bool,
    utterance_end: bool,
}

impl SessionParams {
    fn from_query(query: &[(String, String)]) -> Self {
        let get = |key: &str| query.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
        let endpointing = match get("endpointing") {
            Some("false") => None,
            Some(ms) => Some(ms.parse::<u64>().unwrap_or(DEFAULT_ENDPOINTING_MS) as f64 / 1000.0),
            None => Some(DEFAULT_ENDPOINTING_MS as f64 / 1000.0),
        };
        Self {
            endpointing,
            interim_results: get("interim_results") == Some("true"),
            vad_events: get("vad_events") == Some("true"),
            utterance_end: get("utterance_end_ms").is_some(),
        }
    }
}

/// Speech detection state, in stream-relative audio seconds.
#[derive(Debug, Clone, Copy)]
enum Vad {
    Silence,
    Speech { onset: f64, last_voiced_end: f64 },
}

/// An utterance whose endpoint was detected, waiting for the finalize delay.
#[derive(Debug, Clone, Copy)]
struct Pending {
    due: Instant,
    onset: f64,
}

/// How flushed results are marked.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Flush {
    /// The endpoint was detected: the scripted messages as they are.
    Endpoint,
    /// `Finalize`: finals only, `from_finalize: true`.
    Finalize,
    /// `CloseStream`: finals only.
    Close,
}

/// The session ended because the fault injection dropped the connection.
struct Dropped;

struct Session {
    socket: WebSocket,
    shared: Arc<Shared>,
    index: usize,
    params: SessionParams,
    /// μ-law bytes received so far (the stream's audio clock).
    audio_bytes: u64,
    /// Bytes of an incomplete 20 ms frame.
    partial: Vec<u8>,
    vad: Vad,
    pending: VecDeque<Pending>,
    next_utterance: usize,
    sent: usize,
    /// Audio bytes of the batch being read that came after the frame being processed (see `read_interval`).
    backlog_bytes: usize,
    /// The batch being read, reused.
    batch: Vec<Message>,
}

impl Session {
    fn new(socket: WebSocket, shared: Arc<Shared>, index: usize, params: SessionParams) -> Self {
        Self {
            socket,
            shared,
            index,
            params,
            audio_bytes: 0,
            partial: Vec::with_capacity(FRAME_BYTES),
            vad: Vad::Silence,
            pending: VecDeque::new(),
            next_utterance: 0,
            sent: 0,
            backlog_bytes: 0,
            batch: Vec::new(),
        }
    }

    async fn run(self) {
        match self.shared.options.read_interval {
            Some(interval) => self.run_batched(interval).await,
            None => self.run_per_frame().await,
        }
    }

    /// Reads the socket every `interval`, taking whatever arrived since in one go.
    async fn run_batched(mut self, interval: Duration) {
        use futures_util::FutureExt as _;
        let mut shutdown = self.shared.shutdown.clone();
        let stop = shutdown.changed();
        tokio::pin!(stop);
        let mut next_read = Instant::now() + interval;
        loop {
            let due = self.pending.front().map(|p| p.due).filter(|due| *due < next_read);
            tokio::select! {
                _ = &mut stop => return,
                _ = sleep_until(due.unwrap_or(next_read)) => {}
            }
            if due.is_some() {
                if self.send_due().await.is_err() {
                    return;
                }
                continue;
            }
            next_read = Instant::now() + interval;
            let mut batch = std::mem::take(&mut self.batch);
            let mut ended = false;
            while let Some(frame) = self.socket.recv().now_or_never() {
                match frame {
                    Some(Ok(message)) => batch.push(message),
                    Some(Err(_)) | None => {
                        ended = true;
                        break;
                    }
                }
            }
            self.backlog_bytes =
                batch.iter().map(|m| if let Message::Binary(audio) = m { audio.len() } else { 0 }).sum();
            for message in batch.drain(..) {
                if let Message::Binary(audio) = &message {
                    self.backlog_bytes = self.backlog_bytes.saturating_sub(audio.len());
                }
                // The frame's own bytes are out of the backlog before it is processed: only later audio dates it.
                match self.on_message(message).await {
                    Ok(true) => {}
                    Ok(false) | Err(Dropped) => return,
                }
            }
            self.batch = batch;
            if ended {
                return;
            }
        }
    }

    async fn run_per_frame(mut self) {
        let mut shutdown = self.shared.shutdown.clone();
        // One registration for the whole session rather than one per frame.
        let stop = shutdown.changed();
        tokio::pin!(stop);
        loop {
            let due = self.pending.front().map(|p| p.due);
            let outcome = tokio::select! {
                _ = &mut stop => return,
                frame = self.socket.recv() => match frame {
                    Some(Ok(message)) => self.on_message(message).await,
                    Some(Err(_)) | None => return,
                },
                _ = sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => {
                    self.send_due().await.map(|()| true)
                }
            };
            match outcome {
                Ok(true) => {}
                Ok(false) | Err(Dropped) => return,
            }
        }
    }

    /// Handles one client frame; `Ok(false)` ends the session.
    async fn on_message(&mut self, message: Message) -> Result<bool, Dropped> {
        match message {
            Message::Binary(audio) => {
                self.record(ReceivedFrame::Binary(audio.to_vec()));
                self.on_audio(&audio).await?;
                Ok(true)
            }
            Message::Text(text) => {
                self.record(ReceivedFrame::Text(text.to_string()));
                self.on_control(text.as_str()).await
            }
            Message::Close(_) => {
                self.record(ReceivedFrame::Close);
                Ok(false)
            }
            Message::Ping(_) | Message::Pong(_) => Ok(true),
        }
    }

    fn record(&self, frame: ReceivedFrame) {
        if self.shared.options.record {
            self.shared.update(self.index, |record| record.received.push(frame));
        }
    }

    async fn on_audio(&mut self, audio: &[u8]) -> Result<(), Dropped> {
        // Whole frames straight from the message (the usual case: Twilio's 20 ms frames forwarded as they come);
        // only a frame split across messages is copied.
        let mut rest = audio;
        if !self.partial.is_empty() {
            let take = (FRAME_BYTES - self.partial.len()).min(rest.len());
            self.partial.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.partial.len() < FRAME_BYTES {
                return Ok(());
            }
            let frame = std::mem::take(&mut self.partial);
            self.on_frame(&frame).await?;
            self.partial = frame;
            self.partial.clear();
        }
        let mut frames = rest.chunks_exact(FRAME_BYTES);
        for frame in frames.by_ref() {
            self.on_frame(frame).await?;
        }
        self.partial.extend_from_slice(frames.remainder());
        Ok(())
    }

    /// Advances the audio clock by one frame and the speech detector with it.
    async fn on_frame(&mut self, frame: &[u8]) -> Result<(), Dropped> {
        let start = self.audio_bytes as f64 / BYTES_PER_SECOND;
        self.audio_bytes += frame.len() as u64;
        let end = self.audio_bytes as f64 / BYTES_PER_SECOND;
        let voiced = mean_amplitude(frame) > self.shared.options.speech_threshold;
        match (self.vad, voiced) {
            (Vad::Silence, true) => {
                self.vad = Vad::Speech { onset: start, last_voiced_end: end };
                if self.params.vad_events {
                    let mut message = template(SPEECH_STARTED);
                    message["timestamp"] = json!(round_ms(start));
                    message["channel"] = json!([0, 1]);
                    self.send(message.to_string()).await?;
                }
            }
            (Vad::Speech { onset, .. }, true) => {
                self.vad = Vad::Speech { onset, last_voiced_end: end };
            }
            (Vad::Speech { onset, last_voiced_end }, false) => {
                let endpoint = self.params.endpointing.is_some_and(|silence| end - last_voiced_end >= silence);
                if endpoint {
                    self.vad = Vad::Silence;
                    let too_short = last_voiced_end - onset < self.shared.options.min_utterance.as_secs_f64();
                    if !too_short {
                        // Audio read in the same batch after this frame arrived later than it did (real time).
                        let late = Duration::from_secs_f64(self.backlog_bytes as f64 / BYTES_PER_SECOND);
                        let detected = Instant::now().checked_sub(late).unwrap_or_else(Instant::now);
                        let due = detected + self.shared.options.finalize_delay;
                        self.pending.push_back(Pending { due, onset });
                    }
                }
            }
            (Vad::Silence, false) => {}
        }
        Ok(())
    }

    async fn on_control(&mut self, text: &str) -> Result<bool, Dropped> {
        let kind = serde_json::from_str::<Value>(text).ok().and_then(|v| v["type"].as_str().map(str::to_owned));
        match kind.as_deref() {
            Some("KeepAlive") => Ok(true),
            Some("Finalize") => {
                self.flush(Flush::Finalize).await?;
                Ok(true)
            }
            Some("CloseStream") => {
                self.flush(Flush::Close).await?;
                self.send_metadata().await?;
                let _ = self.socket.send(Message::Close(None)).await;
                Ok(false)
            }
            _ => {
                let mut error = template(ERROR);
                error["description"] = json!("could not parse the client message");
                error["message"] = json!(text);
                self.send(error.to_string()).await?;
                Ok(true)
            }
        }
    }

    /// Sends the results of the utterance whose finalize delay is over.
    async fn send_due(&mut self) -> Result<(), Dropped> {
        if let Some(pending) = self.pending.pop_front() {
            self.send_utterance(pending.onset, Flush::Endpoint).await?;
        }
        Ok(())
    }

    /// Sends everything heard but not yet answered, marked as `mode` says.
    async fn flush(&mut self, mode: Flush) -> Result<(), Dropped> {
        while let Some(pending) = self.pending.pop_front() {
            self.send_utterance(pending.onset, mode).await?;
        }
        if let Vad::Speech { onset, .. } = self.vad {
            self.vad = Vad::Silence;
            self.send_utterance(onset, mode).await?;
        }
        Ok(())
    }

    async fn send_utterance(&mut self, onset: f64, mode: Flush) -> Result<(), Dropped> {
        let script = &self.shared.options.script;
        let count = script.utterances().len();
        if count == 0 {
            return Ok(());
        }
        let messages = script.utterances()[self.next_utterance % count].clone();
        self.next_utterance += 1;
        if self.shared.options.send_malformed_json {
            self.send(r#"{"type":"Results","channel":{"alternatives":[{"transcr"#.to_owned()).await?;
        }
        if self.shared.options.send_unknown_type {
            self.send(json!({"type": "FutureMessage", "detail": "not in the documented protocol"}).to_string()).await?;
        }
        for message in messages {
            if let Some(message) = self.prepare(message, onset, mode) {
                self.send(message.to_string()).await?;
            }
        }
        Ok(())
    }

    /// Shifts a scripted message to the detected onset and marks it for `mode`; `None` drops it.
    fn prepare(&self, mut message: Value, onset: f64, mode: Flush) -> Option<Value> {
        match message["type"].as_str() {
            Some("Results") => {
                let is_final = message["is_final"] == true;
                if !is_final && (mode != Flush::Endpoint || !self.params.interim_results) {
                    return None;
                }
                shift(&mut message["start"], onset);
                if let Some(words) = message["channel"]["alternatives"][0]["words"].as_array_mut() {
                    for word in words {
                        shift(&mut word["start"], onset);
                        shift(&mut word["end"], onset);
                    }
                }
                match mode {
                    Flush::Endpoint => {}
                    Flush::Finalize => {
                        message["from_finalize"] = json!(true);
                        message["speech_final"] = json!(false);
                    }
                    Flush::Close => message["speech_final"] = json!(false),
                }
                Some(message)
            }
            Some("UtteranceEnd") => {
                if mode != Flush::Endpoint || !self.params.utterance_end {
                    return None;
                }
                shift(&mut message["last_word_end"], onset);
                Some(message)
            }
            _ => Some(message),
        }
    }

    async fn send_metadata(&mut self) -> Result<(), Dropped> {
        let mut metadata = template(METADATA);
        metadata["request_id"] = json!(format!("fake-{}", self.index));
        metadata["duration"] = json!(round_ms(self.audio_bytes as f64 / BYTES_PER_SECOND));
        metadata["channels"] = json!(1);
        self.send(metadata.to_string()).await
    }

    /// Sends one text message, recording it; drops the connection when the fault injection says so.
    async fn send(&mut self, text: String) -> Result<(), Dropped> {
        let recorded = self.shared.options.record.then(|| text.clone());
        if self.socket.send(Message::Text(text.into())).await.is_err() {
            return Err(Dropped);
        }
        if let Some(text) = recorded {
            self.shared.update(self.index, |record| record.sent.push(text));
        }
        self.sent += 1;
        let faulty = self.shared.options.faulty_connections.is_none_or(|n| self.index < n);
        match self.shared.options.drop_after_messages {
            Some(limit) if faulty && self.sent >= limit => Err(Dropped),
            _ => Ok(()),
        }
    }
}

/// The receive low-water mark of batched sessions: four of Parley's audio frames (160 bytes of μ-law and a 6-byte
/// masked WebSocket header each).
const BATCH_LOW_WATER_BYTES: i32 = 4 * 166;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// `SO_RCVLOWAT` on a connected socket; best effort (the session works without it, only with more wake-ups).
fn set_receive_low_water(fd: std::os::fd::RawFd, bytes: i32) {
    // SAFETY: `fd` is the socket of the connection being upgraded, open for as long as its session runs; the option
    // value is a live `c_int` of the size passed.
    let result = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVLOWAT,
            (&bytes as *const i32).cast::<libc::c_void>(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if result != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "could not set SO_RCVLOWAT");
    }
}

fn template(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| json!({}))
}

fn shift(value: &mut Value, by: f64) {
    if let Some(v) = value.as_f64() {
        *value = json!(round_ms(v + by));
    }
}

fn round_ms(seconds: f64) -> f64 {
    (seconds * 1000.0).round() / 1000.0
}

// ---------------------------------------------------------------------------------------------------------------
// Audio helpers
// ---------------------------------------------------------------------------------------------------------------

/// Decodes one G.711 μ-law byte to a 16-bit linear sample (kept local so the fake depends on nothing in Parley).
pub fn mulaw_decode(byte: u8) -> i16 {
    let u = !byte;
    let exponent = (u >> 4) & 0x07;
    let mantissa = i32::from(u & 0x0f);
    let magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84;
    let sample = if u & 0x80 != 0 { -magnitude } else { magnitude };
    sample as i16
}

/// Encodes a 16-bit linear sample as G.711 μ-law.
pub fn mulaw_encode(sample: i16) -> u8 {
    const BIAS: i32 = 0x84;
    const CLIP: i32 = 32635;
    let value = i32::from(sample);
    let sign: u8 = if value < 0 { 0x80 } else { 0 };
    let magnitude = value.abs().min(CLIP) + BIAS;
    let exponent = (31 - magnitude.leading_zeros() as i32 - 7).clamp(0, 7);
    let mantissa = (magnitude >> (exponent + 3)) & 0x0f;
    !(sign | ((exponent as u8) << 4) | mantissa as u8)
}

/// Mean absolute amplitude of a μ-law frame, the fake's speech detector. A table lookup and an integer sum per
/// sample: the fake runs this on every frame of every call, 50 frames a second each.
pub fn mean_amplitude(frame: &[u8]) -> f64 {
    if frame.is_empty() {
        return 0.0;
    }
    let table = magnitudes();
    let sum: u64 = frame.iter().map(|&b| u64::from(table[usize::from(b)])).sum();
    sum as f64 / frame.len() as f64
}

/// |sample| of every μ-law byte, computed once.
fn magnitudes() -> &'static [u16; 256] {
    static TABLE: std::sync::OnceLock<[u16; 256]> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let mut table = [0u16; 256];
        for (byte, magnitude) in table.iter_mut().enumerate() {
            *magnitude = i32::from(mulaw_decode(byte as u8)).unsigned_abs() as u16;
        }
        table
    })
}

/// `ms` of a 220 Hz tone at about -12 dBFS, as μ-law: stands in for a caller speaking.
pub fn speech_mulaw(ms: u32) -> Vec<u8> {
    let samples = ms as usize * 8;
    (0..samples)
        .map(|n| {
            let phase = 2.0 * std::f64::consts::PI * 220.0 * n as f64 / 8000.0;
            mulaw_encode((phase.sin() * 8000.0) as i16)
        })
        .collect()
}

/// `ms` of digital silence as μ-law.
pub fn silence_mulaw(ms: u32) -> Vec<u8> {
    vec![0xff; ms as usize * 8]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mulaw_round_trips_within_quantisation() {
        for sample in [-32000i16, -8000, -100, 0, 100, 8000, 32000] {
            let back = mulaw_decode(mulaw_encode(sample));
            let error = (i32::from(back) - i32::from(sample)).abs();
            assert!(error <= i32::from(sample).abs() / 16 + 8, "{sample} -> {back}");
        }
        assert_eq!(mulaw_decode(0xff), 0);
        assert_eq!(mulaw_encode(0), 0xff);
        assert_eq!(mulaw_decode(0x80), 32124);
        assert_eq!(mulaw_decode(0x00), -32124);
    }

    #[test]
    fn mean_amplitude_is_the_decoded_mean() {
        let frame = speech_mulaw(20);
        let slow: f64 = frame.iter().map(|&b| f64::from(mulaw_decode(b)).abs()).sum::<f64>() / frame.len() as f64;
        assert!((mean_amplitude(&frame) - slow).abs() < 1e-9);
        assert_eq!(mean_amplitude(&[]), 0.0);
        assert_eq!(mean_amplitude(&[0x00]), 32124.0);
    }

    #[test]
    fn speech_is_loud_and_silence_is_quiet() {
        let threshold = FakeDeepgramOptions::default().speech_threshold;
        assert!(mean_amplitude(&speech_mulaw(20)) > threshold);
        assert!(mean_amplitude(&silence_mulaw(20)) < threshold);
    }

    #[test]
    fn builtin_script_has_speech_final_utterances() {
        let script = Script::builtin();
        assert_eq!(script.utterances().len(), 2);
        assert_eq!(script.final_text(0), "Book a table for two.");
        assert_eq!(script.final_text(1), "At seven, please.");
        for utterance in script.utterances() {
            let last_final = utterance
                .iter()
                .rev()
                .find(|m| m["type"] == "Results" && m["is_final"] == true)
                .expect("a final result");
            assert_eq!(last_final["speech_final"], true);
            assert_eq!(utterance.last().expect("messages")["type"], "UtteranceEnd");
        }
    }

    #[test]
    fn query_options_are_read() {
        let query = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
        };
        let params = SessionParams::from_query(&query(&[
            ("endpointing", "300"),
            ("interim_results", "true"),
            ("vad_events", "true"),
            ("utterance_end_ms", "1000"),
        ]));
        assert_eq!(params.endpointing, Some(0.3));
        assert!(params.interim_results && params.vad_events && params.utterance_end);
        let params = SessionParams::from_query(&query(&[("endpointing", "false")]));
        assert_eq!(params.endpointing, None);
        assert!(!params.interim_results && !params.vad_events && !params.utterance_end);
        assert_eq!(SessionParams::from_query(&[]).endpointing, Some(0.01));
    }

    /// What a client hears for 600 ms of speech and a second of silence: the finals of one utterance.
    async fn finals_heard(options: FakeDeepgramOptions) -> String {
        use futures_util::{SinkExt as _, StreamExt as _};
        use tokio_tungstenite::tungstenite::Message as Frame;
        let fake = FakeDeepgram::start(options).await.expect("fake starts");
        let url = format!("{}/v1/listen?encoding=mulaw&sample_rate=8000&endpointing=300", fake.base_url());
        let (mut socket, _) = tokio_tungstenite::connect_async(url).await.expect("upgrade");
        let audio = [speech_mulaw(600), silence_mulaw(1000)].concat();
        for frame in audio.chunks(FRAME_BYTES) {
            socket.send(Frame::Binary(frame.to_vec().into())).await.expect("audio sent");
        }
        let mut finals = Vec::new();
        let heard = async {
            while let Some(Ok(frame)) = socket.next().await {
                let Frame::Text(text) = frame else { continue };
                let message: Value = serde_json::from_str(text.as_str()).expect("json");
                if message["type"] == "Results" && message["is_final"] == true {
                    finals.extend(transcript_of(&message));
                    if message["speech_final"] == true {
                        break;
                    }
                }
            }
        };
        // A bound on a hang, not a measurement.
        let _ = tokio::time::timeout(Duration::from_secs(10), heard).await;
        finals.join(" ")
    }

    #[tokio::test]
    async fn batched_reads_hear_what_per_frame_reads_hear() {
        let per_frame = finals_heard(FakeDeepgramOptions::default()).await;
        let batched = finals_heard(FakeDeepgramOptions {
            record: false,
            read_interval: Some(Duration::from_millis(100)),
            ..FakeDeepgramOptions::default()
        })
        .await;
        assert_eq!(per_frame, Script::builtin().final_text(0));
        assert_eq!(batched, per_frame);
    }

    #[test]
    fn bad_scripts_are_errors() {
        assert!(Script::from_json("{").is_err());
        assert!(Script::from_json(r#"{"utterances": 3}"#).is_err());
        assert!(Script::from_json(r#"{"utterances": [3]}"#).is_err());
        assert_eq!(Script::from_json(r#"{"utterances": [[]]}"#).map(|s| s.utterances().len()).ok(), Some(1));
    }
}
