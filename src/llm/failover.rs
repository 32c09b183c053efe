//! An ordered list of chat models used as one: a request goes to the first healthy model, and when it cannot be
//! reached, times out or answers with a server error (5xx, 429) before streaming, to the next. See
//! [`crate::failover`] for the order and the cool-down.

use async_trait::async_trait;

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
                async move { model.stream(request).await }
            },
        )
        .await
    }
}
