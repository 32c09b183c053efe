//! Per-turn latency accounting: when each stage of the end-of-speech → first-audio path happened.
//!
//! The record separates what the providers took from what Parley itself added (the hand-offs between stages), so
//! the budget "Parley adds single milliseconds" can be checked on every turn.

use std::time::Duration;

use tokio::time::Instant;

/// Timestamps of one caller turn and the agent's reply to it.
#[derive(Debug, Clone, Default)]
pub struct TurnLatency {
    pub turn_index: u64,
    /// Last voiced frame of the caller (VAD).
    pub speech_ended: Option<Instant>,
    /// The STT's final transcript that completed the turn arrived.
    pub stt_final: Option<Instant>,
    /// The turn detector decided the turn was over.
    pub end_of_turn: Option<Instant>,
    pub llm_request_sent: Option<Instant>,
    pub llm_first_token: Option<Instant>,
    /// The text of the first speakable piece was complete (its last character had arrived).
    pub first_piece_ready: Option<Instant>,
    /// The chunker released the first speakable piece (later than `first_piece_ready` only when it held the text,
    /// waiting for the next token to tell whether the piece had ended).
    pub first_piece: Option<Instant>,
    pub first_tts_request: Option<Instant>,
    pub first_tts_audio: Option<Instant>,
    /// The first media frame of the reply went to Twilio.
    pub first_audio_sent: Option<Instant>,
    pub barge_in_onset: Option<Instant>,
    pub clear_sent: Option<Instant>,
    /// Prompt tokens of the reply's first model request, as the provider counted them, and how many of them it read
    /// from its prompt cache: what the model's time to first token grows with.
    pub prompt_tokens: Option<u64>,
    pub cached_prompt_tokens: Option<u64>,
}

fn between(from: Option<Instant>, to: Option<Instant>) -> Option<Duration> {
    Some(to?.saturating_duration_since(from?))
}

fn ms(d: Option<Duration>) -> Option<f64> {
    d.map(|d| d.as_secs_f64() * 1000.0)
}

impl TurnLatency {
    /// End of the caller's speech to the first audio of the reply sent: what the caller experiences.
    pub fn speech_end_to_first_audio(&self) -> Option<Duration> {
        between(self.speech_ended.or(self.end_of_turn), self.first_audio_sent)
    }

    /// Time Parley itself added on the path: turn decision → LLM request, first piece's text complete → TTS request
    /// (whatever the chunker held, and the hand-off), and TTS audio → Twilio. Provider time (STT, LLM, TTS) is
    /// excluded.
    pub fn parley_added(&self) -> Option<Duration> {
        Some(
            between(self.end_of_turn, self.llm_request_sent)?
                + between(self.first_piece_ready.or(self.first_piece), self.first_tts_request)?
                + between(self.first_tts_audio, self.first_audio_sent)?,
        )
    }

    /// How long the chunker held the first piece's finished text before releasing it.
    pub fn chunker_hold(&self) -> Option<Duration> {
        between(self.first_piece_ready, self.first_piece)
    }

    /// Speech onset of a barge-in to Twilio `clear` sent.
    pub fn barge_in_reaction(&self) -> Option<Duration> {
        between(self.barge_in_onset, self.clear_sent)
    }

    /// Each measured stage in milliseconds, named as in the log line (stages that did not happen are left out).
    pub fn stages_ms(&self) -> Vec<(String, f64)> {
        [
            ("speech_end_to_first_audio", self.speech_end_to_first_audio()),
            ("speech_end_to_final", between(self.speech_ended, self.stt_final)),
            ("eot_to_llm_request", between(self.end_of_turn, self.llm_request_sent)),
            ("llm_first_token", between(self.llm_request_sent, self.llm_first_token)),
            ("first_token_to_piece", between(self.llm_first_token, self.first_piece_ready.or(self.first_piece))),
            ("chunker_hold", self.chunker_hold()),
            ("piece_to_tts_request", between(self.first_piece, self.first_tts_request)),
            ("tts_first_audio", between(self.first_tts_request, self.first_tts_audio)),
            ("tts_audio_to_twilio", between(self.first_tts_audio, self.first_audio_sent)),
            ("parley_added", self.parley_added()),
            ("barge_in_reaction", self.barge_in_reaction()),
        ]
        .into_iter()
        .filter_map(|(name, d)| ms(d).map(|ms| (name.to_owned(), ms)))
        .collect()
    }

    /// Logs the turn as one line of milliseconds per stage.
    pub fn log(&self, call_sid: &str) {
        tracing::info!(
            call_sid,
            turn = self.turn_index,
            speech_end_to_first_audio_ms = ms(self.speech_end_to_first_audio()),
            speech_end_to_final_ms = ms(between(self.speech_ended, self.stt_final)),
            eot_to_llm_request_ms = ms(between(self.end_of_turn, self.llm_request_sent)),
            llm_first_token_ms = ms(between(self.llm_request_sent, self.llm_first_token)),
            first_token_to_piece_ms = ms(between(self.llm_first_token, self.first_piece_ready.or(self.first_piece))),
            chunker_hold_ms = ms(self.chunker_hold()),
            piece_to_tts_request_ms = ms(between(self.first_piece, self.first_tts_request)),
            tts_first_audio_ms = ms(between(self.first_tts_request, self.first_tts_audio)),
            tts_audio_to_twilio_ms = ms(between(self.first_tts_audio, self.first_audio_sent)),
            parley_added_ms = ms(self.parley_added()),
            barge_in_reaction_ms = ms(self.barge_in_reaction()),
            prompt_tokens = self.prompt_tokens,
            cached_prompt_tokens = self.cached_prompt_tokens,
            "turn latency"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parley_added_sums_only_the_hand_offs() {
        let t = Instant::now();
        let at = |ms: u64| Some(t + Duration::from_millis(ms));
        let latency = TurnLatency {
            speech_ended: at(0),
            stt_final: at(500),
            end_of_turn: at(500),
            llm_request_sent: at(501),
            llm_first_token: at(801),
            first_piece_ready: at(840),
            first_piece: at(850),
            first_tts_request: at(852),
            first_tts_audio: at(942),
            first_audio_sent: at(945),
            ..TurnLatency::default()
        };
        assert_eq!(latency.parley_added(), Some(Duration::from_millis(16)), "the chunker's 10 ms hold counts");
        assert_eq!(latency.chunker_hold(), Some(Duration::from_millis(10)));
        assert_eq!(latency.speech_end_to_first_audio(), Some(Duration::from_millis(945)));
        assert_eq!(TurnLatency::default().parley_added(), None);
    }
}
