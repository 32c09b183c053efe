//! What the caller's words say about the end of their turn, for the `smart` strategy.
//!
//! The turn model listens to prosody, and it can be wrong both ways: it may take a pause after "my order number is"
//! for the end, or a flatly spoken "goodbye." for a pause. The words so far settle the clearest of those cases: a turn
//! whose last word cannot end an English sentence ("is", "the", "for", "um") is not over, and one the recogniser
//! closed with a full stop, question or exclamation mark after a word that can end a sentence most likely is.
//! Pure text rules, no I/O, so the engine's turn detector can apply them to whatever transcript it holds.

/// The verdict of the words alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextCue {
    /// The last word leaves the sentence open: the caller is mid-sentence, whatever the audio suggests.
    Continues,
    /// The recogniser ended the words with sentence-final punctuation after a word that can end a sentence.
    Finished,
    /// No words, or nothing either way.
    Unclear,
}

/// Words after which an English sentence goes on: articles, possessives, prepositions, conjunctions, forms of "be"
/// and hesitation sounds. A question may end in a preposition ("what is it for?"), so a question mark overrides them.
pub const CONTINUATION_WORDS: &[&str] = &[
    "a", "an", "the", "my", "your", "our", "their", "his", "her", "its", "to", "of", "for", "in", "on", "at", "with",
    "from", "by", "about", "into", "and", "but", "or", "so", "because", "if", "than", "that", "is", "are", "was",
    "were", "am", "be", "um", "uh", "er", "erm", "uhm",
];

/// Judges `text`, the caller's words since the last end of turn, against `continuation_words` (lower case).
pub fn text_cue(text: &str, continuation_words: &[String]) -> TextCue {
    let trimmed = text.trim_end();
    let Some(last_word) = trimmed.split_whitespace().next_back() else {
        return TextCue::Unclear;
    };
    let final_mark = last_word.chars().rev().find(|c| !c.is_alphanumeric() && !matches!(c, '"' | '\'' | ')'));
    let bare: String = last_word.chars().filter(|c| c.is_alphanumeric() || *c == '\'' || *c == '-').collect();
    let bare = bare.to_lowercase();
    if bare.is_empty() {
        return TextCue::Unclear;
    }
    if final_mark == Some('?') {
        return TextCue::Finished;
    }
    if continuation_words.contains(&bare) {
        return TextCue::Continues;
    }
    match final_mark {
        Some('.' | '!') if !last_word.ends_with("...") => TextCue::Finished,
        _ => TextCue::Unclear,
    }
}

/// The default list as owned strings (the configuration's default).
pub fn default_continuation_words() -> Vec<String> {
    CONTINUATION_WORDS.iter().map(|w| (*w).to_owned()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cue(text: &str) -> TextCue {
        text_cue(text, &default_continuation_words())
    }

    #[test]
    fn a_sentence_left_open_continues_whatever_its_punctuation() {
        assert_eq!(cue("My order number is"), TextCue::Continues);
        assert_eq!(cue("my order number is, um"), TextCue::Continues);
        assert_eq!(cue("I'd like to book a table for."), TextCue::Continues);
        assert_eq!(cue("Hello, can you look up my order please, my order number is um..."), TextCue::Continues);
    }

    #[test]
    fn a_closed_sentence_is_finished() {
        assert_eq!(cue("Great, and you goodbye."), TextCue::Finished);
        assert_eq!(cue("Sorry, when will it arrive?"), TextCue::Finished);
        assert_eq!(cue("That's all, thank you!"), TextCue::Finished);
        assert_eq!(cue("What is it for?"), TextCue::Finished, "a question may end in a preposition");
        assert_eq!(cue("He said \"goodbye.\""), TextCue::Finished);
    }

    #[test]
    fn unpunctuated_or_trailing_off_words_are_unclear() {
        assert_eq!(cue("my order number in four five six"), TextCue::Unclear);
        assert_eq!(cue("I was thinking..."), TextCue::Unclear);
        assert_eq!(cue(""), TextCue::Unclear);
        assert_eq!(cue("  ...  "), TextCue::Unclear);
    }

    #[test]
    fn the_list_is_the_configured_one() {
        let words = vec!["please".to_owned()];
        assert_eq!(text_cue("Look it up please.", &words), TextCue::Continues);
        assert_eq!(text_cue("My order number is.", &words), TextCue::Finished);
    }
}
