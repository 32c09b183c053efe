//! A scripted caller: speaks lines synthesized with espeak-ng into a simulated Twilio call, waits for the agent
//! between them (or cuts in while it speaks), and measures from the caller's side how long each answer took.
//!
//! The line is never idle: like a real phone leg, 20 ms frames flow the whole call, speech when the caller talks and
//! silence otherwise, because end-of-speech detection on the other side needs to hear the silence.

use std::time::Duration;

use crate::local::EspeakSettings;
use crate::twilio::messages::OutboundMessage;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::caller::{silence, Observer, Received, SimCall, SimError};

/// A caller's script, read from TOML.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dialogue {
    /// The caller's voice.
    #[serde(default)]
    pub voice: Voice,
    /// The agent counts as done speaking after this much quiet.
    #[serde(default = "default_quiet_ms")]
    pub quiet_ms: u64,
    /// How long the caller waits for any answer before giving up.
    #[serde(default = "default_patience_ms")]
    pub patience_ms: u64,
    /// Whether the caller waits for the agent's greeting before the first line.
    #[serde(default = "yes")]
    pub expect_greeting: bool,
    #[serde(rename = "line")]
    pub lines: Vec<Line>,
}

pub(super) fn default_quiet_ms() -> u64 {
    1_200
}
pub(super) fn default_patience_ms() -> u64 {
    20_000
}
pub(super) fn yes() -> bool {
    true
}

/// espeak-ng settings for the caller (a different voice from the agent's makes the recording easy to follow).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Voice {
    pub voice: String,
    pub speed: u32,
    pub pitch: u32,
}

impl Default for Voice {
    fn default() -> Self {
        Voice { voice: "en-us+m3".into(), speed: 140, pitch: 50 }
    }
}

/// One thing the caller says.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Line {
    pub say: String,
    /// Say it this long into the agent's next answer, interrupting it, instead of waiting for the agent to finish.
    pub interrupt_after_ms: Option<u64>,
}

impl Dialogue {
    pub fn parse(text: &str) -> Result<Dialogue, toml::de::Error> {
        toml::from_str(text)
    }
}

/// How the caller paces a call, whatever its lines are made of.
#[derive(Debug, Clone)]
pub struct Pacing {
    /// The agent counts as done speaking after this much quiet.
    pub quiet: Duration,
    /// How long the caller waits for any answer before giving up.
    pub patience: Duration,
    /// Whether the caller waits for the agent's greeting before the first line.
    pub expect_greeting: bool,
}

impl Pacing {
    /// Pacing as script files write it, in milliseconds.
    pub fn from_millis(quiet_ms: u64, patience_ms: u64, expect_greeting: bool) -> Pacing {
        Pacing { quiet: Duration::from_millis(quiet_ms), patience: Duration::from_millis(patience_ms), expect_greeting }
    }
}

/// One line ready to speak: its audio (8 kHz μ-law) and when to say it.
#[derive(Debug, Clone)]
pub struct SpokenLine {
    /// What the line says (or what it is, for noise), for reports.
    pub label: String,
    pub audio: Vec<u8>,
    /// Say it this long into the agent's next answer instead of waiting for the agent to finish.
    pub interrupt_after_ms: Option<u64>,
    /// Whether the caller waits for an answer to it (not for a cough or background noise).
    pub expects_answer: bool,
}

/// What happened to one line, seen from the caller's side.
#[derive(Debug, Clone, Serialize)]
pub struct LineReport {
    pub said: String,
    /// When the caller started and stopped speaking, ms since the call started.
    pub started_ms: u64,
    pub speech_ended_ms: u64,
    /// The line was meant to interrupt the agent.
    pub interrupting: bool,
    /// The agent was still playing audio when the caller started speaking.
    pub agent_was_speaking: bool,
    /// Speech onset → the `clear` that stopped the agent (interrupting lines that caught the agent speaking).
    pub clear_after_ms: Option<u64>,
    /// End of the caller's speech → the first audio of the answer (lines that expect one).
    pub answer_after_ms: Option<u64>,
    /// Whether an answer was waited for.
    pub expects_answer: bool,
}

/// A stretch of time, ms since the call started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpanMs {
    pub start_ms: u64,
    pub end_ms: u64,
}

/// The whole call from the caller's side.
#[derive(Debug, Clone, Serialize)]
pub struct DialogueReport {
    pub greeting_after_ms: Option<u64>,
    pub lines: Vec<LineReport>,
    pub clears: u64,
    pub agent_audio_ms: u64,
    /// When the agent's audio was playing, as Twilio would have played it (cut short by `clear`).
    pub agent_speech: Vec<SpanMs>,
    /// When each `clear` arrived.
    pub clear_at_ms: Vec<u64>,
}

impl DialogueReport {
    /// Whatever went wrong, for a non-zero exit: unanswered lines, interruptions that never cut the agent off.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for line in &self.lines {
            if line.expects_answer && line.answer_after_ms.is_none() {
                problems.push(format!("no answer to {:?}", line.said));
            }
            if line.interrupting && !line.agent_was_speaking {
                problems.push(format!("the agent was not speaking when the caller said {:?}", line.said));
            } else if line.interrupting && line.expects_answer && line.clear_after_ms.is_none() {
                problems.push(format!("saying {:?} over the agent did not stop it", line.said));
            }
        }
        problems
    }
}

/// A line's audio handed to the feeder; `spoken` gets the times speech started and ended.
struct Utterance {
    audio: Vec<u8>,
    spoken: oneshot::Sender<(Instant, Instant)>,
}

impl Dialogue {
    /// The dialogue's pacing and its lines spoken by espeak-ng in the dialogue's voice.
    pub async fn prepare(&self) -> Result<(Pacing, Vec<SpokenLine>), SimError> {
        let voice = EspeakSettings {
            voice: self.voice.voice.clone(),
            speed: self.voice.speed,
            pitch: self.voice.pitch,
            ..EspeakSettings::default()
        };
        let mut lines = Vec::with_capacity(self.lines.len());
        for line in &self.lines {
            let audio = crate::tts::espeak::synthesize_mulaw(&voice, &line.say)
                .await
                .map_err(|e| SimError::Timeout(format!("espeak-ng to speak {:?}: {e}", line.say)))?;
            lines.push(SpokenLine {
                label: line.say.clone(),
                audio,
                interrupt_after_ms: line.interrupt_after_ms,
                expects_answer: true,
            });
        }
        Ok((Pacing::from_millis(self.quiet_ms, self.patience_ms, self.expect_greeting), lines))
    }
}

/// Runs the dialogue over a started call, then hangs up.
pub async fn run(call: SimCall, dialogue: &Dialogue, progress: impl FnMut(&str)) -> Result<DialogueReport, SimError> {
    let (pacing, lines) = dialogue.prepare().await?;
    speak(call, &pacing, lines, progress).await
}

/// Speaks prepared lines over a started call, each after the agent finished (or into its answer), then hangs up.
pub async fn speak(
    call: SimCall,
    pacing: &Pacing,
    script: Vec<SpokenLine>,
    mut progress: impl FnMut(&str),
) -> Result<DialogueReport, SimError> {
    let observer = call.observer();
    let call_started = Instant::now();
    let since_start = |at: Instant| at.saturating_duration_since(call_started).as_millis() as u64;
    let (utterances, feed) = mpsc::channel(1);
    let feeder = tokio::spawn(feed_line(call, feed));
    let (patience, quiet) = (pacing.patience, pacing.quiet);

    let mut greeting_after_ms = None;
    if pacing.expect_greeting {
        let first = wait_for_audio_after(&observer, call_started, patience).await?;
        greeting_after_ms = Some(since_start(first));
        wait_until_quiet(&observer, quiet, patience).await?;
    }
    let mut lines = Vec::with_capacity(script.len());
    let mut previous_end = call_started;
    for line in script {
        match line.interrupt_after_ms {
            Some(ms) => {
                let answer = wait_for_audio_after(&observer, previous_end, patience).await?;
                tokio::time::sleep_until(answer + Duration::from_millis(ms)).await;
            }
            None => wait_until_quiet(&observer, quiet, patience).await?,
        }
        let agent_was_speaking = observer.playing_until().is_some_and(|until| until > Instant::now());
        let clears_before = observer.clears();
        let (spoken, times) = oneshot::channel();
        utterances.send(Utterance { audio: line.audio, spoken }).await.map_err(|_| SimError::Closed)?;
        let (started, ended) = times.await.map_err(|_| SimError::Closed)?;
        progress(&format!("caller: {}", line.label));
        let clear_after_ms = (observer.clears() > clears_before)
            .then(|| first_clear_after(&observer.received(), started).map(|at| (at - started).as_millis() as u64))
            .flatten();
        let answer = if line.expects_answer {
            let answer = wait_for_audio_after(&observer, ended, patience).await.ok();
            previous_end = ended;
            answer
        } else {
            None
        };
        lines.push(LineReport {
            said: line.label,
            started_ms: since_start(started),
            speech_ended_ms: since_start(ended),
            interrupting: line.interrupt_after_ms.is_some(),
            agent_was_speaking,
            clear_after_ms,
            answer_after_ms: answer.map(|at| (at - ended).as_millis() as u64),
            expects_answer: line.expects_answer,
        });
    }
    // Let the last answer play out, then hang up.
    let _ = wait_until_quiet(&observer, quiet, patience).await;
    drop(utterances);
    let mut call = feeder.await.map_err(|_| SimError::Closed)??;
    call.send_stop()?;
    let agent_audio_ms = call.audio_received().len() as u64 / 8;
    let clears = call.clears();
    let received = call.received();
    call.hang_up().await;
    let agent_speech = played_spans(&received, call_started);
    let clear_at_ms = received
        .iter()
        .filter_map(|r| match r {
            Received::Message { at, message: OutboundMessage::Clear { .. } } => Some(since_start(*at)),
            _ => None,
        })
        .collect();
    Ok(DialogueReport { greeting_after_ms, lines, clears, agent_audio_ms, agent_speech, clear_at_ms })
}

/// When the agent's audio played, by Twilio's playback model (in order, in real time, cut by `clear`); gaps
/// shorter than a frame are joined.
pub fn played_spans(received: &[Received], origin: Instant) -> Vec<SpanMs> {
    let mut spans: Vec<(Instant, Instant)> = Vec::new();
    for entry in received {
        let Received::Message { at, message } = entry else { continue };
        match message {
            OutboundMessage::Media { media, .. } => {
                let samples = media.payload.len();
                let duration = Duration::from_micros(samples as u64 * 125);
                match spans.last_mut() {
                    Some((_, end)) if *end + Duration::from_millis(20) >= *at => *end = (*end).max(*at) + duration,
                    _ => spans.push((*at, *at + duration)),
                }
            }
            OutboundMessage::Clear { .. } => {
                if let Some((start, end)) = spans.last_mut() {
                    *end = (*end).min(*at).max(*start);
                }
            }
            OutboundMessage::Mark { .. } => {}
        }
    }
    let ms = |at: Instant| at.saturating_duration_since(origin).as_millis() as u64;
    spans.into_iter().map(|(start, end)| SpanMs { start_ms: ms(start), end_ms: ms(end) }).collect()
}

/// Sends a 20 ms frame every 20 ms for as long as the dialogue runs: the next utterance's audio, else silence.
async fn feed_line(mut call: SimCall, mut utterances: mpsc::Receiver<Utterance>) -> Result<SimCall, SimError> {
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let silence = silence(20);
    let mut open = true;
    loop {
        tick.tick().await;
        let next = if open {
            match utterances.try_recv() {
                Ok(utterance) => Some(utterance),
                Err(mpsc::error::TryRecvError::Empty) => None,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    open = false;
                    None
                }
            }
        } else {
            None
        };
        let Some(Utterance { audio, spoken }) = next else {
            if !open {
                return Ok(call);
            }
            call.send_media(&silence)?;
            continue;
        };
        let started = Instant::now();
        let mut voiced_until = started;
        for (i, frame) in audio.chunks(160).enumerate() {
            if i > 0 {
                tick.tick().await;
            }
            call.send_media(frame)?;
            if is_voiced(frame) {
                voiced_until = Instant::now() + Duration::from_millis(20);
            }
        }
        let _ = spoken.send((started, voiced_until));
    }
}

/// A frame with speech in it (espeak-ng pads its output with near-silence, which is not the caller speaking).
fn is_voiced(frame: &[u8]) -> bool {
    let pcm = crate::audio::mulaw::decode(frame);
    let energy = pcm.iter().map(|&s| f64::from(s) * f64::from(s)).sum::<f64>() / pcm.len().max(1) as f64;
    energy.sqrt() > 300.0
}

/// The arrival time of the first agent audio after `after`.
async fn wait_for_audio_after(observer: &Observer, after: Instant, patience: Duration) -> Result<Instant, SimError> {
    let deadline = Instant::now() + patience;
    loop {
        if let Some(at) = first_media_after(&observer.received(), after) {
            return Ok(at);
        }
        if Instant::now() >= deadline {
            return Err(SimError::Timeout("the agent to answer".into()));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until the agent's audio has finished playing and nothing new has come for `quiet`.
async fn wait_until_quiet(observer: &Observer, quiet: Duration, patience: Duration) -> Result<(), SimError> {
    let deadline = Instant::now() + patience;
    loop {
        let now = Instant::now();
        let last_media = last_media(&observer.received());
        let busy_until = observer.playing_until().into_iter().chain(last_media).max();
        if busy_until.is_none_or(|until| now >= until + quiet) {
            return Ok(());
        }
        if now >= deadline {
            return Err(SimError::Timeout("the agent to finish speaking".into()));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn first_media_after(log: &[Received], after: Instant) -> Option<Instant> {
    log.iter().find_map(|r| match r {
        Received::Message { at, message: OutboundMessage::Media { .. } } if *at > after => Some(*at),
        _ => None,
    })
}

fn last_media(log: &[Received]) -> Option<Instant> {
    log.iter().rev().find_map(|r| match r {
        Received::Message { at, message: OutboundMessage::Media { .. } } => Some(*at),
        _ => None,
    })
}

fn first_clear_after(log: &[Received], after: Instant) -> Option<Instant> {
    log.iter().find_map(|r| match r {
        Received::Message { at, message: OutboundMessage::Clear { .. } } if *at >= after => Some(*at),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn media(at: Instant, millis: usize) -> Received {
        use base64::Engine;
        let payload = base64::engine::general_purpose::STANDARD.encode(vec![0xFFu8; millis * 8]);
        let text = serde_json::json!({"event": "media", "streamSid": "MZ1", "media": {"payload": payload}});
        Received::Message { at, message: serde_json::from_value(text).unwrap() }
    }

    #[test]
    fn played_spans_follow_playback_and_stop_at_a_clear() {
        let origin = Instant::now();
        let at = |ms: u64| origin + Duration::from_millis(ms);
        // 1 s of audio arriving in a burst plays for 1 s; a clear at 600 ms cuts it; later audio starts a new span.
        let mut log: Vec<Received> = (0..50).map(|i| media(at(i), 20)).collect();
        let clear = serde_json::json!({"event": "clear", "streamSid": "MZ1"});
        log.push(Received::Message { at: at(600), message: serde_json::from_value(clear).unwrap() });
        log.push(media(at(2_000), 20));
        log.push(media(at(2_010), 20));
        let spans = played_spans(&log, origin);
        assert_eq!(spans, vec![SpanMs { start_ms: 0, end_ms: 600 }, SpanMs { start_ms: 2_000, end_ms: 2_040 }]);
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = Dialogue::parse("[[line]]\nsay = \"hi\"\nshout = true\n").unwrap_err();
        assert!(err.to_string().contains("shout"), "{err}");
    }

    #[test]
    fn silence_is_not_voiced_and_speech_is() {
        assert!(!is_voiced(&silence(20)));
        assert!(is_voiced(&super::super::caller::speech(20)));
    }

    #[test]
    fn problems_name_unanswered_and_unstopped_lines() {
        let line = |interrupting, clear_after_ms, answer_after_ms| LineReport {
            said: "hi".into(),
            started_ms: 0,
            speech_ended_ms: 1,
            interrupting,
            agent_was_speaking: true,
            clear_after_ms,
            answer_after_ms,
            expects_answer: true,
        };
        let report = DialogueReport {
            greeting_after_ms: Some(1),
            lines: vec![line(false, None, Some(5)), line(true, Some(100), Some(5))],
            clears: 1,
            agent_audio_ms: 10,
            agent_speech: Vec::new(),
            clear_at_ms: Vec::new(),
        };
        assert!(report.problems().is_empty());
        let report = DialogueReport { lines: vec![line(true, None, None)], ..report };
        assert_eq!(report.problems().len(), 2, "{:?}", report.problems());
    }
}
