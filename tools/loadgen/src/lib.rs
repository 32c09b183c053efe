//! The rig: Parley's cascade wired to fake Deepgram, OpenAI-compatible and Cartesia servers on 127.0.0.1, with
//! simulated Twilio callers. Shared by the cascade integration tests, the latency benchmark and the load generator.

pub mod fakes;
pub mod lean;
pub mod procstat;
pub mod sealed;
pub mod stages;
pub mod summary;
pub mod wire;

use std::sync::Arc;
use std::time::Duration;

use fake_providers::cartesia::{FakeCartesia, FakeCartesiaOptions};
use fake_providers::deepgram::{FakeDeepgram, FakeDeepgramOptions};
use fake_providers::deepgram_flux::{self, FakeFlux, FakeFluxOptions};
use fake_providers::openai::{self, FakeOpenAi, FakeOpenAiOptions};
use parley::config::{Config, Secrets};
use parley::edge::{self, RunningServer};
use parley::engine::cascade::{CascadeDeps, CascadeFactory};
use parley::engine::config::ConversationConfig;
use parley::engine::latency::TurnLatency;
use parley::engine::tools::{NoTools, ToolExecutor};
use parley::llm::openai::{OpenAiCompatible, OpenAiConfig};
use parley::llm::LanguageModel;
use parley::stt::deepgram::{Deepgram, DeepgramConfig};
use parley::stt::deepgram_flux::{DeepgramFlux, FluxConfig};
use parley::stt::SpeechToText;
use parley::tts::cartesia::{Cartesia, CartesiaConfig};
use parley::tts::TextToSpeech;
use parley::twilio::messages::OutboundMessage;
use sim_caller::{silence, speech, Received, SimCall, StartOptions};
use tokio::sync::mpsc;

/// How long rig helpers wait before giving up.
pub const WAIT: Duration = Duration::from_secs(20);

/// What the rig is made of.
pub struct RigOptions {
    pub openai: FakeOpenAiOptions,
    pub deepgram: FakeDeepgramOptions,
    pub cartesia: FakeCartesiaOptions,
    pub conversation: ConversationConfig,
    pub tools: Arc<dyn ToolExecutor>,
    pub max_calls: usize,
    /// Gets a copy of every call (the archive), when given.
    pub taps: parley::call::tap::Taps,
    /// Built-in call control (it wraps its own backend tools and replaces `tools`), when given.
    pub call_control: Option<Arc<parley::engine::call_control::CallControl>>,
    /// Recognise with a fake Deepgram Flux (eager end of turn on) instead of Deepgram live v1, when given.
    pub flux: Option<FakeFluxOptions>,
    /// Use this model instead of the OpenAI-compatible client of the fake OpenAI, when given.
    pub llm: Option<Arc<dyn LanguageModel>>,
    /// A larger model and the rules that route turns to it, when given.
    pub route: Option<Arc<parley::llm::routing::ModelRoute>>,
    /// Prices each call by this table (empty: calls are not priced).
    pub prices: parley::cost::PriceTable,
    /// Use this voice instead of the Cartesia client of the fake Cartesia, when given.
    pub tts: Option<Arc<dyn TextToSpeech>>,
    /// Use this recogniser instead of the Deepgram client of the fake Deepgram, when given.
    pub stt: Option<Arc<dyn SpeechToText>>,
    /// The turn model of the `smart` end-of-turn strategy, when given.
    pub turn_model: Option<Arc<dyn parley::turn_model::TurnModel>>,
}

impl Default for RigOptions {
    fn default() -> Self {
        RigOptions {
            openai: FakeOpenAiOptions::default(),
            deepgram: FakeDeepgramOptions::default(),
            cartesia: FakeCartesiaOptions::default(),
            conversation: ConversationConfig { greeting: String::new(), ..ConversationConfig::default() },
            tools: Arc::new(NoTools),
            max_calls: 100,
            taps: None,
            call_control: None,
            flux: None,
            llm: None,
            route: None,
            prices: parley::cost::PriceTable::default(),
            tts: None,
            stt: None,
            turn_model: None,
        }
    }
}

/// A running Parley with its fake providers.
pub struct Rig {
    pub server: RunningServer,
    pub deepgram: FakeDeepgram,
    pub openai: FakeOpenAi,
    pub cartesia: FakeCartesia,
    pub reports: mpsc::UnboundedReceiver<TurnLatency>,
    /// The fake Flux, when the rig recognises with it.
    pub flux: Option<FakeFlux>,
}

impl Rig {
    /// Starts the fakes and Parley (signature validation off) on ephemeral ports.
    pub async fn start(options: RigOptions) -> Rig {
        let deepgram = FakeDeepgram::start(options.deepgram).await.expect("fake deepgram starts");
        let openai = openai::start(options.openai).await.expect("fake openai starts");
        let cartesia = FakeCartesia::start(options.cartesia).await.expect("fake cartesia starts");
        let (reports_tx, reports) = mpsc::unbounded_channel();
        let llm = OpenAiCompatible::new(OpenAiConfig {
            base_url: openai.base_url(),
            api_key: Some("test-key".into()),
            model: "gpt-test".into(),
            ..OpenAiConfig::default()
        })
        .expect("llm client");
        let flux = match options.flux {
            Some(flux) => Some(deepgram_flux::start(flux).await.expect("fake flux starts")),
            None => None,
        };
        let stt: Arc<dyn SpeechToText> = match (options.stt, &flux) {
            (Some(stt), _) => stt,
            (None, Some(flux)) => Arc::new(DeepgramFlux::new(FluxConfig {
                base_url: flux.base_url(),
                api_key: "test-key".into(),
                eager_eot_threshold: Some(0.5),
                ..FluxConfig::default()
            })),
            (None, None) => Arc::new(Deepgram::new(DeepgramConfig {
                base_url: deepgram.base_url(),
                api_key: "test-key".into(),
                ..DeepgramConfig::default()
            })),
        };
        let llm = options.llm.unwrap_or_else(|| Arc::new(llm));
        let deps = CascadeDeps {
            stt,
            tokens: parley::llm::context::tokens::TokenCounter::for_context(&options.conversation.context, llm.model()),
            route: options.route,
            prices: Arc::new(options.prices),
            turn_model: options.turn_model.clone(),
            llm,
            tts: options.tts.unwrap_or_else(|| {
                Arc::new(Cartesia::new(CartesiaConfig {
                    base_url: cartesia.base_url(),
                    api_key: "test-key".into(),
                    voice_id: "test-voice".into(),
                    ..CartesiaConfig::default()
                }))
            }),
            tools: match &options.call_control {
                Some(control) => control.clone(),
                None => options.tools,
            },
            call_control: options.call_control,
            config: Arc::new(options.conversation),
            redact_numbers: false,
            turn_reports: Some(reports_tx),
            vad: Default::default(),
        };
        let mut config = Config::default();
        config.server.listen = "127.0.0.1:0".parse().expect("address");
        config.server.max_concurrent_calls = options.max_calls;
        config.twilio.validate_signatures = false;
        let server = edge::start(config, Secrets::default(), Arc::new(CascadeFactory { deps }), options.taps)
            .await
            .expect("parley starts");
        Rig { server, deepgram, openai, cartesia, reports, flux }
    }

    /// Places a call as Twilio would.
    pub async fn call(&self, n: u32) -> SimCall {
        let url = format!("ws://{}/twilio/media", self.server.local_addr);
        let mut call = SimCall::connect(&url, None).await.expect("media stream accepted");
        let options = StartOptions {
            stream_sid: format!("MZ{n:032}"),
            call_sid: format!("CA{n:032}"),
            ..StartOptions::default()
        };
        call.start(&options).expect("start sent");
        call
    }

    /// The next finished turn's latency record.
    pub async fn next_report(&mut self) -> TurnLatency {
        tokio::time::timeout(WAIT, self.reports.recv()).await.expect("a turn report in time").expect("reports open")
    }
}

/// The caller says something: speech, then enough silence for the recogniser's endpointing.
pub async fn say(call: &mut SimCall, speech_ms: u32) {
    call.stream_audio(&speech(speech_ms)).await.expect("speech sent");
    call.stream_audio(&silence(600)).await.expect("silence sent");
}

/// Keeps the line alive (Twilio streams silence all the time) until `done` holds.
pub async fn listen_until(call: &mut SimCall, what: &str, done: impl Fn(&[Received]) -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if call.wait_until(what, Duration::from_millis(1), &done).await.is_ok() {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        call.stream_audio(&silence(100)).await.expect("silence sent");
    }
}

/// 20 ms frames of media received so far (a message carries one or more).
pub fn media_count(log: &[Received]) -> usize {
    log.iter()
        .map(|r| match r {
            Received::Message { message: OutboundMessage::Media { media, .. }, .. } => {
                media.payload.len().div_ceil(parley::audio::FRAME_BYTES)
            }
            _ => 0,
        })
        .sum()
}

/// Percentile (0–100) of a sorted sample, nearest rank; NaN for an empty one.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    parley::eval::score::percentile(sorted, p).unwrap_or(f64::NAN)
}
