//! The edge under the resource attacks it must withstand: half-open HTTP connections, media streams that go silent,
//! peers that stop reading, replayed upgrades, hostile `start` messages. A real server on 127.0.0.1 with short,
//! configured timeouts.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use common::*;
use parley::config::Config;
use parley::twilio::stream_token::{stream_url_with_token, unix_now, StreamTokens};
use sim_caller::{tone, Received, SimCall, SimError, StartOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

const WAIT: Duration = Duration::from_secs(10);

/// Everything Parley logs in this test binary, as its text log would show it (ANSI colours on, as on a terminal).
fn captured_logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&logs);
        let _ = tracing_subscriber::fmt()
            .with_env_filter("info")
            .with_writer(move || LogWriter(Arc::clone(&sink)))
            .try_init();
        logs
    })
    .clone()
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

async fn start(config: Config) -> parley::edge::RunningServer {
    captured_logs();
    start_server(config).await
}

/// Waits until the peer closes the connection (read returns end of stream or an error); returns when it did.
async fn closed_within(mut stream: TcpStream, within: Duration) -> Option<Instant> {
    let mut buf = [0u8; 1024];
    let deadline = Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(Instant::now()),
            Ok(Ok(_)) => continue, // a 408 or similar before the close
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_http_connections_are_closed_after_the_header_timeout_and_calls_still_connect() {
    let mut config = test_config();
    config.server.header_read_timeout_ms = 3_000;
    let server = start(config).await;
    let addr = server.local_addr;
    // 200 connections: half send part of a request, half send nothing at all.
    let opened = Instant::now();
    let mut idle = Vec::new();
    for n in 0..200 {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        if n % 2 == 0 {
            stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: parley\r\nX-Slow: ").await.unwrap();
        }
        idle.push(stream);
    }
    // With all 200 open, health answers and a real call connects and is served.
    let health = reqwest::get(format!("http://{addr}/healthz")).await.unwrap();
    assert_eq!(health.text().await.unwrap(), "ok");
    let mut call = place_call(&server).await;
    call.stream_audio(&tone(440.0, 200, 8_000)).await.unwrap();
    call.wait_until("an echo", WAIT, |log| !log.is_empty()).await.unwrap();
    assert!(opened.elapsed() < Duration::from_millis(2_900), "the call was placed while all 200 were open");

    let closes = futures_util::future::join_all(idle.into_iter().map(|s| closed_within(s, WAIT))).await;
    let still_open = closes.iter().filter(|c| c.is_none()).count();
    assert_eq!(still_open, 0, "{still_open} of 200 half-open connections outlived the header timeout");
    let last = closes.iter().flatten().max().copied().unwrap();
    let first = closes.iter().flatten().min().copied().unwrap();
    assert!(first - opened >= Duration::from_millis(2_900), "closed before the timeout: {:?}", first - opened);
    eprintln!("200 half-open connections closed {:?}–{:?} after opening", first - opened, last - opened);
    // The upgraded call is not an HTTP connection any more: the header timeout did not touch it.
    assert_eq!(server.registry().active(), 1);
    call.hang_up().await;
    wait_active(&server, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_pending_cap_are_closed_but_upgraded_calls_do_not_count() {
    let mut config = test_config();
    config.server.max_pending_connections = 20;
    config.server.header_read_timeout_ms = 1_000;
    let server = start(config).await;
    let addr = server.local_addr;
    // Upgraded streams leave the pending count: more calls than the cap connect one after another.
    let mut calls = Vec::new();
    for n in 0..25u32 {
        let sid = format!("CA{n:032x}");
        let mut call = connect_call(&addr.to_string(), &sid).await.expect("upgrade accepted");
        call.start(&StartOptions { call_sid: sid, ..StartOptions::default() }).unwrap();
        calls.push(call);
    }
    wait_active(&server, 25).await;
    let refused_before = parley::edge::connections_refused_at_cap();
    let mut idle = Vec::new();
    for _ in 0..30 {
        idle.push(TcpStream::connect(addr).await.unwrap());
    }
    // Ten are over the cap and closed at once; the 20 others wait for the header timeout.
    let closes =
        futures_util::future::join_all(idle.into_iter().map(|s| closed_within(s, Duration::from_millis(500)))).await;
    // (Connections of the webhook requests above may still hold a slot or two for a moment.)
    let closed_at_once = closes.iter().filter(|c| c.is_some()).count();
    assert!((10..30).contains(&closed_at_once), "{closed_at_once} of 30 closed at once; 10 are over the cap");
    assert!(parley::edge::connections_refused_at_cap() >= refused_before + 10);
    // Once the header timeout frees the slots, new connections are served again.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let health = reqwest::get(format!("http://{addr}/healthz")).await.unwrap();
    assert_eq!(health.status(), 200);
    for call in calls {
        call.hang_up().await;
    }
    wait_active(&server, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_silent_after_start_is_closed_after_the_idle_timeout_and_its_slot_freed() {
    let mut config = test_config();
    config.server.media_idle_timeout_ms = 800;
    config.server.max_concurrent_calls = 1;
    let server = start(config).await;
    let mut call = place_call(&server).await;
    call.stream_audio(&tone(440.0, 200, 8_000)).await.unwrap();
    let quiet_from = Instant::now();
    wait_active(&server, 1).await;
    // The peer keeps its connection open but sends no message.
    assert_eq!(call.wait_closed(WAIT).await.unwrap(), Some(1008), "closed as a policy violation");
    let closed_after = quiet_from.elapsed();
    assert!(closed_after >= Duration::from_millis(750), "closed after {closed_after:?}, before the idle timeout");
    let reason = call.received().into_iter().find_map(|r| match r {
        Received::Closed { reason, .. } => Some(reason),
        _ => None,
    });
    assert!(reason.is_some_and(|r| r.contains("idle")), "the close says why");
    wait_active(&server, 0).await;
    eprintln!("a silent stream was closed {closed_after:?} after its last message");
    // The slot is free: the next call is taken.
    let mut next = place_call(&server).await;
    next.stream_audio(&tone(440.0, 200, 8_000)).await.unwrap();
    next.wait_until("an echo", WAIT, |log| !log.is_empty()).await.unwrap();
    next.hang_up().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_upgrade_is_refused() {
    let server = start(test_config()).await;
    let addr = server.local_addr.to_string();
    let options = StartOptions::default();
    let (url, signature) = stream_request(&addr, &options.call_sid).await;
    let mut call = SimCall::connect(&url, Some(&signature)).await.expect("the first upgrade is accepted");
    call.start(&options).unwrap();
    wait_active(&server, 1).await;
    // The same request again, on a new connection: while the call is live, and after it ended.
    assert_forbidden(SimCall::connect(&url, Some(&signature)).await, "a replay during the call");
    call.hang_up().await;
    wait_active(&server, 0).await;
    assert_forbidden(SimCall::connect(&url, Some(&signature)).await, "a replay after the call");
    assert_eq!(server.registry().active(), 0);
}

fn assert_forbidden(result: Result<SimCall, SimError>, what: &str) {
    match result {
        Err(SimError::Connect(tokio_tungstenite::tungstenite::Error::Http(response))) => {
            assert_eq!(response.status(), 403, "{what}")
        }
        Err(other) => panic!("{what}: unexpected error {other}"),
        Ok(_) => panic!("{what} was accepted"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_or_foreign_tokens_are_refused_and_start_must_name_the_tokens_call() {
    let server = start(test_config()).await;
    let base = format!("ws://{}/twilio/media", server.local_addr);
    let public = PUBLIC_URL.replace("https://", "wss://") + "/twilio/media";
    let call_sid = StartOptions::default().call_sid;
    let open = |token: String| {
        let signature = validator().sign(&stream_url_with_token(&public, &token), &[]);
        let url = stream_url_with_token(&base, &token);
        async move { SimCall::connect(&url, Some(&signature)).await }
    };
    let tokens = StreamTokens::from_auth_token(AUTH_TOKEN);
    for (token, what) in [
        (tokens.mint(&call_sid, unix_now() - 1), "expired"),
        (StreamTokens::from_auth_token("another account").mint(&call_sid, unix_now() + 60), "foreign"),
        (format!("{call_sid}.1.2.abc"), "forged"),
    ] {
        assert_forbidden(open(token).await, what);
    }
    // A valid token, but `start` names another call: the stream is closed before anything starts.
    let mut call = open(tokens.mint(&call_sid, unix_now() + 60)).await.expect("upgrade accepted");
    call.start(&StartOptions { call_sid: "CAffffffffffffffffffffffffffffffff".into(), ..StartOptions::default() })
        .unwrap();
    assert_eq!(call.wait_closed(WAIT).await.unwrap(), Some(1008));
    wait_active(&server, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crlf_call_sid_is_refused_at_start_and_never_reaches_the_log_raw() {
    let logs = captured_logs();
    let mut config = test_config();
    // Tokens off, so the hostile SID reaches `start` (with them on the token check refuses it even earlier).
    config.twilio.validate_signatures = false;
    let server = start(config).await;
    let forged = "CA0000\r\n2026-11-29T00:00:00Z  INFO parley: FORGED-LINE \u{1b}[31mred";
    let mut call = SimCall::connect(&media_url(&server), None).await.expect("upgrade accepted");
    call.start(&StartOptions { call_sid: forged.into(), ..StartOptions::default() }).unwrap();
    assert_eq!(call.wait_closed(WAIT).await.unwrap(), Some(1008), "closed at start");
    wait_active(&server, 0).await;
    // A hostile DTMF digit on a good call is skipped, and not logged raw either.
    let mut good = SimCall::connect(&media_url(&server), None).await.expect("upgrade accepted");
    good.start(&StartOptions::default()).unwrap();
    good.send_dtmf("1\r\nFORGED-DIGIT-LINE").unwrap();
    good.send_dtmf("5").unwrap();
    good.stream_audio(&tone(440.0, 100, 8_000)).await.unwrap();
    good.hang_up().await;
    wait_active(&server, 0).await;

    let text = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    assert!(text.contains("refused the stream's start message"), "the refusal is logged:\n{text}");
    for line in text.lines() {
        assert!(!line.contains("FORGED-LINE") || !line.trim_start().starts_with("2026-11-29"), "{line:?}");
        assert!(!line.starts_with("FORGED-DIGIT-LINE"), "a digit broke a log line: {line:?}");
    }
    assert!(!text.contains("\u{1b}[31mred"), "an escape sequence from the caller reached the log");
    assert!(!text.contains("FORGED-LINE"), "the hostile SID is not even logged escaped: it never got past start");
}

/// A peer that connects a socket announcing a small segment size and receive buffer, so that the few seconds of
/// audio Parley writes to it fill the connection when it does not read.
async fn small_window_socket(addr: std::net::SocketAddr) -> TcpStream {
    use std::os::fd::AsRawFd;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    // Parley's send buffer is sized from the segment size the peer announces (on loopback, 64 KiB segments make it
    // megabytes): 536 bytes keeps it to tens of kilobytes.
    let mss: libc::c_int = 536;
    // SAFETY: a valid descriptor, an int option and its size, as setsockopt(2) documents for TCP_MAXSEG.
    let set = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_MAXSEG,
            (&mss as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(set, 0, "TCP_MAXSEG: {}", std::io::Error::last_os_error());
    socket.connect(addr).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_stops_reading_is_ended_after_the_idle_timeout_though_it_keeps_sending() {
    use futures_util::SinkExt;
    use loadgen::wire;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::Message;

    let logs = captured_logs();
    let mut config = test_config();
    config.server.media_idle_timeout_ms = 1_000;
    config.server.max_concurrent_calls = 1;
    let server = start(config).await;
    let options = StartOptions { call_sid: format!("CA{:032x}", 0x5eed_u32), ..StartOptions::default() };
    let (url, signature) = stream_request(&server.local_addr.to_string(), &options.call_sid).await;
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert("x-twilio-signature", signature.parse().unwrap());
    let stream = small_window_socket(server.local_addr).await;
    let (mut socket, _) = tokio_tungstenite::client_async(request, stream).await.expect("upgrade accepted");
    socket.send(Message::text(wire::start(&options.stream_sid, &options.call_sid))).await.unwrap();
    wait_active(&server, 1).await;
    // The caller speaks without a pause (the echo agent plays it all back) and never reads a byte of it: the peer is
    // not silent, so only the writes that wait for it can tell it is gone.
    let stream_sid = options.stream_sid.clone();
    let speaking = tokio::spawn(async move {
        let frame = tone(440.0, 20, 8_000);
        let payload = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &frame);
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        let mut media = String::new();
        for n in 0u64.. {
            tick.tick().await;
            wire::write_media(&mut media, &stream_sid, n + 2, n + 1, n * 20, &payload);
            if socket.send(Message::text(media.as_str())).await.is_err() {
                break;
            }
        }
    });
    let began = Instant::now();
    let deadline = began + Duration::from_secs(60);
    while server.registry().active() != 0 {
        assert!(Instant::now() < deadline, "a peer that reads nothing still holds its call after 60 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("a peer that stopped reading was ended {:?} after it started speaking", began.elapsed());
    let text = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    assert!(text.contains("stopped reading"), "the end says why:\n{text}");
    speaking.abort();
    // The slot is free: the next call is taken and served.
    let mut next = place_call(&server).await;
    next.stream_audio(&tone(440.0, 200, 8_000)).await.unwrap();
    next.wait_until("an echo", WAIT, |log| !log.is_empty()).await.unwrap();
    next.hang_up().await;
}
