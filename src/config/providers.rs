//! Provider sections of the config file: which provider serves each stage, and its settings.
//!
//! Every setting is optional; an unset one keeps the client's own default. API keys are never in the file: each
//! section names the environment variable that holds its key.

use serde::Deserialize;

/// `[stt]`: streaming speech-to-text.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SttSection {
    pub provider: SttProvider,
    pub deepgram: DeepgramSettings,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SttProvider {
    #[default]
    Deepgram,
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
    pub openai: OpenAiSettings,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LlmProvider {
    /// Any OpenAI-compatible Chat Completions server: OpenAI, Groq, vLLM, Ollama, llama.cpp.
    #[default]
    Openai,
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

/// `[tts]`: streaming text-to-speech.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TtsSection {
    pub provider: TtsProvider,
    pub cartesia: CartesiaSettings,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TtsProvider {
    #[default]
    Cartesia,
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
