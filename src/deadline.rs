//! A select loop's wake-up that touches the runtime's timer only when it must.
//!
//! A `sleep_until(deadline)` written inside a `select!` builds, registers and drops a timer entry on every turn of
//! the loop — for the per-frame loops (the engine, a media session, an STT session) fifty times a second a call, for
//! a deadline that rarely moves. [`Deadline`] keeps one timer for the loop's life and moves it only when the loop
//! asks for an *earlier* wake-up than the one set. A later deadline leaves the timer where it is: the loop wakes
//! early, finds nothing due (each loop's tick checks the time itself) and asks again. So a silence timeout pushed
//! back by every frame costs one timer move per firing, not one per frame.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::time::{Instant, Sleep};

use crate::wake_gate::WakeGate;

/// One loop's wake-up; see the module documentation.
#[derive(Debug)]
pub struct Deadline {
    sleep: Pin<Box<Sleep>>,
    /// When the timer fires; `None` when it is not set (fired, or never set).
    set_for: Option<Instant>,
}

impl Default for Deadline {
    fn default() -> Self {
        Deadline::new()
    }
}

impl Deadline {
    /// A wake-up that is not set: [`Deadline::fired`] stays pending until [`Deadline::want`] sets one.
    pub fn new() -> Deadline {
        // Never polled before `want` sets it, so never registered with the timer.
        Deadline { sleep: Box::pin(tokio::time::sleep_until(Instant::now())), set_for: None }
    }

    /// The loop needs to wake by `at` (`None`: for nothing). Moves the timer only when `at` is earlier than the
    /// wake-up already set; otherwise the loop may wake before `at` and must check the time itself. Says whether it
    /// moved the timer: a loop that polls its wake-up only once woken must poll it after a move
    /// ([`Deadline::want_behind`]).
    pub fn want(&mut self, at: Option<Instant>) -> bool {
        let Some(at) = at else { return false };
        if self.set_for.is_some_and(|set| set <= at) {
            return false;
        }
        self.sleep.as_mut().reset(at);
        self.set_for = Some(at);
        true
    }

    /// [`Deadline::want`] for a wake-up polled behind `gate`: a move opens the gate, so that the timer is polled
    /// again (and learns the gate's waker).
    pub fn want_behind(&mut self, at: Option<Instant>, gate: &WakeGate) {
        if self.want(at) {
            gate.open();
        }
    }

    /// When the timer is set to fire, if it is.
    pub fn set_for(&self) -> Option<Instant> {
        self.set_for
    }

    /// Completes when the wake-up set comes (and unsets it); pending while none is set. Cancel-safe: dropped before
    /// it completes, the wake-up stays set.
    pub async fn fired(&mut self) {
        poll_fn(|cx| self.poll_fired(cx)).await;
    }

    /// [`Deadline::fired`] as a poll: ready when the wake-up set comes (and unsets it); pending, registering no
    /// waker, while none is set.
    pub fn poll_fired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.set_for.is_none() {
            return Poll::Pending;
        }
        ready!(self.sleep.as_mut().poll(cx));
        self.set_for = None;
        Poll::Ready(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn fires_at_the_earliest_wanted_time_and_then_unsets() {
        let start = Instant::now();
        let mut deadline = Deadline::new();
        deadline.want(Some(start + Duration::from_millis(300)));
        deadline.want(Some(start + Duration::from_millis(100)));
        deadline.want(Some(start + Duration::from_millis(500)));
        deadline.want(None);
        assert_eq!(deadline.set_for(), Some(start + Duration::from_millis(100)));
        deadline.fired().await;
        assert_eq!(Instant::now() - start, Duration::from_millis(100));
        assert_eq!(deadline.set_for(), None);
        // Nothing set: pending until something is.
        let idle = tokio::time::timeout(Duration::from_secs(5), deadline.fired()).await;
        assert!(idle.is_err(), "a deadline with nothing set fired");
        deadline.want(Some(Instant::now() + Duration::from_millis(40)));
        let before = Instant::now();
        deadline.fired().await;
        assert_eq!(Instant::now() - before, Duration::from_millis(40));
    }

    /// Polls `deadline` behind `gate`; says whether the gate let the poll through.
    fn polled_behind(gate: &mut WakeGate, deadline: &mut Deadline, cx: &mut Context<'_>) -> bool {
        let mut ran = false;
        let polled = gate.poll(cx, |cx| {
            ran = true;
            deadline.poll_fired(cx)
        });
        assert!(polled.is_pending(), "the timer is not due yet");
        ran
    }

    #[tokio::test(start_paused = true)]
    async fn a_move_opens_the_gate_the_timer_is_polled_behind_and_a_later_wish_does_not() {
        let start = Instant::now();
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut gate = WakeGate::new();
        let mut deadline = Deadline::new();
        // The gate starts open; its first poll closes it.
        assert!(gate.poll(&mut cx, |_| Poll::<()>::Pending).is_pending());
        deadline.want_behind(Some(start + Duration::from_millis(100)), &gate);
        assert!(polled_behind(&mut gate, &mut deadline, &mut cx), "the moved timer was polled");
        deadline.want_behind(Some(start + Duration::from_millis(300)), &gate);
        assert!(
            !polled_behind(&mut gate, &mut deadline, &mut cx),
            "a later wish leaves the timer, and the gate, as they were"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_wake_up_cancelled_in_a_select_stays_set() {
        let start = Instant::now();
        let mut deadline = Deadline::new();
        deadline.want(Some(start + Duration::from_millis(200)));
        tokio::select! {
            () = deadline.fired() => panic!("fired before its time"),
            () = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
        assert_eq!(deadline.set_for(), Some(start + Duration::from_millis(200)));
        deadline.fired().await;
        assert_eq!(Instant::now() - start, Duration::from_millis(200));
    }
}
