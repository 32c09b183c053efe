//! How much of a reply the caller actually heard, as text, for the history after a barge-in.
//!
//! The playout queue knows how much audio was played (marks and the clock); the reply knows the text it sent to TTS
//! and the audio it got back. When synthesis had finished, audio and text map proportionally; when it had not, the
//! text is estimated from the speaking rate measured on earlier replies. The cut falls on a word boundary, never
//! past what was played.

/// Speaking rate assumed before any reply was measured (characters per second of synthesized speech).
pub const DEFAULT_CHARS_PER_SECOND: f64 = 15.0;

/// The prefix of `text` the caller heard, given the reply's audio heard and received so far (bytes of 8 kHz μ-law).
pub fn heard_prefix(
    text: &str,
    heard_bytes: u64,
    audio_bytes: u64,
    synthesis_done: bool,
    chars_per_second: f64,
) -> &str {
    if heard_bytes == 0 || text.is_empty() {
        return "";
    }
    let total_chars = text.chars().count();
    let chars = if synthesis_done && audio_bytes > 0 {
        if heard_bytes >= audio_bytes {
            return text;
        }
        (total_chars as f64 * heard_bytes as f64 / audio_bytes as f64).floor() as usize
    } else {
        let heard_seconds = heard_bytes as f64 / 8000.0;
        (heard_seconds * chars_per_second).floor() as usize
    };
    if chars >= total_chars {
        return text;
    }
    let cut = text.char_indices().nth(chars).map(|(i, _)| i).unwrap_or(text.len());
    // Only whole words: back up to the last whitespace before the cut (a word cut in half was not understood).
    match text[..cut].rfind(char::is_whitespace) {
        Some(space) => text[..space].trim_end(),
        None => "",
    }
}

/// A running estimate of the TTS voice's speaking rate, from replies that finished synthesizing.
#[derive(Debug, Clone, Copy)]
pub struct SpeakingRate {
    chars: f64,
    seconds: f64,
}

impl Default for SpeakingRate {
    fn default() -> Self {
        SpeakingRate { chars: 0.0, seconds: 0.0 }
    }
}

impl SpeakingRate {
    /// Adds a finished reply: its text and the audio synthesized for it.
    pub fn observe(&mut self, text: &str, audio_bytes: u64) {
        if audio_bytes > 0 && !text.is_empty() {
            self.chars += text.chars().count() as f64;
            self.seconds += audio_bytes as f64 / 8000.0;
        }
    }

    pub fn chars_per_second(&self) -> f64 {
        if self.seconds > 0.5 {
            self.chars / self.seconds
        } else {
            DEFAULT_CHARS_PER_SECOND
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "Your order shipped on Monday and arrives Friday.";

    #[test]
    fn finished_synthesis_maps_audio_to_text_proportionally() {
        let audio = 8000 * 4; // four seconds for the whole text
        assert_eq!(heard_prefix(TEXT, audio / 2, audio, true, 15.0), "Your order shipped on");
        assert_eq!(heard_prefix(TEXT, audio, audio, true, 15.0), TEXT);
        assert_eq!(heard_prefix(TEXT, 0, audio, true, 15.0), "");
        assert_eq!(heard_prefix(TEXT, 100, audio, true, 15.0), "", "less than a word");
    }

    #[test]
    fn unfinished_synthesis_uses_the_speaking_rate() {
        // One second at 15 chars/s: "Your order ship|ped" → whole words only.
        assert_eq!(heard_prefix(TEXT, 8000, 8000 * 2, false, 15.0), "Your order");
        assert_eq!(heard_prefix(TEXT, 8000 * 10, 8000 * 2, false, 15.0), TEXT);
    }

    #[test]
    fn speaking_rate_is_learned() {
        let mut rate = SpeakingRate::default();
        assert_eq!(rate.chars_per_second(), DEFAULT_CHARS_PER_SECOND);
        rate.observe(&"x".repeat(20), 8000);
        assert_eq!(rate.chars_per_second(), 20.0);
    }

    #[test]
    fn multibyte_text_is_cut_on_char_boundaries() {
        let text = "Ça coûte vingt-deux euros, très bien.";
        let out = heard_prefix(text, 8000, 8000 * 2, true, 15.0);
        assert!(text.starts_with(out));
    }
}
