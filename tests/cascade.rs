//! The cascade end to end: a simulated Twilio caller talks to Parley, which uses real Deepgram, OpenAI-compatible and
//! Cartesia clients against fake servers speaking those protocols on 127.0.0.1.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::init_logs;
use fake_providers::cartesia::{FakeCartesia, FakeCartesiaOptions};
use fake_providers::deepgram::FakeDeepgramOptions;
use fake_providers::openai::{FakeOpenAiOptions, FakeReply};
use loadgen::{listen_until, media_count, say, Rig, RigOptions, WAIT};
use parley::engine::config::ConversationConfig;
use parley::stt::deepgram::{Deepgram, DeepgramConfig};
use parley::twilio::messages::OutboundMessage;
use serde_json::Value;
use sim_caller::{silence, speech, Received, SimCall};

/// The fake Deepgram's scripted utterances (proto-fixtures/deepgram/script_default.json).
const FIRST_UTTERANCE: &str = "Book a table for two.";
const SECOND_UTTERANCE: &str = "At seven, please.";

async fn rig(
    openai: FakeOpenAiOptions,
    deepgram: FakeDeepgramOptions,
    cartesia: FakeCartesiaOptions,
    conversation: ConversationConfig,
) -> Rig {
    init_logs();
    Rig::start(RigOptions { openai, deepgram, cartesia, conversation, ..RigOptions::default() }).await
}

async fn place_call(rig: &Rig) -> SimCall {
    rig.call(1).await
}

fn quiet_agent() -> ConversationConfig {
    RigOptions::default().conversation
}

fn messages_of(request: &Value) -> Vec<(String, String)> {
    request["messages"]
        .as_array()
        .map(|messages| {
            messages
                .iter()
                .map(|m| (m["role"].as_str().unwrap_or("").to_owned(), m["content"].as_str().unwrap_or("").to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

/// Every context's full transcript, as the fake Cartesia received it.
fn spoken_texts(cartesia: &FakeCartesia) -> Vec<String> {
    let mut texts = Vec::new();
    for connection in cartesia.connections() {
        let mut contexts: Vec<String> =
            connection.received.iter().filter_map(|m| m["context_id"].as_str().map(str::to_owned)).collect();
        contexts.dedup();
        texts.extend(contexts.iter().map(|c| connection.transcript_of(c)));
    }
    texts
}

#[tokio::test]
async fn a_two_turn_conversation() {
    const FIRST_REPLY: &str = "Sure, a table for two. What time would you like?";
    const SECOND_REPLY: &str = "Seven it is. See you then!";
    let openai = FakeOpenAiOptions::default()
        .rule("table for two", FakeReply::text(FIRST_REPLY))
        .rule("seven", FakeReply::text(SECOND_REPLY));
    let mut rig = rig(openai, FakeDeepgramOptions::default(), FakeCartesiaOptions::default(), quiet_agent()).await;
    let mut call = place_call(&rig).await;

    say(&mut call, 1_000).await;
    let first = rig.next_report().await;
    say(&mut call, 800).await;
    let second = rig.next_report().await;

    let requests = rig.openai.requests();
    assert_eq!(requests.len(), 2);
    let history = messages_of(&requests[1].body);
    assert_eq!(history[0].0, "system");
    assert_eq!(
        &history[1..],
        &[
            ("user".to_owned(), FIRST_UTTERANCE.to_owned()),
            ("assistant".to_owned(), FIRST_REPLY.to_owned()),
            ("user".to_owned(), SECOND_UTTERANCE.to_owned()),
        ]
    );
    assert_eq!(requests[0].body["stream"], true);
    assert_eq!(requests[0].authorization.as_deref(), Some("Bearer test-key"));

    // Both replies were spoken: TTS got their text, and audio of the right length reached the caller.
    let cartesia = &rig.cartesia.connections()[0];
    let transcripts: Vec<String> = ["t1-r1", "t2-r2"].iter().map(|c| cartesia.transcript_of(c)).collect();
    assert_eq!(transcripts, vec![FIRST_REPLY.to_owned(), SECOND_REPLY.to_owned()]);
    let expected_ms = (FIRST_REPLY.len() + SECOND_REPLY.len()) as u64 * 60;
    let heard_ms = call.audio_received().len() as u64 / 8;
    assert!(heard_ms + 200 >= expected_ms, "heard {heard_ms} ms of {expected_ms} ms");

    // The caller's audio reached Deepgram untouched, as μ-law 8 kHz.
    let deepgram = &rig.deepgram.connections()[0];
    assert_eq!(deepgram.query_param("encoding"), Some("mulaw"));
    assert_eq!(deepgram.query_param("sample_rate"), Some("8000"));
    assert!(deepgram.audio().starts_with(&speech(1_000)[..1_600]));

    for report in [&first, &second] {
        assert!(report.first_audio_sent.is_some() && report.parley_added().is_some(), "{report:?}");
        assert!(report.barge_in_onset.is_none());
    }
    assert_eq!((first.turn_index, second.turn_index), (1, 2));
    call.hang_up().await;
}

#[tokio::test]
async fn the_caller_barges_in_mid_reply() {
    const LONG_REPLY: &str =
        "Let me tell you about our restaurant. We have tables by the window, tables on the terrace, \
        and a private room for larger parties. Our kitchen serves seasonal dishes, and our wine list is long. \
        On weekends we also have live music in the evening, so booking early is a good idea.";
    let openai = FakeOpenAiOptions::default()
        .rule("table for two", FakeReply::text(LONG_REPLY))
        .rule("seven", FakeReply::text("Seven it is."))
        // Slow tokens: the model is still generating when the caller interrupts.
        .delays(Duration::from_millis(300), Duration::from_millis(60));
    let mut rig = rig(openai, FakeDeepgramOptions::default(), FakeCartesiaOptions::default(), quiet_agent()).await;
    let mut call = place_call(&rig).await;

    say(&mut call, 1_000).await;
    listen_until(&mut call, "about a second of the reply", |log| media_count(log) >= 60).await;
    let interrupt_at = tokio::time::Instant::now();
    call.stream_audio(&speech(800)).await.unwrap();
    call.wait_until("clear", WAIT, |log| {
        log.iter().any(|r| matches!(r, Received::Message { message: OutboundMessage::Clear { .. }, .. }))
    })
    .await
    .unwrap();
    // The line goes quiet, as Twilio's stream does (silence frames, not no frames): the recogniser finds the words'
    // end and sends them, which makes the barge-in real.
    call.stream_audio(&silence(600)).await.unwrap();
    let interrupted = rig.next_report().await;
    rig.next_report().await;

    // Twilio was told to clear, and nothing of the cancelled reply was sent after it.
    let log = call.received();
    let clear_index = log
        .iter()
        .position(|r| matches!(r, Received::Message { message: OutboundMessage::Clear { .. }, .. }))
        .expect("clear");
    let Received::Message { at: cleared_at, .. } = &log[clear_index] else { unreachable!() };
    let late_media = log[clear_index..]
        .iter()
        .filter(|r| matches!(r, Received::Message { at, message: OutboundMessage::Media { .. } } if at.duration_since(*cleared_at) < Duration::from_millis(500)))
        .count();
    assert_eq!(late_media, 0, "audio of the cancelled reply reached the caller after clear");
    assert!(*cleared_at > interrupt_at);

    // The LLM stream and the TTS context were cancelled.
    assert!(rig.openai.wait_for_disconnects(1, WAIT).await, "the LLM request was not aborted");
    assert_eq!(rig.cartesia.connections()[0].cancels(), vec!["t1-r1".to_owned()]);

    // The history keeps only what the caller heard of the interrupted reply.
    let requests = rig.openai.requests();
    let history = messages_of(&requests[1].body);
    let (role, heard) = &history[2];
    assert_eq!(role, "assistant");
    assert!(!heard.is_empty(), "the caller heard about a second of the reply");
    assert!(LONG_REPLY.starts_with(heard.as_str()), "{heard:?} is not a prefix of the reply");
    assert!(heard.len() < LONG_REPLY.len() / 2, "history not truncated: {heard:?}");
    assert_eq!(history[3], ("user".to_owned(), SECOND_UTTERANCE.to_owned()));

    let reaction = interrupted.barge_in_reaction().expect("barge-in timed");
    assert!(reaction > Duration::ZERO);
    call.hang_up().await;
}

#[tokio::test]
async fn a_short_noise_does_not_cut_the_agent_off() {
    const REPLY: &str = "Your table for two is booked for tonight. We look forward to seeing you.";
    let openai = FakeOpenAiOptions::default().rule("table for two", FakeReply::text(REPLY));
    let deepgram = FakeDeepgramOptions { min_utterance: Duration::from_millis(200), ..FakeDeepgramOptions::default() };
    let mut rig = rig(openai, deepgram, FakeCartesiaOptions::default(), quiet_agent()).await;
    let mut call = place_call(&rig).await;

    say(&mut call, 1_000).await;
    listen_until(&mut call, "the reply to start", |log| media_count(log) >= 25).await;
    // A cough: 60 ms of noise, then the line is quiet again.
    call.stream_audio(&speech(60)).await.unwrap();
    call.stream_audio(&silence(300)).await.unwrap();
    let report = rig.next_report().await;
    assert!(report.barge_in_onset.is_none(), "the agent was cut off by noise");
    assert_eq!(call.clears(), 0);
    let heard_ms = call.audio_received().len() as u64 / 8;
    assert!(heard_ms + 100 >= REPLY.len() as u64 * 60, "reply cut short: {heard_ms} ms");
    call.hang_up().await;
}

#[tokio::test]
async fn an_llm_failure_is_answered_with_the_fallback_line_and_the_call_goes_on() {
    let openai = FakeOpenAiOptions::default().reply(FakeReply::http_500()).reply(FakeReply::text("Seven it is."));
    let conversation = quiet_agent();
    let fallback = conversation.fallback_line.clone();
    let mut rig = rig(openai, FakeDeepgramOptions::default(), FakeCartesiaOptions::default(), conversation).await;
    let mut call = place_call(&rig).await;

    say(&mut call, 1_000).await;
    rig.next_report().await;
    assert_eq!(rig.cartesia.connections()[0].transcript_of("t1-r1"), fallback);
    say(&mut call, 800).await;
    rig.next_report().await;
    assert_eq!(rig.cartesia.connections()[0].transcript_of("t2-r2"), "Seven it is.");
    let history = messages_of(&rig.openai.requests()[1].body);
    assert_eq!(history[2], ("assistant".to_owned(), fallback), "the spoken fallback is part of the conversation");
    call.hang_up().await;
}

#[tokio::test]
async fn a_lost_tts_connection_is_reopened_for_the_next_reply() {
    let openai = FakeOpenAiOptions::default().fallback(FakeReply::text("Okay, noted."));
    // The first session drops after a few messages, mid-reply.
    let cartesia = FakeCartesiaOptions {
        drop_after_messages: Some(3),
        faulty_connections: Some(1),
        ..FakeCartesiaOptions::default()
    };
    let mut rig = rig(openai, FakeDeepgramOptions::default(), cartesia, quiet_agent()).await;
    let mut call = place_call(&rig).await;
    say(&mut call, 1_000).await;
    rig.next_report().await;
    say(&mut call, 800).await;
    rig.next_report().await;
    let connections = rig.cartesia.connections();
    assert!(connections.len() >= 2, "TTS was not reconnected");
    assert_eq!(connections[1].transcript_of("t2-r2"), "Okay, noted.");
    // The second reply was heard in full: its audio came from the new connection.
    let second_reply_bytes: usize =
        connections[1].sent_for("t2-r2").iter().filter_map(|m| m["data"].as_str()).map(|data| data.len() / 4 * 3).sum();
    assert!(second_reply_bytes >= "Okay, noted.".len() * 60 * 8 - 400, "{second_reply_bytes}");
    call.hang_up().await;
}

#[tokio::test]
async fn a_lost_stt_connection_is_replaced_and_fed_the_callers_audio_so_no_word_is_lost() {
    let openai = FakeOpenAiOptions::default().fallback(FakeReply::text("Okay."));
    // The first recognition session drops after two messages: SpeechStarted and the first interim result.
    let deepgram = FakeDeepgramOptions {
        drop_after_messages: Some(2),
        faulty_connections: Some(1),
        ..FakeDeepgramOptions::default()
    };
    let conversation = quiet_agent();
    let fallback = conversation.fallback_line.clone();
    let mut rig = rig(openai, deepgram, FakeCartesiaOptions::default(), conversation).await;
    let mut call = place_call(&rig).await;
    say(&mut call, 1_000).await;
    rig.next_report().await;
    let connections = rig.deepgram.connections();
    assert!(connections.len() >= 2, "STT was not reconnected");
    // The new session heard the utterance from its start: the buffered audio went first.
    assert!(connections[1].audio().starts_with(&speech(1_000)[..1_600]), "the replay starts with the speech");
    let history = messages_of(&rig.openai.requests()[0].body);
    assert_eq!(history.last().map(|m| m.1.as_str()), Some(FIRST_UTTERANCE), "heard by the new session");
    assert!(!spoken_texts(&rig.cartesia).contains(&fallback), "the caller was not asked to repeat");
    call.hang_up().await;
}

#[tokio::test]
async fn without_the_turns_audio_a_lost_stt_connection_means_asking_the_caller_to_repeat() {
    let openai = FakeOpenAiOptions::default().fallback(FakeReply::text("Okay."));
    let deepgram = FakeDeepgramOptions {
        drop_after_messages: Some(2),
        faulty_connections: Some(1),
        ..FakeDeepgramOptions::default()
    };
    let mut conversation = quiet_agent();
    // Too little is kept to hold the turn's speech.
    conversation.stt_replay_ms = 100;
    let fallback = conversation.fallback_line.clone();
    let mut rig = rig(openai, deepgram, FakeCartesiaOptions::default(), conversation).await;
    let mut call = place_call(&rig).await;
    say(&mut call, 1_000).await;
    // The words were lost with the connection: the agent asks the caller to say them again.
    listen_until(&mut call, "the apology", |log| media_count(log) >= 10).await;
    assert!(spoken_texts(&rig.cartesia).contains(&fallback), "{:?}", spoken_texts(&rig.cartesia));
    say(&mut call, 1_000).await;
    rig.next_report().await;
    assert!(rig.deepgram.connections().len() >= 2, "STT was not reconnected");
    let history = messages_of(&rig.openai.requests()[0].body);
    assert_eq!(history.last().map(|m| m.1.as_str()), Some(FIRST_UTTERANCE), "heard by the new session");
    call.hang_up().await;
}

#[tokio::test]
async fn the_greeting_is_spoken_when_the_call_starts() {
    let conversation = ConversationConfig::default();
    let greeting = conversation.greeting.clone();
    let rig =
        rig(FakeOpenAiOptions::default(), FakeDeepgramOptions::default(), FakeCartesiaOptions::default(), conversation)
            .await;
    let mut call = place_call(&rig).await;
    listen_until(&mut call, "the greeting", |log| media_count(log) >= 20).await;
    assert_eq!(rig.cartesia.connections()[0].transcript_of("s1"), greeting);
    call.hang_up().await;
}

#[tokio::test]
async fn keys_the_caller_presses_reach_the_model_as_one_turn() {
    const REPLY: &str = "Thanks, I have order four five six.";
    let openai = FakeOpenAiOptions::default().rule("keypad: 4 5 6 #", FakeReply::text(REPLY));
    let mut conversation = quiet_agent();
    conversation.keypad_commit_ms = 300;
    let mut rig = rig(openai, FakeDeepgramOptions::default(), FakeCartesiaOptions::default(), conversation).await;
    let mut call = place_call(&rig).await;

    // `#` ends the entry at once.
    for key in ["4", "5", "6", "#"] {
        call.send_dtmf(key).unwrap();
    }
    let report = rig.next_report().await;
    assert!(report.first_audio_sent.is_some(), "{report:?}");
    // Keys without `#` make a turn once the caller stops pressing.
    call.send_dtmf("2").unwrap();
    rig.next_report().await;

    let requests = rig.openai.requests();
    assert_eq!(requests.len(), 2, "one turn per entry, not one per key");
    let first = messages_of(&requests[0].body);
    let (role, text) = first.last().unwrap();
    assert_eq!(role, "user");
    assert!(text.contains("phone keypad: 4 5 6 #"), "{text}");
    let second = messages_of(&requests[1].body);
    assert_eq!(second[second.len() - 2], ("assistant".to_owned(), REPLY.to_owned()));
    assert!(second.last().unwrap().1.ends_with("keypad: 2]"), "{second:?}");
    call.hang_up().await;
}

#[tokio::test]
async fn a_barge_in_is_cleared_while_the_stt_reconnect_hangs_and_the_call_goes_on_once_stt_is_back() {
    const LONG_REPLY: &str =
        "Let me tell you about our restaurant. We have tables by the window, tables on the terrace, \
        and a private room for larger parties. Our kitchen serves seasonal dishes, and our wine list is long.";
    let openai = FakeOpenAiOptions::default().reply(FakeReply::text(LONG_REPLY)).reply(FakeReply::text("Done."));
    // Parley reaches the recogniser through a relay the test can cut and hold, as a network can.
    let gate = common::TcpGate::start().await;
    let stt = Arc::new(Deepgram::new(DeepgramConfig {
        base_url: format!("ws://{}", gate.addr),
        api_key: "test-key".into(),
        ..DeepgramConfig::default()
    }));
    init_logs();
    let options = RigOptions { openai, stt: Some(stt), conversation: quiet_agent(), ..RigOptions::default() };
    let mut rig = Rig::start(options).await;
    gate.set_upstream(rig.deepgram.local_addr());
    let mut call = place_call(&rig).await;

    say(&mut call, 1_000).await;
    listen_until(&mut call, "the reply playing", |log| media_count(log) >= 20).await;
    // The recognition connection dies; the reconnect's TCP connection is accepted, its handshake never answered.
    gate.hold(true);
    gate.cut();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let onset = tokio::time::Instant::now();
    call.stream_audio(&speech(800)).await.unwrap();
    call.wait_until("clear", WAIT, |log| {
        log.iter().any(|r| matches!(r, Received::Message { message: OutboundMessage::Clear { .. }, .. }))
    })
    .await
    .unwrap();
    let cleared_at = call
        .received()
        .iter()
        .find_map(|r| match r {
            Received::Message { at, message: OutboundMessage::Clear { .. } } => Some(*at),
            _ => None,
        })
        .expect("clear");
    let reaction = cleared_at.duration_since(onset);
    assert!(reaction <= Duration::from_millis(200), "clear {reaction:?} after the caller began to speak");

    // The recogniser is reachable again: the new session is fed what the caller said (its first utterance, as the
    // fake numbers them per connection), and the call goes on.
    gate.hold(false);
    call.stream_audio(&silence(600)).await.unwrap();
    rig.next_report().await;
    rig.next_report().await;
    assert!(rig.deepgram.connections().len() >= 2, "STT was not reconnected");
    let requests = rig.openai.requests();
    assert_eq!(requests.len(), 2);
    let history = messages_of(&requests[1].body);
    assert_eq!(history.last(), Some(&("user".to_owned(), FIRST_UTTERANCE.to_owned())), "{history:?}");
    call.hang_up().await;
}
