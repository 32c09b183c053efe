//! The HTTP half every streaming LLM client shares: send the request, map a refusal to [`LlmError`], read the
//! Server-Sent Events body under the first-token and idle limits, and hand the events to the provider's pure
//! decoder.
//!
//! The clients ([`super::openai`], [`super::anthropic`]) only build their request and their decoder; everything
//! that decides how long the caller may wait, and whether the connection is reused, lives here once. The limits count
//! the model's *answer*, not bytes: a server that accepts the request and then sends only its preamble (OpenAI's
//! `role` chunk, Anthropic's `message_start`) or keep-alive pings has not started answering, and times out like one
//! that sends nothing.
//!
//! Cancellation is by drop: the stream owns the response body, so dropping it closes the connection, which is how
//! the server learns the caller barged in. After a clean end the rest of the body is read by a short background task,
//! so the connection goes back to the pool without the reply waiting for it.

use std::collections::VecDeque;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use reqwest::header::{HeaderName, CONTENT_TYPE, RETRY_AFTER};
use tokio::time::Instant;

use super::openai::stream::error_message_from_text;
use super::sse::{SseEvent, SseParser};
use super::{LlmError, LlmEvent, LlmStream};
use crate::http_client::{describe, header_text, millis};

/// How long to keep reading after the end of the answer for the end of the body, so the connection can be reused
/// for the next turn (saving a TLS handshake) instead of being closed.
const DRAIN_AFTER_END: Duration = Duration::from_millis(250);

/// A provider's pure decoder of its event stream: SSE events in, [`LlmEvent`]s out.
pub trait StreamDecoder: Send + 'static {
    /// Decodes one event; returns what can be delivered now (text deltas).
    fn on_event(&mut self, event: &SseEvent) -> Result<Vec<LlmEvent>, LlmError>;
    /// Whether the provider's end-of-answer marker arrived (nothing after it matters).
    fn is_done(&self) -> bool;
    /// How many pieces of the model's answer were decoded so far: text, tool-call fragments, the stop reason. The
    /// timeouts run from the last one, so preambles and pings do not count as the model answering.
    fn answer_pieces(&self) -> u64;
    /// Ends the response: the tool calls and the finish event, or the error of a truncated answer.
    fn finish(self, header_request_id: Option<String>) -> Result<Vec<LlmEvent>, LlmError>;
}

/// How long a model may keep the caller waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamLimits {
    /// From sending the request to the first piece of the answer.
    pub first_token: Duration,
    /// Between two pieces of the answer.
    pub idle: Duration,
}

/// One streaming request, ready to send.
pub struct SseCall<D> {
    /// Provider label for errors and logs.
    pub provider: &'static str,
    /// The POST with its headers and JSON body.
    pub request: reqwest::RequestBuilder,
    pub limits: StreamLimits,
    /// The response header carrying the provider's request id (`x-request-id`, `request-id`).
    pub request_id_header: HeaderName,
    /// The provider's decoder for this response.
    pub decoder: D,
}

/// Sends the request and returns the stream of the answer once the provider accepted it (a 2xx event stream).
/// A refusal (HTTP error, a JSON error body, no answer in time) is returned here, before any event.
pub async fn open<D: StreamDecoder>(call: SseCall<D>) -> Result<LlmStream, LlmError> {
    let SseCall { provider, request, limits, request_id_header, decoder } = call;
    let deadline = Instant::now() + limits.first_token;
    let response = match tokio::time::timeout_at(deadline, request.send()).await {
        Err(_) => return Err(first_token_timeout(provider, limits)),
        Ok(Err(error)) => return Err(LlmError::Connect { provider, detail: describe(&error) }),
        Ok(Ok(response)) => response,
    };
    if !response.status().is_success() {
        return Err(http_error(provider, response, limits.first_token).await);
    }
    if header_text(response.headers(), CONTENT_TYPE).is_some_and(|t| t.starts_with("application/json")) {
        return Err(json_instead_of_stream(provider, response, limits.first_token).await);
    }
    let request_id = header_text(response.headers(), request_id_header);
    tracing::debug!(provider, request_id = ?request_id, "llm stream accepted");
    let driver = Driver {
        provider,
        body: Some(Box::pin(response.bytes_stream())),
        sse: SseParser::new(),
        decoder: Some(decoder),
        queue: VecDeque::new(),
        request_id,
        limits,
        deadline,
        pieces: 0,
    };
    Ok(Box::pin(futures_util::stream::unfold(driver, |mut driver| async move {
        driver.next().await.map(|item| (item, driver))
    })))
}

fn first_token_timeout(provider: &'static str, limits: StreamLimits) -> LlmError {
    LlmError::Timeout { provider, millis: millis(limits.first_token), waiting_for: "the first token" }
}

/// Turns a non-success response into [`LlmError::Http`] carrying the message of the provider's error body.
async fn http_error(provider: &'static str, response: reqwest::Response, patience: Duration) -> LlmError {
    let status = response.status().as_u16();
    let retry_after = header_text(response.headers(), RETRY_AFTER);
    let body = match tokio::time::timeout(patience, response.text()).await {
        Ok(Ok(body)) => body,
        Ok(Err(error)) => format!("(error body unreadable: {})", describe(&error)),
        Err(_) => "(error body not received in time)".into(),
    };
    let mut detail = error_message_from_text(&body);
    if let Some(seconds) = retry_after {
        detail.push_str(&format!("; retry after {seconds} s"));
    }
    LlmError::Http { provider, status, detail }
}

/// A 2xx answer that is JSON rather than an event stream: an error object, or a server ignoring `stream: true`.
async fn json_instead_of_stream(provider: &'static str, response: reqwest::Response, patience: Duration) -> LlmError {
    let body = match tokio::time::timeout(patience, response.text()).await {
        Ok(Ok(body)) => body,
        _ => String::new(),
    };
    match serde_json::from_str::<serde_json::Value>(&body) {
        Ok(value) if value.get("error").is_some_and(|e| !e.is_null()) => {
            LlmError::Provider { provider, detail: error_message_from_text(&body) }
        }
        _ => LlmError::Protocol {
            provider,
            detail: "answered with JSON instead of an event stream (does the server support stream: true?)".into(),
        },
    }
}

type Body = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

/// Reads the response body and turns it into events.
struct Driver<D> {
    provider: &'static str,
    /// `None` once the body ended, failed, or was handed to the drain task.
    body: Option<Body>,
    sse: SseParser,
    /// `None` once the response is over (finished or failed).
    decoder: Option<D>,
    queue: VecDeque<Result<LlmEvent, LlmError>>,
    request_id: Option<String>,
    limits: StreamLimits,
    /// When the current wait runs out: the first-token limit from the request, then the idle limit from the last
    /// piece of the answer.
    deadline: Instant,
    /// Pieces of the answer seen so far (see [`StreamDecoder::answer_pieces`]).
    pieces: u64,
}

impl<D: StreamDecoder> Driver<D> {
    async fn next(&mut self) -> Option<Result<LlmEvent, LlmError>> {
        loop {
            if let Some(item) = self.queue.pop_front() {
                return Some(item);
            }
            match &self.decoder {
                None => return None,
                Some(decoder) if decoder.is_done() => self.end(),
                Some(_) => self.read().await,
            }
        }
    }

    /// Waits for the next piece of the body (until the current deadline) and decodes it.
    async fn read(&mut self) {
        let Some(body) = self.body.as_mut() else {
            self.end();
            return;
        };
        match tokio::time::timeout_at(self.deadline, body.next()).await {
            Err(_) => self.fail(self.timeout()),
            Ok(Some(Ok(bytes))) => {
                let events = self.sse.push(&bytes);
                self.decode(events);
            }
            Ok(Some(Err(error))) => {
                self.body = None;
                let detail = format!("the stream was interrupted: {}", describe(&error));
                self.fail(LlmError::Connect { provider: self.provider, detail });
            }
            Ok(None) => {
                self.body = None;
                let events = self.sse.finish();
                self.decode(events);
                self.end();
            }
        }
    }

    /// The error for the wait that ran out: before the answer began, or between two of its pieces.
    fn timeout(&self) -> LlmError {
        if self.pieces == 0 {
            first_token_timeout(self.provider, self.limits)
        } else {
            LlmError::Timeout {
                provider: self.provider,
                millis: millis(self.limits.idle),
                waiting_for: "the next token",
            }
        }
    }

    fn decode(&mut self, events: Vec<SseEvent>) {
        for event in events {
            let Some(decoder) = self.decoder.as_mut() else { return };
            if decoder.is_done() {
                break;
            }
            match decoder.on_event(&event) {
                Ok(deltas) => self.queue.extend(deltas.into_iter().map(Ok)),
                Err(error) => {
                    self.fail(error);
                    return;
                }
            }
        }
        if let Some(pieces) = self.decoder.as_ref().map(StreamDecoder::answer_pieces) {
            if pieces > self.pieces {
                self.pieces = pieces;
                self.deadline = Instant::now() + self.limits.idle;
            }
        }
    }

    /// Queues the end of the response (tool calls and finish, or the truncation error) and lets the rest of the body
    /// drain in the background.
    fn end(&mut self) {
        if let Some(decoder) = self.decoder.take() {
            match decoder.finish(self.request_id.take()) {
                Ok(events) => self.queue.extend(events.into_iter().map(Ok)),
                Err(error) => self.fail(error),
            }
        }
        if let Some(mut body) = self.body.take() {
            tokio::spawn(async move {
                let _ =
                    tokio::time::timeout(DRAIN_AFTER_END, async { while let Some(Ok(_)) = body.next().await {} }).await;
            });
        }
    }

    /// Ends the response with `error`; the body is dropped, which closes the connection.
    fn fail(&mut self, error: LlmError) {
        tracing::debug!(provider = self.provider, %error, "llm stream failed");
        self.decoder = None;
        self.body = None;
        self.queue.push_back(Err(error));
    }
}
