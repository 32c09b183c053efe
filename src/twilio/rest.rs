//! The one Twilio REST request Parley makes: updating a live call (`POST /2010-04-01/Accounts/{AccountSid}/Calls/
//! {CallSid}.json`) with new TwiML, which is how a call inside `<Connect><Stream>` is transferred to a person.
//!
//! Building the request is pure and tested here; sending it is [`crate::engine::call_control`]'s job.

use quick_xml::escape::escape;

/// Twilio's production API.
pub const DEFAULT_API_BASE: &str = "https://api.twilio.com";

/// Twilio's error code for "the call is not found / already over"; a hang-up that finds the call gone succeeded.
pub const ERROR_NOT_FOUND: u64 = 20404;

/// The path of the call-update request.
pub fn call_update_path(account_sid: &str, call_sid: &str) -> String {
    format!("/2010-04-01/Accounts/{account_sid}/Calls/{call_sid}.json")
}

/// TwiML that dials `number` (replacing the `<Connect><Stream>`, so the media stream stops and the caller hears the
/// ringing of the new leg).
pub fn dial_twiml(number: &str) -> String {
    format!("<Response><Dial>{}</Dial></Response>", escape(number))
}

/// The form body of a transfer: `Twiml=<Response><Dial>…`.
pub fn transfer_form(number: &str) -> Vec<(&'static str, String)> {
    vec![("Twiml", dial_twiml(number))]
}

/// The Twilio error code in an error response body, if it has one.
pub fn error_code(body: &str) -> Option<u64> {
    serde_json::from_str::<serde_json::Value>(body).ok()?.get("code")?.as_u64()
}

/// Whether `number` looks like an E.164 phone number (`+` and 8 to 15 digits): what `<Dial>` is given.
pub fn is_e164(number: &str) -> bool {
    number
        .strip_prefix('+')
        .is_some_and(|digits| (8..=15).contains(&digits.len()) && digits.chars().all(|c| c.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_update_path_names_account_and_call() {
        assert_eq!(call_update_path("AC123", "CA456"), "/2010-04-01/Accounts/AC123/Calls/CA456.json");
    }

    #[test]
    fn dial_twiml_escapes_what_it_is_given() {
        assert_eq!(dial_twiml("+15550009999"), "<Response><Dial>+15550009999</Dial></Response>");
        assert_eq!(dial_twiml("<x>&"), "<Response><Dial>&lt;x&gt;&amp;</Dial></Response>");
    }

    #[test]
    fn error_codes_come_from_the_json_body() {
        let body = r#"{"code": 20404, "message": "The requested resource was not found", "status": 404}"#;
        assert_eq!(error_code(body), Some(ERROR_NOT_FOUND));
        assert_eq!(error_code("not json"), None);
    }

    #[test]
    fn e164_numbers_only() {
        assert!(is_e164("+15550009999"));
        assert!(!is_e164("15550009999"));
        assert!(!is_e164("+1555"));
        assert!(!is_e164("+1555000999a"));
    }
}
