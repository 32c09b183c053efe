//! Shortening a tool result the agent has already answered from.
//!
//! Once the model has spoken its answer, the backend's full result (up to `mcp.result_max_chars` characters) rarely
//! matters again; what the answer used does. A JSON result keeps the fields whose values the answer mentions; a text
//! result keeps the lines that share a word or number with the answer. Either way the result is cut to a limit and
//! marked as shortened, so the model knows there was more.

use serde_json::Value;

use crate::text::excerpt;

/// Put before a shortened result.
pub const SHORTENED_MARK: &str = "[shortened; the fields the answer used] ";

/// `result` cut down to what `answer` used, at most `max_chars` characters (plus the mark); unchanged when already
/// short enough.
pub fn shorten_answered_result(result: &str, answer: &str, max_chars: usize) -> String {
    if result.chars().count() <= max_chars {
        return result.to_owned();
    }
    let answer = answer.to_lowercase();
    let used = match serde_json::from_str::<Value>(result) {
        Ok(value @ (Value::Object(_) | Value::Array(_))) => used_fields(&value, &answer),
        _ => used_lines(result, &answer),
    };
    let kept = if used.is_empty() { result } else { used.as_str() };
    format!("{SHORTENED_MARK}{}", excerpt(kept, max_chars))
}

/// The leaves of a JSON value whose text the answer mentions, as `path=value` pairs.
fn used_fields(value: &Value, answer: &str) -> String {
    let mut leaves = Vec::new();
    collect_leaves(value, String::new(), &mut leaves);
    leaves
        .into_iter()
        .filter(|(_, text)| mentions(answer, text))
        .map(|(path, text)| format!("{path}={text}"))
        .collect::<Vec<_>>()
        .join("; ")
}

fn collect_leaves(value: &Value, path: String, out: &mut Vec<(String, String)>) {
    let join = |key: &str| if path.is_empty() { key.to_owned() } else { format!("{path}.{key}") };
    match value {
        Value::Object(map) => map.iter().for_each(|(key, child)| collect_leaves(child, join(key), out)),
        Value::Array(items) => {
            items.iter().enumerate().for_each(|(index, child)| collect_leaves(child, join(&index.to_string()), out))
        }
        Value::String(text) => out.push((path, text.clone())),
        Value::Number(number) => out.push((path, number.to_string())),
        Value::Bool(_) | Value::Null => {}
    }
}

/// Lines of a text result that share a word of four letters or more, or a number, with the answer.
fn used_lines(result: &str, answer: &str) -> String {
    result.lines().filter(|line| words(line).any(|word| mentions(answer, word))).collect::<Vec<_>>().join("\n")
}

fn words(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|word| word.len() >= 4 || (!word.is_empty() && word.chars().all(|c| c.is_ascii_digit())))
}

/// Whether the (lower-case) answer mentions a value: the whole of it, or for a longer text, most of its words.
fn mentions(answer: &str, value: &str) -> bool {
    let value = value.trim().to_lowercase();
    if value.is_empty() {
        return false;
    }
    if contains_word(answer, &value) {
        return true;
    }
    let significant: Vec<&str> = words(&value).collect();
    significant.len() >= 2
        && significant.iter().filter(|word| contains_word(answer, word)).count() * 2 > significant.len()
}

/// Whether `text` contains `needle` standing on its own (not inside a longer word or number: "4" is not in "456").
fn contains_word(text: &str, needle: &str) -> bool {
    let alone = |c: Option<char>| c.is_none_or(|c| !c.is_alphanumeric());
    text.match_indices(needle)
        .any(|(at, _)| alone(text[..at].chars().next_back()) && alone(text[at + needle.len()..].chars().next()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORDER: &str = r#"{"order_id":"456","status":"shipped","carrier":"UPS","eta":"Friday","items":[{"sku":"A-1","name":"blue kettle","price":39.5},{"sku":"B-2","name":"tea towel","price":4}],"warehouse":"Leeds","notes":"left at the depot overnight because of a delay at the sorting centre"}"#;

    #[test]
    fn a_json_result_keeps_the_fields_the_answer_used() {
        let short = shorten_answered_result(ORDER, "Order 456 has shipped with UPS and arrives Friday.", 80);
        assert!(short.starts_with(SHORTENED_MARK), "{short}");
        for kept in ["order_id=456", "status=shipped", "carrier=UPS", "eta=Friday"] {
            assert!(short.contains(kept), "{kept} missing from {short}");
        }
        assert!(!short.contains("kettle") && !short.contains("Leeds"), "{short}");
    }

    #[test]
    fn a_text_result_keeps_the_lines_the_answer_shares_words_with() {
        let result = "Booking 88 confirmed for Saturday.\nTable by the window.\nParking is available nearby.";
        let short = shorten_answered_result(result, "Your booking for Saturday is confirmed.", 40);
        assert_eq!(short, format!("{SHORTENED_MARK}Booking 88 confirmed for Saturday."));
    }

    #[test]
    fn short_results_stay_and_unused_ones_are_cut() {
        assert_eq!(shorten_answered_result("{\"ok\":true}", "Done.", 40), "{\"ok\":true}");
        let long = "x".repeat(500);
        let short = shorten_answered_result(&long, "Nothing in common.", 40);
        assert_eq!(short, format!("{SHORTENED_MARK}{}…", "x".repeat(40)));
    }
}
