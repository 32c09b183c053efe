//! The per-call recorder: takes the call's tap events in steps (on a recorder thread, see [`super::workers`]: file
//! writes never stall the call or the runtime) and writes the recording, the timeline and the metadata as the call
//! goes on.
//!
//! The recording is kept in its wire form, μ-law bytes ([`super::wav`]): nothing is decoded or encoded while the
//! call lives. The Opus form is made after the call ([`super::compress`]).

use std::collections::VecDeque;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::lease::{millis_since_epoch, Ownership};
use super::meta::{CallMetadata, CallStatus};
use super::opus::FRAME_SAMPLES;
use super::store::CallWriter;
use super::timeline::{TimelineEntry, TimelineEvent};
use super::wav::{MulawWavWriter, SILENCE};
use super::{ArchiveError, ArchiveStore, CallKey, SealedCalls, METADATA_FILE, TIMELINE_FILE, WAV_RECORDING_FILE};
use crate::call::tap::{ConversationEvent, TapEvent};
use crate::call::CallInfo;
use crate::telemetry::redact;

/// Audio is written this long after it happened: caller frames that arrive in a burst still find their place.
/// (Agent audio before "now" is already final: it is only ever scheduled at or after its send time.)
const HOLD: Duration = Duration::from_millis(300);
const SAMPLES_PER_MS: u64 = 8;
/// The step buffer's capacity kept between steps: a second of both legs (a step normally writes 500 ms).
const SCRATCH_KEPT: usize = 16_000;

/// A call to record: what the archive knows when the call starts, and the tap's events to come.
pub(crate) struct RecordingJob {
    pub store: Arc<dyn ArchiveStore>,
    pub call: CallInfo,
    pub redact_numbers: bool,
    pub ownership: Ownership,
    pub on_sealed: Option<Arc<dyn SealedCalls>>,
    pub started: Instant,
    pub started_wall: SystemTime,
    pub events: mpsc::UnboundedReceiver<TapEvent>,
}

/// A call being recorded, advanced a step at a time by a recorder thread.
pub(crate) struct LiveRecording {
    /// `None` once sealed or failed.
    recorder: Option<Recorder>,
    events: mpsc::UnboundedReceiver<TapEvent>,
    on_sealed: Option<Arc<dyn SealedCalls>>,
    call_sid: String,
}

impl LiveRecording {
    /// Opens the call's files; `None` (logged) when the archive cannot take the call.
    pub(crate) fn open(job: RecordingJob) -> Option<LiveRecording> {
        let RecordingJob { store, call, redact_numbers, ownership, on_sealed, started, started_wall, events } = job;
        match Recorder::open(store, &call, redact_numbers, ownership, started, started_wall) {
            Ok(recorder) => {
                Some(LiveRecording { recorder: Some(recorder), events, on_sealed, call_sid: call.call_sid })
            }
            Err(err) => {
                tracing::warn!(%err, call_sid = %call.call_sid, "cannot archive the call");
                None
            }
        }
    }

    /// Takes every event that arrived since the last step and writes the audio that can no longer change; seals
    /// the call when it ended. Returns whether the call is still being recorded.
    pub(crate) fn step(&mut self, now: Instant) -> bool {
        let Some(recorder) = self.recorder.as_mut() else { return false };
        let ended = loop {
            match self.events.try_recv() {
                Ok(TapEvent::Ended { at, reason }) => break Some((at, reason)),
                Ok(event) => {
                    if let Err(err) = recorder.on_event(event) {
                        return self.failed(err);
                    }
                }
                Err(mpsc::error::TryRecvError::Empty) => break None,
                Err(mpsc::error::TryRecvError::Disconnected) => break Some((now, "tap closed".into())),
            }
        };
        let Some((at, reason)) = ended else {
            return match recorder.write_audio(now).and_then(|()| recorder.keep(now)) {
                Ok(()) => true,
                Err(err) => self.failed(err),
            };
        };
        let Some(recorder) = self.recorder.take() else { return false };
        let store = Arc::clone(&recorder.store);
        let key = recorder.key.clone();
        if let Err(err) = recorder.seal(at, &reason) {
            return self.failed(err);
        }
        if let Some(hook) = &self.on_sealed {
            hook.sealed(store.as_ref(), &key);
        }
        false
    }

    fn failed(&mut self, err: ArchiveError) -> bool {
        self.recorder = None;
        tracing::warn!(%err, call_sid = %self.call_sid, "archiving the call failed; the rest is not recorded");
        false
    }
}

/// Places both legs on the call's timeline, in 8 kHz samples since the call started, and hands out whole 20 ms
/// frames once they can no longer change. Samples stay μ-law bytes as they came off the wire (gaps are μ-law
/// silence). The buffers are ring buffers: handing out a frame costs the frame, not the audio still queued behind
/// it, so sealing a call is linear in its audio.
#[derive(Debug, Default)]
pub(crate) struct Aligner {
    /// Samples already handed out; both buffers start here.
    written: u64,
    caller: VecDeque<u8>,
    /// Where the next caller frame goes; `None` before the first.
    caller_next: Option<u64>,
    agent: VecDeque<u8>,
    /// Where the agent's scheduled audio ends.
    agent_end: u64,
}

impl Aligner {
    /// A caller frame received at `at`: frames are consecutive 20 ms from the first one (which ended when it
    /// arrived), except that a frame never lands in audio already written (after a stall it starts there).
    pub(crate) fn caller_frame(&mut self, at: u64, ulaw: &[u8]) {
        let next = *self.caller_next.get_or_insert_with(|| at.saturating_sub(ulaw.len() as u64));
        let start = next.max(self.written);
        place(&mut self.caller, (start - self.written) as usize, ulaw);
        self.caller_next = Some(start + ulaw.len() as u64);
    }

    /// An agent frame sent at `at`: it plays when it is sent or when the agent audio before it has played.
    pub(crate) fn agent_frame(&mut self, at: u64, ulaw: &[u8]) {
        let start = at.max(self.agent_end).max(self.written);
        place(&mut self.agent, (start - self.written) as usize, ulaw);
        self.agent_end = start + ulaw.len() as u64;
    }

    /// Twilio dropped the agent audio not played at `at`.
    pub(crate) fn clear(&mut self, at: u64) {
        let at = at.max(self.written);
        if self.agent_end > at {
            self.agent.truncate((at - self.written) as usize);
            self.agent_end = at;
        }
    }

    /// Where the audio placed so far ends.
    pub(crate) fn end(&self) -> u64 {
        self.caller_next.unwrap_or(0).max(self.agent_end)
    }

    /// Appends every whole frame before `upto` to `out`, interleaved (caller, agent) sample by sample; returns how
    /// many frames.
    pub(crate) fn take_until(&mut self, upto: u64, out: &mut Vec<u8>) -> u64 {
        let frames = upto.saturating_sub(self.written) / FRAME_SAMPLES as u64;
        let samples = frames as usize * FRAME_SAMPLES;
        let start = out.len();
        out.resize(start + 2 * samples, SILENCE);
        let interleaved = &mut out[start..];
        // Whatever a leg has queued goes in; past its end the leg is silent.
        let queued = samples.min(self.caller.len());
        for (slot, sample) in interleaved.iter_mut().step_by(2).zip(self.caller.drain(..queued)) {
            *slot = sample;
        }
        let queued = samples.min(self.agent.len());
        for (slot, sample) in interleaved.iter_mut().skip(1).step_by(2).zip(self.agent.drain(..queued)) {
            *slot = sample;
        }
        self.written += samples as u64;
        frames
    }
}

fn place(buffer: &mut VecDeque<u8>, offset: usize, ulaw: &[u8]) {
    // The usual case, a frame right after the audio queued (or after a gap): appended, one copy.
    if offset >= buffer.len() {
        buffer.resize(offset, SILENCE);
        buffer.extend(ulaw);
        return;
    }
    if buffer.len() < offset + ulaw.len() {
        buffer.resize(offset + ulaw.len(), SILENCE);
    }
    for (slot, &sample) in buffer.range_mut(offset..offset + ulaw.len()).zip(ulaw) {
        *slot = sample;
    }
}

struct Recorder {
    store: Arc<dyn ArchiveStore>,
    key: CallKey,
    started: Instant,
    metadata: CallMetadata,
    audio: Aligner,
    recording: MulawWavWriter,
    /// The interleaved bytes of one step, kept between steps so a step does not allocate.
    scratch: Vec<u8>,
    timeline: Box<dyn CallWriter>,
    ownership: Ownership,
    /// When the lease in the metadata was last written.
    lease_written: Instant,
}

impl Recorder {
    fn open(
        store: Arc<dyn ArchiveStore>,
        call: &CallInfo,
        redact_numbers: bool,
        ownership: Ownership,
        started: Instant,
        started_wall: SystemTime,
    ) -> Result<Recorder, ArchiveError> {
        let key = store.create_call(CallKey::new(&call.call_sid, started_wall))?;
        let number = |n: &Option<String>| n.as_deref().map(|n| redact::phone_number(n, redact_numbers));
        let metadata = CallMetadata {
            call_sid: call.call_sid.clone(),
            stream_sid: call.stream_sid.clone(),
            from: number(&call.from),
            to: number(&call.to),
            started_at_ms: millis_since_epoch(started_wall),
            ended_at_ms: None,
            duration_ms: None,
            status: CallStatus::Open,
            ended_by: None,
            turns: 0,
            cost: None,
            owner: Some(ownership.claim(SystemTime::now())),
        };
        store.put(&key, METADATA_FILE, &metadata.to_json())?;
        let recording = MulawWavWriter::new(store.create(&key, WAV_RECORDING_FILE)?)?;
        let timeline = store.append(&key, TIMELINE_FILE)?;
        let audio = Aligner::default();
        let lease_written = Instant::now();
        let scratch = Vec::new();
        let mut recorder =
            Recorder { store, key, started, metadata, audio, recording, scratch, timeline, ownership, lease_written };
        let event = TimelineEvent::CallStarted { call_sid: call.call_sid.clone(), stream_sid: call.stream_sid.clone() };
        recorder.log(started, event)?;
        tracing::debug!(call = %recorder.key, "archiving the call");
        Ok(recorder)
    }

    fn on_event(&mut self, event: TapEvent) -> Result<(), ArchiveError> {
        match event {
            TapEvent::CallerAudio { at, frame } => self.audio.caller_frame(self.samples(at), &frame),
            TapEvent::AgentAudioSent { at, frame } => self.audio.agent_frame(self.samples(at), &frame),
            TapEvent::AgentAudioCleared { at } => {
                self.audio.clear(self.samples(at));
                self.log(at, TimelineEvent::AgentAudioCleared)?;
            }
            TapEvent::Conversation { at, event } => {
                let turn = matches!(event, ConversationEvent::CallerTurn { .. });
                if let ConversationEvent::CallCost { cost } = &event {
                    self.metadata.cost = Some(cost.clone());
                }
                self.log(at, event)?;
                if turn {
                    // Written with the next lease renewal (or the seal), not a metadata write per turn: the timeline
                    // has the turn itself at once.
                    self.metadata.turns += 1;
                }
            }
            TapEvent::Ended { .. } => {}
        }
        Ok(())
    }

    /// Writes the audio that can no longer change.
    fn write_audio(&mut self, now: Instant) -> Result<(), ArchiveError> {
        let upto = self.samples(now).saturating_sub(HOLD.as_millis() as u64 * SAMPLES_PER_MS);
        self.write_until(upto)
    }

    /// Keeps the call's files current in the store (a store that uploads in parts decides when) and renews this
    /// instance's lease on the call before it can lapse.
    fn keep(&mut self, now: Instant) -> Result<(), ArchiveError> {
        self.recording.flush()?;
        self.timeline.flush().map_err(ArchiveError::io(TIMELINE_FILE))?;
        if now.saturating_duration_since(self.lease_written) >= self.ownership.renew_every() {
            self.metadata.owner = Some(self.ownership.claim(SystemTime::now()));
            self.store.put(&self.key, METADATA_FILE, &self.metadata.to_json())?;
            self.lease_written = now;
        }
        Ok(())
    }

    fn write_until(&mut self, upto: u64) -> Result<(), ArchiveError> {
        self.scratch.clear();
        if self.audio.take_until(upto, &mut self.scratch) > 0 {
            self.recording.push(&self.scratch)?;
        }
        // A long stall's burst is not kept for the rest of the call.
        if self.scratch.capacity() > SCRATCH_KEPT {
            self.scratch = Vec::new();
        }
        Ok(())
    }

    /// The call is over: agent audio that had not played is cut, the rest written, the files closed.
    fn seal(mut self, at: Instant, reason: &str) -> Result<(), ArchiveError> {
        let end = self.samples(at);
        self.audio.clear(end);
        let frame = FRAME_SAMPLES as u64;
        let upto = end.max(self.audio.end()).div_ceil(frame) * frame;
        self.write_until(upto)?;
        self.log(at, TimelineEvent::CallEnded { reason: reason.to_owned() })?;
        let duration_ms = self.recording.pairs() / SAMPLES_PER_MS;
        // Everything is in the store, the recording's header patched, before the metadata says the call is sealed.
        self.recording.finish()?;
        self.timeline.sync()?;
        self.metadata.duration_ms = Some(duration_ms);
        self.metadata.ended_at_ms = Some(self.metadata.started_at_ms + duration_ms);
        self.metadata.status = CallStatus::Sealed;
        self.metadata.ended_by = Some(reason.to_owned());
        self.store.put(&self.key, METADATA_FILE, &self.metadata.to_json())?;
        tracing::debug!(call = %self.key, duration_ms, "call archived");
        Ok(())
    }

    fn log(&mut self, at: Instant, event: TimelineEvent) -> Result<(), ArchiveError> {
        let entry = TimelineEntry { ms: at.saturating_duration_since(self.started).as_millis() as u64, event };
        self.timeline.write_all(&entry.to_line()).map_err(ArchiveError::io(TIMELINE_FILE))
    }

    fn samples(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.started).as_millis() as u64 * SAMPLES_PER_MS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const F: u64 = FRAME_SAMPLES as u64;

    /// Silence is the μ-law byte 0xFF; frames of other values stand for audio.
    const S: u8 = SILENCE;

    fn frame(value: u8) -> Vec<u8> {
        vec![value; FRAME_SAMPLES]
    }

    /// The frames handed out until `upto`, each as its (caller, agent) samples.
    fn take(aligner: &mut Aligner, upto: u64) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut out = Vec::new();
        let frames = aligner.take_until(upto, &mut out);
        assert_eq!(out.len() as u64, frames * 2 * F);
        out.chunks(2 * FRAME_SAMPLES)
            .map(|f| (f.iter().step_by(2).copied().collect(), f.iter().skip(1).step_by(2).copied().collect()))
            .collect()
    }

    /// The value of each frame handed out, per leg.
    fn values(frames: &[(Vec<u8>, Vec<u8>)]) -> (Vec<u8>, Vec<u8>) {
        (frames.iter().map(|f| f.0[0]).collect(), frames.iter().map(|f| f.1[0]).collect())
    }

    #[test]
    fn caller_frames_follow_each_other_from_the_first() {
        let mut aligner = Aligner::default();
        // The first frame arrived at 40 ms: it covers 20–40 ms. Then a burst of two.
        aligner.caller_frame(2 * F, &frame(1));
        aligner.caller_frame(2 * F, &frame(2));
        aligner.caller_frame(2 * F, &frame(3));
        let (caller, agent) = values(&take(&mut aligner, 5 * F));
        assert_eq!(caller, vec![S, 1, 2, 3, S]);
        assert_eq!(agent, vec![S; 5]);
        // After a stall past what was written, the caller resumes where writing stands.
        aligner.caller_frame(9 * F, &frame(4));
        assert_eq!(values(&take(&mut aligner, 6 * F)).0, vec![4]);
    }

    #[test]
    fn agent_frames_play_back_to_back_from_their_send_time_and_a_clear_cuts_them() {
        let mut aligner = Aligner::default();
        // Four frames sent at once at 20 ms play at 20, 40, 60, 80 ms; a clear at 50 ms drops what had not played.
        for value in 1..=4 {
            aligner.agent_frame(F, &frame(value));
        }
        aligner.clear(2 * F + F / 2);
        let frames = take(&mut aligner, 6 * F);
        assert_eq!(values(&frames).1, vec![S, 1, 2, S, S, S]);
        assert_eq!(&frames[2].1[..F as usize / 2], &frame(2)[..F as usize / 2]);
        assert!(frames[2].1[F as usize / 2..].iter().all(|&s| s == S));
        // Sent later than the queue ran dry: it plays when it is sent.
        aligner.agent_frame(8 * F, &frame(5));
        assert_eq!(values(&take(&mut aligner, 10 * F)).1, vec![S, S, 5, S]);
    }

    #[test]
    fn handing_out_frames_is_linear_in_the_audio_queued() {
        // Ten minutes of caller audio placed at once, then handed out frame by frame: with a buffer that shifts its
        // rest on every frame this is quadratic (~10^10 sample moves); here each frame costs its own samples.
        let mut aligner = Aligner::default();
        let frames = 10 * 60 * 50u64;
        for _ in 0..frames {
            aligner.caller_frame(0, &frame(7));
        }
        let out = take(&mut aligner, frames * F);
        assert_eq!(out.len() as u64, frames);
        assert!(out.iter().all(|(caller, agent)| caller[0] == 7 && agent[0] == S));
        assert!(aligner.caller.is_empty() && aligner.caller.capacity() >= FRAME_SAMPLES);
    }
}
