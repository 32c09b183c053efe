//! The recorder threads: a few threads, each stepping through the calls it records every [`TICK`], instead of a
//! thread per call woken by every 20 ms frame. Taps only queue events (no thread is woken per frame), encoding and
//! file writes stay off the runtime, and the thread count does not grow with the calls.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::Duration;

use super::recorder::{LiveRecording, RecordingJob};

/// How often each call's events are taken and its audio written: two writes a second a call (recording and
/// timeline). A crash loses what had not been written: at most this plus the recorder's hold (300 ms), under the
/// second the archive promises.
pub(crate) const TICK: Duration = Duration::from_millis(500);

/// Hands each new call to one of the recorder threads.
pub(crate) struct RecorderPool {
    threads: Vec<mpsc::Sender<RecordingJob>>,
    next: AtomicUsize,
    /// Calls handed to a thread and not yet sealed (or given up on).
    unsealed: Arc<AtomicUsize>,
}

impl RecorderPool {
    /// Starts `threads` recorder threads (at least one). They end once the pool is dropped and their calls sealed.
    pub(crate) fn start(threads: usize) -> RecorderPool {
        let unsealed = Arc::new(AtomicUsize::new(0));
        let threads = (0..threads.max(1))
            .filter_map(|n| {
                let (jobs, queue) = mpsc::channel();
                let unsealed = Arc::clone(&unsealed);
                let spawned = std::thread::Builder::new()
                    .name(format!("parley-recorder-{n}"))
                    .spawn(move || run(queue, &unsealed));
                match spawned {
                    Ok(_) => Some(jobs),
                    Err(err) => {
                        tracing::error!(%err, "cannot start a recorder thread");
                        None
                    }
                }
            })
            .collect();
        RecorderPool { threads, next: AtomicUsize::new(0), unsealed }
    }

    /// Calls being recorded whose files are not sealed yet.
    pub(crate) fn unsealed(&self) -> usize {
        self.unsealed.load(Ordering::Acquire)
    }

    /// Records a call on the next thread in turn.
    pub(crate) fn record(&self, job: RecordingJob) {
        if self.threads.is_empty() {
            tracing::warn!(call_sid = %job.call.call_sid, "no recorder thread; the call is not archived");
            return;
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed) % self.threads.len();
        self.unsealed.fetch_add(1, Ordering::AcqRel);
        if self.threads[n].send(job).is_err() {
            self.unsealed.fetch_sub(1, Ordering::AcqRel);
            tracing::warn!("a recorder thread has stopped; the call is not archived");
        }
    }
}

/// One recorder thread: opens new calls as they come and steps every live call each tick.
fn run(jobs: mpsc::Receiver<RecordingJob>, unsealed: &AtomicUsize) {
    let mut live: Vec<LiveRecording> = Vec::new();
    let mut open = true;
    let mut next_tick = std::time::Instant::now() + TICK;
    loop {
        let wait = next_tick.saturating_duration_since(std::time::Instant::now());
        if open {
            match jobs.recv_timeout(wait) {
                Ok(job) => {
                    match LiveRecording::open(job) {
                        Some(call) => live.push(call),
                        None => {
                            unsealed.fetch_sub(1, Ordering::AcqRel);
                        }
                    }
                    continue;
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => open = false,
            }
        } else if live.is_empty() {
            return;
        } else {
            std::thread::sleep(wait);
        }
        let now = tokio::time::Instant::now();
        live.retain_mut(|call| {
            let recording = call.step(now);
            if !recording {
                unsealed.fetch_sub(1, Ordering::AcqRel);
            }
            recording
        });
        // A thread that fell behind catches up from now rather than stepping in a burst.
        next_tick = (next_tick + TICK).max(std::time::Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::archive::{read_metadata, read_timeline, ArchiveStore, CallKey, CallStatus, LocalStore};
    use crate::archive::{Ownership, SealedCalls};
    use crate::call::tap::{CallTap, TapEvent};
    use crate::call::CallInfo;

    #[derive(Default)]
    struct Sealed(Mutex<Vec<std::path::PathBuf>>);

    impl SealedCalls for Sealed {
        fn sealed(&self, store: &dyn ArchiveStore, key: &CallKey) {
            self.0.lock().unwrap().push(store.local_dir(key).unwrap());
        }
    }

    #[test]
    fn one_thread_records_many_calls_and_seals_each_when_it_ends() {
        let root = tempfile::tempdir().unwrap();
        let store: Arc<dyn ArchiveStore> = Arc::new(LocalStore::new(root.path()).unwrap());
        let sealed = Arc::new(Sealed::default());
        let pool = RecorderPool::start(1);
        let started = tokio::time::Instant::now();
        let taps: Vec<CallTap> = (0..5)
            .map(|n| {
                let (tap, events) = CallTap::channel();
                let call = CallInfo { call_sid: format!("CA{n}"), stream_sid: format!("MZ{n}"), ..CallInfo::default() };
                pool.record(RecordingJob {
                    store: Arc::clone(&store),
                    call,
                    redact_numbers: false,
                    ownership: Ownership::new("test", Duration::from_secs(15)),
                    on_sealed: Some(sealed.clone() as Arc<dyn SealedCalls>),
                    started,
                    started_wall: std::time::SystemTime::now(),
                    events,
                });
                tap
            })
            .collect();
        // Half a second of caller audio each, then the end (the last call's tap is dropped instead).
        for i in 1..=25u64 {
            for tap in &taps {
                let at = started + Duration::from_millis(20 * i);
                tap.send(TapEvent::CallerAudio { at, frame: vec![0x7Fu8; 160].into() });
            }
        }
        let end = started + Duration::from_millis(520);
        for tap in &taps[..4] {
            tap.send(TapEvent::Ended { at: end, reason: "stopped".into() });
        }
        drop(taps);
        assert_eq!(pool.unsealed(), 5);
        let unsealed = Arc::clone(&pool.unsealed);
        drop(pool);

        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let pending = || sealed.0.lock().unwrap().len() < 5 || unsealed.load(Ordering::Acquire) > 0;
        while pending() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let dirs = sealed.0.lock().unwrap().clone();
        assert_eq!(dirs.len(), 5, "{dirs:?}");
        assert_eq!(unsealed.load(Ordering::Acquire), 0);
        for dir in &dirs {
            let metadata = read_metadata(dir).unwrap();
            assert_eq!(metadata.status, CallStatus::Sealed);
            assert!(metadata.duration_ms.is_some_and(|ms| ms >= 500), "{metadata:?}");
            let timeline = read_timeline(dir).unwrap();
            let reason = match &timeline.last().unwrap().event {
                crate::archive::TimelineEvent::CallEnded { reason } => reason.clone(),
                other => panic!("{other:?}"),
            };
            let expected = if metadata.call_sid == "CA4" { "tap closed" } else { "stopped" };
            assert_eq!(reason, expected);
        }
    }
}
