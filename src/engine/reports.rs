//! What the engine's own tasks report back — provider links, replies, the turn model, running summaries — in one
//! queue.
//!
//! The engine's loop polls each of its inputs whenever it wakes, fifty times a second for the caller's frames alone;
//! an input that is empty still costs a poll (and, with hundreds of calls, a cache miss). These reports are rare next
//! to the frames, so they share one queue: one poll covers them all.

use tokio::sync::mpsc;

use super::conversation::WrittenSummary;
use super::links::LinkEvent;
use super::reply::ReplyEvent;
use crate::turn_model::TurnJudgement;

/// One report to the engine.
pub enum Report {
    /// From the STT or TTS link.
    Link(LinkEvent),
    /// From the reply with this id.
    Reply(u64, ReplyEvent),
    /// A running summary written for this fold.
    Summary(u64, WrittenSummary),
    /// The turn model's answer for this pause (`None` when it failed).
    Judgement(u64, Option<TurnJudgement>),
}

/// The engine is gone; nobody reads reports any more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineGone;

/// Reports one kind of event into the engine's queue; what a task holds instead of the whole queue.
pub struct Reporter<T> {
    queue: mpsc::UnboundedSender<Report>,
    wrap: fn(T) -> Report,
}

impl<T> Clone for Reporter<T> {
    fn clone(&self) -> Self {
        Reporter { queue: self.queue.clone(), wrap: self.wrap }
    }
}

impl<T> Reporter<T> {
    /// A reporter that wraps its events with `wrap`.
    pub fn new(queue: mpsc::UnboundedSender<Report>, wrap: fn(T) -> Report) -> Self {
        Reporter { queue, wrap }
    }

    /// Queues `event` for the engine; never waits.
    pub fn send(&self, event: T) -> Result<(), EngineGone> {
        self.queue.send((self.wrap)(event)).map_err(|_| EngineGone)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_of_report_arrives_in_the_one_queue_in_the_order_sent() {
        let (queue, mut reports) = mpsc::unbounded_channel();
        let judgements = Reporter::new(queue.clone(), |(id, judgement)| Report::Judgement(id, judgement));
        let summaries = Reporter::new(queue, |(fold, summary)| Report::Summary(fold, summary));
        judgements.send((7, None)).expect("engine is there");
        summaries.send((3, WrittenSummary { text: None, usage: None })).expect("engine is there");
        assert!(matches!(reports.try_recv(), Ok(Report::Judgement(7, None))));
        assert!(matches!(reports.try_recv(), Ok(Report::Summary(3, _))));
        drop(reports);
        assert_eq!(judgements.send((8, None)), Err(EngineGone));
    }
}
