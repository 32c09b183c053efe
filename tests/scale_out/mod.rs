//! Archive workers scaling out, on any store: calls recorded by the real archive, queued in the store, and two
//! workers sharing the queue, one of which dies in the middle of a job.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use parley::archive::{Archive, ArchiveStore, SealedCalls};
use parley::call::tap::{TapEvent, TapFactory};
use parley::call::CallInfo;
use parley::transcribe::after_call::{outcome_call, work};
use parley::transcribe::{
    ArchiveReader, JobOutcome, Queue, Segment, TranscribeError, TranscriptionBackend, Worker, TRANSCRIPT_FILE,
};
use tokio::sync::{broadcast, Notify};
use tokio::time::Instant;

/// Hears "hello" on any leg with sound; counts what it was given.
pub struct Counting {
    legs: AtomicUsize,
    /// The leg (counting from 1) on which it hangs forever, as a worker killed mid-job would.
    hang_on: Option<usize>,
    hung: Arc<Notify>,
}

#[async_trait]
impl TranscriptionBackend for Counting {
    fn describe(&self) -> String {
        "counting".into()
    }

    async fn transcribe_leg(&self, pcm: Vec<i16>) -> Result<Vec<Segment>, TranscribeError> {
        let n = self.legs.fetch_add(1, Ordering::SeqCst) + 1;
        if self.hang_on == Some(n) {
            self.hung.notify_one();
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        Ok(if pcm.iter().any(|&s| s != 0) {
            vec![Segment { start: 0.0, end: 0.5, text: "hello".into() }]
        } else {
            Vec::new()
        })
    }
}

/// Queues each sealed call, as `parley serve` does.
struct Enqueue(Queue);

impl SealedCalls for Enqueue {
    fn sealed(&self, _store: &dyn ArchiveStore, key: &parley::archive::CallKey) {
        self.0.enqueue(key).expect("the call is queued");
    }
}

/// Records `calls` half-second calls through the archive into `store`, each queued as it is sealed.
pub async fn record_calls(store: Arc<dyn ArchiveStore>, calls: usize) {
    let queue = Queue::new(Arc::clone(&store), "parley-serve", Duration::from_secs(30));
    let archive = Archive::new(Arc::clone(&store), false).with_sealed_hook(Arc::new(Enqueue(queue)));
    let t0 = Instant::now();
    for n in 0..calls {
        let call = CallInfo { call_sid: format!("CA{n:04}"), stream_sid: format!("MZ{n}"), ..CallInfo::default() };
        let tap = archive.open(&call);
        for i in 1..=25u64 {
            let frame = Bytes::from(sim_caller::tone(300.0, 20, 8_000));
            tap.send(TapEvent::CallerAudio { at: t0 + Duration::from_millis(i * 20), frame });
        }
        tap.send(TapEvent::Ended { at: t0 + Duration::from_millis(520), reason: "Stopped".into() });
    }
    assert_eq!(archive.wait_sealed(Duration::from_secs(60)).await, 0, "every call is sealed");
}

/// Two workers share 20 queued calls; the first hangs in its second job and is killed there. Every call ends up
/// transcribed exactly once, the killed worker's job by the other worker once its claim expired.
pub async fn two_workers_share_the_queue(store: Arc<dyn ArchiveStore>) {
    const CALLS: usize = 20;
    record_calls(Arc::clone(&store), CALLS).await;
    let claim_for = Duration::from_millis(1_500);
    let reader = Arc::new(ArchiveReader::new(Arc::clone(&store)));
    let hung = Arc::new(Notify::new());
    let (outcomes, mut seen) = broadcast::channel(256);

    // The first worker hangs on the third leg it is given: the first leg of its second job.
    let first = Counting { legs: AtomicUsize::new(0), hang_on: Some(3), hung: Arc::clone(&hung) };
    let first = Worker::new(Queue::new(Arc::clone(&store), "worker-a", claim_for), Arc::new(first), reader.clone(), 1);
    let second = Counting { legs: AtomicUsize::new(0), hang_on: None, hung: Arc::new(Notify::new()) };
    let second = Arc::new(second);
    let second_worker =
        Worker::new(Queue::new(Arc::clone(&store), "worker-b", claim_for), second.clone(), reader.clone(), 1);
    let poll = Duration::from_millis(200);
    let a = tokio::spawn(work(first, Arc::new(Notify::new()), outcomes.clone(), poll));
    let b = tokio::spawn(work(second_worker, Arc::new(Notify::new()), outcomes.clone(), poll));

    tokio::time::timeout(Duration::from_secs(30), hung.notified()).await.expect("the first worker took a second job");
    a.abort(); // killed mid-job: its claim is no longer renewed
    let mut done: BTreeMap<String, usize> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    while done.len() < CALLS {
        let left = deadline.saturating_duration_since(Instant::now());
        let outcome = tokio::time::timeout(left, seen.recv()).await.expect("every call is transcribed in time");
        let outcome = outcome.expect("outcomes arrive");
        match outcome.as_ref() {
            JobOutcome::Done { .. } => *done.entry(outcome_call(&outcome).to_owned()).or_default() += 1,
            JobOutcome::Failed { call, error, .. } => panic!("{call} failed: {error}"),
        }
    }
    // Give a job done twice the time to show up.
    tokio::time::sleep(claim_for * 2).await;
    while let Ok(outcome) = seen.try_recv() {
        *done.entry(outcome_call(&outcome).to_owned()).or_default() += 1;
    }
    b.abort();
    assert_eq!(done.len(), CALLS, "{done:?}");
    assert!(done.values().all(|&n| n == 1), "a call was transcribed twice: {done:?}");
    let queue = Queue::new(Arc::clone(&store), "check", claim_for);
    assert_eq!(queue.depth().unwrap(), 0, "the queue is empty");
    for call in done.keys() {
        let key = parley::archive::CallKey::from_relative(std::path::Path::new(call)).expect("a key");
        let transcript: serde_json::Value =
            serde_json::from_slice(&store.get(&key, TRANSCRIPT_FILE).expect("a transcript")).unwrap();
        assert_eq!(transcript["caller"][0]["text"], "hello", "{call}");
    }
    // The second worker transcribed the 18 calls the first did not finish, two legs each, and nothing more.
    assert_eq!(second.legs.load(Ordering::SeqCst), 2 * (CALLS - 1), "legs the second worker transcribed");
}
