//! The reply in flight: from the turn decision until its audio has finished playing (or the caller cut it off).
//!
//! It holds what the engine must know to finish the reply well: its text by tool round, how far synthesis and
//! playout have got, the call action it asked for, its latency record and its span.

use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::call_control::CallAction;
use super::latency::TurnLatency;
use super::resume::{Paused, ReplyAudio};
use crate::llm::history::ToolResult;
use crate::llm::ToolCall;
use crate::telemetry::spans::TurnTrace;

/// One segment of a reply: text spoken before a tool round (or after the last), and that round's calls.
#[derive(Debug, Default)]
pub struct Segment {
    pub text: String,
    pub calls: Vec<ToolCall>,
    pub results: Vec<ToolResult>,
}

/// The reply in progress; see the module documentation.
pub struct InFlight {
    pub id: u64,
    /// The TTS context of this reply.
    pub context: String,
    /// The model's task (none for a fixed line).
    pub task: Option<JoinHandle<()>>,
    pub cancel: CancellationToken,
    pub segments: Vec<Segment>,
    pub llm_done: bool,
    /// Pieces of text handed to TTS.
    pub pieces_sent: usize,
    pub synthesis_done: bool,
    pub audio_bytes: u64,
    /// Playout offset of the reply's first audio byte.
    pub audio_start: Option<u64>,
    pub marks: u64,
    pub latency: TurnLatency,
    /// Whether this reply is a caller turn's answer (its latency is reported).
    pub answers_turn: bool,
    /// The turn's span, closed with the stage spans when the reply is over.
    pub trace: TurnTrace,
    /// When the TTS said this reply's synthesis was complete.
    pub synthesis_done_at: Option<Instant>,
    /// What the model asked to happen once this reply has been heard (dropped with the reply if it is interrupted).
    pub action: Option<CallAction>,
    /// The reply's own copy of its audio, kept to resume it after a false interruption.
    pub audio: ReplyAudio,
    /// Set while a barge-in has paused the reply and it is not yet known whether the caller meant it.
    pub paused: Option<Paused>,
    /// A barge-in paused the reply and it resumed: words the STT returns late for that speech still interrupt it.
    pub resumed: bool,
}

impl InFlight {
    /// A reply the model is about to write.
    pub fn model(id: u64, turn_index: u64, task: JoinHandle<()>, cancel: CancellationToken) -> InFlight {
        InFlight { context: format!("t{turn_index}-r{id}"), task: Some(task), cancel, ..InFlight::empty(id) }
    }

    /// A fixed line (greeting, fallback, apology), already complete.
    pub fn line(id: u64, text: &str) -> InFlight {
        InFlight {
            context: format!("s{id}"),
            segments: vec![Segment { text: text.to_owned(), ..Segment::default() }],
            llm_done: true,
            pieces_sent: 1,
            ..InFlight::empty(id)
        }
    }

    fn empty(id: u64) -> InFlight {
        InFlight {
            id,
            context: String::new(),
            task: None,
            cancel: CancellationToken::new(),
            segments: Vec::new(),
            llm_done: false,
            pieces_sent: 0,
            synthesis_done: false,
            audio_bytes: 0,
            audio_start: None,
            marks: 0,
            latency: TurnLatency::default(),
            answers_turn: false,
            trace: TurnTrace::default(),
            synthesis_done_at: None,
            action: None,
            audio: ReplyAudio::default(),
            paused: None,
            resumed: false,
        }
    }

    /// Everything the reply says, in order.
    pub fn text(&self) -> String {
        self.segments.iter().map(|s| s.text.as_str()).collect()
    }

    pub fn current_segment(&mut self) -> &mut Segment {
        if self.segments.is_empty() {
            self.segments.push(Segment::default());
        }
        let last = self.segments.len() - 1;
        &mut self.segments[last]
    }

    /// Whether the caller may have heard any of it: audio of the reply reached the playout queue.
    pub fn has_audio(&self) -> bool {
        self.audio_start.is_some()
    }

    /// Whether a barge-in has paused the reply (see [`super::resume`]).
    pub fn is_paused(&self) -> bool {
        self.paused.is_some()
    }

    /// Whether TTS has text of this reply that a cancel would stop.
    pub fn is_synthesizing(&self) -> bool {
        self.pieces_sent > 0 && !self.synthesis_done
    }

    /// Stops the model and its tools.
    pub fn stop(&mut self) {
        self.cancel.cancel();
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
