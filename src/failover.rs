//! Which provider of a stage's ordered list to try: the configured order, with providers that failed recently moved
//! to the back until their cool-down is over.
//!
//! It belongs to the provider layer, not the engine: a failover list is itself a provider of its stage (it
//! implements the stage's trait), so the engine sees one speech-to-text, one model and one voice whether or not
//! there is a list behind it, and the stage modules build on this one without reaching up into the engine.
//!
//! The per-stage wrappers ([`crate::llm::failover`], [`crate::stt::failover`], [`crate::tts::failover`]) are each a
//! [`Failover`] over their stage's trait: it asks for the order, tries each provider in turn, and reports what
//! happened. A provider that failed is not tried first again for `cooldown`, so one outage does not cost every turn
//! a timeout; it is still tried when every other one has failed.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

/// How long a failed provider goes to the back of the list.
pub const DEFAULT_COOLDOWN: Duration = Duration::from_secs(30);

/// The health of each provider in a stage's list.
#[derive(Debug)]
pub struct Health {
    cooldown: Duration,
    unhealthy_until: Mutex<Vec<Option<Instant>>>,
}

impl Health {
    pub fn new(providers: usize, cooldown: Duration) -> Health {
        Health { cooldown, unhealthy_until: Mutex::new(vec![None; providers]) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Option<Instant>>> {
        self.unhealthy_until.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Indexes to try, in order: healthy providers in configured order, then those cooling down, soonest back
    /// first.
    pub fn order(&self, now: Instant) -> Vec<usize> {
        let until = self.lock();
        let mut healthy: Vec<usize> = Vec::with_capacity(until.len());
        let mut cooling: Vec<(Instant, usize)> = Vec::new();
        for (index, state) in until.iter().enumerate() {
            match state {
                Some(at) if *at > now => cooling.push((*at, index)),
                _ => healthy.push(index),
            }
        }
        cooling.sort();
        healthy.extend(cooling.into_iter().map(|(_, index)| index));
        healthy
    }

    pub fn failed(&self, index: usize, now: Instant) {
        if let Some(state) = self.lock().get_mut(index) {
            *state = Some(now + self.cooldown);
        }
    }

    pub fn succeeded(&self, index: usize) {
        if let Some(state) = self.lock().get_mut(index) {
            *state = None;
        }
    }

    /// Whether the provider is cooling down after a failure.
    pub fn is_unhealthy(&self, index: usize, now: Instant) -> bool {
        self.lock().get(index).copied().flatten().is_some_and(|at| at > now)
    }
}

/// A stage's providers in order of preference, with their health: what each per-stage wrapper holds.
pub struct Failover<P: ?Sized> {
    providers: Vec<Arc<P>>,
    health: Health,
}

impl<P: ?Sized> Failover<P> {
    /// `providers` in order of preference; the first is the primary.
    pub fn new(providers: Vec<Arc<P>>, cooldown: Duration) -> Failover<P> {
        let health = Health::new(providers.len(), cooldown);
        Failover { providers, health }
    }

    /// The configured first choice (named in logs and metrics as the stage's provider).
    pub fn primary(&self) -> Option<&P> {
        self.providers.first().map(|p| p.as_ref())
    }

    /// Tries the providers in the order their health gives until `attempt` succeeds. Failures that
    /// `worth_another` accepts (connection refused, timeouts, server errors) mark the provider unhealthy and move
    /// on; any other error is the request's own fault, would fail everywhere, and is returned at once. With every
    /// provider failed, the last error is returned (`none` makes the error for an empty list).
    pub async fn try_in_order<T, E, F, Fut>(
        &self,
        stage: &str,
        name: impl Fn(&P) -> &str,
        worth_another: impl Fn(&E) -> bool,
        none: impl FnOnce() -> E,
        mut attempt: F,
    ) -> Result<T, E>
    where
        F: FnMut(Arc<P>) -> Fut,
        Fut: std::future::Future<Output = Result<T, E>>,
        E: std::fmt::Display,
    {
        let order = self.health.order(Instant::now());
        let mut last_error = None;
        for (position, index) in order.iter().copied().enumerate() {
            let Some(provider) = self.providers.get(index) else { continue };
            match attempt(Arc::clone(provider)).await {
                Ok(value) => {
                    self.health.succeeded(index);
                    if position > 0 {
                        tracing::warn!(stage, provider = name(provider), "failed over to a fallback provider");
                    }
                    return Ok(value);
                }
                Err(error) if worth_another(&error) => {
                    tracing::warn!(stage, provider = name(provider), %error, "provider failed; trying the next");
                    crate::telemetry::metrics::global().provider_error(stage, name(provider));
                    self.health.failed(index, Instant::now());
                    last_error = Some(error);
                }
                Err(error) => return Err(error),
            }
        }
        Err(last_error.unwrap_or_else(none))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_provider_goes_to_the_back_until_it_has_cooled_down() {
        let health = Health::new(3, Duration::from_secs(30));
        let now = Instant::now();
        assert_eq!(health.order(now), vec![0, 1, 2]);
        health.failed(0, now);
        assert!(health.is_unhealthy(0, now));
        assert_eq!(health.order(now), vec![1, 2, 0]);
        health.failed(1, now + Duration::from_secs(1));
        assert_eq!(health.order(now + Duration::from_secs(2)), vec![2, 0, 1], "the one back soonest comes first");
        assert_eq!(health.order(now + Duration::from_millis(30_500)), vec![0, 2, 1], "0 has cooled down, 1 not yet");
        health.succeeded(1);
        assert_eq!(health.order(now + Duration::from_secs(2)), vec![1, 2, 0]);
    }
}
