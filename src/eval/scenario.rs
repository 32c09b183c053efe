//! Scenario files: a caller's recorded lines, what the call should achieve, and the thresholds a deploy is gated on.
//!
//! ```toml
//! name = "order-status"
//!
//! [[line]]
//! audio = "order-456.wav"          # next to this file: PCM16 WAV at any rate, mono or stereo
//! say = "Can you look up order four five six?"  # what the audio says (spoken with espeak-ng when there is no audio)
//! expect_words = ["shipped"]       # the agent's answer to this line says these words
//! one_turn = true                  # a pause inside the line must not end the caller's turn
//!
//! [[line]]
//! audio = "cough.wav"
//! noise = true                     # not speech: must not interrupt the agent, expects no answer
//! interrupt_after_ms = 800
//!
//! [[expect.tool_call]]
//! name = "lookup_order"
//! arguments = { order_id = "456" } # the arguments must include these
//! result_contains = ["shipped"]     # and the backend's answer must say this
//!
//! [thresholds]
//! first_audio_p95_ms = 1500
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::dialogue::{Pacing, SpokenLine};
use crate::audio::mulaw;
use crate::local::resample::{resample, to_f32, to_i16};
use crate::local::{wav, EspeakSettings};

/// Why a scenario could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {source}")]
    Parse { path: PathBuf, source: toml::de::Error },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Audio { path: PathBuf, message: String },
}

/// One scenario, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Defaults to the file's stem.
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// The agent counts as done speaking after this much quiet.
    #[serde(default = "super::dialogue::default_quiet_ms")]
    pub quiet_ms: u64,
    /// How long the caller waits for any answer before the scenario fails.
    #[serde(default = "super::dialogue::default_patience_ms")]
    pub patience_ms: u64,
    /// Whether the caller waits for the agent's greeting before the first line.
    #[serde(default = "super::dialogue::yes")]
    pub expect_greeting: bool,
    #[serde(rename = "line")]
    pub lines: Vec<ScenarioLine>,
    #[serde(default)]
    pub expect: Expectations,
    #[serde(default)]
    pub thresholds: Thresholds,
    /// The folder relative audio paths are read from (the scenario file's).
    #[serde(skip)]
    pub dir: PathBuf,
    #[serde(skip)]
    pub path: PathBuf,
}

/// One thing the caller says (or a noise it makes).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioLine {
    /// Recorded caller audio, relative to the scenario file.
    pub audio: Option<PathBuf>,
    /// What the line says; synthesized when there is no recording.
    #[serde(default)]
    pub say: String,
    /// Say it this long into the agent's next answer: a barge-in the agent must yield to (unless `noise`).
    pub interrupt_after_ms: Option<u64>,
    /// Not speech (a cough, a door): must not interrupt the agent and expects no answer.
    #[serde(default)]
    pub noise: bool,
    /// Words the agent's answer to this line must contain (case-insensitive).
    #[serde(default)]
    pub expect_words: Vec<String>,
    /// The line has a pause inside (a caller thinking before a number): Parley must make one caller turn of it,
    /// not answer the first half.
    #[serde(default)]
    pub one_turn: bool,
}

/// What the call as a whole must achieve.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expectations {
    /// Tool calls the agent must make (in any order, among any others).
    #[serde(default)]
    pub tool_call: Vec<ExpectedToolCall>,
    /// Tools the agent must not call.
    #[serde(default)]
    pub no_tool: Vec<String>,
}

/// A tool call the agent must make: its name and arguments that must be among the call's.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectedToolCall {
    pub name: String,
    #[serde(default)]
    pub arguments: serde_json::Map<String, serde_json::Value>,
    /// What the backend must have answered: each text, word for word (case and punctuation aside). A replayed call
    /// carries what the backend said then, so a backend whose answer changed fails here.
    #[serde(default)]
    pub result_contains: Vec<String>,
}

/// Limits that fail the scenario (and `parley eval`'s exit status) when crossed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Thresholds {
    /// End of the caller's speech → first audio of the answer, caller-side, median over the call's answers.
    pub first_audio_p50_ms: Option<u64>,
    pub first_audio_p95_ms: Option<u64>,
    /// Speech onset → `clear`, caller-side, worst interruption of the call.
    pub barge_in_max_ms: Option<u64>,
    /// `clear`s the caller did not ask for (noise, or nobody speaking).
    pub false_interruptions_max: u64,
    /// Every expectation (tool calls, words, interruptions) must hold.
    pub task_success: bool,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            first_audio_p50_ms: None,
            first_audio_p95_ms: None,
            barge_in_max_ms: None,
            false_interruptions_max: 0,
            task_success: true,
        }
    }
}

impl Scenario {
    /// Reads and checks a scenario file.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ScenarioError::Read { path: path.to_owned(), source })?;
        let mut scenario: Scenario =
            toml::from_str(&text).map_err(|source| ScenarioError::Parse { path: path.to_owned(), source })?;
        scenario.path = path.to_owned();
        scenario.dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        if scenario.name.is_empty() {
            scenario.name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        }
        scenario.validate()?;
        Ok(scenario)
    }

    fn validate(&self) -> Result<(), ScenarioError> {
        let invalid = |message: String| ScenarioError::Invalid { path: self.path.clone(), message };
        if self.lines.is_empty() {
            return Err(invalid("a scenario needs at least one [[line]]".into()));
        }
        for (i, line) in self.lines.iter().enumerate() {
            if line.audio.is_none() && line.say.trim().is_empty() {
                return Err(invalid(format!("line {} has neither `audio` nor `say`", i + 1)));
            }
            if line.noise && !line.expect_words.is_empty() {
                return Err(invalid(format!("line {} is noise and cannot expect an answer", i + 1)));
            }
        }
        Ok(())
    }

    /// The caller's pacing.
    pub fn pacing(&self) -> Pacing {
        Pacing::from_millis(self.quiet_ms, self.patience_ms, self.expect_greeting)
    }

    /// Every line as 8 kHz μ-law, ready to stream: recordings read and converted, the rest synthesized.
    pub async fn spoken_lines(&self) -> Result<Vec<SpokenLine>, ScenarioError> {
        let mut lines = Vec::with_capacity(self.lines.len());
        for line in &self.lines {
            let audio = match &line.audio {
                Some(file) => {
                    let path = self.dir.join(file);
                    read_phone_audio(&path)?
                }
                None => crate::tts::espeak::synthesize_mulaw(&caller_voice(), &line.say).await.map_err(|e| {
                    ScenarioError::Audio { path: self.path.clone(), message: format!("speaking {:?}: {e}", line.say) }
                })?,
            };
            let label = match (&line.audio, line.say.trim()) {
                (_, said) if !said.is_empty() => said.to_owned(),
                (Some(file), _) => format!("({})", file.display()),
                (None, _) => String::new(),
            };
            lines.push(SpokenLine {
                label,
                audio,
                interrupt_after_ms: line.interrupt_after_ms,
                expects_answer: !line.noise,
            });
        }
        Ok(lines)
    }
}

/// The voice lines without a recording are spoken in (unlike the agent's default voice).
fn caller_voice() -> EspeakSettings {
    EspeakSettings { voice: "en-us+m3".into(), speed: 140, ..EspeakSettings::default() }
}

/// A PCM16 WAV file as telephone audio: mono, 8 kHz, μ-law.
pub fn read_phone_audio(path: &Path) -> Result<Vec<u8>, ScenarioError> {
    let audio_error = |message: String| ScenarioError::Audio { path: path.to_owned(), message };
    let bytes = std::fs::read(path).map_err(|source| ScenarioError::Read { path: path.to_owned(), source })?;
    let pcm = wav::read(&bytes).map_err(|e| audio_error(e.to_string()))?;
    if pcm.samples.is_empty() {
        return Err(audio_error("the recording is empty".into()));
    }
    let samples = if pcm.sample_rate == 8_000 {
        pcm.samples
    } else {
        let phone =
            resample(&to_f32(&pcm.samples), pcm.sample_rate as usize, 8_000).map_err(|e| audio_error(e.to_string()))?;
        to_i16(&phone)
    };
    Ok(mulaw::encode(&samples))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_scenario(dir: &Path, text: &str) -> PathBuf {
        let path = dir.join("call.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn a_scenario_reads_its_lines_expectations_and_thresholds() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_scenario(
            dir.path(),
            r#"
            [[line]]
            say = "where is my order"
            expect_words = ["shipped"]
            [[line]]
            audio = "cough.wav"
            noise = true
            interrupt_after_ms = 500
            [[expect.tool_call]]
            name = "lookup_order"
            arguments = { order_id = "456" }
            [thresholds]
            first_audio_p95_ms = 900
            "#,
        );
        let scenario = Scenario::load(&path).unwrap();
        assert_eq!(scenario.name, "call");
        assert_eq!(scenario.lines.len(), 2);
        assert!(scenario.lines[1].noise);
        assert_eq!(scenario.expect.tool_call[0].arguments["order_id"], "456");
        assert_eq!(scenario.thresholds.first_audio_p95_ms, Some(900));
        assert!(scenario.thresholds.task_success, "task success is required unless turned off");
        assert_eq!(scenario.thresholds.false_interruptions_max, 0);
    }

    #[test]
    fn mistakes_in_a_scenario_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            ("[[line]]\nsay = \"hi\"\nshout = true\n", "shout"),
            ("name = \"empty\"\nline = []\n", "at least one"),
            ("[[line]]\nnoise = true\n", "neither"),
            ("[[line]]\nsay = \"x\"\nnoise = true\nexpect_words = [\"y\"]\n", "noise"),
            ("[[line]]\nsay = \"x\"\n[thresholds]\nfirst_audio_p95 = 3\n", "first_audio_p95"),
        ];
        for (text, named) in cases {
            let err = Scenario::load(&write_scenario(dir.path(), text)).unwrap_err().to_string();
            assert!(err.contains(named), "{text:?} → {err}");
        }
    }

    #[test]
    fn recordings_become_telephone_audio_at_8_khz() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("line.wav");
        // One second at 16 kHz becomes 8,000 μ-law bytes.
        let tone: Vec<i16> = (0..16_000).map(|i| ((i as f32 * 0.1).sin() * 8_000.0) as i16).collect();
        std::fs::write(&path, wav::write(&tone, 16_000)).unwrap();
        let audio = read_phone_audio(&path).unwrap();
        assert!((7_900..=8_100).contains(&audio.len()), "{}", audio.len());
        std::fs::write(&path, b"not a wav").unwrap();
        assert!(read_phone_audio(&path).unwrap_err().to_string().contains("line.wav"));
    }
}
