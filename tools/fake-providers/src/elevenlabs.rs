//! Fake ElevenLabs `multi-stream-input` WebSocket server.
//!
//! Serves `/v1/text-to-speech/{voice_id}/multi-stream-input` on 127.0.0.1 (ephemeral port) with the documented
//! message shapes (`{"audio","isFinal","contextId"}` out, snake_case `context_id` messages in) and the limits a client
//! must respect: the `xi-api-key` header is required (401), `output_format` must be `ulaw_8000` (400), a context must
//! be opened with a single-space text before any other message names it, and more than five unfinished contexts
//! close the socket with code 1008, as ElevenLabs does.
//!
//! Audio is generated on `flush`: `bytes_per_char` μ-law bytes per buffered character, sent in chunks; after
//! `close_context` the remaining audio and then `isFinal` follow. With `pause_after_chunks` the fake holds a
//! context's audio after that many chunks until the client opens another context (the next reply), so tests can
//! cancel at a known point and check that the audio arriving after it — late audio, as a real server's in-flight
//! chunks are — is dropped.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use base64::Engine as _;
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Unfinished contexts allowed per socket.
pub const MAX_CONTEXTS: usize = 5;

/// How the fake behaves.
#[derive(Debug, Clone)]
pub struct FakeElevenLabsOptions {
    /// μ-law bytes generated per buffered text character (80 = 10 ms at 8 kHz).
    pub bytes_per_char: usize,
    /// Size of each audio message.
    pub chunk_bytes: usize,
    /// Hold a context's audio after this many chunks until the client opens another context.
    pub pause_after_chunks: Option<usize>,
}

impl Default for FakeElevenLabsOptions {
    fn default() -> Self {
        FakeElevenLabsOptions { bytes_per_char: 80, chunk_bytes: 800, pause_after_chunks: None }
    }
}

/// A running fake. Dropping it stops the server.
#[derive(Debug)]
pub struct FakeElevenLabs {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

#[derive(Debug)]
struct Shared {
    options: FakeElevenLabsOptions,
    /// Every client message of every connection, in arrival order.
    messages: Mutex<Vec<Value>>,
    /// Close codes the fake sent.
    closes: Mutex<Vec<u16>>,
    shutdown: watch::Sender<bool>,
}

impl Shared {
    fn messages(&self) -> MutexGuard<'_, Vec<Value>> {
        self.messages.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Starts a fake on 127.0.0.1 with an ephemeral port.
pub async fn start(options: FakeElevenLabsOptions) -> std::io::Result<FakeElevenLabs> {
    let shared = Arc::new(Shared {
        options,
        messages: Mutex::new(Vec::new()),
        closes: Mutex::new(Vec::new()),
        shutdown: watch::Sender::new(false),
    });
    let router = Router::new()
        .route("/v1/text-to-speech/{voice_id}/multi-stream-input", get(websocket))
        .with_state(shared.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, router).await {
            tracing::warn!(%error, "fake ElevenLabs server stopped");
        }
    });
    Ok(FakeElevenLabs { addr, shared, task })
}

impl FakeElevenLabs {
    /// `ws://127.0.0.1:<port>`, the value for a client's base URL.
    pub fn base_url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// Every client message so far.
    pub fn messages(&self) -> Vec<Value> {
        self.shared.messages().clone()
    }

    /// The client messages naming `context`.
    pub fn messages_for(&self, context: &str) -> Vec<Value> {
        self.messages().into_iter().filter(|m| m.get("context_id").and_then(Value::as_str) == Some(context)).collect()
    }

    /// Close codes the fake sent (1008 = a limit or ordering rule was broken).
    pub fn close_codes(&self) -> Vec<u16> {
        self.shared.closes.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

impl Drop for FakeElevenLabs {
    fn drop(&mut self) {
        self.shared.shutdown.send_replace(true);
        self.task.abort();
    }
}

async fn websocket(
    State(shared): State<Arc<Shared>>,
    Path(_voice_id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let key = headers.get("xi-api-key").and_then(|v| v.to_str().ok()).unwrap_or_default();
    if key.trim().is_empty() {
        return (StatusCode::UNAUTHORIZED, r#"{"detail":{"status":"invalid_api_key"}}"#).into_response();
    }
    if query.get("output_format").map(String::as_str) != Some("ulaw_8000") {
        return (StatusCode::BAD_REQUEST, "this fake only serves output_format=ulaw_8000").into_response();
    }
    upgrade.read_buffer_size(crate::READ_BUFFER_BYTES).on_upgrade(move |socket| Connection::new(shared, socket).run())
}

#[derive(Debug, Default)]
struct Context {
    text: String,
    sent_chunks: usize,
    /// The client opened another context after this one's audio was held, so it may continue.
    released: bool,
    closing: bool,
}

enum Outgoing {
    Audio(String, Vec<u8>),
    Final(String),
}

struct Connection {
    shared: Arc<Shared>,
    socket: WebSocket,
    contexts: HashMap<String, Context>,
    queue: VecDeque<Outgoing>,
}

impl Connection {
    fn new(shared: Arc<Shared>, socket: WebSocket) -> Self {
        Connection { shared, socket, contexts: HashMap::new(), queue: VecDeque::new() }
    }

    async fn run(mut self) {
        let mut shutdown = self.shared.shutdown.subscribe();
        loop {
            let sendable = self.next_sendable();
            tokio::select! {
                _ = shutdown.changed() => return,
                message = self.socket.recv() => {
                    let Some(Ok(message)) = message else { return };
                    let text = match message {
                        Message::Text(text) => text.to_string(),
                        Message::Close(_) => return,
                        _ => continue,
                    };
                    if let Err((code, reason)) = self.on_message(&text) {
                        self.shared.closes.lock().unwrap_or_else(PoisonError::into_inner).push(code);
                        let frame = CloseFrame { code, reason: reason.into() };
                        let _ = self.socket.send(Message::Close(Some(frame))).await;
                        return;
                    }
                }
                _ = std::future::ready(()), if sendable => {
                    if !self.send_next().await {
                        return;
                    }
                }
            }
        }
    }

    /// Whether the head of the queue may be sent now (not held by `pause_after_chunks`).
    fn next_sendable(&self) -> bool {
        match self.queue.front() {
            None => false,
            Some(Outgoing::Final(_)) => true,
            Some(Outgoing::Audio(id, _)) => match (self.shared.options.pause_after_chunks, self.contexts.get(id)) {
                (Some(limit), Some(context)) => context.sent_chunks < limit || context.released,
                _ => true,
            },
        }
    }

    async fn send_next(&mut self) -> bool {
        let message = match self.queue.pop_front() {
            Some(Outgoing::Audio(id, audio)) => {
                if let Some(context) = self.contexts.get_mut(&id) {
                    context.sent_chunks += 1;
                }
                let audio = base64::engine::general_purpose::STANDARD.encode(audio);
                json!({"audio": audio, "isFinal": false, "contextId": id})
            }
            Some(Outgoing::Final(id)) => {
                self.contexts.remove(&id);
                json!({"isFinal": true, "contextId": id})
            }
            None => return true,
        };
        self.socket.send(Message::Text(message.to_string().into())).await.is_ok()
    }

    /// Applies one client message; `Err` closes the socket with that code and reason.
    fn on_message(&mut self, text: &str) -> Result<(), (u16, &'static str)> {
        let message: Value = serde_json::from_str(text).map_err(|_| (1003, "invalid JSON"))?;
        self.shared.messages().push(message.clone());
        if message.get("close_socket").and_then(Value::as_bool) == Some(true) {
            return Err((1000, "close_socket"));
        }
        let Some(id) = message.get("context_id").and_then(Value::as_str).map(str::to_owned) else {
            return Ok(());
        };
        let text = message.get("text").and_then(Value::as_str);
        if !self.contexts.contains_key(&id) {
            if text != Some(" ") {
                return Err((1008, "context must be initialized with a single-space text first"));
            }
            if self.contexts.len() >= MAX_CONTEXTS {
                return Err((1008, "max_active_conversations"));
            }
            for held in self.contexts.values_mut() {
                held.released = true;
            }
            self.contexts.insert(id, Context::default());
            return Ok(());
        }
        let options = self.shared.options.clone();
        let Some(context) = self.contexts.get_mut(&id) else { return Ok(()) };
        if let Some(piece) = text {
            context.text.push_str(piece);
        }
        if message.get("flush").and_then(Value::as_bool) == Some(true) {
            let characters = context.text.trim().chars().count();
            context.text.clear();
            let audio: Vec<u8> = (0..characters * options.bytes_per_char).map(|n| (n % 251) as u8).collect();
            for chunk in audio.chunks(options.chunk_bytes.max(1)) {
                self.queue.push_back(Outgoing::Audio(id.clone(), chunk.to_vec()));
            }
        }
        if message.get("close_context").and_then(Value::as_bool) == Some(true) {
            if let Some(context) = self.contexts.get_mut(&id) {
                if !context.closing {
                    context.closing = true;
                    self.queue.push_back(Outgoing::Final(id));
                }
            }
        }
        Ok(())
    }
}
