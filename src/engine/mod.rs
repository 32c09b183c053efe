//! The call/turn engine: the cascade agent and the pieces it is made of.
//!
//! [`cascade`] runs one call; [`turn`] decides end of turn and barge-in; [`vad`] classifies frames on worker threads;
//! [`reply`] streams one LLM answer through the [`chunker`]; [`heard`] works out what the caller heard of an
//! interrupted reply; [`latency`] accounts each turn; [`tools`] is what the engine needs from a tool executor.

pub mod call_control;
pub mod cascade;
pub mod chunker;
pub mod config;
pub mod failover;
pub mod heard;
pub mod keypad;
pub mod latency;
pub mod replay;
pub mod reply;
pub mod tools;
pub mod turn;
pub mod vad;
