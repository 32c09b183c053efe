//! Fuzz-style: thousands of random and mutated Media Stream frames against live sessions of a real server, then a
//! look at the process: no panic, memory bounded, every call slot freed, and a normal call still served.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine;
use common::*;
use sim_caller::{tone, SimCall, StartOptions};

const WAIT: Duration = Duration::from_secs(10);
const SESSIONS: usize = 6;
const FRAMES_PER_SESSION: usize = 600;

static PANICS: AtomicUsize = AtomicUsize::new(0);

/// A small deterministic generator (xorshift64*): the same frames on every run, so a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

const NUMBERS: [&str; 10] =
    ["0", "1", "-1", "18446744073709551615", "18446744073709551616", "1e308", "\"\"", "null", "\"99999999999\"", "[]"];

/// Frames Twilio sends, as templates to mutate.
fn templates(rng: &mut Rng) -> Vec<String> {
    let payload = base64::engine::general_purpose::STANDARD.encode(vec![0x7fu8; 160]);
    let stream = StartOptions::default().stream_sid;
    vec![
        format!(
            r#"{{"event":"media","sequenceNumber":"{}","media":{{"track":"inbound","chunk":"{}","timestamp":"{}","payload":"{payload}"}},"streamSid":"{stream}"}}"#,
            rng.below(1_000),
            rng.below(1_000),
            rng.below(100_000)
        ),
        format!(
            r#"{{"event":"dtmf","streamSid":"{stream}","dtmf":{{"track":"inbound_track","digit":"{}"}}}}"#,
            rng.below(10)
        ),
        format!(r#"{{"event":"mark","streamSid":"{stream}","mark":{{"name":"echo-{}"}}}}"#, rng.below(5)),
        r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#.to_owned(),
        format!(
            r#"{{"event":"start","start":{{"streamSid":"{stream}","callSid":"CA00000000000000000000000000000001","tracks":["inbound"],"customParameters":{{}},"mediaFormat":{{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1}}}},"streamSid":"{stream}"}}"#
        ),
    ]
}

/// One hostile frame: random bytes, a mutated template, hostile numbers, deep nesting or a huge string.
fn hostile_frame(rng: &mut Rng) -> String {
    let mut frames = templates(rng);
    let template = frames.swap_remove(rng.below(frames.len()));
    match rng.below(8) {
        0 => (0..rng.below(300)).map(|_| char::from_u32(rng.below(0x3000) as u32).unwrap_or('?')).collect(),
        1 => {
            let mut bytes = template.into_bytes();
            for _ in 0..1 + rng.below(8) {
                let i = rng.below(bytes.len());
                bytes[i] = rng.next() as u8;
            }
            String::from_utf8_lossy(&bytes).into_owned()
        }
        2 => {
            let cut = rng.below(template.len());
            let cut = (0..=cut).rev().find(|&i| template.is_char_boundary(i)).unwrap_or(0);
            template[..cut].to_owned()
        }
        3 => {
            // A counter replaced by a hostile value.
            let number = rng.pick(&NUMBERS);
            template.replacen(&format!("\"{}\"", rng.below(1_000)), number, 1).replacen("\"1\"", number, 1)
        }
        4 => format!("{}{}", "[".repeat(1 + rng.below(5_000)), "]".repeat(rng.below(5_000))),
        5 => template.replacen("echo-", &"\u{1b}[31m\r\n".repeat(1 + rng.below(2_000)), 1),
        6 => template.replacen("inbound", rng.pick(&["outbound", "", "inbound\n", "Inbound", "in\u{0}bound"]), 1),
        _ => template,
    }
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).map(str::to_owned))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_hostile_frames_leave_the_server_whole() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::SeqCst);
        default_hook(info);
    }));
    let mut config = test_config();
    config.twilio.validate_signatures = false;
    config.server.max_concurrent_calls = 2;
    let server = start_server(config).await;
    let rss_before = rss_kib();
    let mut rng = Rng(0x5eed_1234_abcd_ef01);
    let mut sent = 0;
    for session in 0..SESSIONS {
        let mut call = SimCall::connect(&media_url(&server), None).await.expect("upgrade accepted");
        // Every other session fuzzes the call before its start too; the rest start properly first.
        if session % 2 == 0 {
            call.start(&StartOptions::default()).unwrap();
        }
        for _ in 0..FRAMES_PER_SESSION {
            if rng.below(20) == 0 {
                let _ = call.send_binary(vec![rng.next() as u8; rng.below(4_096)]);
            } else if call.send_text(hostile_frame(&mut rng)).is_err() {
                break; // Parley closed the stream (a hostile start or stop): that is allowed.
            }
            sent += 1;
        }
        call.hang_up().await;
        wait_active(&server, 0).await;
    }
    assert!(sent >= SESSIONS * FRAMES_PER_SESSION / 2, "only {sent} frames went out");
    assert_eq!(PANICS.load(Ordering::SeqCst), 0, "a hostile frame made Parley panic");
    assert_eq!(server.registry().active(), 0, "every call slot was freed");
    let grown_kib = rss_kib().saturating_sub(rss_before);
    eprintln!("{sent} hostile frames; resident memory grew {grown_kib} KiB");
    assert!(grown_kib < 128 * 1024, "memory grew by {grown_kib} KiB");

    // A normal call is still served.
    let mut call = SimCall::connect(&media_url(&server), None).await.expect("upgrade accepted");
    call.start(&StartOptions::default()).unwrap();
    call.stream_audio(&tone(440.0, 300, 8_000)).await.unwrap();
    call.wait_until("an echo", WAIT, |log| !log.is_empty()).await.unwrap();
    call.hang_up().await;
    wait_active(&server, 0).await;
}
