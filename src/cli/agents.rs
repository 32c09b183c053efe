//! Assembles the agent that answers calls from the configuration: the echo agent, or the cascade with its providers.

use std::sync::Arc;
use std::time::Duration;

use crate::call::agent::AgentFactory;
use crate::call::echo::EchoFactory;
use crate::config::providers::{CartesiaSettings, DeepgramSettings, OpenAiSettings};
use crate::config::{read_secret, AgentKind, Config};
use crate::engine::cascade::{CascadeDeps, CascadeFactory};
use crate::engine::tools::{NoTools, ToolExecutor};
use crate::llm::openai::{OpenAiCompatible, OpenAiConfig, OpenAiConfigError};
use crate::stt::deepgram::{Deepgram, DeepgramConfig};
use crate::tts::cartesia::{Cartesia, CartesiaConfig};

/// Why the agent could not be assembled.
#[derive(Debug, thiserror::Error)]
pub enum AgentSetupError {
    #[error("{0} is not set")]
    MissingKey(String),
    #[error("LLM client: {0}")]
    Llm(#[from] OpenAiConfigError),
}

/// Builds the factory that makes an agent per call.
pub fn agent_factory(
    config: &Config,
    tools: Option<Arc<dyn ToolExecutor>>,
) -> Result<Arc<dyn AgentFactory>, AgentSetupError> {
    match config.agent.kind {
        AgentKind::Echo => Ok(Arc::new(EchoFactory { delay: Duration::from_millis(config.agent.echo_delay_ms) })),
        AgentKind::Cascade => {
            let deps = CascadeDeps {
                stt: Arc::new(Deepgram::new(deepgram_config(&config.stt.deepgram)?)),
                llm: Arc::new(OpenAiCompatible::new(openai_config(&config.llm.openai))?),
                tts: Arc::new(Cartesia::new(cartesia_config(&config.tts.cartesia)?)),
                tools: tools.unwrap_or_else(|| Arc::new(NoTools)),
                config: Arc::new(config.conversation.clone()),
                redact_numbers: config.twilio.redact_numbers,
                turn_reports: None,
            };
            Ok(Arc::new(CascadeFactory { deps }))
        }
    }
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
