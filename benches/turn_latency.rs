//! Parley's own added latency on the end-of-speech → first-audio path.
//!
//! Simulated callers hold conversations through fake providers set to the seed's figures (STT finalize 200 ms, LLM
//! first token 300 ms then a token every 60 ms, TTS first audio 90 ms). The reply's first sentence ends exactly at a
//! token boundary, so a chunker that waited for the next token to see a space would hold it 60 ms. Each turn's record
//! separates provider time from Parley's share — turn decision → LLM request, first piece's text complete → TTS
//! request (the chunker's hold included), TTS audio → Twilio — and the benchmark prints the distribution. Run with
//! `cargo bench --bench turn_latency` (PARLEY_BENCH_TURNS sets the number of turns).

use std::time::Duration;

use fake_providers::cartesia::FakeCartesiaOptions;
use fake_providers::deepgram::FakeDeepgramOptions;
use fake_providers::openai::{FakeOpenAiOptions, FakeReply};
use loadgen::{percentile, say, Rig, RigOptions};
use parley::engine::latency::TurnLatency;

const CALLS: u32 = 4;

fn main() {
    let turns_per_call: usize = std::env::var("PARLEY_BENCH_TURNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(10, |t: usize| t.div_ceil(CALLS as usize));
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let reports = runtime.block_on(run(turns_per_call));
    print_report(&reports);
}

async fn run(turns_per_call: usize) -> Vec<TurnLatency> {
    let options = RigOptions {
        openai: FakeOpenAiOptions::default()
            // The fake streams a word or a punctuation mark per token: the first sentence's full stop arrives as a
            // token of its own, and the next token comes 60 ms later.
            .fallback(FakeReply::text("Okay, let me check that. Your table is booked for seven, see you then."))
            .delays(Duration::from_millis(300), Duration::from_millis(60)),
        deepgram: FakeDeepgramOptions { finalize_delay: Duration::from_millis(200), ..FakeDeepgramOptions::default() },
        cartesia: FakeCartesiaOptions {
            first_audio_delay: Duration::from_millis(90),
            ..FakeCartesiaOptions::default()
        },
        ..RigOptions::default()
    };
    let mut rig = Rig::start(options).await;
    // Calls run one after another so each turn sees an idle machine: this measures Parley's path, not load.
    let mut reports = Vec::new();
    for n in 0..CALLS {
        eprintln!("call {} of {CALLS}: {turns_per_call} turns", n + 1);
        let mut call = rig.call(n + 1).await;
        for _ in 0..turns_per_call {
            say(&mut call, 900).await;
            reports.push(rig.next_report().await);
            // Let the reply play out before the next turn.
            call.stream_audio(&sim_caller::silence(2_800)).await.expect("silence");
        }
        call.hang_up().await;
    }
    reports
}

fn millis(values: impl Iterator<Item = Option<Duration>>) -> Vec<f64> {
    let mut v: Vec<f64> = values.flatten().map(|d| d.as_secs_f64() * 1000.0).collect();
    v.sort_by(|a, b| a.total_cmp(b));
    v
}

fn print_report(reports: &[TurnLatency]) {
    let between = |from: fn(&TurnLatency) -> Option<tokio::time::Instant>,
                   to: fn(&TurnLatency) -> Option<tokio::time::Instant>| {
        millis(reports.iter().map(move |r| Some(to(r)?.saturating_duration_since(from(r)?))))
    };
    let rows: Vec<(&str, Vec<f64>)> = vec![
        ("parley added (total)", millis(reports.iter().map(TurnLatency::parley_added))),
        ("  end of turn -> LLM request", between(|r| r.end_of_turn, |r| r.llm_request_sent)),
        ("  first piece ready -> TTS request", between(|r| r.first_piece_ready, |r| r.first_tts_request)),
        ("    of which chunker hold", millis(reports.iter().map(TurnLatency::chunker_hold))),
        ("  TTS audio -> Twilio frame", between(|r| r.first_tts_audio, |r| r.first_audio_sent)),
        ("speech end -> first audio", millis(reports.iter().map(TurnLatency::speech_end_to_first_audio))),
        ("speech end -> STT final", between(|r| r.speech_ended, |r| r.stt_final)),
        ("LLM first token", between(|r| r.llm_request_sent, |r| r.llm_first_token)),
        ("first token -> first piece ready", between(|r| r.llm_first_token, |r| r.first_piece_ready)),
        ("TTS first audio", between(|r| r.first_tts_request, |r| r.first_tts_audio)),
    ];
    println!("turn latency over {} turns (ms)", reports.len());
    println!("{:<32} {:>9} {:>9} {:>9} {:>9}", "stage", "p50", "p95", "p99", "max");
    for (name, values) in rows {
        println!(
            "{name:<32} {:>9.3} {:>9.3} {:>9.3} {:>9.3}",
            percentile(&values, 50.0),
            percentile(&values, 95.0),
            percentile(&values, 99.0),
            values.last().copied().unwrap_or(f64::NAN)
        );
    }
}
