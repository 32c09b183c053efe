//! One reply of the agent: the LLM stream, cut into speakable pieces, with the tool loop.
//!
//! The task streams the model's text into the sentence chunker and reports each piece to the call's engine (which
//! owns the TTS socket and the playout queue), runs the model's tool calls concurrently and loops until the model
//! answers without calling tools. It is cancelled by aborting it: dropping the LLM stream aborts the HTTP request and
//! dropping the tool futures cancels the backend calls.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::chunker::{ChunkerConfig, Piece, SentenceChunker};
use super::clock::sleep_until;
use super::reports::Reporter;
use super::tools::{ToolCallContext, ToolExecutor};
use crate::llm::history::{append_tool_round, ToolOutcome, ToolResult};
use crate::llm::routing::{ModelRoute, Route, ESCALATED_RESULT, ESCALATION_TOOL};
use crate::llm::{ChatMessage, FinishReason, LanguageModel, LlmError, LlmEvent, LlmRequest, ToolCall, Usage};
use crate::telemetry::metrics;
use crate::telemetry::spans::{LlmTrace, ReplyTrace, ToolTrace};

/// What a running reply tells the engine.
#[derive(Debug)]
pub enum ReplyEvent {
    LlmRequestSent {
        at: Instant,
    },
    FirstToken {
        at: Instant,
    },
    /// One model request's stream ended: what the provider counted.
    RoundFinished {
        usage: Option<Usage>,
        route: Route,
        provider: &'static str,
        model: String,
    },
    /// A speakable piece of text, ready for TTS.
    Piece {
        text: String,
        /// When the piece's text was complete (the chunker may have held it since, waiting for the next token).
        ready_at: Instant,
        /// When the piece was released.
        at: Instant,
    },
    /// The model called tools; they are running now.
    ToolsStarted {
        calls: Vec<ToolCall>,
    },
    /// The model called a tool that needs the caller's spoken confirmation first; it was not run.
    ConfirmationRequested {
        call: ToolCall,
    },
    /// A tool round is complete: the text spoken before the calls, the calls, and their results.
    ToolRound {
        calls: Vec<ToolCall>,
        results: Vec<ToolResult>,
    },
    /// The model finished its answer.
    Done {
        usage: Option<Usage>,
    },
    /// The model failed; the engine speaks the fallback line.
    Failed {
        error: LlmError,
    },
}

/// Where a reply reports, tagged with the reply's id so the engine can ignore a cancelled reply's stragglers.
#[derive(Clone)]
pub struct ReplyEvents {
    pub reply_id: u64,
    pub sender: Reporter<(u64, ReplyEvent)>,
}

impl ReplyEvents {
    fn send(&self, event: ReplyEvent) -> Result<(), ()> {
        self.sender.send((self.reply_id, event)).map_err(|_| ())
    }
}

/// Everything a reply needs.
pub struct ReplyJob {
    /// The fast model (the call's speculative wrapper when that is on).
    pub llm: Arc<dyn LanguageModel>,
    /// The larger model and the rules that lead to it, when configured.
    pub route: Option<Arc<ModelRoute>>,
    /// The route the reply starts on (decided from the caller's turn).
    pub first_route: Route,
    pub tools: Arc<dyn ToolExecutor>,
    pub history: Vec<ChatMessage>,
    pub context: ToolCallContext,
    pub max_tool_rounds: usize,
    pub chunker: ChunkerConfig,
    pub cancel: CancellationToken,
    /// Said when the model has not begun to answer, or tools are still running, after `filler_after`, so the caller
    /// does not hear dead air.
    pub filler_line: String,
    pub filler_after: Duration,
    /// Calls the caller confirmed aloud in this turn: (tool name, arguments).
    pub confirmed: Vec<(String, serde_json::Value)>,
    /// The turn's span, parent of the LLM and tool spans (`None` when tracing is off).
    pub trace: Option<ReplyTrace>,
}

/// What the model is told when a call needs the caller's confirmation first.
pub const NEEDS_CONFIRMATION: &str =
    "Not done yet: this action needs the caller's spoken confirmation. Ask the caller \
    to confirm it, and call the tool again with the same arguments only after they say yes.";

/// Whether a call is one the caller confirmed (same tool, same arguments).
fn is_confirmed(call: &ToolCall, confirmed: &[(String, serde_json::Value)]) -> bool {
    let arguments: serde_json::Value = serde_json::from_str(&call.arguments).unwrap_or(serde_json::Value::Null);
    confirmed.iter().any(|(name, args)| *name == call.name && *args == arguments)
}

/// Runs the reply to completion, reporting on `events`. Returns when the model is done or failed.
pub async fn run(mut job: ReplyJob, events: ReplyEvents) {
    let mut history = std::mem::take(&mut job.history);
    let tool_specs = job.tools.specs();
    let mut first_token_seen = false;
    // A model slow to start speaking gets the filler line, as slow tools do, so the caller never waits in silence.
    let mut filler_due = (!job.filler_line.is_empty()).then(|| Instant::now() + job.filler_after);
    let mut route = job.first_route;
    for round in 0..=job.max_tool_rounds {
        let llm = match (&job.route, route) {
            (Some(routed), Route::Large) => Arc::clone(&routed.large),
            _ => Arc::clone(&job.llm),
        };
        // The last round offers no tools, so the model must answer in words.
        let mut tools = if round < job.max_tool_rounds { tool_specs.clone() } else { Vec::new() };
        if round < job.max_tool_rounds && route == Route::Fast {
            tools.extend(job.route.as_ref().and_then(|routed| routed.rules.escalation_spec()));
        }
        let request = LlmRequest { messages: history.clone(), tools };
        let _ = events.send(ReplyEvent::LlmRequestSent { at: Instant::now() });
        let mut llm_trace = LlmTrace::start(job.trace.as_ref(), llm.name(), llm.model(), round, route.name());
        let opening = llm.stream(request);
        tokio::pin!(opening);
        let opened = loop {
            tokio::select! {
                opened = &mut opening => break opened,
                () = sleep_until(filler_due) => {
                    filler_due = None;
                    speak_filler(&job, &events);
                }
            }
        };
        let mut stream = match opened {
            Ok(stream) => stream,
            Err(error) => {
                llm_trace.failed(&error);
                let _ = events.send(ReplyEvent::Failed { error });
                return;
            }
        };
        let mut chunker = SentenceChunker::new(job.chunker);
        let mut spoken = String::new();
        let mut calls = Vec::new();
        let mut usage = None;
        loop {
            let event = tokio::select! {
                event = stream.next() => event,
                () = sleep_until(chunker.deadline()) => {
                    if let Some(piece) = chunker.release_due(Instant::now()) {
                        send_piece(&events, piece);
                    }
                    continue;
                }
                () = sleep_until(filler_due) => {
                    filler_due = None;
                    speak_filler(&job, &events);
                    continue;
                }
            };
            let Some(event) = event else { break };
            match event {
                Ok(LlmEvent::TextDelta(delta)) => {
                    let now = Instant::now();
                    llm_trace.first_token();
                    if !first_token_seen {
                        first_token_seen = true;
                        filler_due = None;
                        let _ = events.send(ReplyEvent::FirstToken { at: now });
                    }
                    spoken.push_str(&delta);
                    for piece in chunker.push(&delta, now) {
                        send_piece(&events, piece);
                    }
                }
                Ok(LlmEvent::ToolCalls(made)) => {
                    // The model acts instead of (or after) speaking: the filler is no longer for a silent model.
                    filler_due = None;
                    calls = made;
                }
                Ok(LlmEvent::Finished { usage: u, reason, request_id }) => {
                    llm_trace.finished(u, finish_reason(&reason), request_id.as_deref());
                    usage = u;
                }
                Err(error) => {
                    llm_trace.failed(&error);
                    let _ = events.send(ReplyEvent::Failed { error });
                    return;
                }
            }
        }
        if let Some(piece) = chunker.finish(Instant::now()) {
            send_piece(&events, piece);
        }
        let _ = events.send(ReplyEvent::RoundFinished {
            usage,
            route,
            provider: llm.name(),
            model: llm.model().to_owned(),
        });
        if calls.is_empty() {
            llm_trace.end();
            let _ = events.send(ReplyEvent::Done { usage });
            return;
        }
        let _ = events.send(ReplyEvent::ToolsStarted { calls: calls.clone() });
        let (handed_over, calls_to_run): (Vec<ToolCall>, Vec<ToolCall>) =
            calls.iter().cloned().partition(|call| call.name == ESCALATION_TOOL && job.route.is_some());
        let (held, runnable): (Vec<ToolCall>, Vec<ToolCall>) = calls_to_run
            .into_iter()
            .partition(|call| job.tools.needs_confirmation(&call.name) && !is_confirmed(call, &job.confirmed));
        let mut results: Vec<ToolResult> = handed_over
            .iter()
            .map(|call| ToolResult { call_id: call.id.clone(), outcome: ToolOutcome::ok(ESCALATED_RESULT) })
            .collect();
        results.extend(held.into_iter().map(|call| {
            let call_id = call.id.clone();
            let _ = events.send(ReplyEvent::ConfirmationRequested { call });
            ToolResult { call_id, outcome: ToolOutcome::error(NEEDS_CONFIRMATION) }
        }));
        let running = run_tools(&job.tools, &runnable, &job.context, &job.cancel, llm_trace.tools_trace());
        tokio::pin!(running);
        let ran = tokio::select! {
            ran = &mut running => ran,
            () = tokio::time::sleep(job.filler_after), if !runnable.is_empty() && !job.filler_line.is_empty() => {
                speak_filler(&job, &events);
                running.await
            }
        };
        llm_trace.end();
        results.extend(ran);
        if let Some(routed) = &job.route {
            let next = routed.rules.after_tool_round(route, round + 1, &calls);
            if next != route {
                tracing::info!(call_sid = %job.context.call_sid, model = routed.large.model(), "the rest of this reply goes to the larger model");
            }
            route = next;
        }
        append_tool_round(&mut history, &spoken, &calls, &results);
        let _ = events.send(ReplyEvent::ToolRound { calls, results });
    }
}

fn send_piece(events: &ReplyEvents, piece: Piece) {
    let _ = events.send(ReplyEvent::Piece { text: piece.text, ready_at: piece.ready_at, at: Instant::now() });
}

fn speak_filler(job: &ReplyJob, events: &ReplyEvents) {
    let now = Instant::now();
    let _ = events.send(ReplyEvent::Piece { text: format!("{} ", job.filler_line), ready_at: now, at: now });
}

/// The OpenTelemetry spelling of a finish reason.
fn finish_reason(reason: &FinishReason) -> &str {
    match reason {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
        FinishReason::ToolCalls => "tool_calls",
        FinishReason::ContentFilter => "content_filter",
        FinishReason::Other(other) => other,
    }
}

/// Runs every call of one round concurrently, each under its own span whose `traceparent` the backend receives.
async fn run_tools(
    tools: &Arc<dyn ToolExecutor>,
    calls: &[ToolCall],
    context: &ToolCallContext,
    cancel: &CancellationToken,
    trace: Option<ReplyTrace>,
) -> Vec<ToolResult> {
    let trace = trace.as_ref();
    let runs = calls.iter().map(|call| async move {
        let server = tools.server_of(&call.name);
        let span = ToolTrace::start(trace, &call.name, &call.id, server.as_deref());
        let mut context = context.clone();
        if let Some(traceparent) = span.traceparent() {
            context.traceparent = Some(traceparent);
        }
        let started = Instant::now();
        let outcome = tools.call(call, &context, cancel.child_token()).await;
        metrics::global().tool_finished(&call.name, started.elapsed(), outcome.is_error);
        span.end(outcome.is_error, &outcome.content);
        ToolResult { call_id: call.id.clone(), outcome }
    });
    futures_util::future::join_all(runs).await
}
