//! A scripted caller: speaks lines synthesized with espeak-ng into a simulated Twilio call, waits for the agent
//! between them (or cuts in while it speaks), and measures from the caller's side how long each answer took.
//!
//! The line is never idle: like a real phone leg, 20 ms frames flow the whole call, speech when the caller talks and
//! silence otherwise, because end-of-speech detection on the other side needs to hear the silence.

use std::time::Duration;

use parley::local::EspeakSettings;
use parley::twilio::messages::OutboundMessage;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::{Observer, Received, SimCall, SimError};

/// The dialogue `parley demo` runs: a caller asks about order 456, cuts the answer short, asks when it arrives.
pub const ORDER_STATUS: &str = include_str!("../dialogues/order-status.toml");

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

fn default_quiet_ms() -> u64 {
    1_200
}
fn default_patience_ms() -> u64 {
    20_000
}
fn yes() -> bool {
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
    /// End of the caller's speech → the first audio of the answer.
    pub answer_after_ms: Option<u64>,
}

/// The whole call from the caller's side.
#[derive(Debug, Clone, Serialize)]
pub struct DialogueReport {
    pub greeting_after_ms: Option<u64>,
    pub lines: Vec<LineReport>,
    pub clears: u64,
    pub agent_audio_ms: u64,
}

impl DialogueReport {
    /// Whatever went wrong, for a non-zero exit: unanswered lines, interruptions that never cut the agent off.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for line in &self.lines {
            if line.answer_after_ms.is_none() {
                problems.push(format!("no answer to {:?}", line.said));
            }
            if line.interrupting && !line.agent_was_speaking {
                problems.push(format!("the agent was not speaking when the caller said {:?}", line.said));
            } else if line.interrupting && line.clear_after_ms.is_none() {
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

/// Runs the dialogue over a started call, then hangs up.
pub async fn run(
    call: SimCall,
    dialogue: &Dialogue,
    mut progress: impl FnMut(&str),
) -> Result<DialogueReport, SimError> {
    let observer = call.observer();
    let call_started = Instant::now();
    let since_start = |at: Instant| at.saturating_duration_since(call_started).as_millis() as u64;
    let (utterances, feed) = mpsc::channel(1);
    let feeder = tokio::spawn(feed_line(call, feed));
    let patience = Duration::from_millis(dialogue.patience_ms);
    let quiet = Duration::from_millis(dialogue.quiet_ms);
    let voice = EspeakSettings {
        voice: dialogue.voice.voice.clone(),
        speed: dialogue.voice.speed,
        pitch: dialogue.voice.pitch,
        ..EspeakSettings::default()
    };

    let mut greeting_after_ms = None;
    if dialogue.expect_greeting {
        let first = wait_for_audio_after(&observer, call_started, patience).await?;
        greeting_after_ms = Some(since_start(first));
        wait_until_quiet(&observer, quiet, patience).await?;
    }
    let mut lines = Vec::with_capacity(dialogue.lines.len());
    let mut previous_end = call_started;
    for line in &dialogue.lines {
        let audio = parley::tts::espeak::synthesize_mulaw(&voice, &line.say)
            .await
            .map_err(|e| SimError::Timeout(format!("espeak-ng to speak {:?}: {e}", line.say)))?;
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
        utterances.send(Utterance { audio, spoken }).await.map_err(|_| SimError::Closed)?;
        let (started, ended) = times.await.map_err(|_| SimError::Closed)?;
        progress(&format!("caller: {}", line.say));
        let clear_after_ms = (observer.clears() > clears_before)
            .then(|| first_clear_after(&observer.received(), started).map(|at| (at - started).as_millis() as u64))
            .flatten();
        let answer = wait_for_audio_after(&observer, ended, patience).await.ok();
        lines.push(LineReport {
            said: line.say.clone(),
            started_ms: since_start(started),
            speech_ended_ms: since_start(ended),
            interrupting: line.interrupt_after_ms.is_some(),
            agent_was_speaking,
            clear_after_ms,
            answer_after_ms: answer.map(|at| (at - ended).as_millis() as u64),
        });
        previous_end = ended;
    }
    // Let the last answer play out, then hang up.
    let _ = wait_until_quiet(&observer, quiet, patience).await;
    drop(utterances);
    let mut call = feeder.await.map_err(|_| SimError::Closed)??;
    call.send_stop()?;
    let agent_audio_ms = call.audio_received().len() as u64 / 8;
    let clears = call.clears();
    call.hang_up().await;
    Ok(DialogueReport { greeting_after_ms, lines, clears, agent_audio_ms })
}

/// Sends a 20 ms frame every 20 ms for as long as the dialogue runs: the next utterance's audio, else silence.
async fn feed_line(mut call: SimCall, mut utterances: mpsc::Receiver<Utterance>) -> Result<SimCall, SimError> {
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let silence = crate::silence(20);
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
    let pcm = parley::audio::mulaw::decode(frame);
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

    #[test]
    fn the_order_status_dialogue_parses_and_interrupts_once() {
        let dialogue = Dialogue::parse(ORDER_STATUS).unwrap();
        assert!(dialogue.lines.len() >= 3);
        assert_eq!(dialogue.lines.iter().filter(|l| l.interrupt_after_ms.is_some()).count(), 1);
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = Dialogue::parse("[[line]]\nsay = \"hi\"\nshout = true\n").unwrap_err();
        assert!(err.to_string().contains("shout"), "{err}");
    }

    #[test]
    fn silence_is_not_voiced_and_speech_is() {
        assert!(!is_voiced(&crate::silence(20)));
        assert!(is_voiced(&crate::speech(20)));
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
        };
        let report = DialogueReport {
            greeting_after_ms: Some(1),
            lines: vec![line(false, None, Some(5)), line(true, Some(100), Some(5))],
            clears: 1,
            agent_audio_ms: 10,
        };
        assert!(report.problems().is_empty());
        let report = DialogueReport { lines: vec![line(true, None, None)], ..report };
        assert_eq!(report.problems().len(), 2, "{:?}", report.problems());
    }
}
