//! The call's outcome and control: when the agent gives up on a failing model, and the call action (hang up,
//! transfer) due once the reply that announced it has been heard. Transfers run in a task; the engine hears back.

use std::sync::Arc;

use tokio::sync::oneshot;

use super::call_control::{CallAction, CallControl, CallControlConfig, CallControlError};

/// What the engine says and does after the model failed to give a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub line: String,
    /// Giving up: what to do once the line has been heard.
    pub action: Option<CallAction>,
}

/// The call's outcome and control; see the module documentation.
#[derive(Default)]
pub struct CallOutcome {
    /// Replies in a row the model failed to give.
    failed_replies: u32,
    /// A transfer under way at Twilio.
    transfer: Option<oneshot::Receiver<Result<(), CallControlError>>>,
}

impl CallOutcome {
    /// The model gave a reply.
    pub fn reply_given(&mut self) {
        self.failed_replies = 0;
    }

    /// The model failed: the fallback line, or after too many failures in a row the give-up line and its action.
    pub fn reply_failed(&mut self, config: &CallControlConfig, fallback_line: &str) -> Failure {
        self.failed_replies += 1;
        let give_up = config.give_up_after_failures > 0 && self.failed_replies >= config.give_up_after_failures;
        match (give_up, config.give_up_action()) {
            (true, Some(action)) => Failure { line: config.give_up_line.clone(), action: Some(action) },
            _ => Failure { line: fallback_line.to_owned(), action: None },
        }
    }

    pub fn failed_replies(&self) -> u32 {
        self.failed_replies
    }

    /// Starts a transfer in a task; its result comes back through [`CallOutcome::transfer_result`].
    pub fn start_transfer(&mut self, control: Arc<CallControl>, account_sid: String, call_sid: String, number: String) {
        let (done, result) = oneshot::channel();
        tokio::spawn(async move {
            let _ = done.send(control.transfer(&account_sid, &call_sid, &number).await);
        });
        self.transfer = Some(result);
    }

    /// The result of the transfer under way, when it comes (pending forever when there is none).
    pub async fn transfer_result(&mut self) -> Result<(), CallControlError> {
        let result = match self.transfer.as_mut() {
            Some(pending) => pending.await,
            None => std::future::pending().await,
        };
        self.transfer = None;
        result.unwrap_or(Err(CallControlError::Connect("the transfer task ended without an answer".into())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_agent_gives_up_after_repeated_failures_and_starts_over_after_a_reply() {
        let config = CallControlConfig { give_up_after_failures: 2, ..CallControlConfig::default() };
        let mut outcome = CallOutcome::default();
        assert_eq!(outcome.reply_failed(&config, "again?"), Failure { line: "again?".into(), action: None });
        let gave_up = outcome.reply_failed(&config, "again?");
        assert_eq!(gave_up.line, config.give_up_line);
        assert_eq!(gave_up.action, Some(CallAction::EndCall));
        outcome.reply_given();
        assert_eq!(outcome.reply_failed(&config, "again?").action, None);
    }
}
