//! Assembles the agent that answers calls from the configuration: the echo agent, or the cascade with its providers.

use std::sync::Arc;
use std::time::Duration;

use crate::call::agent::AgentFactory;
use crate::call::echo::EchoFactory;
use crate::config::providers::{
    AnthropicSettings, CartesiaSettings, DeepgramFluxSettings, DeepgramSettings, ElevenLabsSettings, LlmProvider,
    OpenAiSettings, OpenAiSpeechSettings, SttProvider, TtsProvider,
};
use crate::config::{read_secret, AgentKind, Config};
use crate::engine::call_control::CallControl;
use crate::engine::cascade::{CascadeDeps, CascadeFactory};
use crate::engine::tools::{NoTools, ToolExecutor};
use crate::failover::DEFAULT_COOLDOWN;
use crate::llm::anthropic::{Anthropic, AnthropicConfig, AnthropicConfigError};
use crate::llm::failover::FailoverLlm;
use crate::llm::openai::{OpenAiCompatible, OpenAiConfig, OpenAiConfigError};
use crate::stt::deepgram::{Deepgram, DeepgramConfig};
use crate::stt::deepgram_flux::{DeepgramFlux, FluxConfig};
use crate::stt::failover::FailoverStt;
use crate::stt::whisper::WhisperStt;
use crate::tts::cartesia::{Cartesia, CartesiaConfig};
use crate::tts::elevenlabs::{ElevenLabs, ElevenLabsConfig};
use crate::tts::espeak::Espeak;
use crate::tts::failover::FailoverTts;
use crate::tts::openai_speech::{OpenAiSpeech, OpenAiSpeechConfig, OpenAiSpeechConfigError};

/// Why the agent could not be assembled.
#[derive(Debug, thiserror::Error)]
pub enum AgentSetupError {
    #[error("{0} is not set")]
    MissingKey(String),
    #[error("LLM client: {0}")]
    Llm(#[from] OpenAiConfigError),
    #[error("Anthropic client: {0}")]
    Anthropic(#[from] AnthropicConfigError),
    #[error("OpenAI speech client: {0}")]
    OpenAiSpeech(#[from] OpenAiSpeechConfigError),
    #[error("local speech-to-text: {0}")]
    Whisper(#[from] crate::local::WhisperError),
}

/// Builds the factory that makes an agent per call.
pub fn agent_factory(
    config: &Config,
    tools: Option<Arc<dyn ToolExecutor>>,
) -> Result<Arc<dyn AgentFactory>, AgentSetupError> {
    match config.agent.kind {
        AgentKind::Echo => Ok(Arc::new(EchoFactory { delay: Duration::from_millis(config.agent.echo_delay_ms) })),
        AgentKind::Cascade => {
            let backend_tools = tools.unwrap_or_else(|| Arc::new(NoTools));
            let auth_token = read_secret("TWILIO_AUTH_TOKEN").map(|s| s.expose().to_owned());
            let call_control =
                Arc::new(CallControl::new(backend_tools, config.conversation.call_control.clone(), auth_token));
            let deps = CascadeDeps {
                stt: stt_provider(config)?,
                llm: llm_provider(config)?,
                tts: tts_provider(config)?,
                tools: call_control.clone(),
                call_control: Some(call_control),
                config: Arc::new(config.conversation.clone()),
                redact_numbers: config.twilio.redact_numbers,
                turn_reports: None,
                vad: Default::default(),
            };
            Ok(Arc::new(CascadeFactory { deps }))
        }
    }
}

/// The `[stt]` provider, behind a failover list when `fallback` names more.
fn stt_provider(config: &Config) -> Result<Arc<dyn crate::stt::SpeechToText>, AgentSetupError> {
    let mut list = vec![stt_for(config.stt.provider, config)?];
    for kind in &config.stt.fallback {
        list.push(stt_for(*kind, config)?);
    }
    Ok(if list.len() == 1 { list.remove(0) } else { Arc::new(FailoverStt::new(list, DEFAULT_COOLDOWN)) })
}

/// The `[tts]` provider, behind a failover list when `fallback` names more.
fn tts_provider(config: &Config) -> Result<Arc<dyn crate::tts::TextToSpeech>, AgentSetupError> {
    let mut list = vec![tts_for(config.tts.provider, config)?];
    for kind in &config.tts.fallback {
        list.push(tts_for(*kind, config)?);
    }
    Ok(if list.len() == 1 { list.remove(0) } else { Arc::new(FailoverTts::new(list, DEFAULT_COOLDOWN)) })
}

/// The `[llm]` model, behind a failover list when `fallback` names more.
fn llm_provider(config: &Config) -> Result<Arc<dyn crate::llm::LanguageModel>, AgentSetupError> {
    let mut list = vec![llm_for(config.llm.provider, config)?];
    for kind in &config.llm.fallback {
        list.push(llm_for(*kind, config)?);
    }
    Ok(if list.len() == 1 { list.remove(0) } else { Arc::new(FailoverLlm::new(list, DEFAULT_COOLDOWN)) })
}

/// One speech-to-text provider; the local Whisper model is loaded here, once, and shared by every call.
fn stt_for(kind: SttProvider, config: &Config) -> Result<Arc<dyn crate::stt::SpeechToText>, AgentSetupError> {
    Ok(match kind {
        SttProvider::Deepgram => Arc::new(Deepgram::new(deepgram_config(&config.stt.deepgram)?)),
        SttProvider::DeepgramFlux => Arc::new(DeepgramFlux::new(flux_config(&config.stt.deepgram_flux)?)),
        SttProvider::Whisper => {
            let engine = crate::local::WhisperEngine::load(&config.local.whisper)?;
            Arc::new(WhisperStt::new(Arc::new(engine), config.local.whisper.segmenter.clone()))
        }
    })
}

fn tts_for(kind: TtsProvider, config: &Config) -> Result<Arc<dyn crate::tts::TextToSpeech>, AgentSetupError> {
    Ok(match kind {
        TtsProvider::Cartesia => Arc::new(Cartesia::new(cartesia_config(&config.tts.cartesia)?)),
        TtsProvider::Espeak => Arc::new(Espeak::new(config.local.espeak.clone())),
        TtsProvider::Elevenlabs => Arc::new(ElevenLabs::new(elevenlabs_config(&config.tts.elevenlabs)?)),
        TtsProvider::OpenaiSpeech => Arc::new(OpenAiSpeech::new(openai_speech_config(&config.tts.openai_speech))?),
    })
}

fn llm_for(kind: LlmProvider, config: &Config) -> Result<Arc<dyn crate::llm::LanguageModel>, AgentSetupError> {
    Ok(match kind {
        LlmProvider::Openai => Arc::new(OpenAiCompatible::new(OpenAiConfig {
            first_token_timeout: config.llm.first_token_timeout(),
            idle_timeout: config.llm.idle_timeout(),
            ..openai_config(&config.llm.openai)
        })?),
        LlmProvider::Anthropic => Arc::new(Anthropic::new(AnthropicConfig {
            first_token_timeout: config.llm.first_token_timeout(),
            idle_timeout: config.llm.idle_timeout(),
            ..anthropic_config(&config.llm.anthropic)?
        })?),
        LlmProvider::Scripted => Arc::new(crate::llm::scripted::ScriptedPolicy),
    })
}

fn anthropic_config(settings: &AnthropicSettings) -> Result<AnthropicConfig, AgentSetupError> {
    let defaults = AnthropicConfig::default();
    Ok(AnthropicConfig {
        api_key: required_key(&settings.api_key_env)?,
        base_url: settings.base_url.clone().unwrap_or(defaults.base_url),
        model: settings.model.clone().unwrap_or(defaults.model),
        max_tokens: settings.max_tokens.unwrap_or(defaults.max_tokens),
        temperature: settings.temperature.or(defaults.temperature),
        version: settings.version.clone().unwrap_or(defaults.version),
        ..AnthropicConfig::default()
    })
}

fn openai_speech_config(settings: &OpenAiSpeechSettings) -> OpenAiSpeechConfig {
    let defaults = OpenAiSpeechConfig::default();
    OpenAiSpeechConfig {
        api_key: read_secret(&settings.api_key_env).map(|s| s.expose().to_owned()),
        base_url: settings.base_url.clone().unwrap_or(defaults.base_url),
        model: settings.model.clone().unwrap_or(defaults.model),
        voice: settings.voice.clone().unwrap_or(defaults.voice),
        instructions: settings.instructions.clone().or(defaults.instructions),
        speed: settings.speed.or(defaults.speed),
        ..OpenAiSpeechConfig::default()
    }
}

fn elevenlabs_config(settings: &ElevenLabsSettings) -> Result<ElevenLabsConfig, AgentSetupError> {
    let defaults = ElevenLabsConfig::default();
    Ok(ElevenLabsConfig {
        api_key: required_key(&settings.api_key_env)?,
        voice_id: settings.voice_id.clone(),
        base_url: settings.base_url.clone().unwrap_or(defaults.base_url),
        model_id: settings.model_id.clone().unwrap_or(defaults.model_id),
        language_code: settings.language_code.clone().or(defaults.language_code),
        stability: settings.stability.or(defaults.stability),
        similarity_boost: settings.similarity_boost.or(defaults.similarity_boost),
        speed: settings.speed.or(defaults.speed),
        ..ElevenLabsConfig::default()
    })
}

fn flux_config(settings: &DeepgramFluxSettings) -> Result<FluxConfig, AgentSetupError> {
    let defaults = FluxConfig::default();
    Ok(FluxConfig {
        api_key: required_key(&settings.api_key_env)?,
        base_url: settings.base_url.clone().unwrap_or(defaults.base_url),
        model: settings.model.clone().unwrap_or(defaults.model),
        eot_threshold: settings.eot_threshold.or(defaults.eot_threshold),
        eager_eot_threshold: settings.eager_eot_threshold.or(defaults.eager_eot_threshold),
        eot_timeout_ms: settings.eot_timeout_ms.or(defaults.eot_timeout_ms),
        keyterms: settings.keyterms.clone(),
        ..FluxConfig::default()
    })
}

fn required_key(env: &str) -> Result<String, AgentSetupError> {
    read_secret(env).map(|s| s.expose().to_owned()).ok_or_else(|| AgentSetupError::MissingKey(env.to_owned()))
}

fn deepgram_config(settings: &DeepgramSettings) -> Result<DeepgramConfig, AgentSetupError> {
    let mut config = DeepgramConfig { api_key: required_key(&settings.api_key_env)?, ..DeepgramConfig::default() };
    if let Some(base_url) = &settings.base_url {
        config.base_url = base_url.clone();
    }
    if let Some(model) = &settings.model {
        config.model = model.clone();
    }
    if let Some(language) = &settings.language {
        config.language = language.clone();
    }
    if let Some(endpointing) = settings.endpointing_ms {
        config.endpointing_ms = endpointing;
    }
    if settings.utterance_end_ms.is_some() {
        config.utterance_end_ms = settings.utterance_end_ms;
    }
    config.keyterms = settings.keyterms.clone();
    Ok(config)
}

fn openai_config(settings: &OpenAiSettings) -> OpenAiConfig {
    let mut config = OpenAiConfig {
        api_key: read_secret(&settings.api_key_env).map(|s| s.expose().to_owned()),
        model: settings.model.clone(),
        temperature: settings.temperature,
        max_completion_tokens: settings.max_completion_tokens,
        ..OpenAiConfig::default()
    };
    if let Some(base_url) = &settings.base_url {
        config.base_url = base_url.clone();
    }
    if let Some(include_usage) = settings.include_usage {
        config.include_usage = include_usage;
    }
    config
}

fn cartesia_config(settings: &CartesiaSettings) -> Result<CartesiaConfig, AgentSetupError> {
    let mut config = CartesiaConfig {
        api_key: required_key(&settings.api_key_env)?,
        voice_id: settings.voice_id.clone(),
        ..CartesiaConfig::default()
    };
    if let Some(base_url) = &settings.base_url {
        config.base_url = base_url.clone();
    }
    if let Some(model_id) = &settings.model_id {
        config.model_id = model_id.clone();
    }
    if let Some(language) = &settings.language {
        config.language = language.clone();
    }
    if let Some(version) = &settings.version {
        config.version = version.clone();
    }
    Ok(config)
}
