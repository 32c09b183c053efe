//! Parley's metrics for SREs: latency histograms per stage, counters of calls, turns, barge-ins and errors, and the
//! number of live calls. Recorded through the OpenTelemetry metrics SDK, read by the Prometheus exporter behind
//! `GET /metrics` and, when configured, pushed over OTLP as well.

use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use opentelemetry::metrics::{Counter, Gauge, Histogram, MeterProvider as _};
use opentelemetry::KeyValue;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::Resource;

use super::config::{OtlpProtocol, TelemetryConfig};
use super::latency::TurnLatency;
use super::otel::signal_url;
use super::TelemetryError;
use crate::call::registry::{CallRegistry, Refusal};

/// Buckets of a call's cost, in the price table's currency: a fraction of a cent to a few units.
const COST_BUCKETS: [f64; 12] = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0];

/// Histogram buckets in milliseconds, spanning a fast hand-off to a slow provider. The bounds at 2 and 20 ms tell a
/// hand-off that took a scheduler's turn from one that waited for a thread the OS had taken away, and match the
/// density target (Parley's share of a turn within 20 ms at the p99).
const BUCKETS_MS: [f64; 18] = [
    1.0, 2.0, 5.0, 10.0, 20.0, 25.0, 50.0, 100.0, 200.0, 300.0, 500.0, 750.0, 1000.0, 1500.0, 2000.0, 3000.0, 5000.0,
    10000.0,
];

/// Why a call was refused, the `reason` label of `parley_calls_refused_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusedCall {
    /// `server.max_concurrent_calls` calls were live.
    Capacity,
    /// Parley is shutting down.
    Draining,
    /// `X-Twilio-Signature` was missing or did not match.
    BadSignature,
}

impl RefusedCall {
    pub fn label(self) -> &'static str {
        match self {
            RefusedCall::Capacity => "capacity",
            RefusedCall::Draining => "draining",
            RefusedCall::BadSignature => "bad_signature",
        }
    }
}

impl From<&Refusal> for RefusedCall {
    fn from(refusal: &Refusal) -> Self {
        match refusal {
            Refusal::Draining => RefusedCall::Draining,
            Refusal::AtCapacity(_) => RefusedCall::Capacity,
        }
    }
}

/// Every instrument Parley records into.
pub struct Metrics {
    provider: SdkMeterProvider,
    registry: prometheus::Registry,
    calls: Counter<u64>,
    calls_refused: Counter<u64>,
    turns: Counter<u64>,
    barge_ins: Counter<u64>,
    replies_resumed: Counter<u64>,
    provider_errors: Counter<u64>,
    tool_errors: Counter<u64>,
    speculations: Counter<u64>,
    first_audio: Histogram<f64>,
    stage: Histogram<f64>,
    barge_in_reaction: Histogram<f64>,
    tool_duration: Histogram<f64>,
    call_cost: Histogram<f64>,
    transcribe_queue: Gauge<u64>,
    /// The servers whose live calls the active-calls gauge counts.
    registries: Arc<Mutex<Vec<Weak<CallRegistry>>>>,
}

static METRICS: OnceLock<Metrics> = OnceLock::new();

/// The process's metrics; Prometheus-only when [`install`] was not called first.
pub fn global() -> &'static Metrics {
    METRICS.get_or_init(|| {
        Metrics::build(None, Resource::builder().build()).unwrap_or_else(|err| {
            tracing::warn!(%err, "metrics unavailable; recording into a detached registry");
            Metrics::detached()
        })
    })
}

/// Sets up the metrics with the OTLP push configured; does nothing if metrics were already in use.
pub fn install(config: &TelemetryConfig, resource: Resource) -> Result<(), TelemetryError> {
    let otlp = if config.otlp_metrics { Some(config) } else { None };
    let metrics = Metrics::build(otlp, resource)?;
    if METRICS.set(metrics).is_err() {
        tracing::warn!("metrics were recorded before telemetry was set up; OTLP metrics are off");
    }
    Ok(())
}

fn otlp_reader(config: &TelemetryConfig) -> Result<PeriodicReader<opentelemetry_otlp::MetricExporter>, TelemetryError> {
    let exporter = match config.effective_protocol() {
        OtlpProtocol::Grpc => {
            let mut builder = opentelemetry_otlp::MetricExporter::builder().with_tonic();
            if let Some(endpoint) = &config.endpoint {
                builder = builder.with_endpoint(endpoint.clone());
            }
            builder.build()
        }
        OtlpProtocol::HttpProtobuf => {
            let mut builder =
                opentelemetry_otlp::MetricExporter::builder().with_http().with_protocol(Protocol::HttpBinary);
            if let Some(endpoint) = &config.endpoint {
                builder = builder.with_endpoint(signal_url(endpoint, "metrics"));
            }
            builder.build()
        }
    }
    .map_err(|err| TelemetryError::Exporter(err.to_string()))?;
    Ok(PeriodicReader::builder(exporter)
        .with_interval(Duration::from_secs(config.metrics_interval_secs.max(1)))
        .build())
}

impl Metrics {
    fn build(otlp: Option<&TelemetryConfig>, resource: Resource) -> Result<Metrics, TelemetryError> {
        let registry = prometheus::Registry::new();
        let exporter = opentelemetry_prometheus::exporter()
            .with_registry(registry.clone())
            .build()
            .map_err(|err| TelemetryError::Exporter(err.to_string()))?;
        let mut builder = SdkMeterProvider::builder().with_resource(resource).with_reader(exporter);
        if let Some(config) = otlp {
            builder = builder.with_reader(otlp_reader(config)?);
        }
        Ok(Metrics::with_provider(builder.build(), registry))
    }

    /// Instruments that record nowhere: the fallback if the exporter cannot be built.
    fn detached() -> Metrics {
        Metrics::with_provider(SdkMeterProvider::builder().build(), prometheus::Registry::new())
    }

    fn with_provider(provider: SdkMeterProvider, registry: prometheus::Registry) -> Metrics {
        let meter = provider.meter(super::otel::SCOPE);
        let histogram = |name: &'static str, description: &'static str| {
            meter
                .f64_histogram(name)
                .with_unit("ms")
                .with_description(description)
                .with_boundaries(BUCKETS_MS.to_vec())
                .build()
        };
        let registries: Arc<Mutex<Vec<Weak<CallRegistry>>>> = Arc::default();
        let observed = Arc::clone(&registries);
        let _active = meter
            .u64_observable_gauge("parley.calls.active")
            .with_description("Calls in progress")
            .with_callback(move |gauge| {
                let active = match observed.lock() {
                    Ok(list) => list.iter().filter_map(Weak::upgrade).map(|r| r.active() as u64).sum(),
                    Err(_) => 0,
                };
                gauge.observe(active, &[]);
            })
            .build();
        Metrics {
            calls: meter.u64_counter("parley.calls").with_description("Calls started").build(),
            calls_refused: meter
                .u64_counter("parley.calls.refused")
                .with_description("Voice webhooks and media stream upgrades refused, by reason")
                .build(),
            turns: meter.u64_counter("parley.turns").with_description("Caller turns answered").build(),
            barge_ins: meter
                .u64_counter("parley.barge_ins")
                .with_description("Times the caller cut the agent off")
                .build(),
            replies_resumed: meter
                .u64_counter("parley.replies.resumed")
                .with_description("Barge-ins that turned out to be noise: the paused reply went on")
                .build(),
            provider_errors: meter
                .u64_counter("parley.provider.errors")
                .with_description("STT, LLM and TTS failures, by stage and provider")
                .build(),
            tool_errors: meter.u64_counter("parley.tool.errors").with_description("Tool calls that failed").build(),
            speculations: meter
                .u64_counter("parley.llm.speculations")
                .with_description("Speculative model requests started on an eager end of turn, by outcome")
                .build(),
            first_audio: histogram(
                "parley.turn.first_audio",
                "End of the caller's speech to the first audio of the reply sent to Twilio",
            ),
            stage: histogram("parley.stage.duration", "Each stage of a turn, by stage name"),
            barge_in_reaction: histogram("parley.barge_in.reaction", "Barge-in speech onset to Twilio clear sent"),
            tool_duration: histogram("parley.tool.duration", "Tool calls, by tool and outcome"),
            call_cost: meter
                .f64_histogram("parley.call.cost")
                .with_description("What each call cost by stage (stt, llm, tts, twilio, total), in [cost].currency")
                .with_boundaries(COST_BUCKETS.to_vec())
                .build(),
            transcribe_queue: meter
                .u64_gauge("parley.transcribe.queue_depth")
                .with_description("Calls waiting for (or in) offline transcription in the archive's shared queue")
                .build(),
            provider,
            registry,
            registries,
        }
    }

    /// The shared after-call queue's depth, as last seen: what archive workers are scaled on.
    pub fn transcribe_queue_depth(&self, depth: usize) {
        self.transcribe_queue.record(depth as u64, &[]);
    }

    /// Counts the live calls of this server in the active-calls gauge.
    pub fn watch_registry(&self, registry: &Arc<CallRegistry>) {
        if let Ok(mut list) = self.registries.lock() {
            list.retain(|r| r.strong_count() > 0);
            list.push(Arc::downgrade(registry));
        }
    }

    pub fn call_started(&self) {
        self.calls.add(1, &[]);
    }

    /// A voice webhook or media stream upgrade was refused (`parley_calls_refused_total{reason}`).
    pub fn call_refused(&self, reason: RefusedCall) {
        self.calls_refused.add(1, &[KeyValue::new("reason", reason.label())]);
    }

    /// Records a finished turn: the turn, its stages, and its barge-in if it had one.
    pub fn turn_finished(&self, latency: &TurnLatency) {
        self.turns.add(1, &[]);
        if let Some(d) = latency.speech_end_to_first_audio() {
            self.first_audio.record(ms(d), &[]);
        }
        for (stage, value) in latency.stages_ms() {
            self.stage.record(value, &[KeyValue::new("stage", stage)]);
        }
        if let Some(d) = latency.barge_in_reaction() {
            self.barge_ins.add(1, &[]);
            self.barge_in_reaction.record(ms(d), &[]);
        }
    }

    /// A barge-in was a false interruption and the reply resumed (`parley_replies_resumed_total`).
    pub fn reply_resumed(&self) {
        self.replies_resumed.add(1, &[]);
    }

    pub fn provider_error(&self, stage: &str, provider: &str) {
        self.provider_errors
            .add(1, &[KeyValue::new("stage", stage.to_owned()), KeyValue::new("provider", provider.to_owned())]);
    }

    /// A speculative request ended: `committed`, `discarded` or `mismatched` (each one was a real model request).
    pub fn speculation(&self, outcome: &'static str) {
        self.speculations.add(1, &[KeyValue::new("outcome", outcome)]);
    }

    /// A call ended and was priced.
    pub fn call_cost(&self, cost: &crate::cost::CallCost) {
        let stages =
            [("stt", cost.stt), ("llm", cost.llm), ("tts", cost.tts), ("twilio", cost.twilio), ("total", cost.total)];
        for (stage, amount) in stages {
            let labels = [KeyValue::new("stage", stage), KeyValue::new("currency", cost.currency.clone())];
            self.call_cost.record(amount, &labels);
        }
    }

    pub fn tool_finished(&self, tool: &str, duration: Duration, is_error: bool) {
        let outcome = if is_error { "error" } else { "ok" };
        self.tool_duration
            .record(ms(duration), &[KeyValue::new("tool", tool.to_owned()), KeyValue::new("outcome", outcome)]);
        if is_error {
            self.tool_errors.add(1, &[KeyValue::new("tool", tool.to_owned())]);
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn prometheus_text(&self) -> String {
        let families = self.registry.gather();
        prometheus::TextEncoder::new().encode_to_string(&families).unwrap_or_else(|err| format!("# error: {err}\n"))
    }

    /// Pushes what was recorded (OTLP) before the process exits.
    pub fn shutdown(&self) {
        if let Err(err) = self.provider.shutdown() {
            tracing::debug!(%err, "metrics shutdown");
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use tokio::time::Instant;

    use super::*;

    /// A turn with every stage timed, answered in 601 ms and cut off by the caller 50 ms after they began.
    fn a_turn_with_a_barge_in() -> TurnLatency {
        let t = Instant::now();
        let at = |ms: u64| Some(t + Duration::from_millis(ms));
        TurnLatency {
            speech_ended: at(0),
            stt_final: at(250),
            end_of_turn: at(300),
            llm_request_sent: at(301),
            llm_first_token: at(500),
            first_piece_ready: at(520),
            first_piece: at(520),
            first_tts_request: at(521),
            first_tts_audio: at(600),
            first_audio_sent: at(601),
            barge_in_onset: at(900),
            clear_sent: at(950),
            ..TurnLatency::default()
        }
    }

    #[test]
    fn a_turn_shows_up_in_the_prometheus_text() {
        let metrics = Metrics::build(None, Resource::builder().build()).expect("metrics");
        let registry = CallRegistry::new(4);
        metrics.watch_registry(&registry);
        let _permit = registry.admit().expect("a call slot");
        metrics.call_started();
        metrics.call_refused(RefusedCall::Capacity);
        metrics.turn_finished(&a_turn_with_a_barge_in());
        metrics.provider_error("llm", "openai");
        metrics.tool_finished("lookup_order", Duration::from_millis(40), true);
        metrics.speculation("discarded");
        metrics.reply_resumed();
        let text = metrics.prometheus_text();
        for expected in [
            "parley_calls_total",
            "parley_calls_refused_total",
            "reason=\"capacity\"",
            "parley_turns_total",
            "parley_barge_ins_total",
            "parley_replies_resumed_total",
            "parley_turn_first_audio_milliseconds_bucket",
            "parley_barge_in_reaction_milliseconds_count",
            "stage=\"llm_first_token\"",
            "parley_provider_errors_total",
            "provider=\"openai\"",
            "parley_tool_duration_milliseconds_bucket",
            "parley_tool_errors_total",
            "parley_llm_speculations_total",
            "outcome=\"discarded\"",
        ] {
            assert!(text.contains(expected), "{expected} missing:\n{text}");
        }
        let active = text.lines().find(|l| l.starts_with("parley_calls_active")).expect("active calls gauge");
        assert!(active.ends_with(" 1"), "{active}");
    }

    /// The alerting rules and the dashboard shipped in deploy/ name metrics and stages that exist: a renamed metric
    /// or stage would leave an alert that never fires and a panel that stays empty.
    #[test]
    fn the_shipped_alerts_and_dashboard_name_metrics_parley_exports() {
        let metrics = Metrics::build(None, Resource::builder().build()).expect("metrics");
        let registry = CallRegistry::new(4);
        metrics.watch_registry(&registry);
        metrics.call_started();
        metrics.call_refused(RefusedCall::Capacity);
        metrics.call_refused(RefusedCall::BadSignature);
        metrics.turn_finished(&a_turn_with_a_barge_in());
        metrics.provider_error("llm", "openai");
        metrics.tool_finished("lookup_order", Duration::from_millis(40), true);
        metrics.speculation("used");
        metrics.transcribe_queue_depth(2);
        metrics.call_cost(&crate::cost::CallCost { currency: "USD".into(), total: 0.02, ..Default::default() });
        let text = metrics.prometheus_text();
        let shipped = [
            ("deploy/prometheus/alerts.yaml", include_str!("../../deploy/prometheus/alerts.yaml")),
            ("deploy/grafana/parley.json", include_str!("../../deploy/grafana/parley.json")),
        ];
        for (file, source) in shipped {
            let source = source.replace("\\\"", "\"");
            let mut named = 0;
            for (i, _) in source.match_indices("parley_") {
                if source[..i].ends_with('"') {
                    continue; // a label's value (the stage `parley_added`), checked below
                }
                let name: String = source[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '_' || c.is_ascii_digit())
                    .collect();
                named += 1;
                assert!(
                    text.contains(&format!("\n{name}")),
                    "{file} uses {name}, which Parley does not export:\n{text}"
                );
            }
            for (i, _) in source.match_indices("stage=\"") {
                let stage = source[i + 7..].split('"').next().unwrap_or_default();
                assert!(text.contains(&format!("stage=\"{stage}\"")), "{file} uses the stage {stage}, never recorded");
            }
            assert!(named >= 10, "{file} was read: {named} metric names");
        }
    }
}
