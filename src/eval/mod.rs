//! Evaluation: replay callers' audio through a running Parley and score what came back.
//!
//! A scenario file names a caller's recorded lines and what should happen — the tools the agent must call with which
//! arguments, words its answers must contain, interruptions it must (or must not) yield to — plus the thresholds a
//! deploy is gated on. `parley eval` plays each scenario as Twilio would ([`caller`], [`dialogue`]), reads the call
//! back from the archive, scores it ([`score`]) and writes a table, a JSON report and a latency waterfall per call
//! ([`waterfall`]).

pub mod archived;
pub mod caller;
pub mod dialogue;
pub mod replay;
pub mod report;
pub mod run;
pub mod scenario;
pub mod score;
pub mod waterfall;

pub use report::EvalReport;
pub use run::{run, Assembly, AssemblyError, EvalArgs, EvalError};
pub use scenario::Scenario;
