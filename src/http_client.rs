//! Small helpers shared by Parley's HTTP provider clients (OpenAI-compatible chat, Anthropic, OpenAI speech).

use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName};

/// A header's value as text, when present and printable.
pub(crate) fn header_text(headers: &HeaderMap, name: HeaderName) -> Option<String> {
    headers.get(name).and_then(|value| value.to_str().ok()).map(str::to_owned)
}

/// Whole milliseconds of a duration, saturating, for error messages.
pub(crate) fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// An error with its causes: reqwest's own message ("error sending request") alone does not say what went wrong.
pub(crate) fn describe(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
