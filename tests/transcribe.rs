//! The offline transcription worker: durable queue shared by workers, per-call transcript and hot-path comparison,
//! and the OpenAI-compatible backend against a fake server on 127.0.0.1. The Whisper test needs `espeak-ng` and the model
//! that `scripts/fetch-whisper-model` installs.
// Without the `whisper` feature, only the tests that need no Whisper model are built.
#![cfg_attr(not(feature = "whisper"), allow(unused_imports, dead_code))]

mod scale_out;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Bytes;
use axum::http::HeaderMap;
use axum::routing::post;
use axum::Router;
use parley::archive::{
    read_call_legs, read_call_metadata, read_legs, seal_abandoned_calls, Archive, ArchiveStore, CallKey, CallMetadata,
    CallStatus, LocalStore, OPUS_RECORDING_FILE, WAV_RECORDING_FILE,
};
use parley::audio::mulaw;
use parley::call::tap::{TapEvent, TapFactory};
use parley::call::CallInfo;
use parley::local::{EspeakSettings, WhisperEngine, WhisperSettings};
use parley::transcribe::wer::wer;
use parley::transcribe::ArchiveReader;
use parley::transcribe::{
    transcribe_call, CallReader, CallTranscript, HotTurn, JobOutcome, LocalWhisper, OpenAiTranscribeSettings,
    OpenAiTranscriber, Queue, Segment, TranscribeError, TranscriptionBackend, Worker, TRANSCRIPT_FILE,
};
use parley::tts::espeak::synthesize_mulaw;

/// Two sentences of the kind callers say. (Whisper tiny.en mishears some phrases of synthetic speech once it is cut
/// to the telephone band — "check the status" comes back as "can't understand" — so the test material is ordinary
/// caller speech, not a phrase chosen to be hard.)
const SENTENCE: &str = "i want to cancel my order. can you tell me where my package is";

/// The demo caller's voice: espeak-ng's third male variant, a little slower than its default.
fn caller_voice() -> EspeakSettings {
    EspeakSettings { voice: "en-us+m3".into(), speed: 140, ..EspeakSettings::default() }
}

/// A call made up in memory: legs and hot-path turns per folder.
#[derive(Default)]
struct FakeCalls {
    legs: Vec<i16>,
    turns: Vec<HotTurn>,
}

impl CallReader for FakeCalls {
    fn legs(&self, _call: &CallKey) -> Result<(Vec<i16>, Vec<i16>), TranscribeError> {
        Ok((self.legs.clone(), vec![0; self.legs.len()]))
    }

    fn hot_turns(&self, _call: &CallKey) -> Result<Vec<HotTurn>, TranscribeError> {
        Ok(self.turns.clone())
    }
}

/// A backend that never answers: a worker stuck on it stands for one that crashed mid-job.
struct Stuck(Arc<tokio::sync::Notify>);

#[async_trait]
impl TranscriptionBackend for Stuck {
    fn describe(&self) -> String {
        "stuck".into()
    }
    async fn transcribe_leg(&self, _pcm: Vec<i16>) -> Result<Vec<Segment>, TranscribeError> {
        self.0.notify_one();
        std::future::pending().await
    }
}

/// A backend that "hears" one fixed sentence on any leg with sound.
struct Canned;

#[async_trait]
impl TranscriptionBackend for Canned {
    fn describe(&self) -> String {
        "canned".into()
    }
    async fn transcribe_leg(&self, pcm: Vec<i16>) -> Result<Vec<Segment>, TranscribeError> {
        Ok(if pcm.iter().any(|&s| s != 0) {
            vec![Segment { start: 1.0, end: 2.0, text: "yes please".into() }]
        } else {
            Vec::new()
        })
    }
}

/// A local archive with one call folder in it.
fn archive_with_a_call(root: &Path) -> (Arc<dyn ArchiveStore>, CallKey) {
    let store: Arc<dyn ArchiveStore> = Arc::new(LocalStore::new(root).unwrap());
    let key = CallKey::from_relative(Path::new("2026/11/25/CA0001")).unwrap();
    std::fs::create_dir_all(store.local_dir(&key).unwrap()).unwrap();
    (store, key)
}

fn read_transcript(store: &dyn ArchiveStore, key: &CallKey) -> CallTranscript {
    serde_json::from_slice(&store.get(key, TRANSCRIPT_FILE).unwrap()).unwrap()
}

/// A backend that keeps the length of each leg it is given.
#[derive(Default)]
struct Measuring(Mutex<Vec<usize>>);

#[async_trait]
impl TranscriptionBackend for Measuring {
    fn describe(&self) -> String {
        "measuring".into()
    }
    async fn transcribe_leg(&self, pcm: Vec<i16>) -> Result<Vec<Segment>, TranscribeError> {
        self.0.lock().unwrap().push(pcm.len());
        Ok(Vec::new())
    }
}

/// Runs one after-call worker over `key` in `store`: the μ-law recording becomes `recording.opus`, then the
/// transcript; returns the leg lengths the backend was given.
async fn after_call(store: &Arc<dyn ArchiveStore>, key: &CallKey) -> Vec<usize> {
    let queue = Queue::new(Arc::clone(store), "worker", Duration::from_secs(30));
    queue.enqueue(key).unwrap();
    let backend = Arc::new(Measuring::default());
    let worker = Worker::new(queue, backend.clone(), Arc::new(ArchiveReader::new(Arc::clone(store))), 1);
    let outcomes = worker.drain(|_| {}).await.unwrap();
    assert!(matches!(outcomes.as_slice(), [JobOutcome::Done { .. }]), "{outcomes:?}");
    assert!(store.get(key, TRANSCRIPT_FILE).is_ok());
    let lengths = backend.0.lock().unwrap().clone();
    lengths
}

/// A recorded call's μ-law recording is turned into Ogg Opus by the after-call worker, which transcribes the μ-law
/// legs and deletes the μ-law file once the Opus one is written and checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_makes_the_opus_recording_and_transcribes_the_wire_audio() {
    let root = tempfile::tempdir().unwrap();
    let store: Arc<dyn ArchiveStore> = Arc::new(LocalStore::new(root.path()).unwrap());
    let archive = Archive::new(Arc::clone(&store), false);
    let call = CallInfo { call_sid: "CAopus".into(), stream_sid: "MZopus".into(), ..CallInfo::default() };
    let t0 = tokio::time::Instant::now();
    let tap = archive.open(&call);
    let tone = |frequency: f32| {
        (0..160)
            .map(|i| {
                mulaw::encode_sample(((i as f32 / 8000.0 * frequency * std::f32::consts::TAU).sin() * 8000.0) as i16)
            })
            .collect::<Vec<u8>>()
    };
    for i in 1..=100u64 {
        let at = t0 + Duration::from_millis(20 * i);
        tap.send(TapEvent::CallerAudio { at, frame: tone(440.0).into() });
        if i > 50 {
            tap.send(TapEvent::AgentAudioSent { at, frame: tone(660.0).into() });
        }
    }
    tap.send(TapEvent::Ended { at: t0 + Duration::from_millis(2_000), reason: "Stopped".into() });
    let key = loop {
        let calls = parley::archive::list_calls(store.as_ref()).unwrap();
        if let Some((key, _)) = calls.into_iter().find(|(_, m)| m.status == CallStatus::Sealed) {
            break key;
        }
        assert!(t0.elapsed() < Duration::from_secs(20), "the call was not sealed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let dir = store.local_dir(&key).unwrap();
    let (wire_caller, wire_agent) = read_legs(&dir).unwrap();
    assert!(dir.join(WAV_RECORDING_FILE).is_file() && !dir.join(OPUS_RECORDING_FILE).exists());

    let transcribed = after_call(&store, &key).await;
    assert_eq!(transcribed, vec![wire_caller.len(), wire_agent.len()], "both legs, as long as the call");
    assert!(!dir.join(WAV_RECORDING_FILE).exists(), "the μ-law file goes once the Opus one is written");
    let opus = std::fs::read(dir.join(OPUS_RECORDING_FILE)).unwrap();
    assert!(opus.starts_with(b"OggS") && opus.windows(8).any(|w| w == b"OpusHead"));
    let (caller, agent) = read_legs(&dir).unwrap();
    let duration_ms = read_call_metadata(store.as_ref(), &key).unwrap().duration_ms.unwrap();
    assert_eq!(duration_ms, 2_000);
    assert_eq!(
        (caller.len() as u64, agent.len() as u64),
        (duration_ms * 8, duration_ms * 8),
        "the Opus copy lasts as long"
    );
    // The Opus copy carries the same audio on the same legs: the agent is silent, then answers, the caller speaks on.
    let energy = |leg: &[i16], from_ms: usize, to_ms: usize| {
        let part = &leg[from_ms * 8..to_ms * 8];
        (part.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / part.len() as f64).sqrt()
    };
    assert!(energy(&caller, 100, 1_900) > 2_000.0, "caller {}", energy(&caller, 100, 1_900));
    assert!(energy(&agent, 100, 900) < 300.0, "agent before its answer {}", energy(&agent, 100, 900));
    assert!(energy(&agent, 1_100, 1_900) > 2_000.0, "agent answer {}", energy(&agent, 1_100, 1_900));
}

/// A call cut by a crash (the μ-law header's sizes never patched, half a frame and a torn byte at the end) reads,
/// is resealed to its whole frames, and the worker makes an Opus recording as long as what was kept.
#[tokio::test]
async fn a_recording_cut_by_a_crash_is_resealed_and_compressed() {
    let root = tempfile::tempdir().unwrap();
    let (store, key) = archive_with_a_call(root.path());
    let dir = store.local_dir(&key).unwrap();
    let metadata = CallMetadata {
        call_sid: "CA0001".into(),
        stream_sid: "MZ0001".into(),
        from: None,
        to: None,
        started_at_ms: 1_764_028_800_000,
        ended_at_ms: None,
        duration_ms: None,
        status: CallStatus::Open,
        ended_by: None,
        turns: 0,
        cost: None,
        owner: None,
    };
    std::fs::write(dir.join("metadata.json"), serde_json::to_vec(&metadata).unwrap()).unwrap();
    // The header as the recorder writes it when the call starts: every size a placeholder.
    let mut wav = Vec::new();
    wav.extend_from_slice(b"RIFF\xff\xff\xff\xffWAVEfmt \x12\0\0\0");
    wav.extend_from_slice(&[7, 0, 2, 0]);
    wav.extend_from_slice(&8_000u32.to_le_bytes());
    wav.extend_from_slice(&16_000u32.to_le_bytes());
    wav.extend_from_slice(&[2, 0, 8, 0, 0, 0]);
    wav.extend_from_slice(b"fact\x04\0\0\0\xff\xff\xff\xffdata\xff\xff\xff\xff");
    // 1.5 s of a tone on the caller leg, then half a frame and a byte of a torn write.
    let frame: Vec<u8> = (0..160)
        .flat_map(|i| {
            [mulaw::encode_sample(((i as f32 / 8000.0 * 500.0 * std::f32::consts::TAU).sin() * 8000.0) as i16), 0xFF]
        })
        .collect();
    for _ in 0..75 {
        wav.extend_from_slice(&frame);
    }
    wav.extend_from_slice(&frame[..160]);
    wav.push(0x42);
    std::fs::write(dir.join(WAV_RECORDING_FILE), &wav).unwrap();
    let (live, _) = read_call_legs(store.as_ref(), &key).expect("the cut recording reads");
    assert_eq!(live.len(), 75 * 160 + 80, "whole sample pairs, as far as they go");

    let sealed = seal_abandoned_calls(store.as_ref(), store.list().unwrap(), std::time::SystemTime::now()).unwrap();
    assert_eq!(sealed, vec![key.clone()]);
    let metadata = read_call_metadata(store.as_ref(), &key).unwrap();
    assert_eq!((metadata.status, metadata.duration_ms), (CallStatus::Sealed, Some(1_500)));
    let resealed = std::fs::read(dir.join(WAV_RECORDING_FILE)).unwrap();
    assert_eq!(resealed.len(), 58 + 75 * 320, "cut to its whole frames");
    assert_eq!(u32::from_le_bytes(resealed[54..58].try_into().unwrap()), 75 * 320, "the data size is set");

    assert_eq!(after_call(&store, &key).await, vec![12_000, 12_000]);
    assert!(!dir.join(WAV_RECORDING_FILE).exists());
    let (caller, agent) = read_call_legs(store.as_ref(), &key).unwrap();
    assert_eq!((caller.len(), agent.len()), (12_000, 12_000), "the Opus recording lasts the 1.5 s kept");
}

#[tokio::test]
async fn a_queued_call_survives_a_worker_that_died() {
    let root = tempfile::tempdir().unwrap();
    let (store, key) = archive_with_a_call(root.path());
    let calls = Arc::new(FakeCalls {
        legs: vec![1000; 8000],
        turns: vec![HotTurn { turn: 1, ms: Some(2500), text: "yes please".into() }],
    });
    let claim_for = Duration::from_millis(500);
    let queue = |worker: &str| Queue::new(Arc::clone(&store), worker, claim_for);
    queue("parley").enqueue(&key).unwrap();

    // The first worker dies in the middle of the job.
    let started = Arc::new(tokio::sync::Notify::new());
    let first = Worker::new(queue("first"), Arc::new(Stuck(started.clone())), calls.clone(), 1);
    let running = tokio::spawn(async move { first.drain(|_| {}).await.map(|o| o.len()) });
    started.notified().await;
    running.abort();
    assert!(running.await.is_err(), "the stuck worker cannot have finished");
    assert!(store.get(&key, TRANSCRIPT_FILE).is_err());

    // Another worker leaves the job alone while the dead worker's claim holds, then takes it over.
    let second = Worker::new(queue("second"), Arc::new(Canned), calls, 1);
    assert!(second.drain(|_| {}).await.unwrap().is_empty(), "the claim still holds");
    tokio::time::sleep(claim_for + Duration::from_millis(100)).await;
    let mut outcomes = Vec::new();
    second.drain(|o| outcomes.push(format!("{o:?}"))).await.unwrap();
    assert_eq!(outcomes.len(), 1, "{outcomes:?}");
    let transcript = read_transcript(store.as_ref(), &key);
    assert_eq!(transcript.caller[0].text, "yes please");
    assert!(transcript.agent.is_empty());
    assert_eq!(transcript.comparison.turns[0].wer, 0.0);
    assert!(second.queue().pending().unwrap().is_empty());
}

#[tokio::test]
async fn a_failing_call_is_retried_then_set_aside() {
    struct Broken;
    #[async_trait]
    impl TranscriptionBackend for Broken {
        fn describe(&self) -> String {
            "broken".into()
        }
        async fn transcribe_leg(&self, _pcm: Vec<i16>) -> Result<Vec<Segment>, TranscribeError> {
            Err(TranscribeError::Backend("no engine".into()))
        }
    }
    let root = tempfile::tempdir().unwrap();
    let (store, key) = archive_with_a_call(root.path());
    let queue = Queue::new(store, "worker", Duration::from_secs(30));
    queue.enqueue(&key).unwrap();
    let worker = Worker::new(queue, Arc::new(Broken), Arc::new(FakeCalls::default()), 2);
    let mut gave_up = false;
    for _ in 0..parley::transcribe::queue::MAX_ATTEMPTS {
        for outcome in worker.drain(|_| {}).await.unwrap() {
            let JobOutcome::Failed { gave_up: g, .. } = outcome else { panic!("{outcome:?}") };
            gave_up = g;
        }
    }
    assert!(gave_up);
    assert!(worker.queue().pending().unwrap().is_empty());
    assert_eq!(worker.queue().failed().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_share_twenty_calls_and_take_over_a_dead_workers_job() {
    let root = tempfile::tempdir().unwrap();
    scale_out::two_workers_share_the_queue(Arc::new(LocalStore::new(root.path()).unwrap())).await;
}

#[cfg(feature = "whisper")]
#[tokio::test]
async fn whisper_transcribes_an_espeak_call_and_scores_the_hot_path() {
    let engine = match WhisperEngine::load(&WhisperSettings::default()) {
        Ok(engine) => Arc::new(engine),
        Err(err) => panic!("this test needs the Whisper model: {err}"),
    };
    let speech = synthesize_mulaw(&caller_voice(), SENTENCE).await.expect("espeak-ng (scripts/setup)");
    // One second of silence, the sentence, two seconds of silence.
    let mut legs = vec![0i16; 8000];
    legs.extend(mulaw::decode(&speech));
    let speech_end_ms = legs.len() as u64 / 8;
    legs.extend(vec![0i16; 16000]);
    let calls = Arc::new(FakeCalls {
        legs,
        // The hot path misheard one word, as a live recogniser might.
        turns: vec![HotTurn {
            turn: 1,
            ms: Some(speech_end_ms + 600),
            text: "i want to cancel my order can you tell me where my packet is".into(),
        }],
    });
    let root = tempfile::tempdir().unwrap();
    let (_, key) = archive_with_a_call(root.path());
    let backend = LocalWhisper::new(engine, Default::default());
    let transcript = transcribe_call(&key, &backend, calls).await.unwrap();
    assert_eq!(transcript.caller.len(), 1, "{:?}", transcript.caller);
    let segment = &transcript.caller[0];
    assert!(segment.start > 0.5 && segment.start < 1.0 && segment.end > segment.start, "{segment:?}");
    let whisper_wer = wer(SENTENCE, &segment.text);
    println!("worker heard {:?}: WER {:.1}%", segment.text, whisper_wer * 100.0);
    assert!(whisper_wer < 0.2, "WER {whisper_wer} for {:?}", segment.text);
    let turn = &transcript.comparison.turns[0];
    assert_eq!(turn.whisper, segment.text);
    // The hot path's one wrong word shows up as an error rate near 1 in 14.
    assert!(turn.wer > 0.0 && turn.wer < 0.4, "{turn:?}");
}

/// What the fake server saw.
#[derive(Default)]
struct Seen {
    bodies: Vec<Vec<u8>>,
    auth: Vec<Option<String>>,
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn the_openai_compatible_backend_uploads_wav_and_reads_segments() {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let recorded = seen.clone();
    let app = Router::new().route(
        "/v1/audio/transcriptions",
        post(move |headers: HeaderMap, body: Bytes| {
            let recorded = recorded.clone();
            async move {
                let mut seen = recorded.lock().unwrap();
                seen.auth.push(headers.get("authorization").and_then(|v| v.to_str().ok()).map(str::to_owned));
                seen.bodies.push(body.to_vec());
                // The documented verbose_json shape, with one segment the server itself marks as non-speech.
                r#"{"task":"transcribe","language":"english","duration":3.0,"text":" Hi, I'd like to check my order.",
                    "segments":[{"id":0,"seek":0,"start":0.5,"end":2.9,"text":" Hi, I'd like to check my order.",
                                 "tokens":[50364,2425],"temperature":0.0,"avg_logprob":-0.21,"compression_ratio":0.84,"no_speech_prob":0.01},
                                {"id":1,"seek":0,"start":2.9,"end":3.0,"text":" Thank you.","tokens":[1],"temperature":0.0,
                                 "avg_logprob":-1.5,"compression_ratio":1.0,"no_speech_prob":0.95}]}"#
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let settings = OpenAiTranscribeSettings { base_url: format!("http://{addr}/v1"), ..Default::default() };
    let backend = OpenAiTranscriber::new(settings, Some("sk-test".into())).unwrap();
    // A silent leg is never uploaded (Whisper invents text on silence).
    assert!(backend.transcribe_leg(vec![0; 16000]).await.unwrap().is_empty());
    assert!(seen.lock().unwrap().bodies.is_empty());

    let loud: Vec<i16> = (0..24000).map(|i| if (i / 10) % 2 == 0 { 4000 } else { -4000 }).collect();
    let segments = backend.transcribe_leg(loud).await.unwrap();
    assert_eq!(segments, vec![Segment { start: 0.5, end: 2.9, text: "Hi, I'd like to check my order.".into() }]);

    let seen = seen.lock().unwrap();
    assert_eq!(seen.auth, vec![Some("Bearer sk-test".to_owned())]);
    let body = &seen.bodies[0];
    for field in [
        &b"name=\"model\"\r\n\r\nwhisper-1"[..],
        b"name=\"response_format\"\r\n\r\nverbose_json",
        b"name=\"timestamp_granularities[]\"\r\n\r\nsegment",
        b"name=\"language\"\r\n\r\nen",
        b"filename=\"call.wav\"",
        b"RIFF",
    ] {
        assert!(contains(body, field), "upload lacks {}", String::from_utf8_lossy(field));
    }
    // 3 s of 8 kHz audio goes up as 16 kHz PCM16: 96 000 bytes of samples.
    assert!(body.len() > 96_000, "{} bytes", body.len());
    server.abort();
}

#[tokio::test]
async fn server_errors_are_reported() {
    let app = Router::new().route(
        "/v1/audio/transcriptions",
        post(|| async { (axum::http::StatusCode::NOT_FOUND, "Model 'x' is not installed locally") }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let settings = OpenAiTranscribeSettings { base_url: format!("http://{addr}/v1"), ..Default::default() };
    let backend = OpenAiTranscriber::new(settings, None).unwrap();
    let loud: Vec<i16> = (0..8000).map(|i| if (i / 10) % 2 == 0 { 4000 } else { -4000 }).collect();
    let err = backend.transcribe_leg(loud).await.unwrap_err().to_string();
    assert!(err.contains("404") && err.contains("not installed"), "{err}");
    server.abort();
}
