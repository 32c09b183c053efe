//! The cascade agent: caller audio → VAD + streaming STT → turn detection → LLM (with tools) → TTS → playout, with
//! barge-in.
//!
//! One engine per call owns the call's state and only decides: it never awaits the network (it runs in its call's
//! media socket task, polled right after each caller frame is handed to it; see [`crate::call::events`]). Its parts
//! each have one job — [`links`](super::links) keeps the STT and TTS sessions (opened and reopened in tasks),
//! [`in_flight`](super::in_flight) is the reply being spoken, [`conversation`](super::conversation) the history as
//! the caller heard it, [`outcome`](super::outcome) giving up and call control — and the model's reply runs in a task
//! of its own ([`reply`](super::reply)). Everything that takes time reports back as an event, so VAD verdicts,
//! playout progress and barge-in are handled while a provider connects or a transfer is under way.

use std::future::poll_fn;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::call_control::{CallAction, CallControl};
use super::chunker::ChunkerConfig;
use super::config::ConversationConfig;
use super::conversation::{self, append_user_text, Conversation, WrittenSummary};
use super::heard::heard_prefix;
use super::in_flight::{InFlight, Segment};
use super::keypad::Keypad;
use super::latency::TurnLatency;
use super::links::{LinkEvent, SttLink, TtsLink, QUIET_BATCH_FRAMES, SPEECH_BATCH_FRAMES};
use super::outcome::CallOutcome;
use super::replay::ReplayBuffer;
use super::reply::{self, ReplyEvent, ReplyEvents, ReplyJob};
use super::reports::{Report, Reporter};
use super::resume::{PauseVerdict, Paused};
use super::tools::{ToolCallContext, ToolExecutor};
use super::turn::{EndOfTurn, TurnDecision, TurnDetector, TurnStrategy};
use super::vad::{energy_voiced, VadSource, VoiceDetector};
use crate::audio::playout::{ClearReport, PlayoutHandle, PlayoutProgress};
use crate::audio::recent::RecentAudio;
use crate::call::agent::{Agent, AgentContext, AgentFactory, CallEvent};
use crate::call::events::CallEvents;
use crate::call::tap::{CallTap, ConversationEvent};
use crate::call::CallInfo;
use crate::cost::{CallUsage, PriceTable};
use crate::deadline::Deadline;
use crate::llm::context::tokens::TokenCounter;
use crate::llm::context::Fold;
use crate::llm::routing::{ModelRoute, Route};
use crate::llm::speculative::SpeculativeLlm;
use crate::llm::{LanguageModel, LlmRequest, ToolSpec};
use crate::stt::{SpeechToText, SttEvent, TurnEvent};
use crate::telemetry::spans::{StageProviders, TurnEnd, TurnTrace};
use crate::telemetry::{metrics, otel};
use crate::tts::{TextToSpeech, TtsEvent, TtsInput};
use crate::turn_model::{TurnJudgement, TurnModel};
use crate::wake_gate::WakeGate;

/// The caller's audio a turn model reads: its last 8 s (8 kHz μ-law).
const TURN_MODEL_AUDIO_BYTES: usize = 8 * 8_000;

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
    /// What decides whether the caller speaks (webrtc-vad, except in tests of the engine's decisions).
    pub vad: VadSource,
    /// The larger model for hard turns (`[llm.route]`), when configured.
    pub route: Option<Arc<ModelRoute>>,
    /// Counts the tokens of the model's requests for the context budget (made once per server: loading a
    /// tokenizer takes a while).
    pub tokens: TokenCounter,
    /// `[cost]`: what each call's usage is priced at (empty: calls are not priced).
    pub prices: Arc<PriceTable>,
    /// The turn model the `smart` end-of-turn strategy asks at each pause (none: pauses are not judged, and a
    /// `smart` turn ends at its longest silence).
    pub turn_model: Option<Arc<dyn TurnModel>>,
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
        let (mut engine, mut inputs) = Engine::start(self.deps, ctx);
        engine.run(&mut inputs).await;
    }
}

/// The call's VAD, run on each frame as it comes.
enum Vad {
    WebRtc(VoiceDetector),
    Energy,
}

/// Everything the engine loop waits on, kept apart from the state so each can be borrowed on its own.
struct Inputs {
    call: CallEvents,
    rare: RareInputs,
}

/// The inputs that are rare next to the caller's frames, polled only after one of them woke the engine: the loop
/// turns once per caller frame.
struct RareInputs {
    gate: WakeGate,
    stt: Option<mpsc::Receiver<SttEvent>>,
    /// What the engine's tasks report: the links, replies, running summaries, the turn model's answers.
    reports: mpsc::UnboundedReceiver<Report>,
    /// The playout's progress, each time its watch changes: one `changed()` future for the call's life (one built on
    /// every turn of the loop would take the watch's lock twice per caller frame).
    progress: BoxStream<'static, PlayoutProgress>,
    /// The loop's one timer, moved only when something is due earlier than it is set for; the tick checks the time
    /// itself, so an early wake-up decides nothing.
    wake: Deadline,
}

/// One of the engine's rare inputs.
enum Rare {
    Stt(Option<SttEvent>),
    Report(Report),
    Progress(Option<PlayoutProgress>),
    /// The timer fired.
    Tick,
}

impl RareInputs {
    /// The next rare input — the STT's results first, then the tasks' reports, the playout's progress, the timer —;
    /// pending without polling any of them until one has woken the engine.
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Rare> {
        let RareInputs { gate, stt, reports, progress, wake } = self;
        gate.poll(cx, |cx| {
            if let Some(Poll::Ready(event)) = stt.as_mut().map(|stt| stt.poll_recv(cx)) {
                return Poll::Ready(Rare::Stt(event));
            }
            // The engine keeps a sender: the reports never end.
            if let Poll::Ready(Some(report)) = reports.poll_recv(cx) {
                return Poll::Ready(Rare::Report(report));
            }
            if let Poll::Ready(progress) = progress.poll_next_unpin(cx) {
                return Poll::Ready(Rare::Progress(progress));
            }
            wake.poll_fired(cx).map(|()| Rare::Tick)
        })
    }

    /// A new STT session's results: never polled yet, so the gate is opened for them.
    fn set_stt(&mut self, events: mpsc::Receiver<SttEvent>) {
        self.stt = Some(events);
        self.gate.open();
    }
}

fn progress_changes(progress: tokio::sync::watch::Receiver<PlayoutProgress>) -> BoxStream<'static, PlayoutProgress> {
    futures_util::stream::unfold(progress, |mut progress| async move {
        progress.changed().await.ok()?;
        let now = *progress.borrow_and_update();
        Some((now, progress))
    })
    .fuse()
    .boxed()
}

struct Engine {
    deps: CascadeDeps,
    call: CallInfo,
    playout: PlayoutHandle,
    tap: CallTap,
    hang_up: CancellationToken,
    vad: Vad,
    turn: TurnDetector,
    stt: SttLink,
    tts: TtsLink,
    conversation: Conversation,
    reply: Option<InFlight>,
    next_reply_id: u64,
    /// The queue the engine's tasks report on (the other end is `Inputs::reports`).
    reports: mpsc::UnboundedSender<Report>,
    /// What the call has used so far (priced at its end by `[cost]`).
    usage: CallUsage,
    started_at: Instant,
    outcome: CallOutcome,
    /// A call action whose announcing reply has been heard, to carry out now.
    due_action: Option<CallAction>,
    /// After a lost STT session, ask the caller to repeat if the new one cannot be fed what they said.
    recheck_lost_words: bool,
    /// The call's span (parent of every turn span), when tracing is on.
    call_trace: Option<opentelemetry::Context>,
    /// Every reported turn's latency, for the summary logged at the end of the call.
    turn_latencies: Vec<TurnLatency>,
    keypad: Keypad,
    /// The caller's audio since the last turn, fed to a new STT session.
    replay: ReplayBuffer,
    /// This call's model, able to start a reply on the STT's eager end of turn (when enabled).
    speculative: Option<Arc<SpeculativeLlm>>,
    /// Where (stream seconds) the STT last reported speech starting, and how far its final results have answered:
    /// speech that started after the last answer is still pending (its words, or none, are to come).
    stt_speech_started: Option<f64>,
    stt_answered_until: f64,
    /// The caller's last 8 s, for the turn model (only with the `smart` strategy and a model).
    recent_audio: Option<RecentAudio>,
}

impl Engine {
    /// Sets the call up: VAD, provider links (opening in the background), the greeting.
    fn start(deps: CascadeDeps, ctx: AgentContext) -> (Engine, Inputs) {
        let (queue, reports) = mpsc::unbounded_channel();
        let links = Reporter::new(queue.clone(), Report::Link);
        let call_trace = otel::enabled().then(|| {
            // The agent runs inside the call's span (src/edge/session.rs).
            use tracing_opentelemetry::OpenTelemetrySpanExt as _;
            tracing::Span::current().context()
        });
        let vad = match deps.vad {
            VadSource::Energy => Vad::Energy,
            VadSource::WebRtc => Vad::WebRtc(VoiceDetector::new(deps.config.vad_aggressiveness)),
        };
        let replay_frames = (deps.config.stt_replay_ms / 20) as usize;
        let mut stt = SttLink::new(Arc::clone(&deps.stt), links.clone());
        stt.open();
        let tts = TtsLink::spawn(Arc::clone(&deps.tts), links);
        let speculative = deps.config.speculative_replies.then(|| Arc::new(SpeculativeLlm::new(Arc::clone(&deps.llm))));
        let rare = RareInputs {
            gate: WakeGate::new(),
            stt: None,
            reports,
            progress: progress_changes(ctx.playout.watch()),
            wake: Deadline::new(),
        };
        let inputs = Inputs { call: ctx.events, rare };
        let engine = Engine {
            conversation: Conversation::new(&deps.config.system_prompt, deps.config.context.clone(), deps.tokens),
            turn: TurnDetector::new(deps.config.turn.clone()),
            keypad: Keypad::new(Duration::from_millis(deps.config.keypad_commit_ms)),
            replay: ReplayBuffer::new(replay_frames),
            call: ctx.call,
            playout: ctx.playout,
            tap: ctx.tap,
            hang_up: ctx.hang_up,
            vad,
            stt,
            tts,
            reply: None,
            next_reply_id: 1,
            reports: queue,
            usage: CallUsage::default(),
            started_at: Instant::now(),
            outcome: CallOutcome::default(),
            due_action: None,
            recheck_lost_words: false,
            call_trace,
            turn_latencies: Vec::new(),
            speculative,
            stt_speech_started: None,
            stt_answered_until: 0.0,
            recent_audio: (deps.config.turn.strategy == TurnStrategy::Smart && deps.turn_model.is_some())
                .then(|| RecentAudio::new(TURN_MODEL_AUDIO_BYTES)),
            deps,
        };
        (engine, inputs)
    }
}

impl Engine {
    async fn run(&mut self, inputs: &mut Inputs) {
        if !self.deps.config.greeting.is_empty() {
            let greeting = self.deps.config.greeting.clone();
            self.speak_line(&greeting);
        }
        loop {
            for due in [self.turn.next_deadline(), self.stt.retry_at(), self.keypad.deadline(), self.resume_deadline()]
            {
                inputs.rare.wake.want_behind(due, &inputs.rare.gate);
            }
            // Biased, the most frequent first: the caller's frames (fifty a second) are polled first and usually
            // alone; the rare inputs and the timer only once one of them woke the engine, and a transfer's answer
            // last (none starves: a frame takes microseconds).
            tokio::select! {
                biased;
                event = inputs.call.recv() => match event {
                    Some(CallEvent::Audio(frame)) => self.on_caller_audio(frame).await,
                    Some(CallEvent::Dtmf(digit)) => {
                        tracing::info!(call_sid = %self.call.call_sid, digit = ?digit, "caller pressed a key");
                        if let Some(entry) = self.keypad.press(&digit, Instant::now()) {
                            self.keyed_turn(entry).await;
                        }
                    }
                    Some(CallEvent::Hangup) | None => break,
                },
                rare = poll_fn(|cx| inputs.rare.poll(cx)) => match rare {
                    Rare::Stt(event) => self.on_stt(event, inputs).await,
                    Rare::Report(Report::Link(event)) => self.on_link(event, inputs),
                    Rare::Report(Report::Reply(id, event)) => self.on_reply_event(id, event),
                    Rare::Report(Report::Judgement(id, judgement)) => self.on_judgement(id, judgement).await,
                    Rare::Report(Report::Summary(fold, summary)) => self.on_summary(fold, summary),
                    Rare::Progress(Some(now)) => self.on_playout(now),
                    Rare::Progress(None) => break,
                    Rare::Tick => {
                        let now = Instant::now();
                        self.stt.on_tick(now);
                        if let Some(entry) = self.keypad.on_tick(now) {
                            self.keyed_turn(entry).await;
                        }
                        let decisions = self.turn.on_tick(now);
                        self.apply(decisions).await;
                        self.check_paused_reply(now);
                    }
                },
                result = self.outcome.transfer_result() => self.on_transfer_result(result),
            }
            if let Some(action) = self.due_action.take() {
                self.carry_out(action);
            }
        }
        self.finish_call();
    }

    // ----- caller audio and speech-to-text ---------------------------------------------------------------------

    async fn on_caller_audio(&mut self, frame: bytes::Bytes) {
        // The energy gate, measured once: the VAD and the STT's batching both use it.
        let loud = energy_voiced(&frame);
        let voiced = match &mut self.vad {
            Vad::WebRtc(detector) => detector.is_speech(&frame, loud),
            Vad::Energy => loud,
        };
        if let Some(recent) = &mut self.recent_audio {
            recent.push(&frame);
        }
        let between_turns = self.between_turns();
        self.replay.push(frame.clone(), between_turns);
        // The frame goes to the STT before its verdict is acted on: a finalize the verdict leads to follows it.
        let batch = self.stt_batch(loud, between_turns);
        let sent = self.stt.send_audio(frame, batch);
        if sent {
            self.usage.stt_seconds += 0.02;
        }
        if !sent && self.stt.is_open() && self.stt.dropped_frames.is_power_of_two() {
            tracing::warn!(call_sid = %self.call.call_sid, dropped = self.stt.dropped_frames, "speech-to-text is not keeping up");
        }
        self.on_vad(voiced).await;
        if self.awaiting_words() {
            // The verdict paused a reply (or the agent began to speak, and words decide a barge-in): the speech held
            // so far is where those words are.
            self.stt.flush_held();
        }
    }

    /// How many frames may gather before caller audio goes to the STT (1: at once). Speech waits while no words are
    /// waited for mid-speech (a turn's end is heard in the quiet after it, which goes at once); quiet waits between
    /// turns; the quiet inside a turn, which tells the recogniser the speech has ended, goes at once.
    fn stt_batch(&self, loud: bool, between_turns: bool) -> usize {
        match (loud, between_turns) {
            (true, _) if !self.awaiting_words() => SPEECH_BATCH_FRAMES,
            (false, true) => QUIET_BATCH_FRAMES,
            _ => 1,
        }
    }

    /// Whether the engine waits for the caller's words mid-speech: a reply paused by a barge-in goes on unless they
    /// come, and with `barge_in_min_words` words are what interrupt the agent.
    fn awaiting_words(&self) -> bool {
        self.reply_paused() || self.turn.barge_in_waits_for_words()
    }

    /// A barge-in paused the reply: the caller's words end it, silence resumes it.
    fn reply_paused(&self) -> bool {
        self.reply.as_ref().is_some_and(InFlight::is_paused)
    }

    /// Whether no result is waited for — no speech since the last turn ended, no finalize asked, nothing the STT heard
    /// unanswered, no paused reply waiting for words: quiet caller audio may then wait a little before going to the
    /// STT, and the replay buffer keeps only the second before the next turn.
    fn between_turns(&self) -> bool {
        !self.turn.caller_speaking()
            && !self.turn.turn_in_progress()
            && !self.turn.awaiting_finalize()
            && !self.stt_pending()
            && !self.reply_paused()
    }

    /// One VAD verdict on the caller's audio.
    async fn on_vad(&mut self, voiced: bool) {
        let now = Instant::now();
        if voiced {
            if let Some(paused) = self.reply.as_mut().and_then(|r| r.paused.as_mut()) {
                paused.last_voiced = now;
            }
        }
        let decisions = self.turn.on_vad(voiced, now);
        self.apply(decisions).await;
    }

    async fn on_stt(&mut self, event: Option<SttEvent>, inputs: &mut Inputs) {
        let now = Instant::now();
        match event {
            Some(SttEvent::Transcript(transcript)) => {
                if transcript.is_final {
                    self.stt_answered(transcript.start + transcript.duration);
                }
                if self.reply_paused() && !self.turn.is_backchannel(&transcript.text) {
                    tracing::info!(call_sid = %self.call.call_sid, text = %transcript.text, "words after the barge-in: the interruption was real");
                    self.interrupt_reply(None).await;
                }
                let decisions = self.turn.on_transcript(&transcript, now);
                self.apply(decisions).await;
            }
            Some(SttEvent::UtteranceEnd { last_word_end }) => {
                self.stt_answered(last_word_end);
                let decisions = self.turn.on_utterance_end(now);
                self.apply(decisions).await;
            }
            Some(SttEvent::SpeechStarted { timestamp }) => self.stt_speech_started = Some(timestamp),
            Some(SttEvent::TurnInfo { event, transcript }) => self.on_turn_info(event, &transcript),
            Some(SttEvent::Error(err)) => {
                tracing::error!(call_sid = %self.call.call_sid, provider = self.stt.provider(), %err, "speech-to-text failed; reconnecting");
                self.provider_error("stt", self.stt.provider(), &err);
                self.stt_lost(inputs);
            }
            Some(SttEvent::Closed) | None => {
                tracing::warn!(call_sid = %self.call.call_sid, provider = self.stt.provider(), "speech-to-text session closed; reconnecting");
                self.stt_lost(inputs);
            }
        }
    }

    /// Model-based turn detection: on an eager end of turn, start the reply's model request early (held, not
    /// spoken); when the caller resumes, drop it. The end of turn itself arrives as a final transcript.
    fn on_turn_info(&mut self, event: TurnEvent, transcript: &str) {
        let Some(speculative) = &self.speculative else { return };
        match event {
            TurnEvent::EagerEndOfTurn if self.reply.is_none() && !transcript.trim().is_empty() => {
                let mut messages = self.conversation.request_messages();
                append_user_text(&mut messages, transcript.trim());
                let tools = self.offered_tools();
                tracing::debug!(call_sid = %self.call.call_sid, "eager end of turn: starting the reply speculatively");
                speculative.prefetch(LlmRequest { messages, tools });
            }
            TurnEvent::TurnResumed => speculative.discard(),
            _ => {}
        }
    }

    /// The STT session is gone: a new one opens in the background and is fed the caller's audio since the last
    /// turn, so no word is lost; only when that audio is no longer all there, and the caller was mid-sentence, does
    /// the agent ask them to repeat (once the new session is up).
    fn stt_lost(&mut self, inputs: &mut Inputs) {
        inputs.rare.stt = None;
        // A new session counts its stream from zero.
        self.stt_speech_started = None;
        self.stt_answered_until = 0.0;
        let lost_words = self.turn.discard_pending();
        self.recheck_lost_words = self.turn.caller_speaking() || lost_words;
        self.stt.lost();
    }

    /// The turn model answered about a pause (`None`: it failed, and the pause goes unjudged).
    async fn on_judgement(&mut self, id: u64, judgement: Option<TurnJudgement>) {
        let decisions = match judgement {
            Some(judgement) => {
                tracing::debug!(call_sid = %self.call.call_sid, probability = judgement.complete_probability,
                    inference_ms = judgement.inference.as_secs_f64() * 1000.0, "turn model judged a pause");
                self.turn.on_judgement(id, judgement.complete, Instant::now())
            }
            None => Vec::new(),
        };
        self.apply(decisions).await;
    }

    /// A running summary is written: its tokens count, and the conversation takes it.
    fn on_summary(&mut self, fold: u64, summary: WrittenSummary) {
        if let Some(usage) = &summary.usage {
            self.usage.add_tokens(self.deps.llm.name(), self.deps.llm.model(), usage);
        }
        self.conversation.summary_ready(fold, summary.text);
    }

    fn on_link(&mut self, event: LinkEvent, inputs: &mut Inputs) {
        match event {
            LinkEvent::SttOpened { generation, result } => {
                let replay = self.replay.replayable();
                let replayed = replay.is_some();
                let frames = self.replay.len();
                match self.stt.opened(generation, result, replay.into_iter().flatten()) {
                    Ok(Some(events)) => {
                        inputs.rare.set_stt(events);
                        tracing::info!(call_sid = %self.call.call_sid, frames, replayed, "speech-to-text session open; fed the caller's audio since the last turn");
                        let ask_to_repeat = std::mem::take(&mut self.recheck_lost_words) && !replayed;
                        if ask_to_repeat && self.reply.is_none() {
                            let line = self.deps.config.fallback_line.clone();
                            self.speak_line(&line);
                        }
                    }
                    Ok(None) => {}
                    Err(err) => {
                        tracing::error!(call_sid = %self.call.call_sid, provider = self.stt.provider(), %err, "speech-to-text unavailable; retrying");
                        self.provider_error("stt", self.stt.provider(), &err);
                    }
                }
            }
            LinkEvent::Tts(event) => self.on_tts(event),
            LinkEvent::TtsUnavailable { error } => {
                tracing::error!(call_sid = %self.call.call_sid, provider = self.tts.provider(), %error, "text-to-speech unavailable");
                self.provider_error("tts", self.tts.provider(), &error);
            }
        }
    }

    // ----- text-to-speech ----------------------------------------------------------------------------------------

    fn on_tts(&mut self, event: TtsEvent) {
        match event {
            TtsEvent::Audio { context, mulaw } => self.on_tts_audio(&context, mulaw),
            TtsEvent::Done { context } => {
                if let Some(reply) = self.reply.as_mut().filter(|r| r.context == context) {
                    reply.synthesis_done = true;
                    reply.synthesis_done_at.get_or_insert_with(Instant::now);
                    self.on_playout(self.playout.progress());
                }
            }
            TtsEvent::Error { context: Some(context), error } => {
                tracing::error!(call_sid = %self.call.call_sid, provider = self.tts.provider(), %error, %context, "text-to-speech failed for a reply");
                self.provider_error("tts", self.tts.provider(), &error);
                if let Some(reply) = self.reply.as_mut().filter(|r| r.context == context) {
                    reply.synthesis_done = true;
                    self.on_playout(self.playout.progress());
                }
            }
            TtsEvent::Error { context: None, error } => {
                tracing::error!(call_sid = %self.call.call_sid, provider = self.tts.provider(), %error, "text-to-speech session failed");
                self.provider_error("tts", self.tts.provider(), &error);
                self.tts_lost();
            }
            TtsEvent::Closed => self.tts_lost(),
        }
    }

    /// The TTS session is gone; the reply in progress cannot be heard any further. The link opens a new session
    /// for the next reply.
    fn tts_lost(&mut self) {
        if let Some(reply) = self.reply.as_mut() {
            reply.synthesis_done = true;
        }
        self.tts.prepare();
        self.on_playout(self.playout.progress());
    }

    fn on_tts_audio(&mut self, context: &str, mulaw: bytes::Bytes) {
        let Some(reply) = self.reply.as_mut().filter(|r| r.context == context) else {
            // Audio of a cancelled reply: the caller must not hear it.
            return;
        };
        if reply.audio_start.is_none() {
            reply.latency.first_tts_audio = Some(Instant::now());
            let start = self.playout.progress().enqueued_bytes;
            reply.audio_start = Some(start);
            // The engine hears when the first of it leaves (the first-audio time), not of every frame after.
            self.playout.watch_sent_past(start);
        }
        reply.audio_bytes += mulaw.len() as u64;
        if self.deps.config.turn.resume.enabled {
            reply.audio.push(mulaw.clone());
        }
        if reply.is_paused() {
            // Held until the caller is known to have meant the interruption or not.
            return;
        }
        self.playout.play(mulaw);
        reply.marks += 1;
        self.playout.mark(format!("{}-{}", reply.context, reply.marks));
    }

    /// Hands text to TTS for the reply in flight.
    fn speak(&mut self, text: String, last: bool) {
        let Some(reply) = self.reply.as_mut() else { return };
        if !text.is_empty() {
            reply.pieces_sent += 1;
            self.usage.tts_characters += text.chars().count() as u64;
        }
        self.tts.send(TtsInput::Text { context: reply.context.clone(), text, last });
    }

    // ----- turns and replies -----------------------------------------------------------------------------------

    async fn apply(&mut self, decisions: Vec<TurnDecision>) {
        for decision in decisions {
            match decision {
                TurnDecision::SpeechStarted { .. } => {}
                TurnDecision::RequestFinalize => self.stt.finalize(),
                TurnDecision::JudgeTurn { id } => self.judge_turn(id),
                TurnDecision::BargeIn { onset } => self.barge_in(onset).await,
                TurnDecision::EndOfTurn(end) if self.is_noise_over_the_agent() => {
                    tracing::info!(call_sid = %self.call.call_sid, text = ?end.text, "words over the agent's audio too short to interrupt it; not a turn");
                }
                TurnDecision::EndOfTurn(end) if self.reply_paused() && self.turn.is_backchannel(&end.text) => {
                    tracing::info!(call_sid = %self.call.call_sid, text = ?end.text, "only a backchannel after the barge-in; not a turn");
                }
                TurnDecision::EndOfTurn(end) => self.on_end_of_turn(end).await,
            }
        }
    }

    /// Asks the turn model about the caller's pause, in a task: the answer comes back as an event. Without a model
    /// the pause goes unjudged and the turn ends at its longest silence.
    fn judge_turn(&self, id: u64) {
        let (Some(model), Some(recent)) = (&self.deps.turn_model, &self.recent_audio) else { return };
        let answer = model.judge(recent.to_vec());
        let reports = self.reports.clone();
        let call_sid = self.call.call_sid.clone();
        tokio::spawn(async move {
            let judgement = match answer.await {
                Ok(judgement) => Some(judgement),
                Err(error) => {
                    tracing::warn!(%call_sid, %error, "the turn model failed; the turn ends at its longest silence");
                    None
                }
            };
            let _ = reports.send(Report::Judgement(id, judgement));
        });
    }

    /// Whether words the STT heard now can only be noise: the agent's audio is playing and the VAD never saw speech
    /// long enough to interrupt it (real speech over the agent barges in first, which ends the reply). A cough the
    /// recogniser turned into a word must not cut the agent off. A reply that resumed after a barge-in is the
    /// exception: its words came late (a slow recogniser), and they are what the caller said when they cut in.
    fn is_noise_over_the_agent(&self) -> bool {
        self.reply.as_ref().is_some_and(|r| r.has_audio() && !r.is_paused() && !r.resumed)
    }

    /// Keys the caller pressed become a caller turn, as if said.
    async fn keyed_turn(&mut self, entry: String) {
        let end = EndOfTurn { text: entry, speech_ended_at: None, final_at: Instant::now() };
        self.on_end_of_turn(end).await;
    }

    async fn on_end_of_turn(&mut self, end: EndOfTurn) {
        let decided_at = Instant::now();
        if self.reply.is_some() {
            // The caller went on talking before the reply was heard: it answers a question they had not finished.
            self.interrupt_reply(None).await;
        }
        self.replay.turn_ended();
        let confirmed = self.conversation.caller_turn(&end.text);
        let turn_index = self.conversation.turn_index;
        if let Some(fold) = self.conversation.fit(&self.offered_tools()) {
            self.write_summary(fold);
        }
        let route = match &self.deps.route {
            Some(routed) => routed.rules.for_caller_turn(&end.text),
            None => Route::Fast,
        };
        tracing::info!(call_sid = %self.call.call_sid, turn = turn_index, text = ?end.text, "caller turn");
        self.tap.conversation(ConversationEvent::CallerTurn { turn: turn_index, text: end.text.clone() });
        self.tts.prepare();
        let reply_id = self.next_reply_id;
        self.next_reply_id += 1;
        let cancel = CancellationToken::new();
        let llm = match &self.speculative {
            Some(speculative) => Arc::clone(speculative) as Arc<dyn LanguageModel>,
            None => Arc::clone(&self.deps.llm),
        };
        if route == Route::Large {
            tracing::info!(call_sid = %self.call.call_sid, turn = turn_index, "a long caller turn: the reply goes to the larger model");
            if let Some(speculative) = &self.speculative {
                speculative.discard();
            }
        }
        let trace = match &self.call_trace {
            Some(call) => {
                TurnTrace::start(call, &self.call.call_sid, turn_index, end.speech_ended_at.or(Some(decided_at)))
            }
            None => TurnTrace::default(),
        };
        let config = &self.deps.config;
        let job = ReplyJob {
            llm,
            route: self.deps.route.clone(),
            first_route: route,
            tools: Arc::clone(&self.deps.tools),
            history: self.conversation.request_messages(),
            context: ToolCallContext {
                call_sid: self.call.call_sid.clone(),
                caller_number: if self.deps.redact_numbers { None } else { self.call.from.clone() },
                turn_index: turn_index - 1,
                traceparent: None,
            },
            max_tool_rounds: config.max_tool_rounds,
            chunker: ChunkerConfig {
                ambiguity_wait: Duration::from_millis(config.text_hold_max_ms),
                ..ChunkerConfig::default()
            },
            cancel: cancel.clone(),
            filler_line: config.filler_line.clone(),
            filler_after: Duration::from_millis(config.filler_after_ms),
            confirmed,
            trace: trace.reply_trace(),
        };
        let sender = Reporter::new(self.reports.clone(), |(id, event)| Report::Reply(id, event));
        let events = ReplyEvents { reply_id, sender };
        let task = tokio::spawn(reply::run(job, events));
        let mut reply = InFlight::model(reply_id, turn_index, task, cancel);
        reply.latency = TurnLatency {
            turn_index,
            speech_ended: end.speech_ended_at,
            stt_final: Some(end.final_at),
            end_of_turn: Some(decided_at),
            ..TurnLatency::default()
        };
        reply.answers_turn = true;
        reply.trace = trace;
        self.reply = Some(reply);
        self.turn.set_agent_speaking(true);
    }

    /// Says a fixed line (greeting, fallback, apology) as a reply of its own, interruptible like any other.
    fn speak_line(&mut self, line: &str) {
        let reply_id = self.next_reply_id;
        self.next_reply_id += 1;
        let reply = InFlight::line(reply_id, line);
        self.usage.tts_characters += line.chars().count() as u64;
        self.tts.send(TtsInput::Text { context: reply.context.clone(), text: line.to_owned(), last: true });
        self.reply = Some(reply);
        self.turn.set_agent_speaking(true);
    }

    fn on_reply_event(&mut self, id: u64, event: ReplyEvent) {
        let Some(reply) = self.reply.as_mut().filter(|r| r.id == id) else { return };
        match event {
            ReplyEvent::LlmRequestSent { at } => {
                reply.latency.llm_request_sent.get_or_insert(at);
            }
            ReplyEvent::FirstToken { at } => {
                reply.latency.llm_first_token.get_or_insert(at);
            }
            ReplyEvent::RoundFinished { usage, route, provider, model } => {
                if let Some(usage) = &usage {
                    self.usage.add_tokens(provider, &model, usage);
                }
                if let Some(usage) = usage.filter(|_| reply.latency.prompt_tokens.is_none()) {
                    reply.latency.prompt_tokens = Some(usage.input_tokens);
                    reply.latency.cached_prompt_tokens = Some(usage.cached_input_tokens);
                }
                tracing::debug!(call_sid = %self.call.call_sid, route = route.name(), ?usage, "model request finished");
            }
            ReplyEvent::Piece { text, ready_at, at } => {
                reply.latency.first_piece_ready.get_or_insert(ready_at);
                reply.latency.first_piece.get_or_insert(at);
                reply.current_segment().text.push_str(&text);
                self.speak(text, false);
                if let Some(reply) = self.reply.as_mut() {
                    reply.latency.first_tts_request.get_or_insert_with(Instant::now);
                }
            }
            ReplyEvent::ConfirmationRequested { call } => {
                tracing::info!(call_sid = %self.call.call_sid, tool = %call.name, "asking the caller to confirm");
                let arguments = serde_json::from_str(&call.arguments).unwrap_or(serde_json::Value::Null);
                self.conversation.pending_confirmations.push((call.name, arguments));
            }
            ReplyEvent::ToolsStarted { calls } => {
                let names: Vec<&str> = calls.iter().map(|c| c.name.as_str()).collect();
                tracing::info!(call_sid = %self.call.call_sid, tools = ?names, "calling tools");
                for call in &calls {
                    self.tap.conversation(ConversationEvent::ToolCall {
                        turn: self.conversation.turn_index,
                        id: call.id.clone(),
                        name: call.name.clone(),
                        arguments: call.arguments.clone(),
                    });
                }
                reply.current_segment().calls = calls;
            }
            ReplyEvent::ToolRound { calls, results } => {
                for result in &results {
                    self.tap.conversation(ConversationEvent::ToolResult {
                        turn: self.conversation.turn_index,
                        id: result.call_id.clone(),
                        content: result.outcome.content.clone(),
                        is_error: result.outcome.is_error,
                    });
                }
                // A call action asked for in this round travels back with its result and waits for the reply.
                if let Some(control) = &self.deps.call_control {
                    for call in &calls {
                        let outcome = results.iter().find(|r| r.call_id == call.id).map(|r| &r.outcome);
                        if let Some(action) = outcome.and_then(|outcome| control.action_for(call, outcome)) {
                            reply.action = Some(action);
                        }
                    }
                }
                let segment = reply.current_segment();
                segment.calls = calls;
                segment.results = results;
                reply.segments.push(Segment::default());
            }
            ReplyEvent::Done { .. } => {
                self.outcome.reply_given();
                self.finish_text(None);
            }
            ReplyEvent::Failed { error } => {
                let provider = self.deps.llm.name();
                tracing::error!(call_sid = %self.call.call_sid, provider, %error, "LLM failed; speaking the fallback line");
                self.provider_error("llm", provider, &error);
                let failure =
                    self.outcome.reply_failed(&self.deps.config.call_control, &self.deps.config.fallback_line);
                if let Some(action) = &failure.action {
                    tracing::warn!(call_sid = %self.call.call_sid, failures = self.outcome.failed_replies(), ?action, "every provider keeps failing; giving up on the call");
                }
                if let Some(reply) = self.reply.as_mut() {
                    reply.action = failure.action.or(reply.action.take());
                }
                self.finish_text(Some(failure.line));
            }
        }
    }

    /// The model is done (or failed): close the TTS context, with a last line if given.
    fn finish_text(&mut self, last_line: Option<String>) {
        let Some(reply) = self.reply.as_mut() else { return };
        reply.llm_done = true;
        let text = match last_line {
            Some(line) => {
                reply.current_segment().text.push_str(&line);
                line
            }
            None => String::new(),
        };
        if reply.pieces_sent == 0 && text.is_empty() {
            // Nothing to say: the reply is over once the model is.
            reply.synthesis_done = true;
        } else {
            self.speak(text, true);
        }
        self.on_playout(self.playout.progress());
    }

    /// Playback moved: note the reply's first audio sent, and finish the reply once everything was played.
    fn on_playout(&mut self, progress: PlayoutProgress) {
        let Some(reply) = self.reply.as_mut().filter(|r| !r.is_paused()) else { return };
        if reply.latency.first_audio_sent.is_none()
            && reply.audio_start.is_some_and(|start| progress.sent_bytes > start)
        {
            reply.latency.first_audio_sent = Some(Instant::now());
        }
        if !(reply.llm_done && reply.synthesis_done && self.playout.is_settled(&progress)) {
            return;
        }
        if let Some(mut reply) = self.reply.take() {
            let text = reply.text();
            self.conversation.rate.observe(&text, reply.audio_bytes);
            self.commit(&reply, &text, false);
            if let Some(action) = reply.action.take() {
                self.due_action = Some(action);
            }
            if reply.answers_turn {
                self.report(reply, TurnEnd::Completed);
            }
        }
        self.turn.set_agent_speaking(false);
    }

    /// The caller spoke over the agent. If any of the reply's audio reached the caller, stop it at Twilio at once
    /// (a barge-in); if none did, the caller simply went on with their turn, and the reply is dropped quietly.
    async fn barge_in(&mut self, onset: Instant) {
        let Some(reply) = self.reply.as_mut() else { return };
        if !reply.has_audio() {
            tracing::debug!(call_sid = %self.call.call_sid, "the caller went on before the reply had audio; dropping it");
            self.interrupt_reply(None).await;
            return;
        }
        let report = self.playout.clear().await;
        let cleared_at = Instant::now();
        let resume = self.deps.config.turn.resume.enabled;
        if let Some(reply) = self.reply.as_mut() {
            reply.latency.barge_in_onset = Some(onset);
            reply.latency.clear_sent = Some(cleared_at);
            reply.trace.barge_in(onset, cleared_at);
        }
        let reaction_ms = cleared_at.saturating_duration_since(onset).as_secs_f64() * 1000.0;
        tracing::info!(call_sid = %self.call.call_sid, reaction_ms, "barge-in: cleared the agent's audio");
        self.tap.conversation(ConversationEvent::BargeIn { turn: self.conversation.turn_index, reaction_ms });
        match (resume, report, self.reply.as_mut()) {
            (true, Some(report), Some(reply)) => {
                // Paused, not ended: words from the caller end it, silence resumes it (see `resume`).
                reply.paused = Some(Paused::new(cleared_at, report));
                self.turn.set_agent_speaking(false);
            }
            _ => self.interrupt_reply(report).await,
        }
    }

    fn stt_answered(&mut self, until: f64) {
        self.stt_answered_until = self.stt_answered_until.max(until);
    }

    /// The STT reported speech starting after its last final result: it has words (or none) to come. An answer to
    /// earlier speech, arriving late, does not settle later speech.
    fn stt_pending(&self) -> bool {
        self.stt_speech_started.is_some_and(|started| started > self.stt_answered_until)
    }

    /// What to do with the paused reply now; `None` when no reply is paused, or while the STT was asked for the
    /// caller's words (it will answer, or the finalize times out).
    fn paused_verdict(&self, now: Instant) -> Option<PauseVerdict> {
        let paused = self.reply.as_ref()?.paused.as_ref()?;
        if self.turn.awaiting_finalize() {
            return None;
        }
        Some(paused.verdict(now, self.stt_pending(), &self.deps.config.turn.resume))
    }

    /// When a paused reply must be looked at again.
    fn resume_deadline(&self) -> Option<Instant> {
        let now = Instant::now();
        match self.paused_verdict(now)? {
            PauseVerdict::Wait(until) => Some(until),
            PauseVerdict::Resume => Some(now),
        }
    }

    /// Resumes a paused reply once the caller has been quiet long enough with no words.
    fn check_paused_reply(&mut self, now: Instant) {
        if self.paused_verdict(now) == Some(PauseVerdict::Resume) {
            self.resume_reply(now);
        }
    }

    /// Plays the rest of a paused reply, from the pause in its speech before the point the caller last heard.
    fn resume_reply(&mut self, now: Instant) {
        let Some(reply) = self.reply.as_mut() else { return };
        let (Some(paused), Some(audio_start)) = (reply.paused.take(), reply.audio_start) else { return };
        reply.resumed = true;
        let heard = paused.report.heard_estimate_bytes.saturating_sub(audio_start);
        let point = reply.audio.resume_point(heard, self.deps.config.turn.resume.max_backup_ms);
        // The clear left the playout with nothing queued (and nothing was queued since): the rest goes on from the
        // audio sent so far, so the reply's offsets keep mapping onto the playout's.
        reply.audio_start = Some(paused.report.sent_bytes.saturating_sub(point));
        for chunk in reply.audio.from_offset(point) {
            self.playout.play(chunk);
            reply.marks += 1;
            self.playout.mark(format!("{}-{}", reply.context, reply.marks));
        }
        let paused_ms = now.saturating_duration_since(paused.at).as_secs_f64() * 1000.0;
        let backed_up_ms = heard.saturating_sub(point) as f64 / 8.0;
        tracing::info!(call_sid = %self.call.call_sid, paused_ms, backed_up_ms, "no words after the barge-in: resuming the reply");
        self.tap.conversation(ConversationEvent::ReplyResumed {
            turn: self.conversation.turn_index,
            paused_ms,
            backed_up_ms,
        });
        metrics::global().reply_resumed();
        // Backchannels heard during the pause are not the caller's next turn.
        self.turn.discard_pending();
        self.turn.set_agent_speaking(true);
        self.on_playout(self.playout.progress());
    }

    /// Cancels the reply in progress and keeps in the history only what the caller heard of it.
    async fn interrupt_reply(&mut self, report: Option<ClearReport>) {
        let Some(mut reply) = self.reply.take() else { return };
        reply.stop();
        let report = match (report, reply.paused.take()) {
            (Some(report), _) => Some(report),
            // Paused by a barge-in: nothing has played since its clear.
            (None, Some(paused)) => Some(paused.report),
            (None, None) if reply.has_audio() => self.playout.clear().await,
            (None, None) => None,
        };
        if reply.is_synthesizing() {
            self.tts.send(TtsInput::Cancel { context: reply.context.clone() });
        }
        let heard_bytes = match (report, reply.audio_start) {
            (Some(report), Some(start)) => report.heard_estimate_bytes.saturating_sub(start),
            _ => 0,
        };
        let text = reply.text();
        let rate = self.conversation.rate.chars_per_second();
        let heard = heard_prefix(&text, heard_bytes, reply.audio_bytes, reply.synthesis_done, rate).to_owned();
        tracing::info!(
            call_sid = %self.call.call_sid,
            heard = %heard,
            unheard_chars = text.chars().count() - heard.chars().count(),
            "reply interrupted"
        );
        // A call action the reply announced is dropped: the model decides again with what the caller said.
        self.commit(&reply, &heard, true);
        if reply.answers_turn {
            self.report(reply, TurnEnd::Interrupted);
        }
        self.turn.set_agent_speaking(false);
    }

    /// Ends or transfers the call, as the model asked, now that the caller has heard its reply.
    fn carry_out(&mut self, action: CallAction) {
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
                self.outcome.start_transfer(control, self.call.account_sid.clone(), self.call.call_sid.clone(), number);
            }
        }
    }

    fn on_transfer_result(&mut self, result: Result<(), super::call_control::CallControlError>) {
        match result {
            Ok(()) => tracing::info!(call_sid = %self.call.call_sid, "call transferred"),
            Err(err) => {
                tracing::warn!(call_sid = %self.call.call_sid, %err, "transfer failed");
                self.provider_error("call_control", "twilio", &err);
                if let Some(control) = &self.deps.call_control {
                    let line = control.config().transfer_failed_line.clone();
                    self.speak_line(&line);
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
    fn report(&mut self, reply: InFlight, end: TurnEnd) {
        let latency = reply.latency;
        let providers = StageProviders { stt: self.stt.provider(), tts: self.tts.provider() };
        reply.trace.finish(&latency, reply.synthesis_done_at, Instant::now(), end, &providers);
        metrics::global().turn_finished(&latency);
        latency.log(&self.call.call_sid);
        self.tap.conversation(ConversationEvent::Latency { turn: latency.turn_index, stages: latency.stages_ms() });
        if let Some(reports) = &self.deps.turn_reports {
            let _ = reports.send(latency.clone());
        }
        self.turn_latencies.push(latency);
    }

    /// Writes the reply into the history as heard, and tells the tap what the caller heard.
    fn commit(&mut self, reply: &InFlight, heard: &str, interrupted: bool) {
        self.tap.conversation(ConversationEvent::AgentSaid {
            turn: self.conversation.turn_index,
            text: heard.to_owned(),
            interrupted,
        });
        self.conversation.commit(reply, heard);
        if let Some(fold) = self.conversation.between_turns(&self.offered_tools()) {
            self.write_summary(fold);
        }
    }

    /// The tools a reply's first request offers (what the context budget counts).
    fn offered_tools(&self) -> Vec<ToolSpec> {
        if self.deps.config.max_tool_rounds == 0 {
            return Vec::new();
        }
        let mut tools = self.deps.tools.specs();
        tools.extend(self.deps.route.as_ref().and_then(|routed| routed.rules.escalation_spec()));
        tools
    }

    /// Has the fast model write the running summary of turns leaving the context window, in a task of its own; the
    /// text comes back to the loop as an event.
    fn write_summary(&self, fold: Fold) {
        let llm = Arc::clone(&self.deps.llm);
        let reports = self.reports.clone();
        let call_sid = self.call.call_sid.clone();
        tokio::spawn(async move {
            let summary = conversation::write_summary(llm, fold.request.request).await;
            if summary.text.is_none() {
                tracing::warn!(%call_sid, "the running summary could not be written; older turns leave without it");
            }
            let _ = reports.send(Report::Summary(fold.id, summary));
        });
    }

    /// The call is over: close the reply's span, log the summary, close the sessions.
    fn finish_call(&mut self) {
        if let Some(mut reply) = self.reply.take() {
            reply.stop();
            let providers = StageProviders { stt: self.stt.provider(), tts: self.tts.provider() };
            let (ended, latency) = (Instant::now(), &reply.latency);
            reply.trace.finish(latency, reply.synthesis_done_at, ended, TurnEnd::SessionClosed, &providers);
        }
        for latency in &self.turn_latencies {
            let stages: Vec<String> =
                latency.stages_ms().iter().map(|(stage, ms)| format!("{stage}={ms:.1}")).collect();
            tracing::info!(call_sid = %self.call.call_sid, turn = latency.turn_index, stages = %stages.join(" "), "call latency summary");
        }
        if let Some(speculative) = &self.speculative {
            speculative.discard();
            let counts = speculative.counts();
            if counts.started > 0 {
                tracing::info!(call_sid = %self.call.call_sid, started = counts.started, committed = counts.committed,
                    discarded = counts.discarded, mismatched = counts.mismatched, "speculative replies");
            }
        }
        self.price_the_call();
        self.stt.close();
        self.tts.send(TtsInput::Close);
        tracing::info!(call_sid = %self.call.call_sid, turns = self.conversation.turn_index, "conversation ended");
    }

    /// Prices what the call used (when `[cost]` has prices): into the archive, onto the call's span, into metrics.
    fn price_the_call(&mut self) {
        if !self.deps.prices.is_set() {
            return;
        }
        self.usage.call_seconds = self.started_at.elapsed().as_secs_f64();
        self.usage.stt_provider = self.stt.provider().to_owned();
        self.usage.tts_provider = self.tts.provider().to_owned();
        let cost = self.deps.prices.cost(&self.usage);
        tracing::info!(call_sid = %self.call.call_sid, total = cost.total, currency = %cost.currency,
            stt = cost.stt, llm = cost.llm, tts = cost.tts, twilio = cost.twilio, "call cost");
        if self.call_trace.is_some() {
            use tracing_opentelemetry::OpenTelemetrySpanExt as _;
            let span = tracing::Span::current();
            for (stage, amount) in [("stt", cost.stt), ("llm", cost.llm), ("tts", cost.tts), ("twilio", cost.twilio)] {
                span.set_attribute(format!("parley.call.cost.{stage}"), amount);
            }
            span.set_attribute("parley.call.cost", cost.total);
            span.set_attribute("parley.call.cost.currency", cost.currency.clone());
        }
        metrics::global().call_cost(&cost);
        self.tap.conversation(ConversationEvent::CallCost { cost });
    }
}
