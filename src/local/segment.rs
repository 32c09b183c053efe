//! Cuts a stream of 8 kHz PCM into utterances by energy, for Whisper, which transcribes whole utterances rather than
//! a live stream.
//!
//! Energy is enough here: the segmenter only decides where an utterance starts and ends (with generous pre-roll and
//! hangover); Whisper itself ignores the breath and line noise that a slightly early cut keeps. It is synchronous and
//! deterministic, so the live provider and the offline worker cut the same audio the same way.

use std::collections::VecDeque;

use serde::Deserialize;

/// Samples per 20 ms frame at 8 kHz.
pub const FRAME_SAMPLES: usize = 160;
/// The phone's sample rate.
pub const SAMPLE_RATE: usize = 8000;

/// When a stretch of audio counts as an utterance.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SegmenterConfig {
    /// Mean absolute PCM16 amplitude from which a 20 ms frame counts as speech (300 ≈ -40 dBFS).
    pub speech_threshold: f64,
    /// Consecutive speech frames needed to start an utterance (rejects clicks).
    pub start_frames: usize,
    /// Silence that ends an utterance, in milliseconds.
    pub end_silence_ms: u64,
    /// Audio kept from before the utterance started, so soft onsets are not clipped.
    pub pre_roll_ms: u64,
    /// Longest utterance: Whisper reads 30 s windows, so longer speech is cut into pieces below that.
    pub max_utterance_ms: u64,
    /// Silence inside an utterance kept for Whisper; the rest of a longer pause is left out. Whisper tends to stop
    /// transcribing at a long silence, so "my order number is, um … four five six" loses its number when the pause
    /// is kept whole.
    pub max_inner_silence_ms: u64,
    /// Silence after speech at which the utterance so far is reported ([`SegmentEvent::Paused`]), so that it can be
    /// transcribed while the caller may still go on; 0 never reports pauses.
    pub pause_report_ms: u64,
}

impl Default for SegmenterConfig {
    fn default() -> Self {
        SegmenterConfig {
            speech_threshold: 300.0,
            start_frames: 3,
            end_silence_ms: 700,
            pre_roll_ms: 300,
            max_utterance_ms: 25_000,
            max_inner_silence_ms: 300,
            pause_report_ms: 300,
        }
    }
}

fn frames_of(ms: u64) -> usize {
    (ms / 20).max(1) as usize
}

/// A finished utterance.
#[derive(Debug, Clone, PartialEq)]
pub struct Utterance {
    /// Index of the first sample in the stream.
    pub start_sample: u64,
    pub samples: Vec<i16>,
}

impl Utterance {
    pub fn start_secs(&self) -> f64 {
        self.start_sample as f64 / SAMPLE_RATE as f64
    }

    pub fn duration_secs(&self) -> f64 {
        self.samples.len() as f64 / SAMPLE_RATE as f64
    }
}

/// What the segmenter noticed in the audio pushed into it.
#[derive(Debug, Clone, PartialEq)]
pub enum SegmentEvent {
    /// Speech began at this stream sample (pre-roll included).
    Started { start_sample: u64 },
    /// The caller has been silent for `pause_report_ms` inside an utterance: what it holds so far, trimmed as an
    /// ended utterance would be. If the utterance then ends with no more speech, it holds the same speech.
    Paused(Utterance),
    /// Speech again after a reported pause: the utterance goes on past the last [`SegmentEvent::Paused`].
    Resumed,
    /// An utterance ended.
    Ended(Utterance),
}

enum State {
    Idle {
        pre_roll: VecDeque<Vec<i16>>,
        voiced_run: usize,
    },
    /// `kept_silence`: frames of the current silent run kept in `samples` (at most `max_inner_silence_ms` of them).
    Speaking {
        start_sample: u64,
        samples: Vec<i16>,
        silent_run: usize,
        kept_silence: usize,
    },
}

/// The utterance segmenter; push audio in any chunk sizes.
pub struct Segmenter {
    config: SegmenterConfig,
    partial: Vec<i16>,
    /// Samples consumed as whole frames so far.
    consumed: u64,
    state: State,
}

fn mean_amplitude(frame: &[i16]) -> f64 {
    if frame.is_empty() {
        return 0.0;
    }
    frame.iter().map(|&s| f64::from(s).abs()).sum::<f64>() / frame.len() as f64
}

impl Segmenter {
    pub fn new(config: SegmenterConfig) -> Segmenter {
        Segmenter {
            config,
            partial: Vec::with_capacity(FRAME_SAMPLES),
            consumed: 0,
            state: State::Idle { pre_roll: VecDeque::new(), voiced_run: 0 },
        }
    }

    /// Whether an utterance is in progress.
    pub fn in_speech(&self) -> bool {
        matches!(self.state, State::Speaking { .. })
    }

    /// Feeds audio; returns what it completed.
    pub fn push(&mut self, pcm: &[i16]) -> Vec<SegmentEvent> {
        let mut events = Vec::new();
        for &sample in pcm {
            self.partial.push(sample);
            if self.partial.len() == FRAME_SAMPLES {
                let frame = std::mem::replace(&mut self.partial, Vec::with_capacity(FRAME_SAMPLES));
                self.frame(frame, &mut events);
            }
        }
        events
    }

    /// Ends the utterance in progress now (a finalize request, or the end of the audio), with whatever part of a
    /// frame is pending.
    pub fn flush(&mut self) -> Option<Utterance> {
        let partial = std::mem::take(&mut self.partial);
        self.consumed += partial.len() as u64;
        let idle = State::Idle { pre_roll: VecDeque::new(), voiced_run: 0 };
        match std::mem::replace(&mut self.state, idle) {
            State::Speaking { start_sample, mut samples, .. } => {
                samples.extend_from_slice(&partial);
                Some(Utterance { start_sample, samples })
            }
            State::Idle { .. } => None,
        }
    }

    fn frame(&mut self, frame: Vec<i16>, events: &mut Vec<SegmentEvent>) {
        let voiced = mean_amplitude(&frame) >= self.config.speech_threshold;
        self.consumed += frame.len() as u64;
        let consumed = self.consumed;
        match &mut self.state {
            State::Idle { pre_roll, voiced_run } => {
                *voiced_run = if voiced { *voiced_run + 1 } else { 0 };
                pre_roll.push_back(frame);
                let keep = frames_of(self.config.pre_roll_ms) + self.config.start_frames;
                while pre_roll.len() > keep {
                    pre_roll.pop_front();
                }
                if *voiced_run >= self.config.start_frames.max(1) {
                    let samples: Vec<i16> = pre_roll.drain(..).flatten().collect();
                    let start_sample = consumed - samples.len() as u64;
                    events.push(SegmentEvent::Started { start_sample });
                    self.state = State::Speaking { start_sample, samples, silent_run: 0, kept_silence: 0 };
                }
            }
            State::Speaking { start_sample, samples, silent_run, kept_silence } => {
                let pause_frames = frames_of(self.config.pause_report_ms);
                let reports_pauses = self.config.pause_report_ms > 0;
                if voiced && reports_pauses && *silent_run >= pause_frames {
                    events.push(SegmentEvent::Resumed);
                }
                *silent_run = if voiced { 0 } else { *silent_run + 1 };
                if voiced {
                    *kept_silence = 0;
                }
                if voiced || *kept_silence < frames_of(self.config.max_inner_silence_ms) {
                    samples.extend_from_slice(&frame);
                    *kept_silence += usize::from(!voiced);
                }
                // Keep a little of the trailing silence (a natural decay), drop the rest.
                let tail = kept_silence.saturating_sub(frames_of(200)) * FRAME_SAMPLES;
                let trimmed = samples.len() - tail.min(samples.len());
                let too_long = samples.len() >= frames_of(self.config.max_utterance_ms) * FRAME_SAMPLES;
                if *silent_run >= frames_of(self.config.end_silence_ms) || too_long {
                    let mut samples = std::mem::take(samples);
                    samples.truncate(trimmed);
                    events.push(SegmentEvent::Ended(Utterance { start_sample: *start_sample, samples }));
                    self.state = State::Idle { pre_roll: VecDeque::new(), voiced_run: 0 };
                } else if reports_pauses && *silent_run == pause_frames {
                    let so_far = Utterance { start_sample: *start_sample, samples: samples[..trimmed].to_vec() };
                    events.push(SegmentEvent::Paused(so_far));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loud(ms: usize) -> Vec<i16> {
        (0..ms * 8).map(|i| if i % 2 == 0 { 3000 } else { -3000 }).collect()
    }

    fn quiet(ms: usize) -> Vec<i16> {
        vec![20; ms * 8]
    }

    /// The cutting alone, without the pause reports the live provider uses.
    fn no_pause_reports() -> SegmenterConfig {
        SegmenterConfig { pause_report_ms: 0, ..SegmenterConfig::default() }
    }

    #[test]
    fn a_long_pause_inside_an_utterance_is_kept_short() {
        let config = SegmenterConfig { end_silence_ms: 3_000, pause_report_ms: 0, ..SegmenterConfig::default() };
        let mut segmenter = Segmenter::new(config);
        let mut events = segmenter.push(&loud(1000));
        events.extend(segmenter.push(&quiet(800)));
        events.extend(segmenter.push(&loud(500)));
        assert_eq!(events.len(), 1, "{events:?}");
        let utterance = segmenter.flush().expect("in progress");
        // 300 ms of pre-roll aside (the stream began loud: none), both stretches of speech and 300 ms of the pause.
        assert_eq!(utterance.samples.len(), (1000 + 300 + 500) * 8);
        assert!(utterance.samples[..8000].iter().all(|&s| s.abs() == 3000));
        assert!(utterance.samples[8000 + 2400..].iter().all(|&s| s.abs() == 3000));
    }

    #[test]
    fn one_utterance_between_silences() {
        let mut segmenter = Segmenter::new(no_pause_reports());
        let mut events = segmenter.push(&quiet(1000));
        assert!(events.is_empty());
        events.extend(segmenter.push(&loud(1000)));
        events.extend(segmenter.push(&quiet(1000)));
        assert_eq!(events.len(), 2, "{events:?}");
        let SegmentEvent::Started { start_sample } = events[0] else { panic!("{events:?}") };
        // Started 300 ms of pre-roll before the speech at 1 s.
        assert_eq!(start_sample, 8000 - 2400);
        let SegmentEvent::Ended(utterance) = &events[1] else { panic!("{events:?}") };
        assert_eq!(utterance.start_sample, start_sample);
        // Pre-roll + 1 s speech + 200 ms of kept decay.
        assert_eq!(utterance.samples.len(), 2400 + 8000 + 1600);
        assert!(!segmenter.in_speech());
    }

    #[test]
    fn short_pauses_do_not_split_and_flush_ends_early() {
        let mut segmenter = Segmenter::new(no_pause_reports());
        let mut events = segmenter.push(&loud(500));
        events.extend(segmenter.push(&quiet(300)));
        events.extend(segmenter.push(&loud(500)));
        assert_eq!(events.len(), 1);
        assert!(segmenter.in_speech());
        let utterance = segmenter.flush().unwrap();
        assert_eq!(utterance.samples.len(), 1300 * 8);
        assert!(segmenter.flush().is_none());
    }

    #[test]
    fn a_pause_is_reported_with_the_speech_so_far_and_speech_after_it_resumes() {
        let config = SegmenterConfig { end_silence_ms: 3_000, ..SegmenterConfig::default() };
        let mut segmenter = Segmenter::new(config);
        let mut events = segmenter.push(&loud(1000));
        events.extend(segmenter.push(&quiet(280)));
        assert_eq!(events.len(), 1, "no pause before 300 ms: {events:?}");
        events.extend(segmenter.push(&quiet(20)));
        let [SegmentEvent::Started { .. }, SegmentEvent::Paused(so_far)] = events.as_slice() else {
            panic!("{events:?}")
        };
        // The speech and 200 ms of its decay, as an ended utterance keeps.
        assert_eq!(so_far.samples.len(), (1000 + 200) * 8);
        assert!(segmenter.push(&quiet(500)).is_empty(), "one report per pause");
        assert_eq!(segmenter.push(&loud(100)), vec![SegmentEvent::Resumed]);
        let events = segmenter.push(&quiet(300));
        assert!(matches!(events.as_slice(), [SegmentEvent::Paused(u)] if u.samples.len() > so_far.samples.len()));
        // With `pause_report_ms` 0 no pause is reported.
        let mut quiet_only = Segmenter::new(SegmenterConfig { pause_report_ms: 0, ..SegmenterConfig::default() });
        let events: Vec<_> = [loud(1000), quiet(1000)].iter().flat_map(|a| quiet_only.push(a)).collect();
        assert!(events.iter().all(|e| !matches!(e, SegmentEvent::Paused(_) | SegmentEvent::Resumed)), "{events:?}");
    }

    #[test]
    fn an_utterance_ending_after_a_reported_pause_holds_the_same_speech() {
        let mut segmenter = Segmenter::new(SegmenterConfig::default());
        let events: Vec<_> = [loud(1000), quiet(1000)].iter().flat_map(|a| segmenter.push(a)).collect();
        let [SegmentEvent::Started { .. }, SegmentEvent::Paused(so_far), SegmentEvent::Ended(ended)] =
            events.as_slice()
        else {
            panic!("{events:?}")
        };
        assert_eq!(so_far, ended);
    }

    #[test]
    fn clicks_are_not_speech() {
        let mut segmenter = Segmenter::new(SegmenterConfig::default());
        let mut audio = quiet(200);
        audio.extend(loud(40));
        audio.extend(quiet(1000));
        assert!(segmenter.push(&audio).is_empty());
    }
}
