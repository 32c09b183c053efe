//! Provider sections of the config file: which provider serves each stage, and its settings.
//!
//! Every setting is optional; an unset one keeps the client's own default. API keys are never in the file: each
//! section names the environment variable that holds its key.
//!
//! Each section turns itself into its client's configuration (`client_config`), reading its key from the
//! environment and naming every missing key or setting, so `parley check` and `parley serve` judge a section by the
//! same code.

use std::time::Duration;

use serde::Deserialize;

use super::read_secret;
use crate::llm::anthropic::AnthropicConfig;
use crate::llm::openai::OpenAiConfig;
use crate::stt::deepgram::DeepgramConfig;
use crate::stt::deepgram_flux::FluxConfig;
use crate::tts::cartesia::CartesiaConfig;
use crate::tts::elevenlabs::ElevenLabsConfig;
use crate::tts::openai_speech::OpenAiSpeechConfig;

/// Why a provider section cannot become a working client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    #[error("{env} is not set: [{section}] needs an API key")]
    MissingKey { env: String, section: &'static str },
    #[error("{section}.{field} is not set")]
    MissingSetting { section: &'static str, field: &'static str },
}

/// The key in `env`; a missing one is recorded in `errors` when `required`.
fn key(env: &str, section: &'static str, required: bool, errors: &mut Vec<SettingsError>) -> Option<String> {
    let value = read_secret(env).map(|s| s.expose().to_owned());
    if value.is_none() && required {
        errors.push(SettingsError::MissingKey { env: env.to_owned(), section });
    }
    value
}

/// A required setting that is empty.
fn required(value: &str, section: &'static str, field: &'static str, errors: &mut Vec<SettingsError>) {
    if value.trim().is_empty() {
        errors.push(SettingsError::MissingSetting { section, field });
    }
}

/// OpenAI's own API needs a key; a self-hosted OpenAI-compatible server (any other `base_url`) may not.
fn is_openai_api(base_url: Option<&str>) -> bool {
    base_url.is_none_or(|url| url::Url::parse(url).is_ok_and(|u| u.host_str() == Some("api.openai.com")))
}

fn done<T>(config: T, errors: Vec<SettingsError>) -> Result<T, Vec<SettingsError>> {
    if errors.is_empty() {
        Ok(config)
    } else {
        Err(errors)
    }
}

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

impl DeepgramSettings {
    /// The streaming client's configuration; the key is required.
    pub fn client_config(&self) -> Result<DeepgramConfig, Vec<SettingsError>> {
        let mut errors = Vec::new();
        let api_key = key(&self.api_key_env, "stt.deepgram", true, &mut errors).unwrap_or_default();
        let defaults = DeepgramConfig::default();
        let config = DeepgramConfig {
            api_key,
            base_url: self.base_url.clone().unwrap_or(defaults.base_url),
            model: self.model.clone().unwrap_or(defaults.model),
            language: self.language.clone().unwrap_or(defaults.language),
            endpointing_ms: self.endpointing_ms.unwrap_or(defaults.endpointing_ms),
            utterance_end_ms: self.utterance_end_ms.or(defaults.utterance_end_ms),
            keyterms: self.keyterms.clone(),
            ..DeepgramConfig::default()
        };
        done(config, errors)
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

impl OpenAiSettings {
    /// The Chat Completions client's configuration; the key is required for OpenAI's own API only.
    pub fn client_config(&self) -> Result<OpenAiConfig, Vec<SettingsError>> {
        let mut errors = Vec::new();
        let needs_key = is_openai_api(self.base_url.as_deref());
        let defaults = OpenAiConfig::default();
        let config = OpenAiConfig {
            api_key: key(&self.api_key_env, "llm.openai", needs_key, &mut errors),
            base_url: self.base_url.clone().unwrap_or(defaults.base_url),
            model: self.model.clone(),
            temperature: self.temperature,
            max_completion_tokens: self.max_completion_tokens,
            include_usage: self.include_usage.unwrap_or(defaults.include_usage),
            ..OpenAiConfig::default()
        };
        done(config, errors)
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

impl AnthropicSettings {
    /// The Messages client's configuration; the key is required.
    pub fn client_config(&self) -> Result<AnthropicConfig, Vec<SettingsError>> {
        let mut errors = Vec::new();
        let api_key = key(&self.api_key_env, "llm.anthropic", true, &mut errors).unwrap_or_default();
        let defaults = AnthropicConfig::default();
        let config = AnthropicConfig {
            api_key,
            base_url: self.base_url.clone().unwrap_or(defaults.base_url),
            model: self.model.clone().unwrap_or(defaults.model),
            max_tokens: self.max_tokens.unwrap_or(defaults.max_tokens),
            temperature: self.temperature.or(defaults.temperature),
            version: self.version.clone().unwrap_or(defaults.version),
            ..AnthropicConfig::default()
        };
        done(config, errors)
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

impl CartesiaSettings {
    /// The streaming client's configuration; the key and the voice are required.
    pub fn client_config(&self) -> Result<CartesiaConfig, Vec<SettingsError>> {
        let mut errors = Vec::new();
        let api_key = key(&self.api_key_env, "tts.cartesia", true, &mut errors).unwrap_or_default();
        required(&self.voice_id, "tts.cartesia", "voice_id", &mut errors);
        let defaults = CartesiaConfig::default();
        let config = CartesiaConfig {
            api_key,
            voice_id: self.voice_id.clone(),
            base_url: self.base_url.clone().unwrap_or(defaults.base_url),
            model_id: self.model_id.clone().unwrap_or(defaults.model_id),
            language: self.language.clone().unwrap_or(defaults.language),
            version: self.version.clone().unwrap_or(defaults.version),
            ..CartesiaConfig::default()
        };
        done(config, errors)
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

impl OpenAiSpeechSettings {
    /// The speech client's configuration; the key is required for OpenAI's own API only.
    pub fn client_config(&self) -> Result<OpenAiSpeechConfig, Vec<SettingsError>> {
        let mut errors = Vec::new();
        let needs_key = is_openai_api(self.base_url.as_deref());
        let defaults = OpenAiSpeechConfig::default();
        let config = OpenAiSpeechConfig {
            api_key: key(&self.api_key_env, "tts.openai_speech", needs_key, &mut errors),
            base_url: self.base_url.clone().unwrap_or(defaults.base_url),
            model: self.model.clone().unwrap_or(defaults.model),
            voice: self.voice.clone().unwrap_or(defaults.voice),
            instructions: self.instructions.clone().or(defaults.instructions),
            speed: self.speed.or(defaults.speed),
            ..OpenAiSpeechConfig::default()
        };
        done(config, errors)
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

impl ElevenLabsSettings {
    /// The streaming client's configuration; the key and the voice are required.
    pub fn client_config(&self) -> Result<ElevenLabsConfig, Vec<SettingsError>> {
        let mut errors = Vec::new();
        let api_key = key(&self.api_key_env, "tts.elevenlabs", true, &mut errors).unwrap_or_default();
        required(&self.voice_id, "tts.elevenlabs", "voice_id", &mut errors);
        let defaults = ElevenLabsConfig::default();
        let config = ElevenLabsConfig {
            api_key,
            voice_id: self.voice_id.clone(),
            base_url: self.base_url.clone().unwrap_or(defaults.base_url),
            model_id: self.model_id.clone().unwrap_or(defaults.model_id),
            language_code: self.language_code.clone().or(defaults.language_code),
            stability: self.stability.or(defaults.stability),
            similarity_boost: self.similarity_boost.or(defaults.similarity_boost),
            speed: self.speed.or(defaults.speed),
            ..ElevenLabsConfig::default()
        };
        done(config, errors)
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

impl DeepgramFluxSettings {
    /// The Flux client's configuration; the key is required.
    pub fn client_config(&self) -> Result<FluxConfig, Vec<SettingsError>> {
        let mut errors = Vec::new();
        let api_key = key(&self.api_key_env, "stt.deepgram_flux", true, &mut errors).unwrap_or_default();
        let defaults = FluxConfig::default();
        let config = FluxConfig {
            api_key,
            base_url: self.base_url.clone().unwrap_or(defaults.base_url),
            model: self.model.clone().unwrap_or(defaults.model),
            eot_threshold: self.eot_threshold.or(defaults.eot_threshold),
            eager_eot_threshold: self.eager_eot_threshold.or(defaults.eager_eot_threshold),
            eot_timeout_ms: self.eot_timeout_ms.or(defaults.eot_timeout_ms),
            keyterms: self.keyterms.clone(),
            ..FluxConfig::default()
        };
        done(config, errors)
    }
}
