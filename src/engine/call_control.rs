//! Call control for the model: built-in `end_call` and `transfer_call` tools offered next to the backend's MCP tools.
//!
//! A tool call only *asks* for the action: the model is told it will happen after its next words; the action travels
//! back to the engine with the tool's result ([`CallControl::action_for`]) and is carried out once that reply has
//! played to the end, so the caller hears the goodbye or the "let me put you
//! through" before the line changes. If the caller interrupts that reply, the request is dropped (they said something
//! the model has not heard yet). Ending closes the media stream, which hangs up a `<Connect><Stream>` call with no
//! credentials; transferring updates the live call over Twilio's REST API with `<Dial>` TwiML, only to numbers on the
//! configured allow-list.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::tools::{ToolCallContext, ToolExecutor, ToolOutcome};
use crate::http_client::describe;
use crate::llm::{ToolCall, ToolSpec};
use crate::twilio::rest;

/// The built-in tools' names (MCP tools of the same name are hidden behind them).
pub const END_CALL: &str = "end_call";
pub const TRANSFER_CALL: &str = "transfer_call";

/// `[conversation.call_control]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CallControlConfig {
    /// Offer `end_call`.
    pub end_call: bool,
    /// Numbers (E.164) `transfer_call` may dial; empty means no transfer tool.
    pub transfer_numbers: Vec<String>,
    /// Twilio's REST API base URL.
    pub twilio_api_base: String,
    /// Said when a transfer fails, so the caller knows they are still with the agent.
    pub transfer_failed_line: String,
    /// After this many replies in a row the model failed to give (every provider down), stop trying: say
    /// `give_up_line` and end the call, or transfer it to `give_up_transfer_to` when set. 0 never gives up.
    pub give_up_after_failures: u32,
    pub give_up_line: String,
    pub give_up_transfer_to: Option<String>,
}

impl Default for CallControlConfig {
    fn default() -> Self {
        CallControlConfig {
            end_call: true,
            transfer_numbers: Vec::new(),
            twilio_api_base: rest::DEFAULT_API_BASE.into(),
            transfer_failed_line: "Sorry, I couldn't put you through right now. Can I help you with anything else?"
                .into(),
            give_up_after_failures: 3,
            give_up_line:
                "I'm sorry, our system is having problems right now. Please call back a little later. Goodbye.".into(),
            give_up_transfer_to: None,
        }
    }
}

impl CallControlConfig {
    /// What giving up does: transfer when a number is set, else end the call; `None` when `end_call` is off and
    /// there is no number (the agent keeps apologising instead).
    pub fn give_up_action(&self) -> Option<CallAction> {
        match &self.give_up_transfer_to {
            Some(number) => Some(CallAction::Transfer(number.clone())),
            None if self.end_call => Some(CallAction::EndCall),
            None => None,
        }
    }
}

/// What the model asked for, carried out after its reply has played.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallAction {
    EndCall,
    Transfer(String),
}

/// Why a transfer did not happen.
#[derive(Debug, thiserror::Error)]
pub enum CallControlError {
    #[error("TWILIO_AUTH_TOKEN is not set, so Parley cannot update the call")]
    NoCredentials,
    #[error("the start message carried no account SID")]
    NoAccount,
    #[error("could not reach Twilio: {0}")]
    Connect(String),
    #[error("Twilio answered HTTP {status}: {body}")]
    Http { status: u16, body: String },
}

/// The backend's tools plus the built-ins; see the module documentation.
pub struct CallControl {
    inner: Arc<dyn ToolExecutor>,
    config: CallControlConfig,
    auth_token: Option<String>,
    http: reqwest::Client,
}

impl std::fmt::Debug for CallControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallControl").field("config", &self.config).finish_non_exhaustive()
    }
}

impl CallControl {
    /// `auth_token` is the account's Twilio auth token (for transfers).
    pub fn new(inner: Arc<dyn ToolExecutor>, config: CallControlConfig, auth_token: Option<String>) -> CallControl {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap_or_default();
        CallControl { inner, config, auth_token, http }
    }

    pub fn config(&self) -> &CallControlConfig {
        &self.config
    }

    /// The action a finished tool call asks for: `end_call` or an accepted `transfer_call`; `None` for every other
    /// call, and for a built-in that was refused.
    pub fn action_for(&self, call: &ToolCall, outcome: &ToolOutcome) -> Option<CallAction> {
        if outcome.is_error || !self.is_builtin(&call.name) {
            return None;
        }
        match call.name.as_str() {
            END_CALL => Some(CallAction::EndCall),
            TRANSFER_CALL => requested_number(call).map(|number| CallAction::Transfer(number.to_owned())),
            _ => None,
        }
    }

    fn transfer_enabled(&self) -> bool {
        !self.config.transfer_numbers.is_empty()
    }

    /// Transfers the call over Twilio's REST API. A call Twilio reports as already over counts as done.
    pub async fn transfer(&self, account_sid: &str, call_sid: &str, number: &str) -> Result<(), CallControlError> {
        let token = self.auth_token.as_deref().ok_or(CallControlError::NoCredentials)?;
        if account_sid.is_empty() {
            return Err(CallControlError::NoAccount);
        }
        let url = format!(
            "{}{}",
            self.config.twilio_api_base.trim_end_matches('/'),
            rest::call_update_path(account_sid, call_sid)
        );
        let response = self
            .http
            .post(url)
            .basic_auth(account_sid, Some(token))
            .form(&rest::transfer_form(number))
            .send()
            .await
            .map_err(|e| CallControlError::Connect(describe(&e)))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let body = response.text().await.unwrap_or_default();
        if status.as_u16() == 404 && rest::error_code(&body) == Some(rest::ERROR_NOT_FOUND) {
            return Ok(());
        }
        Err(CallControlError::Http { status: status.as_u16(), body: body.chars().take(300).collect() })
    }

    fn builtin_specs(&self) -> Vec<ToolSpec> {
        let mut specs = Vec::new();
        if self.config.end_call {
            specs.push(ToolSpec {
                name: END_CALL.into(),
                description: "Hang up the phone call. Use it when the caller says goodbye or the conversation is \
                    over; say your goodbye in the same reply, and the call ends once it has been spoken."
                    .into(),
                parameters: json!({"type": "object", "properties": {}}),
            });
        }
        if self.transfer_enabled() {
            specs.push(ToolSpec {
                name: TRANSFER_CALL.into(),
                description: "Transfer the caller to a person at one of the allowed numbers. Tell the caller you \
                    are putting them through in the same reply; the transfer happens once that has been spoken."
                    .into(),
                parameters: json!({
                    "type": "object",
                    "properties": {"number": {"type": "string", "enum": self.config.transfer_numbers}},
                    "required": ["number"]
                }),
            });
        }
        specs
    }

    fn transfer_call(&self, call: &ToolCall) -> ToolOutcome {
        let Some(number) = requested_number(call) else {
            return ToolOutcome::error("transfer_call needs a `number` argument");
        };
        if !self.config.transfer_numbers.contains(&number) {
            let allowed = self.config.transfer_numbers.join(", ");
            return ToolOutcome::error(format!("{number} is not a number calls may be transferred to ({allowed})"));
        }
        ToolOutcome::ok(format!("The caller will be transferred to {number} once your next words have been spoken."))
    }
}

#[async_trait]
impl ToolExecutor for CallControl {
    fn specs(&self) -> Vec<ToolSpec> {
        let builtins = self.builtin_specs();
        let mut specs: Vec<ToolSpec> =
            self.inner.specs().into_iter().filter(|s| !builtins.iter().any(|b| b.name == s.name)).collect();
        specs.extend(builtins);
        specs
    }

    fn needs_confirmation(&self, name: &str) -> bool {
        !self.is_builtin(name) && self.inner.needs_confirmation(name)
    }

    fn server_of(&self, name: &str) -> Option<String> {
        if self.is_builtin(name) {
            Some("parley".into())
        } else {
            self.inner.server_of(name)
        }
    }

    async fn call(&self, call: &ToolCall, context: &ToolCallContext, cancel: CancellationToken) -> ToolOutcome {
        match call.name.as_str() {
            END_CALL if self.config.end_call => {
                ToolOutcome::ok("The call will end once your goodbye has been spoken. Say goodbye now.")
            }
            TRANSFER_CALL if self.transfer_enabled() => self.transfer_call(call),
            _ => self.inner.call(call, context, cancel).await,
        }
    }
}

/// The `number` argument of a `transfer_call`.
fn requested_number(call: &ToolCall) -> Option<String> {
    let arguments: serde_json::Value = serde_json::from_str(&call.arguments).ok()?;
    arguments.get("number").and_then(|n| n.as_str()).map(str::to_owned)
}

impl CallControl {
    fn is_builtin(&self, name: &str) -> bool {
        (name == END_CALL && self.config.end_call) || (name == TRANSFER_CALL && self.transfer_enabled())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::tools::NoTools;

    fn control(numbers: &[&str]) -> CallControl {
        let config = CallControlConfig {
            transfer_numbers: numbers.iter().map(|n| n.to_string()).collect(),
            ..CallControlConfig::default()
        };
        CallControl::new(Arc::new(NoTools), config, None)
    }

    fn context() -> ToolCallContext {
        ToolCallContext { call_sid: "CA1".into(), ..ToolCallContext::default() }
    }

    fn call(name: &str, arguments: &str) -> ToolCall {
        ToolCall { id: "c1".into(), name: name.into(), arguments: arguments.into() }
    }

    #[test]
    fn transfer_is_offered_only_with_an_allow_list() {
        let names = |c: &CallControl| c.specs().into_iter().map(|s| s.name).collect::<Vec<_>>();
        assert_eq!(names(&control(&[])), vec![END_CALL]);
        assert_eq!(names(&control(&["+15550009999"])), vec![END_CALL, TRANSFER_CALL]);
    }

    #[tokio::test]
    async fn end_call_travels_back_with_its_result() {
        let control = control(&[]);
        let end = call(END_CALL, "{}");
        let outcome = control.call(&end, &context(), CancellationToken::new()).await;
        assert!(!outcome.is_error, "{outcome:?}");
        assert_eq!(control.action_for(&end, &outcome), Some(CallAction::EndCall));
        let lookup = call("lookup_order", "{}");
        assert_eq!(control.action_for(&lookup, &ToolOutcome::ok("found")), None, "a backend tool asks for nothing");
    }

    #[tokio::test]
    async fn transfers_go_only_to_allowed_numbers() {
        let control = control(&["+15550009999"]);
        let refused = control
            .call(&call(TRANSFER_CALL, r#"{"number":"+15551234567"}"#), &context(), CancellationToken::new())
            .await;
        assert!(refused.is_error && refused.content.contains("+15550009999"), "{refused:?}");
        let refused_call = call(TRANSFER_CALL, r#"{"number":"+15551234567"}"#);
        assert_eq!(control.action_for(&refused_call, &refused), None);
        let missing = control.call(&call(TRANSFER_CALL, "{}"), &context(), CancellationToken::new()).await;
        assert!(missing.is_error);
        let allowed_call = call(TRANSFER_CALL, r#"{"number":"+15550009999"}"#);
        let allowed = control.call(&allowed_call, &context(), CancellationToken::new()).await;
        assert!(!allowed.is_error, "{allowed:?}");
        assert_eq!(control.action_for(&allowed_call, &allowed), Some(CallAction::Transfer("+15550009999".into())));
    }

    #[tokio::test]
    async fn transfers_need_credentials() {
        let err = control(&["+15550009999"]).transfer("AC1", "CA1", "+15550009999").await.unwrap_err();
        assert!(matches!(err, CallControlError::NoCredentials), "{err}");
    }

    #[tokio::test]
    async fn other_tools_go_to_the_backend() {
        let outcome = control(&[]).call(&call("lookup_order", "{}"), &context(), CancellationToken::new()).await;
        assert!(outcome.is_error && outcome.content.contains("no tool named lookup_order"), "{outcome:?}");
    }
}
