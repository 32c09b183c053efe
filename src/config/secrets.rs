//! Secrets come from the environment (or a file the environment points to), never from the config file, and are
//! never printed.

use std::fmt;

/// A secret string whose `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Secret(value)
    }
    /// The secret itself, for the one place that needs it (a MAC key, an auth header).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// The secrets Parley knows about.
#[derive(Debug, Clone, Default)]
pub struct Secrets {
    /// Twilio account auth token (primary), the key of `X-Twilio-Signature`.
    pub twilio_auth_token: Option<Secret>,
}

impl Secrets {
    /// Reads `NAME`, or the file named by `NAME_FILE` (the container-secrets convention).
    pub fn from_env() -> Self {
        Secrets { twilio_auth_token: read_secret("TWILIO_AUTH_TOKEN") }
    }
}

/// Reads a secret from `name` or from the file `name_FILE` points to; empty values count as unset.
pub fn read_secret(name: &str) -> Option<Secret> {
    let direct = std::env::var(name).ok();
    let from_file = || {
        let path = std::env::var(format!("{name}_FILE")).ok()?;
        std::fs::read_to_string(path).ok().map(|s| s.trim().to_owned())
    };
    direct.or_else(from_file).filter(|s| !s.is_empty()).map(Secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let s = Secret::new("hunter2".into());
        assert!(!format!("{s:?}").contains("hunter2"));
        assert!(!format!("{:?}", Secrets { twilio_auth_token: Some(s) }).contains("hunter2"));
    }
}
