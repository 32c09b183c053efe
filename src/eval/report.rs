//! The evaluation's outputs: a table for the terminal, `report.json` for machines, one waterfall SVG per call.

use std::fmt::Write;
use std::path::Path;

use serde::Serialize;

use super::run::EvalError;
use super::score::ScenarioScore;
use super::waterfall;

/// Every scenario's score, and whether all of them passed.
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    pub passed: bool,
    pub scenarios: Vec<ScenarioScore>,
}

impl EvalReport {
    pub fn new(scenarios: Vec<ScenarioScore>) -> EvalReport {
        EvalReport { passed: scenarios.iter().all(|s| s.passed), scenarios }
    }

    /// Writes `report.json` and `<scenario>.svg` for each call into `out`.
    pub fn write(&self, out: &Path) -> Result<(), EvalError> {
        let write = |name: &str, bytes: &[u8]| {
            let path = out.join(name);
            std::fs::write(&path, bytes).map_err(|source| EvalError::Write { path, source })
        };
        std::fs::create_dir_all(out).map_err(|source| EvalError::Write { path: out.to_owned(), source })?;
        let json = serde_json::to_vec_pretty(self)
            .map_err(|e| EvalError::Write { path: out.join("report.json"), source: std::io::Error::other(e) })?;
        write("report.json", &json)?;
        for scenario in &self.scenarios {
            write(&format!("{}.svg", file_name(&scenario.name)), waterfall::render(scenario).as_bytes())?;
        }
        Ok(())
    }

    /// The summary table, each scenario's lines, and every missed threshold.
    pub fn table(&self) -> String {
        let ms = |v: Option<u64>| v.map_or("–".to_owned(), |v| format!("{v} ms"));
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<24} {:<6} {:>7} {:>9} {:>9} {:>9} {:>6} {:<6}",
            "scenario", "result", "answers", "p50", "p95", "barge-in", "false", "task"
        );
        for s in &self.scenarios {
            let _ = writeln!(
                out,
                "{:<24} {:<6} {:>7} {:>9} {:>9} {:>9} {:>6} {:<6}",
                s.name,
                if s.passed { "pass" } else { "FAIL" },
                s.first_audio_ms.len(),
                ms(s.first_audio_p50_ms),
                ms(s.first_audio_p95_ms),
                ms(s.barge_in_max_ms),
                s.false_interruptions,
                if s.task_success { "ok" } else { "failed" }
            );
        }
        for s in &self.scenarios {
            let _ = writeln!(out, "\n{}:", s.name);
            for line in &s.lines {
                let answer = if line.noise { "(noise)".to_owned() } else { ms(line.answer_after_ms) };
                let cut = line.clear_after_ms.map(|v| format!(" cut the agent off after {v} ms")).unwrap_or_default();
                let _ = writeln!(out, "  {answer:>9}  {:?}{cut}", line.said);
                if !line.reply.is_empty() {
                    let _ = writeln!(out, "             agent: {:?}", line.reply);
                }
            }
            for call in &s.tool_calls {
                let _ = writeln!(out, "  tool {} {} at {} ms", call.name, call.arguments, call.at_ms);
            }
            for failure in &s.failures {
                let _ = writeln!(out, "  ✗ {failure}");
            }
        }
        let verdict = if self.passed { "all scenarios passed" } else { "some scenarios missed their thresholds" };
        let _ = writeln!(out, "\n{verdict}");
        out
    }
}

/// A scenario name as a file name: letters, digits, `-` and `_` kept, anything else `_`.
fn file_name(name: &str) -> String {
    let cleaned: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
    if cleaned.is_empty() {
        "scenario".into()
    } else {
        cleaned
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenario_names_become_safe_file_names() {
        assert_eq!(file_name("order-status"), "order-status");
        assert_eq!(file_name("../etc/passwd"), "___etc_passwd");
        assert_eq!(file_name(""), "scenario");
    }
}
