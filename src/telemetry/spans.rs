//! The spans of a turn, under the call's root span:
//!
//! ```text
//! call                                   (tracing span, src/edge/session.rs)
//! └─ invoke_agent parley                 one per caller turn, end of speech → reply over
//!    ├─ turn_detection                   last voiced frame → turn decided
//!    ├─ speech_to_text {provider}        last voiced frame → final transcript
//!    ├─ chat {model}                     one per LLM round; first token as an event
//!    │  └─ execute_tool {tool}           one per tool call; its traceparent goes to the backend
//!    ├─ text_to_speech {provider}        first text sent → synthesis done
//!    └─ playout                          first audio sent → reply over
//! ```
//!
//! Every function here returns at once, building nothing, when tracing is off.

use std::borrow::Cow;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use opentelemetry::trace::{SpanKind, Status, TraceContextExt, Tracer as _};
use opentelemetry::{Context, KeyValue};
use tokio::time::Instant;

use super::latency::TurnLatency;
use super::otel::{enabled, tracer, ClockAnchor};
use crate::llm::Usage;

/// The open `invoke_agent` span of one caller turn, and what its stage spans are built from at its end.
#[derive(Default)]
pub struct TurnTrace {
    cx: Option<Context>,
    anchor: Option<ClockAnchor>,
    open: OpenSpans,
}

/// The LLM and tool spans a reply opened. A barge-in aborts the reply's task, which would end them whenever the task
/// is dropped; the turn ends any still open at its own end instead, so they nest inside it.
type OpenSpans = Arc<Mutex<Vec<Context>>>;

/// Where a reply's LLM and tool spans go: under a parent span, tracked for the turn.
#[derive(Clone)]
pub struct ReplyTrace {
    parent: Context,
    open: OpenSpans,
}

impl ReplyTrace {
    fn child(&self, name: String, kind: SpanKind) -> Context {
        let cx = build(name, &self.parent, None, kind);
        if let Ok(mut open) = self.open.lock() {
            open.push(cx.clone());
        }
        cx
    }

    fn under(&self, parent: &Context) -> ReplyTrace {
        ReplyTrace { parent: parent.clone(), open: Arc::clone(&self.open) }
    }
}

/// How a turn's reply ended, for `gen_ai.agent.invocation.end_reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TurnEnd {
    Completed,
    Interrupted,
    SessionClosed,
}

impl TurnEnd {
    fn as_str(self) -> &'static str {
        match self {
            TurnEnd::Completed => "completed",
            TurnEnd::Interrupted => "interrupted",
            TurnEnd::SessionClosed => "session_closed",
        }
    }
}

/// Provider names for the stage spans.
pub struct StageProviders<'a> {
    pub stt: &'a str,
    pub tts: &'a str,
}

fn build(name: impl Into<Cow<'static, str>>, parent: &Context, start: Option<SystemTime>, kind: SpanKind) -> Context {
    let mut builder = tracer().span_builder(name).with_kind(kind);
    if let Some(start) = start {
        builder = builder.with_start_time(start);
    }
    let span = tracer().build_with_context(builder, parent);
    parent.with_span(span)
}

impl TurnTrace {
    /// Opens the turn's span under the call's span (`parent`), starting when the caller stopped speaking.
    pub fn start(parent: &Context, call_sid: &str, turn_index: u64, started: Option<Instant>) -> TurnTrace {
        if !enabled() {
            return TurnTrace::default();
        }
        let anchor = ClockAnchor::now();
        let cx = build("invoke_agent parley", parent, started.map(|at| anchor.wall_clock(at)), SpanKind::Internal);
        let span = cx.span();
        span.set_attribute(KeyValue::new("gen_ai.operation.name", "invoke_agent"));
        span.set_attribute(KeyValue::new("gen_ai.agent.name", "parley"));
        span.set_attribute(KeyValue::new("gen_ai.conversation.id", call_sid.to_owned()));
        span.set_attribute(KeyValue::new("voice.turn.index", turn_index as i64));
        TurnTrace { cx: Some(cx), anchor: Some(anchor), open: OpenSpans::default() }
    }

    /// Where the turn's LLM and tool spans go (`None` when the turn is not traced).
    pub fn reply_trace(&self) -> Option<ReplyTrace> {
        Some(ReplyTrace { parent: self.cx.clone()?, open: Arc::clone(&self.open) })
    }

    /// Marks the barge-in on the turn: an event at the speech onset carrying the onset → `clear` time.
    pub fn barge_in(&self, onset: Instant, cleared: Instant) {
        let (Some(cx), Some(anchor)) = (&self.cx, &self.anchor) else { return };
        let reaction_ms = cleared.saturating_duration_since(onset).as_secs_f64() * 1000.0;
        cx.span().add_event_with_timestamp(
            "barge_in",
            anchor.wall_clock(onset),
            vec![KeyValue::new("voice.barge_in.reaction_ms", reaction_ms)],
        );
    }

    /// Builds the stage spans from the turn's measurements and closes the turn at `ended`.
    pub fn finish(
        self,
        latency: &TurnLatency,
        synthesis_done: Option<Instant>,
        ended: Instant,
        end: TurnEnd,
        providers: &StageProviders<'_>,
    ) {
        let (Some(cx), Some(anchor)) = (self.cx, self.anchor) else { return };
        if let Ok(mut open) = self.open.lock() {
            // Spans of a reply cut short (ending an already ended span does nothing).
            for child in open.drain(..) {
                child.span().set_attribute(KeyValue::new("voice.cancelled", true));
                child.span().end_with_timestamp(anchor.wall_clock(ended));
            }
        }
        let stage = |name: String, from: Option<Instant>, to: Option<Instant>, kind: SpanKind, attrs: Vec<KeyValue>| {
            let (Some(from), Some(to)) = (from, to) else { return };
            let stage = build(name, &cx, Some(anchor.wall_clock(from)), kind);
            let span = stage.span();
            for attr in attrs {
                span.set_attribute(attr);
            }
            span.end_with_timestamp(anchor.wall_clock(to.max(from)));
        };
        let ms = |from: Option<Instant>, to: Option<Instant>| -> Option<f64> {
            Some(to?.saturating_duration_since(from?).as_secs_f64() * 1000.0)
        };
        stage(
            "turn_detection".into(),
            latency.speech_ended,
            latency.end_of_turn,
            SpanKind::Internal,
            vec![KeyValue::new("voice.stage", "turn_detection")],
        );
        stage(
            format!("speech_to_text {}", providers.stt),
            latency.speech_ended,
            latency.stt_final,
            SpanKind::Client,
            vec![
                KeyValue::new("voice.stage", "stt_finalization"),
                KeyValue::new("gen_ai.provider.name", providers.stt.to_owned()),
            ],
        );
        let mut tts_attrs = vec![
            KeyValue::new("voice.stage", "tts"),
            KeyValue::new("gen_ai.provider.name", providers.tts.to_owned()),
            KeyValue::new("voice.tts.interrupted", end == TurnEnd::Interrupted),
        ];
        if let Some(ttfb) = ms(latency.first_tts_request, latency.first_tts_audio) {
            tts_attrs.push(KeyValue::new("voice.tts.ttfb_ms", ttfb));
        }
        let tts_end = synthesis_done.or(latency.first_tts_audio.map(|_| ended));
        stage(
            format!("text_to_speech {}", providers.tts),
            latency.first_tts_request,
            tts_end,
            SpanKind::Client,
            tts_attrs,
        );
        stage(
            "playout".into(),
            latency.first_audio_sent,
            Some(latency.clear_sent.unwrap_or(ended)),
            SpanKind::Internal,
            vec![KeyValue::new("voice.stage", "playout")],
        );
        let span = cx.span();
        span.set_attribute(KeyValue::new("gen_ai.agent.invocation.end_reason", end.as_str()));
        if let Some(e2e) = ms(latency.speech_ended.or(latency.end_of_turn), latency.first_audio_sent) {
            span.set_attribute(KeyValue::new("voice.turn.e2e_latency_ms", e2e));
        }
        if let Some(added) = latency.parley_added() {
            span.set_attribute(KeyValue::new("voice.turn.parley_added_ms", added.as_secs_f64() * 1000.0));
        }
        span.end_with_timestamp(anchor.wall_clock(ended));
    }
}

/// The span of one LLM request (`chat {model}`), open while its stream runs.
pub struct LlmTrace {
    cx: Option<Context>,
    /// Where this round's tool spans go.
    tools: Option<ReplyTrace>,
    sent: Instant,
    first_token_seen: bool,
}

impl LlmTrace {
    /// Opens the span under the turn, when there is one being traced.
    /// `route` names which of the configured models the turn went to (`fast` or `large`, see `llm::routing`).
    pub fn start(turn: Option<&ReplyTrace>, provider: &str, model: &str, round: usize, route: &str) -> LlmTrace {
        let sent = Instant::now();
        let Some(turn) = turn.filter(|_| enabled()) else {
            return LlmTrace { cx: None, tools: None, sent, first_token_seen: true };
        };
        let cx = turn.child(format!("chat {model}"), SpanKind::Client);
        let tools = Some(turn.under(&cx));
        let span = cx.span();
        span.set_attribute(KeyValue::new("gen_ai.operation.name", "chat"));
        span.set_attribute(KeyValue::new("gen_ai.provider.name", provider.to_owned()));
        span.set_attribute(KeyValue::new("gen_ai.request.model", model.to_owned()));
        span.set_attribute(KeyValue::new("gen_ai.request.stream", true));
        span.set_attribute(KeyValue::new("voice.llm.round", round as i64));
        span.set_attribute(KeyValue::new("voice.llm.route", route.to_owned()));
        LlmTrace { cx: Some(cx), tools, sent, first_token_seen: false }
    }

    /// Where the tool spans of this round go.
    pub fn tools_trace(&self) -> Option<ReplyTrace> {
        self.tools.clone()
    }

    /// The first text arrived: an event, and `gen_ai.response.time_to_first_chunk` in seconds.
    pub fn first_token(&mut self) {
        if self.first_token_seen {
            return;
        }
        self.first_token_seen = true;
        let Some(cx) = &self.cx else { return };
        let span = cx.span();
        span.add_event("gen_ai.first_token", Vec::new());
        span.set_attribute(KeyValue::new("gen_ai.response.time_to_first_chunk", self.sent.elapsed().as_secs_f64()));
    }

    /// The stream finished: usage, finish reason and the provider's request id.
    pub fn finished(&self, usage: Option<Usage>, finish_reason: &str, request_id: Option<&str>) {
        let Some(cx) = &self.cx else { return };
        let span = cx.span();
        if let Some(usage) = usage {
            span.set_attribute(KeyValue::new("gen_ai.usage.input_tokens", usage.input_tokens as i64));
            span.set_attribute(KeyValue::new("gen_ai.usage.output_tokens", usage.output_tokens as i64));
            span.set_attribute(KeyValue::new("gen_ai.usage.cache_read.input_tokens", usage.cached_input_tokens as i64));
            span.set_attribute(KeyValue::new(
                "gen_ai.usage.cache_creation.input_tokens",
                usage.cache_write_input_tokens as i64,
            ));
        }
        span.set_attribute(KeyValue::new(
            "gen_ai.response.finish_reasons",
            opentelemetry::Value::Array(vec![opentelemetry::StringValue::from(finish_reason.to_owned())].into()),
        ));
        if let Some(id) = request_id {
            span.set_attribute(KeyValue::new("gen_ai.response.id", id.to_owned()));
        }
    }

    /// The request failed.
    pub fn failed(&self, error: &dyn std::fmt::Display) {
        let Some(cx) = &self.cx else { return };
        let span = cx.span();
        span.set_attribute(KeyValue::new("error.type", "provider_error"));
        span.set_status(Status::error(error.to_string()));
    }

    /// Closes the span (dropping it mid-stream, on barge-in, closes it too).
    pub fn end(self) {
        if let Some(cx) = self.cx {
            cx.span().end();
        }
    }
}

/// The span of one tool call (`execute_tool {tool}`).
pub struct ToolTrace {
    cx: Option<Context>,
}

impl ToolTrace {
    /// Opens the span under the LLM request that asked for the call.
    pub fn start(parent: Option<&ReplyTrace>, tool: &str, call_id: &str, server: Option<&str>) -> ToolTrace {
        let Some(parent) = parent.filter(|_| enabled()) else { return ToolTrace { cx: None } };
        let cx = parent.child(format!("execute_tool {tool}"), SpanKind::Internal);
        let span = cx.span();
        span.set_attribute(KeyValue::new("gen_ai.operation.name", "execute_tool"));
        span.set_attribute(KeyValue::new("gen_ai.tool.name", tool.to_owned()));
        span.set_attribute(KeyValue::new("gen_ai.tool.call.id", call_id.to_owned()));
        span.set_attribute(KeyValue::new("gen_ai.tool.type", "extension"));
        span.set_attribute(KeyValue::new("mcp.method.name", "tools/call"));
        if let Some(server) = server {
            span.set_attribute(KeyValue::new("mcp.server.name", server.to_owned()));
        }
        ToolTrace { cx: Some(cx) }
    }

    /// The W3C `traceparent` naming this span, for the backend.
    pub fn traceparent(&self) -> Option<String> {
        self.cx.as_ref().and_then(super::otel::traceparent)
    }

    /// Closes the span with the call's outcome.
    pub fn end(self, is_error: bool, message: &str) {
        let Some(cx) = self.cx else { return };
        let span = cx.span();
        span.set_attribute(KeyValue::new("voice.tool.outcome", if is_error { "error" } else { "ok" }));
        if is_error {
            span.set_attribute(KeyValue::new("error.type", "tool_error"));
            span.set_status(Status::error(message.chars().take(200).collect::<String>()));
        }
        span.end();
    }
}
