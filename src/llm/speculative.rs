//! Speculative replies: a model request started before the caller's turn is certainly over, and used only if it
//! turns out to be exactly the request the finished turn makes.
//!
//! Providers with model-based turn detection (Deepgram Flux) say "probably done" (`EagerEndOfTurn`) some hundreds of
//! milliseconds before "done" (`EndOfTurn`), and "not done after all" (`TurnResumed`) when the caller goes on. On the
//! eager signal the engine [`prefetch`](SpeculativeLlm::prefetch)es the reply's first request; its events are held,
//! never spoken. When the turn ends, the reply asks this wrapper for a stream as it always does: an identical
//! request gets the held events at once and then the rest live — the model's time to first token already spent —
//! while any other request (the caller said more) drops the prefetch and goes to the model fresh. `TurnResumed`
//! [`discard`](SpeculativeLlm::discard)s it. Each prefetch is a real model request and costs what one costs, so they
//! are counted by outcome.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{LanguageModel, LlmError, LlmEvent, LlmRequest, LlmStream};
use crate::telemetry::metrics;

/// What became of a prefetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpeculationOutcome {
    /// The finished turn made the same request: the prefetch became the reply.
    Committed,
    /// The caller resumed speaking.
    Discarded,
    /// The finished turn made a different request (other words, a changed history).
    Mismatched,
}

impl SpeculationOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            SpeculationOutcome::Committed => "committed",
            SpeculationOutcome::Discarded => "discarded",
            SpeculationOutcome::Mismatched => "mismatched",
        }
    }
}

/// How many prefetches ended each way, for one call.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SpeculationCounts {
    pub started: u64,
    pub committed: u64,
    pub discarded: u64,
    pub mismatched: u64,
}

struct Prefetch {
    request: LlmRequest,
    events: mpsc::UnboundedReceiver<Result<LlmEvent, LlmError>>,
    task: JoinHandle<()>,
}

/// One call's model, able to start its next reply early; see the module documentation.
pub struct SpeculativeLlm {
    inner: Arc<dyn LanguageModel>,
    prefetch: Mutex<Option<Prefetch>>,
    counts: Mutex<SpeculationCounts>,
}

impl SpeculativeLlm {
    pub fn new(inner: Arc<dyn LanguageModel>) -> SpeculativeLlm {
        SpeculativeLlm { inner, prefetch: Mutex::new(None), counts: Mutex::new(SpeculationCounts::default()) }
    }

    /// Starts `request` now and holds its events; replaces (and counts as mismatched) any prefetch in flight.
    pub fn prefetch(&self, request: LlmRequest) {
        let (sender, events) = mpsc::unbounded_channel();
        let inner = Arc::clone(&self.inner);
        let sent = request.clone();
        let task = tokio::spawn(async move {
            let mut stream = match inner.stream(sent).await {
                Ok(stream) => stream,
                Err(error) => {
                    let _ = sender.send(Err(error));
                    return;
                }
            };
            while let Some(event) = stream.next().await {
                // The receiver is gone when the prefetch was dropped: stop, which aborts the request.
                if sender.send(event).is_err() {
                    return;
                }
            }
        });
        let previous = self.slot().replace(Prefetch { request, events, task });
        self.count(|c| c.started += 1);
        if let Some(previous) = previous {
            self.end(previous, SpeculationOutcome::Mismatched);
        }
    }

    /// The caller went on speaking: the prefetch is dropped, its request aborted.
    pub fn discard(&self) {
        let taken = self.slot().take();
        if let Some(prefetch) = taken {
            self.end(prefetch, SpeculationOutcome::Discarded);
        }
    }

    /// Whether a prefetch is waiting to be used.
    pub fn has_prefetch(&self) -> bool {
        self.slot().is_some()
    }

    pub fn counts(&self) -> SpeculationCounts {
        *self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Option<Prefetch>> {
        self.prefetch.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn count(&self, update: impl FnOnce(&mut SpeculationCounts)) {
        update(&mut self.counts.lock().unwrap_or_else(|p| p.into_inner()));
    }

    fn end(&self, prefetch: Prefetch, outcome: SpeculationOutcome) {
        if outcome != SpeculationOutcome::Committed {
            prefetch.task.abort();
        }
        self.count(|c| match outcome {
            SpeculationOutcome::Committed => c.committed += 1,
            SpeculationOutcome::Discarded => c.discarded += 1,
            SpeculationOutcome::Mismatched => c.mismatched += 1,
        });
        metrics::global().speculation(outcome.as_str());
        tracing::debug!(outcome = outcome.as_str(), "speculative reply ended");
    }
}

#[async_trait]
impl LanguageModel for SpeculativeLlm {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn model(&self) -> &str {
        self.inner.model()
    }

    async fn stream(&self, request: LlmRequest) -> Result<LlmStream, LlmError> {
        let taken = self.slot().take();
        match taken {
            Some(prefetch) if prefetch.request == request => {
                let Prefetch { events, task, .. } = prefetch;
                self.count(|c| c.committed += 1);
                metrics::global().speculation(SpeculationOutcome::Committed.as_str());
                // The task keeps feeding the channel; dropping the stream drops the receiver, which stops it.
                let stream = futures_util::stream::unfold((events, task), |(mut events, task)| async move {
                    events.recv().await.map(|event| (event, (events, task)))
                });
                Ok(Box::pin(stream))
            }
            Some(prefetch) => {
                self.end(prefetch, SpeculationOutcome::Mismatched);
                self.inner.stream(request).await
            }
            None => self.inner.stream(request).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::llm::{ChatMessage, FinishReason};

    /// Answers every request with its last message's text, and counts requests.
    #[derive(Default)]
    struct Echo {
        requests: AtomicUsize,
    }

    #[async_trait]
    impl LanguageModel for Echo {
        fn name(&self) -> &'static str {
            "echo"
        }
        fn model(&self) -> &str {
            "echo"
        }
        async fn stream(&self, request: LlmRequest) -> Result<LlmStream, LlmError> {
            self.requests.fetch_add(1, Ordering::SeqCst);
            let text = request.messages.last().map(|m| m.content.clone()).unwrap_or_default();
            let events = vec![
                Ok(LlmEvent::TextDelta(text)),
                Ok(LlmEvent::Finished { reason: FinishReason::Stop, usage: None, request_id: None }),
            ];
            Ok(Box::pin(futures_util::stream::iter(events)))
        }
    }

    fn request(text: &str) -> LlmRequest {
        LlmRequest { messages: vec![ChatMessage::user(text)], tools: Vec::new() }
    }

    async fn text(stream: LlmStream) -> String {
        stream
            .filter_map(|e| async move {
                match e {
                    Ok(LlmEvent::TextDelta(t)) => Some(t),
                    _ => None,
                }
            })
            .collect::<Vec<_>>()
            .await
            .concat()
    }

    #[tokio::test]
    async fn the_same_request_uses_the_prefetch_without_asking_the_model_again() {
        let model = Arc::new(Echo::default());
        let speculative = SpeculativeLlm::new(model.clone());
        speculative.prefetch(request("book a table"));
        tokio::task::yield_now().await;
        let stream = speculative.stream(request("book a table")).await.unwrap();
        assert_eq!(text(stream).await, "book a table");
        assert_eq!(model.requests.load(Ordering::SeqCst), 1);
        assert_eq!(speculative.counts(), SpeculationCounts { started: 1, committed: 1, ..Default::default() });
    }

    #[tokio::test]
    async fn a_different_request_goes_to_the_model_fresh() {
        let model = Arc::new(Echo::default());
        let speculative = SpeculativeLlm::new(model.clone());
        speculative.prefetch(request("book a table"));
        let stream = speculative.stream(request("book a table for two")).await.unwrap();
        assert_eq!(text(stream).await, "book a table for two");
        assert_eq!(speculative.counts(), SpeculationCounts { started: 1, mismatched: 1, ..Default::default() });
        assert!(!speculative.has_prefetch());
    }

    #[tokio::test]
    async fn a_discarded_prefetch_is_never_used() {
        let model = Arc::new(Echo::default());
        let speculative = SpeculativeLlm::new(model.clone());
        speculative.prefetch(request("book"));
        speculative.discard();
        let stream = speculative.stream(request("book")).await.unwrap();
        assert_eq!(text(stream).await, "book");
        assert_eq!(speculative.counts(), SpeculationCounts { started: 1, discarded: 1, ..Default::default() });
    }
}
