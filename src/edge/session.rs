//! One Media Stream socket: reads Twilio's frames, keeps the call's protocol state, hands audio to the call's agent
//! (which runs in this socket's task, polled right after each frame) and writes the playout queue's messages back
//! without waiting on the peer. Parsing is in [`crate::twilio::messages`]; this is the I/O around it.

use std::any::Any;
use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::{FutureExt, Sink, SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::AppState;
use crate::audio::jitter::InboundFrameQueue;
use crate::audio::playout::{self, PlayoutHandle};
use crate::call::agent::{AgentContext, CallEvent};
use crate::call::events::{call_events, CallEventSender, Delivery};
use crate::call::registry::CallPermit;
use crate::call::tap::{CallTap, ConversationEvent, TapEvent};
use crate::call::CallInfo;
use crate::deadline::Deadline;
use crate::telemetry::redact;
use crate::twilio::messages::{OutboundMessage, Start};
use crate::twilio::outbound::OutboundEncoder;
use crate::twilio::stream_state::{Skip, Step, StreamRules, StreamState};
use crate::wake_gate::WakeGate;

/// Bad frames of one call logged as warnings; the rest go to debug (all are counted).
const WARNED_BAD_FRAMES: u64 = 20;
/// μ-law samples (bytes) per millisecond of audio.
const SAMPLES_PER_MILLI: u64 = 8;

/// Caller audio buffered for a slow agent: five seconds of frames.
const AGENT_QUEUE_FRAMES: usize = 250;
/// Outbound messages buffered for the socket writer.
const OUTBOUND_QUEUE: usize = 256;
/// Queued messages written to Twilio with one flush, at most ([`write_queued`]).
const OUTBOUND_PER_WRITE: usize = 8;
/// Bytes after which no further queued message joins a write (a 200 ms media message is about 2.2 KB).
const OUTBOUND_BYTES_PER_WRITE: usize = 16 * 1024;
/// WebSocket close codes.
const CLOSE_NORMAL: u16 = 1000;
const CLOSE_GOING_AWAY: u16 = 1001;
const CLOSE_POLICY: u16 = 1008;
/// How long the agent gets to finish after the hang-up is handed to it; one that takes longer is dropped (cancelled).
const AGENT_FINISH: Duration = Duration::from_secs(2);
/// What the end of a call may spend writing the messages the agent queued and the close handshake; a peer that takes
/// none of it in this time is dropped.
const CLOSING_WRITES: Duration = Duration::from_secs(2);

/// How a call's socket ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// Twilio sent `stop`.
    Stopped,
    /// Twilio closed the socket without `stop`.
    ClosedByTwilio,
    /// The connection dropped without a close handshake.
    Vanished,
    /// The agent ended the call.
    HungUp,
    /// The server's grace period ran out.
    ServerShutdown,
    /// No `start` arrived in time.
    NoStart,
    /// The call had started, then no frame arrived for the idle timeout: a dead peer.
    Idle,
    /// A write to Twilio waited the idle timeout for room: the peer stopped reading (Twilio reads every frame as it
    /// plays), so nothing more is written to it.
    Unread,
    /// `start` was invalid (malformed SIDs, parameters, or a call other than the token's).
    BadStart,
}

/// What woke the socket's loop.
enum SocketEvent {
    /// A message the agent queued for Twilio.
    Outbound(OutboundMessage),
    /// A frame from Twilio (or the socket's end).
    Inbound(Option<Result<Message, axum::Error>>),
    /// What was written to Twilio and waited for room has gone out (or could not).
    Flushed(Result<(), axum::Error>),
    /// The agent's future returned (or panicked).
    AgentEnded(Result<(), Box<dyn Any + Send>>),
}

/// A call's agent, polled by the socket's task: its `run` future, a panic caught as the end of the agent.
type AgentRun = Pin<Box<dyn Future<Output = Result<(), Box<dyn Any + Send>>> + Send>>;

/// Counters for the end-of-call log line.
#[derive(Debug, Default)]
struct Counters {
    frames: u64,
    media: u64,
    bad_frames: u64,
    unknown_events: u64,
    dropped_for_slow_agent: u64,
    dropped_ahead_ms: u64,
}

struct LiveCall {
    call: CallInfo,
    tap: CallTap,
    events: CallEventSender,
    playout: PlayoutHandle,
    jitter: InboundFrameQueue,
    /// `None` once the agent has ended.
    agent: Option<AgentRun>,
    started_at: Instant,
    /// The call's root span: the agent and its turns are traced under it.
    span: tracing::Span,
}

struct Session {
    state: Arc<AppState>,
    stream: StreamState,
    /// When the socket was opened: the stream state's clock.
    opened_at: Instant,
    permit: CallPermit,
    outbound: mpsc::Sender<OutboundMessage>,
    hang_up: CancellationToken,
    live: Option<LiveCall>,
    counters: Counters,
    peer: SocketAddr,
}

/// What the socket's rare inputs gave.
enum Rare {
    /// A message from the agent for Twilio.
    Outbound(OutboundMessage),
    /// The call was hung up, or the server is closing.
    Ended,
    /// The timer fired.
    Tick,
}

/// Serves one Media Stream until it ends, whatever the other side does.
pub(crate) async fn run(
    mut socket: WebSocket,
    state: Arc<AppState>,
    permit: CallPermit,
    peer: SocketAddr,
    expected_call_sid: Option<String>,
) {
    let (outbound, mut outbound_rx) = mpsc::channel::<OutboundMessage>(OUTBOUND_QUEUE);
    let close_requested = permit.close_requested();
    let server = &state.config.server;
    let start_timeout = Duration::from_millis(server.start_timeout_ms);
    let idle_timeout = Duration::from_millis(server.media_idle_timeout_ms);
    let rules = StreamRules {
        max_frame_bytes: server.max_frame_bytes,
        ahead_margin: Duration::from_millis(state.config.audio.caller_ahead_margin_ms),
        expected_call_sid,
    };
    let mut session = Session {
        stream: StreamState::new(rules),
        opened_at: Instant::now(),
        state,
        permit,
        outbound,
        // A child of the close request: a server shutdown ends the wait for a hang-up too, so the loop waits on one
        // cancellation instead of two.
        hang_up: close_requested.child_token(),
        live: None,
        counters: Counters::default(),
        peer,
    };
    // Until the call starts, the socket has `start_timeout` to send `start`; from then on every text frame moves
    // the idle deadline. Twilio sends media every 20 ms, silence included, so a quiet socket is a dead peer (a
    // half-open connection sends no FIN) or a hostile one. Pings would not help: a pong proves only that the peer's
    // WebSocket library runs, and must not keep a call slot. One timer serves both, moved only when it must be (see
    // `Deadline`): a frame does not touch it.
    let mut last_message = Instant::now();
    let mut wake = Deadline::new();
    // The hang-up (or the server's close request, its parent) is waited on by a future that lives as long as the loop,
    // registered once. It, the timer and the agent's messages (a few a second while it speaks) are polled only after
    // one of them woke the loop, which turns once per frame.
    let mut ended = Box::pin(session.hang_up.clone().cancelled_owned());
    let mut rare = WakeGate::new();
    let mut encoder = OutboundEncoder::new();
    // Since when a message written to Twilio has waited for room in the socket. Meanwhile the socket is flushed before
    // anything else is written (the agent's messages wait in their queue) while the call's agent runs and Twilio's
    // frames are read: a peer that stops reading stops neither, and holds the call no longer than the idle timeout.
    let mut write_waiting_since: Option<Instant> = None;

    let ending = loop {
        let read_due = match session.live {
            None => session.opened_at + start_timeout,
            Some(_) => last_message + idle_timeout,
        };
        let write_due = write_waiting_since.map(|since| since + idle_timeout);
        let due = write_due.map_or(read_due, |write_due| write_due.min(read_due));
        wake.want_behind(Some(due), &rare);
        // Biased, in this order: the rare inputs once one woke the loop — the agent's messages first (first audio and
        // `clear` wait for nothing), then the end and the timer —, Twilio's frames, then the agent itself (run on the
        // frames just handed to it, in this same turn of the task); each is polled only when the ones before it have
        // nothing, so a frame costs one poll.
        let event = tokio::select! {
            biased;
            rare = poll_fn(|cx| rare.poll(cx, |cx| {
                // Skipped while a write waits; the gate is opened again when it is out.
                if write_waiting_since.is_none() {
                    if let Poll::Ready(Some(message)) = outbound_rx.poll_recv(cx) {
                        return Poll::Ready(Rare::Outbound(message));
                    }
                }
                if ended.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Rare::Ended);
                }
                wake.poll_fired(cx).map(|()| Rare::Tick)
            })) => match rare {
                Rare::Outbound(message) => SocketEvent::Outbound(message),
                Rare::Ended => {
                    break if close_requested.is_cancelled() { Ending::ServerShutdown } else { Ending::HungUp };
                }
                Rare::Tick => {
                    let now = Instant::now();
                    if now < due {
                        continue;
                    }
                    if write_due.is_some_and(|write_due| now >= write_due) {
                        tracing::warn!(peer = %session.peer, "the peer stopped reading: a write waited the idle timeout");
                        break Ending::Unread;
                    }
                    break if session.live.is_none() { Ending::NoStart } else { Ending::Idle };
                }
            },
            io = read_or_flush(&mut socket, write_waiting_since.is_some()) => io,
            result = run_agent(&mut session.live) => SocketEvent::AgentEnded(result),
        };
        match event {
            SocketEvent::Outbound(message) => {
                match write_queued(&mut socket, &mut encoder, message, &mut outbound_rx).await {
                    Ok(Written::Out) => {}
                    Ok(Written::Waiting) => write_waiting_since = Some(Instant::now()),
                    Err(err) => {
                        tracing::info!(%err, "could not write to Twilio");
                        break Ending::Vanished;
                    }
                }
            }
            SocketEvent::Flushed(Ok(())) => {
                write_waiting_since = None;
                rare.open();
            }
            SocketEvent::Flushed(Err(err)) => {
                tracing::info!(%err, "could not write to Twilio");
                break Ending::Vanished;
            }
            SocketEvent::AgentEnded(result) => {
                if let Some(live) = session.live.as_mut() {
                    live.agent = None;
                }
                if let Err(panic) = result {
                    log_agent_panic(panic.as_ref());
                }
            }
            SocketEvent::Inbound(frame) => match frame {
                Some(Ok(Message::Text(text))) => {
                    last_message = Instant::now();
                    match session.on_text(text.as_str()) {
                        FrameOutcome::Continue => {}
                        FrameOutcome::Stopped => break Ending::Stopped,
                        FrameOutcome::Refused => break Ending::BadStart,
                    }
                }
                Some(Ok(Message::Binary(bytes))) => {
                    session.counters.bad_frames += 1;
                    tracing::warn!(len = bytes.len(), "ignoring a binary frame; Twilio sends JSON text");
                }
                Some(Ok(Message::Close(_))) => break Ending::ClosedByTwilio,
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Err(err)) => {
                    tracing::info!(%err, "media stream connection failed");
                    break Ending::Vanished;
                }
                None => break Ending::Vanished,
            },
        }
    };

    session.finish(ending).await;
    if matches!(ending, Ending::Vanished | Ending::Unread) {
        return;
    }
    // Write what the agent queued before the end, then close politely, for as long as the peer takes it.
    let closing = async {
        while let Ok(message) = outbound_rx.try_recv() {
            let Some(text) = encode(&mut encoder, &message) else { continue };
            if socket.send(Message::Text(text)).await.is_err() {
                return;
            }
        }
        if let Some((code, reason)) = close_frame(ending) {
            let _ = socket.send(Message::Close(Some(CloseFrame { code, reason: reason.into() }))).await;
            let _ = socket.close().await;
        }
    };
    if tokio::time::timeout(CLOSING_WRITES, closing).await.is_err() {
        tracing::info!(peer = %peer, "the peer took no close in time; dropping the connection");
    }
}

/// The close frame a call's ending sends, where the peer is still there to read it.
fn close_frame(ending: Ending) -> Option<(u16, &'static str)> {
    match ending {
        Ending::ServerShutdown => Some((CLOSE_GOING_AWAY, "Parley is shutting down")),
        Ending::HungUp => Some((CLOSE_NORMAL, "call ended")),
        Ending::NoStart => Some((CLOSE_POLICY, "no start message")),
        Ending::Idle => Some((CLOSE_POLICY, "idle: no frame within the media idle timeout")),
        Ending::BadStart => Some((CLOSE_POLICY, "invalid start message")),
        Ending::Stopped | Ending::ClosedByTwilio => Some((CLOSE_NORMAL, "")),
        Ending::Vanished | Ending::Unread => None,
    }
}

/// How a write to Twilio went.
enum Written {
    /// Into the socket.
    Out,
    /// Into the socket's buffer, waiting for room: [`read_or_flush`] sends it.
    Waiting,
}

/// Twilio's next frame; first, while a write waits for room, the flush that sends it.
fn read_or_flush(socket: &mut WebSocket, write_waiting: bool) -> impl Future<Output = SocketEvent> + '_ {
    poll_fn(move |cx| {
        if write_waiting {
            if let Poll::Ready(result) = Pin::new(&mut *socket).poll_flush(cx) {
                return Poll::Ready(SocketEvent::Flushed(result));
            }
        }
        socket.poll_next_unpin(cx).map(SocketEvent::Inbound)
    })
}

/// Writes the agent's message to Twilio, with the messages already queued behind it (a media message and its mark
/// come together), in one flush: one system call where each message had cost one. Nothing waits to be gathered — only
/// what is in the queue goes — and nothing waits for room in the socket: the agent runs in the socket's task, so a
/// peer that stops reading must not stop the loop. Called only while no earlier write waits, when the socket's buffer
/// is empty; [`OUTBOUND_PER_WRITE`] and [`OUTBOUND_BYTES_PER_WRITE`] keep a write far below the WebSocket's write buffer
/// (128 KiB), so feeding the messages only copies them into it and the flush is the one write.
async fn write_queued<S>(
    socket: &mut S,
    encoder: &mut OutboundEncoder,
    first: OutboundMessage,
    queue: &mut mpsc::Receiver<OutboundMessage>,
) -> Result<Written, S::Error>
where
    S: Sink<Message> + Unpin,
{
    let mut next = Some(first);
    let mut messages = 0;
    let mut bytes = 0;
    while let Some(message) = next.take() {
        if let Some(text) = encode(encoder, &message) {
            bytes += text.len();
            socket.feed(Message::Text(text)).await?;
        }
        messages += 1;
        if messages < OUTBOUND_PER_WRITE && bytes < OUTBOUND_BYTES_PER_WRITE {
            next = queue.try_recv().ok();
        }
    }
    match poll_fn(|cx| Poll::Ready(Pin::new(&mut *socket).poll_flush(cx))).await {
        Poll::Ready(Ok(())) => Ok(Written::Out),
        Poll::Ready(Err(err)) => Err(err),
        Poll::Pending => Ok(Written::Waiting),
    }
}

/// Runs the call's agent until it returns; never, when there is none (before `start`, or after it ended).
async fn run_agent(live: &mut Option<LiveCall>) -> Result<(), Box<dyn Any + Send>> {
    match live.as_mut().and_then(|live| live.agent.as_mut()) {
        Some(agent) => agent.await,
        None => std::future::pending().await,
    }
}

/// Logs a panic caught from the call's agent, with what it said when it said it as text.
fn log_agent_panic(panic: &(dyn Any + Send)) {
    let said = panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(not text)");
    tracing::error!(panic = said, "the call's agent panicked");
}

/// A message as the text frame Twilio reads, written into the socket's reused buffer; `None` (logged) if it cannot be
/// written, which Parley's own messages never are in practice.
fn encode(encoder: &mut OutboundEncoder, message: &OutboundMessage) -> Option<Utf8Bytes> {
    let written = match encoder.encode(message) {
        Ok(written) => written,
        Err(err) => {
            tracing::error!(%err, "dropped an outbound message");
            return None;
        }
    };
    match Utf8Bytes::try_from(written) {
        Ok(text) => Some(text),
        Err(err) => {
            tracing::error!(%err, "dropped an outbound message that is not UTF-8");
            None
        }
    }
}

/// What a text frame did to the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FrameOutcome {
    Continue,
    /// Twilio sent `stop`.
    Stopped,
    /// `start` was refused: the stream closes.
    Refused,
}

impl Session {
    /// Handles one text frame. Caller-supplied strings are logged as escaped values only.
    fn on_text(&mut self, text: &str) -> FrameOutcome {
        self.counters.frames += 1;
        match self.stream.on_frame(text, self.opened_at.elapsed()) {
            Step::Connected => tracing::debug!("stream connected"),
            Step::Start(start) => self.on_start(*start),
            Step::Refuse(err) => {
                self.counters.bad_frames += 1;
                tracing::warn!(peer = %self.peer, %err, "refused the stream's start message; closing it");
                return FrameOutcome::Refused;
            }
            Step::Audio { chunk, timestamp_ms, payload } => {
                if let Some(live) = self.live.as_mut() {
                    self.counters.media += 1;
                    live.jitter.push(chunk, timestamp_ms, payload);
                    deliver_frames(live, &mut self.counters);
                }
            }
            Step::AudioAhead { chunk, timestamp_ms, dropped_samples, first } => {
                self.counters.dropped_ahead_ms += dropped_samples / SAMPLES_PER_MILLI;
                if let Some(live) = self.live.as_mut() {
                    live.jitter.skip(chunk, timestamp_ms, dropped_samples);
                    deliver_frames(live, &mut self.counters);
                }
                if first {
                    tracing::warn!(
                        margin_ms = self.state.config.audio.caller_ahead_margin_ms,
                        "caller audio runs ahead of the clock; the excess is dropped (counted in the call's end line)"
                    );
                }
            }
            Step::Dtmf(digit) => {
                if let Some(live) = &self.live {
                    live.tap.conversation(ConversationEvent::Dtmf { digit: digit.clone() });
                    if live.events.try_send(CallEvent::Dtmf(digit)).is_err() {
                        tracing::warn!("agent is not keeping up; a key press was dropped");
                    }
                }
            }
            Step::Mark(name) => {
                if let Some(live) = &self.live {
                    live.playout.mark_echoed(name);
                }
            }
            Step::Stop => return FrameOutcome::Stopped,
            Step::Skipped(Skip::UnknownEvent) => {
                self.counters.unknown_events += 1;
                tracing::debug!("ignoring an event Parley does not know");
            }
            Step::Skipped(skip) => {
                self.counters.bad_frames += 1;
                // The first few are worth a warning each; a flood of them is counted in the end line instead.
                if self.counters.bad_frames <= WARNED_BAD_FRAMES {
                    tracing::warn!(?skip, "skipping a frame");
                } else {
                    tracing::debug!(?skip, "skipping a frame");
                }
            }
        }
        FrameOutcome::Continue
    }

    fn on_start(&mut self, start: Start) {
        let meta = start.start;
        if !meta.media_format.is_mulaw_8k_mono() {
            tracing::warn!(format = ?meta.media_format, "unexpected media format; treating the audio as μ-law 8 kHz mono");
        }
        let call = CallInfo {
            call_sid: meta.call_sid,
            stream_sid: start.stream_sid,
            account_sid: meta.account_sid,
            from: meta.custom_parameters.get("from").cloned(),
            to: meta.custom_parameters.get("to").cloned(),
            custom_parameters: meta.custom_parameters,
        };
        self.permit.identify(&call.call_sid, &call.stream_sid);
        let redact_numbers = self.state.config.twilio.redact_numbers;
        // The SIDs were checked against Twilio's format in `start` (letters and hex digits only), so they are logged
        // plain; everything else the caller chose is logged as an escaped value.
        tracing::info!(
            call_sid = %call.call_sid,
            stream_sid = %call.stream_sid,
            from = ?redact::phone_number(call.from.as_deref().unwrap_or("-"), redact_numbers),
            to = ?redact::phone_number(call.to.as_deref().unwrap_or("-"), redact_numbers),
            peer = %self.peer,
            "call started"
        );
        let tap = self.state.taps.as_ref().map(|taps| taps.open(&call)).unwrap_or_default();
        let lead = Duration::from_millis(self.state.config.audio.playout_lead_ms);
        let playout = playout::spawn(call.stream_sid.clone(), lead, self.outbound.clone(), tap.clone());
        // The agent is polled by this socket's task (`run_agent`), right after the frames handed to it.
        let (events, events_rx) = call_events(AGENT_QUEUE_FRAMES, Delivery::Inline);
        let agent = self.state.agents.create(&call);
        let ctx = AgentContext {
            call: call.clone(),
            events: events_rx,
            playout: playout.clone(),
            hang_up: self.hang_up.clone(),
            tap: tap.clone(),
        };
        let span = call_span(&call, redact_numbers);
        crate::telemetry::metrics::global().call_started();
        let agent: AgentRun = Box::pin(AssertUnwindSafe(agent.run(ctx).instrument(span.clone())).catch_unwind());
        let audio = &self.state.config.audio;
        let jitter = InboundFrameQueue::new(audio.jitter_max_held_frames, audio.max_gap_fill_ms_per_call);
        let started_at = Instant::now();
        self.live = Some(LiveCall { call, tap, events, playout, jitter, agent: Some(agent), started_at, span });
    }

    /// Ends the call: the agent hears the hang-up (after any audio still held) and gets a moment to finish.
    async fn finish(&mut self, ending: Ending) {
        let Some(mut live) = self.live.take() else {
            tracing::info!(?ending, frames = self.counters.frames, "stream ended before the call started");
            return;
        };
        live.jitter.drain();
        deliver_frames(&mut live, &mut self.counters);
        let _ = live.events.try_send(CallEvent::Hangup);
        drop(live.events);
        // The agent is polled here until it ends; one that does not end in time is dropped, which cancels it.
        if let Some(agent) = live.agent.take() {
            if let Ok(Err(panic)) = tokio::time::timeout(AGENT_FINISH, agent).await {
                log_agent_panic(panic.as_ref());
            }
        }
        live.tap.send(TapEvent::Ended { at: Instant::now(), reason: format!("{ending:?}") });
        let progress = live.playout.progress();
        let jitter = live.jitter.stats();
        tracing::info!(
            call_sid = %live.call.call_sid,
            stream_sid = %live.call.stream_sid,
            ?ending,
            duration_ms = live.started_at.elapsed().as_millis() as u64,
            media_frames = self.counters.media,
            bad_frames = self.counters.bad_frames,
            unknown_events = self.counters.unknown_events,
            dropped_for_slow_agent = self.counters.dropped_for_slow_agent,
            dropped_ahead_ms = self.counters.dropped_ahead_ms,
            silence_filled_ms = jitter.silence_filled_ms,
            chunks_lost = jitter.chunks_lost,
            reordered = jitter.reordered,
            sent_ms = crate::audio::mulaw_millis(progress.sent_bytes as usize),
            marks_played = progress.marks_played,
            "call ended"
        );
        live.span.record("call.outcome", format!("{ending:?}").as_str());
    }
}

/// The root span of a call (Twilio passes no trace context, so every call starts a trace). The caller's and callee's
/// numbers are left out when numbers are redacted.
fn call_span(call: &CallInfo, redact_numbers: bool) -> tracing::Span {
    let span = tracing::info_span!(
        "call",
        otel.kind = "server",
        call_sid = %call.call_sid,
        stream_sid = %call.stream_sid,
        gen_ai.conversation.id = %call.call_sid,
        call.from = tracing::field::Empty,
        call.to = tracing::field::Empty,
        call.outcome = tracing::field::Empty,
    );
    if !redact_numbers {
        if let Some(from) = &call.from {
            span.record("call.from", from.as_str());
        }
        if let Some(to) = &call.to {
            span.record("call.to", to.as_str());
        }
    }
    span
}

/// Moves every whole frame from the jitter queue to the agent, never blocking the socket.
fn deliver_frames(live: &mut LiveCall, counters: &mut Counters) {
    while let Some(frame) = live.jitter.pop() {
        if live.tap.is_active() {
            live.tap.send(TapEvent::CallerAudio { at: Instant::now(), frame: frame.clone() });
        }
        if live.events.try_send(CallEvent::Audio(frame)).is_err() {
            counters.dropped_for_slow_agent += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::task::Context;

    use bytes::Bytes;

    use super::*;

    /// A socket that records what it was handed and when it was flushed.
    #[derive(Default)]
    struct Recorder {
        log: Vec<String>,
        /// Flushes answer `Pending` (the peer's buffer is full).
        full: bool,
    }

    impl Sink<Message> for Recorder {
        type Error = Infallible;

        fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn start_send(mut self: Pin<&mut Self>, message: Message) -> Result<(), Infallible> {
            let text = match message {
                Message::Text(text) => text.as_str().to_owned(),
                other => format!("{other:?}"),
            };
            let event = text.split('"').nth(3).unwrap_or("?").to_owned();
            self.log.push(event);
            Ok(())
        }

        fn poll_flush(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            if self.full {
                return Poll::Pending;
            }
            self.log.push("flush".to_owned());
            Poll::Ready(Ok(()))
        }

        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }
    }

    fn media() -> OutboundMessage {
        OutboundMessage::media(Arc::from("MZ00000000000000000000000000000000"), Bytes::from_static(&[0xff; 800]))
    }

    fn mark(name: &str) -> OutboundMessage {
        OutboundMessage::mark("MZ00000000000000000000000000000000", name)
    }

    #[tokio::test]
    async fn a_message_and_those_queued_behind_it_go_in_one_flush_in_order() {
        let (tx, mut rx) = mpsc::channel(OUTBOUND_QUEUE);
        tx.try_send(mark("r1-1")).expect("room");
        tx.try_send(media()).expect("room");
        tx.try_send(OutboundMessage::clear("MZ00000000000000000000000000000000")).expect("room");
        let mut socket = Recorder::default();
        let mut encoder = OutboundEncoder::new();

        let written = write_queued(&mut socket, &mut encoder, media(), &mut rx).await;
        assert!(matches!(written, Ok(Written::Out)));
        assert_eq!(socket.log, ["media", "mark", "media", "clear", "flush"]);

        // Nothing queued: the message goes alone, at once.
        let written = write_queued(&mut socket, &mut encoder, mark("r1-2"), &mut rx).await;
        assert!(matches!(written, Ok(Written::Out)));
        assert_eq!(socket.log[5..], ["mark", "flush"]);
    }

    #[tokio::test]
    async fn a_write_takes_at_most_its_bound_of_queued_messages_and_says_when_it_waits_for_room() {
        let (tx, mut rx) = mpsc::channel(OUTBOUND_QUEUE);
        for n in 0..OUTBOUND_PER_WRITE + 3 {
            tx.try_send(mark(&format!("m{n}"))).expect("room");
        }
        let mut socket = Recorder { full: true, ..Recorder::default() };
        let mut encoder = OutboundEncoder::new();

        let written = write_queued(&mut socket, &mut encoder, media(), &mut rx).await;
        assert!(matches!(written, Ok(Written::Waiting)));
        assert_eq!(
            socket.log.len(),
            OUTBOUND_PER_WRITE,
            "the first message and {} queued ones",
            OUTBOUND_PER_WRITE - 1
        );
        let left = std::iter::from_fn(|| rx.try_recv().ok()).count();
        assert_eq!(left, 4, "the rest stay queued for the next write");
    }
}
