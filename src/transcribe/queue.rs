//! The durable job queue: one small JSON file per call waiting to be transcribed, in a folder under the archive root.
//!
//! Files survive a crash or restart, so a call enqueued and not yet finished is picked up by the next worker; a job
//! is removed only after its `transcript.json` has been written. Every write goes through a temporary file and a
//! rename, so a crash never leaves a half-written job. A job that keeps failing is moved to `failed/` after
//! [`MAX_ATTEMPTS`] tries, with its last error, instead of blocking the queue forever.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::TranscribeError;

/// Tries before a job is set aside in `failed/`.
pub const MAX_ATTEMPTS: u32 = 3;

/// One queued call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// The call's archive folder.
    pub call_dir: PathBuf,
    pub enqueued_at_ms: u64,
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// A job with the file that holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct QueuedJob {
    pub file: PathBuf,
    pub job: Job,
}

/// The queue folder.
#[derive(Debug, Clone)]
pub struct Queue {
    dir: PathBuf,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// A file name unique to the call folder: its path with separators replaced.
fn job_name(call_dir: &Path) -> String {
    let flat: String = call_dir
        .to_string_lossy()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' })
        .collect();
    format!("{}.json", flat.trim_matches('_'))
}

impl Queue {
    /// Opens (creating) the queue in `dir`.
    pub fn open(dir: &Path) -> Result<Queue, TranscribeError> {
        std::fs::create_dir_all(dir.join("failed")).map_err(TranscribeError::io(dir))?;
        Ok(Queue { dir: dir.to_owned() })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Adds a call unless it is already queued; returns whether it was added.
    pub fn enqueue(&self, call_dir: &Path) -> Result<bool, TranscribeError> {
        let file = self.dir.join(job_name(call_dir));
        if file.exists() {
            return Ok(false);
        }
        let job = Job { call_dir: call_dir.to_owned(), enqueued_at_ms: now_ms(), attempts: 0, last_error: None };
        write_json(&file, &job)?;
        Ok(true)
    }

    /// Every queued job, oldest first.
    pub fn pending(&self) -> Result<Vec<QueuedJob>, TranscribeError> {
        let mut jobs = Vec::new();
        for entry in std::fs::read_dir(&self.dir).map_err(TranscribeError::io(&self.dir))? {
            let path = entry.map_err(TranscribeError::io(&self.dir))?.path();
            if path.extension().is_none_or(|e| e != "json") || !path.is_file() {
                continue;
            }
            match read_json::<Job>(&path) {
                Ok(job) => jobs.push(QueuedJob { file: path, job }),
                Err(err) => tracing::warn!(%err, "skipping an unreadable transcription job"),
            }
        }
        jobs.sort_by(|a, b| a.job.enqueued_at_ms.cmp(&b.job.enqueued_at_ms).then_with(|| a.file.cmp(&b.file)));
        Ok(jobs)
    }

    /// The job is done: forget it.
    pub fn complete(&self, job: &QueuedJob) -> Result<(), TranscribeError> {
        match std::fs::remove_file(&job.file) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(TranscribeError::Io { path: job.file.clone(), source: e })
            }
            _ => Ok(()),
        }
    }

    /// The job failed: count the attempt, and set it aside after [`MAX_ATTEMPTS`]; returns whether it was set aside.
    pub fn fail(&self, job: &QueuedJob, error: &str) -> Result<bool, TranscribeError> {
        let mut updated = job.job.clone();
        updated.attempts += 1;
        updated.last_error = Some(error.to_owned());
        if updated.attempts >= MAX_ATTEMPTS {
            let name = job.file.file_name().map(PathBuf::from).unwrap_or_else(|| PathBuf::from("job.json"));
            write_json(&self.dir.join("failed").join(name), &updated)?;
            self.complete(job)?;
            return Ok(true);
        }
        write_json(&job.file, &updated)?;
        Ok(false)
    }
}

/// Writes JSON through a temporary file and a rename, so readers see the old or the new file, never a torn one.
pub(crate) fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), TranscribeError> {
    let json =
        serde_json::to_vec_pretty(value).map_err(|e| TranscribeError::Json { path: path.to_owned(), source: e })?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, json).map_err(TranscribeError::io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(TranscribeError::io(path))
}

pub(crate) fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, TranscribeError> {
    let bytes = std::fs::read(path).map_err(TranscribeError::io(path))?;
    serde_json::from_slice(&bytes).map_err(|e| TranscribeError::Json { path: path.to_owned(), source: e })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_persist_count_attempts_and_are_set_aside() {
        let root = tempfile::tempdir().unwrap();
        let queue = Queue::open(&root.path().join("q")).unwrap();
        assert!(queue.enqueue(Path::new("/archive/2026/01/02/CA1")).unwrap());
        assert!(!queue.enqueue(Path::new("/archive/2026/01/02/CA1")).unwrap());
        assert!(queue.enqueue(Path::new("/archive/2026/01/02/CA2")).unwrap());

        // A new handle on the same folder sees the same jobs.
        let reopened = Queue::open(&root.path().join("q")).unwrap();
        let jobs = reopened.pending().unwrap();
        assert_eq!(jobs.len(), 2);
        let first = &jobs[0];
        assert!(!reopened.fail(first, "boom").unwrap());
        let again = reopened.pending().unwrap();
        let retried = again.iter().find(|j| j.file == first.file).unwrap();
        assert_eq!(retried.job.attempts, 1);
        assert!(!reopened.fail(retried, "boom").unwrap());
        let retried = reopened.pending().unwrap().into_iter().find(|j| j.file == first.file).unwrap();
        assert!(reopened.fail(&retried, "boom").unwrap());
        assert_eq!(reopened.pending().unwrap().len(), 1);
        assert_eq!(std::fs::read_dir(root.path().join("q/failed")).unwrap().count(), 1);

        let last = reopened.pending().unwrap().remove(0);
        reopened.complete(&last).unwrap();
        assert!(reopened.pending().unwrap().is_empty());
    }
}
