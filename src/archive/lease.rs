//! Call ownership: several Parley instances may share one archive, so each open call names the instance recording it
//! and a lease that instance keeps renewing. A call is only ever sealed by someone else once its lease has lapsed —
//! the instance that held it is gone — never while it is live on another instance.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::meta::Owner;

/// This instance's name in the archive and how long its claims on calls last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ownership {
    instance: Arc<str>,
    lease: Duration,
}

impl Ownership {
    /// `instance` names this process in every call it records; `lease` is how long after its last renewal a call
    /// counts as abandoned. The lease is renewed every third of it, so two renewals can fail before it lapses.
    pub fn new(instance: impl Into<Arc<str>>, lease: Duration) -> Ownership {
        Ownership { instance: instance.into(), lease: lease.max(Duration::from_secs(1)) }
    }

    /// An instance name unique to this process: host (the pod's name on Kubernetes), process id and start time, so
    /// a pod restarted under the same name is still a different owner.
    pub fn for_this_process(lease: Duration) -> Ownership {
        let started = millis_since_epoch(SystemTime::now());
        let name = format!("{}-{}-{started:x}", crate::telemetry::config::host_name(), std::process::id());
        Ownership::new(name, lease)
    }

    pub fn instance(&self) -> &str {
        &self.instance
    }

    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// How often a live call's lease is written again.
    pub(crate) fn renew_every(&self) -> Duration {
        self.lease / 3
    }

    /// The claim to write into a call's metadata at `now`.
    pub(crate) fn claim(&self, now: SystemTime) -> Owner {
        Owner {
            instance: self.instance.to_string(),
            lease_until_ms: millis_since_epoch(now) + self.lease.as_millis() as u64,
        }
    }
}

pub(crate) fn millis_since_epoch(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::{CallMetadata, CallStatus};

    #[test]
    fn a_call_is_abandoned_only_once_its_lease_has_lapsed() {
        let ownership = Ownership::new("a", Duration::from_secs(6));
        let now = UNIX_EPOCH + Duration::from_secs(1_000);
        let mut metadata = CallMetadata {
            call_sid: "CA1".into(),
            stream_sid: "MZ1".into(),
            from: None,
            to: None,
            started_at_ms: 0,
            ended_at_ms: None,
            duration_ms: None,
            status: CallStatus::Open,
            ended_by: None,
            turns: 0,
            cost: None,
            owner: Some(ownership.claim(now)),
        };
        assert_eq!(ownership.renew_every(), Duration::from_secs(2));
        assert!(!metadata.abandoned(1_000_000));
        assert!(!metadata.abandoned(1_006_000), "the lease holds to its last millisecond");
        assert!(metadata.abandoned(1_006_001));
        metadata.status = CallStatus::Sealed;
        assert!(!metadata.abandoned(2_000_000), "a sealed call is nobody's to seal");
        metadata.status = CallStatus::Open;
        metadata.owner = None;
        assert!(metadata.abandoned(0), "an open call without an owner predates leases");
        let other = Ownership::for_this_process(Duration::from_secs(6));
        assert_ne!(other.instance(), "a");
    }
}
