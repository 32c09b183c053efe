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
