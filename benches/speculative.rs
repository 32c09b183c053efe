//! What speculative replies save: the same one-turn call through Deepgram Flux (fake, eager end of turn 200 ms of
//! audio before the end of turn) with `speculative_replies` off and on, the LLM's first token at 300 ms and TTS
//! first audio at 90 ms. Prints end of turn → LLM first token and end of turn → first audio to Twilio, both ways.
//! Run with `cargo bench --bench speculative` (PARLEY_BENCH_CALLS sets the calls per configuration).

use std::time::Duration;

use fake_providers::cartesia::FakeCartesiaOptions;
use fake_providers::deepgram_flux::FakeFluxOptions;
use fake_providers::openai::{FakeOpenAiOptions, FakeReply};
use loadgen::{percentile, say, Rig, RigOptions};
use parley::engine::config::ConversationConfig;
use parley::engine::latency::TurnLatency;

fn main() {
    let calls: u32 = std::env::var("PARLEY_BENCH_CALLS").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let off = runtime.block_on(run(calls, false));
    let on = runtime.block_on(run(calls, true));
    println!("one-turn calls through Flux, {calls} per configuration (ms)");
    println!("{:<40} {:>9} {:>9} {:>9}", "", "p50", "p95", "max");
    for (name, reports) in [("speculative off", &off), ("speculative on", &on)] {
        row(&format!("{name}: end of turn -> LLM first token"), reports, |r| r.end_of_turn, |r| r.llm_first_token);
        row(&format!("{name}: end of turn -> first audio"), reports, |r| r.end_of_turn, |r| r.first_audio_sent);
    }
}

async fn run(calls: u32, speculative: bool) -> Vec<TurnLatency> {
    let options = RigOptions {
        openai: FakeOpenAiOptions::default()
            .fallback(FakeReply::text("Hi! How can I help?"))
            .delays(Duration::from_millis(300), Duration::from_millis(15)),
        cartesia: FakeCartesiaOptions {
            first_audio_delay: Duration::from_millis(90),
            ..FakeCartesiaOptions::default()
        },
        flux: Some(FakeFluxOptions::replay("eager_then_end.jsonl")),
        conversation: ConversationConfig {
            greeting: String::new(),
            speculative_replies: speculative,
            ..ConversationConfig::default()
        },
        ..RigOptions::default()
    };
    let mut rig = Rig::start(options).await;
    let mut reports = Vec::new();
    for n in 0..calls {
        let mut call = rig.call(n + 1).await;
        say(&mut call, 500).await;
        reports.push(rig.next_report().await);
        call.hang_up().await;
    }
    reports
}

fn row(
    name: &str,
    reports: &[TurnLatency],
    from: fn(&TurnLatency) -> Option<tokio::time::Instant>,
    to: fn(&TurnLatency) -> Option<tokio::time::Instant>,
) {
    let mut values: Vec<f64> = reports
        .iter()
        .filter_map(|r| Some(to(r)?.saturating_duration_since(from(r)?).as_secs_f64() * 1000.0))
        .collect();
    values.sort_by(|a, b| a.total_cmp(b));
    println!(
        "{name:<40} {:>9.1} {:>9.1} {:>9.1}",
        percentile(&values, 50.0),
        percentile(&values, 95.0),
        values.last().copied().unwrap_or(f64::NAN)
    );
}
