//! The `smart` end-of-turn strategy in the engine: the turn model is asked at each pause, off the engine's task, and
//! only a pause it judges complete is finalized.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;

use super::doubles::SttHandle;
use super::{Call, ConversationConfig};
use crate::engine::turn::{TurnConfig, TurnStrategy};
use crate::stt::{SttEvent, SttInput, Transcript};
use crate::turn_model::{TurnJudgement, TurnModel};

/// A turn model answering from a script, 60 ms after each question, recording the audio it was given. Past the
/// script it answers by the audio's length when `complete_from_bytes` is set, else "complete".
#[derive(Default)]
struct ScriptedModel {
    answers: Mutex<VecDeque<bool>>,
    complete_from_bytes: Option<usize>,
    asked: Mutex<Vec<usize>>,
}

impl TurnModel for ScriptedModel {
    fn judge(&self, mulaw_8k: Vec<u8>) -> BoxFuture<'static, Result<TurnJudgement, String>> {
        self.asked.lock().expect("asked").push(mulaw_8k.len());
        let scripted = self.answers.lock().expect("answers").pop_front();
        let complete = scripted.unwrap_or_else(|| self.complete_from_bytes.is_none_or(|bytes| mulaw_8k.len() >= bytes));
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(60)).await;
            let probability = if complete { 0.9 } else { 0.1 };
            Ok(TurnJudgement { complete_probability: probability, complete, inference: Duration::from_millis(60) })
        })
    }
}

/// How many times the engine asked the STT to finalize (the audio sent is read and dropped).
fn finalizes(stt: &mut SttHandle) -> usize {
    let mut count = 0;
    while let Ok(input) = stt.audio.try_recv() {
        count += usize::from(matches!(input, SttInput::Finalize));
    }
    count
}

/// Caller audio (speech or silence) in 200 ms steps, counting the finalizes asked for meanwhile (and keeping the test
/// session's input queue from filling up).
async fn audio(call: &Call, stt: &mut SttHandle, voiced: bool, millis: u64, finalized: &mut usize) {
    for _ in 0..millis / 200 {
        if voiced {
            call.speak(200).await;
        } else {
            call.silence(200).await;
        }
        *finalized += finalizes(stt);
    }
}

async fn flushed(stt: &SttHandle, text: &str) {
    let transcript = Transcript {
        text: text.into(),
        is_final: true,
        speech_final: true,
        from_finalize: true,
        start: 0.0,
        duration: 1.0,
    };
    let _ = stt.events.send(SttEvent::Transcript(transcript)).await;
}

fn smart_call(model: &Arc<ScriptedModel>) -> Call {
    smart_call_with(model, TurnConfig::default())
}

fn smart_call_with(model: &Arc<ScriptedModel>, turn: TurnConfig) -> Call {
    let turn = TurnConfig { strategy: TurnStrategy::Smart, smart_pause_ms: 200, ..turn };
    let model = Arc::clone(model);
    Call::start_with(
        ConversationConfig { turn, ..Call::quiet() },
        move |deps| deps.turn_model = Some(model as Arc<dyn TurnModel>),
        |_, _| {},
    )
}

#[tokio::test(start_paused = true)]
async fn a_pause_inside_a_number_is_waited_through_and_the_turn_ends_after_the_number() {
    // Incomplete until the caller has said the number (more than 2 s of audio heard).
    let model = Arc::new(ScriptedModel { complete_from_bytes: Some(2_000 * 8), ..ScriptedModel::default() });
    let mut call = smart_call(&model);
    let mut stt = call.next_session().await;
    let mut finalized = 0;
    // "My order number is" … 800 ms … "four five six".
    audio(&call, &mut stt, true, 1_000, &mut finalized).await;
    audio(&call, &mut stt, false, 800, &mut finalized).await;
    let asked_in_pause = model.asked.lock().expect("asked").len();
    assert!((3..=4).contains(&asked_in_pause), "asked at 200, 400, 600 (and 800) ms of the pause: {asked_in_pause}");
    assert_eq!(finalized, 0, "the model judged the pause incomplete: keep listening");
    audio(&call, &mut stt, true, 800, &mut finalized).await;
    audio(&call, &mut stt, false, 400, &mut finalized).await;
    assert_eq!(model.asked.lock().expect("asked").len(), asked_in_pause + 1, "asked once after the number");
    assert_eq!(finalized, 1, "a complete turn is finalized");
    flushed(&stt, "My order number is four five six.").await;
    let request = call.next_request().await;
    assert_eq!(request.last_user_text(), "My order number is four five six.");
    // The model heard the caller's recent audio: both stretches of speech, the pause and 200 ms of silence after
    // (2.8 s of 8 kHz μ-law, give or take a frame in flight).
    let heard = *model.asked.lock().expect("asked").last().expect("asked");
    assert!((2_760 * 8..=2_840 * 8).contains(&heard), "{heard} bytes");
}

#[tokio::test(start_paused = true)]
async fn a_complete_turn_is_finalized_a_model_answer_after_the_short_pause() {
    let model = Arc::new(ScriptedModel::default());
    let mut call = smart_call(&model);
    let mut stt = call.next_session().await;
    let mut finalized = 0;
    audio(&call, &mut stt, true, 1_000, &mut finalized).await;
    let speech_end = tokio::time::Instant::now();
    audio(&call, &mut stt, false, 200, &mut finalized).await;
    assert_eq!(finalized, 0, "not before the pause is long enough and judged");
    audio(&call, &mut stt, false, 200, &mut finalized).await;
    assert_eq!(finalized, 1);
    flushed(&stt, "Where is my order?").await;
    let _request = call.next_request().await;
    let waited = tokio::time::Instant::now().duration_since(speech_end);
    assert!(waited < Duration::from_millis(500), "{waited:?}: 200 ms pause + 60 ms model, not a long silence");
}

#[tokio::test(start_paused = true)]
async fn without_a_complete_judgement_the_longest_silence_ends_the_turn() {
    let model = Arc::new(ScriptedModel { complete_from_bytes: Some(usize::MAX), ..ScriptedModel::default() });
    let mut call = smart_call(&model);
    let mut stt = call.next_session().await;
    let mut finalized = 0;
    audio(&call, &mut stt, true, 600, &mut finalized).await;
    audio(&call, &mut stt, false, 1_800, &mut finalized).await;
    assert_eq!(finalized, 0);
    audio(&call, &mut stt, false, 400, &mut finalized).await;
    assert_eq!(finalized, 1, "2 s of silence");
    let asked = model.asked.lock().expect("asked").len();
    assert!(asked >= 8, "asked every 200 ms of the pause until the longest silence: {asked}");
}

#[tokio::test(start_paused = true)]
async fn a_paused_reply_waits_for_the_words_it_asked_the_recogniser_for() {
    let model = Arc::new(ScriptedModel::default());
    // A recogniser that answers every finalize, however late (as local Whisper does): a long finalize wait.
    let mut call = smart_call_with(&model, TurnConfig { finalize_timeout_ms: 10_000, ..TurnConfig::default() });
    let mut stt = call.next_session().await;
    let mut finalized = 0;
    audio(&call, &mut stt, true, 1_000, &mut finalized).await;
    audio(&call, &mut stt, false, 400, &mut finalized).await;
    flushed(&stt, "Where is my order?").await;
    let turn = call.next_request().await;
    turn.say(&"Your order is on its way and should arrive by Friday, so keep an eye on the door. ".repeat(4));
    turn.finish();
    audio(&call, &mut stt, false, 600, &mut finalized).await;
    // The caller cuts in; the turn model judges their words complete and the recogniser is asked for them.
    audio(&call, &mut stt, true, 600, &mut finalized).await;
    let cleared_at = *call.twilio().clears.first().expect("barged in");
    audio(&call, &mut stt, false, 400, &mut finalized).await;
    assert_eq!(finalized, 2, "the interruption's words were asked for");
    // A slow recogniser: 3 s without an answer, far past the resume's longest wait; the reply stays paused.
    audio(&call, &mut stt, false, 3_000, &mut finalized).await;
    assert!(!call.twilio().media_at.iter().any(|&at| at > cleared_at), "resumed before the words came");
    flushed(&stt, "Actually, cancel it.").await;
    let next = call.next_request().await;
    assert_eq!(next.last_user_text(), "Actually, cancel it.");
}
