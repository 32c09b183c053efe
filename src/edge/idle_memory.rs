//! Memory back to the system once no call is live.
//!
//! A thousand calls leave the allocator with free memory spread over its arenas, which glibc keeps for reuse: after
//! the calls Parley's resident memory stays at the peak (measured: a 100-call soak ended 50 % above where it started).
//! A few seconds after the last call ends — its archive and provider sessions close just after it — Parley asks the
//! allocator to return what is free. Only then: trimming walks every arena under its lock, which live calls would
//! feel.

use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How long Parley must stay without calls before the free memory is returned.
const SETTLE: Duration = Duration::from_secs(5);

/// Watches the live-call count and returns free memory after each busy period; ends with the registry.
pub(crate) fn spawn(active: watch::Receiver<usize>) -> JoinHandle<()> {
    tokio::spawn(run(active, SETTLE, release_free_memory))
}

async fn run(mut active: watch::Receiver<usize>, settle: Duration, release: fn() -> bool) {
    loop {
        if active.wait_for(|calls| *calls > 0).await.is_err() || active.wait_for(|calls| *calls == 0).await.is_err() {
            return;
        }
        tokio::time::sleep(settle).await;
        if *active.borrow() == 0 {
            let released = tokio::task::spawn_blocking(release).await.unwrap_or(false);
            tracing::debug!(released, "no call is live: returned the allocator's free memory");
        }
    }
}

/// Returns the allocator's free memory to the system; whether any was.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn release_free_memory() -> bool {
    // SAFETY: malloc_trim only releases memory the allocator holds free; it takes the allocator's own locks and
    // touches no memory in use.
    unsafe { libc::malloc_trim(0) == 1 }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn release_free_memory() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Resident memory of this process, in KiB, from /proc.
    fn resident_kib() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").expect("status");
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse().ok())
            .expect("VmRSS")
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn free_memory_goes_back_to_the_system() {
        // Many small blocks (below the mmap threshold, so they live in the heap), all but the last freed: glibc keeps
        // the freed memory, since the last block pins the top of the heap.
        let blocks: Vec<Vec<u8>> = (0..40_000).map(|i| vec![(i % 251) as u8; 1_000]).collect();
        let pin = vec![7u8; 1_000];
        drop(blocks);
        let before = resident_kib();
        assert!(release_free_memory(), "nothing was returned");
        let after = resident_kib();
        assert!(after + 10_000 < before, "resident {before} KiB before the trim, {after} KiB after");
        assert_eq!(pin[999], 7);
    }

    static RELEASES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

    fn count_release() -> bool {
        RELEASES.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        true
    }

    fn releases() -> usize {
        RELEASES.load(std::sync::atomic::Ordering::SeqCst)
    }

    #[tokio::test(start_paused = true)]
    async fn it_releases_once_the_calls_have_been_gone_a_while_and_stops_with_the_registry() {
        let (calls, active) = watch::channel(0usize);
        let task = tokio::spawn(run(active, SETTLE, count_release));
        tokio::time::sleep(SETTLE * 2).await;
        assert_eq!(releases(), 0, "no call has been live yet");
        calls.send_replace(3);
        tokio::time::sleep(SETTLE * 2).await;
        assert_eq!(releases(), 0, "calls are live");
        calls.send_replace(0);
        tokio::time::sleep(SETTLE / 2).await;
        calls.send_replace(1); // a new call within the settling time: nothing is released
        tokio::time::sleep(SETTLE * 2).await;
        assert_eq!(releases(), 0);
        calls.send_replace(0);
        tokio::time::sleep(SETTLE * 2).await;
        assert_eq!(releases(), 1, "released once after the last call");
        tokio::time::sleep(SETTLE * 2).await;
        assert_eq!(releases(), 1, "and not again while idle");
        drop(calls);
        tokio::time::timeout(Duration::from_secs(1), task).await.expect("the watcher ended").expect("no panic");
    }
}
