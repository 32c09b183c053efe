//! Whether every call of a run was sealed in Parley's archive: the archive is a folder per call whose
//! `metadata.json` says `sealed` once the call's files are complete, with the time the call ended.

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use parley::archive::{list_calls, CallStatus, LocalStore};

/// What the archive holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SealCheck {
    /// Calls with readable metadata.
    pub archived: usize,
    /// Of those, sealed with an end time.
    pub sealed: usize,
    /// The call SIDs not sealed (open, or sealed without an end).
    pub unsealed: Vec<String>,
}

impl SealCheck {
    /// Every one of `expected` calls is archived and sealed.
    pub fn all_sealed(&self, expected: usize) -> bool {
        self.archived == expected && self.sealed == expected
    }
}

/// Reads the archive under `root` once.
pub fn check(root: &Path) -> anyhow::Result<SealCheck> {
    let store = LocalStore::new(root).with_context(|| format!("opening the archive {}", root.display()))?;
    let calls = list_calls(&store).context("listing the archive")?;
    let mut result = SealCheck { archived: calls.len(), ..SealCheck::default() };
    for (_, metadata) in calls {
        if metadata.status == CallStatus::Sealed && metadata.ended_at_ms.is_some() {
            result.sealed += 1;
        } else {
            result.unsealed.push(metadata.call_sid);
        }
    }
    Ok(result)
}

/// Reads the archive until `expected` calls are sealed or `patience` has passed (Parley seals a call shortly after
/// it ends); returns the last reading.
pub async fn wait_sealed(root: &Path, expected: usize, patience: Duration) -> anyhow::Result<SealCheck> {
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        let reading = check(root)?;
        if reading.all_sealed(expected) || tokio::time::Instant::now() >= deadline {
            return Ok(reading);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
