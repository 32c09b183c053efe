//! An ordered list of chat models used as one: a request goes to the first healthy model, and when it cannot be
//! reached, answers with a server error (5xx, 429) or times out before its first token, to the next. See
//! [`crate::failover`] for the order and the cool-down.
//!
//! A model is judged on its first event, not only on its HTTP status: one that accepts the request and then says
//! nothing until its first-token limit has failed the caller as surely as a 503, and nothing of its answer was
//! spoken yet, so the next model can still give the whole reply.

use async_trait::async_trait;
use futures_util::StreamExt;

use super::{LanguageModel, LlmError, LlmRequest, LlmStream};
use crate::failover::Failover;

/// Several models, tried in order; see the module documentation.
pub type FailoverLlm = Failover<dyn LanguageModel>;

/// Whether another provider might succeed where this one failed.
fn worth_another(error: &LlmError) -> bool {
    match error {
        LlmError::Connect { .. } | LlmError::Timeout { .. } => true,
        LlmError::Http { status, .. } => *status >= 500 || *status == 429,
        LlmError::Protocol { .. } | LlmError::Provider { .. } => false,
    }
}

#[async_trait]
impl LanguageModel for FailoverLlm {
    fn name(&self) -> &'static str {
        self.primary().map_or("none", |m| m.name())
    }

    fn model(&self) -> &str {
        self.primary().map_or("none", |m| m.model())
    }

    async fn stream(&self, request: LlmRequest) -> Result<LlmStream, LlmError> {
        self.try_in_order(
            "llm",
            |m| m.name(),
            worth_another,
            || LlmError::Connect { provider: "failover", detail: "no model is configured".into() },
            |model| {
                let request = request.clone();
                async move { first_event_or_error(model.stream(request).await?).await }
            },
        )
        .await
    }
}

/// Waits for the stream's first event: an error there (a first-token timeout, an error event before any text) is
/// the attempt's error; anything else is handed back in front of the rest of the stream.
async fn first_event_or_error(mut stream: LlmStream) -> Result<LlmStream, LlmError> {
    match stream.next().await {
        Some(Err(error)) => Err(error),
        first => Ok(Box::pin(futures_util::stream::iter(first).chain(stream))),
    }
}
