//! Cutting text to a number of characters (never inside a UTF-8 character): for excerpts in errors and logs, and for
//! what the model's context keeps of a long text.

/// At most `max_chars` characters of `text`.
pub fn prefix_chars(text: &str, max_chars: usize) -> &str {
    match text.char_indices().nth(max_chars) {
        Some((at, _)) => &text[..at],
        None => text,
    }
}

/// `text` cut to `max_chars` characters, with an ellipsis when it was cut.
pub fn excerpt(text: &str, max_chars: usize) -> String {
    let kept = prefix_chars(text, max_chars);
    if kept.len() < text.len() {
        format!("{kept}…")
    } else {
        text.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_on_characters_and_marks_the_cut() {
        assert_eq!(prefix_chars("héllo", 2), "hé");
        assert_eq!(prefix_chars("hi", 5), "hi");
        assert_eq!(excerpt("héllo", 2), "hé…");
        assert_eq!(excerpt("héllo", 5), "héllo");
    }
}
