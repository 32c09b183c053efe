//! Turn-taking benchmark: how soon each end-of-turn strategy ends a caller's turn, and how often it cuts a caller off
//! in a mid-sentence pause.
//!
//! The labelled set is made on this machine at bench time: eSpeak NG speaks complete turns and turns with a pause of
//! 300–1200 ms at a natural point (an SSML `<break>`, so the sentence keeps one intonation), in several voices and
//! speeds; the speech is resampled to 8 kHz and μ-law encoded as a phone line carries it, and the recorded scenario
//! lines in `tests/scenarios/order-status/` are added. Every utterance has 500 ms of silence before it and 3 s after.
//! Files go to `$CARGO_TARGET_TMPDIR/turn-bench/` (WAVs and `labels.csv`) for listening.
//!
//! Each utterance is streamed in 20 ms frames through:
//! - `vad`: the call's VAD (webrtc-vad, mode `aggressive`, behind the energy gate, as the VAD pool runs it) feeding
//!   Parley's `TurnDetector` in virtual time; the end of turn is its `RequestFinalize`.
//! - `smart`: the same, with the smart-turn model asked for real (decoding, resampling, features and inference on
//!   this thread) over the caller's audio so far whenever the detector emits `JudgeTurn`; the answer reaches the
//!   detector after the measured wall time of that work, so inference time is part of the delay.
//! - `smart` with words: the same, and at the first question of each pause the live Whisper provider's engine (greedy,
//!   the fitted window) transcribes the audio so far for real, as the provider does at its pause report; the words
//!   reach the detector as an interim transcript after the measured time of that transcription (the provider reports
//!   its pause on the energy segmenter's 300 ms of silence, here on the detector's first question: the same point
//!   within a frame or two).
//! - `stt`: Parley's Deepgram client against the fake Deepgram server on 127.0.0.1 (`endpointing=300`, finalize
//!   delay 0), streamed in real time (the fake's endpointing runs on audio time, its answers on wall time); the end
//!   of turn is the first `speech_final` transcript's arrival.
//!
//! Delay = decision time − the true end of speech (the last sample of the generated speech). A false cutoff is a
//! decision before the true end of speech. Needs `espeak-ng`, the smart-turn model and ONNX Runtime (`scripts/setup`).
//!
//! Run with `cargo bench --bench turn_taking`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant as StdInstant};

use bytes::Bytes;
use fake_providers::deepgram::{FakeDeepgram, FakeDeepgramOptions};
use parley::audio::mulaw;
use parley::engine::turn::{TurnConfig, TurnDecision, TurnDetector, TurnStrategy};
use parley::engine::vad::energy_voiced;
use parley::local::smart_turn::{phone_to_model_audio, FeatureExtractor, SmartTurnModel, FEATURES_LEN};
use parley::local::{resample, wav, SmartTurnPool, SmartTurnSettings, WhisperEngine, WhisperSettings};
use parley::stt::deepgram::{Deepgram, DeepgramConfig};
use parley::stt::{SpeechToText, SttEvent, SttInput, Transcript};
use tokio::time::Instant;
use webrtc_vad::{SampleRate, Vad, VadMode};

const RATE: usize = 8000;
const FRAME: usize = 160;
const FRAME_MS: f64 = 20.0;
const LEAD_MS: usize = 500;
const TRAIL_MS: usize = 3000;
/// A sample louder than this (about -44 dBFS) is speech, for labelling the generated audio.
const SPEECH_SAMPLE: i16 = 200;
/// Parley's default Deepgram endpointing (`src/config/providers.rs`).
const ENDPOINTING_MS: u32 = 300;

/// Complete turns.
const COMPLETE: &[&str] = &[
    "Hi, I'd like to check the status of my order.",
    "Where is my package?",
    "My order number is four five six.",
    "Can you tell me when it will arrive?",
    "I want to cancel my subscription.",
    "That's all, thank you very much.",
    "Yes, that's correct.",
    "I'd like to book a table for four people tonight.",
    "Could you transfer me to a real person please?",
    "The delivery address is twelve Baker Street.",
    "No, I already tried restarting it.",
    "What time do you close on Sundays?",
    "I was charged twice for the same order.",
    "Please send the receipt to my email.",
    "My name is John Smith.",
    "It stopped working after two days.",
];

/// Turns with a mid-sentence pause: the words before it and after it.
const PAUSED: &[(&str, &str)] = &[
    ("My order number is", "four five six."),
    ("I'd like to book a table for", "four people."),
    ("The delivery address is", "twelve Baker Street."),
    ("I was hoping to", "change my delivery date."),
    ("My phone number is five five five", "one two three four."),
    ("I want to cancel", "the order I placed yesterday."),
    ("Can you send it to", "my work address instead?"),
    ("My name is", "John Smith."),
    ("I'd like to pay with", "my credit card."),
    ("The problem is that", "it won't turn on."),
    ("I ordered it on", "Monday morning."),
    ("Could you check if", "it has shipped yet?"),
    ("Um, I think it was", "the blue one."),
    ("My account number is seven eight", "nine zero."),
    ("I need to speak to someone about", "a refund."),
    ("It should arrive before", "Friday, right?"),
];

/// Voice and speed pairs; each sentence is spoken by two of them.
const VOICES: &[(&str, u32)] = &[
    ("en-us", 150),
    ("en-gb", 130),
    ("en-us+f3", 170),
    ("en-us+m3", 140),
    ("en-gb+f3", 150),
    ("en-us", 170),
    ("en-us+f3", 130),
    ("en-gb", 160),
];

const PAUSES_MS: &[u32] = &[300, 450, 600, 800, 1000, 1200];

/// The recorded scenario lines: file, and whether the line has a mid-sentence pause.
const SCENARIO_LINES: &[(&str, bool)] =
    &[("order-456.wav", false), ("when-arrive.wav", false), ("goodbye.wav", false), ("pause-in-number.wav", true)];

#[derive(Debug, Clone)]
struct Utterance {
    name: String,
    source: String,
    text: String,
    /// μ-law, 8 kHz, lead and trailing silence included.
    mulaw: Vec<u8>,
    speech_end_ms: f64,
    /// The mid-sentence pause (start, end) in ms, for paused turns.
    pause: Option<(f64, f64)>,
}

impl Utterance {
    fn paused(&self) -> bool {
        self.pause.is_some()
    }
}

fn bench_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("turn-bench")
}

/// eSpeak NG's 22.05 kHz speech for `ssml`, as 8 kHz PCM16.
fn espeak(voice: &str, wpm: u32, ssml: &str) -> Vec<i16> {
    let output = Command::new("espeak-ng")
        .args(["-v", voice, "-s", &wpm.to_string(), "-m", "--stdout", ssml])
        .output()
        .unwrap_or_else(|e| panic!("the turn-taking benchmark needs espeak-ng: {e}"));
    assert!(output.status.success(), "espeak-ng failed: {}", String::from_utf8_lossy(&output.stderr));
    let pcm = wav::read(&output.stdout).unwrap_or_else(|e| panic!("espeak-ng's WAV: {e}"));
    to_phone(&pcm.samples, pcm.sample_rate as usize)
}

fn to_phone(samples: &[i16], rate: usize) -> Vec<i16> {
    let floats = resample::to_f32(samples);
    let resampled = resample::resample(&floats, rate, RATE).unwrap_or_else(|e| panic!("{e}"));
    resample::to_i16(&resampled)
}

/// Frames up `speech` (8 kHz PCM16) with silence, finds its labels, and μ-law encodes it.
fn label(name: String, source: String, text: String, speech: &[i16], paused: bool) -> Utterance {
    let loud: Vec<usize> =
        speech.iter().enumerate().filter(|(_, s)| s.unsigned_abs() > SPEECH_SAMPLE as u16).map(|(i, _)| i).collect();
    let (first, last) = (loud[0], loud[loud.len() - 1]);
    let trimmed = &speech[first..=last];
    let mut pcm = vec![0i16; LEAD_MS * RATE / 1000];
    pcm.extend_from_slice(trimmed);
    pcm.extend(vec![0i16; TRAIL_MS * RATE / 1000]);
    let lead = LEAD_MS as f64;
    let speech_end_ms = lead + trimmed.len() as f64 * 1000.0 / RATE as f64;
    let pause = paused.then(|| {
        // The pause is the longest quiet run inside the speech.
        let (mut best, mut run_start) = ((0usize, 0usize), None);
        for (i, s) in trimmed.iter().enumerate() {
            let quiet = s.unsigned_abs() <= SPEECH_SAMPLE as u16;
            match (quiet, run_start) {
                (true, None) => run_start = Some(i),
                (false, Some(start)) => {
                    if i - start > best.1 - best.0 {
                        best = (start, i);
                    }
                    run_start = None;
                }
                _ => {}
            }
        }
        let ms = |i: usize| lead + i as f64 * 1000.0 / RATE as f64;
        (ms(best.0), ms(best.1))
    });
    let mulaw = mulaw::encode(&pcm);
    Utterance { name, source, text, mulaw, speech_end_ms, pause }
}

/// The labelled set: eSpeak NG's turns and the recorded scenario lines.
fn generate() -> Vec<Utterance> {
    let dir = bench_dir();
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let mut set = Vec::new();
    for (i, text) in COMPLETE.iter().enumerate() {
        for k in 0..2 {
            let (voice, wpm) = VOICES[(2 * i + k) % VOICES.len()];
            let speech = espeak(voice, wpm, text);
            let name = format!("complete-{i:02}-{k}");
            set.push(label(name, format!("{voice} {wpm} wpm"), (*text).into(), &speech, false));
        }
    }
    for (i, (before, after)) in PAUSED.iter().enumerate() {
        for k in 0..2 {
            let (voice, wpm) = VOICES[(2 * i + k + 1) % VOICES.len()];
            let pause = PAUSES_MS[(2 * i + k) % PAUSES_MS.len()];
            let ssml = format!("{before} <break time=\"{pause}ms\"/> {after}");
            let speech = espeak(voice, wpm, &ssml);
            let name = format!("paused-{i:02}-{k}");
            let text = format!("{before} … {after}");
            set.push(label(name, format!("{voice} {wpm} wpm, {pause} ms break"), text, &speech, true));
        }
    }
    let scenarios = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios/order-status");
    for (file, paused) in SCENARIO_LINES {
        let bytes = std::fs::read(scenarios.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        let pcm = wav::read(&bytes).unwrap_or_else(|e| panic!("{file}: {e}"));
        let speech = to_phone(&pcm.samples, pcm.sample_rate as usize);
        let name = format!("scenario-{}", file.trim_end_matches(".wav"));
        set.push(label(name, format!("recorded {file}"), String::new(), &speech, *paused));
    }
    let mut labels = String::from("name,source,text,speech_end_ms,pause_start_ms,pause_end_ms\n");
    for u in &set {
        let pcm = mulaw::decode(&u.mulaw);
        std::fs::write(dir.join(format!("{}.wav", u.name)), wav::write(&pcm, RATE as u32))
            .unwrap_or_else(|e| panic!("{e}"));
        let (ps, pe) = u.pause.map(|(s, e)| (format!("{s:.0}"), format!("{e:.0}"))).unwrap_or_default();
        labels.push_str(&format!("{},{},\"{}\",{:.0},{ps},{pe}\n", u.name, u.source, u.text, u.speech_end_ms));
    }
    std::fs::write(dir.join("labels.csv"), labels).unwrap_or_else(|e| panic!("{e}"));
    set
}

/// The call's VAD verdict for each 20 ms frame: webrtc-vad behind the energy gate, as the VAD pool decides.
fn vad_verdicts(audio: &[u8]) -> Vec<bool> {
    let mut vad = Vad::new_with_rate_and_mode(SampleRate::Rate8kHz, VadMode::Aggressive);
    audio
        .chunks_exact(FRAME)
        .map(|frame| {
            let pcm = mulaw::decode(frame);
            energy_voiced(frame) && vad.is_voice_segment(&pcm).unwrap_or(false)
        })
        .collect()
}

/// One smart-turn judgement: probability, wall time and thread CPU time (ms) of the worker's whole job.
#[derive(Debug, Clone, Copy)]
struct Judgement {
    probability: f32,
    wall_ms: f64,
    cpu_ms: Option<f64>,
}

/// The smart-turn model, run on this thread as a pool worker runs it; judgements are cached per (utterance, frame).
struct Judge {
    model: SmartTurnModel,
    extractor: FeatureExtractor,
    features: Vec<f32>,
    cache: HashMap<(usize, usize), Judgement>,
}

/// This thread's CPU time (user + system) in ms, from `/proc/thread-self/stat` (clock ticks of 10 ms).
fn thread_cpu_ms() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) * 10.0)
}

impl Judge {
    fn judge(&mut self, utterance: usize, frames: usize, audio: &[u8]) -> Judgement {
        if let Some(j) = self.cache.get(&(utterance, frames)) {
            return *j;
        }
        let window = &audio[..frames * FRAME];
        let cpu_before = thread_cpu_ms();
        let started = StdInstant::now();
        let probability = phone_to_model_audio(window)
            .and_then(|pcm| {
                self.extractor.extract(&pcm, &mut self.features);
                self.model.complete_probability(&self.features)
            })
            .unwrap_or_else(|e| panic!("smart-turn: {e}"));
        let wall_ms = started.elapsed().as_secs_f64() * 1000.0;
        let cpu_ms = thread_cpu_ms().zip(cpu_before).map(|(after, before)| after - before);
        let j = Judgement { probability, wall_ms, cpu_ms };
        self.cache.insert((utterance, frames), j);
        j
    }
}

/// The live Whisper engine transcribing the audio so far, with its answers cached per (utterance, frames).
struct Words {
    engine: WhisperEngine,
    cache: HashMap<(usize, usize), (String, f64)>,
}

impl Words {
    /// The words of the first `frames` frames of `audio`, and the wall time (ms) the transcription took.
    fn transcribe(&mut self, utterance: usize, frames: usize, audio: &[u8]) -> (String, f64) {
        if let Some(cached) = self.cache.get(&(utterance, frames)) {
            return cached.clone();
        }
        let pcm = mulaw::decode(&audio[..frames * FRAME]);
        let started = StdInstant::now();
        let text = resample::phone_to_whisper(&pcm)
            .map_err(|e| e.to_string())
            .and_then(|samples| self.engine.transcribe_blocking(&samples).map_err(|e| e.to_string()))
            .unwrap_or_else(|e| panic!("whisper: {e}"));
        let answer = (text, started.elapsed().as_secs_f64() * 1000.0);
        self.cache.insert((utterance, frames), answer.clone());
        answer
    }
}

/// A strategy's settings for one run.
#[derive(Debug, Clone, Copy)]
enum Setting {
    Vad { silence_ms: u64 },
    Smart { pause_ms: u64, threshold: f32, max_silence_ms: u64 },
}

/// When (ms from the start of the stream) the detector asked to finalize the turn, if it did. With `words`, the
/// caller's words so far are transcribed at the first question of each pause and given to the detector.
fn decide(
    setting: Setting,
    index: usize,
    u: &Utterance,
    verdicts: &[bool],
    judge: &mut Judge,
    mut words: Option<&mut Words>,
) -> Option<f64> {
    let mut config = TurnConfig::default();
    let mut threshold = 0.5;
    match setting {
        Setting::Vad { silence_ms } => {
            config.strategy = TurnStrategy::Vad;
            config.vad_silence_ms = silence_ms;
        }
        Setting::Smart { pause_ms, threshold: t, max_silence_ms } => {
            config.strategy = TurnStrategy::Smart;
            config.smart_pause_ms = pause_ms;
            config.smart_max_silence_ms = max_silence_ms;
            threshold = t;
        }
    }
    let mut detector = TurnDetector::new(config);
    let base = Instant::now();
    let at = |ms: f64| base + Duration::from_secs_f64(ms / 1000.0);
    // A judgement on its way back: id, arrival (ms), complete.
    let mut pending: Option<(u64, f64, bool)> = None;
    // Words on their way back: arrival (ms), text; the last voiced frame whose pause was transcribed, and its words.
    let mut heard: Option<(f64, String)> = None;
    let mut transcribed_pause: Option<(usize, f64, String)> = None;
    // With words, a finalize's answer on its way back: requested at (ms), arrival (ms), text.
    let mut finalizing: Option<(f64, f64, String)> = None;
    let mut last_voiced = 0;
    for (i, &voiced) in verdicts.iter().enumerate() {
        let now_ms = (i + 1) as f64 * FRAME_MS;
        if voiced {
            last_voiced = i;
        }
        let mut decisions: Vec<(f64, TurnDecision)> = Vec::new();
        if let Some((requested, due, text)) = finalizing.take_if(|(_, due, _)| *due <= now_ms) {
            let flushed = transcript(text, true, due);
            if detector.on_transcript(&flushed, at(due)).iter().any(|d| matches!(d, TurnDecision::EndOfTurn(_))) {
                return Some(requested);
            }
        }
        if let Some((due, text)) = heard.take_if(|(due, _)| *due <= now_ms) {
            decisions
                .extend(detector.on_transcript(&transcript(text, false, due), at(due)).into_iter().map(|d| (due, d)));
        }
        if let Some((id, due, complete)) = pending.take_if(|(_, due, _)| *due <= now_ms) {
            decisions.extend(detector.on_judgement(id, complete, at(due)).into_iter().map(|d| (due, d)));
        }
        decisions.extend(detector.on_vad(voiced, at(now_ms)).into_iter().map(|d| (now_ms, d)));
        for (when, decision) in decisions {
            match decision {
                TurnDecision::RequestFinalize => {
                    let Some(words) = words.as_deref_mut() else { return Some(when) };
                    // The finalize's words: those transcribed at this pause if the caller said nothing since (the
                    // provider reuses them), else the audio so far, transcribed now.
                    let (due, text) = match &transcribed_pause {
                        Some((pause, due, text)) if *pause == last_voiced => (due.max(when), text.clone()),
                        _ => {
                            let (text, wall_ms) = words.transcribe(index, i + 1, &u.mulaw);
                            (when + wall_ms, text)
                        }
                    };
                    finalizing = Some((when, due, text));
                }
                TurnDecision::JudgeTurn { id } => {
                    let j = judge.judge(index, i + 1, &u.mulaw);
                    pending = Some((id, now_ms + j.wall_ms, j.probability > threshold));
                    let new_pause = transcribed_pause.as_ref().is_none_or(|(pause, _, _)| *pause != last_voiced);
                    if let Some(words) = words.as_deref_mut().filter(|_| new_pause) {
                        let (text, wall_ms) = words.transcribe(index, i + 1, &u.mulaw);
                        transcribed_pause = Some((last_voiced, now_ms + wall_ms, text.clone()));
                        heard = Some((now_ms + wall_ms, text));
                    }
                }
                _ => {}
            }
        }
    }
    None
}

/// A transcript of the caller's words so far: interim, or the answer to a finalize.
fn transcript(text: String, finalized: bool, at_ms: f64) -> Transcript {
    Transcript {
        text,
        is_final: finalized,
        speech_final: finalized,
        from_finalize: finalized,
        start: 0.0,
        duration: at_ms / 1000.0,
    }
}

/// One strategy's outcome on every utterance: the decision time, if any.
struct Outcome {
    label: String,
    decisions: Vec<Option<f64>>,
}

#[derive(Debug, Default)]
struct Summary {
    complete_n: usize,
    median: f64,
    p90: f64,
    early_on_complete: usize,
    never: usize,
    paused_n: usize,
    cutoffs: usize,
    paused_median: f64,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn summarise(set: &[Utterance], decisions: &[Option<f64>]) -> Summary {
    let mut s = Summary::default();
    let mut delays = Vec::new();
    let mut paused_delays = Vec::new();
    for (u, d) in set.iter().zip(decisions) {
        let early = d.is_some_and(|t| t < u.speech_end_ms);
        if d.is_none() {
            s.never += 1;
        }
        if u.paused() {
            s.paused_n += 1;
            if early {
                s.cutoffs += 1;
            } else if let Some(t) = d {
                paused_delays.push(t - u.speech_end_ms);
            }
        } else {
            s.complete_n += 1;
            if early {
                s.early_on_complete += 1;
            } else if let Some(t) = d {
                delays.push(t - u.speech_end_ms);
            }
        }
    }
    delays.sort_by(f64::total_cmp);
    paused_delays.sort_by(f64::total_cmp);
    s.median = percentile(&delays, 0.5);
    s.p90 = percentile(&delays, 0.9);
    s.paused_median = percentile(&paused_delays, 0.5);
    s
}

fn row(label: &str, s: &Summary) -> String {
    let rate = 100.0 * s.cutoffs as f64 / s.paused_n.max(1) as f64;
    format!(
        "| {label} | {:.0} | {:.0} | {}/{} ({rate:.0} %) | {}/{} | {:.0} | {} |",
        s.median, s.p90, s.cutoffs, s.paused_n, s.early_on_complete, s.complete_n, s.paused_median, s.never
    )
}

const HEADER: &str = "| strategy | median delay (ms) | p90 delay (ms) | false cutoffs (paused turns) | early ends (complete \
                      turns) | median delay, paused turns not cut off (ms) | no decision |\n|---|---:|---:|---:|---:|---:|---:|";

/// The `stt` strategy: every utterance streamed in real time through Parley's Deepgram client to the fake server;
/// the first `speech_final` transcript's arrival, in ms from the stream's start.
async fn stt_decisions(set: &[Utterance]) -> Vec<Option<f64>> {
    let options = FakeDeepgramOptions { finalize_delay: Duration::ZERO, ..FakeDeepgramOptions::default() };
    let fake = FakeDeepgram::start(options).await.unwrap_or_else(|e| panic!("fake deepgram: {e}"));
    let config = DeepgramConfig {
        base_url: fake.base_url(),
        api_key: "bench".into(),
        endpointing_ms: ENDPOINTING_MS,
        ..DeepgramConfig::default()
    };
    let client = Arc::new(Deepgram::new(config));
    let mut decisions = Vec::new();
    // A dozen streams at a time, so the machine's two cores keep the 20 ms pacing.
    for batch in set.chunks(12) {
        let tasks: Vec<_> = batch
            .iter()
            .map(|u| {
                let client = client.clone();
                let audio = u.mulaw.clone();
                tokio::spawn(async move { stream_one(&*client, audio).await })
            })
            .collect();
        for task in tasks {
            decisions.push(task.await.unwrap_or(None));
        }
    }
    decisions
}

async fn stream_one(client: &dyn SpeechToText, audio: Vec<u8>) -> Option<f64> {
    let mut session = client.open().await.unwrap_or_else(|e| panic!("deepgram client: {e}"));
    let input = session.input.clone();
    let start = Instant::now();
    let sender = tokio::spawn(async move {
        for (k, frame) in audio.chunks(FRAME).enumerate() {
            tokio::time::sleep_until(start + Duration::from_millis(20 * (k as u64 + 1))).await;
            if input.send(SttInput::Audio(Bytes::copy_from_slice(frame))).await.is_err() {
                return;
            }
        }
        let _ = input.send(SttInput::Close).await;
    });
    let mut decision = None;
    while let Some(event) = session.events.recv().await {
        match event {
            SttEvent::Transcript(t) if t.speech_final && decision.is_none() => {
                decision = Some(start.elapsed().as_secs_f64() * 1000.0);
            }
            SttEvent::Closed | SttEvent::Error(_) => break,
            _ => {}
        }
    }
    let _ = sender.await;
    decision
}

/// The lowest median delay among settings whose false-cutoff rate is at most 5 %.
fn best_within_5_percent(rows: &[(String, Summary)]) -> Option<&(String, Summary)> {
    rows.iter()
        .filter(|(_, s)| s.cutoffs as f64 <= 0.05 * s.paused_n as f64)
        .min_by(|a, b| a.1.median.total_cmp(&b.1.median))
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument that is not ours is ignored.
    let started = StdInstant::now();
    let set = generate();
    let complete = set.iter().filter(|u| !u.paused()).count();
    let paused = set.len() - complete;
    eprintln!(
        "turn-taking benchmark: {} utterances ({complete} complete, {paused} paused) in {}",
        set.len(),
        bench_dir().display()
    );
    for u in set.iter().filter(|u| u.paused()) {
        let (s, e) = u.pause.unwrap_or_default();
        eprintln!(
            "  {} pause {:.0}–{:.0} ms ({:.0} ms), speech ends {:.0} ms ({})",
            u.name,
            s,
            e,
            e - s,
            u.speech_end_ms,
            u.source
        );
    }
    let verdicts: Vec<Vec<bool>> = set.iter().map(|u| vad_verdicts(&u.mulaw)).collect();

    let settings = SmartTurnSettings::default();
    let model = SmartTurnModel::load(&settings.model_path(), &settings.onnxruntime_path())
        .unwrap_or_else(|e| panic!("the turn-taking benchmark needs the smart-turn model and ONNX Runtime: {e}"));
    let mut judge =
        Judge { model, extractor: FeatureExtractor::new(), features: vec![0.0; FEATURES_LEN], cache: HashMap::new() };

    let run = |setting: Setting, judge: &mut Judge| -> Vec<Option<f64>> {
        set.iter().enumerate().map(|(i, u)| decide(setting, i, u, &verdicts[i], judge, None)).collect()
    };

    let defaults = TurnConfig::default();
    let mut outcomes = Vec::new();
    outcomes.push(Outcome {
        label: format!("`vad` ({} ms silence)", defaults.vad_silence_ms),
        decisions: run(Setting::Vad { silence_ms: defaults.vad_silence_ms }, &mut judge),
    });
    outcomes.push(Outcome {
        label: format!(
            "`smart` (asked at {} ms, threshold 0.5, {} ms max silence)",
            defaults.smart_pause_ms, defaults.smart_max_silence_ms
        ),
        decisions: run(
            Setting::Smart {
                pause_ms: defaults.smart_pause_ms,
                threshold: 0.5,
                max_silence_ms: defaults.smart_max_silence_ms,
            },
            &mut judge,
        ),
    });
    // The live Whisper provider's engine, as `[stt] provider = "whisper"` loads it.
    let whisper_defaults = WhisperSettings::default();
    let live_whisper = WhisperSettings {
        beam_size: whisper_defaults.live_beam_size,
        window_ms: whisper_defaults.live_window_ms,
        ..whisper_defaults
    };
    let mut words_transcribed = Vec::new();
    match WhisperEngine::load(&live_whisper) {
        Ok(engine) => {
            eprintln!("transcribing each pause with the live Whisper engine…");
            let mut words = Words { engine, cache: HashMap::new() };
            let smart = Setting::Smart {
                pause_ms: defaults.smart_pause_ms,
                threshold: 0.5,
                max_silence_ms: defaults.smart_max_silence_ms,
            };
            let decisions = set
                .iter()
                .enumerate()
                .map(|(i, u)| decide(smart, i, u, &verdicts[i], &mut judge, Some(&mut words)))
                .collect();
            outcomes
                .push(Outcome { label: "`smart`+words (live Whisper transcribing at each pause)".into(), decisions });
            words_transcribed = words.cache.into_iter().collect();
        }
        Err(e) => eprintln!("no `smart` row with words: {e}"),
    }
    eprintln!("streaming {} utterances in real time through the Deepgram client and the fake server…", set.len());
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let stt = runtime.block_on(stt_decisions(&set));
    outcomes.push(Outcome { label: format!("`stt` (fake Deepgram, endpointing {ENDPOINTING_MS} ms)"), decisions: stt });

    let mut out = String::new();
    out.push_str(&format!(
        "{} utterances: {complete} complete turns, {paused} with a mid-sentence pause of 300–1200 ms.\n\n",
        set.len()
    ));
    out.push_str(HEADER);
    out.push('\n');
    for o in &outcomes {
        out.push_str(&row(&o.label, &summarise(&set, &o.decisions)));
        out.push('\n');
    }

    // Sweeps: `vad` silence, `smart` threshold and pause.
    let mut vad_rows = Vec::new();
    for silence_ms in (300..=1500).step_by(100) {
        let decisions = run(Setting::Vad { silence_ms }, &mut judge);
        vad_rows.push((format!("`vad` {silence_ms} ms"), summarise(&set, &decisions)));
    }
    let mut smart_rows = Vec::new();
    for pause_ms in [200u64, 400, 600] {
        for threshold in [0.5f32, 0.7, 0.9] {
            let setting = Setting::Smart { pause_ms, threshold, max_silence_ms: defaults.smart_max_silence_ms };
            let decisions = run(setting, &mut judge);
            smart_rows.push((format!("`smart` at {pause_ms} ms, threshold {threshold}"), summarise(&set, &decisions)));
        }
    }
    out.push_str("\nSweeps (eot-bench style):\n\n");
    out.push_str(HEADER);
    out.push('\n');
    for (label, s) in vad_rows.iter().chain(&smart_rows) {
        out.push_str(&row(label, s));
        out.push('\n');
    }
    for (name, rows) in [("vad", &vad_rows), ("smart", &smart_rows)] {
        match best_within_5_percent(rows) {
            Some((label, s)) => out.push_str(&format!(
                "\nFastest `{name}` setting with ≤ 5 % false cutoffs: {label}, median {:.0} ms, p90 {:.0} ms.\n",
                s.median, s.p90
            )),
            None => out.push_str(&format!("\nNo `{name}` setting swept has ≤ 5 % false cutoffs.\n")),
        }
    }

    if !words_transcribed.is_empty() {
        let mut walls: Vec<f64> = words_transcribed.iter().map(|(_, (_, wall))| *wall).collect();
        walls.sort_by(f64::total_cmp);
        out.push_str(&format!(
            "\nlive Whisper per transcription at a pause ({} transcriptions of the audio so far; greedy, fitted \
             window): wall median {:.0} ms, p90 {:.0} ms.\n",
            walls.len(),
            percentile(&walls, 0.5),
            percentile(&walls, 0.9)
        ));
        words_transcribed.sort_by_key(|((u, f), _)| (*u, *f));
        out.push_str("\nWords at each transcribed pause (utterance: ms after the end of speech, text):\n\n");
        for ((u, frames), (text, _)) in &words_transcribed {
            let after = *frames as f64 * FRAME_MS - set[*u].speech_end_ms;
            out.push_str(&format!("- {}: {after:.0} ms: {text:?}\n", set[*u].name));
        }
    }

    let judgements: Vec<Judgement> = judge.cache.values().copied().collect();
    let mut walls: Vec<f64> = judgements.iter().map(|j| j.wall_ms).collect();
    walls.sort_by(f64::total_cmp);
    let cpu: Vec<f64> = judgements.iter().filter_map(|j| j.cpu_ms).collect();
    let cpu_mean = cpu.iter().sum::<f64>() / cpu.len().max(1) as f64;
    out.push_str(&format!(
        "\nsmart-turn per judgement ({} judgements of up to 8 s of audio; decoding, resampling, features and \
         inference on one thread): wall median {:.1} ms, p90 {:.1} ms; thread CPU mean {:.1} ms (from \
         /proc/thread-self/stat, 10 ms ticks, averaged over all judgements).\n",
        walls.len(),
        percentile(&walls, 0.5),
        percentile(&walls, 0.9),
        cpu_mean
    ));

    // Per-utterance detail.
    out.push_str("\nPer utterance (delay in ms after the end of speech; negative = cut off before it):\n\n");
    out.push_str("| utterance | source | paused |");
    for o in &outcomes {
        out.push_str(&format!(" {} |", o.label.split_whitespace().next().unwrap_or("")));
    }
    out.push_str(&format!(" smart-turn p at each judgement |\n|---|---|---|{}---|\n", "---:|".repeat(outcomes.len())));
    for (i, u) in set.iter().enumerate() {
        out.push_str(&format!("| {} | {} | {} |", u.name, u.source, if u.paused() { "yes" } else { "no" }));
        for o in &outcomes {
            match o.decisions[i] {
                Some(t) => out.push_str(&format!(" {:.0} |", t - u.speech_end_ms)),
                None => out.push_str(" — |"),
            }
        }
        let mut asked: Vec<(usize, f32)> =
            judge.cache.iter().filter(|((ui, _), _)| *ui == i).map(|((_, f), j)| (*f, j.probability)).collect();
        asked.sort_by_key(|(f, _)| *f);
        let ps: Vec<String> =
            asked.iter().map(|(f, p)| format!("{:.0}:{p:.2}", *f as f64 * FRAME_MS - u.speech_end_ms)).collect();
        out.push_str(&format!(" {} |\n", ps.join(" ")));
    }
    eprintln!("false interruptions through the engine…");
    out.push_str(&runtime.block_on(interruptions()));
    out.push_str(&format!("\n(benchmark ran in {:.0} s)\n", started.elapsed().as_secs_f64()));
    println!("{out}");
    let _ = std::fs::write(bench_dir().join("results.md"), &out);
}

// ---------------------------------------------------------------------------------------------------------------
// False interruptions, through the engine
// ---------------------------------------------------------------------------------------------------------------

const LONG_REPLY: &str = "Your order four five six left our warehouse on Monday and is with the courier now. It \
                          should reach you by Friday afternoon, and the courier will text you a one hour window on \
                          the morning of the delivery. If nobody is home they will leave it with a neighbour or at \
                          the depot nearest to you, where you can pick it up for a week.";

/// One final, `speech_final` result of `text`, as the fake's script takes it. No `UtteranceEnd`: the fake would send
/// it at once with the result, where Deepgram sends it after `utterance_end_ms` (1 s) without words, and it would
/// end `vad` and `smart` turns before their own decision.
fn scripted(text: &str) -> Vec<serde_json::Value> {
    let words: Vec<serde_json::Value> = text
        .split_whitespace()
        .enumerate()
        .map(|(i, w)| {
            let start = 0.1 + 0.25 * i as f64;
            serde_json::json!({"word": w.to_lowercase(), "start": start, "end": start + 0.2, "confidence": 0.95,
                "punctuated_word": w})
        })
        .collect();
    let end = 0.1 + 0.25 * words.len() as f64;
    vec![serde_json::json!({"type": "Results", "channel_index": [0, 1], "duration": end, "start": 0.0,
        "is_final": true, "speech_final": true, "from_finalize": false,
        "channel": {"alternatives": [{"transcript": text, "confidence": 0.95, "languages": [], "words": words}]},
        "metadata": {"request_id": "fake", "model_info": {"name": "nova-3", "version": "fake", "arch": "fake"},
            "model_uuid": "fake"}})]
}

/// 300 ms of decaying noise, as a cough on the line.
fn cough() -> Vec<u8> {
    let mut seed: u32 = 12345;
    let pcm: Vec<i16> = (0..300 * RATE / 1000)
        .map(|n| {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            let white = ((seed >> 16) as f64 / 32768.0) - 1.0;
            let envelope = (-(n as f64) / (0.12 * RATE as f64)).exp();
            (white * envelope * 14_000.0) as i16
        })
        .collect();
    mulaw::encode(&pcm)
}

fn replies_resumed() -> f64 {
    parley::telemetry::metrics::global()
        .prometheus_text()
        .lines()
        .find(|l| l.starts_with("parley_replies_resumed_total"))
        .and_then(|l| l.split_whitespace().last()?.parse().ok())
        .unwrap_or(0.0)
}

/// The cough, "mm-hmm" and a real interruption over the agent's reply, with each strategy: what the engine did.
async fn interruptions() -> String {
    use loadgen::{listen_until, media_count, Rig, RigOptions};
    use parley::twilio::messages::OutboundMessage;
    use sim_caller::{silence, Received};

    let speak = |text: &str| mulaw::encode(&espeak("en-us+m3", 140, text));
    let question = speak("Where is my order?");
    let cases: Vec<(&str, Vec<u8>, Option<&str>)> = vec![
        ("cough (300 ms of noise; the recogniser hears no words)", cough(), None),
        ("\"mm-hmm\"", speak("mm-hmm"), Some("Mm-hmm.")),
        ("real interruption: \"Actually, cancel it.\"", speak("Actually, cancel it."), Some("Actually, cancel it.")),
    ];
    let pool = SmartTurnPool::start(&SmartTurnSettings::default()).unwrap_or_else(|e| panic!("smart-turn: {e}"));
    let mut out = String::from(
        "\nFalse interruptions through the engine (loadgen rig: webrtc VAD pool, fake Deepgram with 350 ms minimum \
         utterance, fake LLM and TTS; the caller speaks over the second second of a 20 s reply, then is silent for 4 s):\n\n\
         | case | strategy | agent audio cleared | reply resumed | new turn (words sent to the LLM) | finalize requests in the call |\n|---|---|---|---|---|---:|\n",
    );
    for (case, audio, words) in &cases {
        for strategy in [TurnStrategy::Vad, TurnStrategy::Stt, TurnStrategy::Smart] {
            // What the recogniser hears: the question, the case's words (none for the cough: a finalize forced
            // on it flushes an empty result), and nothing in any later stretch of sound, so the fake's scripted
            // words are never replayed for a piece of the same speech.
            let mut utterances = vec![scripted("Where is my order?"), scripted(words.unwrap_or(""))];
            utterances.extend((0..4).map(|_| scripted("")));
            let script = fake_providers::deepgram::Script::from_json(
                &serde_json::json!({ "utterances": utterances }).to_string(),
            )
            .unwrap_or_else(|e| panic!("{e}"));
            let mut conversation = RigOptions::default().conversation;
            conversation.turn.strategy = strategy;
            let turn_model =
                (strategy == TurnStrategy::Smart).then(|| pool.clone() as Arc<dyn parley::turn_model::TurnModel>);
            let options = RigOptions {
                deepgram: FakeDeepgramOptions {
                    script,
                    min_utterance: Duration::from_millis(350),
                    ..Default::default()
                },
                openai: fake_providers::openai::FakeOpenAiOptions::default()
                    .rule("order", fake_providers::openai::FakeReply::text(LONG_REPLY))
                    .fallback(fake_providers::openai::FakeReply::text("Okay.")),
                conversation,
                turn_model,
                ..RigOptions::default()
            };
            let rig = Rig::start(options).await;
            let mut call = rig.call(1).await;
            let _ = call.stream_audio(&silence(300)).await;
            let _ = call.stream_audio(&question).await;
            let _ = call.stream_audio(&silence(300)).await;
            listen_until(&mut call, "a second of the reply", |log| media_count(log) >= 50).await;
            let resumed_before = replies_resumed();
            let interrupted_at = tokio::time::Instant::now();
            let _ = call.stream_audio(audio).await;
            let _ = call.stream_audio(&silence(4_000)).await;
            let log = call.received();
            let cleared_at = log.iter().find_map(|r| match r {
                Received::Message { at, message: OutboundMessage::Clear { .. } } if *at >= interrupted_at => Some(*at),
                _ => None,
            });
            let resumed = replies_resumed() - resumed_before;
            let requests = rig.openai.requests();
            let new_turns: Vec<String> = requests
                .iter()
                .skip(1)
                .filter_map(|r| {
                    r.body["messages"].as_array()?.iter().rev().find(|m| m["role"] == "user")?["content"]
                        .as_str()
                        .map(str::to_owned)
                })
                .collect();
            let cleared = match cleared_at {
                Some(at) => format!(
                    "yes, {:.0} ms after the caller began",
                    at.duration_since(interrupted_at).as_secs_f64() * 1000.0
                ),
                None => "no".into(),
            };
            let resumed = if resumed > 0.0 { "yes" } else { "no" };
            let finalizes =
                rig.deepgram.connections().iter().flat_map(|c| c.control_types()).filter(|t| t == "Finalize").count();
            let turn = if new_turns.is_empty() { "no".into() } else { format!("yes: {}", new_turns.join(" / ")) };
            let name = format!("{strategy:?}").to_lowercase();
            out.push_str(&format!("| {case} | `{name}` | {cleared} | {resumed} | {turn} | {finalizes} |\n"));
            call.hang_up().await;
        }
    }
    pool.shutdown();
    out
}
