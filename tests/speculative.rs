//! Speculative replies on Deepgram Flux's eager end of turn, end to end: a simulated caller, Parley's cascade with
//! the real Flux, OpenAI-compatible and Cartesia clients against fake servers. `EagerEndOfTurn` starts the model
//! request early; `EndOfTurn` with the same words commits it (no second request), `TurnResumed` discards it.

mod common;

use common::init_logs;
use fake_providers::deepgram_flux::FakeFluxOptions;
use fake_providers::openai::{FakeOpenAiOptions, FakeReply};
use loadgen::{say, Rig, RigOptions, WAIT};

async fn rig(openai: FakeOpenAiOptions, fixture: &str) -> Rig {
    init_logs();
    Rig::start(RigOptions { openai, flux: Some(FakeFluxOptions::replay(fixture)), ..RigOptions::default() }).await
}

/// The fixtures' turn events arrive one per 200 ms of audio, so the speech lengths below put the end of turn in the
/// silence after the caller's words.
///
/// The process-wide count of speculative requests that ended with `outcome`, from the `/metrics` text.
fn speculations(outcome: &str) -> u64 {
    let text = parley::telemetry::metrics::global().prometheus_text();
    text.lines()
        .filter(|l| l.starts_with("parley_llm_speculations_total") && l.contains(&format!("outcome=\"{outcome}\"")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

#[tokio::test]
async fn an_end_of_turn_with_the_same_words_commits_the_early_request() {
    let openai = FakeOpenAiOptions::default().rule("hello there", FakeReply::text("Hi! How can I help?"));
    let mut rig = rig(openai, "eager_then_end.jsonl").await;
    let mut call = rig.call(1).await;
    // The fake sends a turn event per 200 ms of audio: eager end at 600 ms, end at 800 ms, after the speech.
    say(&mut call, 500).await;
    let report = rig.next_report().await;
    assert!(report.first_audio_sent.is_some(), "{report:?}");
    let requests = rig.openai.requests();
    assert_eq!(requests.len(), 1, "the early request became the reply: no second request");
    assert_eq!(requests[0].last_user_message().as_deref(), Some("hello there"));
    assert!(speculations("committed") >= 1);
    let spoken = rig.cartesia.connections()[0].transcript_of("t1-r1");
    assert_eq!(spoken, "Hi! How can I help?");
    call.hang_up().await;
}

#[tokio::test]
async fn a_resumed_turn_discards_the_early_request_and_answers_the_whole_turn() {
    let openai = FakeOpenAiOptions::default()
        .rule("four five six", FakeReply::text("Found order four five six."))
        .fallback(FakeReply::text("This answers a turn the caller had not finished."));
    let mut rig = rig(openai, "eager_then_resumed.jsonl").await;
    let mut call = rig.call(1).await;
    // Eager end at 600 ms while the caller is still speaking, resumed at 800 ms, end at 1200 ms after the speech.
    say(&mut call, 1_000).await;
    rig.next_report().await;
    let requests = rig.openai.requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert_eq!(requests[0].last_user_message().as_deref(), Some("my order is"), "the early request");
    assert_eq!(requests[1].last_user_message().as_deref(), Some("my order is four five six"));
    assert!(rig.openai.wait_for_disconnects(1, WAIT).await, "the early request was aborted at the server");
    assert!(speculations("discarded") >= 1);
    // Only the answer to the whole turn was spoken.
    let cartesia = &rig.cartesia.connections()[0];
    assert_eq!(cartesia.transcript_of("t1-r1"), "Found order four five six.");
    call.hang_up().await;
}
