//! Cuts the LLM's token stream into pieces TTS can speak as soon as they are complete.
//!
//! A piece ends at a sentence end (`.`, `!`, `?` followed by a space), or at a clause break (`,`, `;`, `:`, a dash)
//! once it is long enough to sound natural. The first piece of a reply is cut more eagerly, because it decides how
//! soon the caller hears anything. Decimal points ("3.5") and common abbreviations ("Dr.") do not end a sentence.

const ABBREVIATIONS: [&str; 11] = ["mr", "mrs", "ms", "dr", "st", "jr", "sr", "vs", "etc", "e.g", "i.e"];

/// Chunking thresholds, in characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkerConfig {
    /// A clause break ends the first piece once it holds this many characters.
    pub first_clause_chars: usize,
    /// A clause break ends later pieces once they hold this many characters.
    pub clause_chars: usize,
    /// With no break at all, a piece is cut at a space past this length.
    pub max_chars: usize,
}

impl Default for ChunkerConfig {
    fn default() -> Self {
        ChunkerConfig { first_clause_chars: 12, clause_chars: 40, max_chars: 200 }
    }
}

/// Accumulates text deltas and yields speakable pieces.
#[derive(Debug, Default)]
pub struct SentenceChunker {
    config: ChunkerConfig,
    buffer: String,
    pieces_out: usize,
}

impl SentenceChunker {
    pub fn new(config: ChunkerConfig) -> Self {
        SentenceChunker { config, buffer: String::new(), pieces_out: 0 }
    }

    /// Adds a delta; returns every piece now complete (with its trailing space, so pieces concatenate verbatim).
    pub fn push(&mut self, delta: &str) -> Vec<String> {
        self.buffer.push_str(delta);
        let mut pieces = Vec::new();
        while let Some(end) = self.find_cut() {
            let piece: String = self.buffer.drain(..end).collect();
            if !piece.trim().is_empty() {
                self.pieces_out += 1;
                pieces.push(piece);
            }
        }
        pieces
    }

    /// The rest of the text at the end of the reply.
    pub fn finish(&mut self) -> Option<String> {
        let rest = std::mem::take(&mut self.buffer);
        if rest.trim().is_empty() {
            None
        } else {
            self.pieces_out += 1;
            Some(rest)
        }
    }

    /// Byte index just past the first cut point (including the whitespace after it), if the buffer has one.
    fn find_cut(&self) -> Option<usize> {
        let clause_min = if self.pieces_out == 0 { self.config.first_clause_chars } else { self.config.clause_chars };
        let text = &self.buffer;
        let mut last_space = None;
        let mut chars = text.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            let Some(&(next_i, next)) = chars.peek() else { break };
            if c.is_whitespace() && i < self.config.max_chars {
                last_space = Some(next_i);
            }
            if !next.is_whitespace() {
                continue;
            }
            let cut = next_i + next.len_utf8();
            let is_sentence_end = matches!(c, '.' | '!' | '?' | '…') && !self.is_abbreviation(&text[..i]);
            let is_clause_break = matches!(c, ',' | ';' | ':' | '—' | '–') && i >= clause_min;
            if is_sentence_end || is_clause_break {
                return Some(cut);
            }
        }
        match last_space {
            Some(space) if text.len() > self.config.max_chars => Some(space),
            _ => None,
        }
    }

    fn is_abbreviation(&self, before_period: &str) -> bool {
        let word = before_period.rsplit(|c: char| c.is_whitespace()).next().unwrap_or("");
        let word = word.to_ascii_lowercase();
        (word.len() == 1 && word.chars().all(|c| c.is_ascii_alphabetic())) || ABBREVIATIONS.contains(&word.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk_all(deltas: &[&str]) -> Vec<String> {
        let mut chunker = SentenceChunker::new(ChunkerConfig::default());
        let mut out: Vec<String> = deltas.iter().flat_map(|d| chunker.push(d)).collect();
        out.extend(chunker.finish());
        out
    }

    #[test]
    fn sentences_are_cut_as_soon_as_they_end() {
        let mut chunker = SentenceChunker::new(ChunkerConfig::default());
        assert!(chunker.push("Your order").is_empty());
        assert!(chunker.push(" shipped.").is_empty(), "the period may still be a decimal point");
        assert_eq!(chunker.push(" It"), vec!["Your order shipped. "]);
        assert!(chunker.push(" arrives Friday!").is_empty());
        assert_eq!(chunker.finish().as_deref(), Some("It arrives Friday!"));
    }

    #[test]
    fn pieces_concatenate_to_the_original_text() {
        let text = "Sure, let me check that for you. Order 456 shipped on Monday; it should arrive by Friday, \
                    around 3.5 days from now. Dr. Smith has a slot at 10 a.m. tomorrow. Anything else?";
        let deltas: Vec<String> = text.chars().collect::<Vec<_>>().chunks(3).map(|c| c.iter().collect()).collect();
        let refs: Vec<&str> = deltas.iter().map(String::as_str).collect();
        let pieces = chunk_all(&refs);
        assert_eq!(pieces.concat(), text);
        assert_eq!(pieces[0], "Sure, let me check that for you. ", "short first clause is not cut");
        assert!(pieces.iter().any(|p| p.ends_with("3.5 days from now. ")), "{pieces:?}");
        assert!(pieces.iter().any(|p| p.starts_with("Dr. Smith")), "{pieces:?}");
        assert!(!pieces.iter().any(|p| p.ends_with("a. ")), "{pieces:?}");
    }

    #[test]
    fn the_first_piece_is_cut_at_a_clause_when_long_enough() {
        let pieces = chunk_all(&["Thanks for waiting, I found your order and", " it is on its way."]);
        assert_eq!(pieces[0], "Thanks for waiting, ");
        let later = chunk_all(&["Okay. Then, later on, we could look again."]);
        assert_eq!(later, vec!["Okay. ", "Then, later on, we could look again."], "later clauses need 40 chars");
    }

    #[test]
    fn text_without_breaks_is_cut_at_a_space_when_too_long() {
        let long = "word ".repeat(60);
        let pieces = chunk_all(&[&long]);
        assert!(pieces.len() >= 2);
        assert!(pieces.iter().all(|p| p.len() <= 205));
        assert_eq!(pieces.concat(), long);
    }
}
