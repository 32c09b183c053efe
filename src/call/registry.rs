//! The registry of live calls: admission against the concurrency cap, draining on shutdown, and closing every call
//! when the grace period runs out.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Why a new call was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("Parley is shutting down and takes no new calls")]
    Draining,
    #[error("the concurrent-call cap of {0} is reached")]
    AtCapacity(usize),
}

/// A live call as the registry lists it.
#[derive(Debug, Clone)]
pub struct CallEntry {
    pub call_sid: Option<String>,
    pub stream_sid: Option<String>,
    pub admitted_at: Instant,
}

/// Live calls, shared by the HTTP handlers and the shutdown sequence.
pub struct CallRegistry {
    max_calls: usize,
    draining: AtomicBool,
    next_id: AtomicU64,
    calls: Mutex<HashMap<u64, CallEntry>>,
    active: watch::Sender<usize>,
    close_all: CancellationToken,
}

impl CallRegistry {
    pub fn new(max_calls: usize) -> Arc<Self> {
        Arc::new(CallRegistry {
            max_calls,
            draining: AtomicBool::new(false),
            next_id: AtomicU64::new(1),
            calls: Mutex::new(HashMap::new()),
            active: watch::channel(0).0,
            close_all: CancellationToken::new(),
        })
    }

    /// Takes a slot for a new call, or says why not. The slot is freed when the permit drops.
    pub fn admit(self: &Arc<Self>) -> Result<CallPermit, Refusal> {
        if self.is_draining() {
            return Err(Refusal::Draining);
        }
        let mut calls = self.lock();
        if calls.len() >= self.max_calls {
            return Err(Refusal::AtCapacity(self.max_calls));
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        calls.insert(id, CallEntry { call_sid: None, stream_sid: None, admitted_at: Instant::now() });
        self.active.send_replace(calls.len());
        Ok(CallPermit { id, registry: Arc::clone(self), close: self.close_all.child_token() })
    }

    /// Whether a new call would be admitted now.
    pub fn has_capacity(&self) -> bool {
        !self.is_draining() && self.active() < self.max_calls
    }

    pub fn active(&self) -> usize {
        *self.active.borrow()
    }

    /// The number of live calls, as it changes.
    pub fn watch_active(&self) -> watch::Receiver<usize> {
        self.active.subscribe()
    }

    pub fn max_calls(&self) -> usize {
        self.max_calls
    }

    pub fn calls(&self) -> Vec<CallEntry> {
        self.lock().values().cloned().collect()
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Stops admitting calls; live calls go on.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// Waits until no call is live, up to `grace`. Returns whether every call ended on its own.
    pub async fn wait_idle(&self, grace: Duration) -> bool {
        let mut active = self.active.subscribe();
        let idle = tokio::time::timeout(grace, active.wait_for(|n| *n == 0)).await;
        matches!(idle, Ok(Ok(_)))
    }

    /// Tells every live call to close now.
    pub fn close_all(&self) {
        self.close_all.cancel();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, CallEntry>> {
        // A panic while holding this lock cannot leave the map inconsistent (single inserts/removes).
        self.calls.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A live call's slot in the registry.
pub struct CallPermit {
    id: u64,
    registry: Arc<CallRegistry>,
    close: CancellationToken,
}

impl CallPermit {
    /// Records the SIDs once Twilio's `start` arrived.
    pub fn identify(&self, call_sid: &str, stream_sid: &str) {
        if let Some(entry) = self.registry.lock().get_mut(&self.id) {
            entry.call_sid = Some(call_sid.to_owned());
            entry.stream_sid = Some(stream_sid.to_owned());
        }
    }

    /// Cancelled when the server wants this call closed (grace period over).
    pub fn close_requested(&self) -> CancellationToken {
        self.close.clone()
    }
}

impl Drop for CallPermit {
    fn drop(&mut self) {
        let mut calls = self.registry.lock();
        calls.remove(&self.id);
        self.registry.active.send_replace(calls.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn cap_and_release() {
        let registry = CallRegistry::new(2);
        let a = registry.admit().unwrap();
        let _b = registry.admit().unwrap();
        assert_eq!(registry.admit().err(), Some(Refusal::AtCapacity(2)));
        assert!(!registry.has_capacity());
        drop(a);
        assert_eq!(registry.active(), 1);
        assert!(registry.admit().is_ok());
    }

    #[tokio::test]
    async fn draining_refuses_and_waits() {
        let registry = CallRegistry::new(5);
        let permit = registry.admit().unwrap();
        permit.identify("CA1", "MZ1");
        assert_eq!(registry.calls()[0].call_sid.as_deref(), Some("CA1"));
        registry.start_draining();
        assert_eq!(registry.admit().err(), Some(Refusal::Draining));
        assert!(!registry.wait_idle(Duration::from_millis(20)).await);
        let close = permit.close_requested();
        registry.close_all();
        assert!(close.is_cancelled());
        drop(permit);
        assert!(registry.wait_idle(Duration::from_millis(20)).await);
    }
}
