//! Recovery from false interruptions: a barge-in pauses the reply; words end it, silence or a backchannel resumes it.

use std::time::Duration;

use tokio::time::Instant;

use super::doubles::SttHandle;
use super::{Call, ConversationConfig};
use crate::engine::resume::ResumeConfig;
use crate::engine::turn::TurnConfig;
use crate::llm::Role;

const REPLY: &str = "Your order is on its way and should arrive by Friday, so keep an eye on the door. ";

/// The test voice makes 10 ms of audio per character.
fn reply_frames(text: &str) -> usize {
    (text.chars().count() * 80).div_ceil(160)
}

/// The assistant messages of a request, in order.
fn agent_lines(turn: &super::doubles::LlmTurn) -> Vec<String> {
    turn.request.messages.iter().filter(|m| m.role == Role::Assistant).map(|m| m.content.clone()).collect()
}

/// A call whose agent is 600 ms into its long answer (`text`) to "Where is my order?".
async fn agent_answering(config: ConversationConfig, text: &str) -> (Call, SttHandle) {
    let mut call = Call::start(config, |_, _| {});
    let stt = call.next_session().await;
    let turn = call.caller_turn(&stt, "Where is my order?").await;
    turn.say(text);
    turn.finish();
    tokio::time::sleep(Duration::from_millis(600)).await;
    (call, stt)
}

#[tokio::test(start_paused = true)]
async fn a_cough_that_interrupts_with_no_words_after_resumes_the_same_reply() {
    let text = REPLY.repeat(3);
    let (mut call, stt) = agent_answering(Call::quiet(), &text).await;
    // A 300 ms cough: long enough to barge in.
    call.speak(300).await;
    let cleared_at = *call.twilio().clears.first().expect("the cough barged in");
    let sent_before = call.twilio().media_at.iter().filter(|&&at| at <= cleared_at).count();
    // No words follow.
    call.silence(1_000).await;
    tokio::time::sleep(Duration::from_millis(8_000)).await;
    {
        let log = call.twilio();
        assert_eq!(log.clears.len(), 1, "one clear, for the cough");
        let sent_after = log.media_at.iter().filter(|&&at| at > cleared_at).count();
        // The rest was played, from a little before the point the caller last heard.
        assert!(
            sent_before + sent_after >= reply_frames(&text),
            "{sent_before} + {sent_after} frames, the reply is {}",
            reply_frames(&text)
        );
        let resumed_at = log.media_at.iter().find(|&&at| at > cleared_at).copied().expect("the reply resumed");
        let quiet_for = resumed_at.duration_since(cleared_at);
        assert!(quiet_for >= Duration::from_millis(400) && quiet_for < Duration::from_millis(1_000), "{quiet_for:?}");
    }
    assert!(call.tts.cancels().is_empty(), "the reply's synthesis was not cancelled");
    let report = call.next_report().await;
    assert!(report.barge_in_onset.is_some(), "the clear is still a barge-in in the turn's record");
    // The next request's history holds the reply once, whole.
    let next = call.caller_turn(&stt, "Thanks.").await;
    assert_eq!(agent_lines(&next), vec![text.trim().to_owned()]);
}

#[tokio::test(start_paused = true)]
async fn words_after_a_barge_in_end_the_paused_reply_with_what_was_heard() {
    let text = REPLY.repeat(3);
    let (mut call, stt) = agent_answering(Call::quiet(), &text).await;
    call.speak(400).await;
    call.silence(100).await;
    let cleared_at = *call.twilio().clears.first().expect("barged in");
    stt.final_words("Actually, cancel it.").await;
    let next = call.next_request().await;
    let asked_at = Instant::now();
    assert_eq!(next.last_user_text(), "Actually, cancel it.");
    let lines = agent_lines(&next);
    assert_eq!(lines.len(), 1);
    assert!(!lines[0].is_empty() && text.starts_with(&lines[0]) && lines[0].len() < text.trim().len(), "{lines:?}");
    // Until the new reply's filler line (a second after the request), nothing plays: the old reply never resumes.
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert!(!call.twilio().media_at.iter().any(|&at| at > cleared_at), "the interrupted reply played again");
    assert_eq!(call.twilio().clears.len(), 1);
    assert!(asked_at.duration_since(cleared_at) < Duration::from_millis(400));
}

#[tokio::test(start_paused = true)]
async fn a_backchannel_after_a_barge_in_is_no_turn_and_the_reply_resumes() {
    let text = REPLY.repeat(3);
    let (mut call, stt) = agent_answering(Call::quiet(), &text).await;
    call.speak(400).await;
    let cleared_at = *call.twilio().clears.first().expect("barged in");
    call.silence(100).await;
    stt.final_words("Mm-hmm.").await;
    call.silence(1_000).await;
    assert!(call.llm.try_recv().is_err(), "the backchannel became a caller turn");
    assert!(call.twilio().media_at.iter().any(|&at| at > cleared_at), "the reply did not resume");
    let report = call.next_report().await;
    assert_eq!(report.turn_index, 1);
    let next = call.caller_turn(&stt, "Thanks.").await;
    assert_eq!(agent_lines(&next), vec![text.trim().to_owned()]);
    assert_eq!(next.last_user_text(), "Thanks.", "the backchannel did not join the next turn");
}

#[tokio::test(start_paused = true)]
async fn with_resuming_off_a_barge_in_ends_the_reply_at_once() {
    let resume = ResumeConfig { enabled: false, ..ResumeConfig::default() };
    let config = ConversationConfig { turn: TurnConfig { resume, ..TurnConfig::default() }, ..Call::quiet() };
    let (mut call, _stt) = agent_answering(config, &REPLY.repeat(3)).await;
    let onset = Instant::now();
    call.speak(300).await;
    call.silence(1_000).await;
    let cleared_at = *call.twilio().clears.first().expect("barged in");
    assert!(cleared_at.duration_since(onset) <= Duration::from_millis(200));
    assert!(!call.twilio().media_at.iter().any(|&at| at > cleared_at), "the reply came back");
    let report = call.next_report().await;
    assert!(report.barge_in_onset.is_some());
}

#[tokio::test(start_paused = true)]
async fn a_slow_recogniser_holds_the_resume_and_its_late_words_still_interrupt() {
    let text = REPLY.repeat(4);
    let (mut call, stt) = agent_answering(Call::quiet(), &text).await;
    // The recogniser heard speech start (as local Whisper reports it) and is slow to say what it was.
    let _ = stt.events.send(crate::stt::SttEvent::SpeechStarted { timestamp: 5.0 }).await;
    call.speak(400).await;
    let cleared_at = *call.twilio().clears.first().expect("barged in");
    call.silence(1_000).await;
    assert!(!call.twilio().media_at.iter().any(|&at| at > cleared_at), "resumed while the recogniser was busy");
    // Past the longest wait the reply resumes; the words arrive after that and still end it.
    call.silence(1_400).await;
    assert!(call.twilio().media_at.iter().any(|&at| at > cleared_at), "the reply resumed after the longest wait");
    stt.final_words("Actually, cancel it.").await;
    let next = call.next_request().await;
    assert_eq!(next.last_user_text(), "Actually, cancel it.");
    let lines = agent_lines(&next);
    assert!(lines.len() == 1 && lines[0].len() < text.trim().len(), "{lines:?}");
    assert_eq!(call.twilio().clears.len(), 2, "the resumed audio was cleared again");
}
