//! The engine's decisions, tested in milliseconds: in-memory providers under tokio's paused clock.
//!
//! Each test holds a call with the cascade engine as a real call has it (playout queue, turn detector, reply task,
//! provider links), but with providers the test steers ([`doubles`]) and the energy-gate VAD inline, so time is
//! virtual and every step is deterministic. Socket-level tests of the same paths are in `tests/`.

mod context;
mod doubles;
mod resume;
mod smart_turn;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use self::doubles::{lock_log, twilio_side, LlmTurn, Open, Spoken, SttHandle, TestLlm, TestStt, TestTts, TwilioLog};
use super::cascade::{CascadeDeps, CascadeFactory};
use super::config::ConversationConfig;
use super::latency::TurnLatency;
use super::tools::NoTools;
use super::vad::VadSource;
use crate::audio::playout;
use crate::call::agent::{AgentContext, AgentFactory, CallEvent};
use crate::call::events::{call_events, CallEventSender, Delivery};
use crate::call::tap::CallTap;
use crate::call::CallInfo;
use crate::llm::LlmError;

/// A loud 20 ms frame (full-scale μ-law square wave): speech to the energy gate.
fn loud_frame() -> Bytes {
    Bytes::from([0x00_u8, 0x80].repeat(80))
}

/// A silent 20 ms frame.
fn quiet_frame() -> Bytes {
    Bytes::from(vec![0xff_u8; 160])
}

/// Waits (in virtual time) for what a test expects, failing the test when it does not come.
async fn within<T>(what: &str, next: impl std::future::Future<Output = Option<T>>) -> T {
    match tokio::time::timeout(Duration::from_secs(60), next).await {
        Ok(Some(value)) => value,
        Ok(None) => panic!("{what}: the channel closed"),
        Err(_) => panic!("{what} did not come"),
    }
}

/// One call of the engine with every provider in the test's hands.
struct Call {
    events: CallEventSender,
    stt_sessions: mpsc::UnboundedReceiver<SttHandle>,
    llm: mpsc::UnboundedReceiver<LlmTurn>,
    tts: Arc<TestTts>,
    spoken: mpsc::UnboundedReceiver<Spoken>,
    twilio: Arc<Mutex<TwilioLog>>,
    reports: mpsc::UnboundedReceiver<TurnLatency>,
    _hang_up: CancellationToken,
}

impl Call {
    /// Starts a call; `prepare` may plan the doubles' opens before the engine makes its first ones.
    fn start(config: ConversationConfig, prepare: impl FnOnce(&TestStt, &TestTts)) -> Call {
        Call::start_with(config, |_| {}, prepare)
    }

    /// [`Call::start`], with `adjust` changing the call's dependencies (tools, a second model) first.
    fn start_with(
        config: ConversationConfig,
        adjust: impl FnOnce(&mut CascadeDeps),
        prepare: impl FnOnce(&TestStt, &TestTts),
    ) -> Call {
        let (stt, stt_sessions) = TestStt::new();
        let (llm, requests) = TestLlm::new();
        let (tts, spoken) = TestTts::new();
        prepare(&stt, &tts);
        let (reports_tx, reports) = mpsc::unbounded_channel();
        let mut deps = CascadeDeps {
            stt: stt.clone(),
            llm,
            tts: tts.clone(),
            tools: Arc::new(NoTools),
            config: Arc::new(config),
            redact_numbers: false,
            turn_reports: Some(reports_tx),
            call_control: None,
            vad: VadSource::Energy,
            route: None,
            tokens: crate::llm::context::tokens::TokenCounter::Estimate,
            prices: Default::default(),
            turn_model: None,
        };
        adjust(&mut deps);
        let call = CallInfo {
            call_sid: "CA00000000000000000000000000000001".into(),
            stream_sid: "MZ00000000000000000000000000000001".into(),
            account_sid: "AC00000000000000000000000000000001".into(),
            from: None,
            to: None,
            custom_parameters: Default::default(),
        };
        let (out, out_rx) = mpsc::channel(1024);
        let playout = playout::spawn(call.stream_sid.clone(), Duration::from_millis(200), out, CallTap::default());
        let twilio = twilio_side(out_rx, playout.clone());
        let (events, events_rx) = call_events(250, Delivery::Woken);
        let hang_up = CancellationToken::new();
        let agent = CascadeFactory { deps }.create(&call);
        let ctx = AgentContext { call, events: events_rx, playout, hang_up: hang_up.clone(), tap: CallTap::default() };
        tokio::spawn(agent.run(ctx));
        Call { events, stt_sessions, llm: requests, tts, spoken, twilio, reports, _hang_up: hang_up }
    }

    fn quiet() -> ConversationConfig {
        ConversationConfig { greeting: String::new(), ..ConversationConfig::default() }
    }

    /// The caller speaks (loud frames) for `millis`, in real-time steps of 20 ms.
    async fn speak(&self, millis: u64) {
        self.frames(millis, loud_frame).await;
    }

    async fn silence(&self, millis: u64) {
        self.frames(millis, quiet_frame).await;
    }

    async fn frames(&self, millis: u64, frame: fn() -> Bytes) {
        for _ in 0..millis / 20 {
            self.events.try_send(CallEvent::Audio(frame())).expect("engine gone");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn next_session(&mut self) -> SttHandle {
        within("an STT session", self.stt_sessions.recv()).await
    }

    async fn next_request(&mut self) -> LlmTurn {
        within("a model request", self.llm.recv()).await
    }

    async fn next_spoken(&mut self) -> Spoken {
        within("text for the voice", self.spoken.recv()).await
    }

    async fn next_report(&mut self) -> TurnLatency {
        within("the turn's latency", self.reports.recv()).await
    }

    /// A caller turn: speech, a pause, and the STT's final words.
    async fn caller_turn(&mut self, stt: &SttHandle, words: &str) -> LlmTurn {
        self.speak(400).await;
        self.silence(100).await;
        stt.final_words(words).await;
        self.next_request().await
    }

    fn twilio(&self) -> std::sync::MutexGuard<'_, TwilioLog> {
        lock_log(&self.twilio)
    }
}

#[tokio::test(start_paused = true)]
async fn a_finished_first_sentence_goes_to_tts_without_waiting_for_the_next_token() {
    let mut call = Call::start(Call::quiet(), |_, _| {});
    let stt = call.next_session().await;
    let turn = call.caller_turn(&stt, "Where is my order?").await;
    let first_token_at = Instant::now();
    turn.say("Sure, let me check on that for you.");
    // The model says nothing more for half a second.
    tokio::time::sleep(Duration::from_millis(500)).await;
    turn.say(" It shipped on Monday.");
    turn.finish();
    let first = call.next_spoken().await;
    assert_eq!(first.text, "Sure, let me check on that for you.");
    let held = first.at.duration_since(first_token_at);
    assert!(held < Duration::from_millis(50), "the first sentence waited {held:?} for the next token");
    let second = call.next_spoken().await;
    assert_eq!(second.text, " It shipped on Monday.");
    let report = call.next_report().await;
    assert_eq!(report.chunker_hold(), Some(Duration::ZERO));
    assert!(report.parley_added().is_some_and(|added| added < Duration::from_millis(5)), "{report:?}");
}

#[tokio::test(start_paused = true)]
async fn a_number_cut_by_a_token_boundary_waits_only_briefly() {
    let mut call = Call::start(Call::quiet(), |_, _| {});
    let stt = call.next_session().await;
    let turn = call.caller_turn(&stt, "How much is it?").await;
    let first_token_at = Instant::now();
    turn.say("It comes to 3.");
    tokio::time::sleep(Duration::from_millis(5)).await;
    turn.say("5 dollars.");
    let first = call.next_spoken().await;
    assert_eq!(first.text, "It comes to 3.5 dollars.", "the decimal point did not end the sentence");
    turn.say(" The total is 12.");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let second = call.next_spoken().await;
    assert_eq!(second.text, " The total is 12.");
    let hold = Duration::from_millis(ConversationConfig::default().text_hold_max_ms);
    let waited = second.at.duration_since(first_token_at + Duration::from_millis(5));
    assert!(waited <= hold + Duration::from_millis(1), "held {waited:?}, at most {hold:?} allowed");
    turn.finish();
    let report = call.next_report().await;
    assert!(report.parley_added().is_some(), "{report:?}");
}

#[tokio::test(start_paused = true)]
async fn barge_in_is_handled_while_the_stt_reconnect_hangs_and_the_call_goes_on_after() {
    let (release_stt, gate) = oneshot::channel();
    let mut call = Call::start(Call::quiet(), |stt, _| {
        stt.plan(Open::Succeed);
        stt.plan(Open::HangUntil(gate));
    });
    let stt = call.next_session().await;
    let turn = call.caller_turn(&stt, "Tell me about my order.").await;
    turn.say(&"Your order is on its way and should arrive by Friday, so keep an eye on the door. ".repeat(4));
    turn.finish();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(call.twilio().media_frames > 0, "the agent is speaking");
    // The recognition session is lost; the new one's handshake never completes.
    drop(stt);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let onset = Instant::now();
    call.speak(400).await;
    let clears = call.twilio().clears.clone();
    assert_eq!(clears.len(), 1, "one clear for the barge-in");
    let reaction = clears[0].duration_since(onset);
    assert!(reaction <= Duration::from_millis(200), "clear came {reaction:?} after speech onset");
    // The reconnect completes: the new session hears the caller's words since the last turn, and the call goes on.
    release_stt.send(()).expect("the open is waiting");
    let mut stt = call.next_session().await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(stt.audio_frames() >= 20, "the new session was fed the interrupting speech");
    stt.final_words("Actually, please cancel it.").await;
    let next = call.next_request().await;
    assert!(next.last_user_text().contains("cancel it"), "{}", next.last_user_text());
}

#[tokio::test(start_paused = true)]
async fn a_silent_model_gets_the_filler_line_and_then_the_fallback_line() {
    let config = ConversationConfig { filler_after_ms: 1_000, ..Call::quiet() };
    let (filler, fallback) = (config.filler_line.clone(), config.fallback_line.clone());
    let mut call = Call::start(config, |_, _| {});
    let stt = call.next_session().await;
    let turn = call.caller_turn(&stt, "Is my order late?").await;
    let asked = Instant::now();
    let first = call.next_spoken().await;
    assert_eq!(first.text.trim(), filler);
    let waited = first.at.duration_since(asked);
    assert!(waited >= Duration::from_millis(1_000) && waited < Duration::from_millis(1_050), "{waited:?}");
    // The provider's first-token timeout fires.
    tokio::time::sleep(Duration::from_millis(3_000)).await;
    let _ = turn.answer.send(Err(LlmError::Timeout {
        provider: "test-llm",
        millis: 4_000,
        waiting_for: "the first token",
    }));
    let second = call.next_spoken().await;
    assert_eq!(second.text, fallback);
    assert!(second.at.duration_since(asked) < Duration::from_millis(4_050));
}

#[tokio::test(start_paused = true)]
async fn a_caller_who_goes_on_before_any_audio_causes_no_clear_and_no_cancel() {
    let mut call = Call::start(Call::quiet(), |_, _| {});
    let stt = call.next_session().await;
    let first = call.caller_turn(&stt, "My order number is").await;
    // The caller goes on before the model has said anything.
    call.speak(400).await;
    call.silence(100).await;
    stt.final_words("four five six.").await;
    let second = call.next_request().await;
    assert_eq!(second.last_user_text(), "My order number is four five six.");
    first.say("Ignored.");
    assert!(call.twilio().clears.is_empty(), "nothing was playing, so nothing to clear");
    assert!(call.tts.cancels().is_empty(), "no text was sent, so nothing to cancel");
    second.say("Order 456 shipped.");
    second.finish();
    assert_eq!(call.next_spoken().await.text, "Order 456 shipped.");
}

#[tokio::test(start_paused = true)]
async fn turns_go_on_while_the_voice_is_still_connecting() {
    let (release_tts, gate) = oneshot::channel();
    let mut call = Call::start(Call::quiet(), |_, tts| tts.plan(Open::HangUntil(gate)));
    let stt = call.next_session().await;
    let first = call.caller_turn(&stt, "Hello?").await;
    first.say("Hi there.");
    first.finish();
    // No audio can come while the voice connects; the caller speaks again and is heard.
    call.speak(400).await;
    call.silence(100).await;
    stt.final_words("Is anyone there?").await;
    let second = call.next_request().await;
    assert!(second.last_user_text().ends_with("Is anyone there?"), "{}", second.last_user_text());
    assert!(call.twilio().clears.is_empty());
    second.say("Yes, I'm here.");
    second.finish();
    release_tts.send(()).expect("the open is waiting");
    let spoken = call.next_spoken().await;
    assert_eq!(spoken.text, "Yes, I'm here.", "the cancelled reply's text never reached the voice");
}

#[tokio::test(start_paused = true)]
async fn a_cough_the_recogniser_hears_as_a_word_does_not_cut_the_agent_off() {
    let mut call = Call::start(Call::quiet(), |_, _| {});
    let stt = call.next_session().await;
    let turn = call.caller_turn(&stt, "Where is my order?").await;
    turn.say(&"Your order is on its way and should arrive by Friday. ".repeat(3));
    turn.finish();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(call.twilio().media_frames > 0, "the agent is speaking");
    // 60 ms of noise, too short to barge in, which the recogniser still turns into a word.
    call.speak(60).await;
    call.silence(200).await;
    stt.final_words("Visiting").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(call.twilio().clears.is_empty(), "the agent was cut off by noise");
    assert!(call.llm.try_recv().is_err(), "the noise became a caller turn");
    let report = call.next_report().await;
    assert!(report.barge_in_onset.is_none(), "{report:?}");
}

/// What the STT session was sent, in order: audio messages by their length in frames, and control messages.
fn stt_messages(stt: &mut SttHandle) -> Vec<String> {
    use crate::stt::SttInput;
    stt.inputs()
        .into_iter()
        .map(|input| match input {
            SttInput::Audio(audio) => format!("audio {}", audio.len() / 160),
            SttInput::Finalize => "finalize".to_owned(),
            SttInput::Close => "close".to_owned(),
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn audio_no_result_waits_for_goes_in_batches_and_the_quiet_after_speech_goes_at_once() {
    let config = ConversationConfig {
        turn: super::turn::TurnConfig { strategy: super::turn::TurnStrategy::Vad, ..Default::default() },
        ..Call::quiet()
    };
    let mut call = Call::start(config, |_, _| {});
    let mut stt = call.next_session().await;
    stt.inputs();
    // Quiet, nobody spoke: 13 frames go as one message of ten, three are held.
    call.silence(260).await;
    assert_eq!(stt_messages(&mut stt), ["audio 10"]);
    // Speech gathers in messages of five, the three quiet frames counted in the first.
    call.speak(20).await;
    assert!(stt_messages(&mut stt).is_empty(), "the first loud frame waits for the next ones");
    call.speak(300).await;
    assert_eq!(stt_messages(&mut stt), ["audio 5"; 3]);
    // The quiet after the speech goes at once, taking the four loud frames held before it, then frame by frame; the
    // finalize follows it.
    call.silence(100).await;
    assert_eq!(stt_messages(&mut stt), ["audio 5", "audio 1", "audio 1", "audio 1", "audio 1"]);
    let silence_ms = super::turn::TurnConfig::default().vad_silence_ms;
    call.silence(silence_ms).await;
    let sent = stt_messages(&mut stt);
    assert_eq!(sent.iter().filter(|m| *m == "finalize").count(), 1, "{sent:?}");
    assert_eq!(sent.iter().filter(|m| *m == "audio 1").count(), silence_ms as usize / 20, "{sent:?}");
    // Once the turn is over, quiet audio is batched again.
    stt.final_words("Hello there.").await;
    let _ = call.next_request().await;
    stt.inputs();
    call.silence(400).await;
    assert_eq!(stt_messages(&mut stt), ["audio 10", "audio 10"]);
}

/// A call 600 ms into the agent's long answer to its first turn, with what the STT was sent so far taken.
async fn agent_speaking_a_long_reply(config: ConversationConfig) -> (Call, SttHandle) {
    let mut call = Call::start(config, |_, _| {});
    let mut stt = call.next_session().await;
    let turn = call.caller_turn(&stt, "Where is my order?").await;
    turn.say(&"Your order is on its way and should arrive by Friday. ".repeat(3));
    turn.finish();
    tokio::time::sleep(Duration::from_millis(600)).await;
    stt.inputs();
    (call, stt)
}

#[tokio::test(start_paused = true)]
async fn speech_over_a_paused_reply_goes_at_once_for_the_words_it_waits_for() {
    let (call, mut stt) = agent_speaking_a_long_reply(Call::quiet()).await;
    // The caller talks over the reply: held in fives until the barge-in pauses the reply, then sent at once with
    // every frame after it, because whether words come decides the reply.
    call.speak(400).await;
    assert!(!call.twilio().clears.is_empty(), "the speech barged in");
    let sent = stt_messages(&mut stt);
    let audio: Vec<usize> =
        sent.iter().filter_map(|m| m.strip_prefix("audio ")).map(|n| n.parse().expect("a count")).collect();
    assert_eq!(audio.iter().sum::<usize>(), 20, "every frame went, none held: {sent:?}");
    assert!(audio.ends_with(&[1, 1, 1]), "after the barge-in frames go one by one: {sent:?}");
    assert!(audio.iter().any(|&n| n > 1), "before it, speech was batched: {sent:?}");
}

#[tokio::test(start_paused = true)]
async fn speech_over_the_agent_goes_at_once_when_words_decide_a_barge_in() {
    let config = ConversationConfig {
        turn: super::turn::TurnConfig { barge_in_min_words: 2, ..Default::default() },
        ..Call::quiet()
    };
    let (call, mut stt) = agent_speaking_a_long_reply(config).await;
    // Whether the caller's words are two, not backchannels, decides the barge-in: every frame goes as it comes.
    call.speak(200).await;
    assert_eq!(stt_messages(&mut stt), vec!["audio 1"; 10]);
}
