//! The call's provider sessions: opened, fed and reopened in tasks, so the engine loop never waits on the network.
//!
//! - [`SttLink`] opens a recognition session in a task that reports back as a [`LinkEvent`]. Caller audio goes
//!   straight into the session's bounded input ([`crate::stt::INPUT_CAPACITY`]) without waiting: a provider that
//!   does not keep up loses frames (counted), never stalls the loop; a new session is
//!   first fed the caller's audio since the last turn (the engine's replay buffer), so no word is lost while it
//!   connects. A failed open is retried after [`STT_RETRY`]. Audio no result waits for goes in batches: quiet audio
//!   between turns in [`QUIET_BATCH_FRAMES`] frames, the caller's speech in [`SPEECH_BATCH_FRAMES`]; anything else
//!   (the quiet after speech, whose frames decide when the turn ends) goes at once, with whatever was held before it.
//! - [`TtsLink`] is a task that owns the synthesis session: it opens one at the start of the call, takes the
//!   engine's text and cancels without ever making the engine wait, reopens after a loss when more text comes, and
//!   reports the session's events back as [`LinkEvent::Tts`].

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::reports::Reporter;

use crate::stt::{SpeechToText, SttError, SttEvent, SttInput, SttSession};
use crate::tts::{ContextId, TextToSpeech, TtsError, TtsEvent, TtsInput, TtsSession};

/// How long to wait before reconnecting after a failed STT open.
pub const STT_RETRY: Duration = Duration::from_secs(2);
/// Quiet frames sent to the provider as one message: 200 ms, a tenth of the messages (and of the provider task's
/// wake-ups and socket writes) while nobody speaks, and within the 20–250 ms a message Deepgram recommends. Only
/// frames below the energy gate wait, and only while no result is awaited; the first louder frame takes them along.
pub const QUIET_BATCH_FRAMES: usize = 10;
/// Loud frames of the caller's speech sent to the provider as one message: 100 ms, a fifth of the messages while the
/// caller speaks. No result waits for them: the recogniser ends a turn on the quiet after the speech, which goes at
/// once and takes the held speech along, so the end of the turn is heard when it would have been; a finalize takes
/// them too. Only words the engine waits for mid-speech — whether a caller who talked over a reply said anything, or
/// enough to interrupt it (`barge_in_min_words`) — would come later, and then the frames go at once.
pub const SPEECH_BATCH_FRAMES: usize = 5;

/// What the link tasks report to the engine.
pub enum LinkEvent {
    /// An STT open finished (`generation` tells a stale open from the current one).
    SttOpened { generation: u64, result: Result<SttSession, SttError> },
    /// The TTS session reported something (or was lost, as [`TtsEvent::Closed`]).
    Tts(TtsEvent),
    /// The TTS session could not be opened (or reopened).
    TtsUnavailable { error: TtsError },
}

enum SttState {
    /// No session; reconnect at `retry_at` (none: on demand).
    Down {
        retry_at: Option<Instant>,
    },
    Opening {
        generation: u64,
    },
    Open {
        feed: mpsc::Sender<SttInput>,
    },
}

/// The call's speech-to-text session; see the module documentation.
pub struct SttLink {
    stt: Arc<dyn SpeechToText>,
    state: SttState,
    generation: u64,
    report: Reporter<LinkEvent>,
    /// Audio frames the feed could not take (the provider is not keeping up).
    pub dropped_frames: u64,
    /// Frames held back to go with the next ones (see [`SttLink::send_audio`]).
    held: BytesMut,
    held_frames: usize,
}

impl SttLink {
    /// A link with no session yet; [`SttLink::open`] starts one.
    pub fn new(stt: Arc<dyn SpeechToText>, report: Reporter<LinkEvent>) -> Self {
        SttLink {
            stt,
            state: SttState::Down { retry_at: None },
            generation: 0,
            report,
            dropped_frames: 0,
            held: BytesMut::new(),
            held_frames: 0,
        }
    }

    pub fn provider(&self) -> &'static str {
        self.stt.name()
    }

    /// Starts opening a session in a task; the result comes back as [`LinkEvent::SttOpened`].
    pub fn open(&mut self) {
        // Held audio is in the engine's replay buffer too: a new session is fed from there.
        self.drop_held();
        self.generation += 1;
        let generation = self.generation;
        self.state = SttState::Opening { generation };
        let stt = Arc::clone(&self.stt);
        let report = self.report.clone();
        tokio::spawn(async move {
            let result = stt.open().await;
            let _ = report.send(LinkEvent::SttOpened { generation, result });
        });
    }

    /// An open finished. On success returns the session's events, after feeding it `replay` (the caller's audio
    /// since the last turn); a stale result (an older open) is dropped.
    pub fn opened<'a>(
        &mut self,
        generation: u64,
        result: Result<SttSession, SttError>,
        replay: impl Iterator<Item = &'a Bytes>,
    ) -> Result<Option<mpsc::Receiver<SttEvent>>, SttError> {
        if !matches!(self.state, SttState::Opening { generation: current } if current == generation) {
            return Ok(None);
        }
        match result {
            Ok(session) => {
                let feed = session.input;
                for frame in replay {
                    if feed.try_send(SttInput::Audio(frame.clone())).is_err() {
                        self.dropped_frames += 1;
                    }
                }
                self.state = SttState::Open { feed };
                Ok(Some(session.events))
            }
            Err(err) => {
                self.state = SttState::Down { retry_at: Some(Instant::now() + STT_RETRY) };
                Err(err)
            }
        }
    }

    /// The session is gone: open a new one at once.
    pub fn lost(&mut self) {
        self.state = SttState::Down { retry_at: None };
        self.open();
    }

    pub fn is_open(&self) -> bool {
        matches!(self.state, SttState::Open { .. })
    }

    /// When a failed open is retried.
    pub fn retry_at(&self) -> Option<Instant> {
        match self.state {
            SttState::Down { retry_at } => retry_at,
            _ => None,
        }
    }

    /// Retries a failed open whose time has come.
    pub fn on_tick(&mut self, now: Instant) {
        if self.retry_at().is_some_and(|at| at <= now) {
            self.open();
        }
    }

    /// Feeds one frame of caller audio (dropped, and counted, when the provider is not keeping up). The frame is held
    /// until `batch` frames have gathered (the ones held before it counted), then they go as one message; with a
    /// `batch` of 1 it goes at once, after the held ones. Returns whether the frame was taken.
    pub fn send_audio(&mut self, frame: Bytes, batch: usize) -> bool {
        if !self.is_open() {
            return false;
        }
        if self.held_frames + 1 < batch {
            self.held.extend_from_slice(&frame);
            self.held_frames += 1;
            return true;
        }
        if self.held_frames == 0 {
            return self.feed(SttInput::Audio(frame), 1);
        }
        self.held.extend_from_slice(&frame);
        self.held_frames += 1;
        self.flush_held()
    }

    /// Sends the held frames now, as one message: before a control message, which must follow all the audio, and
    /// when a result starts to wait for them. Returns whether the feed took them.
    pub fn flush_held(&mut self) -> bool {
        if self.held_frames == 0 {
            return true;
        }
        let frames = std::mem::take(&mut self.held_frames) as u64;
        let audio = self.held.split().freeze();
        self.feed(SttInput::Audio(audio), frames)
    }

    fn drop_held(&mut self) {
        self.held.clear();
        self.held_frames = 0;
    }

    fn feed(&mut self, input: SttInput, frames: u64) -> bool {
        let SttState::Open { feed } = &self.state else { return false };
        if feed.try_send(input).is_err() {
            self.dropped_frames += frames;
            return false;
        }
        true
    }

    /// Asks the session to flush what it heard as a final result.
    pub fn finalize(&mut self) {
        self.flush_held();
        if let SttState::Open { feed } = &self.state {
            let _ = feed.try_send(SttInput::Finalize);
        }
    }

    /// Ends the session politely.
    pub fn close(&mut self) {
        self.flush_held();
        if let SttState::Open { feed } = &self.state {
            let _ = feed.try_send(SttInput::Close);
        }
        self.state = SttState::Down { retry_at: None };
    }
}

/// What the engine sends the TTS link.
enum TtsCommand {
    Input(TtsInput),
    /// Open a session now if there is none (a reply is coming).
    Prepare,
}

/// The engine's handle on the call's synthesis session; see the module documentation.
pub struct TtsLink {
    commands: mpsc::UnboundedSender<TtsCommand>,
    provider: &'static str,
}

impl TtsLink {
    /// Starts the link's task, which opens a session at once and reports on `report`.
    pub fn spawn(tts: Arc<dyn TextToSpeech>, report: Reporter<LinkEvent>) -> TtsLink {
        let (commands, rx) = mpsc::unbounded_channel();
        let provider = tts.name();
        tokio::spawn(run_tts_link(tts, rx, report));
        let link = TtsLink { commands, provider };
        link.prepare();
        link
    }

    pub fn provider(&self) -> &'static str {
        self.provider
    }

    /// Text, a cancel or a close for the session; never waits.
    pub fn send(&self, input: TtsInput) {
        let _ = self.commands.send(TtsCommand::Input(input));
    }

    /// Opens a session ahead of the next reply if the last one was lost.
    pub fn prepare(&self) {
        let _ = self.commands.send(TtsCommand::Prepare);
    }
}

async fn open_tts(tts: &dyn TextToSpeech, report: &Reporter<LinkEvent>) -> Option<TtsSession> {
    match tts.open().await {
        Ok(session) => Some(session),
        Err(error) => {
            let _ = report.send(LinkEvent::TtsUnavailable { error });
            None
        }
    }
}

async fn next_event(session: &mut Option<TtsSession>) -> Option<TtsEvent> {
    match session {
        Some(session) => session.events.recv().await,
        None => std::future::pending().await,
    }
}

/// The TTS link's task: owns the session, forwards the engine's inputs and the session's events.
///
/// Commands that queued up while the link waited (on an open, on a busy provider) are taken together, so text of a
/// reply that was cancelled meanwhile never reaches the provider, and a cancel goes only for a context the session had.
async fn run_tts_link(
    tts: Arc<dyn TextToSpeech>,
    mut commands: mpsc::UnboundedReceiver<TtsCommand>,
    report: Reporter<LinkEvent>,
) {
    let mut link = TtsLinkState { tts, report, session: None, delivered: Vec::new(), failed: None };
    let mut batch = Vec::new();
    loop {
        tokio::select! {
            received = commands.recv_many(&mut batch, 64) => {
                if received == 0 {
                    break;
                }
                while let Ok(command) = commands.try_recv() {
                    batch.push(command);
                }
                let cancelled: Vec<ContextId> = batch
                    .iter()
                    .filter_map(|c| match c {
                        TtsCommand::Input(TtsInput::Cancel { context }) => Some(context.clone()),
                        _ => None,
                    })
                    .collect();
                for command in batch.drain(..) {
                    if !link.handle(command, &cancelled).await {
                        link.close();
                        return;
                    }
                }
            }
            event = next_event(&mut link.session) => link.forward(event),
        }
    }
    link.close();
}

/// The TTS link's state; see [`run_tts_link`].
struct TtsLinkState {
    tts: Arc<dyn TextToSpeech>,
    report: Reporter<LinkEvent>,
    session: Option<TtsSession>,
    /// Contexts the current session has had text for.
    delivered: Vec<ContextId>,
    /// A context whose text could not be delivered: the rest of its text is dropped, not retried piece by piece.
    failed: Option<ContextId>,
}

impl TtsLinkState {
    /// Handles one command; false when the link should end.
    async fn handle(&mut self, command: TtsCommand, cancelled: &[ContextId]) -> bool {
        match command {
            TtsCommand::Input(TtsInput::Close) => return false,
            TtsCommand::Prepare => {
                self.ensure_session().await;
            }
            TtsCommand::Input(TtsInput::Cancel { context }) => {
                let had_it = self.delivered.contains(&context);
                self.delivered.retain(|c| *c != context);
                if let (Some(open), true) = (&self.session, had_it) {
                    let _ = open.input.send(TtsInput::Cancel { context }).await;
                }
            }
            TtsCommand::Input(TtsInput::Text { context, text, last }) => {
                let never_delivered = !self.delivered.contains(&context);
                if self.failed.as_ref() == Some(&context) || (never_delivered && cancelled.contains(&context)) {
                    return true;
                }
                self.ensure_session().await;
                let delivered = match &self.session {
                    Some(open) => {
                        open.input.send(TtsInput::Text { context: context.clone(), text, last }).await.is_ok()
                    }
                    None => false,
                };
                if delivered {
                    if never_delivered {
                        self.delivered.push(context);
                    }
                } else {
                    self.session = None;
                    let error =
                        TtsError::Disconnected { provider: self.tts.name(), detail: "no session to speak with".into() };
                    let _ = self.report.send(LinkEvent::Tts(TtsEvent::Error { context: Some(context.clone()), error }));
                    self.failed = Some(context);
                }
            }
        }
        true
    }

    async fn ensure_session(&mut self) {
        if self.session.is_none() {
            self.delivered.clear();
            self.session = open_tts(self.tts.as_ref(), &self.report).await;
        }
    }

    fn forward(&mut self, event: Option<TtsEvent>) {
        if let Some(TtsEvent::Done { context }) = &event {
            self.delivered.retain(|c| c != context);
        }
        let lost = matches!(event, None | Some(TtsEvent::Closed) | Some(TtsEvent::Error { context: None, .. }));
        if lost {
            self.session = None;
        }
        let _ = self.report.send(LinkEvent::Tts(event.unwrap_or(TtsEvent::Closed)));
    }

    fn close(&mut self) {
        if let Some(open) = self.session.take() {
            let _ = open.input.try_send(TtsInput::Close);
        }
    }
}
