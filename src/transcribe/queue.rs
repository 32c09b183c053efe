//! The durable after-call queue, kept in the archive's store beside the calls (files under the archive folder, or
//! objects in the bucket), so that any number of archive workers on any machines share it.
//!
//! Records, under `.queue/`:
//!
//! ```text
//! jobs/<job>.json            a call waiting: {call, enqueued_at_ms, attempts, last_error}
//! claims/<job>/<attempt>     who works on it: {worker, until_ms}, renewed while the work goes on
//! failed/<job>.json          a job set aside after MAX_ATTEMPTS failures, with its last error
//! ```
//!
//! A worker takes a job by creating the claim of the next attempt, which the store creates for one writer only
//! ([`ArchiveStore::create_record`]) and which is only tried when the newest claim has expired or there is none. The
//! worker renews its claim while it works; a worker that dies stops renewing, its claim expires, and another worker
//! claims the next attempt. A worker writes its result only while it still holds the newest claim, and the job is
//! removed only after the result is written: no job is done twice, none is lost.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::TranscribeError;
use crate::archive::lease::millis_since_epoch;
use crate::archive::{ArchiveStore, CallKey};

/// Tries before a job is set aside in `failed/`.
pub const MAX_ATTEMPTS: u32 = 3;
/// The queue's folder in the store (hidden, so it is not mistaken for a year folder).
pub const QUEUE_FOLDER: &str = ".queue";
/// How long a claim holds without renewal; renewed every third of it.
pub const CLAIM_FOR: Duration = Duration::from_secs(30);

/// One queued call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// The call's key in the archive (`2026/11/25/CA…`).
    pub call: String,
    pub enqueued_at_ms: u64,
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

impl Job {
    /// The call it is about.
    pub fn key(&self) -> Option<CallKey> {
        CallKey::from_relative(std::path::Path::new(&self.call))
    }
}

/// A job with its name in the queue.
#[derive(Debug, Clone, PartialEq)]
pub struct QueuedJob {
    pub name: String,
    pub job: Job,
}

/// A worker's hold on one attempt at a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    job: String,
    attempt: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ClaimRecord {
    worker: String,
    until_ms: u64,
}

/// The queue in a store, as seen by one worker.
#[derive(Clone)]
pub struct Queue {
    store: Arc<dyn ArchiveStore>,
    worker: String,
    claim_for: Duration,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue").field("worker", &self.worker).finish_non_exhaustive()
    }
}

/// A job's name: the call's key with its separators replaced.
fn job_name(key: &CallKey) -> String {
    key.to_string().replace('/', "_")
}

fn jobs() -> String {
    format!("{QUEUE_FOLDER}/jobs")
}

fn job_path(name: &str) -> String {
    format!("{QUEUE_FOLDER}/jobs/{name}.json")
}

fn claims(name: &str) -> String {
    format!("{QUEUE_FOLDER}/claims/{name}")
}

fn failed_path(name: &str) -> String {
    format!("{QUEUE_FOLDER}/failed/{name}.json")
}

impl Queue {
    /// The queue in `store`, for the worker named `worker`, whose claims last `claim_for` without renewal.
    pub fn new(store: Arc<dyn ArchiveStore>, worker: impl Into<String>, claim_for: Duration) -> Queue {
        Queue { store, worker: worker.into(), claim_for }
    }

    pub fn store(&self) -> &Arc<dyn ArchiveStore> {
        &self.store
    }

    pub fn worker(&self) -> &str {
        &self.worker
    }

    /// How often a claim is renewed while its job runs.
    pub fn renew_every(&self) -> Duration {
        self.claim_for / 3
    }

    /// Adds a call unless it is already queued; returns whether it was added.
    pub fn enqueue(&self, key: &CallKey) -> Result<bool, TranscribeError> {
        let job = Job { call: key.to_string(), enqueued_at_ms: now_ms(), attempts: 0, last_error: None };
        Ok(self.store.create_record(&job_path(&job_name(key)), &to_json(&job)?)?)
    }

    /// Every queued job, oldest first (claimed or not).
    pub fn pending(&self) -> Result<Vec<QueuedJob>, TranscribeError> {
        let mut found = Vec::new();
        for file in self.store.list_records(&jobs())? {
            let Some(name) = file.strip_suffix(".json") else { continue };
            match self.read_job(name) {
                Ok(Some(job)) => found.push(QueuedJob { name: name.to_owned(), job }),
                Ok(None) => {} // finished meanwhile
                Err(err) => tracing::warn!(%err, job = name, "skipping an unreadable transcription job"),
            }
        }
        found.sort_by(|a, b| a.job.enqueued_at_ms.cmp(&b.job.enqueued_at_ms).then_with(|| a.name.cmp(&b.name)));
        Ok(found)
    }

    /// Jobs waiting or running: what the archive workers are scaled on.
    pub fn depth(&self) -> Result<usize, TranscribeError> {
        Ok(self.store.list_records(&jobs())?.iter().filter(|f| f.ends_with(".json")).count())
    }

    /// Jobs set aside after failing [`MAX_ATTEMPTS`] times.
    pub fn failed(&self) -> Result<Vec<Job>, TranscribeError> {
        let mut failed = Vec::new();
        for file in self.store.list_records(&format!("{QUEUE_FOLDER}/failed"))? {
            if let Some(bytes) = self.store.get_record(&format!("{QUEUE_FOLDER}/failed/{file}"))? {
                failed.push(from_json(&bytes, &file)?);
            }
        }
        Ok(failed)
    }

    /// Takes the job for this worker: `None` when another worker holds a live claim on it, won the race for the
    /// next one, or finished it meanwhile.
    pub fn claim(&self, job: &QueuedJob) -> Result<Option<Claim>, TranscribeError> {
        let folder = claims(&job.name);
        let attempts = self.store.list_records(&folder)?;
        let latest = attempts.iter().filter_map(|a| a.parse::<u64>().ok()).max();
        if let Some(latest) = latest {
            if let Some(bytes) = self.store.get_record(&format!("{folder}/{latest:010}"))? {
                let record: ClaimRecord = from_json(&bytes, &job.name)?;
                if record.until_ms >= now_ms() {
                    return Ok(None);
                }
                tracing::info!(job = %job.name, worker = %record.worker, "taking over a job whose claim expired");
            }
        }
        let claim = Claim { job: job.name.clone(), attempt: latest.map_or(1, |n| n + 1) };
        if !self.store.create_record(&self.claim_path(&claim), &self.claim_record()?)? {
            return Ok(None);
        }
        // Finished by another worker between the listing and the claim: nothing to do.
        if self.read_job(&job.name)?.is_none() {
            self.store.delete_record(&self.claim_path(&claim))?;
            return Ok(None);
        }
        Ok(Some(claim))
    }

    /// Extends the claim by the claim period from now.
    pub fn renew(&self, claim: &Claim) -> Result<(), TranscribeError> {
        Ok(self.store.put_record(&self.claim_path(claim), &self.claim_record()?)?)
    }

    /// Whether the claim is still the newest on its job, and this worker's: a worker that stalled past its claim
    /// and was taken over must not write its result.
    pub fn holds(&self, claim: &Claim) -> Result<bool, TranscribeError> {
        let attempts = self.store.list_records(&claims(&claim.job))?;
        let newest = attempts.iter().filter_map(|a| a.parse::<u64>().ok()).max();
        if newest != Some(claim.attempt) {
            return Ok(false);
        }
        let Some(bytes) = self.store.get_record(&self.claim_path(claim))? else { return Ok(false) };
        let record: ClaimRecord = from_json(&bytes, &claim.job)?;
        Ok(record.worker == self.worker)
    }

    /// The job is done: forget it (the job first, so no one claims it again, then its claims).
    pub fn complete(&self, claim: &Claim) -> Result<(), TranscribeError> {
        self.store.delete_record(&job_path(&claim.job))?;
        self.forget_claims(&claim.job)
    }

    /// The job failed: count the attempt and let it be tried again, or set it aside after [`MAX_ATTEMPTS`]; returns
    /// whether it was set aside.
    pub fn fail(&self, claim: &Claim, job: &QueuedJob, error: &str) -> Result<bool, TranscribeError> {
        let mut updated = job.job.clone();
        updated.attempts += 1;
        updated.last_error = Some(error.to_owned());
        let gave_up = updated.attempts >= MAX_ATTEMPTS;
        if gave_up {
            self.store.put_record(&failed_path(&claim.job), &to_json(&updated)?)?;
            self.store.delete_record(&job_path(&claim.job))?;
        } else {
            self.store.put_record(&job_path(&claim.job), &to_json(&updated)?)?;
        }
        self.forget_claims(&claim.job)?;
        Ok(gave_up)
    }

    fn forget_claims(&self, job: &str) -> Result<(), TranscribeError> {
        let folder = claims(job);
        for attempt in self.store.list_records(&folder)? {
            self.store.delete_record(&format!("{folder}/{attempt}"))?;
        }
        Ok(())
    }

    fn read_job(&self, name: &str) -> Result<Option<Job>, TranscribeError> {
        match self.store.get_record(&job_path(name))? {
            Some(bytes) => Ok(Some(from_json(&bytes, name)?)),
            None => Ok(None),
        }
    }

    fn claim_path(&self, claim: &Claim) -> String {
        format!("{}/{:010}", claims(&claim.job), claim.attempt)
    }

    fn claim_record(&self) -> Result<Vec<u8>, TranscribeError> {
        let until_ms = now_ms() + self.claim_for.as_millis() as u64;
        to_json(&ClaimRecord { worker: self.worker.clone(), until_ms })
    }
}

fn now_ms() -> u64 {
    millis_since_epoch(SystemTime::now())
}

fn to_json<T: Serialize>(value: &T) -> Result<Vec<u8>, TranscribeError> {
    serde_json::to_vec_pretty(value).map_err(|e| TranscribeError::Json { path: QUEUE_FOLDER.into(), source: e })
}

fn from_json<T: for<'de> Deserialize<'de>>(bytes: &[u8], name: &str) -> Result<T, TranscribeError> {
    serde_json::from_slice(bytes)
        .map_err(|e| TranscribeError::Json { path: std::path::Path::new(QUEUE_FOLDER).join(name), source: e })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::LocalStore;

    fn key(sid: &str) -> CallKey {
        CallKey::new(sid, std::time::UNIX_EPOCH)
    }

    #[test]
    fn one_worker_holds_a_job_until_its_claim_expires() {
        let root = tempfile::tempdir().unwrap();
        let store: Arc<dyn ArchiveStore> = Arc::new(LocalStore::new(root.path()).unwrap());
        let first = Queue::new(Arc::clone(&store), "first", Duration::from_millis(300));
        let second = Queue::new(Arc::clone(&store), "second", Duration::from_millis(300));
        assert!(first.enqueue(&key("CA1")).unwrap());
        assert!(!second.enqueue(&key("CA1")).unwrap(), "a call is queued once");
        let job = first.pending().unwrap().remove(0);
        assert_eq!(job.job.key(), Some(key("CA1")));

        let claim = first.claim(&job).unwrap().expect("the first worker takes it");
        assert_eq!(second.claim(&job).unwrap(), None, "a live claim keeps others off");
        std::thread::sleep(Duration::from_millis(200));
        first.renew(&claim).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(second.claim(&job).unwrap(), None, "a renewed claim still holds");

        // The first worker stops renewing (it died): the second takes over, and the first may not finish.
        std::thread::sleep(Duration::from_millis(400));
        let taken = second.claim(&job).unwrap().expect("an expired claim is taken over");
        assert!(!first.holds(&claim).unwrap());
        assert!(second.holds(&taken).unwrap());
        second.complete(&taken).unwrap();
        assert!(first.pending().unwrap().is_empty());
        assert_eq!(first.claim(&job).unwrap(), None, "a finished job is not claimed again");
    }

    #[test]
    fn failures_are_counted_and_set_aside() {
        let root = tempfile::tempdir().unwrap();
        let store: Arc<dyn ArchiveStore> = Arc::new(LocalStore::new(root.path()).unwrap());
        let queue = Queue::new(store, "w", CLAIM_FOR);
        queue.enqueue(&key("CA1")).unwrap();
        for attempt in 1..=MAX_ATTEMPTS {
            let job = queue.pending().unwrap().remove(0);
            assert_eq!(job.job.attempts, attempt - 1);
            let claim = queue.claim(&job).unwrap().expect("free again after a failure");
            assert_eq!(queue.fail(&claim, &job, "boom").unwrap(), attempt == MAX_ATTEMPTS);
        }
        assert_eq!(queue.depth().unwrap(), 0);
        let failed = queue.failed().unwrap();
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].last_error.as_deref(), Some("boom"));
    }
}
