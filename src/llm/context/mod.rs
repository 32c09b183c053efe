//! The context budget: the most the model is sent per turn, on calls of any length.
//!
//! Without a budget every request carries the whole call, so on a long call the time to first token and the cost
//! grow with every turn. [`ContextWindow`] keeps what is sent under [`ContextConfig::max_tokens`]: the system prompt,
//! the tool list and the last [`ContextConfig::keep_last_turns`] caller turns always stay; older turns leave first.
//! When turns leave, the answered tool results of every turn but the newest are shortened to what the answer used
//! ([`shorten`]); what leaves can be folded into a short running summary ([`summary`]) that the model writes between
//! turns, never while a caller waits.
//!
//! The window is made for prompt caches. Providers cache a request's prefix (OpenAI-compatible servers
//! automatically, Anthropic at `cache_control` breakpoints), so the messages sent on one turn must begin with the
//! bytes sent on the turn before. The window therefore never moves one turn at a time: it grows by appending until
//! it passes the budget, then drops down to [`ContextConfig::trim_to_percent`] of it in one step, after which the
//! prefix is stable again for many turns. Folding starts early, between turns, once the window passes
//! [`FOLD_EARLY_PERCENT`] of the budget, so the summary is usually ready before the budget forces anything.
//!
//! Tokens are counted by [`tokens::TokenCounter`]; counts of messages already seen are kept, so the check before a
//! request counts only what is new.

pub mod shorten;
pub mod summary;
pub mod tokens;

use serde::Deserialize;

use self::shorten::shorten_answered_result;
use self::summary::{summary_message, SummaryRequest};
use self::tokens::TokenCounter;
use super::{ChatMessage, Role, ToolSpec};
use crate::text::prefix_chars;

/// Share of the budget at which the window starts folding between turns.
pub const FOLD_EARLY_PERCENT: u32 = 85;

/// A fold between turns must free at least this share of the budget (percent), or it waits: when the last turns
/// alone nearly fill the budget, folding the one turn that just left them on every turn would change the prefix
/// (and cost a summary) on every turn for little.
pub const FOLD_MIN_GAIN_PERCENT: u32 = 20;

/// `[conversation.context]`: how much of the call the model is sent.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ContextConfig {
    /// The most tokens one request may carry: system prompt, summary, tools and history. 0 sends the whole call.
    pub max_tokens: u32,
    /// When the window passes the budget, older turns leave until it is under this share of it (percent).
    pub trim_to_percent: u32,
    /// The caller's latest turns (with the replies and tool rounds after them) that always stay whole.
    pub keep_last_turns: usize,
    /// Fold the turns that leave into a running summary written by the model between turns.
    pub summary: bool,
    /// The longest summary kept, in characters.
    pub summary_max_chars: usize,
    /// When turns leave, answered tool results of every turn but the newest are cut to this many characters.
    pub answered_tool_result_chars: usize,
    /// How tokens are counted: with the model's own tokenizer where Parley has it (exact; OpenAI's o200k table costs
    /// about 45 MiB of memory per process and a quarter of a second at start-up), or by the estimate.
    pub count_with: TokenCounting,
}

/// [`ContextConfig::count_with`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenCounting {
    #[default]
    Tokenizer,
    Estimate,
}

impl Default for ContextConfig {
    fn default() -> Self {
        ContextConfig {
            max_tokens: 6_000,
            trim_to_percent: 60,
            keep_last_turns: 4,
            summary: true,
            summary_max_chars: 1_500,
            answered_tool_result_chars: 300,
            count_with: TokenCounting::Tokenizer,
        }
    }
}

/// A fold the engine should have summarised, off the hot path: run `request`, then hand the text to
/// [`ContextWindow::summary_ready`] with `id`.
#[derive(Debug, Clone, PartialEq)]
pub struct Fold {
    pub id: u64,
    pub request: SummaryRequest,
}

/// Where the window will start once a fold is applied, and which messages stay whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FoldPlan {
    new_start: usize,
    /// The newest caller turn's first message: from it on, nothing is shortened.
    whole_from: usize,
    /// Tokens the request comes to once the fold is applied (with room for the new summary).
    tokens_after: u64,
}

/// What of one call's history the model is sent; see the module documentation.
#[derive(Debug)]
pub struct ContextWindow {
    config: ContextConfig,
    counter: TokenCounter,
    /// The first history message sent after the system prompt (`history[0]`, always sent).
    start: usize,
    summary: Option<String>,
    /// A fold whose summary is being written: its id and plan.
    pending: Option<(u64, FoldPlan)>,
    next_fold: u64,
    /// The fold the current summary was written for (later folds cover more of the call).
    summary_fold: u64,
    /// Token counts of history messages already counted, by index, with the content length they were counted at.
    counts: Vec<(usize, u32)>,
    /// The tool list's tokens, with the length of the JSON they were counted from.
    tools_count: Option<(usize, u32)>,
}

impl ContextWindow {
    pub fn new(config: ContextConfig, counter: TokenCounter) -> ContextWindow {
        ContextWindow {
            config,
            counter,
            start: 1,
            summary: None,
            pending: None,
            next_fold: 1,
            summary_fold: 0,
            counts: Vec::new(),
            tools_count: None,
        }
    }

    /// The running summary, when one has been written.
    pub fn summary(&self) -> Option<&str> {
        self.summary.as_deref()
    }

    /// The messages of the next request: the system prompt, the summary, then the window.
    pub fn messages(&self, history: &[ChatMessage]) -> Vec<ChatMessage> {
        let mut messages = Vec::with_capacity(history.len().saturating_sub(self.start) + 2);
        messages.extend(history.first().cloned());
        messages.extend(self.summary.as_deref().map(summary_message));
        messages.extend(history.iter().skip(self.start.max(1)).cloned());
        messages
    }

    /// Tokens of the request [`Self::messages`] would make, with these tools.
    pub fn tokens(&mut self, history: &[ChatMessage], tools: &[ToolSpec]) -> u32 {
        let fixed = self.fixed_tokens(history, tools);
        fixed + (self.start.max(1)..history.len()).map(|index| self.count(history, index)).sum::<u32>()
    }

    /// Before a request: when the window passes the budget, older turns leave now. Returns the fold to summarise
    /// when turns left without one.
    pub fn fit(&mut self, history: &mut [ChatMessage], tools: &[ToolSpec]) -> Option<Fold> {
        if self.config.max_tokens == 0 || self.tokens(history, tools) <= self.config.max_tokens {
            return None;
        }
        let plan = self.plan(history, tools)?;
        let folded_from = self.start;
        self.apply(history, plan);
        if !self.config.summary {
            return None;
        }
        // A fold already being summarised covers less than this one: its summary is superseded.
        self.pending = None;
        let id = self.take_fold_id();
        tracing::debug!(from = folded_from, to = plan.new_start, "context budget reached: older turns left the window");
        Some(Fold { id, request: SummaryRequest::new(self.summary.as_deref(), &history[folded_from..plan.new_start]) })
    }

    /// Between turns: once the window passes [`FOLD_EARLY_PERCENT`] of the budget, start folding its oldest turns.
    /// With the summary on they stay until it is ready ([`Self::summary_ready`]); without, they leave now.
    pub fn between_turns(&mut self, history: &mut [ChatMessage], tools: &[ToolSpec]) -> Option<Fold> {
        let budget = u64::from(self.config.max_tokens);
        let now = u64::from(self.tokens(history, tools));
        if budget == 0 || self.pending.is_some() || now <= budget * u64::from(FOLD_EARLY_PERCENT) / 100 {
            return None;
        }
        let plan = self.plan(history, tools)?;
        if now.saturating_sub(plan.tokens_after) < budget * u64::from(FOLD_MIN_GAIN_PERCENT) / 100 {
            return None;
        }
        if !self.config.summary {
            self.apply(history, plan);
            return None;
        }
        let id = self.take_fold_id();
        self.pending = Some((id, plan));
        Some(Fold { id, request: SummaryRequest::new(self.summary.as_deref(), &history[self.start..plan.new_start]) })
    }

    /// A fold's summary arrived (`None`: writing it failed). The folded turns leave the window now, if they have not
    /// already. A summary of a superseded fold is kept when it is the newest account of the call so far; one that
    /// arrives after a later fold's summary is not.
    pub fn summary_ready(&mut self, history: &mut [ChatMessage], id: u64, summary: Option<String>) {
        let text = summary.map(|text| text.trim().to_owned()).filter(|text| !text.is_empty());
        if let Some(text) = text.filter(|_| id > self.summary_fold) {
            self.summary = Some(prefix_chars(&text, self.config.summary_max_chars).to_owned());
            self.summary_fold = id;
        }
        if let Some((pending, plan)) = self.pending {
            if pending == id {
                self.pending = None;
                self.apply(history, plan);
            }
        }
    }

    fn take_fold_id(&mut self) -> u64 {
        let id = self.next_fold;
        self.next_fold += 1;
        id
    }

    /// Tokens always sent: the system prompt, the summary (and room for the next one) and the tools.
    fn fixed_tokens(&mut self, history: &[ChatMessage], tools: &[ToolSpec]) -> u32 {
        let system = if history.is_empty() { 0 } else { self.count(history, 0) };
        let summary = self.summary.as_deref().map_or(0, |text| self.counter.message(&summary_message(text)));
        system + summary + self.tools_tokens(tools)
    }

    /// The tool list's tokens, counted again only when the list changed.
    fn tools_tokens(&mut self, tools: &[ToolSpec]) -> u32 {
        if tools.is_empty() {
            return 0;
        }
        let json = serde_json::to_string(tools).unwrap_or_default();
        match self.tools_count {
            Some((length, tokens)) if length == json.len() => tokens,
            _ => {
                let tokens = self.counter.text(&json);
                self.tools_count = Some((json.len(), tokens));
                tokens
            }
        }
    }

    /// Where the window should start for the request to fit `trim_to_percent` of the budget, keeping the last
    /// turns; `None` when no turn can leave.
    fn plan(&mut self, history: &[ChatMessage], tools: &[ToolSpec]) -> Option<FoldPlan> {
        let turn_starts: Vec<usize> =
            (self.start.max(1)..history.len()).filter(|&index| history[index].role == Role::User).collect();
        let keep = self.config.keep_last_turns.max(1);
        let keep_from = *turn_starts.get(turn_starts.len().checked_sub(keep)?)?;
        let whole_from = turn_starts.last().copied().unwrap_or(keep_from);
        let target = u64::from(self.config.max_tokens) * u64::from(self.config.trim_to_percent.min(100)) / 100;
        // Room for the summary the fold will write, estimated at its longest, beyond the current one's tokens.
        let summary_room = if self.config.summary {
            let longest = self.config.summary_max_chars.div_ceil(tokens::ESTIMATE_BYTES_PER_TOKEN) as u64;
            let current = self.summary.as_deref().map_or(0, |text| u64::from(self.counter.text(text)));
            longest.saturating_sub(current)
        } else {
            0
        };
        let fixed = u64::from(self.fixed_tokens(history, tools)) + summary_room;
        let newest: u64 = (whole_from..history.len()).map(|index| u64::from(self.count(history, index))).sum();
        // Tokens of each message from the window's start to the newest turn, once shortened.
        let shortened: Vec<u64> =
            (self.start.max(1)..whole_from).map(|index| u64::from(self.shortened_count(history, index))).collect();
        let offset = self.start.max(1);
        let after = |start: usize| fixed + newest + shortened[start - offset..].iter().sum::<u64>();
        let new_start = turn_starts
            .iter()
            .copied()
            .filter(|&start| start > offset && start <= keep_from)
            .find(|&start| after(start) <= target)
            .unwrap_or(keep_from);
        (new_start > self.start).then(|| FoldPlan { new_start, whole_from, tokens_after: after(new_start) })
    }

    /// Moves the window's start and shortens the answered tool results of every turn but the newest.
    fn apply(&mut self, history: &mut [ChatMessage], plan: FoldPlan) {
        for index in plan.new_start..plan.whole_from.min(history.len()) {
            if let Some(short) = self.shortened(history, index) {
                history[index].content = short;
            }
        }
        self.start = self.start.max(plan.new_start);
    }

    /// The shortened text of an answered tool result, when shortening changes it.
    fn shortened(&self, history: &[ChatMessage], index: usize) -> Option<String> {
        let message = &history[index];
        if message.role != Role::Tool {
            return None;
        }
        let answer = history[index + 1..]
            .iter()
            .take_while(|later| later.role != Role::User)
            .find(|later| later.role == Role::Assistant && !later.content.is_empty())?;
        let short = shorten_answered_result(&message.content, &answer.content, self.config.answered_tool_result_chars);
        (short != message.content).then_some(short)
    }

    fn shortened_count(&mut self, history: &[ChatMessage], index: usize) -> u32 {
        match self.shortened(history, index) {
            Some(short) => self.counter.message(&ChatMessage { content: short, ..history[index].clone() }),
            None => self.count(history, index),
        }
    }

    /// A message's tokens, counted once per content length (messages only grow by the caller's words being appended
    /// or shrink by being shortened, both of which change the length).
    fn count(&mut self, history: &[ChatMessage], index: usize) -> u32 {
        let message = &history[index];
        let key = message.content.len() + message.tool_calls.len();
        if self.counts.len() <= index {
            self.counts.resize(index + 1, (usize::MAX, 0));
        }
        let (counted_at, tokens) = self.counts[index];
        if counted_at == key {
            return tokens;
        }
        let tokens = self.counter.message(message);
        self.counts[index] = (key, tokens);
        tokens
    }
}

#[cfg(test)]
mod tests;
