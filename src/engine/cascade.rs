//! The cascade agent: caller audio → VAD + streaming STT → turn detection → LLM (with tools) → TTS → playout, with
//! barge-in. One engine task per call owns all of the call's state; providers and the reply run as their own tasks
//! and talk to it through channels, so nothing here ever waits on a provider.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::call_control::{CallAction, CallControl};
use super::chunker::ChunkerConfig;
use super::config::ConversationConfig;
use super::heard::{heard_prefix, SpeakingRate};
use super::keypad::Keypad;
use super::latency::TurnLatency;
use super::replay::ReplayBuffer;
use super::reply::{self, ReplyEvent, ReplyEvents, ReplyJob};
use super::tools::{ToolCallContext, ToolExecutor};
use super::turn::{EndOfTurn, TurnDecision, TurnDetector};
use super::vad::{VadPool, VadVerdict};
use crate::audio::playout::{ClearReport, PlayoutHandle, PlayoutProgress};
use crate::call::agent::{Agent, AgentContext, AgentFactory, CallEvent};
use crate::call::tap::{CallTap, ConversationEvent};
use crate::call::CallInfo;
use crate::llm::history::{append_tool_round, ToolOutcome, ToolResult};
use crate::llm::speculative::SpeculativeLlm;
use crate::llm::{ChatMessage, LanguageModel, LlmRequest, Role, ToolCall};
use crate::stt::{SpeechToText, SttEvent, SttInput, TurnEvent};
use crate::telemetry::spans::{StageProviders, TurnEnd, TurnTrace};
use crate::telemetry::{metrics, otel};
use crate::tts::{TextToSpeech, TtsEvent, TtsInput};

/// How long to wait before reconnecting a failed STT session.
const STT_RETRY: Duration = Duration::from_secs(2);
/// How long a new STT session may take to accept the replayed audio.
const REPLAY_TIMEOUT: Duration = Duration::from_secs(2);

/// The providers and settings every call of this server shares.
#[derive(Clone)]
pub struct CascadeDeps {
    pub stt: Arc<dyn SpeechToText>,
    pub llm: Arc<dyn LanguageModel>,
    pub tts: Arc<dyn TextToSpeech>,
    pub tools: Arc<dyn ToolExecutor>,
    pub config: Arc<ConversationConfig>,
    /// Leave the caller's number out of what reaches the backend and the logs.
    pub redact_numbers: bool,
    /// Receives every finished turn's latency record (metrics, benchmarks, tests).
    pub turn_reports: Option<mpsc::UnboundedSender<TurnLatency>>,
    /// The built-in `end_call`/`transfer_call` tools, when offered (the same object is `tools`, wrapping the
    /// backend's), so the engine can carry out what the model asked for.
    pub call_control: Option<Arc<CallControl>>,
}

/// Makes a [`CascadeAgent`] per call.
pub struct CascadeFactory {
    pub deps: CascadeDeps,
}

impl AgentFactory for CascadeFactory {
    fn create(&self, _call: &CallInfo) -> Box<dyn Agent> {
        Box::new(CascadeAgent { deps: self.deps.clone() })
    }
}

/// The voice agent of one call.
pub struct CascadeAgent {
    deps: CascadeDeps,
}

#[async_trait]
impl Agent for CascadeAgent {
    async fn run(self: Box<Self>, ctx: AgentContext) {
        Engine::new(self.deps, ctx.call.clone(), ctx.playout.clone(), ctx.tap.clone()).run(ctx).await;
    }
}

/// One segment of a reply: text spoken before a tool round (or after the last), and that round's calls.
#[derive(Debug, Default)]
struct Segment {
    text: String,
    calls: Vec<ToolCall>,
    results: Vec<ToolResult>,
}

/// The reply in progress: from the turn decision until its audio has finished playing.
struct Reply {
    id: u64,
    /// TTS context of this reply.
    context: String,
    task: Option<JoinHandle<()>>,
    cancel: CancellationToken,
    segments: Vec<Segment>,
    llm_done: bool,
    pieces_sent: usize,
    synthesis_done: bool,
    audio_bytes: u64,
    /// Playout offset of the reply's first audio byte.
    audio_start: Option<u64>,
    marks: u64,
    latency: TurnLatency,
    /// Whether this reply is a caller turn's answer (its latency is reported).
    answers_turn: bool,
    /// The turn's span, closed with the stage spans when the reply is over.
    trace: TurnTrace,
    /// When the TTS said this reply's synthesis was complete.
    synthesis_done_at: Option<Instant>,
}

impl Reply {
    fn text(&self) -> String {
        self.segments.iter().map(|s| s.text.as_str()).collect()
    }

    fn current_segment(&mut self) -> &mut Segment {
        if self.segments.is_empty() {
            self.segments.push(Segment::default());
        }
        let last = self.segments.len() - 1;
        &mut self.segments[last]
    }
}

struct Engine {
    deps: CascadeDeps,
    call: CallInfo,
    playout: PlayoutHandle,
    tap: CallTap,
    turn: TurnDetector,
    stt_input: Option<mpsc::Sender<SttInput>>,
    stt_retry_at: Option<Instant>,
    tts_input: Option<mpsc::Sender<TtsInput>>,
    history: Vec<ChatMessage>,
    reply: Option<Reply>,
    next_reply_id: u64,
    turn_index: u64,
    rate: SpeakingRate,
    replies: mpsc::UnboundedSender<(u64, ReplyEvent)>,
    /// Audio frames the STT could not take (its queue was full).
    stt_dropped_frames: u64,
    /// Destructive calls waiting for the caller's yes: (tool name, arguments).
    pending_confirmations: Vec<(String, serde_json::Value)>,
    /// The call's span (parent of every turn span), when tracing is on.
    call_trace: Option<opentelemetry::Context>,
    /// Every reported turn's latency, for the summary logged at the end of the call.
    turn_latencies: Vec<TurnLatency>,
    /// Keys the caller is pressing, until they make a turn.
    keypad: Keypad,
    /// Ends the call from Parley's side (the session closes the stream).
    hang_up: CancellationToken,
    /// A call-control action whose announcing reply has finished playing, to carry out now.
    due_action: Option<CallAction>,
    /// The caller's audio since the last turn, replayed into a new STT session after a lost one.
    replay: ReplayBuffer,
    /// This call's model, able to start a reply on the STT's eager end of turn (when enabled).
    speculative: Option<Arc<SpeculativeLlm>>,
    /// Replies in a row the model failed to give.
    failed_replies: u32,
    /// What to do once the reply now playing has been heard (giving up after repeated failures).
    after_reply: Option<CallAction>,
}

/// Adds the caller's words to the history: to the last message when it is the caller's too (their turn went on).
fn append_user_text(history: &mut Vec<ChatMessage>, text: &str) {
    match history.last_mut() {
        Some(last) if last.role == Role::User => {
            last.content.push(' ');
            last.content.push_str(text);
        }
        _ => history.push(ChatMessage::user(text)),
    }
}

/// Whether the caller's words are a yes (to a confirmation question).
fn is_affirmative(text: &str) -> bool {
    const YES: [&str; 12] =
        ["yes", "yeah", "yep", "yup", "sure", "correct", "confirm", "confirmed", "ok", "okay", "absolutely", "please"];
    const NO: [&str; 5] = ["no", "not", "don't", "dont", "nope"];
    let lower = text.to_lowercase();
    let words: Vec<&str> = lower.split(|c: char| !c.is_alphanumeric() && c != '\'').filter(|w| !w.is_empty()).collect();
    let said = |w: &str| words.contains(&w);
    YES.iter().any(|w| said(w)) && !NO.iter().any(|w| said(w)) || lower.contains("go ahead") || lower.contains("do it")
}

/// Receivers the engine loop waits on, kept apart from the state so each can be borrowed on its own.
struct Inputs {
    stt: Option<mpsc::Receiver<SttEvent>>,
    tts: Option<mpsc::Receiver<TtsEvent>>,
    vad: Option<mpsc::UnboundedReceiver<VadVerdict>>,
    replies: mpsc::UnboundedReceiver<(u64, ReplyEvent)>,
}

async fn recv<T>(rx: &mut Option<mpsc::Receiver<T>>) -> Option<T> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn recv_unbounded<T>(rx: &mut Option<mpsc::UnboundedReceiver<T>>) -> Option<T> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

impl Engine {
    fn new(deps: CascadeDeps, call: CallInfo, playout: PlayoutHandle, tap: CallTap) -> Engine {
        let history = vec![ChatMessage::system(deps.config.system_prompt.clone())];
        let turn = TurnDetector::new(deps.config.turn.clone());
        let deps_keypad_ms = deps.config.keypad_commit_ms;
        let replay_frames = (deps.config.stt_replay_ms / 20) as usize;
        let speculative = deps.config.speculative_replies.then(|| Arc::new(SpeculativeLlm::new(Arc::clone(&deps.llm))));
        Engine {
            deps,
            call,
            playout,
            tap,
            turn,
            stt_input: None,
            stt_retry_at: None,
            tts_input: None,
            history,
            reply: None,
            next_reply_id: 1,
            turn_index: 0,
            rate: SpeakingRate::default(),
            replies: mpsc::unbounded_channel().0,
            stt_dropped_frames: 0,
            pending_confirmations: Vec::new(),
            call_trace: None,
            turn_latencies: Vec::new(),
            keypad: Keypad::new(Duration::from_millis(deps_keypad_ms)),
            hang_up: CancellationToken::new(),
            due_action: None,
            replay: ReplayBuffer::new(replay_frames),
            speculative,
            failed_replies: 0,
            after_reply: None,
        }
    }

    async fn run(mut self, mut ctx: AgentContext) {
        self.hang_up = ctx.hang_up.clone();
        let (replies, replies_rx) = mpsc::unbounded_channel();
        self.replies = replies;
        if otel::enabled() {
            // The agent task runs inside the call's span (src/edge/session.rs).
            use tracing_opentelemetry::OpenTelemetrySpanExt as _;
            self.call_trace = Some(tracing::Span::current().context());
        }
        let mut vad = VadPool::global().open(self.deps.config.vad_aggressiveness);
        let mut inputs = Inputs { stt: None, tts: None, vad: None, replies: replies_rx };
        if let Some(vad) = vad.as_mut() {
            inputs.vad = Some(std::mem::replace(&mut vad.verdicts, mpsc::unbounded_channel().1));
        } else {
            tracing::error!(call_sid = %self.call.call_sid, "no VAD worker is available; barge-in is off for this call");
        }
        inputs.stt = self.open_stt().await;
        inputs.tts = self.open_tts().await;
        let mut progress = self.playout.watch();
        if !self.deps.config.greeting.is_empty() {
            let greeting = self.deps.config.greeting.clone();
            self.speak_scripted(&greeting, false).await;
        }

        loop {
            let deadline =
                [self.turn.next_deadline(), self.stt_retry_at, self.keypad.deadline()].into_iter().flatten().min();
            tokio::select! {
                event = ctx.events.recv() => match event {
                    Some(CallEvent::Audio(frame)) => {
                        if let Some(vad) = vad.as_mut() {
                            vad.push(frame.clone());
                        }
                        self.replay.push(frame.clone());
                        self.forward_to_stt(frame);
                    }
                    Some(CallEvent::Dtmf(digit)) => {
                        tracing::info!(call_sid = %self.call.call_sid, %digit, "caller pressed a key");
                        if let Some(entry) = self.keypad.press(&digit, Instant::now()) {
                            self.keyed_turn(entry, &mut inputs).await;
                        }
                    }
                    Some(CallEvent::Hangup) | None => break,
                },
                Some(verdict) = recv_unbounded(&mut inputs.vad) => {
                    let decisions = self.turn.on_vad(verdict.voiced, Instant::now());
                    self.apply(decisions, &mut inputs).await;
                }
                event = recv(&mut inputs.stt) => self.on_stt(event, &mut inputs).await,
                event = recv(&mut inputs.tts) => self.on_tts(event, &mut inputs).await,
                Some((id, event)) = inputs.replies.recv() => self.on_reply_event(id, event).await,
                changed = progress.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let now = *progress.borrow_and_update();
                    self.on_playout(now);
                }
                () = sleep_until(deadline) => {
                    let now = Instant::now();
                    if self.stt_retry_at.is_some_and(|at| at <= now) {
                        self.stt_retry_at = None;
                        inputs.stt = self.open_stt().await;
                        self.replay_to_stt().await;
                    }
                    if let Some(entry) = self.keypad.on_tick(now) {
                        self.keyed_turn(entry, &mut inputs).await;
                    }
                    let decisions = self.turn.on_tick(now);
                    self.apply(decisions, &mut inputs).await;
                }
            }
            if let Some(action) = self.due_action.take() {
                self.carry_out(action, &mut inputs).await;
            }
        }
        self.hang_up().await;
    }

    // ----- providers -------------------------------------------------------------------------------------------

    async fn open_stt(&mut self) -> Option<mpsc::Receiver<SttEvent>> {
        match self.deps.stt.open().await {
            Ok(session) => {
                self.stt_input = Some(session.input);
                Some(session.events)
            }
            Err(err) => {
                tracing::error!(call_sid = %self.call.call_sid, provider = self.deps.stt.name(), %err, "speech-to-text unavailable; retrying");
                self.provider_error("stt", self.deps.stt.name(), &err);
                self.stt_input = None;
                self.stt_retry_at = Some(Instant::now() + STT_RETRY);
                None
            }
        }
    }

    async fn open_tts(&mut self) -> Option<mpsc::Receiver<TtsEvent>> {
        match self.deps.tts.open().await {
            Ok(session) => {
                self.tts_input = Some(session.input);
                Some(session.events)
            }
            Err(err) => {
                tracing::error!(call_sid = %self.call.call_sid, provider = self.deps.tts.name(), %err, "text-to-speech unavailable");
                self.provider_error("tts", self.deps.tts.name(), &err);
                self.tts_input = None;
                None
            }
        }
    }

    fn forward_to_stt(&mut self, frame: Bytes) {
        let Some(input) = &self.stt_input else { return };
        if input.try_send(SttInput::Audio(frame)).is_err() {
            self.stt_dropped_frames += 1;
            if self.stt_dropped_frames.is_power_of_two() {
                tracing::warn!(call_sid = %self.call.call_sid, dropped = self.stt_dropped_frames, "speech-to-text is not keeping up");
            }
        }
    }

    async fn on_stt(&mut self, event: Option<SttEvent>, inputs: &mut Inputs) {
        let now = Instant::now();
        match event {
            Some(SttEvent::Transcript(transcript)) => {
                let decisions = self.turn.on_transcript(&transcript, now);
                self.apply(decisions, inputs).await;
            }
            Some(SttEvent::UtteranceEnd { .. }) => {
                let decisions = self.turn.on_utterance_end(now);
                self.apply(decisions, inputs).await;
            }
            Some(SttEvent::SpeechStarted { .. }) => {}
            Some(SttEvent::TurnInfo { event, transcript }) => self.on_turn_info(event, &transcript),
            Some(SttEvent::Error(err)) => {
                tracing::error!(call_sid = %self.call.call_sid, provider = self.deps.stt.name(), %err, "speech-to-text failed; reconnecting");
                self.provider_error("stt", self.deps.stt.name(), &err);
                self.stt_lost(inputs).await;
            }
            Some(SttEvent::Closed) | None => {
                tracing::warn!(call_sid = %self.call.call_sid, provider = self.deps.stt.name(), "speech-to-text session closed; reconnecting");
                self.stt_lost(inputs).await;
            }
        }
    }

    /// Model-based turn detection: on an eager end of turn, start the reply's model request early (held, not
    /// spoken); when the caller resumes, drop it. The end of turn itself arrives as a final transcript.
    fn on_turn_info(&mut self, event: TurnEvent, transcript: &str) {
        let Some(speculative) = &self.speculative else { return };
        match event {
            TurnEvent::EagerEndOfTurn if self.reply.is_none() && !transcript.trim().is_empty() => {
                let mut messages = self.history.clone();
                append_user_text(&mut messages, transcript.trim());
                let tools = if self.deps.config.max_tool_rounds > 0 { self.deps.tools.specs() } else { Vec::new() };
                tracing::debug!(call_sid = %self.call.call_sid, "eager end of turn: starting the reply speculatively");
                speculative.prefetch(LlmRequest { messages, tools });
            }
            TurnEvent::TurnResumed => speculative.discard(),
            _ => {}
        }
    }

    /// The STT session is gone: reconnect and feed the new session the caller's audio since the last turn, so no
    /// word is lost; only when that audio is no longer all there, and the caller was mid-sentence, ask them to
    /// repeat.
    async fn stt_lost(&mut self, inputs: &mut Inputs) {
        inputs.stt = None;
        self.stt_input = None;
        let lost_words = self.turn.discard_pending();
        let caller_mid_turn = self.turn.caller_speaking() || lost_words;
        inputs.stt = self.open_stt().await;
        let replayed = self.replay_to_stt().await;
        if caller_mid_turn && !replayed && self.reply.is_none() {
            let line = self.deps.config.fallback_line.clone();
            self.speak_scripted(&line, false).await;
        }
    }

    /// Feeds the new STT session the buffered audio; false when there is no session or the buffer lost speech.
    async fn replay_to_stt(&mut self) -> bool {
        let Some(input) = self.stt_input.clone() else { return false };
        let Some(frames) = self.replay.replayable() else { return false };
        let frames: Vec<Bytes> = frames.cloned().collect();
        let count = frames.len();
        let replay = async {
            for frame in frames {
                if input.send(SttInput::Audio(frame)).await.is_err() {
                    return false;
                }
            }
            true
        };
        // The session's queue drains at network speed; a session that does not take the audio promptly is no better
        // than the one lost.
        let done = tokio::time::timeout(REPLAY_TIMEOUT, replay).await.unwrap_or(false);
        tracing::info!(call_sid = %self.call.call_sid, frames = count, done, "replayed the caller's audio into the new speech-to-text session");
        done
    }

    async fn on_tts(&mut self, event: Option<TtsEvent>, inputs: &mut Inputs) {
        match event {
            Some(TtsEvent::Audio { context, mulaw }) => self.on_tts_audio(&context, mulaw),
            Some(TtsEvent::Done { context }) => {
                if let Some(reply) = self.reply.as_mut().filter(|r| r.context == context) {
                    reply.synthesis_done = true;
                    reply.synthesis_done_at.get_or_insert_with(Instant::now);
                    let progress = self.playout.progress();
                    self.on_playout(progress);
                }
            }
            Some(TtsEvent::Error { context: Some(context), error }) => {
                tracing::error!(call_sid = %self.call.call_sid, provider = self.deps.tts.name(), %error, %context, "text-to-speech failed for a reply");
                self.provider_error("tts", self.deps.tts.name(), &error);
                if let Some(reply) = self.reply.as_mut().filter(|r| r.context == context) {
                    reply.synthesis_done = true;
                }
            }
            Some(TtsEvent::Error { context: None, error }) => {
                tracing::error!(call_sid = %self.call.call_sid, provider = self.deps.tts.name(), %error, "text-to-speech session failed");
                self.provider_error("tts", self.deps.tts.name(), &error);
                self.tts_lost(inputs);
            }
            Some(TtsEvent::Closed) | None => self.tts_lost(inputs),
        }
    }

    /// The TTS session is gone; the reply in progress cannot be heard any further. A new session opens for the next
    /// reply.
    fn tts_lost(&mut self, inputs: &mut Inputs) {
        inputs.tts = None;
        self.tts_input = None;
        if let Some(reply) = self.reply.as_mut() {
            reply.synthesis_done = true;
        }
        let progress = self.playout.progress();
        self.on_playout(progress);
    }

    fn on_tts_audio(&mut self, context: &str, mulaw: Bytes) {
        let Some(reply) = self.reply.as_mut().filter(|r| r.context == context) else {
            // Audio of a cancelled reply: the caller must not hear it.
            return;
        };
        if reply.audio_start.is_none() {
            reply.latency.first_tts_audio = Some(Instant::now());
            reply.audio_start = Some(self.playout.progress().enqueued_bytes);
        }
        reply.audio_bytes += mulaw.len() as u64;
        self.playout.play(mulaw);
        reply.marks += 1;
        self.playout.mark(format!("{}-{}", reply.context, reply.marks));
    }

    async fn send_tts(&mut self, input: TtsInput) {
        let Some(tts) = &self.tts_input else { return };
        if tts.send(input).await.is_err() {
            self.tts_input = None;
        }
    }

    // ----- turns and replies -----------------------------------------------------------------------------------

    async fn apply(&mut self, decisions: Vec<TurnDecision>, inputs: &mut Inputs) {
        for decision in decisions {
            match decision {
                TurnDecision::SpeechStarted { .. } => {}
                TurnDecision::RequestFinalize => {
                    if let Some(stt) = &self.stt_input {
                        let _ = stt.try_send(SttInput::Finalize);
                    }
                }
                TurnDecision::BargeIn { onset } => self.barge_in(onset).await,
                TurnDecision::EndOfTurn(end) => self.on_end_of_turn(end, inputs).await,
            }
        }
    }

    /// Keys the caller pressed become a caller turn, as if said.
    async fn keyed_turn(&mut self, entry: String, inputs: &mut Inputs) {
        let end = EndOfTurn { text: entry, speech_ended_at: None, final_at: Instant::now() };
        self.on_end_of_turn(end, inputs).await;
    }

    async fn on_end_of_turn(&mut self, end: EndOfTurn, inputs: &mut Inputs) {
        let decided_at = Instant::now();
        if self.reply.is_some() {
            // The caller went on talking before the reply was heard: it answers a question they had not finished.
            self.interrupt_reply(None).await;
        }
        self.replay.turn_ended();
        self.add_user_text(&end.text);
        // A pending destructive action runs only if the caller's answer is a yes.
        let pending = std::mem::take(&mut self.pending_confirmations);
        let confirmed = if is_affirmative(&end.text) { pending } else { Vec::new() };
        self.turn_index += 1;
        tracing::info!(call_sid = %self.call.call_sid, turn = self.turn_index, text = %end.text, "caller turn");
        self.tap.conversation(ConversationEvent::CallerTurn { turn: self.turn_index, text: end.text.clone() });
        if self.tts_input.is_none() {
            inputs.tts = self.open_tts().await;
        }
        let reply_id = self.next_reply_id;
        self.next_reply_id += 1;
        let cancel = CancellationToken::new();
        let llm = match &self.speculative {
            Some(speculative) => Arc::clone(speculative) as Arc<dyn LanguageModel>,
            None => Arc::clone(&self.deps.llm),
        };
        let job = ReplyJob {
            llm,
            tools: Arc::clone(&self.deps.tools),
            history: self.history.clone(),
            context: ToolCallContext {
                call_sid: self.call.call_sid.clone(),
                caller_number: if self.deps.redact_numbers { None } else { self.call.from.clone() },
                turn_index: self.turn_index - 1,
                traceparent: None,
            },
            max_tool_rounds: self.deps.config.max_tool_rounds,
            chunker: ChunkerConfig::default(),
            cancel: cancel.clone(),
            filler_line: self.deps.config.filler_line.clone(),
            filler_after: Duration::from_millis(self.deps.config.filler_after_ms),
            confirmed,
            trace: None,
        };
        let events = ReplyEvents { reply_id, sender: self.replies.clone() };
        let trace = match &self.call_trace {
            Some(call) => {
                TurnTrace::start(call, &self.call.call_sid, self.turn_index, end.speech_ended_at.or(Some(decided_at)))
            }
            None => TurnTrace::default(),
        };
        let task = tokio::spawn(reply::run(ReplyJob { trace: trace.reply_trace(), ..job }, events));
        let latency = TurnLatency {
            turn_index: self.turn_index,
            speech_ended: end.speech_ended_at,
            stt_final: Some(end.final_at),
            end_of_turn: Some(decided_at),
            ..TurnLatency::default()
        };
        self.reply = Some(Reply {
            id: reply_id,
            context: format!("t{}-r{reply_id}", self.turn_index),
            task: Some(task),
            cancel,
            segments: Vec::new(),
            llm_done: false,
            pieces_sent: 0,
            synthesis_done: false,
            audio_bytes: 0,
            audio_start: None,
            marks: 0,
            latency,
            answers_turn: true,
            trace,
            synthesis_done_at: None,
        });
        self.turn.set_agent_speaking(true);
    }

    /// Says a fixed line (greeting, fallback) as a reply of its own, interruptible like any other.
    async fn speak_scripted(&mut self, line: &str, answers_turn: bool) {
        let reply_id = self.next_reply_id;
        self.next_reply_id += 1;
        let context = format!("s{reply_id}");
        self.reply = Some(Reply {
            id: reply_id,
            context: context.clone(),
            task: None,
            cancel: CancellationToken::new(),
            segments: vec![Segment { text: line.to_owned(), ..Segment::default() }],
            llm_done: true,
            pieces_sent: 1,
            synthesis_done: false,
            audio_bytes: 0,
            audio_start: None,
            marks: 0,
            latency: TurnLatency::default(),
            answers_turn,
            trace: TurnTrace::default(),
            synthesis_done_at: None,
        });
        self.turn.set_agent_speaking(true);
        self.send_tts(TtsInput::Text { context, text: line.to_owned(), last: true }).await;
        if self.tts_input.is_none() {
            if let Some(reply) = self.reply.as_mut() {
                reply.synthesis_done = true;
            }
            self.on_playout(self.playout.progress());
        }
    }

    async fn on_reply_event(&mut self, id: u64, event: ReplyEvent) {
        let Some(reply) = self.reply.as_mut().filter(|r| r.id == id) else { return };
        match event {
            ReplyEvent::LlmRequestSent { at } => {
                reply.latency.llm_request_sent.get_or_insert(at);
            }
            ReplyEvent::FirstToken { at } => {
                reply.latency.llm_first_token.get_or_insert(at);
            }
            ReplyEvent::Piece { text, at } => {
                reply.latency.first_piece.get_or_insert(at);
                reply.current_segment().text.push_str(&text);
                reply.pieces_sent += 1;
                let context = reply.context.clone();
                self.send_tts(TtsInput::Text { context, text, last: false }).await;
                if let Some(reply) = self.reply.as_mut() {
                    reply.latency.first_tts_request.get_or_insert_with(Instant::now);
                }
            }
            ReplyEvent::ConfirmationRequested { call } => {
                tracing::info!(call_sid = %self.call.call_sid, tool = %call.name, "asking the caller to confirm");
                let arguments = serde_json::from_str(&call.arguments).unwrap_or(serde_json::Value::Null);
                self.pending_confirmations.push((call.name, arguments));
            }
            ReplyEvent::ToolsStarted { calls } => {
                let names: Vec<&str> = calls.iter().map(|c| c.name.as_str()).collect();
                tracing::info!(call_sid = %self.call.call_sid, tools = ?names, "calling tools");
                for call in &calls {
                    self.tap.conversation(ConversationEvent::ToolCall {
                        turn: self.turn_index,
                        id: call.id.clone(),
                        name: call.name.clone(),
                        arguments: call.arguments.clone(),
                    });
                }
                reply.current_segment().calls = calls;
            }
            ReplyEvent::ToolRound { calls, results } => {
                for result in &results {
                    let (content, is_error) = match &result.outcome {
                        ToolOutcome::Output(text) => (text.clone(), false),
                        ToolOutcome::Error(text) => (text.clone(), true),
                        ToolOutcome::Cancelled => ("cancelled".to_owned(), true),
                    };
                    let id = result.call_id.clone();
                    self.tap.conversation(ConversationEvent::ToolResult {
                        turn: self.turn_index,
                        id,
                        content,
                        is_error,
                    });
                }
                let segment = reply.current_segment();
                segment.calls = calls;
                segment.results = results;
                reply.segments.push(Segment::default());
            }
            ReplyEvent::Done { .. } => {
                self.failed_replies = 0;
                self.finish_text(None).await;
            }
            ReplyEvent::Failed { error } => {
                tracing::error!(call_sid = %self.call.call_sid, provider = self.deps.llm.name(), %error, "LLM failed; speaking the fallback line");
                self.provider_error("llm", self.deps.llm.name(), &error);
                self.failed_replies += 1;
                let control = &self.deps.config.call_control;
                let give_up =
                    control.give_up_after_failures > 0 && self.failed_replies >= control.give_up_after_failures;
                let line = match (give_up, control.give_up_action()) {
                    (true, Some(action)) => {
                        tracing::warn!(call_sid = %self.call.call_sid, failures = self.failed_replies, ?action, "every provider keeps failing; giving up on the call");
                        self.after_reply = Some(action);
                        control.give_up_line.clone()
                    }
                    _ => self.deps.config.fallback_line.clone(),
                };
                self.finish_text(Some(line)).await;
            }
        }
    }

    /// The model is done (or failed): close the TTS context, with a last line if given.
    async fn finish_text(&mut self, last_line: Option<String>) {
        let Some(reply) = self.reply.as_mut() else { return };
        reply.llm_done = true;
        let text = match last_line {
            Some(line) => {
                reply.current_segment().text.push_str(&line);
                reply.pieces_sent += 1;
                line
            }
            None => String::new(),
        };
        if reply.pieces_sent == 0 {
            reply.synthesis_done = true;
        }
        let context = reply.context.clone();
        self.send_tts(TtsInput::Text { context, text, last: true }).await;
        if self.tts_input.is_none() {
            if let Some(reply) = self.reply.as_mut() {
                reply.synthesis_done = true;
            }
        }
        self.on_playout(self.playout.progress());
    }

    /// Playback moved: note the reply's first audio sent, and finish the reply once everything was played.
    fn on_playout(&mut self, progress: PlayoutProgress) {
        let Some(reply) = self.reply.as_mut() else { return };
        if reply.latency.first_audio_sent.is_none()
            && reply.audio_start.is_some_and(|start| progress.sent_bytes > start)
        {
            reply.latency.first_audio_sent = Some(Instant::now());
        }
        if reply.llm_done && reply.synthesis_done && self.playout.is_settled(&progress) {
            if let Some(reply) = self.reply.take() {
                let text = reply.text();
                self.rate.observe(&text, reply.audio_bytes);
                self.commit(&reply, &text, false);
                if let Some(control) = &self.deps.call_control {
                    self.due_action = control.take(&self.call.call_sid).or(self.due_action.take());
                }
                if let Some(action) = self.after_reply.take() {
                    self.due_action = Some(action);
                }
                if reply.answers_turn {
                    self.report(reply, TurnEnd::Completed);
                }
            }
            self.turn.set_agent_speaking(false);
        }
    }

    /// The caller interrupted: stop the audio at Twilio at once, then cancel everything behind it.
    async fn barge_in(&mut self, onset: Instant) {
        if self.reply.is_none() {
            return;
        }
        let report = self.playout.clear().await;
        let cleared_at = Instant::now();
        if let Some(reply) = self.reply.as_mut() {
            reply.latency.barge_in_onset = Some(onset);
            reply.latency.clear_sent = Some(cleared_at);
            reply.trace.barge_in(onset, cleared_at);
        }
        let reaction_ms = cleared_at.saturating_duration_since(onset).as_secs_f64() * 1000.0;
        tracing::info!(call_sid = %self.call.call_sid, reaction_ms, "barge-in: cleared the agent's audio");
        self.tap.conversation(ConversationEvent::BargeIn { turn: self.turn_index, reaction_ms });
        self.interrupt_reply(report).await;
    }

    /// Cancels the reply in progress and keeps in the history only what the caller heard of it.
    async fn interrupt_reply(&mut self, report: Option<ClearReport>) {
        let Some(mut reply) = self.reply.take() else { return };
        reply.cancel.cancel();
        if let Some(task) = reply.task.take() {
            task.abort();
        }
        let report = match report {
            Some(report) => Some(report),
            None if reply.audio_start.is_some() => self.playout.clear().await,
            None => None,
        };
        if !reply.synthesis_done {
            let context = reply.context.clone();
            self.send_tts(TtsInput::Cancel { context }).await;
        }
        let heard_bytes = match (report, reply.audio_start) {
            (Some(report), Some(start)) => report.heard_estimate_bytes.saturating_sub(start),
            _ => 0,
        };
        let text = reply.text();
        let heard =
            heard_prefix(&text, heard_bytes, reply.audio_bytes, reply.synthesis_done, self.rate.chars_per_second())
                .to_owned();
        tracing::info!(
            call_sid = %self.call.call_sid,
            heard = %heard,
            unheard_chars = text.chars().count() - heard.chars().count(),
            "reply interrupted"
        );
        self.commit(&reply, &heard, true);
        if let Some(control) = &self.deps.call_control {
            // The caller spoke over the announcement: the model decides again with what they said.
            control.discard(&self.call.call_sid);
        }
        if reply.answers_turn {
            self.report(reply, TurnEnd::Interrupted);
        }
        self.turn.set_agent_speaking(false);
    }

    /// Ends or transfers the call, as the model asked, now that the caller has heard its reply.
    async fn carry_out(&mut self, action: CallAction, inputs: &mut Inputs) {
        match action {
            CallAction::EndCall => {
                tracing::info!(call_sid = %self.call.call_sid, "the agent ends the call");
                self.hang_up.cancel();
            }
            CallAction::Transfer(number) => {
                let Some(control) = self.deps.call_control.clone() else {
                    tracing::warn!(call_sid = %self.call.call_sid, %number, "no call control to transfer with");
                    return;
                };
                tracing::info!(call_sid = %self.call.call_sid, %number, "transferring the call");
                match control.transfer(&self.call.account_sid, &self.call.call_sid, &number).await {
                    Ok(()) => tracing::info!(call_sid = %self.call.call_sid, %number, "call transferred"),
                    Err(err) => {
                        tracing::warn!(call_sid = %self.call.call_sid, %number, %err, "transfer failed");
                        self.provider_error("call_control", "twilio", &err);
                        if self.tts_input.is_none() {
                            inputs.tts = self.open_tts().await;
                        }
                        let line = control.config().transfer_failed_line.clone();
                        self.speak_scripted(&line, false).await;
                    }
                }
            }
        }
    }

    fn provider_error(&self, stage: &str, provider: &str, error: &dyn std::fmt::Display) {
        metrics::global().provider_error(stage, provider);
        self.tap.conversation(ConversationEvent::ProviderError {
            stage: stage.to_owned(),
            provider: provider.to_owned(),
            error: error.to_string(),
        });
    }

    /// A turn is over: its log line, metrics, spans, and the tap's record.
    fn report(&mut self, reply: Reply, end: TurnEnd) {
        let latency = reply.latency;
        let providers = StageProviders { stt: self.deps.stt.name(), tts: self.deps.tts.name() };
        reply.trace.finish(&latency, reply.synthesis_done_at, Instant::now(), end, &providers);
        metrics::global().turn_finished(&latency);
        self.turn_latencies.push(latency.clone());
        latency.log(&self.call.call_sid);
        self.tap.conversation(ConversationEvent::Latency { turn: latency.turn_index, stages: latency.stages_ms() });
        if let Some(reports) = &self.deps.turn_reports {
            let _ = reports.send(latency);
        }
    }

    /// The per-call latency summary: one line per turn with each stage's milliseconds.
    fn log_latency_summary(&self) {
        for latency in &self.turn_latencies {
            let stages: Vec<String> =
                latency.stages_ms().iter().map(|(stage, ms)| format!("{stage}={ms:.1}")).collect();
            tracing::info!(
                call_sid = %self.call.call_sid,
                turn = latency.turn_index,
                stages = %stages.join(" "),
                "call latency summary"
            );
        }
    }

    /// Writes the reply into the history as heard: `heard` is a prefix of the reply's text.
    fn commit(&mut self, reply: &Reply, heard: &str, interrupted: bool) {
        self.tap.conversation(ConversationEvent::AgentSaid {
            turn: self.turn_index,
            text: heard.to_owned(),
            interrupted,
        });
        let mut remaining = heard.len();
        for segment in &reply.segments {
            let take = remaining.min(segment.text.len());
            remaining -= take;
            let spoken = segment.text.get(..take).unwrap_or("").trim();
            append_tool_round(&mut self.history, spoken, &segment.calls, &segment.results);
        }
    }

    /// Adds the caller's words; consecutive caller turns (the agent said nothing in between) are joined.
    fn add_user_text(&mut self, text: &str) {
        append_user_text(&mut self.history, text);
    }

    async fn hang_up(&mut self) {
        if let Some(mut reply) = self.reply.take() {
            reply.cancel.cancel();
            if let Some(task) = reply.task.take() {
                task.abort();
            }
            let providers = StageProviders { stt: self.deps.stt.name(), tts: self.deps.tts.name() };
            let (ended, latency) = (Instant::now(), &reply.latency);
            reply.trace.finish(latency, reply.synthesis_done_at, ended, TurnEnd::SessionClosed, &providers);
        }
        self.log_latency_summary();
        if let Some(speculative) = &self.speculative {
            speculative.discard();
            let counts = speculative.counts();
            if counts.started > 0 {
                tracing::info!(call_sid = %self.call.call_sid, started = counts.started, committed = counts.committed,
                    discarded = counts.discarded, mismatched = counts.mismatched, "speculative replies");
            }
        }
        if let Some(stt) = self.stt_input.take() {
            let _ = stt.try_send(SttInput::Close);
        }
        if let Some(tts) = self.tts_input.take() {
            let _ = tts.try_send(TtsInput::Close);
        }
        tracing::info!(call_sid = %self.call.call_sid, turns = self.turn_index, "conversation ended");
    }
}

#[cfg(test)]
mod tests {
    use super::is_affirmative;

    #[test]
    fn yes_and_no() {
        for yes in ["Yes.", "Yeah, go ahead", "Sure, please do.", "That's correct", "Okay, do it"] {
            assert!(is_affirmative(yes), "{yes}");
        }
        for no in ["No.", "No, don't", "Wait, what?", "I'm not sure", "Let me think"] {
            assert!(!is_affirmative(no), "{no}");
        }
    }
}
