//! Counting what a request will cost in tokens before it is sent.
//!
//! OpenAI's models are counted with their own tokenizer (`tiktoken-rs`, picked from the model name the way OpenAI's
//! `tiktoken` does). For every other model (Anthropic's, whose tokenizer is not public, and self-hosted ones) the
//! count is an estimate: one token per three bytes of text, rounded up. English prose runs near four bytes per token
//! and JSON near three, so the estimate errs high and a budget set in tokens holds.
//!
//! Each message also costs a few tokens of framing (its role, the separators), counted as
//! [`MESSAGE_OVERHEAD`] — the figure OpenAI documents for its chat format.

use tiktoken_rs::tokenizer::{get_tokenizer, Tokenizer};
use tiktoken_rs::CoreBPE;

use crate::llm::{ChatMessage, ToolSpec};

/// Tokens of framing per message (role and separators).
pub const MESSAGE_OVERHEAD: u32 = 4;

/// Bytes per token of the estimate used where no tokenizer is known.
pub const ESTIMATE_BYTES_PER_TOKEN: usize = 3;

/// How a request's tokens are counted.
#[derive(Clone, Copy)]
pub enum TokenCounter {
    /// The model family's byte-pair encoding.
    Bpe(&'static CoreBPE),
    /// [`ESTIMATE_BYTES_PER_TOKEN`].
    Estimate,
}

impl std::fmt::Debug for TokenCounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TokenCounter::Bpe(_) => "TokenCounter::Bpe",
            TokenCounter::Estimate => "TokenCounter::Estimate",
        })
    }
}

impl TokenCounter {
    /// The counter for a model name. Loading a tokenizer takes a fraction of a second and some megabytes, once per
    /// process: call this when the server starts, never on a call's hot path.
    pub fn for_model(model: &str) -> TokenCounter {
        match get_tokenizer(model) {
            Some(Tokenizer::O200kBase | Tokenizer::O200kHarmony) => {
                TokenCounter::Bpe(tiktoken_rs::o200k_base_singleton())
            }
            Some(Tokenizer::Cl100kBase) => TokenCounter::Bpe(tiktoken_rs::cl100k_base_singleton()),
            _ => TokenCounter::Estimate,
        }
    }

    /// The counter a context configuration asks for: none is loaded when there is no budget to count against.
    pub fn for_context(context: &super::ContextConfig, model: &str) -> TokenCounter {
        if context.max_tokens == 0 || context.count_with == super::TokenCounting::Estimate {
            return TokenCounter::Estimate;
        }
        TokenCounter::for_model(model)
    }

    /// Whether counts come from the model's own tokenizer.
    pub fn is_exact(&self) -> bool {
        matches!(self, TokenCounter::Bpe(_))
    }

    /// Tokens of a text.
    pub fn text(&self, text: &str) -> u32 {
        let count = match self {
            TokenCounter::Bpe(bpe) => bpe.encode_ordinary(text).len(),
            TokenCounter::Estimate => text.len().div_ceil(ESTIMATE_BYTES_PER_TOKEN),
        };
        u32::try_from(count).unwrap_or(u32::MAX)
    }

    /// Tokens of one message: its text, its tool calls (name and arguments) and the framing.
    pub fn message(&self, message: &ChatMessage) -> u32 {
        let calls: u32 = message
            .tool_calls
            .iter()
            .map(|call| self.text(&call.name) + self.text(&call.arguments) + MESSAGE_OVERHEAD)
            .sum();
        MESSAGE_OVERHEAD + self.text(&message.content) + calls
    }

    /// Tokens of the tool definitions, counted as the JSON they are sent as.
    pub fn tools(&self, tools: &[ToolSpec]) -> u32 {
        if tools.is_empty() {
            return 0;
        }
        self.text(&serde_json::to_string(tools).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_models_get_their_tokenizer_and_others_the_estimate() {
        assert!(TokenCounter::for_model("gpt-4o-mini").is_exact());
        assert!(TokenCounter::for_model("gpt-4.1").is_exact());
        assert!(!TokenCounter::for_model("claude-haiku-4-5").is_exact());
        assert!(!TokenCounter::for_model("llama-3.1-8b-instruct").is_exact());
    }

    #[test]
    fn no_tokenizer_is_loaded_without_a_budget_or_when_the_estimate_is_asked_for() {
        use super::super::{ContextConfig, TokenCounting};
        let budget = ContextConfig::default();
        assert!(TokenCounter::for_context(&budget, "gpt-4o-mini").is_exact());
        assert!(
            !TokenCounter::for_context(&ContextConfig { max_tokens: 0, ..budget.clone() }, "gpt-4o-mini").is_exact()
        );
        let estimate = ContextConfig { count_with: TokenCounting::Estimate, ..budget };
        assert!(!TokenCounter::for_context(&estimate, "gpt-4o-mini").is_exact());
    }

    #[test]
    fn the_tokenizer_counts_words_and_the_estimate_errs_high() {
        let text = "Your order 456 shipped on Monday and arrives on Friday.";
        let exact = TokenCounter::for_model("gpt-4o-mini").text(text);
        assert!((10..=16).contains(&exact), "{exact}");
        let estimate = TokenCounter::Estimate.text(text);
        assert_eq!(estimate as usize, text.len().div_ceil(3));
        assert!(estimate > exact);
    }

    #[test]
    fn a_message_counts_its_calls_and_framing() {
        let counter = TokenCounter::Estimate;
        let call = crate::llm::ToolCall { id: "c1".into(), name: "lookup".into(), arguments: "{\"id\":1}".into() };
        let plain = counter.message(&ChatMessage::assistant("Let me check."));
        let with_call =
            counter.message(&ChatMessage { tool_calls: vec![call], ..ChatMessage::assistant("Let me check.") });
        assert_eq!(plain, MESSAGE_OVERHEAD + 5);
        assert_eq!(with_call, plain + 2 + 3 + MESSAGE_OVERHEAD);
    }
}
