//! An ordered list of text-to-speech providers used as one: a session opens on the first healthy provider that
//! accepts it. See [`crate::engine::failover`] for the order and the cool-down.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::{TextToSpeech, TtsError, TtsSession};
use crate::engine::failover::{try_in_order, Health};

/// Several providers, tried in order; see the module documentation.
pub struct FailoverTts {
    providers: Vec<Arc<dyn TextToSpeech>>,
    health: Health,
}

impl FailoverTts {
    /// `providers` in order of preference; the first is the primary.
    pub fn new(providers: Vec<Arc<dyn TextToSpeech>>, cooldown: Duration) -> FailoverTts {
        let health = Health::new(providers.len(), cooldown);
        FailoverTts { providers, health }
    }
}

#[async_trait]
impl TextToSpeech for FailoverTts {
    fn name(&self) -> &'static str {
        self.providers.first().map_or("none", |p| p.name())
    }

    async fn open(&self) -> Result<TtsSession, TtsError> {
        try_in_order(
            &self.providers,
            &self.health,
            "tts",
            |p| p.name(),
            |_| true,
            || TtsError::Connect { provider: "failover", detail: "no provider is configured".into() },
            |provider| async move { provider.open().await },
        )
        .await
    }
}
