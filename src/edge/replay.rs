//! Stream tokens already used: each opens one Media Stream, so a captured upgrade request cannot be replayed.

use std::collections::HashMap;
use std::sync::Mutex;

/// Tokens taken and when they expire. An entry is kept until its token would be refused as expired anyway, so the
/// map holds at most the tokens minted within one token lifetime (and only valid, Parley-minted ones get in).
#[derive(Debug, Default)]
pub(crate) struct UsedTokens {
    used: Mutex<HashMap<String, u64>>,
}

impl UsedTokens {
    /// Takes `token` (expiring at `expires_at`, unix seconds) for one stream; false when it was taken before.
    pub(crate) fn take(&self, token: &str, expires_at: u64, now: u64) -> bool {
        let mut used = self.used.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if used.contains_key(token) {
            return false;
        }
        used.retain(|_, expiry| *expiry >= now);
        used.insert(token.to_owned(), expires_at);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_taken_once_and_forgotten_after_it_expires() {
        let used = UsedTokens::default();
        assert!(used.take("a", 100, 10));
        assert!(!used.take("a", 100, 11), "replayed");
        assert!(used.take("b", 200, 150));
        assert_eq!(used.used.lock().map(|m| m.len()).unwrap_or(0), 1, "the expired token was pruned");
    }
}
