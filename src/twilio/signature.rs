//! `X-Twilio-Signature`: HMAC over the public URL plus the sorted POST parameters.
//!
//! Twilio signs every webhook and the Media Stream WebSocket upgrade. Its backend is inconsistent about whether the
//! default port appears in the signed URL, so (like Twilio's own helpers) Parley accepts the URL both with and
//! without the port. JSON bodies are signed through a `bodySHA256` query parameter instead of body parameters.

use base64::Engine;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The MAC Twilio used: HMAC-SHA1 with the auth token (the default), or HMAC-SHA256 with a shared key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureAlgorithm {
    HmacSha1,
    HmacSha256,
}

/// Validates Twilio's signatures with one secret key.
#[derive(Clone)]
pub struct SignatureValidator {
    key: Vec<u8>,
    algorithm: SignatureAlgorithm,
}

impl std::fmt::Debug for SignatureValidator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignatureValidator").field("algorithm", &self.algorithm).finish_non_exhaustive()
    }
}

impl SignatureValidator {
    /// A validator for the classic scheme keyed with the account's primary auth token.
    pub fn new(auth_token: &str) -> Self {
        Self::with_algorithm(auth_token, SignatureAlgorithm::HmacSha1)
    }

    pub fn with_algorithm(key: &str, algorithm: SignatureAlgorithm) -> Self {
        SignatureValidator { key: key.as_bytes().to_vec(), algorithm }
    }

    /// Computes the signature Twilio would send for this URL and these form parameters.
    pub fn sign(&self, url: &str, params: &[(String, String)]) -> String {
        let payload = signed_payload(url, params);
        let digest = match self.algorithm {
            SignatureAlgorithm::HmacSha1 => mac::<Hmac<Sha1>>(&self.key, payload.as_bytes()),
            SignatureAlgorithm::HmacSha256 => mac::<Hmac<Sha256>>(&self.key, payload.as_bytes()),
        };
        base64::engine::general_purpose::STANDARD.encode(digest)
    }

    /// Checks a signature over a URL and form parameters (none for GET requests and WebSocket upgrades).
    pub fn validate(&self, url: &str, params: &[(String, String)], signature: &str) -> bool {
        url_port_variants(url).iter().any(|candidate| constant_time_eq(&self.sign(candidate, params), signature))
    }

    /// Checks a JSON-body request: the URL carries `bodySHA256`, which must match the raw body.
    pub fn validate_json_body(&self, url: &str, body: &[u8], signature: &str) -> bool {
        let Some(claimed) = query_value(url, "bodySHA256") else { return false };
        let actual = hex::encode(Sha256::digest(body));
        constant_time_eq(&actual, &claimed) && self.validate(url, &[], signature)
    }
}

fn mac<M: Mac + hmac::digest::KeyInit>(key: &[u8], data: &[u8]) -> Vec<u8> {
    // HMAC accepts keys of any length, so this cannot fail; an empty MAC would simply never validate.
    match <M as hmac::digest::KeyInit>::new_from_slice(key) {
        Ok(mut m) => {
            m.update(data);
            m.finalize().into_bytes().to_vec()
        }
        Err(_) => Vec::new(),
    }
}

fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// The string Twilio signs: the URL, then each parameter name and value, sorted, without separators.
fn signed_payload(url: &str, params: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    let mut payload = String::with_capacity(url.len() + params.len() * 16);
    payload.push_str(url);
    for (name, value) in sorted {
        payload.push_str(name);
        payload.push_str(value);
    }
    payload
}

fn query_value(url: &str, name: &str) -> Option<String> {
    let query = url.split_once('?')?.1;
    let query = query.split('#').next().unwrap_or(query);
    form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
}

/// The URL as given, without its port, and with the scheme's default port, as Twilio's helpers try them.
fn url_port_variants(url: &str) -> Vec<String> {
    let Some((scheme, rest)) = url.split_once("://") else { return vec![url.to_owned()] };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((user, host)) => (format!("{user}@"), host),
        None => (String::new(), authority),
    };
    let (host, port) = split_port(hostport);
    let default_port = match scheme {
        "https" | "wss" => "443",
        "http" | "ws" => "80",
        _ => return vec![url.to_owned()],
    };
    let without = format!("{scheme}://{userinfo}{host}{tail}");
    let with = format!("{scheme}://{userinfo}{host}:{}{tail}", port.unwrap_or(default_port));
    let mut variants = vec![url.to_owned(), without, with];
    variants.dedup();
    variants
}

fn split_port(hostport: &str) -> (&str, Option<&str>) {
    match hostport.rsplit_once(':') {
        Some((host, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) && !host.ends_with(':') => {
            (host, Some(port))
        }
        _ => (hostport, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn vectors() -> Value {
        let path = format!("{}/proto-fixtures/twilio/signature-vectors.json", env!("CARGO_MANIFEST_DIR"));
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    fn form_params(v: &Value) -> Vec<(String, String)> {
        v["params"].as_object().unwrap().iter().map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned())).collect()
    }

    fn s<'a>(v: &'a Value, key: &str) -> &'a str {
        v[key].as_str().unwrap()
    }

    #[test]
    fn documented_form_example_validates() {
        let v = vectors();
        let form = &v["form"];
        let validator = SignatureValidator::new(s(form, "auth_token"));
        let params = form_params(form);
        assert_eq!(validator.sign(s(form, "url"), &params), s(form, "signature"));
        assert!(validator.validate(s(form, "url"), &params, s(form, "signature")));
        assert!(validator.validate(s(form, "url_with_port"), &params, s(form, "signature")));
    }

    #[test]
    fn documented_sha256_example_signs() {
        let v = vectors();
        let form = &v["form"];
        let validator = SignatureValidator::with_algorithm(s(form, "auth_token"), SignatureAlgorithm::HmacSha256);
        assert_eq!(validator.sign(s(form, "url"), &form_params(form)), s(form, "signature_hmac_sha256"));
    }

    #[test]
    fn tampering_is_refused() {
        let v = vectors();
        let form = &v["form"];
        let validator = SignatureValidator::new(s(form, "auth_token"));
        let mut params = form_params(form);
        params[0].1.push('0');
        assert!(!validator.validate(s(form, "url"), &params, s(form, "signature")));
        assert!(!validator.validate(
            "https://mycompany.com/other.php?foo=1&bar=2",
            &form_params(form),
            s(form, "signature")
        ));
        assert!(!SignatureValidator::new("54321").validate(s(form, "url"), &form_params(form), s(form, "signature")));
        assert!(!validator.validate(s(form, "url"), &form_params(form), ""));
    }

    #[test]
    fn documented_json_example_validates() {
        let v = vectors();
        let json = &v["json"];
        let validator = SignatureValidator::new(s(json, "auth_token"));
        assert!(validator.validate_json_body(s(json, "url"), s(json, "body").as_bytes(), s(json, "signature")));
        assert!(!validator.validate_json_body(s(json, "url"), b"{\"property\": \"other\"}", s(json, "signature")));
        let without_hash = "https://mycompany.com/myapp.php?foo=1&bar=2";
        assert!(!validator.validate_json_body(without_hash, s(json, "body").as_bytes(), s(json, "signature")));
    }

    #[test]
    fn port_variants() {
        assert_eq!(
            url_port_variants("wss://h.example/twilio/media"),
            vec!["wss://h.example/twilio/media", "wss://h.example:443/twilio/media"]
        );
        assert_eq!(
            url_port_variants("http://h:8080/a?b=1"),
            vec!["http://h:8080/a?b=1", "http://h/a?b=1", "http://h:8080/a?b=1"]
        );
    }
}
