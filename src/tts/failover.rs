//! An ordered list of text-to-speech providers used as one: a session opens on the first healthy provider that
//! accepts it. See [`crate::failover`] for the order and the cool-down.

use async_trait::async_trait;

use super::{TextToSpeech, TtsError, TtsSession};
use crate::failover::Failover;

/// Several providers, tried in order; see the module documentation.
pub type FailoverTts = Failover<dyn TextToSpeech>;

#[async_trait]
impl TextToSpeech for FailoverTts {
    fn name(&self) -> &'static str {
        self.primary().map_or("none", |p| p.name())
    }

    async fn open(&self) -> Result<TtsSession, TtsError> {
        self.try_in_order(
            "tts",
            |p| p.name(),
            |_| true,
            || TtsError::Connect { provider: "failover", detail: "no provider is configured".into() },
            |provider| async move { provider.open().await },
        )
        .await
    }
}
