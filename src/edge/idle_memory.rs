//! Memory back to the system once no call is live, and the allocator set up to keep less of it (fewer arenas).
//!
//! A thousand calls leave the allocator with free memory spread over its arenas, which glibc keeps for reuse: after
//! the calls Parley's resident memory stays at the peak (measured: a 100-call soak ended 50 % above where it started).
//! A few seconds after the last call ends — its archive and provider sessions close just after it — Parley asks the
//! allocator to return what is free, and once more when the HTTP clients' idle connections have closed. Only then:
//! trimming walks every arena under its lock, which live calls would feel.

use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// When, after the last call ended, the free memory is returned (unless a call comes first): once the call's archive
/// and provider sessions have closed, and again once the HTTP clients' idle pooled connections have (reqwest keeps
/// one 90 s), which free their buffers after the first release.
const RELEASE_AFTER: [Duration; 2] = [Duration::from_secs(5), Duration::from_secs(95)];

/// Watches the live-call count and returns free memory after each busy period; ends with the registry.
pub(crate) fn spawn(active: watch::Receiver<usize>) -> JoinHandle<()> {
    tokio::spawn(run(active, &RELEASE_AFTER, release_free_memory))
}

async fn run(mut active: watch::Receiver<usize>, schedule: &'static [Duration], release: fn() -> bool) {
    loop {
        if active.wait_for(|calls| *calls > 0).await.is_err() || active.wait_for(|calls| *calls == 0).await.is_err() {
            return;
        }
        let idle_since = Instant::now();
        for after in schedule {
            let call_came = tokio::select! {
                () = tokio::time::sleep_until(idle_since + *after) => false,
                came = active.wait_for(|calls| *calls > 0) => match came {
                    Ok(_) => true,
                    Err(_) => return,
                },
            };
            if call_came {
                break;
            }
            let released = tokio::task::spawn_blocking(release).await.unwrap_or(false);
            tracing::debug!(
                released,
                idle_secs = after.as_secs(),
                "no call is live: returned the allocator's free memory"
            );
        }
    }
}

/// Arenas glibc's allocator may create. Its default, eight per core, gives every thread that allocates (the runtime's
/// workers, the recorder, blocking tasks) an arena of its own, and each keeps pages that a few long-lived blocks pin
/// after the calls are gone; two arenas leave fewer such pages (a 100-call, 60 s soak: 8.9 % above the start after
/// idle with the default, 6.7 % with two) at no measured cost in CPU on two cores.
const ALLOCATOR_ARENAS: i32 = 2;

/// Caps the allocator's arenas ([`ALLOCATOR_ARENAS`]); call before any thread starts (the binary does, before its
/// runtime). Returns whether the allocator took it.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn limit_allocator_arenas() -> bool {
    // SAFETY: mallopt only changes the allocator's tuning; it takes the allocator's lock and touches no memory in use.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, ALLOCATOR_ARENAS) == 1 }
}

/// Caps the allocator's arenas: nothing to do on an allocator other than glibc's.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn limit_allocator_arenas() -> bool {
    false
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

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn the_allocator_takes_the_arena_cap() {
        assert!(limit_allocator_arenas(), "mallopt refused M_ARENA_MAX");
        // Threads started after the cap still allocate and free as before.
        let sums: Vec<usize> = (0..4)
            .map(|n| std::thread::spawn(move || (0..1_000).map(|i| vec![n as u8; 64 + i].len()).sum::<usize>()))
            .map(|thread| thread.join().unwrap())
            .collect();
        assert!(sums.iter().all(|&sum| sum == sums[0]) && sums[0] > 0, "{sums:?}");
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
    async fn it_releases_on_its_schedule_once_the_calls_are_gone_and_stops_with_the_registry() {
        let settle = RELEASE_AFTER[0];
        let (calls, active) = watch::channel(0usize);
        let task = tokio::spawn(run(active, &RELEASE_AFTER, count_release));
        tokio::time::sleep(settle * 2).await;
        assert_eq!(releases(), 0, "no call has been live yet");
        calls.send_replace(3);
        tokio::time::sleep(settle * 2).await;
        assert_eq!(releases(), 0, "calls are live");
        calls.send_replace(0);
        tokio::time::sleep(settle / 2).await;
        calls.send_replace(1); // a new call within the settling time: nothing is released
        tokio::time::sleep(settle * 2).await;
        assert_eq!(releases(), 0);
        calls.send_replace(0);
        tokio::time::sleep(settle * 2).await;
        assert_eq!(releases(), 1, "released once after the last call");
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(releases(), 1, "and not again before the idle connections have closed");
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert_eq!(releases(), 2, "again once they have");
        tokio::time::sleep(Duration::from_secs(600)).await;
        assert_eq!(releases(), 2, "and then not while idle");
        // A new busy period starts the schedule again; a call within it stops it.
        calls.send_replace(1);
        tokio::time::sleep(settle).await;
        calls.send_replace(0);
        tokio::time::sleep(settle * 2).await;
        assert_eq!(releases(), 3);
        calls.send_replace(2);
        tokio::time::sleep(Duration::from_secs(200)).await;
        assert_eq!(releases(), 3, "no release while a call is live");
        drop(calls);
        tokio::time::timeout(Duration::from_secs(1), task).await.expect("the watcher ended").expect("no panic");
    }
}
