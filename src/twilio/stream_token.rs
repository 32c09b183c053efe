//! The per-call token in a Media Stream URL.
//!
//! Twilio signs the WebSocket upgrade over the Stream URL from the TwiML. Without anything per call in that URL every
//! upgrade carries the same signature, valid forever: one captured header opens any number of streams. So the voice
//! webhook (whose signature covers the call's parameters) mints a token bound to the `CallSid` with an expiry and
//! puts it in the Stream URL's path — Twilio refuses a query string there (error 31920). The upgrade is then signed
//! over a URL that names the call; Parley checks the token's MAC and expiry at the upgrade, takes it only once, and
//! checks that `start` names the same call.
//!
//! Token: `<CallSid>.<expiry, unix seconds>.<nonce>.<base64url HMAC-SHA256(key, "<CallSid>.<expiry>.<nonce>")>`, the
//! key derived from the auth token, so every replica mints and checks the same tokens. The nonce (hex, unique per
//! mint) keeps two streams of one call (a redirect back to the webhook) from sharing a token.

use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::validate::is_sid;

/// Domain separation: the token key is not the auth token itself.
const KEY_LABEL: &[u8] = b"parley media stream upgrade token v1";
/// Tokens are compared after decoding; anything longer than this is not one of Parley's.
const MAX_TOKEN_LEN: usize = 128;
/// Longest nonce accepted (Parley mints at most 32 hex digits).
const MAX_NONCE_LEN: usize = 32;
/// Mints in this process so far: with the time, it makes every nonce unique.
static MINTED: AtomicU64 = AtomicU64::new(0);

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is not in Parley's format")]
    Malformed,
    #[error("the token was not minted with this auth token")]
    BadMac,
    #[error("the token expired")]
    Expired,
}

/// A token that passed its MAC and expiry checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedToken {
    /// The call it was minted for; `start` must name the same call.
    pub call_sid: String,
    /// Unix seconds after which it is refused.
    pub expires_at: u64,
}

/// Mints and checks stream tokens with a key derived from the auth token.
#[derive(Clone)]
pub struct StreamTokens {
    key: [u8; 32],
}

impl std::fmt::Debug for StreamTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamTokens").finish_non_exhaustive()
    }
}

impl StreamTokens {
    /// Tokens keyed from the account's auth token (the one Twilio signs with).
    pub fn from_auth_token(auth_token: &str) -> Self {
        StreamTokens { key: hmac_sha256(auth_token.as_bytes(), KEY_LABEL) }
    }

    /// A token for `call_sid` that expires at `expires_at` (unix seconds). Callers pass a valid Twilio CallSid.
    pub fn mint(&self, call_sid: &str, expires_at: u64) -> String {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let nonce = format!("{nanos:x}{:x}", MINTED.fetch_add(1, Ordering::Relaxed) & 0xffff);
        self.mint_with_nonce(call_sid, expires_at, &nonce)
    }

    fn mint_with_nonce(&self, call_sid: &str, expires_at: u64, nonce: &str) -> String {
        let claim = format!("{call_sid}.{expires_at}.{nonce}");
        let mac = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(hmac_sha256(&self.key, claim.as_bytes()));
        format!("{claim}.{mac}")
    }

    /// Checks the MAC (constant time) and the expiry against `now` (unix seconds).
    pub fn verify(&self, token: &str, now: u64) -> Result<VerifiedToken, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed);
        }
        let mut parts = token.splitn(4, '.');
        let (Some(call_sid), Some(expiry), Some(nonce), Some(mac)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let is_digits = |s: &str, hex: bool| {
            !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit() || (hex && matches!(b, b'a'..=b'f')))
        };
        if !is_sid("CA", call_sid)
            || !is_digits(expiry, false)
            || !is_digits(nonce, true)
            || nonce.len() > MAX_NONCE_LEN
        {
            return Err(TokenError::Malformed);
        }
        let expires_at: u64 = expiry.parse().map_err(|_| TokenError::Malformed)?;
        let claimed =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(mac).map_err(|_| TokenError::Malformed)?;
        let expected = hmac_sha256(&self.key, format!("{call_sid}.{expiry}.{nonce}").as_bytes());
        if !bool::from(claimed.as_slice().ct_eq(&expected)) {
            return Err(TokenError::BadMac);
        }
        if now > expires_at {
            return Err(TokenError::Expired);
        }
        Ok(VerifiedToken { call_sid: call_sid.to_owned(), expires_at })
    }
}

/// A Stream URL (`…/twilio/media`) with a token appended as its last path segment, as the voice webhook writes it.
pub fn stream_url_with_token(stream_url: &str, token: &str) -> String {
    format!("{}/{token}", stream_url.trim_end_matches('/'))
}

/// Unix seconds now, for minting and checking tokens.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC takes keys of any length, so `new_from_slice` cannot fail here.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC takes any key"));
    mac.update(data);
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CALL: &str = "CA0123456789abcdef0123456789abcdef";

    #[test]
    fn a_minted_token_verifies_until_it_expires() {
        let tokens = StreamTokens::from_auth_token("secret");
        let token = tokens.mint(CALL, 1_000);
        assert_eq!(tokens.verify(&token, 999), Ok(VerifiedToken { call_sid: CALL.into(), expires_at: 1_000 }));
        assert_eq!(tokens.verify(&token, 1_000).map(|t| t.call_sid), Ok(CALL.to_owned()));
        assert_eq!(tokens.verify(&token, 1_001), Err(TokenError::Expired));
        assert!(token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_'), "{token}");
    }

    #[test]
    fn tampered_or_foreign_tokens_are_refused() {
        let tokens = StreamTokens::from_auth_token("secret");
        let token = tokens.mint(CALL, 1_000);
        assert_eq!(StreamTokens::from_auth_token("other").verify(&token, 0), Err(TokenError::BadMac));
        let later = token.replacen(".1000.", ".9999.", 1);
        assert_eq!(tokens.verify(&later, 0), Err(TokenError::BadMac), "the expiry is covered by the MAC");
        let other_call = token.replacen("CA0", "CA1", 1);
        assert_eq!(tokens.verify(&other_call, 0), Err(TokenError::BadMac), "the call is covered by the MAC");
        assert_ne!(tokens.mint(CALL, 1_000), token, "every mint is unique");
        let nonce = tokens.mint_with_nonce(CALL, 1_000, "ab12");
        assert_eq!(tokens.verify(&nonce.replacen(".ab12.", ".ab13.", 1), 0), Err(TokenError::BadMac));
        for bad in [
            "",
            "x",
            "CA1.2",
            &format!("{CALL}.1000"),
            &format!("{CALL}.1000.ab"),
            &format!("{CALL}.-1.ab.abc"),
            &format!("{CALL}..ab.abc"),
            &format!("{CALL}.1000.XYZ.abc"),
            &format!("{CALL}.1000.ab.!!"),
        ] {
            assert_eq!(tokens.verify(bad, 0), Err(TokenError::Malformed), "{bad:?}");
        }
        assert_eq!(tokens.verify(&"A".repeat(500), 0), Err(TokenError::Malformed));
    }
}
