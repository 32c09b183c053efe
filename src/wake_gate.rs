//! A select loop's rare inputs, polled only after one of them has woken the loop.
//!
//! The per-frame loops (a call's engine, its media socket) turn fifty times a second a call, and each turn polls
//! every input of their `select!` until one is ready. Most inputs are rare next to the frames — a provider's
//! result, a task's report, the playout's progress, the agent's next message — yet an empty poll of a channel still
//! checks the runtime's budget, reads the channel's queue, registers the task's waker and reads the queue again:
//! with hundreds of calls, none of it in the cache. Behind a [`WakeGate`] those inputs are polled with the gate's own
//! waker, and only after it was called; otherwise the gate costs one atomic load.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};

/// One loop's gate over its rare inputs; see the module documentation.
pub struct WakeGate {
    shared: Arc<Shared>,
    /// The waker the inputs are polled with: it opens the gate and wakes the loop's task.
    inputs_waker: Waker,
    /// The loop's task waker last stored in `shared`, to store it again only when the loop moves to another task.
    loop_waker: Option<Waker>,
}

struct Shared {
    /// An input has woken since the gate last polled them (or the loop asked for a poll: [`WakeGate::open`]).
    woken: AtomicBool,
    /// The task running the loop, woken when an input wakes.
    task: Mutex<Option<Waker>>,
}

impl Wake for Shared {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // Already open: the loop was woken then and has not polled the inputs since; it will see this wake-up too.
        if self.woken.swap(true, Ordering::AcqRel) {
            return;
        }
        if let Some(task) = self.task.lock().unwrap_or_else(PoisonError::into_inner).as_ref() {
            task.wake_by_ref();
        }
    }
}

impl Default for WakeGate {
    fn default() -> Self {
        WakeGate::new()
    }
}

impl WakeGate {
    /// A gate that starts open, so that the first poll polls every input (and registers the gate's waker with it).
    pub fn new() -> WakeGate {
        let shared = Arc::new(Shared { woken: AtomicBool::new(true), task: Mutex::new(None) });
        let inputs_waker = Waker::from(Arc::clone(&shared));
        WakeGate { shared, inputs_waker, loop_waker: None }
    }

    /// Has the loop poll its inputs on its next poll of the gate: for an input that was added or replaced (it may
    /// already hold something, and has never been polled with the gate's waker) or one the loop skipped.
    pub fn open(&self) {
        // Every write of the flag is a read-modify-write, so that the poll closing it reads the latest and sees
        // whatever an input announced before its wake-up set it (a plain store would end that chain).
        self.shared.woken.swap(true, Ordering::AcqRel);
    }

    /// Runs `poll_inputs` with the gate's waker if an input has woken since the last time; `Pending` otherwise.
    /// `poll_inputs` must poll every input it returns `Pending` for, or [`WakeGate::open`] the gate after skipping
    /// one; when it returns `Ready`, the gate stays open, as the inputs may hold more.
    pub fn poll<T>(&mut self, cx: &mut Context<'_>, poll_inputs: impl FnOnce(&mut Context<'_>) -> Poll<T>) -> Poll<T> {
        self.register(cx.waker());
        if !self.shared.woken.load(Ordering::Acquire) {
            return Poll::Pending;
        }
        // Closed before the inputs are polled: a wake-up during or after the poll opens it again (and wakes the
        // loop), and one just before it was read here, with what the input had queued.
        self.shared.woken.swap(false, Ordering::AcqRel);
        let polled = poll_inputs(&mut Context::from_waker(&self.inputs_waker));
        if polled.is_ready() {
            self.open();
        }
        polled
    }

    fn register(&mut self, waker: &Waker) {
        if self.loop_waker.as_ref().is_some_and(|stored| stored.will_wake(waker)) {
            return;
        }
        *self.shared.task.lock().unwrap_or_else(PoisonError::into_inner) = Some(waker.clone());
        self.loop_waker = Some(waker.clone());
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;
    use std::sync::atomic::AtomicUsize;

    use super::*;
    use tokio::sync::mpsc;

    /// A waker that counts its wake-ups.
    struct Counter(AtomicUsize);

    impl Wake for Counter {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn inputs_are_polled_only_after_one_woke_the_loop_and_a_wake_up_reaches_the_loop() {
        let (tx, mut rx) = mpsc::unbounded_channel::<u32>();
        let mut gate = WakeGate::new();
        let polls = AtomicUsize::new(0);
        let counter = Arc::new(Counter(AtomicUsize::new(0)));
        let loop_waker = Waker::from(Arc::clone(&counter));
        let mut cx = Context::from_waker(&loop_waker);
        let mut poll = |gate: &mut WakeGate, cx: &mut Context<'_>| {
            gate.poll(cx, |inner| {
                polls.fetch_add(1, Ordering::SeqCst);
                rx.poll_recv(inner)
            })
        };

        // Open at first: the input is polled (and learns the gate's waker).
        assert!(poll(&mut gate, &mut cx).is_pending());
        // Nothing woke it: the input is not polled again.
        assert!(poll(&mut gate, &mut cx).is_pending());
        assert!(poll(&mut gate, &mut cx).is_pending());
        assert_eq!(polls.load(Ordering::SeqCst), 1);
        assert_eq!(counter.0.load(Ordering::SeqCst), 0);

        // A send wakes the loop's task through the gate, and the next poll takes it.
        tx.send(7).expect("receiver is there");
        assert_eq!(counter.0.load(Ordering::SeqCst), 1);
        assert_eq!(poll(&mut gate, &mut cx), Poll::Ready(Some(7)));
        // Two sent at once: a ready poll leaves the gate open, so the second is taken without another wake-up.
        tx.send(8).expect("receiver is there");
        tx.send(9).expect("receiver is there");
        assert_eq!(poll(&mut gate, &mut cx), Poll::Ready(Some(8)));
        assert_eq!(poll(&mut gate, &mut cx), Poll::Ready(Some(9)));
        assert!(poll(&mut gate, &mut cx).is_pending());
        let polls_before = polls.load(Ordering::SeqCst);
        assert!(poll(&mut gate, &mut cx).is_pending());
        assert_eq!(polls.load(Ordering::SeqCst), polls_before);

        // The sender gone is a wake-up too: the input reports its end.
        drop(tx);
        assert_eq!(poll(&mut gate, &mut cx), Poll::Ready(None));
    }

    #[test]
    fn an_opened_gate_polls_an_input_that_never_woke_it() {
        let mut gate = WakeGate::new();
        let loop_waker = Waker::from(Arc::new(Counter(AtomicUsize::new(0))));
        let mut cx = Context::from_waker(&loop_waker);
        // The first poll has no input yet, and closes the gate.
        assert!(gate.poll(&mut cx, |_| Poll::<Option<u32>>::Pending).is_pending());
        // An input that already holds a value is added: it has never seen the gate's waker, so nothing will wake the
        // gate for it.
        let (tx, mut rx) = mpsc::unbounded_channel::<u32>();
        tx.send(5).expect("receiver is there");
        assert!(gate.poll(&mut cx, |inner| rx.poll_recv(inner)).is_pending(), "the new input was not polled");
        gate.open();
        assert_eq!(gate.poll(&mut cx, |inner| rx.poll_recv(inner)), Poll::Ready(Some(5)));
    }

    #[tokio::test]
    async fn a_loop_awaiting_the_gate_is_woken_by_an_input_sent_from_another_task() {
        let (tx, mut rx) = mpsc::unbounded_channel::<u32>();
        let mut gate = WakeGate::new();
        let sender = tokio::spawn(async move {
            tokio::task::yield_now().await;
            tx.send(42).expect("receiver is there");
        });
        let received = poll_fn(|cx| gate.poll(cx, |inner| rx.poll_recv(inner))).await;
        assert_eq!(received, Some(42));
        sender.await.expect("sender ran");
    }
}
