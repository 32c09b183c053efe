//! In-memory provider doubles and a Twilio-side double for tests of the engine's decisions.
//!
//! Each double hands the test a handle to steer it: the STT double's sessions (events in, audio out), a model whose
//! every request the test answers token by token, a voice that turns text into audio at a fixed rate, and the Twilio
//! side that reads what the playout queue sends and echoes marks. Opens can be made to hang, as a connection whose
//! handshake never completes does.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::audio::playout::PlayoutHandle;
use crate::llm::{LanguageModel, LlmError, LlmEvent, LlmRequest, LlmStream};
use crate::stt::{SpeechToText, SttError, SttEvent, SttInput, SttSession, Transcript};
use crate::tts::{TextToSpeech, TtsError, TtsEvent, TtsInput, TtsSession};
use crate::twilio::messages::OutboundMessage;

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// How the next open of a double behaves.
pub enum Open {
    Succeed,
    /// The open waits until the sender is used (or dropped, which fails it).
    HangUntil(oneshot::Receiver<()>),
}

/// The test's side of one STT session.
pub struct SttHandle {
    pub events: mpsc::Sender<SttEvent>,
    pub audio: mpsc::Receiver<SttInput>,
}

impl SttHandle {
    /// A final transcript with the provider's end of speech.
    pub async fn final_words(&self, text: &str) {
        let transcript = Transcript {
            text: text.into(),
            is_final: true,
            speech_final: true,
            from_finalize: false,
            start: 0.0,
            duration: 1.0,
        };
        let _ = self.events.send(SttEvent::Transcript(transcript)).await;
    }

    /// 20 ms frames of audio received so far (without waiting), however they were grouped into messages.
    pub fn audio_frames(&mut self) -> usize {
        self.inputs().iter().map(|input| if let SttInput::Audio(audio) = input { audio.len() / 160 } else { 0 }).sum()
    }

    /// Everything the engine sent the session so far (without waiting).
    pub fn inputs(&mut self) -> Vec<SttInput> {
        let mut inputs = Vec::new();
        while let Ok(input) = self.audio.try_recv() {
            inputs.push(input);
        }
        inputs
    }
}

/// A speech-to-text provider the test steers.
pub struct TestStt {
    plan: Mutex<VecDeque<Open>>,
    sessions: mpsc::UnboundedSender<SttHandle>,
}

impl TestStt {
    pub fn new() -> (Arc<TestStt>, mpsc::UnboundedReceiver<SttHandle>) {
        let (sessions, rx) = mpsc::unbounded_channel();
        (Arc::new(TestStt { plan: Mutex::new(VecDeque::new()), sessions }), rx)
    }

    /// How the next open behaves (opens not planned succeed).
    pub fn plan(&self, open: Open) {
        lock(&self.plan).push_back(open);
    }
}

#[async_trait]
impl SpeechToText for TestStt {
    fn name(&self) -> &'static str {
        "test-stt"
    }

    async fn open(&self) -> Result<SttSession, SttError> {
        let plan = lock(&self.plan).pop_front().unwrap_or(Open::Succeed);
        if let Open::HangUntil(gate) = plan {
            gate.await.map_err(|_| SttError::Connect { provider: "test-stt", detail: "gave up".into() })?;
        }
        let (input, audio) = mpsc::channel(crate::stt::INPUT_CAPACITY);
        let (events, events_rx) = mpsc::channel(64);
        let _ = self.sessions.send(SttHandle { events, audio });
        Ok(SttSession { input, events: events_rx })
    }
}

/// One request to the test model, and where its answer goes.
pub struct LlmTurn {
    pub request: LlmRequest,
    pub answer: mpsc::UnboundedSender<Result<LlmEvent, LlmError>>,
}

impl LlmTurn {
    pub fn say(&self, text: &str) {
        let _ = self.answer.send(Ok(LlmEvent::TextDelta(text.into())));
    }

    /// The model's answer is complete (the stream ends).
    pub fn finish(self) {
        let finished = LlmEvent::Finished { reason: crate::llm::FinishReason::Stop, usage: None, request_id: None };
        let _ = self.answer.send(Ok(finished));
    }

    /// The caller's last words the model was asked about.
    pub fn last_user_text(&self) -> String {
        let user = self.request.messages.iter().rev().find(|m| m.role == crate::llm::Role::User);
        user.map(|m| m.content.clone()).unwrap_or_default()
    }
}

/// A model that hands every request to the test.
pub struct TestLlm {
    requests: mpsc::UnboundedSender<LlmTurn>,
}

impl TestLlm {
    pub fn new() -> (Arc<TestLlm>, mpsc::UnboundedReceiver<LlmTurn>) {
        let (requests, rx) = mpsc::unbounded_channel();
        (Arc::new(TestLlm { requests }), rx)
    }
}

#[async_trait]
impl LanguageModel for TestLlm {
    fn name(&self) -> &'static str {
        "test-llm"
    }

    fn model(&self) -> &str {
        "test-model"
    }

    async fn stream(&self, request: LlmRequest) -> Result<LlmStream, LlmError> {
        let (answer, events) = mpsc::unbounded_channel();
        let _ = self.requests.send(LlmTurn { request, answer });
        Ok(Box::pin(futures_util::stream::unfold(events, |mut events| async move {
            events.recv().await.map(|event| (event, events))
        })))
    }
}

/// Text the test voice received, with when.
#[derive(Debug, Clone)]
pub struct Spoken {
    pub text: String,
    pub at: Instant,
}

/// A voice that answers every piece of text with audio: 10 ms of μ-law per character, all at once.
pub struct TestTts {
    plan: Mutex<VecDeque<Open>>,
    spoken: mpsc::UnboundedSender<Spoken>,
    cancels: Arc<Mutex<Vec<String>>>,
}

impl TestTts {
    pub fn new() -> (Arc<TestTts>, mpsc::UnboundedReceiver<Spoken>) {
        let (spoken, rx) = mpsc::unbounded_channel();
        (Arc::new(TestTts { plan: Mutex::new(VecDeque::new()), spoken, cancels: Arc::default() }), rx)
    }

    pub fn plan(&self, open: Open) {
        lock(&self.plan).push_back(open);
    }

    /// The contexts cancelled so far.
    pub fn cancels(&self) -> Vec<String> {
        lock(&self.cancels).clone()
    }
}

#[async_trait]
impl TextToSpeech for TestTts {
    fn name(&self) -> &'static str {
        "test-tts"
    }

    async fn open(&self) -> Result<TtsSession, TtsError> {
        let plan = lock(&self.plan).pop_front().unwrap_or(Open::Succeed);
        if let Open::HangUntil(gate) = plan {
            gate.await.map_err(|_| TtsError::Connect { provider: "test-tts", detail: "gave up".into() })?;
        }
        let (input, mut inputs) = mpsc::channel::<TtsInput>(64);
        let (events, events_rx) = mpsc::channel(256);
        let spoken = self.spoken.clone();
        let cancels = Arc::clone(&self.cancels);
        tokio::spawn(async move {
            while let Some(input) = inputs.recv().await {
                match input {
                    TtsInput::Text { context, text, last } => {
                        if !text.is_empty() {
                            let _ = spoken.send(Spoken { text: text.clone(), at: Instant::now() });
                            let mulaw = Bytes::from(vec![0x7f_u8; text.chars().count() * 80]);
                            let _ = events.send(TtsEvent::Audio { context: context.clone(), mulaw }).await;
                        }
                        if last {
                            let _ = events.send(TtsEvent::Done { context }).await;
                        }
                    }
                    TtsInput::Cancel { context } => lock(&cancels).push(context),
                    TtsInput::Close => break,
                }
            }
        });
        Ok(TtsSession { input, events: events_rx })
    }
}

/// What the Twilio side saw.
#[derive(Debug, Default)]
pub struct TwilioLog {
    pub media_frames: usize,
    /// When each media frame went out.
    pub media_at: Vec<Instant>,
    pub clears: Vec<Instant>,
    pub first_media_at: Option<Instant>,
}

/// Plays Twilio's part: takes the playout's messages and echoes each mark once the audio before it has played.
pub fn twilio_side(mut out: mpsc::Receiver<OutboundMessage>, playout: PlayoutHandle) -> Arc<Mutex<TwilioLog>> {
    let log = Arc::new(Mutex::new(TwilioLog::default()));
    let seen = Arc::clone(&log);
    tokio::spawn(async move {
        while let Some(message) = out.recv().await {
            match message {
                OutboundMessage::Media { media, .. } => {
                    // A message carries whole 20 ms frames; each is logged as sent now.
                    let frames = media.payload.len().div_ceil(crate::audio::FRAME_BYTES);
                    let mut log = lock(&seen);
                    log.media_frames += frames;
                    log.media_at.extend(std::iter::repeat_n(Instant::now(), frames));
                    log.first_media_at.get_or_insert_with(Instant::now);
                }
                OutboundMessage::Mark { mark, .. } => {
                    let playout = playout.clone();
                    // Audio goes out a little ahead of real time; the mark comes back once it has played.
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        playout.mark_echoed(mark.name);
                    });
                }
                OutboundMessage::Clear { .. } => lock(&seen).clears.push(Instant::now()),
            }
        }
    });
    log
}

pub fn lock_log(log: &Arc<Mutex<TwilioLog>>) -> std::sync::MutexGuard<'_, TwilioLog> {
    lock(log)
}
