//! The lean caller: Twilio's side of many calls at once, cheap enough that a thousand of them fit beside Parley on
//! two cores.
//!
//! Calls are grouped in shards; each shard is one task with one 20 ms interval that writes every call's next frame
//! (prebuilt payloads, counters formatted into a reused buffer) and advances every call's script. The shards' ticks
//! are spread evenly over the 20 ms, as independent calls' frames are: Twilio's streams do not all send their frames
//! at the same instant, and a generator whose calls all do measures a burst real traffic does not make. Each call has a
//! reader task that classifies Parley's messages without parsing them ([`crate::wire::classify`]) and notes only
//! what the measurements need — when the reply's audio started, gaps in it, `clear`s, marks to echo — in a small
//! state shared with its shard. Nothing is stored per message.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::wire::{self, Outbound, Payloads};

type Socket = WebSocketStream<TcpStream>;

/// Twilio's frame period.
const FRAME: Duration = Duration::from_millis(20);
/// How long to wait for Parley's answer to the WebSocket upgrade.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What every caller does.
#[derive(Debug, Clone)]
pub struct Script {
    /// Caller turns per call, when the calls are not held for a time.
    pub turns: u32,
    /// Keep every call up until this instant (speaking a turn after each reply and pause) instead of `turns` turns.
    pub hold_until: Option<Instant>,
    /// 20 ms frames of speech per turn.
    pub speech_frames: u32,
    /// Every this many turns (0: never), the caller starts the turn while the agent's reply is playing.
    pub barge_every: u32,
    /// How long after the reply's first audio such a turn starts.
    pub barge_after: Duration,
    /// Silence between the end of a reply and the caller's next turn.
    pub pause: Duration,
    /// A reply whose audio has not started this long after the speech ended is missing.
    pub reply_timeout: Duration,
    /// No audio for this long ends a reply.
    pub reply_end_gap: Duration,
    /// Inside a reply, audio that comes this long after the audio before it has played out counts as late (the
    /// caller would have heard a gap).
    pub late_gap: Duration,
    /// A barge-in not answered by a `clear` within this long is a missing clear.
    pub clear_timeout: Duration,
}

impl Default for Script {
    fn default() -> Self {
        Script {
            turns: 3,
            hold_until: None,
            speech_frames: 45,
            barge_every: 3,
            barge_after: Duration::from_millis(500),
            pause: Duration::from_millis(1000),
            reply_timeout: Duration::from_secs(15),
            reply_end_gap: Duration::from_millis(400),
            late_gap: Duration::from_millis(60),
            clear_timeout: Duration::from_secs(3),
        }
    }
}

/// What one call observed.
#[derive(Debug, Clone, Default)]
pub struct CallResult {
    /// The call's number.
    pub n: u32,
    /// Why the call failed, if it did (could not connect, Parley closed it, a write failed).
    pub failed: Option<String>,
    /// Caller turns spoken.
    pub turns: u32,
    /// End of speech → first audio of the reply, ms, per answered turn.
    pub first_audio_ms: Vec<f64>,
    /// Onset of speech over a playing reply → `clear`, ms, per barge-in answered with a clear.
    pub clear_ms: Vec<f64>,
    /// Barge-ins no `clear` answered in time.
    pub missing_clears: u32,
    /// Turns whose reply never started.
    pub missing_replies: u32,
    /// Times playback inside a reply ran dry for longer than the script's `late_gap`.
    pub late_gaps: u32,
    /// Media frames received.
    pub frames_received: u64,
}

/// Live calls, for the sampler: how many are connected right now and how many have ended.
#[derive(Debug, Default)]
pub struct Progress {
    pub live: AtomicUsize,
    pub ended: AtomicUsize,
}

/// What the reader saw, shared with the shard.
#[derive(Debug, Default)]
struct Heard {
    /// Media after this instant belongs to the reply being waited for (set by the shard at the end of speech).
    listening_since: Option<Instant>,
    first_audio: Option<Instant>,
    last_media: Option<Instant>,
    late_gaps: u32,
    frames: u64,
    /// The last `clear`.
    clear_at: Option<Instant>,
    /// When playback of the audio received so far ends (Twilio's buffer).
    play_until: Option<Instant>,
    /// Marks to echo when due: (due, raw name).
    marks: VecDeque<(Instant, String)>,
    /// The socket closed (Parley's close or an error), with what happened.
    closed: Option<String>,
}

fn lock(heard: &Mutex<Heard>) -> MutexGuard<'_, Heard> {
    heard.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Where a call is in its script.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Speaking: this many frames of speech left.
    Speaking { frames_left: u32 },
    /// Speech ended at `since`; waiting for the reply's audio.
    Listening { since: Instant },
    /// The reply is playing.
    Playing { first_audio: Instant },
    /// Silence until the next turn.
    Pausing { until: Instant },
}

/// One call as its shard drives it.
struct Call {
    stream_sid: String,
    call_sid: String,
    sink: SplitSink<Socket, Message>,
    heard: Arc<Mutex<Heard>>,
    reader: JoinHandle<()>,
    /// Next `sequenceNumber` (connected and start took 1 and 2 in Twilio's numbering, counting from 1).
    sequence: u64,
    /// Media frames sent.
    chunk: u64,
    /// Speech frames sent (position in the speech signal).
    speech_frame: u64,
    phase: Phase,
    /// Onset of a barge-in waiting for its `clear`.
    barge: Option<Instant>,
    /// The turn being spoken is a barge-in: its first frame's send time is its onset.
    barging: bool,
    /// When the last frame was handed to the socket.
    sent_at: Instant,
    result: CallResult,
}

/// Places `calls` calls to `url` over `ramp`, split over `shards` shard tasks, and returns every call's result once
/// all have hung up.
pub async fn run(
    url: String,
    calls: u32,
    ramp: Duration,
    shards: usize,
    script: Script,
    progress: Arc<Progress>,
) -> Vec<CallResult> {
    let shards = shards.max(1);
    let payloads = Arc::new(Payloads::new(500));
    let script = Arc::new(script);
    let mut senders = Vec::with_capacity(shards);
    let mut tasks = Vec::with_capacity(shards);
    let started = Instant::now();
    for n in 0..shards {
        let (tx, rx) = mpsc::unbounded_channel();
        senders.push(tx);
        let phase = started + FRAME.mul_f64(n as f64 / shards as f64);
        tasks.push(tokio::spawn(shard(rx, phase, payloads.clone(), script.clone(), progress.clone())));
    }
    for n in 0..calls {
        let at = started + ramp.mul_f64(f64::from(n) / f64::from(calls.max(1)));
        let shard = senders[n as usize % shards].clone();
        let url = url.clone();
        let progress = progress.clone();
        let late_gap = script.late_gap;
        tokio::spawn(async move {
            tokio::time::sleep_until(at).await;
            let joining = match connect(&url, n, late_gap).await {
                Ok(call) => {
                    progress.live.fetch_add(1, Ordering::Relaxed);
                    Ok(call)
                }
                Err(error) => {
                    progress.ended.fetch_add(1, Ordering::Relaxed);
                    Err(CallResult { n, failed: Some(format!("{error:#}")), ..CallResult::default() })
                }
            };
            let _ = shard.send(joining);
        });
    }
    drop(senders);
    let mut results = Vec::with_capacity(calls as usize);
    for task in tasks {
        match task.await {
            Ok(mut shard_results) => results.append(&mut shard_results),
            Err(error) => eprintln!("loadgen: a shard task failed: {error}"),
        }
    }
    results.sort_by_key(|r| r.n);
    results
}

/// Opens call `n`'s stream and sends `connected` and `start`.
async fn connect(url: &str, n: u32, late_gap: Duration) -> anyhow::Result<Call> {
    use anyhow::Context as _;
    let authority = url.strip_prefix("ws://").and_then(|rest| rest.split('/').next()).context("a ws:// URL")?;
    let open = async {
        let tcp = TcpStream::connect(authority).await?;
        tcp.set_nodelay(true)?;
        let config = WebSocketConfig::default().read_buffer_size(8 * 1024);
        let (socket, _) = tokio_tungstenite::client_async_with_config(url, tcp, Some(config)).await?;
        anyhow::Ok(socket)
    };
    let socket = tokio::time::timeout(CONNECT_TIMEOUT, open).await.context("connect timed out")??;
    let (mut sink, stream) = socket.split();
    let stream_sid = format!("MZ{n:032}");
    let call_sid = format!("CA{n:032}");
    sink.feed(Message::text(wire::connected())).await?;
    sink.send(Message::text(wire::start(&stream_sid, &call_sid))).await?;
    let heard = Arc::new(Mutex::new(Heard::default()));
    let reader = tokio::spawn(read(stream, heard.clone(), late_gap));
    Ok(Call {
        stream_sid,
        call_sid,
        sink,
        heard,
        reader,
        sequence: 2,
        chunk: 0,
        speech_frame: 0,
        phase: Phase::Speaking { frames_left: 0 },
        barge: None,
        barging: false,
        sent_at: Instant::now(),
        result: CallResult { n, ..CallResult::default() },
    })
}

/// Reads Parley's messages for one call until the socket closes.
async fn read(mut stream: SplitStream<Socket>, heard: Arc<Mutex<Heard>>, late_gap: Duration) {
    let why = loop {
        match stream.next().await {
            Some(Ok(Message::Text(text))) => {
                let now = Instant::now();
                let mut heard = lock(&heard);
                match wire::classify(text.as_str()) {
                    Outbound::Media { bytes } => {
                        // A message carries whole 20 ms frames (Parley sends up to 100 ms in one).
                        heard.frames += bytes.div_ceil(wire::FRAME_BYTES) as u64;
                        let played_out = heard.play_until;
                        let start = played_out.map_or(now, |until| until.max(now));
                        heard.play_until = Some(start + Duration::from_micros(bytes as u64 * 125));
                        if heard.listening_since.is_some() {
                            match (heard.last_media, played_out) {
                                (None, _) => heard.first_audio = Some(now),
                                // Inside a reply, playback ran dry for longer than `late_gap` before this audio came.
                                (Some(_), Some(until)) if now.saturating_duration_since(until) > late_gap => {
                                    heard.late_gaps += 1
                                }
                                _ => {}
                            }
                            heard.last_media = Some(now);
                        }
                    }
                    Outbound::Mark { raw_name } => {
                        let due = heard.play_until.map_or(now, |until| until.max(now));
                        heard.marks.push_back((due, raw_name.to_owned()));
                    }
                    Outbound::Clear => {
                        // Twilio drops its buffer and echoes every pending mark at once.
                        heard.clear_at = Some(now);
                        heard.play_until = Some(now);
                        for mark in heard.marks.iter_mut() {
                            mark.0 = now;
                        }
                    }
                    Outbound::Other => {}
                }
            }
            Some(Ok(Message::Close(frame))) => {
                break frame.map_or_else(|| "closed".to_owned(), |f| format!("closed ({}: {})", f.code, f.reason));
            }
            Some(Ok(_)) => {}
            Some(Err(error)) => break format!("connection lost: {error}"),
            None => break "connection lost".to_owned(),
        }
    };
    lock(&heard).closed = Some(why);
}

/// One shard: every 20 ms, each of its calls sends its next frame and advances its script.
async fn shard(
    mut joining: mpsc::UnboundedReceiver<Result<Call, CallResult>>,
    phase: Instant,
    payloads: Arc<Payloads>,
    script: Arc<Script>,
    progress: Arc<Progress>,
) -> Vec<CallResult> {
    let mut calls: Vec<Call> = Vec::new();
    let mut results = Vec::new();
    let mut buffer = String::with_capacity(512);
    let mut open = true;
    let mut tick = tokio::time::interval_at(phase, FRAME);
    tick.set_missed_tick_behavior(MissedTickBehavior::Burst);
    loop {
        tick.tick().await;
        while open {
            match joining.try_recv() {
                Ok(Ok(mut call)) => {
                    call.phase = Phase::Speaking { frames_left: script.speech_frames };
                    call.result.turns = 1;
                    calls.push(call);
                }
                Ok(Err(failed)) => results.push(failed),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => open = false,
            }
        }
        if !open && calls.is_empty() {
            return results;
        }
        let now = Instant::now();
        let mut index = 0;
        while index < calls.len() {
            let step = step(&mut calls[index], now, &payloads, &script, &mut buffer).await;
            match step {
                Step::Continue => index += 1,
                Step::HangUp | Step::Failed(_) => {
                    let mut call = calls.swap_remove(index);
                    if let Step::Failed(why) = step {
                        call.result.failed = Some(why);
                    } else {
                        hang_up(&mut call).await;
                    }
                    call.reader.abort();
                    progress.live.fetch_sub(1, Ordering::Relaxed);
                    progress.ended.fetch_add(1, Ordering::Relaxed);
                    results.push(call.result);
                }
            }
        }
    }
}

enum Step {
    Continue,
    HangUp,
    Failed(String),
}

/// One tick of one call: its frame, due mark echoes, and the script.
async fn step(call: &mut Call, now: Instant, payloads: &Payloads, script: &Script, buffer: &mut String) -> Step {
    // What the reader saw, taken under the lock in one go.
    let (closed, first_audio, last_media, clear_at, echoes) = {
        let mut heard = lock(&call.heard);
        let mut echoes = Vec::new();
        while heard.marks.front().is_some_and(|(due, _)| *due <= now) {
            if let Some((_, name)) = heard.marks.pop_front() {
                echoes.push(name);
            }
        }
        (heard.closed.take(), heard.first_audio, heard.last_media, heard.clear_at, echoes)
    };
    if let Some(why) = closed {
        return Step::Failed(format!("Parley ended the stream: {why}"));
    }
    let speaking = matches!(call.phase, Phase::Speaking { .. });
    let payload = if speaking {
        call.speech_frame += 1;
        payloads.speech(call.speech_frame)
    } else {
        payloads.silence()
    };
    call.sequence += 1;
    call.chunk += 1;
    wire::write_media(buffer, &call.stream_sid, call.sequence, call.chunk, call.chunk * 20, payload);
    call.sent_at = Instant::now();
    if speaking && call.barging {
        call.barging = false;
        call.barge = Some(call.sent_at);
    }
    if let Err(error) = call.sink.feed(Message::text(buffer.as_str())).await {
        return Step::Failed(format!("sending media: {error}"));
    }
    for name in echoes {
        call.sequence += 1;
        if let Err(error) = call.sink.feed(Message::text(wire::mark_echo(&call.stream_sid, &name, call.sequence))).await
        {
            return Step::Failed(format!("echoing a mark: {error}"));
        }
    }
    if let Err(error) = call.sink.flush().await {
        return Step::Failed(format!("sending: {error}"));
    }

    if let Some(onset) = call.barge {
        if clear_at.is_some_and(|at| at >= onset) {
            if let Some(at) = clear_at {
                call.result.clear_ms.push(ms(at.duration_since(onset)));
            }
            call.barge = None;
        } else if now.duration_since(onset) > script.clear_timeout {
            call.result.missing_clears += 1;
            call.barge = None;
        }
    }

    let held = script.hold_until.is_some();
    let over = match script.hold_until {
        Some(until) => now >= until,
        None => call.result.turns >= script.turns,
    };
    match call.phase {
        Phase::Speaking { frames_left } if frames_left > 1 => {
            call.phase = Phase::Speaking { frames_left: frames_left - 1 };
        }
        Phase::Speaking { .. } => {
            let mut heard = lock(&call.heard);
            heard.listening_since = Some(call.sent_at);
            heard.first_audio = None;
            heard.last_media = None;
            call.phase = Phase::Listening { since: call.sent_at };
        }
        Phase::Listening { since } => {
            if let Some(at) = first_audio {
                call.result.first_audio_ms.push(ms(at.duration_since(since)));
                call.phase = Phase::Playing { first_audio: at };
            } else if now.duration_since(since) > script.reply_timeout {
                call.result.missing_replies += 1;
                stop_listening(call);
                call.phase = Phase::Pausing { until: now };
            }
        }
        Phase::Playing { first_audio } => {
            let next_barges = script.barge_every > 0 && (call.result.turns + 1).is_multiple_of(script.barge_every);
            if next_barges && !over && now.duration_since(first_audio) >= script.barge_after {
                stop_listening(call);
                call.barging = true;
                start_turn(call, script);
            } else if last_media.is_none_or(|last| now.duration_since(last) >= script.reply_end_gap) {
                stop_listening(call);
                call.phase = Phase::Pausing { until: now + script.pause };
            }
        }
        Phase::Pausing { until } => {
            if over && call.barge.is_none() {
                return Step::HangUp;
            }
            if now >= until && !over {
                start_turn(call, script);
            }
        }
    }
    // A held call that cannot finish its turn still ends, a reply's time after the hold.
    if held && script.hold_until.is_some_and(|until| now > until + script.reply_timeout) {
        return Step::HangUp;
    }
    Step::Continue
}

fn start_turn(call: &mut Call, script: &Script) {
    call.result.turns += 1;
    call.phase = Phase::Speaking { frames_left: script.speech_frames };
}

/// The reply being listened to is over: later audio is not counted as its.
fn stop_listening(call: &mut Call) {
    let mut heard = lock(&call.heard);
    heard.listening_since = None;
    heard.frames_into(&mut call.result);
}

impl Heard {
    fn frames_into(&mut self, result: &mut CallResult) {
        result.late_gaps += std::mem::take(&mut self.late_gaps);
        result.frames_received += std::mem::take(&mut self.frames);
    }
}

/// Twilio's hang-up: `stop`, then the close frame.
async fn hang_up(call: &mut Call) {
    lock(&call.heard).frames_into(&mut call.result);
    call.sequence += 1;
    let _ = call.sink.feed(Message::text(wire::stop(&call.stream_sid, &call.call_sid, call.sequence))).await;
    let _ = call.sink.send(Message::Close(None)).await;
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}
