//! Cuts the LLM's token stream into pieces TTS can speak as soon as they are complete.
//!
//! A piece ends at a sentence end (`.`, `!`, `?`, `…`), or at a clause break (`,`, `;`, `:`, a dash) once it is long
//! enough to sound natural. The first piece of a reply is cut more eagerly, because it decides how soon the caller
//! hears anything.
//!
//! A piece is released the moment its last character arrives: a sentence that ends a token goes to TTS at once,
//! without waiting for the next token to show a space after it. Only an ending the next character could still undo
//! waits for it — a period after a digit ("3.5") or an abbreviation ("Dr."), a comma or colon after a digit
//! ("1,000", "10:30") — and for at most [`ChunkerConfig::ambiguity_wait`]; past that the text so far is spoken as it
//! stands. Every piece says when its text was complete ([`Piece::ready_at`]), so whatever the chunker held is
//! counted in the turn's latency.
//!
//! The chunker is pure: the caller passes the time and asks [`SentenceChunker::deadline`] when to call back.

use std::time::Duration;

use tokio::time::Instant;

const ABBREVIATIONS: [&str; 11] = ["mr", "mrs", "ms", "dr", "st", "jr", "sr", "vs", "etc", "e.g", "i.e"];

/// Chunking thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkerConfig {
    /// A clause break ends the first piece once it holds this many characters.
    pub first_clause_chars: usize,
    /// A clause break ends later pieces once they hold this many characters.
    pub clause_chars: usize,
    /// With no break at all, a piece is cut at a space past this length.
    pub max_chars: usize,
    /// How long an ending that the next character could undo ("3." of "3.5") waits for that character.
    pub ambiguity_wait: Duration,
}

impl Default for ChunkerConfig {
    fn default() -> Self {
        ChunkerConfig {
            first_clause_chars: 12,
            clause_chars: 40,
            max_chars: 200,
            ambiguity_wait: Duration::from_millis(DEFAULT_AMBIGUITY_WAIT_MS),
        }
    }
}

/// The default of [`ChunkerConfig::ambiguity_wait`], in milliseconds.
pub const DEFAULT_AMBIGUITY_WAIT_MS: u64 = 15;

/// A speakable piece of the reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    /// The text, verbatim: pieces concatenate to the model's text.
    pub text: String,
    /// When the piece's last character had arrived; it is released now, so `now - ready_at` is what the chunker held.
    pub ready_at: Instant,
}

/// Accumulates text deltas and yields speakable pieces; see the module documentation.
#[derive(Debug)]
pub struct SentenceChunker {
    config: ChunkerConfig,
    buffer: String,
    pieces_out: usize,
    /// The buffer ends with an ambiguous ending that arrived at this time.
    held_since: Option<Instant>,
}

/// Where the buffer may be cut.
enum Cut {
    /// Cut just past byte index `end`; the break that ends the piece is at byte index `at`.
    At { end: usize, at: usize },
    /// The buffer ends with a break (at byte index `at`) the next character could undo.
    Ambiguous { at: usize },
}

impl SentenceChunker {
    pub fn new(config: ChunkerConfig) -> Self {
        SentenceChunker { config, buffer: String::new(), pieces_out: 0, held_since: None }
    }

    /// Adds a delta that arrived at `now`; returns every piece now complete.
    pub fn push(&mut self, delta: &str, now: Instant) -> Vec<Piece> {
        // A break already in the buffer was held as ambiguous: its piece was complete when the break arrived.
        let held_since = self.held_since.take();
        let mut arrived_before = self.buffer.len();
        self.buffer.push_str(delta);
        let mut pieces = Vec::new();
        loop {
            match self.find_cut() {
                Some(Cut::At { end, at }) => {
                    let ready_at = if at < arrived_before { held_since.unwrap_or(now) } else { now };
                    let piece: String = self.buffer.drain(..end).collect();
                    arrived_before = arrived_before.saturating_sub(end);
                    self.emit(piece, ready_at, &mut pieces);
                }
                Some(Cut::Ambiguous { at }) => {
                    let since = if at < arrived_before { held_since.unwrap_or(now) } else { now };
                    self.held_since = Some(since);
                    break;
                }
                None => break,
            }
        }
        pieces
    }

    /// When held text must be released if no more text comes (see [`SentenceChunker::release_due`]).
    pub fn deadline(&self) -> Option<Instant> {
        self.held_since.map(|since| since + self.config.ambiguity_wait)
    }

    /// Releases held text whose wait is over: the ambiguous ending is taken as the end of a sentence.
    pub fn release_due(&mut self, now: Instant) -> Option<Piece> {
        let deadline = self.deadline()?;
        if now < deadline {
            return None;
        }
        let ready_at = self.held_since.take()?;
        let rest = std::mem::take(&mut self.buffer);
        let mut pieces = Vec::new();
        self.emit(rest, ready_at, &mut pieces);
        pieces.pop()
    }

    /// The rest of the text at the end of the reply.
    pub fn finish(&mut self, now: Instant) -> Option<Piece> {
        let ready_at = self.held_since.take().unwrap_or(now);
        let rest = std::mem::take(&mut self.buffer);
        let mut pieces = Vec::new();
        self.emit(rest, ready_at, &mut pieces);
        pieces.pop()
    }

    fn emit(&mut self, text: String, ready_at: Instant, pieces: &mut Vec<Piece>) {
        if !text.trim().is_empty() {
            self.pieces_out += 1;
            pieces.push(Piece { text, ready_at });
        }
    }

    /// The first cut point of the buffer, if it has one.
    fn find_cut(&self) -> Option<Cut> {
        let clause_min = if self.pieces_out == 0 { self.config.first_clause_chars } else { self.config.clause_chars };
        let text = &self.buffer;
        let mut last_space = None;
        let mut chars = text.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            let next = chars.peek().map(|&(next_i, next)| (next_i, next));
            if c.is_whitespace() && i < self.config.max_chars {
                if let Some((next_i, _)) = next {
                    last_space = Some(next_i);
                }
            }
            let is_sentence_end = matches!(c, '.' | '!' | '?' | '…');
            let is_clause_break = matches!(c, ',' | ';' | ':' | '—' | '–') && i >= clause_min;
            if !is_sentence_end && !is_clause_break {
                continue;
            }
            let before = &text[..i];
            match next {
                // The next character is known: a break needs white space after it.
                Some((next_i, next)) => {
                    if !next.is_whitespace() {
                        continue;
                    }
                    if c == '.' && self.is_abbreviation(before) {
                        continue;
                    }
                    return Some(Cut::At { end: next_i + next.len_utf8(), at: i });
                }
                // The break is the last character so far: release it now unless the next one could undo it.
                None => {
                    let ambiguous = match c {
                        '.' => ends_with_digit(before) || self.is_abbreviation(before),
                        ',' | ':' => ends_with_digit(before),
                        _ => false,
                    };
                    return Some(if ambiguous {
                        Cut::Ambiguous { at: i }
                    } else {
                        Cut::At { end: i + c.len_utf8(), at: i }
                    });
                }
            }
        }
        match last_space {
            Some(space) if text.len() > self.config.max_chars => Some(Cut::At { end: space, at: text.len() - 1 }),
            _ => None,
        }
    }

    fn is_abbreviation(&self, before_period: &str) -> bool {
        let word = before_period.rsplit(|c: char| c.is_whitespace()).next().unwrap_or("");
        let word = word.to_ascii_lowercase();
        (word.len() == 1 && word.chars().all(|c| c.is_ascii_alphabetic())) || ABBREVIATIONS.contains(&word.as_str())
    }
}

fn ends_with_digit(text: &str) -> bool {
    text.chars().next_back().is_some_and(|c| c.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(pieces: Vec<Piece>) -> Vec<String> {
        pieces.into_iter().map(|p| p.text).collect()
    }

    fn chunk_all(deltas: &[&str]) -> Vec<String> {
        let now = Instant::now();
        let mut chunker = SentenceChunker::new(ChunkerConfig::default());
        let mut out: Vec<String> = deltas.iter().flat_map(|d| texts(chunker.push(d, now))).collect();
        out.extend(chunker.finish(now).map(|p| p.text));
        out
    }

    #[test]
    fn a_sentence_is_released_when_its_last_character_arrives() {
        let now = Instant::now();
        let mut chunker = SentenceChunker::new(ChunkerConfig::default());
        assert!(chunker.push("Your order", now).is_empty());
        let pieces = chunker.push(" shipped.", now);
        assert_eq!(texts(pieces), vec!["Your order shipped."], "no wait for the next token");
        assert_eq!(chunker.deadline(), None);
        assert!(chunker.push(" It", now).is_empty());
        assert!(texts(chunker.push(" arrives Friday!", now)) == vec![" It arrives Friday!"]);
        assert_eq!(chunker.finish(now), None);
    }

    #[test]
    fn a_whole_sentence_in_one_token_goes_at_once() {
        let now = Instant::now();
        let mut chunker = SentenceChunker::new(ChunkerConfig::default());
        let pieces = chunker.push("Sure, let me check on that for you.", now);
        assert_eq!(texts(pieces), vec!["Sure, let me check on that for you."]);
    }

    #[test]
    fn a_decimal_point_waits_for_the_next_character_but_not_longer() {
        let start = Instant::now();
        let wait = ChunkerConfig::default().ambiguity_wait;
        let mut chunker = SentenceChunker::new(ChunkerConfig::default());
        assert!(chunker.push("It is 3.", start).is_empty(), "3. may be 3.5");
        assert_eq!(chunker.deadline(), Some(start + wait));
        assert!(chunker.push("5 kilos", start + Duration::from_millis(5)).is_empty());
        assert_eq!(chunker.deadline(), None, "the digit settled it");
        let later = start + Duration::from_millis(40);
        assert!(chunker.push(" in total.", later).len() == 1);

        let mut chunker = SentenceChunker::new(ChunkerConfig::default());
        assert!(chunker.push("The total is 3.", start).is_empty());
        assert_eq!(chunker.release_due(start + wait - Duration::from_millis(1)), None, "not yet");
        let piece = chunker.release_due(start + wait).expect("released at the deadline");
        assert_eq!(piece.text, "The total is 3.");
        assert_eq!(piece.ready_at, start, "the hold is measured from the period's arrival");
        assert_eq!(chunker.deadline(), None);
    }

    #[test]
    fn held_text_resolved_by_a_space_counts_from_its_arrival() {
        let start = Instant::now();
        let mut chunker = SentenceChunker::new(ChunkerConfig::default());
        assert!(chunker.push("Dr.", start).is_empty());
        assert!(chunker.push(" Smith can see you at 10", start + Duration::from_millis(3)).is_empty());
        assert!(chunker.push(".", start + Duration::from_millis(6)).is_empty(), "10. may be 10.5");
        let pieces = chunker.push(" Bye", start + Duration::from_millis(9));
        assert_eq!(texts(pieces.clone()), vec!["Dr. Smith can see you at 10. "]);
        assert_eq!(pieces[0].ready_at, start + Duration::from_millis(6));
    }

    #[test]
    fn numbers_with_commas_and_colons_are_not_cut() {
        let pieces = chunk_all(&["That comes to 1,", "000 dollars, due at 10:", "30 tomorrow."]);
        assert_eq!(pieces.concat(), "That comes to 1,000 dollars, due at 10:30 tomorrow.");
        assert!(pieces[0].starts_with("That comes to 1,000 dollars,"), "{pieces:?}");
    }

    #[test]
    fn pieces_concatenate_to_the_original_text() {
        let text = "Sure, let me check that for you. Order 456 shipped on Monday; it should arrive by Friday, \
                    around 3.5 days from now. Dr. Smith has a slot at 10 a.m. tomorrow. Anything else?";
        let deltas: Vec<String> = text.chars().collect::<Vec<_>>().chunks(3).map(|c| c.iter().collect()).collect();
        let refs: Vec<&str> = deltas.iter().map(String::as_str).collect();
        let pieces = chunk_all(&refs);
        assert_eq!(pieces.concat(), text);
        assert_eq!(pieces[0].trim_end(), "Sure, let me check that for you.", "short first clause is not cut");
        assert!(pieces.iter().any(|p| p.trim_end().ends_with("3.5 days from now.")), "{pieces:?}");
        assert!(pieces.iter().any(|p| p.trim_start().starts_with("Dr. Smith")), "{pieces:?}");
        assert!(!pieces.iter().any(|p| p.ends_with("a. ") || p.ends_with(" a.")), "{pieces:?}");
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
