//! What a call cost: usage counted as the call goes, priced by the configuration's table when it ends.
//!
//! Usage comes from what the providers report (the model's prompt, cached and output tokens) or what Parley sent
//! (seconds of caller audio streamed to speech-to-text, characters sent to text-to-speech), and the call's length for
//! the phone line. Prices are the operator's (`[cost]`): Parley ships none, since they differ by plan and change; a
//! stage without a price costs 0 and says so (`priced: false`). The result goes into the call's `metadata.json`, onto
//! the call's span, into the `parley_call_cost` metric, and into `parley archive list/show` and the call viewer.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `[cost]`: prices per provider and model.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PriceTable {
    /// The currency the prices are in (only a label; nothing is converted).
    pub currency: String,
    /// Twilio's price per minute of the call, each started minute counted whole as Twilio bills it.
    pub twilio_per_minute: Option<f64>,
    /// Speech-to-text, per minute of audio streamed, by provider (`deepgram`, `deepgram_flux`, `whisper`).
    pub stt_per_minute: BTreeMap<String, f64>,
    /// Text-to-speech, per thousand characters sent, by provider (`cartesia`, `elevenlabs`, `openai_speech`, `espeak`).
    pub tts_per_thousand_chars: BTreeMap<String, f64>,
    /// The model, per million tokens, by model name (`gpt-4o-mini`) or, failing that, provider (`openai`).
    pub llm: BTreeMap<String, TokenPrices>,
}

/// A model's prices per million tokens.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenPrices {
    pub input_per_million: f64,
    /// Prompt tokens read from the provider's cache; unset charges them as `input_per_million`.
    pub cached_input_per_million: Option<f64>,
    pub output_per_million: f64,
}

/// One model's tokens on a call.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelUsage {
    pub provider: String,
    pub model: String,
    /// Every prompt token, cached or not.
    pub input_tokens: u64,
    pub cached_input_tokens: u64,
    pub output_tokens: u64,
}

/// What a call used, counted as it went.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CallUsage {
    pub call_seconds: f64,
    pub stt_provider: String,
    /// Seconds of caller audio streamed to speech-to-text.
    pub stt_seconds: f64,
    pub tts_provider: String,
    /// Characters sent to text-to-speech.
    pub tts_characters: u64,
    /// Tokens per model (replies, tool rounds and running summaries).
    pub llm: Vec<ModelUsage>,
}

impl CallUsage {
    /// Adds one model request's tokens.
    pub fn add_tokens(&mut self, provider: &str, model: &str, usage: &crate::llm::Usage) {
        let entry = match self.llm.iter_mut().position(|m| m.model == model && m.provider == provider) {
            Some(at) => &mut self.llm[at],
            None => {
                self.llm.push(ModelUsage { provider: provider.into(), model: model.into(), ..ModelUsage::default() });
                let last = self.llm.len() - 1;
                &mut self.llm[last]
            }
        };
        entry.input_tokens += usage.input_tokens;
        entry.cached_input_tokens += usage.cached_input_tokens;
        entry.output_tokens += usage.output_tokens;
    }
}

/// A call's cost by stage, in `currency`, with the usage it was priced from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CallCost {
    pub currency: String,
    pub stt: f64,
    pub llm: f64,
    pub tts: f64,
    pub twilio: f64,
    pub total: f64,
    /// Whether every stage that was used had a price (false: some stage counted as 0).
    pub priced: bool,
    pub usage: CallUsage,
}

impl PriceTable {
    /// Whether any price is set (no table: no cost is reported).
    pub fn is_set(&self) -> bool {
        self.twilio_per_minute.is_some()
            || !self.stt_per_minute.is_empty()
            || !self.tts_per_thousand_chars.is_empty()
            || !self.llm.is_empty()
    }

    /// Prices a call's usage.
    pub fn cost(&self, usage: &CallUsage) -> CallCost {
        let mut priced = true;
        let mut price = |found: Option<f64>, used: bool| {
            if found.is_none() && used {
                priced = false;
            }
            found.unwrap_or(0.0)
        };
        let stt_rate = price(self.stt_per_minute.get(&usage.stt_provider).copied(), usage.stt_seconds > 0.0);
        let stt = usage.stt_seconds / 60.0 * stt_rate;
        let tts_rate = price(self.tts_per_thousand_chars.get(&usage.tts_provider).copied(), usage.tts_characters > 0);
        let tts = usage.tts_characters as f64 / 1000.0 * tts_rate;
        let started_minutes = (usage.call_seconds / 60.0).ceil();
        let twilio = started_minutes * price(self.twilio_per_minute, usage.call_seconds > 0.0);
        let mut llm = 0.0;
        for model in &usage.llm {
            let prices = self.llm.get(&model.model).or_else(|| self.llm.get(&model.provider));
            let used = model.input_tokens + model.output_tokens > 0;
            let Some(prices) = prices else {
                price(None, used);
                continue;
            };
            let cached_rate = prices.cached_input_per_million.unwrap_or(prices.input_per_million);
            let uncached = model.input_tokens.saturating_sub(model.cached_input_tokens) as f64;
            llm += (uncached * prices.input_per_million
                + model.cached_input_tokens as f64 * cached_rate
                + model.output_tokens as f64 * prices.output_per_million)
                / 1e6;
        }
        CallCost {
            currency: self.currency.clone(),
            stt,
            llm,
            tts,
            twilio,
            total: stt + llm + tts + twilio,
            priced,
            usage: usage.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> PriceTable {
        PriceTable {
            currency: "USD".into(),
            twilio_per_minute: Some(0.0085),
            stt_per_minute: BTreeMap::from([("deepgram".into(), 0.0077)]),
            tts_per_thousand_chars: BTreeMap::from([("cartesia".into(), 0.03)]),
            llm: BTreeMap::from([(
                "gpt-4o-mini".into(),
                TokenPrices { input_per_million: 0.15, cached_input_per_million: Some(0.075), output_per_million: 0.6 },
            )]),
        }
    }

    fn usage() -> CallUsage {
        let mut usage = CallUsage {
            call_seconds: 90.0,
            stt_provider: "deepgram".into(),
            stt_seconds: 90.0,
            tts_provider: "cartesia".into(),
            tts_characters: 2_000,
            llm: Vec::new(),
        };
        let tokens = crate::llm::Usage {
            input_tokens: 10_000,
            cached_input_tokens: 4_000,
            output_tokens: 500,
            cache_write_input_tokens: 0,
        };
        usage.add_tokens("openai", "gpt-4o-mini", &tokens);
        usage.add_tokens("openai", "gpt-4o-mini", &tokens);
        usage
    }

    #[test]
    fn each_stage_is_priced_from_its_usage() {
        let cost = table().cost(&usage());
        let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
        assert!(close(cost.stt, 1.5 * 0.0077), "{cost:?}");
        assert!(close(cost.tts, 2.0 * 0.03), "{cost:?}");
        assert!(close(cost.twilio, 2.0 * 0.0085), "a minute and a half is billed as two: {cost:?}");
        let llm = (12_000.0 * 0.15 + 8_000.0 * 0.075 + 1_000.0 * 0.6) / 1e6;
        assert!(close(cost.llm, llm), "{cost:?}");
        assert!(close(cost.total, cost.stt + cost.tts + cost.twilio + cost.llm));
        assert!(cost.priced);
        assert_eq!(cost.usage.llm[0].input_tokens, 20_000, "two requests add up");
    }

    #[test]
    fn a_stage_without_a_price_counts_as_zero_and_is_flagged() {
        let mut usage = usage();
        usage.tts_provider = "elevenlabs".into();
        let cost = table().cost(&usage);
        assert_eq!(cost.tts, 0.0);
        assert!(!cost.priced);
        assert!(!PriceTable::default().is_set());
    }
}
