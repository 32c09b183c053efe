//! The echo agent: plays the caller's audio back after a delay, with a mark after each second of it.
//!
//! It exercises the whole Twilio edge (inbound queue, playout pacing, marks) without any provider.

use std::collections::VecDeque;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::time::Instant;

use super::agent::{Agent, AgentContext, AgentFactory, CallEvent};
use super::CallInfo;

/// Frames between marks: one second of audio.
const FRAMES_PER_MARK: u64 = 50;

/// Builds [`EchoAgent`]s.
pub struct EchoFactory {
    pub delay: Duration,
}

impl AgentFactory for EchoFactory {
    fn create(&self, _call: &CallInfo) -> Box<dyn Agent> {
        Box::new(EchoAgent { delay: self.delay })
    }
}

/// Plays back what it hears, `delay` later.
pub struct EchoAgent {
    delay: Duration,
}

#[async_trait]
impl Agent for EchoAgent {
    async fn run(self: Box<Self>, mut ctx: AgentContext) {
        let mut delayed: VecDeque<(Instant, Bytes)> = VecDeque::new();
        let mut frames_played = 0u64;
        loop {
            let due = delayed.front().map(|(at, _)| *at);
            tokio::select! {
                event = ctx.events.recv() => match event {
                    Some(CallEvent::Audio(frame)) => delayed.push_back((Instant::now() + self.delay, frame)),
                    Some(CallEvent::Dtmf(digit)) => tracing::info!(?digit, "caller pressed a key"),
                    // The caller is gone: nobody would hear the rest.
                    Some(CallEvent::Hangup) | None => break,
                },
                () = async { if let Some(at) = due { tokio::time::sleep_until(at).await } }, if due.is_some() => {
                    let now = Instant::now();
                    while delayed.front().is_some_and(|(at, _)| *at <= now) {
                        let Some((_, frame)) = delayed.pop_front() else { break };
                        ctx.playout.play(frame);
                        frames_played += 1;
                        if frames_played.is_multiple_of(FRAMES_PER_MARK) {
                            ctx.playout.mark(format!("echo-{}", frames_played / FRAMES_PER_MARK));
                        }
                    }
                }
            }
        }
    }
}
