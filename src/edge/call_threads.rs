//! The threads that run the calls: a few single-threaded runtimes (one per core by default), each holding every task
//! of the calls given to it — the media socket, the engine, the provider sessions, the playout.
//!
//! A call's tasks wake each other several times per 20 ms frame. On one thread a wake is a push onto that thread's
//! own queue; on a shared worker pool the workers also notify, steal from and park on each other, a cost paid per
//! frame per call. A connection is handed to the thread running the fewest tasks when it is accepted, and stays
//! there. Work that is not a call's (the archive, the HTTP clients' pools, the MCP sessions) stays where it was
//! started; channels cross between runtimes freely.

use std::future::Future;
use std::num::NonZeroUsize;

use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The call threads of one server; they stop (and drop what they still run) when this is dropped.
pub(crate) struct CallThreads {
    threads: Vec<CallThread>,
}

struct CallThread {
    handle: Handle,
    /// Dropping it ends the thread's runtime.
    _stop: oneshot::Sender<()>,
}

impl CallThreads {
    /// Starts `count` threads, or one per core when `count` is 0.
    pub(crate) fn start(count: usize) -> std::io::Result<CallThreads> {
        let count = match count {
            0 => std::thread::available_parallelism().map_or(1, NonZeroUsize::get),
            n => n,
        };
        let threads = (0..count).map(CallThread::start).collect::<std::io::Result<Vec<_>>>()?;
        Ok(CallThreads { threads })
    }

    /// How many threads run calls.
    pub(crate) fn len(&self) -> usize {
        self.threads.len()
    }

    /// Runs `work` (a new connection and all it spawns) on the thread with the fewest live tasks.
    pub(crate) fn spawn<F>(&self, work: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let least_busy = self
            .threads
            .iter()
            .min_by_key(|thread| thread.handle.metrics().num_alive_tasks())
            .map(|thread| &thread.handle);
        match least_busy {
            Some(handle) => handle.spawn(work),
            None => tokio::spawn(work),
        }
    }
}

impl CallThread {
    fn start(n: usize) -> std::io::Result<CallThread> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        std::thread::Builder::new().name(format!("parley-calls-{n}")).spawn(move || {
            // Runs the thread's tasks until the server lets go of it; dropping the runtime then cancels what is left.
            let _ = runtime.block_on(stopped);
        })?;
        Ok(CallThread { handle, _stop: stop })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn thread_name() -> String {
        std::thread::current().name().unwrap_or_default().to_owned()
    }

    #[tokio::test]
    async fn work_runs_on_the_call_threads_and_a_new_connection_goes_to_the_least_busy_one() {
        let threads = CallThreads::start(2).expect("threads start");
        assert_eq!(threads.len(), 2);
        // A long-lived task (a call) holds one thread; the next connection goes to the other.
        let (release, released) = oneshot::channel::<()>();
        let held = threads.spawn(async move {
            let name = thread_name();
            let _ = released.await;
            name
        });
        tokio::task::yield_now().await;
        let second = threads.spawn(async { thread_name() }).await.expect("second task");
        let _ = release.send(());
        let first = held.await.expect("first task");
        assert!(first.starts_with("parley-calls-"), "ran on {first:?}");
        assert!(second.starts_with("parley-calls-"), "ran on {second:?}");
        assert_ne!(first, second, "the busy thread was chosen again");
    }

    #[tokio::test]
    async fn what_a_task_spawns_stays_on_its_call_thread() {
        let threads = CallThreads::start(2).expect("threads start");
        let (outer, inner) = threads
            .spawn(async {
                let inner = tokio::spawn(async { thread_name() }).await.unwrap_or_default();
                (thread_name(), inner)
            })
            .await
            .expect("task");
        assert!(outer.starts_with("parley-calls-"));
        assert_eq!(outer, inner);
    }

    #[test]
    fn dropping_the_threads_cancels_what_they_still_run() {
        let threads = CallThreads::start(1).expect("threads start");
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        // The task holds a sender until it is dropped; it never finishes on its own.
        threads.spawn(async move {
            let _tx = tx;
            std::future::pending::<()>().await;
        });
        drop(threads);
        let outcome = rx.recv_timeout(std::time::Duration::from_secs(5));
        assert_eq!(outcome, Err(std::sync::mpsc::RecvTimeoutError::Disconnected), "the task was not dropped");
    }
}
