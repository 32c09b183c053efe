//! One Media Stream socket: reads Twilio's frames, keeps the call's protocol state, hands audio to the agent and
//! writes the playout queue's messages back. Parsing is in [`crate::twilio::messages`]; this is the I/O around it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::AppState;
use crate::audio::jitter::InboundFrameQueue;
use crate::audio::playout::{self, PlayoutHandle};
use crate::call::agent::{AgentContext, CallEvent};
use crate::call::registry::CallPermit;
use crate::call::tap::{CallTap, ConversationEvent, TapEvent};
use crate::call::CallInfo;
use crate::telemetry::redact;
use crate::twilio::messages::{parse_inbound, InboundMessage, OutboundMessage, ProtocolError, Start};

/// A stream that sends no `start` within this time is closed, so idle sockets cannot hold call slots.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Caller audio buffered for a slow agent: five seconds of frames.
const AGENT_QUEUE_FRAMES: usize = 250;
/// Outbound messages buffered for the socket writer.
const OUTBOUND_QUEUE: usize = 256;
/// WebSocket close codes.
const CLOSE_NORMAL: u16 = 1000;
const CLOSE_GOING_AWAY: u16 = 1001;
const CLOSE_POLICY: u16 = 1008;

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
}

/// Counters for the end-of-call log line.
#[derive(Debug, Default)]
struct Counters {
    frames: u64,
    media: u64,
    bad_frames: u64,
    unknown_events: u64,
    dropped_for_slow_agent: u64,
}

struct LiveCall {
    call: CallInfo,
    tap: CallTap,
    events: mpsc::Sender<CallEvent>,
    playout: PlayoutHandle,
    jitter: InboundFrameQueue,
    agent: JoinHandle<()>,
    started_at: Instant,
    /// The call's root span: the agent and its turns are traced under it.
    span: tracing::Span,
}

struct Session {
    state: Arc<AppState>,
    permit: CallPermit,
    outbound: mpsc::Sender<OutboundMessage>,
    hang_up: CancellationToken,
    live: Option<LiveCall>,
    counters: Counters,
    peer: SocketAddr,
}

/// Serves one Media Stream until it ends, whatever the other side does.
pub(crate) async fn run(socket: WebSocket, state: Arc<AppState>, permit: CallPermit, peer: SocketAddr) {
    let (mut sink, mut stream) = socket.split();
    let (outbound, mut outbound_rx) = mpsc::channel::<OutboundMessage>(OUTBOUND_QUEUE);
    let close_requested = permit.close_requested();
    let mut session = Session {
        state,
        permit,
        outbound,
        hang_up: CancellationToken::new(),
        live: None,
        counters: Counters::default(),
        peer,
    };
    let start_deadline = tokio::time::sleep(START_TIMEOUT);
    tokio::pin!(start_deadline);
    let hang_up = session.hang_up.clone();

    let ending = loop {
        tokio::select! {
            () = close_requested.cancelled() => break Ending::ServerShutdown,
            () = hang_up.cancelled() => break Ending::HungUp,
            () = &mut start_deadline, if session.live.is_none() => break Ending::NoStart,
            Some(message) = outbound_rx.recv() => {
                if let Err(err) = sink.send(Message::Text(message.to_json().into())).await {
                    tracing::info!(%err, "could not write to Twilio");
                    break Ending::Vanished;
                }
            }
            frame = stream.next() => match frame {
                Some(Ok(Message::Text(text))) => {
                    if session.on_text(text.as_str()) {
                        break Ending::Stopped;
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
    // Write what the agent queued before the end, then close politely where the peer is still there.
    while let Ok(message) = outbound_rx.try_recv() {
        if ending == Ending::Vanished || sink.send(Message::Text(message.to_json().into())).await.is_err() {
            break;
        }
    }
    let close = match ending {
        Ending::ServerShutdown => Some((CLOSE_GOING_AWAY, "Parley is shutting down")),
        Ending::HungUp => Some((CLOSE_NORMAL, "call ended")),
        Ending::NoStart => Some((CLOSE_POLICY, "no start message")),
        Ending::Stopped | Ending::ClosedByTwilio => Some((CLOSE_NORMAL, "")),
        Ending::Vanished => None,
    };
    if let Some((code, reason)) = close {
        let _ = sink.send(Message::Close(Some(CloseFrame { code, reason: reason.into() }))).await;
        let _ = sink.close().await;
    }
}

impl Session {
    /// Handles one text frame. Returns true when the stream has stopped.
    fn on_text(&mut self, text: &str) -> bool {
        self.counters.frames += 1;
        let message = match parse_inbound(text, self.state.config.server.max_frame_bytes) {
            Ok(message) => message,
            Err(ProtocolError::UnknownEvent(event)) => {
                self.counters.unknown_events += 1;
                tracing::debug!(%event, "ignoring an event Parley does not know");
                return false;
            }
            Err(err) => {
                self.counters.bad_frames += 1;
                tracing::warn!(%err, "skipping a frame that could not be parsed");
                return false;
            }
        };
        match message {
            InboundMessage::Connected(connected) => {
                tracing::debug!(protocol = %connected.protocol, version = %connected.version, "stream connected");
            }
            InboundMessage::Start(start) => self.on_start(start),
            InboundMessage::Media(media) => {
                let Some(live) = self.live.as_mut() else {
                    self.counters.bad_frames += 1;
                    tracing::warn!("media before start; skipped");
                    return false;
                };
                match media.media.decode_payload(self.state.config.server.max_frame_bytes) {
                    Ok(payload) => {
                        self.counters.media += 1;
                        live.jitter.push(media.media.chunk, media.media.timestamp, payload);
                        deliver_frames(live, &mut self.counters);
                    }
                    Err(err) => {
                        self.counters.bad_frames += 1;
                        tracing::warn!(%err, chunk = media.media.chunk, "skipping a media frame");
                    }
                }
            }
            InboundMessage::Dtmf(dtmf) => {
                if let Some(live) = &self.live {
                    live.tap.conversation(ConversationEvent::Dtmf { digit: dtmf.dtmf.digit.clone() });
                    if live.events.try_send(CallEvent::Dtmf(dtmf.dtmf.digit)).is_err() {
                        tracing::warn!("agent is not keeping up; a key press was dropped");
                    }
                }
            }
            InboundMessage::Mark(echo) => {
                if let Some(live) = &self.live {
                    live.playout.mark_echoed(echo.mark.name);
                }
            }
            InboundMessage::Stop(_) => return true,
        }
        false
    }

    fn on_start(&mut self, start: Start) {
        if self.live.is_some() {
            self.counters.bad_frames += 1;
            tracing::warn!("a second start on the same stream; ignored");
            return;
        }
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
        tracing::info!(
            call_sid = %call.call_sid,
            stream_sid = %call.stream_sid,
            from = redact::phone_number(call.from.as_deref().unwrap_or("-"), redact_numbers),
            to = redact::phone_number(call.to.as_deref().unwrap_or("-"), redact_numbers),
            peer = %self.peer,
            "call started"
        );
        let tap = self.state.taps.as_ref().map(|taps| taps.open(&call)).unwrap_or_default();
        let lead = Duration::from_millis(self.state.config.audio.playout_lead_ms);
        let playout = playout::spawn(call.stream_sid.clone(), lead, self.outbound.clone(), tap.clone());
        let (events, events_rx) = mpsc::channel(AGENT_QUEUE_FRAMES);
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
        let agent = tokio::spawn(agent.run(ctx).instrument(span.clone()));
        let jitter = InboundFrameQueue::new(self.state.config.audio.jitter_max_held_frames);
        self.live = Some(LiveCall { call, tap, events, playout, jitter, agent, started_at: Instant::now(), span });
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
        if tokio::time::timeout(Duration::from_secs(2), &mut live.agent).await.is_err() {
            live.agent.abort();
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
