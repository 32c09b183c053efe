//! Turn-taking: when has the caller finished, and when are they interrupting the agent?
//!
//! A pure state machine fed with VAD verdicts, the STT's events and the clock; it answers with decisions and does no
//! I/O, so every rule is unit-tested. End of turn follows a configurable strategy:
//! - `stt`: the provider's endpointing — join every final piece until one has `speech_final`; `UtteranceEnd` is the
//!   backstop when `speech_final` never comes.
//! - `vad`: Parley's own silence timeout — after `vad_silence_ms` of silence ask the STT to finalize, and end the turn
//!   on the flushed result (or after `finalize_timeout_ms` with what is there).
//! - `smart`: a turn model — after `smart_pause_ms` of silence the engine asks the model (over the caller's recent
//!   audio) whether the turn is complete; if so, finalize as `vad` does, else ask again after each further
//!   `smart_pause_ms` of silence (the model hears the longer silence), finalizing after `smart_max_silence_ms` of
//!   silence whatever it said. The words heard so far settle the clear cases ([`super::turn_text`]): a turn whose last
//!   word leaves the sentence open is not ended on the model's word — neither when the model is asked nor when the
//!   finalized words come back ending so, unless the longest silence forced the finalize —, and one the recogniser
//!   closed with a full stop ends once the model has been asked and the silence has lasted twice `smart_pause_ms`.
//!
//! Barge-in: while the agent speaks, caller speech that lasts `barge_in_min_speech_ms` (and, optionally, carries
//! `barge_in_min_words` words that are not all backchannels like "uh-huh") interrupts it. Shorter noise does not.

use std::time::Duration;

use serde::Deserialize;
use tokio::time::Instant;

use super::resume::ResumeConfig;
use super::turn_text::{default_continuation_words, text_cue, TextCue};
use crate::audio::FRAME_MILLIS;
use crate::stt::Transcript;

/// How the end of the caller's turn is decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum TurnStrategy {
    /// Parley's silence timeout, then an STT finalize.
    Vad,
    /// The STT provider's endpointing (`speech_final`, `UtteranceEnd`).
    #[default]
    Stt,
    /// A turn model judges each pause in the caller's speech, then an STT finalize.
    Smart,
}

/// Thresholds for turn-taking and barge-in.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TurnConfig {
    pub strategy: TurnStrategy,
    /// Voiced audio needed before Parley believes the caller is speaking.
    pub min_speech_ms: u64,
    /// `vad` strategy: silence that ends the caller's speech.
    pub vad_silence_ms: u64,
    /// `vad` and `smart` strategies: how long to wait for the STT's finalized text.
    pub finalize_timeout_ms: u64,
    /// `smart` strategy: the pause in the caller's speech at which the turn model is asked.
    pub smart_pause_ms: u64,
    /// `smart` strategy: silence that ends the turn whatever the model judged.
    pub smart_max_silence_ms: u64,
    /// `smart` strategy: words after which a sentence goes on (lower case); a turn ending in one is not over whatever
    /// the model judged.
    pub continuation_words: Vec<String>,
    /// Caller speech during agent audio that interrupts it.
    pub barge_in_min_speech_ms: u64,
    /// Words of interim transcript that must confirm a barge-in (0: VAD alone decides, fastest).
    pub barge_in_min_words: usize,
    /// Words that never interrupt the agent on their own, and are not a turn while the agent speaks.
    pub backchannels: Vec<String>,
    /// Resuming a reply after a false interruption (`[conversation.turn.resume]`).
    pub resume: ResumeConfig,
}

impl Default for TurnConfig {
    fn default() -> Self {
        TurnConfig {
            strategy: TurnStrategy::Stt,
            min_speech_ms: 100,
            vad_silence_ms: 500,
            finalize_timeout_ms: 800,
            smart_pause_ms: 300,
            smart_max_silence_ms: 2_000,
            continuation_words: default_continuation_words(),
            barge_in_min_speech_ms: 140,
            barge_in_min_words: 0,
            backchannels: [
                "uh-huh", "uh huh", "mm-hmm", "mhm", "mm", "yeah", "yes", "yep", "okay", "ok", "right", "sure",
            ]
            .map(String::from)
            .to_vec(),
            resume: ResumeConfig::default(),
        }
    }
}

/// What the turn detector decided.
#[derive(Debug, Clone, PartialEq)]
pub enum TurnDecision {
    /// The caller started speaking (VAD onset, back-dated to the first voiced frame).
    SpeechStarted { onset: Instant },
    /// `vad` strategy: ask the STT to flush what it heard.
    RequestFinalize,
    /// The caller interrupts the agent: clear audio and cancel the reply now.
    BargeIn { onset: Instant },
    /// The caller's turn is over.
    EndOfTurn(EndOfTurn),
    /// `smart` strategy: the caller paused; ask the turn model, and report its answer with this id
    /// ([`TurnDetector::on_judgement`]).
    JudgeTurn { id: u64 },
}

/// A finished caller turn, with the timestamps latency accounting needs.
#[derive(Debug, Clone, PartialEq)]
pub struct EndOfTurn {
    pub text: String,
    /// Last voiced frame of the caller, by VAD.
    pub speech_ended_at: Option<Instant>,
    /// When the final transcript that completed the turn arrived.
    pub final_at: Instant,
}

/// The turn-taking state of one call.
#[derive(Debug)]
pub struct TurnDetector {
    config: TurnConfig,
    agent_speaking: bool,
    in_speech: bool,
    voiced_run_ms: u64,
    unvoiced_run_ms: u64,
    onset: Option<Instant>,
    last_voiced_at: Option<Instant>,
    barged_in: bool,
    finals: Vec<String>,
    interim: String,
    awaiting_finalize_since: Option<Instant>,
    /// Speech was heard since the last end of turn (the `smart` strategy judges only such pauses).
    turn_open: bool,
    /// The pause the turn model is judging now; voice before its answer makes the answer stale.
    judging: Option<u64>,
    judgements_asked: u64,
    /// The silence (ms) at which the turn model is next asked about the current pause.
    next_judgement_ms: u64,
    /// The model answered "incomplete" about the current pause (or the words overruled its "complete").
    heard_incomplete: bool,
    /// What the words heard since the last end of turn say, updated with each transcript.
    text_cue: TextCue,
    /// The finalize awaited was forced by the longest silence: its words end the turn whatever they say.
    finalize_forced: bool,
}

const FRAME_MS: u64 = FRAME_MILLIS as u64;

impl TurnDetector {
    pub fn new(config: TurnConfig) -> Self {
        TurnDetector {
            config,
            agent_speaking: false,
            in_speech: false,
            voiced_run_ms: 0,
            unvoiced_run_ms: 0,
            onset: None,
            last_voiced_at: None,
            barged_in: false,
            finals: Vec::new(),
            interim: String::new(),
            awaiting_finalize_since: None,
            turn_open: false,
            judging: None,
            judgements_asked: 0,
            next_judgement_ms: 0,
            heard_incomplete: false,
            text_cue: TextCue::Unclear,
            finalize_forced: false,
        }
    }

    pub fn config(&self) -> &TurnConfig {
        &self.config
    }

    /// Whether the agent's audio is playing (or about to): speech now would be a barge-in.
    pub fn set_agent_speaking(&mut self, speaking: bool) {
        self.agent_speaking = speaking;
        if !speaking {
            self.barged_in = false;
        }
    }

    /// Whether a barge-in over the agent's audio now waits for the caller's words (`barge_in_min_words`): the agent
    /// speaks, has not been interrupted yet, and words are what decide it.
    pub fn barge_in_waits_for_words(&self) -> bool {
        self.agent_speaking && !self.barged_in && self.config.barge_in_min_words > 0
    }

    /// The caller is speaking now, by VAD.
    pub fn caller_speaking(&self) -> bool {
        self.in_speech
    }

    /// Speech or words came since the last end of turn: the turn is not over.
    pub fn turn_in_progress(&self) -> bool {
        self.turn_open || !self.finals.is_empty() || !self.interim.is_empty()
    }

    /// Forgets words heard so far (their recognition session was lost). Returns whether there were any.
    pub fn discard_pending(&mut self) -> bool {
        let had_words = !self.finals.is_empty() || !self.interim.trim().is_empty();
        self.finals.clear();
        self.interim.clear();
        self.text_cue = TextCue::Unclear;
        self.awaiting_finalize_since = None;
        had_words
    }

    /// One 20 ms VAD verdict, observed at `now`.
    pub fn on_vad(&mut self, voiced: bool, now: Instant) -> Vec<TurnDecision> {
        let mut decisions = Vec::new();
        if voiced {
            self.voiced_run_ms += FRAME_MS;
            if self.unvoiced_run_ms >= self.config.smart_pause_ms {
                // Speech after a pause: the words heard before it no longer tell where the sentence ends.
                self.text_cue = TextCue::Unclear;
            }
            self.unvoiced_run_ms = 0;
            self.last_voiced_at = Some(now);
            // The caller goes on: a judgement of the pause before is stale.
            self.judging = None;
            self.next_judgement_ms = self.config.smart_pause_ms;
            self.heard_incomplete = false;
            if !self.in_speech && self.voiced_run_ms >= self.config.min_speech_ms {
                self.in_speech = true;
                self.turn_open = true;
                // Under `vad` the silence timeout has ended the turn: the finalize's words close it even when they
                // come back after the caller has started again (that speech is the next turn). A model's or a
                // provider's decision is only a guess about a pause the caller has now spoken past.
                if self.config.strategy != TurnStrategy::Vad {
                    self.awaiting_finalize_since = None;
                }
                let onset = now - Duration::from_millis(self.voiced_run_ms - FRAME_MS);
                self.onset = Some(onset);
                decisions.push(TurnDecision::SpeechStarted { onset });
            }
        } else {
            self.unvoiced_run_ms += FRAME_MS;
            // Speech has short gaps between syllables; only two silent frames in a row break a run.
            if self.unvoiced_run_ms >= 2 * FRAME_MS && !self.in_speech {
                self.voiced_run_ms = 0;
            }
            if self.in_speech && self.unvoiced_run_ms >= self.config.vad_silence_ms {
                self.in_speech = false;
                self.voiced_run_ms = 0;
                if self.config.strategy == TurnStrategy::Vad {
                    decisions.push(self.request_finalize(now));
                }
            }
            if self.config.strategy == TurnStrategy::Smart {
                decisions.extend(self.smart_pause(now));
            }
        }
        if voiced {
            decisions.extend(self.check_barge_in());
        }
        decisions
    }

    /// `smart` strategy: at each `smart_pause_ms` of the pause, ask the model (one question at a time); at the longest
    /// silence, finalize whatever it said.
    fn smart_pause(&mut self, now: Instant) -> Option<TurnDecision> {
        if !self.turn_open || self.awaiting_finalize_since.is_some() {
            return None;
        }
        let silence = self.unvoiced_run_ms;
        if silence >= self.config.smart_max_silence_ms.max(self.config.smart_pause_ms) {
            self.judging = None;
            let finalize = self.request_finalize(now);
            self.finalize_forced = true;
            return Some(finalize);
        }
        if let Some(finalize) = self.finished_words_end_the_turn(now) {
            return Some(finalize);
        }
        // Speech over the agent's audio is not a turn to judge (it barges in, or it is noise).
        let due = silence >= self.next_judgement_ms.max(self.config.smart_pause_ms);
        if due && self.judging.is_none() && !self.agent_speaking {
            self.next_judgement_ms = silence + self.config.smart_pause_ms.max(FRAME_MS);
            self.judgements_asked += 1;
            self.judging = Some(self.judgements_asked);
            return Some(TurnDecision::JudgeTurn { id: self.judgements_asked });
        }
        None
    }

    /// `smart` strategy: the turn model's answer about the pause `id`. A complete turn is finalized now, unless the
    /// caller spoke again since the pause or the words so far leave the sentence open; an incomplete one may still
    /// end on finished words.
    pub fn on_judgement(&mut self, id: u64, complete: bool, now: Instant) -> Vec<TurnDecision> {
        if self.judging != Some(id) {
            return Vec::new();
        }
        self.judging = None;
        if self.awaiting_finalize_since.is_some() || !self.turn_open {
            return Vec::new();
        }
        let complete = complete && self.text_cue != TextCue::Continues;
        self.heard_incomplete = !complete;
        if complete {
            return vec![self.request_finalize(now)];
        }
        self.finished_words_end_the_turn(now).into_iter().collect()
    }

    /// `smart` strategy: the model heard this pause as incomplete, but the recogniser closed the sentence and the
    /// silence has lasted twice the judging pause: the words win.
    fn finished_words_end_the_turn(&mut self, now: Instant) -> Option<TurnDecision> {
        let long_enough = self.unvoiced_run_ms >= 2 * self.config.smart_pause_ms;
        if self.config.strategy != TurnStrategy::Smart
            || !self.turn_open
            || self.awaiting_finalize_since.is_some()
            || !long_enough
            || !self.heard_incomplete
            || self.text_cue != TextCue::Finished
        {
            return None;
        }
        tracing::debug!("the caller's words end the sentence after a pause the model judged incomplete");
        Some(self.request_finalize(now))
    }

    /// Re-reads what the words so far say about the turn (after each transcript).
    fn update_text_cue(&mut self) {
        self.text_cue = match (self.finals.last(), self.interim.trim().is_empty()) {
            (_, false) => text_cue(&self.interim, &self.config.continuation_words),
            (Some(last), true) => text_cue(last, &self.config.continuation_words),
            (None, true) => TextCue::Unclear,
        };
    }

    fn request_finalize(&mut self, now: Instant) -> TurnDecision {
        self.awaiting_finalize_since = Some(now);
        self.finalize_forced = false;
        TurnDecision::RequestFinalize
    }

    /// `smart` strategy: the finalized words leave the sentence open ("my order number is"), and the finalize was
    /// the model's call, not the longest silence's: the caller is mid-sentence. Keep the words and listen on; the
    /// model is asked again as the pause grows, and the longest silence still ends the turn.
    fn open_sentence_keeps_the_turn(&mut self) -> bool {
        if self.config.strategy != TurnStrategy::Smart || self.finalize_forced || self.text_cue != TextCue::Continues {
            return false;
        }
        tracing::debug!("the finalized words leave the sentence open: the turn goes on");
        self.awaiting_finalize_since = None;
        self.heard_incomplete = true;
        self.next_judgement_ms = self.unvoiced_run_ms + self.config.smart_pause_ms.max(FRAME_MS);
        true
    }

    /// A transcript from the STT.
    pub fn on_transcript(&mut self, transcript: &Transcript, now: Instant) -> Vec<TurnDecision> {
        let mut decisions = Vec::new();
        if !transcript.is_final {
            self.interim = transcript.text.clone();
            self.update_text_cue();
            decisions.extend(self.check_barge_in());
            decisions.extend(self.finished_words_end_the_turn(now));
            return decisions;
        }
        self.interim.clear();
        if !transcript.text.trim().is_empty() {
            self.finals.push(transcript.text.trim().to_owned());
        }
        self.update_text_cue();
        decisions.extend(self.check_barge_in());
        let ends_turn = match self.config.strategy {
            TurnStrategy::Stt => transcript.speech_final,
            TurnStrategy::Vad | TurnStrategy::Smart => {
                transcript.from_finalize
                    && self.awaiting_finalize_since.is_some()
                    && !self.open_sentence_keeps_the_turn()
            }
        };
        if ends_turn {
            decisions.extend(self.end_turn(now));
        } else {
            decisions.extend(self.finished_words_end_the_turn(now));
        }
        decisions
    }

    /// The provider saw a gap after the last final word: the backstop for a missing `speech_final`.
    /// With no words waiting it changes nothing (a wordless utterance, such as a cough Whisper heard no words in), and
    /// under the `vad` and `smart` strategies Parley decides the end of turn itself: a gap the provider saw is only a
    /// pause then.
    pub fn on_utterance_end(&mut self, now: Instant) -> Vec<TurnDecision> {
        if self.finals.is_empty() || self.config.strategy != TurnStrategy::Stt {
            return Vec::new();
        }
        self.end_turn(now).into_iter().collect()
    }

    /// Time passing: ends a `vad` turn whose finalized text did not come in time.
    pub fn on_tick(&mut self, now: Instant) -> Vec<TurnDecision> {
        match self.awaiting_finalize_since {
            Some(since) if now.duration_since(since) >= Duration::from_millis(self.config.finalize_timeout_ms) => {
                if self.finals.is_empty() && !self.interim.trim().is_empty() {
                    self.finals.push(std::mem::take(&mut self.interim));
                }
                self.end_turn(now).into_iter().collect()
            }
            _ => Vec::new(),
        }
    }

    /// Parley asked the STT to finalize the turn and waits for its answer (which ends the turn).
    pub fn awaiting_finalize(&self) -> bool {
        self.awaiting_finalize_since.is_some()
    }

    /// When the next [`TurnDetector::on_tick`] could decide something.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.awaiting_finalize_since.map(|since| since + Duration::from_millis(self.config.finalize_timeout_ms))
    }

    fn end_turn(&mut self, now: Instant) -> Option<TurnDecision> {
        self.awaiting_finalize_since = None;
        self.turn_open = false;
        self.judging = None;
        // Whatever the VAD still counts belongs to this turn; speech after it needs a fresh onset.
        self.in_speech = false;
        self.voiced_run_ms = 0;
        let text = std::mem::take(&mut self.finals).join(" ");
        self.interim.clear();
        self.text_cue = TextCue::Unclear;
        self.heard_incomplete = false;
        if text.trim().is_empty() {
            return None;
        }
        if self.agent_speaking && !self.barged_in && self.is_backchannel(&text) {
            tracing::debug!(%text, "backchannel while the agent speaks; not a turn");
            return None;
        }
        Some(TurnDecision::EndOfTurn(EndOfTurn { text, speech_ended_at: self.last_voiced_at, final_at: now }))
    }

    fn check_barge_in(&mut self) -> Option<TurnDecision> {
        if !self.agent_speaking || self.barged_in || !self.in_speech {
            return None;
        }
        let onset = self.onset?;
        if self.voiced_run_ms < self.config.barge_in_min_speech_ms {
            return None;
        }
        if self.config.barge_in_min_words > 0 {
            let heard = format!("{} {}", self.finals.join(" "), self.interim);
            if word_count(&heard) < self.config.barge_in_min_words || self.is_backchannel(&heard) {
                return None;
            }
        }
        self.barged_in = true;
        Some(TurnDecision::BargeIn { onset })
    }

    /// Every word is a backchannel ("uh-huh", "yeah okay"), or there are none.
    pub fn is_backchannel(&self, text: &str) -> bool {
        let normalized: String =
            text.to_lowercase().chars().filter(|c| c.is_alphanumeric() || c.is_whitespace() || *c == '-').collect();
        let normalized = normalized.trim();
        if normalized.is_empty() {
            return true;
        }
        if self.config.backchannels.iter().any(|b| b == normalized) {
            return true;
        }
        normalized.split_whitespace().all(|w| self.config.backchannels.iter().any(|b| b == w))
    }
}

fn word_count(text: &str) -> usize {
    text.split_whitespace().count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transcript(text: &str, is_final: bool, speech_final: bool) -> Transcript {
        Transcript { text: text.into(), is_final, speech_final, from_finalize: false, start: 0.0, duration: 1.0 }
    }

    /// Feeds `frames` VAD verdicts 20 ms apart starting at `*now`; returns every decision.
    fn feed(d: &mut TurnDetector, now: &mut Instant, voiced: bool, frames: usize) -> Vec<TurnDecision> {
        let mut out = Vec::new();
        for _ in 0..frames {
            *now += Duration::from_millis(20);
            out.extend(d.on_vad(voiced, *now));
        }
        out
    }

    #[test]
    fn stt_strategy_joins_finals_until_speech_final() {
        let mut d = TurnDetector::new(TurnConfig::default());
        let mut now = Instant::now();
        let started = feed(&mut d, &mut now, true, 10);
        assert!(matches!(started.as_slice(), [TurnDecision::SpeechStarted { .. }]));
        assert!(d.on_transcript(&transcript("where is", false, false), now).is_empty());
        assert!(d.on_transcript(&transcript("Where is my", true, false), now).is_empty());
        let end = d.on_transcript(&transcript("order 456?", true, true), now);
        match end.as_slice() {
            [TurnDecision::EndOfTurn(eot)] => {
                assert_eq!(eot.text, "Where is my order 456?");
                assert!(eot.speech_ended_at.is_some());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn utterance_end_is_the_backstop() {
        let mut d = TurnDetector::new(TurnConfig::default());
        let now = Instant::now();
        d.on_transcript(&transcript("cancel my order", true, false), now);
        assert!(
            matches!(d.on_utterance_end(now).as_slice(), [TurnDecision::EndOfTurn(e)] if e.text == "cancel my order")
        );
        assert!(d.on_utterance_end(now).is_empty(), "nothing left to end");
    }

    #[test]
    fn the_providers_gap_is_only_a_pause_when_parley_decides_the_end_of_turn() {
        let mut d = smart();
        let now = Instant::now();
        d.on_transcript(&transcript("my order number is", true, true), now);
        assert!(d.on_utterance_end(now).is_empty());
        let flushed = Transcript { from_finalize: true, ..transcript("four five six", true, true) };
        d.awaiting_finalize_since = Some(now);
        assert!(matches!(d.on_transcript(&flushed, now).as_slice(),
            [TurnDecision::EndOfTurn(e)] if e.text == "my order number is four five six"));
    }

    #[test]
    fn vad_strategy_finalizes_after_silence() {
        let config = TurnConfig { strategy: TurnStrategy::Vad, vad_silence_ms: 200, ..TurnConfig::default() };
        let mut d = TurnDetector::new(config);
        let mut now = Instant::now();
        feed(&mut d, &mut now, true, 20);
        d.on_transcript(&transcript("book a table", true, false), now);
        assert!(feed(&mut d, &mut now, false, 9).is_empty());
        assert_eq!(feed(&mut d, &mut now, false, 1), vec![TurnDecision::RequestFinalize]);
        let flushed = Transcript { from_finalize: true, ..transcript("for two", true, false) };
        assert!(
            matches!(d.on_transcript(&flushed, now).as_slice(), [TurnDecision::EndOfTurn(e)] if e.text == "book a table for two")
        );
    }

    #[test]
    fn vad_strategy_ends_the_turn_on_the_finalize_even_when_the_caller_has_started_again() {
        let mut d = TurnDetector::new(TurnConfig { strategy: TurnStrategy::Vad, ..TurnConfig::default() });
        let mut now = Instant::now();
        feed(&mut d, &mut now, true, 20);
        assert_eq!(feed(&mut d, &mut now, false, 25), vec![TurnDecision::RequestFinalize], "500 ms of silence");
        // The caller goes on before the recogniser answers ("… four five six").
        assert!(matches!(feed(&mut d, &mut now, true, 10).as_slice(), [TurnDecision::SpeechStarted { .. }]));
        let flushed = Transcript { from_finalize: true, ..transcript("my order number is", true, true) };
        assert!(
            matches!(d.on_transcript(&flushed, now).as_slice(), [TurnDecision::EndOfTurn(e)] if e.text == "my order number is"),
            "the silence timeout ended the turn at the pause"
        );
        // The speech after it is the next turn, from a fresh onset.
        assert!(matches!(feed(&mut d, &mut now, true, 10).as_slice(), [TurnDecision::SpeechStarted { .. }]));
    }

    #[test]
    fn vad_strategy_times_out_waiting_for_the_finalize() {
        let config = TurnConfig {
            strategy: TurnStrategy::Vad,
            vad_silence_ms: 100,
            finalize_timeout_ms: 300,
            ..TurnConfig::default()
        };
        let mut d = TurnDetector::new(config);
        let mut now = Instant::now();
        feed(&mut d, &mut now, true, 10);
        d.on_transcript(&transcript("hello there", false, false), now);
        feed(&mut d, &mut now, false, 5);
        let deadline = d.next_deadline().expect("waiting for finalize");
        assert!(d.on_tick(deadline - Duration::from_millis(1)).is_empty());
        assert!(matches!(d.on_tick(deadline).as_slice(), [TurnDecision::EndOfTurn(e)] if e.text == "hello there"));
    }

    fn smart() -> TurnDetector {
        TurnDetector::new(TurnConfig { strategy: TurnStrategy::Smart, smart_pause_ms: 200, ..TurnConfig::default() })
    }

    fn judge_id(decisions: &[TurnDecision]) -> Option<u64> {
        decisions.iter().find_map(|d| match d {
            TurnDecision::JudgeTurn { id } => Some(*id),
            _ => None,
        })
    }

    #[test]
    fn smart_strategy_finalizes_when_the_model_judges_the_pause_complete() {
        let mut d = smart();
        let mut now = Instant::now();
        feed(&mut d, &mut now, true, 20);
        assert!(feed(&mut d, &mut now, false, 9).is_empty());
        let id = judge_id(&feed(&mut d, &mut now, false, 1)).expect("asked at 200 ms of silence");
        assert_eq!(d.on_judgement(id, true, now), vec![TurnDecision::RequestFinalize]);
        let flushed = Transcript { from_finalize: true, ..transcript("where is my order", true, true) };
        assert!(
            matches!(d.on_transcript(&flushed, now).as_slice(), [TurnDecision::EndOfTurn(e)] if e.text == "where is my order")
        );
    }

    #[test]
    fn smart_strategy_waits_through_a_pause_the_model_judges_incomplete() {
        let mut d = smart();
        let mut now = Instant::now();
        feed(&mut d, &mut now, true, 20);
        let id = judge_id(&feed(&mut d, &mut now, false, 10)).expect("asked");
        assert!(d.on_judgement(id, false, now).is_empty(), "incomplete: keep listening");
        // The provider's own end of speech does not end a smart turn.
        assert!(d.on_transcript(&transcript("my order number is", true, true), now).is_empty());
        let pause = feed(&mut d, &mut now, false, 30);
        assert!(pause.iter().all(|x| matches!(x, TurnDecision::JudgeTurn { .. })), "800 ms pause: {pause:?}");
        let next = feed(&mut d, &mut now, true, 20);
        assert!(judge_id(&next).is_none());
        let id = judge_id(&feed(&mut d, &mut now, false, 10)).expect("asked again at the next pause");
        assert_eq!(d.on_judgement(id, true, now), vec![TurnDecision::RequestFinalize]);
        let flushed = Transcript { from_finalize: true, ..transcript("four five six", true, true) };
        assert!(matches!(d.on_transcript(&flushed, now).as_slice(),
            [TurnDecision::EndOfTurn(e)] if e.text == "my order number is four five six"));
    }

    #[test]
    fn smart_strategy_drops_a_stale_judgement_and_finalizes_at_the_longest_silence() {
        let mut d = smart();
        let mut now = Instant::now();
        feed(&mut d, &mut now, true, 20);
        let stale = judge_id(&feed(&mut d, &mut now, false, 10)).expect("asked");
        feed(&mut d, &mut now, true, 5);
        assert!(d.on_judgement(stale, true, now).is_empty(), "the caller spoke again before the answer");
        let id = judge_id(&feed(&mut d, &mut now, false, 10)).expect("asked");
        assert!(d.on_judgement(id, false, now).is_empty());
        // Asked again every 200 ms of the pause, incomplete every time, until the longest silence.
        let mut asked = 1;
        for _ in 0..89 {
            for decision in feed(&mut d, &mut now, false, 1) {
                let TurnDecision::JudgeTurn { id } = decision else { panic!("{decision:?} before 2 s of silence") };
                asked += 1;
                assert!(d.on_judgement(id, false, now).is_empty());
            }
        }
        assert_eq!(asked, 9, "at 200, 400, … 1800 ms of silence");
        let silence = feed(&mut d, &mut now, false, 1);
        assert_eq!(silence, vec![TurnDecision::RequestFinalize], "2 s of silence ends the turn");
    }

    #[test]
    fn smart_strategy_asks_again_as_the_pause_grows() {
        let mut d = smart();
        let mut now = Instant::now();
        feed(&mut d, &mut now, true, 20);
        let first = judge_id(&feed(&mut d, &mut now, false, 10)).expect("asked at 200 ms");
        // The answer takes 100 ms; the next question waits for it, then comes at 400 ms of silence.
        assert!(judge_id(&feed(&mut d, &mut now, false, 5)).is_none());
        assert!(d.on_judgement(first, false, now).is_empty());
        assert!(judge_id(&feed(&mut d, &mut now, false, 4)).is_none(), "not before 400 ms");
        let second = judge_id(&feed(&mut d, &mut now, false, 1)).expect("asked again at 400 ms");
        assert_eq!(d.on_judgement(second, true, now), vec![TurnDecision::RequestFinalize]);
    }

    #[test]
    fn smart_strategy_does_not_end_a_sentence_left_open() {
        let mut d = smart();
        let mut now = Instant::now();
        feed(&mut d, &mut now, true, 20);
        d.on_transcript(&transcript("my order number is", false, false), now);
        let id = judge_id(&feed(&mut d, &mut now, false, 10)).expect("asked");
        assert!(d.on_judgement(id, true, now).is_empty(), "the model's 'complete' loses to the open sentence");
        let next = judge_id(&feed(&mut d, &mut now, false, 10)).expect("asked again");
        assert!(d.on_judgement(next, true, now).is_empty());
        // The number follows: its words close the sentence, and the model's next answer ends the turn.
        feed(&mut d, &mut now, true, 20);
        d.on_transcript(&transcript("my order number is four five six", false, false), now);
        let id = judge_id(&feed(&mut d, &mut now, false, 10)).expect("asked");
        assert_eq!(d.on_judgement(id, true, now), vec![TurnDecision::RequestFinalize]);
    }

    #[test]
    fn smart_strategy_listens_on_when_the_finalized_words_leave_the_sentence_open() {
        let mut d = smart();
        let mut now = Instant::now();
        feed(&mut d, &mut now, true, 20);
        let id = judge_id(&feed(&mut d, &mut now, false, 10)).expect("asked");
        assert_eq!(d.on_judgement(id, true, now), vec![TurnDecision::RequestFinalize], "the model says complete");
        let flushed = Transcript { from_finalize: true, ..transcript("My order number is", true, true) };
        assert!(d.on_transcript(&flushed, now).is_empty(), "the words leave the sentence open: no end of turn");
        assert!(!d.awaiting_finalize());
        // The number follows; the next finalize's words close the sentence, and the turn holds both.
        feed(&mut d, &mut now, true, 20);
        let id = judge_id(&feed(&mut d, &mut now, false, 10)).expect("asked again");
        assert_eq!(d.on_judgement(id, true, now), vec![TurnDecision::RequestFinalize]);
        let flushed = Transcript { from_finalize: true, ..transcript("four five six.", true, true) };
        assert!(matches!(d.on_transcript(&flushed, now).as_slice(),
            [TurnDecision::EndOfTurn(e)] if e.text == "My order number is four five six."));
    }

    #[test]
    fn the_longest_silence_ends_the_turn_whatever_the_words_say() {
        let mut d = smart();
        let mut now = Instant::now();
        feed(&mut d, &mut now, true, 20);
        let mut finalize_at = None;
        for frame in 0..100 {
            for decision in feed(&mut d, &mut now, false, 1) {
                match decision {
                    TurnDecision::JudgeTurn { id } => assert!(d.on_judgement(id, false, now).is_empty()),
                    TurnDecision::RequestFinalize => finalize_at = Some(frame),
                    other => panic!("{other:?}"),
                }
            }
            if finalize_at.is_some() {
                break;
            }
        }
        assert_eq!(finalize_at, Some(99), "at 2 s of silence");
        let flushed = Transcript { from_finalize: true, ..transcript("I'd like to book a table for", true, true) };
        assert!(matches!(d.on_transcript(&flushed, now).as_slice(), [TurnDecision::EndOfTurn(_)]));
    }

    #[test]
    fn smart_strategy_ends_on_finished_words_after_twice_the_pause() {
        let mut d = smart();
        let mut now = Instant::now();
        feed(&mut d, &mut now, true, 20);
        let id = judge_id(&feed(&mut d, &mut now, false, 10)).expect("asked at 200 ms");
        assert!(d.on_judgement(id, false, now).is_empty(), "no words yet: the model's 'incomplete' stands");
        feed(&mut d, &mut now, false, 2);
        // 240 ms into the pause the recogniser's words close the sentence: not yet twice the pause.
        assert!(d.on_transcript(&transcript("Great, thank you, goodbye.", false, false), now).is_empty());
        let until = feed(&mut d, &mut now, false, 7);
        assert!(!until.contains(&TurnDecision::RequestFinalize), "before 400 ms: {until:?}");
        assert_eq!(feed(&mut d, &mut now, false, 1), vec![TurnDecision::RequestFinalize], "at 400 ms");
        let flushed = Transcript { from_finalize: true, ..transcript("Great, thank you, goodbye.", true, true) };
        assert!(matches!(d.on_transcript(&flushed, now).as_slice(), [TurnDecision::EndOfTurn(_)]));
    }

    #[test]
    fn finished_words_alone_do_not_end_a_turn_the_model_was_not_asked_about() {
        let mut d = smart();
        let mut now = Instant::now();
        feed(&mut d, &mut now, true, 20);
        d.on_transcript(&transcript("Where is my order?", false, false), now);
        let id = judge_id(&feed(&mut d, &mut now, false, 10)).expect("asked");
        // The answer is slow: the words do not end the turn on their own while it is awaited.
        assert!(!feed(&mut d, &mut now, false, 15).contains(&TurnDecision::RequestFinalize));
        assert_eq!(
            d.on_judgement(id, false, now),
            vec![TurnDecision::RequestFinalize],
            "incomplete, but finished words"
        );
    }

    #[test]
    fn smart_strategy_judges_nothing_before_any_speech() {
        let mut d = smart();
        let mut now = Instant::now();
        assert!(feed(&mut d, &mut now, false, 200).is_empty());
    }

    #[test]
    fn sustained_speech_during_agent_audio_barges_in_once() {
        let mut d = TurnDetector::new(TurnConfig::default());
        d.set_agent_speaking(true);
        let mut now = Instant::now();
        let t0 = now;
        let decisions = feed(&mut d, &mut now, true, 7); // 140 ms
        let barge: Vec<_> = decisions.iter().filter(|x| matches!(x, TurnDecision::BargeIn { .. })).collect();
        assert_eq!(barge.len(), 1, "{decisions:?}");
        if let TurnDecision::BargeIn { onset } = barge[0] {
            assert_eq!(*onset, t0 + Duration::from_millis(20), "onset is the first voiced frame");
        }
        assert!(!feed(&mut d, &mut now, true, 20).iter().any(|x| matches!(x, TurnDecision::BargeIn { .. })));
    }

    #[test]
    fn short_noise_does_not_barge_in() {
        let mut d = TurnDetector::new(TurnConfig::default());
        d.set_agent_speaking(true);
        let mut now = Instant::now();
        for _ in 0..5 {
            let decisions = [feed(&mut d, &mut now, true, 3), feed(&mut d, &mut now, false, 10)].concat();
            assert!(!decisions.iter().any(|x| matches!(x, TurnDecision::BargeIn { .. })), "{decisions:?}");
        }
    }

    #[test]
    fn word_confirmation_ignores_backchannels() {
        let config = TurnConfig { barge_in_min_words: 2, ..TurnConfig::default() };
        let mut d = TurnDetector::new(config);
        d.set_agent_speaking(true);
        let mut now = Instant::now();
        assert!(!feed(&mut d, &mut now, true, 15).iter().any(|x| matches!(x, TurnDecision::BargeIn { .. })));
        assert!(d.on_transcript(&transcript("uh-huh yeah", false, false), now).is_empty());
        // The backchannel ends as a "turn" while the agent speaks: ignored.
        assert!(d.on_transcript(&transcript("Uh-huh, yeah.", true, true), now).is_empty());
        feed(&mut d, &mut now, true, 8);
        let decisions = d.on_transcript(&transcript("wait stop", false, false), now);
        assert!(matches!(decisions.as_slice(), [TurnDecision::BargeIn { .. }]), "{decisions:?}");
        assert!(!d.barge_in_waits_for_words(), "barged in: no more words are waited for");
    }

    #[test]
    fn words_are_waited_for_only_while_they_decide_a_barge_in() {
        let mut d = TurnDetector::new(TurnConfig { barge_in_min_words: 2, ..TurnConfig::default() });
        assert!(!d.barge_in_waits_for_words(), "the agent is silent");
        d.set_agent_speaking(true);
        assert!(d.barge_in_waits_for_words());
        let mut d = TurnDetector::new(TurnConfig::default());
        d.set_agent_speaking(true);
        assert!(!d.barge_in_waits_for_words(), "speech alone barges in");
    }

    #[test]
    fn the_tail_of_a_finished_turn_does_not_barge_in_on_the_reply() {
        let mut d = TurnDetector::new(TurnConfig::default());
        let mut now = Instant::now();
        feed(&mut d, &mut now, true, 30);
        assert!(matches!(d.on_transcript(&transcript("hi", true, true), now).as_slice(), [TurnDecision::EndOfTurn(_)]));
        d.set_agent_speaking(true);
        let decisions = [feed(&mut d, &mut now, true, 2), feed(&mut d, &mut now, false, 30)].concat();
        assert!(!decisions.iter().any(|x| matches!(x, TurnDecision::BargeIn { .. })), "{decisions:?}");
    }

    #[test]
    fn backchannel_is_a_turn_when_the_agent_is_silent() {
        let mut d = TurnDetector::new(TurnConfig::default());
        let now = Instant::now();
        assert!(matches!(
            d.on_transcript(&transcript("yeah", true, true), now).as_slice(),
            [TurnDecision::EndOfTurn(_)]
        ));
    }
}
