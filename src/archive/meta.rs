//! `metadata.json`: what a call was, and whether its files are complete ("sealed") or still being written ("open").

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{ArchiveError, ArchiveStore, CallKey, METADATA_FILE};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallStatus {
    /// The call is live, or Parley stopped before it could seal it.
    Open,
    /// The files are complete.
    Sealed,
}

/// The content of `metadata.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallMetadata {
    pub call_sid: String,
    pub stream_sid: String,
    /// Caller number; redacted when `twilio.redact_numbers` is on.
    pub from: Option<String>,
    /// Called number; redacted likewise.
    pub to: Option<String>,
    /// Wall-clock start, milliseconds since the Unix epoch.
    pub started_at_ms: u64,
    pub ended_at_ms: Option<u64>,
    pub duration_ms: Option<u64>,
    pub status: CallStatus,
    /// Why the call ended: the edge's reason (`Stopped`, `HungUp`…) or `recovered` when start-up sealed it.
    pub ended_by: Option<String>,
    /// Caller turns the agent answered. While the call is open this is as of the recorder's last lease renewal (a
    /// third of `archive.lease_secs`); sealed, it is the call's count.
    pub turns: u64,
    /// The instance recording the call and how long its claim lasts; absent in archives written before calls had
    /// owners (such an open call counts as abandoned).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<Owner>,
    /// What the call used and cost by stage, when `[cost]` has prices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<crate::cost::CallCost>,
}

/// Which Parley instance records an open call, and until when its lease holds. The recorder renews the lease while
/// the call lives; once it has lapsed the instance is taken to be gone and any instance may seal the call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    pub instance: String,
    /// Wall clock, milliseconds since the Unix epoch.
    pub lease_until_ms: u64,
}

impl CallMetadata {
    /// Open, and nobody holds it at `now_ms`: the instance that recorded it stopped without sealing it.
    pub fn abandoned(&self, now_ms: u64) -> bool {
        self.status == CallStatus::Open && self.owner.as_ref().is_none_or(|owner| owner.lease_until_ms < now_ms)
    }
}

impl CallMetadata {
    pub(crate) fn to_json(&self) -> Vec<u8> {
        let mut bytes = serde_json::to_vec_pretty(self).unwrap_or_default();
        bytes.push(b'\n');
        bytes
    }
}

pub(crate) fn read(store: &dyn ArchiveStore, key: &CallKey) -> Result<CallMetadata, ArchiveError> {
    let bytes = store.get(key, METADATA_FILE)?;
    serde_json::from_slice(&bytes).map_err(|source| ArchiveError::Json { path: key.relative_path(), source })
}

pub(crate) fn read_file(path: &Path) -> Result<CallMetadata, ArchiveError> {
    let bytes = std::fs::read(path).map_err(ArchiveError::io(path))?;
    serde_json::from_slice(&bytes).map_err(|source| ArchiveError::Json { path: path.to_owned(), source })
}
