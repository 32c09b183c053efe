//! Local text-to-speech: eSpeak NG as a child process, one process per sentence.
//!
//! eSpeak NG needs no account, no network and no model download, which makes it the voice for development, demos and
//! tests. Its voice is robotic; replies still flow through the same context protocol as a cloud voice. Each complete
//! sentence of a reply is spoken by `espeak-ng --stdout` (a 22.05 kHz PCM16 WAV on stdout), resampled to 8 kHz and
//! encoded to μ-law, and sent as soon as that sentence is ready, so the first sentence plays while the LLM is still
//! writing the rest.
//!
//! Barge-in: [`TtsInput::Cancel`] kills the process speaking that reply, drops its queued sentences and remembers
//! the context, so no late audio of a cancelled reply is ever sent. Contexts are spoken one after another in the
//! order their text arrived.

use std::collections::{HashMap, HashSet, VecDeque};
use std::process::Stdio;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{ContextId, TextToSpeech, TtsError, TtsEvent, TtsInput, TtsSession};
use crate::audio::mulaw;
use crate::local::resample::{resample, to_f32, to_i16};
use crate::local::{wav, EspeakSettings};

const PROVIDER: &str = "espeak";

/// μ-law bytes per audio event: 100 ms, small enough for prompt playout, large enough to keep events few.
const EVENT_BYTES: usize = 800;

/// The eSpeak NG provider.
#[derive(Debug, Clone, Default)]
pub struct Espeak {
    settings: EspeakSettings,
}

impl Espeak {
    pub fn new(settings: EspeakSettings) -> Espeak {
        Espeak { settings }
    }
}

#[async_trait]
impl TextToSpeech for Espeak {
    fn name(&self) -> &'static str {
        PROVIDER
    }

    async fn open(&self) -> Result<TtsSession, TtsError> {
        // Fail at open, not on the first reply, when the program is missing.
        Command::new(&self.settings.binary)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .map_err(|e| TtsError::Connect {
                provider: PROVIDER,
                detail: format!("cannot run {}: {e}", self.settings.binary.display()),
            })?;
        let (input, inputs) = mpsc::channel(64);
        let (events_tx, events) = mpsc::channel(64);
        tokio::spawn(Session::new(self.settings.clone(), events_tx).run(inputs));
        Ok(TtsSession { input, events })
    }
}

/// Speaks `text` and returns it as 8 kHz μ-law.
pub async fn synthesize_mulaw(settings: &EspeakSettings, text: &str) -> Result<Vec<u8>, TtsError> {
    let provider_error = |detail: String| TtsError::Provider { provider: PROVIDER, detail };
    let mut child = Command::new(&settings.binary)
        .arg("--stdout")
        .arg("-v")
        .arg(&settings.voice)
        .arg("-s")
        .arg(settings.speed.to_string())
        .arg("-p")
        .arg(settings.pitch.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Dropping the future (a cancelled reply) kills the process.
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| provider_error(format!("cannot run {}: {e}", settings.binary.display())))?;
    // Text goes through stdin, never argv: reply text can start with `-` and must not be read as an option.
    let mut stdin = child.stdin.take().ok_or_else(|| provider_error("no stdin".into()))?;
    let mut stdout = child.stdout.take().ok_or_else(|| provider_error("no stdout".into()))?;
    let text = text.to_owned();
    let writer = async move {
        let result = stdin.write_all(text.as_bytes()).await;
        drop(stdin);
        result
    };
    let mut bytes = Vec::new();
    let (written, read) = tokio::join!(writer, stdout.read_to_end(&mut bytes));
    written.map_err(|e| provider_error(format!("writing text: {e}")))?;
    read.map_err(|e| provider_error(format!("reading audio: {e}")))?;
    let output = child.wait_with_output().await.map_err(|e| provider_error(format!("waiting: {e}")))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(provider_error(format!("espeak-ng exited with {}: {}", output.status, stderr.trim())));
    }
    tokio::task::spawn_blocking(move || {
        let pcm = wav::read(&bytes).map_err(|e| provider_error(format!("bad WAV from espeak-ng: {e}")))?;
        let phone = resample(&to_f32(&pcm.samples), pcm.sample_rate as usize, 8000)
            .map_err(|e| provider_error(e.to_string()))?;
        Ok(mulaw::encode(&to_i16(&phone)))
    })
    .await
    .map_err(|e| provider_error(format!("resampling thread failed: {e}")))?
}

/// Splits off the complete sentences at the front of `buffer`, leaving the unfinished rest in it.
fn take_sentences(buffer: &mut String) -> Vec<String> {
    let mut sentences = Vec::new();
    loop {
        let chars: Vec<(usize, char)> = buffer.char_indices().collect();
        let end = chars.windows(2).find_map(|pair| {
            let ((_, c), (next_at, next)) = (pair[0], pair[1]);
            (matches!(c, '.' | '!' | '?' | ';' | ':' | '\n') && next.is_whitespace()).then_some(next_at)
        });
        let Some(end) = end else { break };
        let sentence: String = buffer.drain(..end).collect();
        if !sentence.trim().is_empty() {
            sentences.push(sentence.trim().to_owned());
        }
    }
    sentences
}

/// A sentence waiting to be spoken.
struct Piece {
    context: ContextId,
    text: String,
    /// The context's final piece: `Done` follows its audio.
    last: bool,
}

struct Running {
    context: ContextId,
    last: bool,
    task: JoinHandle<Result<Vec<u8>, TtsError>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        // Aborting drops the synthesis future, which kills the process.
        self.task.abort();
    }
}

struct Session {
    settings: EspeakSettings,
    events: mpsc::Sender<TtsEvent>,
    /// Text of each open context not yet cut into sentences.
    buffers: HashMap<ContextId, String>,
    queue: VecDeque<Piece>,
    cancelled: HashSet<ContextId>,
    running: Option<Running>,
    /// Events waiting for room in the engine's channel; a cancel removes its context's events from here too, so
    /// audio that was ready but not yet taken is dropped rather than played.
    outbox: VecDeque<TtsEvent>,
}

async fn finished(running: &mut Option<Running>) -> Result<Vec<u8>, TtsError> {
    match running {
        Some(running) => match (&mut running.task).await {
            Ok(result) => result,
            Err(e) => Err(TtsError::Provider { provider: PROVIDER, detail: format!("synthesis task failed: {e}") }),
        },
        None => std::future::pending().await,
    }
}

fn context_of(event: &TtsEvent) -> Option<&ContextId> {
    match event {
        TtsEvent::Audio { context, .. } | TtsEvent::Done { context } => Some(context),
        TtsEvent::Error { context, .. } => context.as_ref(),
        TtsEvent::Closed => None,
    }
}

impl Session {
    fn new(settings: EspeakSettings, events: mpsc::Sender<TtsEvent>) -> Session {
        Session {
            settings,
            events,
            buffers: HashMap::new(),
            queue: VecDeque::new(),
            cancelled: HashSet::new(),
            running: None,
            outbox: VecDeque::new(),
        }
    }

    async fn run(mut self, mut inputs: mpsc::Receiver<TtsInput>) {
        let events = self.events.clone();
        loop {
            self.start_next();
            tokio::select! {
                input = inputs.recv() => match input {
                    Some(TtsInput::Text { context, text, last }) => self.text(context, text, last),
                    Some(TtsInput::Cancel { context }) => self.cancel(context),
                    Some(TtsInput::Close) | None => break,
                },
                result = finished(&mut self.running) => {
                    if let Some(running) = self.running.take() {
                        self.finish(&running, result);
                    }
                }
                permit = events.reserve(), if !self.outbox.is_empty() => match (permit, self.outbox.pop_front()) {
                    (Ok(permit), Some(event)) => permit.send(event),
                    (Err(_), _) => return,
                    (Ok(_), None) => {}
                },
            }
        }
        self.running = None;
        let _ = self.events.send(TtsEvent::Closed).await;
    }

    fn text(&mut self, context: ContextId, text: String, last: bool) {
        if self.cancelled.contains(&context) {
            return;
        }
        let buffer = self.buffers.entry(context.clone()).or_default();
        buffer.push_str(&text);
        let mut pieces: Vec<Piece> = take_sentences(buffer)
            .into_iter()
            .map(|text| Piece { context: context.clone(), text, last: false })
            .collect();
        if last {
            let rest = self.buffers.remove(&context).unwrap_or_default();
            pieces.push(Piece { context, text: rest.trim().to_owned(), last: true });
        }
        self.queue.extend(pieces);
    }

    fn cancel(&mut self, context: ContextId) {
        self.buffers.remove(&context);
        self.queue.retain(|piece| piece.context != context);
        self.outbox.retain(|event| context_of(event) != Some(&context));
        if self.running.as_ref().is_some_and(|running| running.context == context) {
            self.running = None;
        }
        self.cancelled.insert(context);
    }

    fn start_next(&mut self) {
        if self.running.is_some() {
            return;
        }
        let Some(Piece { context, text, last }) = self.queue.pop_front() else { return };
        let settings = self.settings.clone();
        let task = tokio::spawn(async move {
            if text.is_empty() {
                return Ok(Vec::new());
            }
            synthesize_mulaw(&settings, &text).await
        });
        self.running = Some(Running { context, last, task });
    }

    /// Queues a finished sentence's audio (and `Done` after a context's last sentence).
    fn finish(&mut self, running: &Running, result: Result<Vec<u8>, TtsError>) {
        let context = &running.context;
        match result {
            Ok(mulaw) => {
                for chunk in mulaw.chunks(EVENT_BYTES) {
                    let mulaw = Bytes::copy_from_slice(chunk);
                    self.outbox.push_back(TtsEvent::Audio { context: context.clone(), mulaw });
                }
                if running.last {
                    self.outbox.push_back(TtsEvent::Done { context: context.clone() });
                }
            }
            Err(error) => {
                // The rest of this reply would have a hole in it: drop it, as for a cancel.
                self.cancel(context.clone());
                self.outbox.push_back(TtsEvent::Error { context: Some(context.clone()), error });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentences_are_cut_at_their_ends() {
        let mut buffer = String::from("Hello there. How are you? I am");
        assert_eq!(take_sentences(&mut buffer), vec!["Hello there.", "How are you?"]);
        assert_eq!(buffer.trim(), "I am");
        buffer.push_str(" fine. 3.5 percent");
        assert_eq!(take_sentences(&mut buffer), vec!["I am fine."]);
        assert_eq!(buffer.trim(), "3.5 percent");
    }
}
