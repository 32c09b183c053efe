//! The built-in call-control tools end to end: the model asks to hang up or transfer, Parley lets its reply play,
//! then closes the stream or updates the call over Twilio's REST API (a fake Twilio on 127.0.0.1).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::init_logs;
use fake_providers::openai::{FakeOpenAiOptions, FakeReply};
use fake_providers::twilio_rest::{self, FakeTwilioRest};
use loadgen::{say, Rig, RigOptions, WAIT};
use parley::engine::call_control::{CallControl, CallControlConfig};
use parley::engine::tools::NoTools;
use sim_caller::Received;

/// The fake Deepgram's first scripted utterance.
const FIRST_UTTERANCE: &str = "table for two";
const TRANSFER_TO: &str = "+15550009999";
const AUTH_TOKEN: &str = "twilio-secret";

async fn rig(openai: FakeOpenAiOptions, call_control: CallControlConfig, token: &str) -> Rig {
    init_logs();
    let control = Arc::new(CallControl::new(Arc::new(NoTools), call_control.clone(), Some(token.into())));
    let mut options = RigOptions { openai, call_control: Some(control), ..RigOptions::default() };
    options.conversation.call_control = call_control;
    Rig::start(options).await
}

fn transfers_via(twilio: &FakeTwilioRest) -> CallControlConfig {
    CallControlConfig {
        transfer_numbers: vec![TRANSFER_TO.into()],
        twilio_api_base: twilio.base_url(),
        ..CallControlConfig::default()
    }
}

#[tokio::test]
async fn end_call_hangs_up_after_the_goodbye_has_played() {
    const GOODBYE: &str = "Thanks for calling, goodbye!";
    let openai = FakeOpenAiOptions::default()
        .rule(FIRST_UTTERANCE, FakeReply::tool_call("call-1", "end_call", "{}"))
        .after_tool(FakeReply::text(GOODBYE));
    let mut rig = rig(openai, CallControlConfig::default(), AUTH_TOKEN).await;
    let mut call = rig.call(1).await;
    let observer = call.observer();
    say(&mut call, 1_000).await;
    rig.next_report().await;
    let closed = call.wait_closed(WAIT).await.expect("Parley ends the call");
    assert_eq!(closed, Some(1000));

    let log = observer.received();
    let closed_at = log.iter().find_map(|r| match r {
        Received::Closed { at, .. } => Some(*at),
        _ => None,
    });
    let played_until = observer.playing_until().expect("the goodbye was sent");
    let closed_at = closed_at.expect("a close was logged");
    assert!(closed_at + Duration::from_millis(100) >= played_until, "closed before the goodbye finished playing");
    assert!(call.audio_received().len() as u64 / 8 >= GOODBYE.len() as u64 * 60 - 200, "the goodbye was heard");

    let requests = rig.openai.requests();
    assert!(requests[0].body["tools"].to_string().contains("end_call"), "end_call is offered");
    let tool_result = requests[1].messages().into_iter().find(|m| m["role"] == "tool").expect("tool result");
    assert!(tool_result["content"].as_str().unwrap_or("").contains("goodbye"), "{tool_result}");
}

/// A model that answers the caller's first words by transferring the call to `TRANSFER_TO`.
fn model_that_transfers() -> FakeOpenAiOptions {
    FakeOpenAiOptions::default()
        .rule(
            FIRST_UTTERANCE,
            FakeReply::tool_call("call-1", "transfer_call", format!(r#"{{"number":"{TRANSFER_TO}"}}"#)),
        )
        .after_tool(FakeReply::text("Putting you through now."))
}

#[tokio::test]
async fn transfer_call_dials_the_allowed_number_through_twilio_rest() {
    let twilio = twilio_rest::start(AUTH_TOKEN, &[]).await.unwrap();
    let openai = model_that_transfers();
    let mut rig = rig(openai, transfers_via(&twilio), AUTH_TOKEN).await;
    let mut call = rig.call(7).await;
    say(&mut call, 1_000).await;
    rig.next_report().await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while twilio.updates().is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let updates = twilio.updates();
    assert_eq!(updates.len(), 1, "{updates:?}");
    let update = &updates[0];
    assert_eq!(update.call_sid, format!("CA{:032}", 7));
    assert_eq!(update.account_sid, "AC00000000000000000000000000000001", "the account of the start message");
    assert_eq!(update.auth, Some((update.account_sid.clone(), AUTH_TOKEN.to_owned())));
    assert_eq!(update.field("Twiml"), Some("<Response><Dial>+15550009999</Dial></Response>"));
    call.hang_up().await;
}

/// The transfer's REST request runs beside the call: while Twilio takes seconds to answer it, the caller's next
/// words are still heard and answered.
#[tokio::test]
async fn the_call_goes_on_while_a_slow_transfer_request_waits_for_twilio() {
    const TWILIO_DELAY: Duration = Duration::from_secs(6);
    let twilio = twilio_rest::start(AUTH_TOKEN, &[]).await.unwrap();
    twilio.set_response_delay(TWILIO_DELAY);
    let mut rig = rig(model_that_transfers(), transfers_via(&twilio), AUTH_TOKEN).await;
    let mut call = rig.call(5).await;
    say(&mut call, 1_000).await;
    rig.next_report().await;
    // Keep the line alive until the update has reached Twilio (it is now waiting for the answer).
    let deadline = tokio::time::Instant::now() + WAIT;
    while twilio.updates().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "the transfer never reached Twilio");
        call.stream_audio(&sim_caller::silence(100)).await.unwrap();
    }
    let update_sent = tokio::time::Instant::now();
    let requests_before = rig.openai.requests().len();
    say(&mut call, 1_000).await;
    let report = rig.next_report().await;
    let answered_after = update_sent.elapsed();
    assert!(
        answered_after < TWILIO_DELAY,
        "the caller's next turn waited for Twilio: answered {answered_after:?} after the update was sent"
    );
    assert!(report.first_audio_sent.is_some(), "the next turn was answered: {report:?}");
    assert!(rig.openai.requests().len() > requests_before, "the caller's words reached the model");
    call.hang_up().await;
}

#[tokio::test]
async fn a_failed_transfer_is_apologised_for_and_the_call_goes_on() {
    let twilio = twilio_rest::start(AUTH_TOKEN, &[]).await.unwrap();
    let openai = model_that_transfers();
    let config = transfers_via(&twilio);
    let apology = config.transfer_failed_line.clone();
    // Parley holds the wrong token: Twilio refuses the update.
    let mut rig = rig(openai, config, "wrong-token").await;
    let mut call = rig.call(1).await;
    say(&mut call, 1_000).await;
    rig.next_report().await;
    let deadline = tokio::time::Instant::now() + WAIT;
    let spoken = |rig: &Rig| {
        rig.cartesia.connections().iter().any(|c| {
            c.received.iter().filter_map(|m| m["context_id"].as_str()).any(|id| c.transcript_of(id).contains(&apology))
        })
    };
    while !spoken(&rig) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(spoken(&rig), "the apology was spoken");
    assert_eq!(twilio.updates().len(), 1);
    assert!(call.wait_closed(Duration::from_millis(300)).await.is_err(), "the call is still up");
    call.hang_up().await;
}

#[tokio::test]
async fn when_the_model_keeps_failing_the_agent_gives_up_politely_and_ends_the_call() {
    let openai = FakeOpenAiOptions::default().fallback(FakeReply::http_500());
    let config = CallControlConfig { give_up_after_failures: 2, ..CallControlConfig::default() };
    let give_up_line = config.give_up_line.clone();
    let mut rig = rig(openai, config, AUTH_TOKEN).await;
    let mut call = rig.call(1).await;
    say(&mut call, 1_000).await;
    rig.next_report().await;
    assert!(call.wait_closed(Duration::from_millis(300)).await.is_err(), "one failure: the call goes on");
    say(&mut call, 800).await;
    rig.next_report().await;
    assert_eq!(call.wait_closed(WAIT).await.expect("the agent ends the call"), Some(1000));
    let cartesia = &rig.cartesia.connections()[0];
    assert_eq!(cartesia.transcript_of("t2-r2"), give_up_line, "the second failure is answered with the give-up line");
    assert_ne!(cartesia.transcript_of("t1-r1"), give_up_line, "the first with the ordinary fallback line");
}
