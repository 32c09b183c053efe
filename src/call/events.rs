//! The queue that carries the caller's events from a call's socket to its agent.
//!
//! The media socket polls its call's agent in its own task (see `crate::edge::session`): a frame read from Twilio is
//! handed to the agent and the agent runs on it in the same turn of the task, with no second task to wake, schedule
//! and bring back into the cache fifty times a second a call. A channel that wakes its receiver would make the socket
//! wake its own task on every frame (the task is running, so the runtime polls it once more for nothing); this queue
//! is told how its receiver is run and wakes it only when it runs elsewhere.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Poll, Waker};

use super::agent::CallEvent;

/// How the receiving agent is run, which decides whether a send must wake it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// The agent is polled by the sender's own task after every send (the media socket's): nothing to wake.
    Inline,
    /// The agent runs as a task of its own (tests, tools): a send wakes it.
    Woken,
}

/// The sending half, kept by the call's socket. Dropping it ends the receiver's stream once it is drained.
pub struct CallEventSender {
    shared: Arc<Shared>,
}

/// The receiving half, given to the agent in its [`super::agent::AgentContext`].
pub struct CallEvents {
    shared: Arc<Shared>,
}

/// Why an event was not queued.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SendError {
    /// The agent has not taken the queue's capacity of events: it is not keeping up.
    #[error("the agent is not keeping up: {0} events are queued")]
    Full(usize),
    /// The agent is gone.
    #[error("the agent has ended")]
    Closed,
}

struct Shared {
    delivery: Delivery,
    capacity: usize,
    queue: Mutex<Queue>,
}

#[derive(Default)]
struct Queue {
    events: VecDeque<CallEvent>,
    sender_gone: bool,
    receiver_gone: bool,
    /// The receiver's waker while it waits, with [`Delivery::Woken`] only.
    waiting: Option<Waker>,
}

/// A queue of at most `capacity` events whose receiver is run as `delivery` says.
pub fn call_events(capacity: usize, delivery: Delivery) -> (CallEventSender, CallEvents) {
    let shared = Arc::new(Shared { delivery, capacity, queue: Mutex::new(Queue::default()) });
    (CallEventSender { shared: Arc::clone(&shared) }, CallEvents { shared })
}

impl Shared {
    /// The queue's state. Nothing panics while holding the lock, but a poisoned lock would still hold consistent
    /// data (every change is one push, pop or flag), so it is used as it is.
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl CallEventSender {
    /// Queues an event without waiting; a full queue or a gone agent refuses it (the event is dropped).
    pub fn try_send(&self, event: CallEvent) -> Result<(), SendError> {
        let waker = {
            let mut queue = self.shared.lock();
            if queue.receiver_gone {
                return Err(SendError::Closed);
            }
            if queue.events.len() >= self.shared.capacity {
                return Err(SendError::Full(queue.events.len()));
            }
            queue.events.push_back(event);
            queue.waiting.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }
}

impl Drop for CallEventSender {
    fn drop(&mut self) {
        let waker = {
            let mut queue = self.shared.lock();
            queue.sender_gone = true;
            queue.waiting.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl CallEvents {
    /// The next event; `None` once the sender is gone and every event it queued was taken.
    pub async fn recv(&mut self) -> Option<CallEvent> {
        poll_fn(|cx| {
            let mut queue = self.shared.lock();
            if let Some(event) = queue.events.pop_front() {
                return Poll::Ready(Some(event));
            }
            if queue.sender_gone {
                return Poll::Ready(None);
            }
            if self.shared.delivery == Delivery::Woken {
                match &mut queue.waiting {
                    Some(waker) => waker.clone_from(cx.waker()),
                    None => queue.waiting = Some(cx.waker().clone()),
                }
            }
            Poll::Pending
        })
        .await
    }
}

impl Drop for CallEvents {
    fn drop(&mut self) {
        let mut queue = self.shared.lock();
        queue.receiver_gone = true;
        queue.events.clear();
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Context, Wake};
    use std::time::Duration;

    use bytes::Bytes;

    use super::*;

    fn frame(byte: u8) -> CallEvent {
        CallEvent::Audio(Bytes::from(vec![byte; 160]))
    }

    #[tokio::test]
    async fn events_come_in_order_and_end_after_the_sender_is_gone() {
        let (sender, mut events) = call_events(4, Delivery::Inline);
        sender.try_send(frame(1)).expect("queued");
        sender.try_send(CallEvent::Dtmf("5".into())).expect("queued");
        drop(sender);
        assert_eq!(events.recv().await, Some(frame(1)));
        assert_eq!(events.recv().await, Some(CallEvent::Dtmf("5".into())));
        assert_eq!(events.recv().await, None);
    }

    #[test]
    fn a_full_queue_refuses_the_event_and_a_gone_agent_too() {
        let (sender, events) = call_events(2, Delivery::Inline);
        sender.try_send(frame(1)).expect("queued");
        sender.try_send(frame(2)).expect("queued");
        assert_eq!(sender.try_send(frame(3)), Err(SendError::Full(2)));
        drop(events);
        assert_eq!(sender.try_send(frame(4)), Err(SendError::Closed));
    }

    #[tokio::test]
    async fn a_woken_receiver_in_its_own_task_hears_each_send() {
        let (sender, mut events) = call_events(8, Delivery::Woken);
        let receiver = tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(event) = events.recv().await {
                got.push(event);
            }
            got
        });
        for byte in 0..3 {
            // The receiver is waiting (or about to) each time: every send must wake it.
            tokio::time::sleep(Duration::from_millis(5)).await;
            sender.try_send(frame(byte)).expect("queued");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        drop(sender);
        let got = tokio::time::timeout(Duration::from_secs(5), receiver).await.expect("woken").expect("no panic");
        assert_eq!(got, vec![frame(0), frame(1), frame(2)]);
    }

    #[tokio::test]
    async fn an_inline_receiver_is_not_woken_by_a_send() {
        let (sender, mut events) = call_events(8, Delivery::Inline);
        let waker = futures_util::task::noop_waker();
        let counting = Arc::new(CountingWake::default());
        let counted = Waker::from(Arc::clone(&counting));
        let mut next = Box::pin(events.recv());
        let mut cx = Context::from_waker(&counted);
        assert!(next.as_mut().poll(&mut cx).is_pending());
        sender.try_send(frame(7)).expect("queued");
        assert_eq!(counting.wakes.load(Ordering::SeqCst), 0, "the sender's own task polls it");
        let mut cx = Context::from_waker(&waker);
        assert_eq!(next.as_mut().poll(&mut cx), Poll::Ready(Some(frame(7))));
    }

    #[derive(Default)]
    struct CountingWake {
        wakes: AtomicUsize,
    }

    impl Wake for CountingWake {
        fn wake(self: Arc<Self>) {
            self.wakes.fetch_add(1, Ordering::SeqCst);
        }
    }
}
