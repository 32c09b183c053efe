//! Word error rate: how far the hot path's live transcript is from the offline Whisper transcript.

const DIGITS: [&str; 10] = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"];

/// Lower-cases and strips punctuation so that "Order #456." and "order 456" compare equal; apostrophes inside words
/// stay ("don't"), hyphens split words ("forty-two" → "forty two"). Digits are spelled one by one ("456" → "four
/// five six"): callers read order and account numbers digit by digit, and one engine writing "456" where the other
/// writes "four five six" is not a recognition error.
pub fn normalize(text: &str) -> Vec<String> {
    let mut cleaned = String::with_capacity(text.len());
    for c in text.chars() {
        if let Some(digit) = c.to_digit(10) {
            cleaned.push(' ');
            cleaned.push_str(DIGITS[digit as usize]);
            cleaned.push(' ');
        } else if c.is_alphanumeric() || c == '\'' {
            cleaned.extend(c.to_lowercase());
        } else {
            cleaned.push(' ');
        }
    }
    cleaned.split_whitespace().map(|w| w.trim_matches('\'').to_owned()).filter(|w| !w.is_empty()).collect()
}

/// Word-level Levenshtein distance (substitutions + deletions + insertions).
pub fn edit_distance(reference: &[String], hypothesis: &[String]) -> usize {
    let mut previous: Vec<usize> = (0..=hypothesis.len()).collect();
    let mut current = vec![0; hypothesis.len() + 1];
    for (i, r) in reference.iter().enumerate() {
        current[0] = i + 1;
        for (j, h) in hypothesis.iter().enumerate() {
            let substitution = previous[j] + usize::from(r != h);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        std::mem::swap(&mut previous, &mut current);
    }
    previous[hypothesis.len()]
}

/// Word error rate of `hypothesis` against `reference`: edits / reference words. An empty reference gives 0 when the
/// hypothesis is empty too and 1 otherwise (everything said was an insertion).
pub fn wer(reference: &str, hypothesis: &str) -> f64 {
    let reference = normalize(reference);
    let hypothesis = normalize(hypothesis);
    if reference.is_empty() {
        return if hypothesis.is_empty() { 0.0 } else { 1.0 };
    }
    edit_distance(&reference, &hypothesis) as f64 / reference.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_text_after_normalisation_is_zero() {
        assert_eq!(wer("Check order #456, please!", "check order four five six please"), 0.0);
        assert_eq!(normalize("Don't stop - forty-two"), vec!["don't", "stop", "forty", "two"]);
    }

    #[test]
    fn counts_each_kind_of_edit() {
        // One substitution in four words.
        assert_eq!(wer("a b c d", "a x c d"), 0.25);
        // One deletion.
        assert_eq!(wer("a b c d", "a b d"), 0.25);
        // Two insertions.
        assert_eq!(wer("a b", "a x b y"), 1.0);
    }

    #[test]
    fn empty_sides() {
        assert_eq!(wer("", ""), 0.0);
        assert_eq!(wer("", "hello"), 1.0);
        assert_eq!(wer("hello there", ""), 1.0);
    }
}
