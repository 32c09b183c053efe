//! An OpenAI-compatible `POST /v1/audio/transcriptions` server as the transcription backend: OpenAI's `whisper-1`,
//! or a self-hosted speaches or whisper.cpp server.
//!
//! Each leg is sent as a 16 kHz PCM16 WAV (whisper.cpp's safest input, resampled here with a proper filter) with
//! `response_format=verbose_json` and `timestamp_granularities[]=segment` (the bracketed field name the official
//! SDKs and speaches use) for segment times. Legs with no speech are not sent at all: Whisper invents text on
//! silence. Segments the server itself marks as probably not speech are dropped for the same reason. Long legs are
//! sent in pieces that stay under OpenAI's 25 MB upload limit.

use std::time::Duration;

use async_trait::async_trait;
use reqwest::multipart::{Form, Part};
use serde::Deserialize;

use super::backend::{utterances, TranscriptionBackend};
use super::{Segment, TranscribeError};
use crate::local::resample::{phone_to_whisper, to_i16};
use crate::local::segment::SegmenterConfig;
use crate::local::wav;

/// The `[local.transcribe.openai]` settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OpenAiTranscribeSettings {
    /// Base URL up to and including `/v1`.
    pub base_url: String,
    pub model: String,
    pub language: Option<String>,
    /// Environment variable holding the API key; unset means no key (local servers).
    pub api_key_env: String,
    pub timeout_secs: u64,
}

impl Default for OpenAiTranscribeSettings {
    fn default() -> Self {
        OpenAiTranscribeSettings {
            base_url: "https://api.openai.com/v1".into(),
            model: "whisper-1".into(),
            language: Some("en".into()),
            api_key_env: "OPENAI_API_KEY".into(),
            timeout_secs: 300,
        }
    }
}

/// Samples of 16 kHz audio per upload: 10 minutes, 19.2 MB as PCM16.
const MAX_UPLOAD_SAMPLES: usize = 16_000 * 600;

/// `no_speech_prob` above which, together with a low `avg_logprob`, a segment is taken for a hallucination.
const NO_SPEECH_PROB: f64 = 0.6;
const LOW_AVG_LOGPROB: f64 = -1.0;

#[derive(Debug, Deserialize)]
struct VerboseResponse {
    #[serde(default)]
    text: String,
    #[serde(default)]
    duration: Option<f64>,
    #[serde(default)]
    segments: Option<Vec<ApiSegment>>,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
struct ApiSegment {
    start: f64,
    end: f64,
    text: String,
    #[serde(default)]
    no_speech_prob: Option<f64>,
    #[serde(default)]
    avg_logprob: Option<f64>,
}

/// The HTTP backend.
pub struct OpenAiTranscriber {
    client: reqwest::Client,
    settings: OpenAiTranscribeSettings,
    api_key: Option<String>,
}

impl OpenAiTranscriber {
    pub fn new(settings: OpenAiTranscribeSettings, api_key: Option<String>) -> Result<Self, TranscribeError> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(settings.timeout_secs.max(1)))
            .build()
            .map_err(|e| TranscribeError::Backend(format!("HTTP client: {e}")))?;
        Ok(OpenAiTranscriber { client, settings, api_key })
    }

    async fn upload(&self, wav: Vec<u8>) -> Result<VerboseResponse, TranscribeError> {
        let url = format!("{}/audio/transcriptions", self.settings.base_url.trim_end_matches('/'));
        let file = Part::bytes(wav)
            .file_name("call.wav")
            .mime_str("audio/wav")
            .map_err(|e| TranscribeError::Backend(e.to_string()))?;
        let mut form = Form::new()
            .part("file", file)
            .text("model", self.settings.model.clone())
            .text("response_format", "verbose_json")
            .text("timestamp_granularities[]", "segment")
            .text("temperature", "0");
        if let Some(language) = &self.settings.language {
            form = form.text("language", language.clone());
        }
        let mut request = self.client.post(&url).multipart(form);
        if let Some(key) = &self.api_key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.map_err(|e| TranscribeError::Backend(format!("{url}: {e}")))?;
        let status = response.status();
        let body = response.text().await.map_err(|e| TranscribeError::Backend(format!("{url}: {e}")))?;
        if !status.is_success() {
            return Err(TranscribeError::Backend(format!("{url} answered HTTP {}: {}", status.as_u16(), body.trim())));
        }
        let parsed: VerboseResponse = serde_json::from_str(&body)
            .map_err(|e| TranscribeError::Backend(format!("{url} sent a response Parley could not parse: {e}")))?;
        // Some servers (older whisper.cpp) report errors with HTTP 200.
        if let Some(error) = &parsed.error {
            return Err(TranscribeError::Backend(format!("{url} reported an error: {error}")));
        }
        Ok(parsed)
    }
}

/// The segments of one response, shifted by `offset` seconds; a response without segments (plain `json`) becomes
/// one segment spanning the upload.
fn segments_of(response: VerboseResponse, offset: f64, upload_secs: f64) -> Vec<Segment> {
    match response.segments {
        Some(segments) => segments
            .into_iter()
            .filter(|s| {
                !(s.no_speech_prob.unwrap_or(0.0) > NO_SPEECH_PROB && s.avg_logprob.unwrap_or(0.0) < LOW_AVG_LOGPROB)
            })
            .map(|s| Segment { start: offset + s.start, end: offset + s.end, text: s.text.trim().to_owned() })
            .filter(|s| !s.text.is_empty())
            .collect(),
        None if !response.text.trim().is_empty() => vec![Segment {
            start: offset,
            end: offset + response.duration.unwrap_or(upload_secs),
            text: response.text.trim().to_owned(),
        }],
        None => Vec::new(),
    }
}

#[async_trait]
impl TranscriptionBackend for OpenAiTranscriber {
    fn describe(&self) -> String {
        format!("openai-compatible ({}, {})", self.settings.base_url, self.settings.model)
    }

    async fn transcribe_leg(&self, pcm8k: Vec<i16>) -> Result<Vec<Segment>, TranscribeError> {
        if utterances(&pcm8k, &SegmenterConfig::default()).is_empty() {
            return Ok(Vec::new());
        }
        let pcm16k = tokio::task::spawn_blocking(move || phone_to_whisper(&pcm8k).map(|f| to_i16(&f)))
            .await
            .map_err(|e| TranscribeError::Backend(format!("resampling thread failed: {e}")))?
            .map_err(|e| TranscribeError::Backend(e.to_string()))?;
        let mut segments = Vec::new();
        for (index, piece) in pcm16k.chunks(MAX_UPLOAD_SAMPLES).enumerate() {
            let offset = (index * MAX_UPLOAD_SAMPLES) as f64 / 16_000.0;
            let response = self.upload(wav::write(piece, 16_000)).await?;
            segments.extend(segments_of(response, offset, piece.len() as f64 / 16_000.0));
        }
        Ok(segments)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probable_hallucinations_are_dropped_and_times_shifted() {
        let response: VerboseResponse = serde_json::from_str(
            r#"{"task":"transcribe","language":"english","duration":4.0,"text":"Hi. Thank you.",
                "segments":[{"id":0,"seek":0,"start":0.0,"end":1.5,"text":" Hi.","avg_logprob":-0.2,"no_speech_prob":0.01},
                            {"id":1,"seek":0,"start":2.0,"end":4.0,"text":" Thank you.","avg_logprob":-1.4,"no_speech_prob":0.9}]}"#,
        )
        .unwrap();
        assert_eq!(segments_of(response, 600.0, 4.0), vec![Segment { start: 600.0, end: 601.5, text: "Hi.".into() }]);
    }

    #[test]
    fn plain_json_becomes_one_segment() {
        let response: VerboseResponse = serde_json::from_str(r#"{"text":" Hello."}"#).unwrap();
        assert_eq!(segments_of(response, 0.0, 3.0), vec![Segment { start: 0.0, end: 3.0, text: "Hello.".into() }]);
    }
}
