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

/// The signature Twilio would put on an upgrade of the plain Stream URL (which has no token; refused while
/// signatures are validated).
pub fn media_signature() -> String {
    validator().sign(&format!("{}/twilio/media", PUBLIC_URL.replace("https://", "wss://")), &[])
}

/// The voice webhook's form for a call, signed as Twilio signs it.
pub fn signed_voice_form(call_sid: &str) -> (String, String) {
    let params: Vec<(String, String)> = [("CallSid", call_sid), ("From", "+15550001111"), ("To", "+15550002222")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let body = form_urlencoded::Serializer::new(String::new()).extend_pairs(&params).finish();
    (body, validator().sign(&format!("{PUBLIC_URL}/twilio/voice"), &params))
}

/// What Twilio does before opening a Media Stream: posts the voice webhook for `call_sid` and reads the Stream URL
/// out of the TwiML. Returns the URL to reach Parley at (on `addr`, as through the ingress) and the signature
/// Twilio puts on the upgrade (over the public URL, token included).
pub async fn stream_request(addr: &str, call_sid: &str) -> (String, String) {
    let (body, signature) = signed_voice_form(call_sid);
    let response = reqwest::Client::new()
        .post(format!("http://{addr}/twilio/voice"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-twilio-signature", signature)
        .body(body)
        .send()
        .await
        .expect("webhook answers");
    assert_eq!(response.status(), 200, "the webhook answers with TwiML");
    let twiml = response.text().await.expect("TwiML");
    let public = twiml
        .split("<Stream url=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no Stream URL in {twiml}"))
        .replace("&amp;", "&");
    let public_ws_base = PUBLIC_URL.replace("https://", "wss://");
    let path = public.strip_prefix(&public_ws_base).unwrap_or_else(|| panic!("{public} is not under {PUBLIC_URL}"));
    (format!("ws://{addr}{path}"), validator().sign(&public, &[]))
}

/// Opens the Media Stream of `call_sid` the way Twilio does: webhook first, then the Stream URL from its TwiML.
pub async fn connect_call(addr: &str, call_sid: &str) -> Result<SimCall, sim_caller::SimError> {
    let (url, signature) = stream_request(addr, call_sid).await;
    SimCall::connect(&url, Some(&signature)).await
}

/// Connects and starts a call the way Twilio would.
pub async fn place_call(server: &RunningServer) -> SimCall {
    let options = StartOptions::default();
    let mut call = connect_call(&server.local_addr.to_string(), &options.call_sid).await.expect("upgrade accepted");
    call.start(&options).expect("start sent");
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

/// A `parley` child process, killed and reaped on drop.
pub struct ParleyProcess {
    pub child: std::process::Child,
}

impl Drop for ParleyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `command` (`parley serve` with its environment) and returns once it listens, with the address it bound
/// (start-up housekeeping is done by then).
pub fn spawn_listening(mut command: std::process::Command) -> (ParleyProcess, String) {
    use std::io::{BufRead, BufReader};
    let child = command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("parley starts");
    let mut parley = ParleyProcess { child };
    let mut reader = BufReader::new(parley.child.stdout.take().expect("stdout"));
    let mut line = String::new();
    loop {
        line.clear();
        assert!(reader.read_line(&mut line).expect("reads") > 0, "parley exited before listening");
        if let Some(addr) = line.trim().strip_prefix("parley listening on ") {
            return (parley, addr.to_owned());
        }
    }
}

/// A reply long enough for the caller to cut it off.
pub const LONG_REPLY: &str = "Let me tell you about our restaurant. We have tables by the window, tables on the \
    terrace, and a private room for larger parties. Our kitchen serves seasonal dishes, and our wine list is long.";

/// The fake model of a call with a barge-in: the long reply to the first line, a short one to the second.
pub fn barge_in_model() -> fake_providers::openai::FakeOpenAiOptions {
    use fake_providers::openai::{FakeOpenAiOptions, FakeReply};
    FakeOpenAiOptions::default()
        .rule("table for two", FakeReply::text(LONG_REPLY))
        .rule("seven", FakeReply::text("Seven it is."))
        .delays(Duration::from_millis(300), Duration::from_millis(60))
}

/// The caller's side of a call with a barge-in: a line, `heard_frames` of the long reply, speech over it until
/// Parley sends `clear`, then a pause for the second turn's answer; then the caller hangs up.
pub async fn talk_over_the_agent(rig: &mut loadgen::Rig, mut call: SimCall, heard_frames: usize) {
    use parley::twilio::messages::OutboundMessage;
    use sim_caller::{silence, speech, Received};
    loadgen::say(&mut call, 1_000).await;
    loadgen::listen_until(&mut call, "part of the reply", |log| loadgen::media_count(log) >= heard_frames).await;
    call.stream_audio(&speech(800)).await.expect("speech sent");
    call.wait_until("clear", loadgen::WAIT, |log| {
        log.iter().any(|r| matches!(r, Received::Message { message: OutboundMessage::Clear { .. }, .. }))
    })
    .await
    .expect("clear");
    // Twilio's stream goes on with silence: the recogniser sends the words, which make the barge-in real.
    call.stream_audio(&silence(600)).await.expect("silence sent");
    rig.next_report().await;
    rig.next_report().await;
    call.hang_up().await;
}
