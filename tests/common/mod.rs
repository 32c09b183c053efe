//! Shared helpers for the integration tests: a real Parley server on 127.0.0.1 and signed requests.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use parley::call::echo::EchoFactory;
use parley::config::{Config, Secret, Secrets};
use parley::edge::{self, RunningServer};
use parley::twilio::signature::SignatureValidator;
use sim_caller::{SimCall, StartOptions};

pub const AUTH_TOKEN: &str = "test-auth-token";
/// The public URL Twilio is told about; the tests reach the server on 127.0.0.1, as through a proxy.
pub const PUBLIC_URL: &str = "https://voice.parley.test";

pub fn test_config() -> Config {
    let mut config = Config::default();
    config.server.listen = "127.0.0.1:0".parse().expect("address");
    config.server.public_url = Some(PUBLIC_URL.into());
    config.server.shutdown_grace_secs = 1;
    config.agent.echo_delay_ms = 100;
    config
}

pub fn secrets() -> Secrets {
    Secrets { twilio_auth_token: Some(Secret::new(AUTH_TOKEN.into())) }
}

/// Logs to the test output when RUST_LOG is set.
pub fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "off".into());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
}

pub async fn start_server(config: Config) -> RunningServer {
    init_logs();
    let factory = Arc::new(EchoFactory { delay: Duration::from_millis(config.agent.echo_delay_ms) });
    edge::start(config, secrets(), factory, None).await.expect("server starts")
}

pub fn validator() -> SignatureValidator {
    SignatureValidator::new(AUTH_TOKEN)
}

pub fn media_url(server: &RunningServer) -> String {
    format!("ws://{}/twilio/media", server.local_addr)
}

/// The signature Twilio would put on the media upgrade.
pub fn media_signature() -> String {
    validator().sign(&format!("{}/twilio/media", PUBLIC_URL.replace("https://", "wss://")), &[])
}

/// Connects and starts a call the way Twilio would.
pub async fn place_call(server: &RunningServer) -> SimCall {
    let mut call = SimCall::connect(&media_url(server), Some(&media_signature())).await.expect("upgrade accepted");
    call.start(&StartOptions::default()).expect("start sent");
    call
}

/// Waits until the registry holds `n` calls.
pub async fn wait_active(server: &RunningServer, n: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while server.registry().active() != n {
        assert!(tokio::time::Instant::now() < deadline, "expected {n} live calls, have {}", server.registry().active());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A TCP relay between Parley and a provider fake that a test can cut and hold, as a network can: live connections
/// cut at once (no close frame), and new connections accepted but never relayed (a handshake that never completes)
/// until released.
pub struct TcpGate {
    pub addr: std::net::SocketAddr,
    state: Arc<GateState>,
}

struct GateState {
    upstream: std::sync::Mutex<Option<std::net::SocketAddr>>,
    held: tokio::sync::watch::Sender<bool>,
    cut: tokio::sync::watch::Sender<u64>,
}

impl TcpGate {
    pub async fn start() -> TcpGate {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("gate binds");
        let addr = listener.local_addr().expect("gate address");
        let state = Arc::new(GateState {
            upstream: std::sync::Mutex::new(None),
            held: tokio::sync::watch::channel(false).0,
            cut: tokio::sync::watch::channel(0).0,
        });
        let serving = Arc::clone(&state);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(relay(client, Arc::clone(&serving)));
            }
        });
        TcpGate { addr, state }
    }

    /// Where connections are relayed to.
    pub fn set_upstream(&self, upstream: std::net::SocketAddr) {
        *self.state.upstream.lock().expect("gate lock") = Some(upstream);
    }

    /// Drops every relayed connection now.
    pub fn cut(&self) {
        self.state.cut.send_modify(|n| *n += 1);
    }

    /// New connections are accepted but not relayed while held.
    pub fn hold(&self, held: bool) {
        self.state.held.send_replace(held);
    }
}

async fn relay(mut client: tokio::net::TcpStream, state: Arc<GateState>) {
    let mut held = state.held.subscribe();
    if held.wait_for(|held| !*held).await.is_err() {
        return;
    }
    let Some(upstream) = *state.upstream.lock().expect("gate lock") else { return };
    let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await else { return };
    let mut cut = state.cut.subscribe();
    cut.mark_unchanged();
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
        // Both sockets close without a WebSocket close frame: the peer sees the connection fail.
        _ = cut.changed() => {}
    }
}
