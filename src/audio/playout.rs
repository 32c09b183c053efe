//! The outbound playout queue: reply audio in, paced media messages of whole 20 ms frames and marks out to Twilio.
//!
//! Audio is sent a little ahead of real time (`lead`) rather than dumped, so a `clear` on barge-in has little to throw
//! away and Twilio's buffer never grows large. Once Twilio holds audio, the queue tops it up to `lead` whenever it
//! drops to `lead` minus [`SEND_BATCH`], in one message of up to that much: five frames a message instead of one,
//! with the same audio ahead of playback. Audio that arrives while Twilio holds less than that goes at once. A mark
//! follows each chunk of speech; Twilio echoes it when playback reaches it, which is how Parley knows how much of a
//! reply the caller has actually heard. A `clear` makes Twilio
//! echo every pending mark at once, so marks outstanding at a clear are remembered as flushed, not played.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::frame::Framer;
use super::{mulaw_millis, FRAME_BYTES, FRAME_MILLIS, SAMPLE_RATE};
use crate::twilio::messages::OutboundMessage;

const FRAME_DURATION: Duration = Duration::from_millis(FRAME_MILLIS as u64);
/// The most audio one media message carries (never more than half the lead).
pub const SEND_BATCH: Duration = Duration::from_millis(100);

/// How far playback has got, in bytes of μ-law since the call started (8 bytes = 1 ms).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlayoutProgress {
    /// Audio handed to the queue.
    pub enqueued_bytes: u64,
    /// Audio sent to Twilio.
    pub sent_bytes: u64,
    /// Audio Twilio confirmed as played, by the last mark echoed before any clear.
    pub played_bytes: u64,
    pub marks_sent: u64,
    pub marks_played: u64,
    /// Mark echoes that came back because a clear flushed them.
    pub marks_flushed: u64,
    pub clears: u64,
    /// Audio, mark and clear commands the queue has taken so far (see [`PlayoutHandle::is_settled`]).
    pub commands_taken: u64,
}

impl PlayoutProgress {
    /// Nothing is queued or in flight: everything sent has been confirmed played.
    pub fn is_idle(&self) -> bool {
        self.enqueued_bytes == self.sent_bytes && self.marks_sent == self.marks_played + self.marks_flushed
    }
}

/// What a clear found, so the engine can tell how much of a reply was heard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClearReport {
    /// Audio sent to Twilio before the clear.
    pub sent_bytes: u64,
    /// Audio confirmed played by marks.
    pub played_bytes: u64,
    /// Audio most likely heard: what was sent, minus what was still ahead of real time in Twilio's buffer.
    pub heard_estimate_bytes: u64,
    /// Audio dropped from Parley's own queue without being sent.
    pub dropped_bytes: u64,
}

enum Command {
    Audio(Bytes),
    Mark(String),
    Clear(Option<oneshot::Sender<ClearReport>>),
    MarkEchoed(String),
}

/// The call's handle on its playout queue; cheap to clone.
#[derive(Clone)]
pub struct PlayoutHandle {
    commands: mpsc::UnboundedSender<Command>,
    progress: watch::Receiver<PlayoutProgress>,
    /// Audio, mark and clear commands issued through any clone of this handle.
    issued: Arc<AtomicU64>,
    /// See [`PlayoutHandle::watch_sent_past`].
    watched_offset: Arc<AtomicU64>,
}

impl PlayoutHandle {
    /// Queues μ-law audio (any length) for the caller.
    pub fn play(&self, mulaw: Bytes) {
        self.issue(Command::Audio(mulaw));
    }

    fn issue(&self, command: Command) -> bool {
        self.issued.fetch_add(1, Ordering::SeqCst);
        self.commands.send(command).is_ok()
    }

    /// Whether everything issued so far has reached the queue and been played (or cleared): `progress` alone can
    /// look idle while audio handed over a moment ago is still on its way to the queue.
    pub fn is_settled(&self, progress: &PlayoutProgress) -> bool {
        progress.commands_taken >= self.issued.load(Ordering::SeqCst) && progress.is_idle()
    }

    /// Queues a mark after the audio queued so far (a partial frame is padded with silence first).
    pub fn mark(&self, name: impl Into<String>) {
        self.issue(Command::Mark(name.into()));
    }

    /// Drops everything queued here and in Twilio's buffer (barge-in) and reports how much had been heard.
    pub async fn clear(&self) -> Option<ClearReport> {
        let (tx, rx) = oneshot::channel();
        if !self.issue(Command::Clear(Some(tx))) {
            return None;
        }
        rx.await.ok()
    }

    /// Clears without waiting for the report.
    pub fn clear_now(&self) {
        self.issue(Command::Clear(None));
    }

    /// Twilio echoed a mark; called by the session that reads the socket.
    pub fn mark_echoed(&self, name: String) {
        let _ = self.commands.send(Command::MarkEchoed(name));
    }

    pub fn progress(&self) -> PlayoutProgress {
        *self.progress.borrow()
    }

    /// A receiver that wakes on progress changes: every command taken, mark echoed and clear, the queue running dry,
    /// and the first frame sent past the offset given to [`PlayoutHandle::watch_sent_past`]. Other frames sent do
    /// not wake it (that would wake the watcher fifty times a second); [`PlayoutHandle::progress`] has them.
    pub fn watch(&self) -> watch::Receiver<PlayoutProgress> {
        self.progress.clone()
    }

    /// Asks for a progress change when the first frame with audio after `offset` (an `enqueued_bytes` value) is
    /// sent: the moment a reply's first audio leaves.
    pub fn watch_sent_past(&self, offset: u64) {
        self.watched_offset.store(offset, Ordering::Release);
    }
}

enum Queued {
    Frame(Bytes),
    Mark(String),
}

struct PendingMark {
    name: String,
    offset_bytes: u64,
}

/// Owns the pacing state; runs as one task per call.
struct Playout {
    /// Shared with every media message sent: one allocation per call, not per frame.
    stream_sid: Arc<str>,
    lead: Duration,
    out: mpsc::Sender<OutboundMessage>,
    framer: Framer,
    queue: VecDeque<Queued>,
    pending_marks: VecDeque<PendingMark>,
    flushed_marks: Vec<String>,
    /// When the audio sent so far will have finished playing at Twilio.
    finish_at: Instant,
    progress: PlayoutProgress,
    publish: watch::Sender<PlayoutProgress>,
    /// What the watchers last saw.
    published: PlayoutProgress,
    watched_offset: Arc<AtomicU64>,
    record: Box<dyn PlayoutRecord>,
}

/// Where the playout reports the agent's audio as it leaves and when it is cleared, for whatever keeps a record of
/// the call (the call tap implements it). Called on the playout task for every frame: it must not block.
pub trait PlayoutRecord: Send + 'static {
    /// A frame of the agent's audio went to Twilio at `at`.
    fn agent_audio_sent(&self, at: Instant, frame: Bytes);
    /// Twilio was told to drop the agent's unplayed audio.
    fn agent_audio_cleared(&self, at: Instant);
}

/// Starts the playout task for a stream; it ends when every handle is dropped or Twilio's side is gone.
pub fn spawn(
    stream_sid: String,
    lead: Duration,
    out: mpsc::Sender<OutboundMessage>,
    record: impl PlayoutRecord,
) -> PlayoutHandle {
    let (commands, rx) = mpsc::unbounded_channel();
    let (publish, progress) = watch::channel(PlayoutProgress::default());
    let watched_offset = Arc::new(AtomicU64::new(u64::MAX));
    let playout = Playout {
        stream_sid: Arc::from(stream_sid),
        lead,
        out,
        framer: Framer::new(),
        queue: VecDeque::new(),
        pending_marks: VecDeque::new(),
        flushed_marks: Vec::new(),
        finish_at: Instant::now(),
        progress: PlayoutProgress::default(),
        publish,
        published: PlayoutProgress::default(),
        watched_offset: Arc::clone(&watched_offset),
        record: Box::new(record),
    };
    tokio::spawn(playout.run(rx));
    PlayoutHandle { commands, progress, issued: Arc::new(AtomicU64::new(0)), watched_offset }
}

impl Playout {
    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        loop {
            let next_frame_due = self.next_frame_due();
            tokio::select! {
                command = commands.recv() => match command {
                    Some(command) => self.handle(command).await,
                    None => break,
                },
                () = sleep_until_opt(next_frame_due) => {}
            }
            if !self.pump().await {
                break;
            }
            self.publish_progress();
        }
    }

    /// Publishes the progress when a watcher has a use for it (see [`PlayoutHandle::watch`]); a frame sent in the
    /// middle of the queue only updates the current value.
    fn publish_progress(&mut self) {
        let now = self.progress;
        let before = self.published;
        let only_frames_sent = PlayoutProgress { sent_bytes: before.sent_bytes, ..now } == before;
        if now == before {
            return;
        }
        let watched = self.watched_offset.load(Ordering::Acquire);
        let passed_watched = before.sent_bytes <= watched && now.sent_bytes > watched;
        let ran_dry = !self.queue.iter().any(|queued| matches!(queued, Queued::Frame(_)));
        if only_frames_sent && !passed_watched && !ran_dry {
            // A silent update: `progress()` reads it, watchers are not woken.
            self.publish.send_if_modified(|progress| {
                progress.sent_bytes = now.sent_bytes;
                false
            });
            return;
        }
        self.published = now;
        self.publish.send_replace(now);
    }

    async fn handle(&mut self, command: Command) {
        if !matches!(command, Command::MarkEchoed(_)) {
            self.progress.commands_taken += 1;
        }
        match command {
            Command::Audio(bytes) => {
                self.progress.enqueued_bytes += bytes.len() as u64;
                self.queue.extend(self.framer.push(&bytes).map(Queued::Frame));
            }
            Command::Mark(name) => {
                let partial = self.framer.pending_len();
                if let Some(frame) = self.framer.flush() {
                    // The silence padding is sent too: count it so enqueued and sent stay comparable.
                    self.progress.enqueued_bytes += (FRAME_BYTES - partial) as u64;
                    self.queue.push_back(Queued::Frame(frame));
                }
                self.queue.push_back(Queued::Mark(name));
            }
            Command::Clear(reply) => {
                let report = self.clear().await;
                if let Some(reply) = reply {
                    let _ = reply.send(report);
                }
            }
            Command::MarkEchoed(name) => self.mark_echoed(name),
        }
    }

    /// The most audio one message carries: [`SEND_BATCH`], at most half the lead, at least a frame.
    fn batch(&self) -> Duration {
        SEND_BATCH.min(self.lead / 2)
    }

    fn next_frame_due(&self) -> Option<Instant> {
        match self.queue.front() {
            Some(Queued::Frame(_)) => {
                let ahead = self.lead - self.batch();
                Some(self.finish_at.checked_sub(ahead).unwrap_or(self.finish_at))
            }
            Some(Queued::Mark(_)) => Some(Instant::now()),
            None => None,
        }
    }

    /// Sends whatever is due. Returns false once Twilio's side is gone.
    async fn pump(&mut self) -> bool {
        loop {
            let now = Instant::now();
            let message = match self.queue.front() {
                Some(Queued::Mark(_)) => {
                    let Some(Queued::Mark(name)) = self.queue.pop_front() else { break };
                    self.pending_marks
                        .push_back(PendingMark { name: name.clone(), offset_bytes: self.progress.sent_bytes });
                    self.progress.marks_sent += 1;
                    OutboundMessage::mark(&self.stream_sid, &name)
                }
                Some(Queued::Frame(_)) if self.finish_at <= now + (self.lead - self.batch()) => {
                    self.finish_at = self.finish_at.max(now);
                    let payload = self.take_batch(now);
                    OutboundMessage::media(Arc::clone(&self.stream_sid), payload)
                }
                _ => break,
            };
            if self.out.send(message).await.is_err() {
                return false;
            }
        }
        true
    }

    /// Takes the frames at the front of the queue that fit in one message: up to a batch, no further ahead of
    /// playback than the lead, never past a mark; at least one. Returns them as one payload (a single frame is not
    /// copied).
    fn take_batch(&mut self, now: Instant) -> Bytes {
        let limit = now + self.lead.max(FRAME_DURATION);
        let most = (self.batch().as_millis() as usize / FRAME_MILLIS as usize).max(1);
        let mut count = 1;
        while count < most
            && matches!(self.queue.get(count), Some(Queued::Frame(_)))
            && self.finish_at + FRAME_DURATION * (count as u32 + 1) <= limit
        {
            count += 1;
        }
        if count == 1 {
            return self.send_front_frame(now);
        }
        let mut payload = BytesMut::with_capacity(FRAME_BYTES * count);
        for _ in 0..count {
            payload.extend_from_slice(&self.send_front_frame(now));
        }
        payload.freeze()
    }

    /// Takes the frame at the front of the queue (the caller saw it there) as sent at `now`.
    fn send_front_frame(&mut self, now: Instant) -> Bytes {
        let Some(Queued::Frame(frame)) = self.queue.pop_front() else { return Bytes::new() };
        self.finish_at += FRAME_DURATION;
        self.progress.sent_bytes += frame.len() as u64;
        self.record.agent_audio_sent(now, frame.clone());
        frame
    }

    async fn clear(&mut self) -> ClearReport {
        let now = Instant::now();
        let dropped_bytes: u64 = self
            .queue
            .drain(..)
            .map(|q| match q {
                Queued::Frame(f) => f.len() as u64,
                Queued::Mark(_) => 0,
            })
            .sum::<u64>()
            + self.framer.pending_len() as u64;
        self.framer.reset();
        let unplayed_ms = self.finish_at.saturating_duration_since(now).as_millis() as u64;
        let unplayed_bytes = unplayed_ms * u64::from(SAMPLE_RATE) / 1000;
        let report = ClearReport {
            sent_bytes: self.progress.sent_bytes,
            played_bytes: self.progress.played_bytes,
            heard_estimate_bytes: self
                .progress
                .sent_bytes
                .saturating_sub(unplayed_bytes)
                .max(self.progress.played_bytes),
            dropped_bytes,
        };
        // Enqueued audio that will never be sent no longer counts as outstanding.
        self.progress.enqueued_bytes = self.progress.sent_bytes;
        self.flushed_marks.extend(self.pending_marks.drain(..).map(|m| m.name));
        self.finish_at = now;
        self.progress.clears += 1;
        let _ = self.out.send(OutboundMessage::clear(&self.stream_sid)).await;
        self.record.agent_audio_cleared(Instant::now());
        tracing::debug!(
            heard_ms = mulaw_millis(report.heard_estimate_bytes as usize),
            dropped_ms = mulaw_millis(report.dropped_bytes as usize),
            "playout cleared"
        );
        report
    }

    fn mark_echoed(&mut self, name: String) {
        if let Some(index) = self.pending_marks.iter().position(|m| m.name == name) {
            // Twilio plays in order: every mark before this one has been reached too.
            for mark in self.pending_marks.drain(..=index) {
                self.progress.played_bytes = mark.offset_bytes;
                self.progress.marks_played += 1;
            }
        } else if let Some(index) = self.flushed_marks.iter().position(|m| *m == name) {
            self.flushed_marks.swap_remove(index);
            self.progress.marks_flushed += 1;
        } else {
            tracing::debug!(mark = %name, "ignoring echo of an unknown mark");
        }
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::twilio::messages::OutboundMessage as Out;

    /// A call nobody records.
    struct Unrecorded;

    impl PlayoutRecord for Unrecorded {
        fn agent_audio_sent(&self, _at: Instant, _frame: Bytes) {}
        fn agent_audio_cleared(&self, _at: Instant) {}
    }

    fn start(lead_ms: u64) -> (PlayoutHandle, mpsc::Receiver<Out>) {
        let (tx, rx) = mpsc::channel(1024);
        (spawn("MZ1".into(), Duration::from_millis(lead_ms), tx, Unrecorded), rx)
    }

    async fn next(rx: &mut mpsc::Receiver<Out>) -> Out {
        tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.expect("timed out").expect("closed")
    }

    #[tokio::test(start_paused = true)]
    async fn audio_is_framed_and_paced_to_real_time() {
        let (playout, mut rx) = start(40);
        let t0 = Instant::now();
        playout.play(Bytes::from(vec![1u8; FRAME_BYTES * 10]));
        let mut send_times = Vec::new();
        for _ in 0..10 {
            match next(&mut rx).await {
                Out::Media { media, .. } => assert_eq!(media.payload.len(), FRAME_BYTES),
                other => panic!("expected media, got {other:?}"),
            }
            send_times.push(Instant::now() - t0);
        }
        // With a 40 ms lead a message carries one frame (half the lead): the first two go at once, then one each
        // time Twilio's buffer falls to 20 ms.
        assert_eq!(send_times[0], Duration::ZERO);
        assert_eq!(send_times[1], Duration::ZERO);
        assert_eq!(send_times[2], Duration::from_millis(20));
        assert_eq!(send_times[9], Duration::from_millis(160));
    }

    #[tokio::test(start_paused = true)]
    async fn with_a_longer_lead_a_message_carries_a_batch_of_frames() {
        let (playout, mut rx) = start(200);
        let t0 = Instant::now();
        playout.play(Bytes::from((0..FRAME_BYTES * 50).map(|i| (i / FRAME_BYTES) as u8).collect::<Vec<u8>>()));
        let mut sent = Vec::new();
        let mut send_times = Vec::new();
        while sent.len() < FRAME_BYTES * 50 {
            match next(&mut rx).await {
                Out::Media { media, .. } => {
                    assert_eq!(media.payload.len(), FRAME_BYTES * 5, "a message carries 100 ms");
                    sent.extend_from_slice(&media.payload);
                }
                other => panic!("expected media, got {other:?}"),
            }
            send_times.push(Instant::now() - t0);
        }
        // The audio arrives whole and in order, in ten messages instead of fifty.
        assert_eq!(sent, (0..FRAME_BYTES * 50).map(|i| (i / FRAME_BYTES) as u8).collect::<Vec<u8>>());
        assert_eq!(send_times.len(), 10);
        // 200 ms at once; then 100 ms whenever Twilio holds 100 ms: never more than the lead ahead of playback.
        assert_eq!(&send_times[..3], [Duration::ZERO, Duration::ZERO, Duration::from_millis(100)]);
        assert_eq!(send_times[9], Duration::from_millis(800));
        assert_eq!(playout.progress().sent_bytes, (FRAME_BYTES * 50) as u64);
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_stops_at_a_mark_and_audio_after_a_pause_goes_at_once() {
        let (playout, mut rx) = start(200);
        playout.play(Bytes::from(vec![1u8; FRAME_BYTES * 3]));
        playout.mark("r1-0");
        playout.play(Bytes::from(vec![2u8; FRAME_BYTES * 3]));
        let first = next(&mut rx).await;
        assert!(matches!(&first, Out::Media { media, .. } if media.payload.len() == FRAME_BYTES * 3), "{first:?}");
        assert_eq!(next(&mut rx).await, Out::mark("MZ1", "r1-0"));
        assert!(matches!(next(&mut rx).await, Out::Media { media, .. } if media.payload.len() == FRAME_BYTES * 3));
        // Once the 120 ms sent have played out, a new reply's first frame goes at once, not held for a batch.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let t0 = Instant::now();
        playout.play(Bytes::from(vec![3u8; FRAME_BYTES]));
        assert!(matches!(next(&mut rx).await, Out::Media { media, .. } if media.payload.len() == FRAME_BYTES));
        assert_eq!(Instant::now() - t0, Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn watchers_wake_for_the_watched_frame_and_the_end_not_for_every_frame() {
        let (playout, mut rx) = start(40);
        let mut watch = playout.watch();
        playout.play(Bytes::from(vec![1u8; FRAME_BYTES * 4]));
        // The audio was taken; a second stretch, watched from where it starts.
        watch.changed().await.unwrap();
        let start = watch.borrow_and_update().enqueued_bytes;
        playout.watch_sent_past(start);
        playout.play(Bytes::from(vec![2u8; FRAME_BYTES * 4]));
        let mut woken_at_sent = Vec::new();
        for _ in 0..8 {
            assert!(matches!(next(&mut rx).await, Out::Media { .. }));
            tokio::task::yield_now().await;
            if watch.has_changed().unwrap() {
                woken_at_sent.push(watch.borrow_and_update().sent_bytes);
            }
            // The current value is always there, woken or not.
            assert!(playout.progress().sent_bytes > 0);
        }
        let frame = FRAME_BYTES as u64;
        // Woken when the second stretch was taken (before any of it was sent), when its first frame left, and when
        // the queue ran dry; not for the frames between.
        assert!(woken_at_sent.contains(&(5 * frame)), "{woken_at_sent:?}");
        assert_eq!(woken_at_sent.last(), Some(&(8 * frame)), "{woken_at_sent:?}");
        assert!(woken_at_sent.len() <= 4, "{woken_at_sent:?}");
        assert_eq!(playout.progress().sent_bytes, 8 * frame);
    }

    #[tokio::test(start_paused = true)]
    async fn marks_follow_their_audio_and_echoes_count_played_bytes() {
        let (playout, mut rx) = start(1000);
        playout.play(Bytes::from(vec![1u8; 200]));
        playout.mark("r1-0");
        for _ in 0..2 {
            assert!(matches!(next(&mut rx).await, Out::Media { .. }));
        }
        assert_eq!(next(&mut rx).await, Out::mark("MZ1", "r1-0"));
        playout.mark_echoed("r1-0".into());
        let mut watch = playout.watch();
        watch.wait_for(|p| p.marks_played == 1).await.unwrap();
        let progress = playout.progress();
        assert_eq!(progress.played_bytes, 320, "two frames, the second padded");
        assert_eq!(progress.sent_bytes, 320);
        assert!(progress.is_idle());
    }

    #[tokio::test(start_paused = true)]
    async fn audio_just_handed_over_is_not_settled_even_when_progress_looks_idle() {
        let (playout, mut rx) = start(1000);
        let before = playout.progress();
        assert!(playout.is_settled(&before));
        playout.play(Bytes::from(vec![1u8; 160]));
        playout.mark("r1-0");
        // The queue has not taken the audio yet: the old snapshot is idle, but not settled.
        assert!(before.is_idle());
        assert!(!playout.is_settled(&before));
        assert!(matches!(next(&mut rx).await, Out::Media { .. }));
        assert_eq!(next(&mut rx).await, Out::mark("MZ1", "r1-0"));
        playout.mark_echoed("r1-0".into());
        let mut watch = playout.watch();
        watch.wait_for(|p| p.marks_played == 1).await.unwrap();
        assert!(playout.is_settled(&playout.progress()));
    }

    #[tokio::test(start_paused = true)]
    async fn clear_drops_the_queue_and_flushed_marks_do_not_count_as_played() {
        let (playout, mut rx) = start(100);
        playout.play(Bytes::from(vec![1u8; FRAME_BYTES * 50])); // one second
        playout.mark("r1-0");
        for _ in 0..6 {
            assert!(matches!(next(&mut rx).await, Out::Media { .. }));
        }
        tokio::time::sleep(Duration::from_millis(60)).await;
        while let Ok(Out::Media { .. }) = rx.try_recv() {}
        let report = playout.clear().await.expect("report");
        assert!(report.dropped_bytes > 0);
        assert!(report.sent_bytes < (FRAME_BYTES * 50) as u64);
        assert!(report.heard_estimate_bytes < report.sent_bytes, "{report:?}");
        assert!(report.heard_estimate_bytes >= 60 * 8, "{report:?}");
        let mut saw_clear = false;
        while let Ok(msg) = rx.try_recv() {
            assert!(!matches!(msg, Out::Mark { .. }), "the mark was queued behind cleared audio");
            saw_clear |= msg == Out::clear("MZ1");
        }
        assert!(saw_clear);
        // Twilio echoes nothing for a mark it never got; an echo of an unknown mark is ignored.
        playout.mark_echoed("r1-0".into());
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(playout.progress().marks_played, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn echoes_of_marks_pending_at_a_clear_are_flushed_not_played() {
        let (playout, mut rx) = start(10_000);
        playout.play(Bytes::from(vec![1u8; FRAME_BYTES]));
        playout.mark("a");
        playout.play(Bytes::from(vec![1u8; FRAME_BYTES]));
        playout.mark("b");
        for _ in 0..4 {
            next(&mut rx).await;
        }
        playout.clear().await.expect("report");
        playout.mark_echoed("a".into());
        playout.mark_echoed("b".into());
        playout.watch().wait_for(|p| p.marks_flushed == 2).await.unwrap();
        assert_eq!(playout.progress().marks_played, 0);
        assert_eq!(playout.progress().played_bytes, 0);
    }
}
