//! An ordered list of speech-to-text providers used as one: a session opens on the first healthy provider that
//! accepts it. See [`crate::failover`] for the order and the cool-down.

use async_trait::async_trait;

use super::{SpeechToText, SttError, SttSession};
use crate::failover::Failover;

/// Several providers, tried in order; see the module documentation.
pub type FailoverStt = Failover<dyn SpeechToText>;

#[async_trait]
impl SpeechToText for FailoverStt {
    fn name(&self) -> &'static str {
        self.primary().map_or("none", |p| p.name())
    }

    async fn open(&self) -> Result<SttSession, SttError> {
        // A refused key or a bad request at one provider says nothing about the next: every failure moves on.
        self.try_in_order(
            "stt",
            |p| p.name(),
            |_| true,
            || SttError::Connect { provider: "failover", detail: "no provider is configured".into() },
            |provider| async move { provider.open().await },
        )
        .await
    }
}
