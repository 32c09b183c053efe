//! An ordered list of chat models used as one: a request goes to the first healthy model, and when it cannot be
//! reached, times out or answers with a server error (5xx, 429) before streaming, to the next. See
//! [`crate::engine::failover`] for the order and the cool-down.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::{LanguageModel, LlmError, LlmRequest, LlmStream};
use crate::engine::failover::{try_in_order, Health};

/// Several models, tried in order; see the module documentation.
pub struct FailoverLlm {
    models: Vec<Arc<dyn LanguageModel>>,
    health: Health,
}

impl FailoverLlm {
    /// `models` in order of preference; the first is the primary.
    pub fn new(models: Vec<Arc<dyn LanguageModel>>, cooldown: Duration) -> FailoverLlm {
        let health = Health::new(models.len(), cooldown);
        FailoverLlm { models, health }
    }
}

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
        self.models.first().map_or("none", |m| m.name())
    }

    fn model(&self) -> &str {
        self.models.first().map_or("none", |m| m.model())
    }

    async fn stream(&self, request: LlmRequest) -> Result<LlmStream, LlmError> {
        try_in_order(
            &self.models,
            &self.health,
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
