//! Provider sections of the config file: which provider serves each stage, and its settings.
//!
//! Every setting is optional; an unset one keeps the client's own default. API keys are never in the file: each
//! section names the environment variable that holds its key.
//!
//! Each provider owns its settings type (`DeepgramSettings` in `stt::deepgram`, …), which turns itself into its
//! client's configuration (`client_config`), reading its key from the environment and naming every missing key or
//! setting, so `parley check` and `parley serve` judge a section by the same code. This file only says which
//! provider serves each stage.

use std::time::Duration;

use serde::Deserialize;

pub use crate::llm::anthropic::AnthropicSettings;
pub use crate::llm::openai::OpenAiSettings;
pub use crate::settings::SettingsError;
pub use crate::stt::deepgram::DeepgramSettings;
pub use crate::stt::deepgram_flux::DeepgramFluxSettings;
pub use crate::tts::cartesia::CartesiaSettings;
pub use crate::tts::elevenlabs::ElevenLabsSettings;
pub use crate::tts::openai_speech::OpenAiSpeechSettings;

/// `[stt]`: streaming speech-to-text.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SttSection {
    pub provider: SttProvider,
    /// Providers tried, in order, when `provider` cannot be reached (each uses its own section's settings).
    pub fallback: Vec<SttProvider>,
    pub deepgram: DeepgramSettings,
    pub deepgram_flux: DeepgramFluxSettings,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SttProvider {
    #[default]
    Deepgram,
    /// Deepgram Flux (`/v2/listen`): turn detection built into the model.
    #[serde(rename = "deepgram_flux")]
    DeepgramFlux,
    /// Whisper on this machine (`[local.whisper]`): no account, no network.
    Whisper,
}

/// `[llm]`: the chat model.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LlmSection {
    pub provider: LlmProvider,
    /// Models tried, in order, when `provider` cannot be reached, times out or answers 5xx/429.
    pub fallback: Vec<LlmProvider>,
    /// Longest wait from the request to the model's first token, for every model of the list; unset keeps
    /// [`crate::llm::DEFAULT_FIRST_TOKEN_TIMEOUT`]. The caller hears this wait as silence.
    pub first_token_timeout_ms: Option<u64>,
    /// Longest silence between two tokens once the answer has started; unset keeps
    /// [`crate::llm::DEFAULT_IDLE_TIMEOUT`].
    pub idle_timeout_ms: Option<u64>,
    pub openai: OpenAiSettings,
    pub anthropic: AnthropicSettings,
    /// A larger model for hard turns, and when a turn goes to it (`[llm.route]`).
    pub route: crate::llm::routing::RouteRules,
}

impl LlmSection {
    /// The first-token limit every model of the list gets.
    pub fn first_token_timeout(&self) -> Duration {
        self.first_token_timeout_ms.map_or(crate::llm::DEFAULT_FIRST_TOKEN_TIMEOUT, Duration::from_millis)
    }

    /// The idle limit every model of the list gets.
    pub fn idle_timeout(&self) -> Duration {
        self.idle_timeout_ms.map_or(crate::llm::DEFAULT_IDLE_TIMEOUT, Duration::from_millis)
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LlmProvider {
    /// Any OpenAI-compatible Chat Completions server: OpenAI, Groq, vLLM, Ollama, llama.cpp.
    #[default]
    Openai,
    /// Anthropic Messages (Claude).
    Anthropic,
    /// Not a model: the offline demo's rule-based dialogue policy ([`crate::llm::scripted`]), for trying Parley
    /// without an account.
    Scripted,
}

/// `[tts]`: streaming text-to-speech.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TtsSection {
    pub provider: TtsProvider,
    /// Providers tried, in order, when `provider` cannot be reached.
    pub fallback: Vec<TtsProvider>,
    pub cartesia: CartesiaSettings,
    pub openai_speech: OpenAiSpeechSettings,
    pub elevenlabs: ElevenLabsSettings,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TtsProvider {
    #[default]
    Cartesia,
    /// OpenAI `/v1/audio/speech` (or a self-hosted server implementing it), one HTTP request per text piece.
    #[serde(rename = "openai_speech")]
    OpenaiSpeech,
    /// ElevenLabs `multi-stream-input` WebSocket, μ-law 8 kHz.
    Elevenlabs,
    /// eSpeak NG on this machine (`[local.espeak]`): no account, no network.
    Espeak,
}
