//! An ordered list of speech-to-text providers used as one: a session opens on the first healthy provider that
//! accepts it. See [`crate::engine::failover`] for the order and the cool-down.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::{SpeechToText, SttError, SttSession};
use crate::engine::failover::{try_in_order, Health};

/// Several providers, tried in order; see the module documentation.
pub struct FailoverStt {
    providers: Vec<Arc<dyn SpeechToText>>,
    health: Health,
}

impl FailoverStt {
    /// `providers` in order of preference; the first is the primary.
    pub fn new(providers: Vec<Arc<dyn SpeechToText>>, cooldown: Duration) -> FailoverStt {
        let health = Health::new(providers.len(), cooldown);
        FailoverStt { providers, health }
    }
}

#[async_trait]
impl SpeechToText for FailoverStt {
    fn name(&self) -> &'static str {
        self.providers.first().map_or("none", |p| p.name())
    }

    async fn open(&self) -> Result<SttSession, SttError> {
        // A refused key or a bad request at one provider says nothing about the next: every failure moves on.
        try_in_order(
            &self.providers,
            &self.health,
            "stt",
            |p| p.name(),
            |_| true,
            || SttError::Connect { provider: "failover", detail: "no provider is configured".into() },
            |provider| async move { provider.open().await },
        )
        .await
    }
}
