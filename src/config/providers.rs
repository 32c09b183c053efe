//! Provider sections of the config file: which provider serves each stage, and its settings.
//!
//! Every setting is optional; an unset one keeps the client's own default. API keys are never in the file: each
//! section names the environment variable that holds its key.

use std::time::Duration;

use serde::Deserialize;

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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeepgramSettings {
    pub base_url: Option<String>,
    pub model: Option<String>,
    pub language: Option<String>,
    pub endpointing_ms: Option<u32>,
    pub utterance_end_ms: Option<u32>,
    pub keyterms: Vec<String>,
    /// Environment variable holding the API key.
    pub api_key_env: String,
}

impl Default for DeepgramSettings {
    fn default() -> Self {
        DeepgramSettings {
            base_url: None,
            model: None,
            language: None,
            endpointing_ms: None,
            utterance_end_ms: None,
            keyterms: Vec::new(),
            api_key_env: "DEEPGRAM_API_KEY".into(),
        }
    }
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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OpenAiSettings {
    pub base_url: Option<String>,
    pub model: String,
    pub temperature: Option<f64>,
    pub max_completion_tokens: Option<u32>,
    /// Some servers reject `stream_options.include_usage`.
    pub include_usage: Option<bool>,
    /// Environment variable holding the API key; unset variables mean no key (local servers).
    pub api_key_env: String,
}

impl Default for OpenAiSettings {
    fn default() -> Self {
        OpenAiSettings {
            base_url: None,
            model: "gpt-4o-mini".into(),
            temperature: Some(0.3),
            max_completion_tokens: Some(300),
            include_usage: None,
            api_key_env: "OPENAI_API_KEY".into(),
        }
    }
}

/// `[llm.anthropic]`: unset fields keep the client's defaults (`llm::anthropic::AnthropicConfig`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnthropicSettings {
    pub base_url: Option<String>,
    pub model: Option<String>,
    pub max_tokens: Option<u32>,
    pub temperature: Option<f64>,
    /// The `anthropic-version` header.
    pub version: Option<String>,
    /// Environment variable holding the API key (required).
    pub api_key_env: String,
}

impl Default for AnthropicSettings {
    fn default() -> Self {
        AnthropicSettings {
            base_url: None,
            model: None,
            max_tokens: None,
            temperature: None,
            version: None,
            api_key_env: "ANTHROPIC_API_KEY".into(),
        }
    }
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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CartesiaSettings {
    pub base_url: Option<String>,
    pub model_id: Option<String>,
    pub voice_id: String,
    pub language: Option<String>,
    pub version: Option<String>,
    pub api_key_env: String,
}

impl Default for CartesiaSettings {
    fn default() -> Self {
        CartesiaSettings {
            base_url: None,
            model_id: None,
            voice_id: String::new(),
            language: None,
            version: None,
            api_key_env: "CARTESIA_API_KEY".into(),
        }
    }
}

/// `[tts.openai_speech]`: unset fields keep the client's defaults (`tts::openai_speech::OpenAiSpeechConfig`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OpenAiSpeechSettings {
    pub base_url: Option<String>,
    pub model: Option<String>,
    pub voice: Option<String>,
    pub instructions: Option<String>,
    pub speed: Option<f64>,
    /// Environment variable holding the API key; an unset variable means no key (local servers).
    pub api_key_env: String,
}

impl Default for OpenAiSpeechSettings {
    fn default() -> Self {
        OpenAiSpeechSettings {
            base_url: None,
            model: None,
            voice: None,
            instructions: None,
            speed: None,
            api_key_env: "OPENAI_API_KEY".into(),
        }
    }
}

/// `[tts.elevenlabs]`: unset fields keep the client's defaults (`tts::elevenlabs::ElevenLabsConfig`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ElevenLabsSettings {
    pub base_url: Option<String>,
    /// The voice to speak with (required).
    pub voice_id: String,
    pub model_id: Option<String>,
    pub language_code: Option<String>,
    pub stability: Option<f64>,
    pub similarity_boost: Option<f64>,
    pub speed: Option<f64>,
    /// Environment variable holding the API key (required).
    pub api_key_env: String,
}

impl Default for ElevenLabsSettings {
    fn default() -> Self {
        ElevenLabsSettings {
            base_url: None,
            voice_id: String::new(),
            model_id: None,
            language_code: None,
            stability: None,
            similarity_boost: None,
            speed: None,
            api_key_env: "ELEVENLABS_API_KEY".into(),
        }
    }
}

/// `[stt.deepgram_flux]`: unset fields keep the client's defaults (`stt::deepgram_flux::FluxConfig`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeepgramFluxSettings {
    pub base_url: Option<String>,
    pub model: Option<String>,
    pub eot_threshold: Option<f64>,
    /// Setting it enables the EagerEndOfTurn / TurnResumed events.
    pub eager_eot_threshold: Option<f64>,
    pub eot_timeout_ms: Option<u32>,
    pub keyterms: Vec<String>,
    /// Environment variable holding the API key (required).
    pub api_key_env: String,
}

impl Default for DeepgramFluxSettings {
    fn default() -> Self {
        DeepgramFluxSettings {
            base_url: None,
            model: None,
            eot_threshold: None,
            eager_eot_threshold: None,
            eot_timeout_ms: None,
            keyterms: Vec::new(),
            api_key_env: "DEEPGRAM_API_KEY".into(),
        }
    }
}
