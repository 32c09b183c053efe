//! Fake OpenAI `/v1/audio/speech` server.
//!
//! A real HTTP server on 127.0.0.1 (ephemeral port) answering `POST /v1/audio/speech` with `response_format: "pcm"`:
//! raw 24 kHz 16-bit little-endian mono audio, streamed in chunks of an odd byte size (so clients must handle
//! samples split across chunks). The audio is a sine tone whose length is proportional to the input text, so tests
//! can check both the amount and the content of the converted audio. Faults: HTTP errors with OpenAI's error body,
//! and a body that stalls after some chunks (to test cancellation). Every request is recorded and every body the
//! client abandoned is counted. The server stops when the [`FakeOpenAiSpeech`] handle is dropped.

use std::collections::VecDeque;
use std::net::SocketAddr;
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

/// Sample rate of `pcm` output.
pub const SAMPLE_RATE_HZ: u32 = 24_000;

/// One scripted answer.
#[derive(Debug, Clone, PartialEq)]
pub enum FakeSpeechReply {
    /// The tone for the input text, streamed completely.
    Tone,
    /// This HTTP status with OpenAI's error body carrying `message`.
    Http { status: u16, message: String },
    /// The first `chunks` chunks of the tone, then silence with the connection open.
    StallAfter { chunks: usize },
}

/// How the fake behaves.
#[derive(Debug, Clone)]
pub struct FakeOpenAiSpeechOptions {
    /// Replies used in order, one per request.
    pub script: Vec<FakeSpeechReply>,
    /// Used when the script is used up.
    pub fallback: FakeSpeechReply,
    /// Audio samples generated per input character.
    pub samples_per_char: usize,
    /// Frequency of the tone.
    pub tone_hz: f64,
    /// Peak amplitude of the tone (of 32767).
    pub amplitude: f64,
    /// Size of each body chunk in bytes (odd by default so samples straddle chunks).
    pub chunk_bytes: usize,
    /// Delay before each chunk.
    pub chunk_delay: Duration,
}

impl Default for FakeOpenAiSpeechOptions {
    fn default() -> Self {
        FakeOpenAiSpeechOptions {
            script: Vec::new(),
            fallback: FakeSpeechReply::Tone,
            samples_per_char: 240,
            tone_hz: 440.0,
            amplitude: 8_000.0,
            chunk_bytes: 4_801,
            chunk_delay: Duration::ZERO,
        }
    }
}

impl FakeOpenAiSpeechOptions {
    /// Appends a reply to the script.
    pub fn reply(mut self, reply: FakeSpeechReply) -> Self {
        self.script.push(reply);
        self
    }
}

/// One request the fake received.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedSpeechRequest {
    pub path: String,
    /// The `Authorization` header, if sent.
    pub authorization: Option<String>,
    /// The JSON body (`Value::Null` if it was not JSON).
    pub body: Value,
}

impl RecordedSpeechRequest {
    /// The `input` text.
    pub fn input(&self) -> Option<&str> {
        self.body.get("input").and_then(Value::as_str)
    }
}

/// A running fake. Dropping it stops the server.
#[derive(Debug)]
pub struct FakeOpenAiSpeech {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

#[derive(Debug)]
struct Shared {
    inner: Mutex<Inner>,
    options: FakeOpenAiSpeechOptions,
    requests_seen: watch::Sender<usize>,
    disconnects: watch::Sender<usize>,
    shutdown: watch::Sender<bool>,
}

#[derive(Debug, Default)]
struct Inner {
    script: VecDeque<FakeSpeechReply>,
    requests: Vec<RecordedSpeechRequest>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Starts a fake on 127.0.0.1 with an ephemeral port.
pub async fn start(options: FakeOpenAiSpeechOptions) -> std::io::Result<FakeOpenAiSpeech> {
    let shared = Arc::new(Shared {
        inner: Mutex::new(Inner { script: options.script.clone().into(), requests: Vec::new() }),
        options,
        requests_seen: watch::Sender::new(0),
        disconnects: watch::Sender::new(0),
        shutdown: watch::Sender::new(false),
    });
    let router = Router::new()
        .route("/v1/audio/speech", post(speech))
        .route("/audio/speech", post(speech))
        .with_state(shared.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, router).await {
            tracing::warn!(%error, "fake OpenAI speech server stopped");
        }
    });
    Ok(FakeOpenAiSpeech { addr, shared, task })
}

impl FakeOpenAiSpeech {
    /// The API root to configure the client with: `http://127.0.0.1:<port>/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<RecordedSpeechRequest> {
        self.shared.lock().requests.clone()
    }

    /// How many audio bodies the client abandoned before they were complete.
    pub fn disconnects(&self) -> usize {
        *self.shared.disconnects.borrow()
    }

    /// Waits until at least `count` bodies were abandoned; false if `timeout` passed first.
    pub async fn wait_for_disconnects(&self, count: usize, timeout: Duration) -> bool {
        let mut receiver = self.shared.disconnects.subscribe();
        let reached = tokio::time::timeout(timeout, receiver.wait_for(|seen| *seen >= count)).await;
        matches!(reached, Ok(Ok(_)))
    }

    /// The number of 24 kHz samples the fake sends for `input`.
    pub fn samples_for(&self, input: &str) -> usize {
        input.chars().count() * self.shared.options.samples_per_char
    }
}

impl Drop for FakeOpenAiSpeech {
    fn drop(&mut self) {
        self.shared.shutdown.send_replace(true);
        self.task.abort();
    }
}

fn error_response(status: StatusCode, message: &str) -> Response {
    let body = json!({"error": {"message": message, "type": "invalid_request_error", "param": null, "code": null}});
    (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

async fn speech(State(shared): State<Arc<Shared>>, uri: axum::http::Uri, headers: HeaderMap, body: Bytes) -> Response {
    let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let reply = {
        let mut inner = shared.lock();
        inner.requests.push(RecordedSpeechRequest {
            path: uri.path().to_owned(),
            authorization: headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).map(str::to_owned),
            body: parsed.clone(),
        });
        inner.script.pop_front().unwrap_or_else(|| shared.options.fallback.clone())
    };
    shared.requests_seen.send_modify(|seen| *seen += 1);
    let input = parsed.get("input").and_then(Value::as_str).unwrap_or_default().to_owned();
    if input.is_empty() || input.chars().count() > 4096 {
        return error_response(StatusCode::BAD_REQUEST, "input must be between 1 and 4096 characters");
    }
    if parsed.get("response_format").and_then(Value::as_str) != Some("pcm") {
        return error_response(StatusCode::BAD_REQUEST, "this fake only serves response_format pcm");
    }
    let stall_after = match reply {
        FakeSpeechReply::Http { status, message } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return error_response(status, &message);
        }
        FakeSpeechReply::Tone => None,
        FakeSpeechReply::StallAfter { chunks } => Some(chunks),
    };
    let options = &shared.options;
    let pcm = tone(input.chars().count() * options.samples_per_char, options.tone_hz, options.amplitude);
    let chunks: VecDeque<Bytes> = pcm.chunks(options.chunk_bytes.max(1)).map(Bytes::copy_from_slice).collect();
    let body = AudioBody {
        chunks,
        sent: 0,
        stall_after,
        delay: options.chunk_delay,
        shutdown: shared.shutdown.subscribe(),
        guard: DisconnectGuard { shared: shared.clone(), finished: false },
    };
    let stream = futures_util::stream::unfold(body, |mut body| async move { body.next().await.map(|c| (c, body)) });
    Response::builder()
        .header(header::CONTENT_TYPE, "audio/pcm")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// `samples` of a sine tone as s16le bytes.
fn tone(samples: usize, hz: f64, amplitude: f64) -> Vec<u8> {
    (0..samples)
        .flat_map(|n| {
            let phase = 2.0 * std::f64::consts::PI * hz * n as f64 / f64::from(SAMPLE_RATE_HZ);
            ((amplitude * phase.sin()) as i16).to_le_bytes()
        })
        .collect()
}

/// Counts a body as abandoned by the client when it is dropped before it was finished.
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

struct AudioBody {
    chunks: VecDeque<Bytes>,
    sent: usize,
    stall_after: Option<usize>,
    delay: Duration,
    shutdown: watch::Receiver<bool>,
    guard: DisconnectGuard,
}

impl AudioBody {
    async fn next(&mut self) -> Option<Result<Bytes, std::io::Error>> {
        if self.stall_after.is_some_and(|after| self.sent >= after) {
            // Ends only when the fake shuts down; a client that goes away drops this body (counted by the guard).
            let _ = self.shutdown.wait_for(|stop| *stop).await;
            self.guard.finished = true;
            return None;
        }
        let Some(chunk) = self.chunks.pop_front() else {
            self.guard.finished = true;
            return None;
        };
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        self.sent += 1;
        if self.chunks.is_empty() && self.stall_after.is_none() {
            self.guard.finished = true;
        }
        Some(Ok(chunk))
    }
}
