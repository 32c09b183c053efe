//! Calls: who is on the line, the agents that answer, and the registry of live calls.

pub mod agent;
pub mod echo;
pub mod events;
pub mod registry;
pub mod tap;

use std::collections::BTreeMap;

/// What Parley knows about a call once Twilio's `start` message arrived.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallInfo {
    pub call_sid: String,
    pub stream_sid: String,
    pub account_sid: String,
    /// Caller number, from the `from` stream parameter Parley's TwiML set.
    pub from: Option<String>,
    /// Called number, from the `to` stream parameter.
    pub to: Option<String>,
    /// Every `<Parameter>` of the stream, as Twilio delivered them.
    pub custom_parameters: BTreeMap<String, String>,
}
