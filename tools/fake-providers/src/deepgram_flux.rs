//! Fake Deepgram Flux (`/v2/listen`) WebSocket server.
//!
//! Serves `/v2/listen` on 127.0.0.1 (ephemeral port). It requires `Authorization: Token …` (401 otherwise) and
//! `encoding=mulaw&sample_rate=8000` (400 otherwise: Parley sends Twilio's audio untouched), then replays a JSON
//! Lines fixture from `proto-fixtures/deepgram_flux/`: the first line (`Connected`) at once, each later line after
//! another `bytes_per_message` bytes of audio arrived, so turn events follow the audio like the real service's.
//! `{"type":"CloseStream"}` closes the socket (without an `EndOfTurn`, as Flux does). Query, control messages and
//! the amount of audio are recorded.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::task::JoinHandle;

/// How the fake behaves.
#[derive(Debug, Clone)]
pub struct FakeFluxOptions {
    /// Fixture replayed on every connection (e.g. `"eager_then_end.jsonl"`).
    pub fixture: String,
    /// Audio bytes between two replayed messages (1600 = 200 ms of μ-law 8 kHz).
    pub bytes_per_message: usize,
    /// Where fixture files are read from.
    pub fixtures_dir: PathBuf,
}

impl FakeFluxOptions {
    /// Replays `proto-fixtures/deepgram_flux/<fixture>`.
    pub fn replay(fixture: impl Into<String>) -> Self {
        FakeFluxOptions { fixture: fixture.into(), bytes_per_message: 1600, fixtures_dir: default_fixtures_dir() }
    }
}

/// `proto-fixtures/deepgram_flux` of this workspace.
pub fn default_fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto-fixtures/deepgram_flux")
}

/// What one connection did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FluxConnection {
    pub query: HashMap<String, String>,
    pub audio_bytes: usize,
    /// Client text messages (`CloseStream`, …).
    pub control: Vec<String>,
}

/// A running fake. Dropping it stops the server.
#[derive(Debug)]
pub struct FakeFlux {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

#[derive(Debug)]
struct Shared {
    lines: Vec<String>,
    bytes_per_message: usize,
    connections: Mutex<Vec<FluxConnection>>,
}

impl Shared {
    fn connections(&self) -> MutexGuard<'_, Vec<FluxConnection>> {
        self.connections.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Starts a fake on 127.0.0.1 with an ephemeral port; the fixture is read now.
pub async fn start(options: FakeFluxOptions) -> std::io::Result<FakeFlux> {
    let text = std::fs::read_to_string(options.fixtures_dir.join(&options.fixture))?;
    let lines = text.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned).collect();
    let shared = Arc::new(Shared {
        lines,
        bytes_per_message: options.bytes_per_message.max(1),
        connections: Mutex::new(Vec::new()),
    });
    let router = Router::new().route("/v2/listen", get(listen)).with_state(shared.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, router).await {
            tracing::warn!(%error, "fake Flux server stopped");
        }
    });
    Ok(FakeFlux { addr, shared, task })
}

impl FakeFlux {
    /// `ws://127.0.0.1:<port>`, the value for a client's base URL.
    pub fn base_url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// Every connection so far.
    pub fn connections(&self) -> Vec<FluxConnection> {
        self.shared.connections().clone()
    }
}

impl Drop for FakeFlux {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn listen(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let auth = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or_default();
    if !auth.starts_with("Token ") || auth.len() <= "Token ".len() {
        return (StatusCode::UNAUTHORIZED, r#"{"err_code":"INVALID_AUTH","err_msg":"Invalid credentials."}"#)
            .into_response();
    }
    if query.get("encoding").map(String::as_str) != Some("mulaw")
        || query.get("sample_rate").map(String::as_str) != Some("8000")
    {
        return (StatusCode::BAD_REQUEST, "this fake expects encoding=mulaw&sample_rate=8000").into_response();
    }
    let index = {
        let mut connections = shared.connections();
        connections.push(FluxConnection { query, ..FluxConnection::default() });
        connections.len() - 1
    };
    upgrade.read_buffer_size(crate::READ_BUFFER_BYTES).on_upgrade(move |socket| serve(shared, index, socket))
}

async fn serve(shared: Arc<Shared>, index: usize, mut socket: WebSocket) {
    let mut lines = shared.lines.iter();
    if let Some(first) = lines.next() {
        if socket.send(Message::Text(first.clone().into())).await.is_err() {
            return;
        }
    }
    let mut pending = 0;
    while let Some(Ok(message)) = socket.recv().await {
        match message {
            Message::Binary(audio) => {
                pending += audio.len();
                if let Some(connection) = shared.connections().get_mut(index) {
                    connection.audio_bytes += audio.len();
                }
                while pending >= shared.bytes_per_message {
                    pending -= shared.bytes_per_message;
                    let Some(line) = lines.next() else { break };
                    if socket.send(Message::Text(line.clone().into())).await.is_err() {
                        return;
                    }
                }
            }
            Message::Text(text) => {
                let close = text.contains("CloseStream");
                if let Some(connection) = shared.connections().get_mut(index) {
                    connection.control.push(text.to_string());
                }
                if close {
                    let _ = socket.send(Message::Close(None)).await;
                    return;
                }
            }
            Message::Close(_) => return,
            _ => {}
        }
    }
}
