//! The cascade's providers: each stage's provider and its `fallback` list, built from their sections. Every
//! provider in use is built, so every missing key or setting is named at once, not one per attempt.

use std::sync::Arc;

use crate::config::providers::{LlmProvider, SettingsError, SttProvider, TtsProvider};
use crate::config::Config;
use crate::failover::DEFAULT_COOLDOWN;
use crate::llm::anthropic::Anthropic;
use crate::llm::failover::FailoverLlm;
use crate::llm::openai::OpenAiCompatible;
use crate::llm::routing::ModelRoute;
use crate::llm::LanguageModel;
use crate::stt::deepgram::Deepgram;
use crate::stt::deepgram_flux::DeepgramFlux;
use crate::stt::failover::FailoverStt;
use crate::stt::whisper::WhisperStt;
use crate::stt::SpeechToText;
use crate::tts::cartesia::Cartesia;
use crate::tts::elevenlabs::ElevenLabs;
use crate::tts::espeak::Espeak;
use crate::tts::failover::FailoverTts;
use crate::tts::openai_speech::OpenAiSpeech;
use crate::tts::TextToSpeech;

/// The three stages, each behind a failover list when its section names fallbacks.
pub struct Providers {
    pub stt: Arc<dyn SpeechToText>,
    pub llm: Arc<dyn LanguageModel>,
    pub tts: Arc<dyn TextToSpeech>,
    /// The larger model of `[llm.route]`, when configured.
    pub route: Option<Arc<ModelRoute>>,
    /// The turn model of the `smart` end-of-turn strategy (`[local.smart_turn]`), loaded once when that strategy is
    /// configured.
    pub turn_model: Option<Arc<dyn crate::turn_model::TurnModel>>,
}

/// Builds every provider in use; on failure, one sentence per problem, naming the setting that uses the provider.
pub fn build(config: &Config) -> Result<Providers, Vec<String>> {
    let mut errors = Vec::new();
    let stt = chain("stt", config.stt.provider, &config.stt.fallback, |kind| stt_for(kind, config), &mut errors)
        .map(|list| failover(list, |list| Arc::new(FailoverStt::new(list, DEFAULT_COOLDOWN)) as Arc<dyn SpeechToText>));
    let llm = chain("llm", config.llm.provider, &config.llm.fallback, |kind| llm_for(kind, config), &mut errors).map(
        |list| failover(list, |list| Arc::new(FailoverLlm::new(list, DEFAULT_COOLDOWN)) as Arc<dyn LanguageModel>),
    );
    let tts = chain("tts", config.tts.provider, &config.tts.fallback, |kind| tts_for(kind, config), &mut errors)
        .map(|list| failover(list, |list| Arc::new(FailoverTts::new(list, DEFAULT_COOLDOWN)) as Arc<dyn TextToSpeech>));
    let route = large_model(config).map_err(|problems| errors.extend(problems)).ok().flatten();
    let turn_model = turn_model(config).map_err(|problem| errors.push(problem)).ok().flatten();
    match (stt, llm, tts) {
        (Some(stt), Some(llm), Some(tts)) if errors.is_empty() => Ok(Providers { stt, llm, tts, route, turn_model }),
        _ => Err(errors),
    }
}

/// The smart-turn model's worker pool, when `conversation.turn.strategy = "smart"`.
fn turn_model(config: &Config) -> Result<Option<Arc<dyn crate::turn_model::TurnModel>>, String> {
    if config.conversation.turn.strategy != crate::engine::turn::TurnStrategy::Smart {
        return Ok(None);
    }
    let pool = crate::local::smart_turn::SmartTurnPool::start(&config.local.smart_turn)
        .map_err(|e| format!("conversation.turn.strategy = \"smart\" needs the turn model: {e}"))?;
    Ok(Some(pool as Arc<dyn crate::turn_model::TurnModel>))
}

/// The larger model of `[llm.route]`: `[llm].provider`'s client (endpoint, key, timeouts) with the route's model.
fn large_model(config: &Config) -> Result<Option<Arc<ModelRoute>>, Vec<String>> {
    let rules = &config.llm.route;
    if !rules.enabled() {
        return Ok(None);
    }
    if config.llm.provider == LlmProvider::Scripted {
        return Err(vec![
            "llm.route.model needs a model provider in llm.provider (openai or anthropic), not scripted".into()
        ]);
    }
    let mut routed = config.clone();
    routed.llm.openai.model = rules.model.clone();
    routed.llm.anthropic.model = Some(rules.model.clone());
    let large = llm_for(config.llm.provider, &routed)?;
    Ok(Some(Arc::new(ModelRoute { large, rules: rules.clone() })))
}

/// The provider and its fallbacks, in order; `None` (with the reasons in `errors`) when any of them failed.
fn chain<K: Copy, T: ?Sized>(
    stage: &str,
    provider: K,
    fallback: &[K],
    build: impl Fn(K) -> Result<Arc<T>, Vec<String>>,
    errors: &mut Vec<String>,
) -> Option<Vec<Arc<T>>> {
    let before = errors.len();
    let mut list = Vec::with_capacity(1 + fallback.len());
    let roles = std::iter::once((provider, "provider")).chain(fallback.iter().map(|kind| (*kind, "fallback")));
    for (kind, role) in roles {
        match build(kind) {
            Ok(built) => list.push(built),
            Err(reasons) => errors.extend(reasons.into_iter().map(|r| format!("{r} (used as {stage}.{role})"))),
        }
    }
    (errors.len() == before).then_some(list)
}

/// One provider as is, more behind the failover wrapper.
fn failover<T: ?Sized>(mut list: Vec<Arc<T>>, wrap: impl FnOnce(Vec<Arc<T>>) -> Arc<T>) -> Arc<T> {
    if list.len() == 1 {
        list.remove(0)
    } else {
        wrap(list)
    }
}

fn settings(errors: Vec<SettingsError>) -> Vec<String> {
    errors.into_iter().map(|e| e.to_string()).collect()
}

fn one(section: &str, error: impl std::fmt::Display) -> Vec<String> {
    vec![format!("[{section}]: {error}")]
}

/// One speech-to-text provider; the local Whisper model is loaded here, once, and shared by every call.
fn stt_for(kind: SttProvider, config: &Config) -> Result<Arc<dyn SpeechToText>, Vec<String>> {
    Ok(match kind {
        SttProvider::Deepgram => Arc::new(Deepgram::new(config.stt.deepgram.client_config().map_err(settings)?)),
        SttProvider::DeepgramFlux => {
            Arc::new(DeepgramFlux::new(config.stt.deepgram_flux.client_config().map_err(settings)?))
        }
        SttProvider::Whisper => {
            let live = crate::local::WhisperSettings {
                beam_size: config.local.whisper.live_beam_size,
                window_ms: config.local.whisper.live_window_ms,
                ..config.local.whisper.clone()
            };
            let engine = crate::local::WhisperEngine::load(&live).map_err(|e| vec![e.to_string()])?;
            let mut segmenter = config.local.whisper.segmenter.clone();
            let turn = &config.conversation.turn;
            if turn.strategy == crate::engine::turn::TurnStrategy::Smart {
                // The turn model decides when the caller has finished, and its finalize cuts the utterance: Whisper's
                // own silence must not cut a turn at a pause first (a number said after a pause, transcribed alone,
                // loses its context).
                segmenter.end_silence_ms = segmenter.end_silence_ms.max(turn.smart_max_silence_ms + 1_000);
            }
            Arc::new(WhisperStt::new(Arc::new(engine), segmenter))
        }
    })
}

fn llm_for(kind: LlmProvider, config: &Config) -> Result<Arc<dyn LanguageModel>, Vec<String>> {
    Ok(match kind {
        LlmProvider::Openai => {
            let client_config = crate::llm::openai::OpenAiConfig {
                first_token_timeout: config.llm.first_token_timeout(),
                idle_timeout: config.llm.idle_timeout(),
                ..config.llm.openai.client_config().map_err(settings)?
            };
            Arc::new(OpenAiCompatible::new(client_config).map_err(|e| one("llm.openai", e))?)
        }
        LlmProvider::Anthropic => {
            let client_config = crate::llm::anthropic::AnthropicConfig {
                first_token_timeout: config.llm.first_token_timeout(),
                idle_timeout: config.llm.idle_timeout(),
                ..config.llm.anthropic.client_config().map_err(settings)?
            };
            Arc::new(Anthropic::new(client_config).map_err(|e| one("llm.anthropic", e))?)
        }
        LlmProvider::Scripted => Arc::new(crate::llm::scripted::ScriptedPolicy),
    })
}

fn tts_for(kind: TtsProvider, config: &Config) -> Result<Arc<dyn TextToSpeech>, Vec<String>> {
    Ok(match kind {
        TtsProvider::Cartesia => Arc::new(Cartesia::new(config.tts.cartesia.client_config().map_err(settings)?)),
        TtsProvider::Espeak => Arc::new(Espeak::new(config.local.espeak.clone())),
        TtsProvider::Elevenlabs => Arc::new(ElevenLabs::new(config.tts.elevenlabs.client_config().map_err(settings)?)),
        TtsProvider::OpenaiSpeech => {
            let client_config = config.tts.openai_speech.client_config().map_err(settings)?;
            Arc::new(OpenAiSpeech::new(client_config).map_err(|e| one("tts.openai_speech", e))?)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        toml::from_str(text).unwrap_or_else(|error| panic!("{error}"))
    }

    #[test]
    fn the_route_is_the_providers_client_with_the_routes_model() {
        let local =
            "[llm]\nprovider = \"openai\"\n[llm.openai]\nbase_url = \"http://127.0.0.1:9/v1\"\nmodel = \"small\"\n";
        let routed = config(&format!("{local}[llm.route]\nmodel = \"large\"\ncaller_words_over = 30\n"));
        let route = large_model(&routed).ok().flatten().expect("a route is built");
        assert_eq!(route.large.model(), "large");
        assert_eq!(route.rules.caller_words_over, 30);
        assert!(large_model(&config(local)).is_ok_and(|route| route.is_none()), "no [llm.route], no second model");
        let scripted = config("[llm]\nprovider = \"scripted\"\n[llm.route]\nmodel = \"large\"\n");
        assert!(large_model(&scripted).is_err_and(|errors| errors[0].contains("llm.route.model")));
    }
}
