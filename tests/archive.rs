//! The call archive end to end: recordings aligned on both legs, barge-in cuts, crash recovery of the real binary,
//! retention, and the `parley archive` commands.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use loadgen::{say, Rig, RigOptions, WAIT};
use parley::archive::{
    caller_turns, list_calls, read_legs, read_metadata, read_timeline, Archive, ArchiveStore, CallMetadata, CallStatus,
    LocalStore, TimelineEvent,
};
use parley::call::echo::EchoFactory;
use parley::call::tap::{TapEvent, TapFactory};
use parley::call::CallInfo;
use parley::edge;
use sim_caller::{silence, tone, StartOptions};
use tokio::time::Instant;

/// A 20 ms window is "loud" above this RMS; the test tones have an RMS of about 5,600, silence decodes near 0.
const LOUD: f64 = 1_000.0;
const WINDOW: usize = 160;

fn rms(samples: &[i16]) -> f64 {
    (samples.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / samples.len().max(1) as f64).sqrt()
}

/// The loud stretches of a leg, as (start, end) in milliseconds, from 20 ms windows; gaps up to 60 ms (a late frame
/// on a loaded machine) do not split a stretch.
fn bursts(leg: &[i16]) -> Vec<(u64, u64)> {
    let mut bursts: Vec<(u64, u64)> = Vec::new();
    for (i, window) in leg.chunks(WINDOW).enumerate() {
        if rms(window) < LOUD {
            continue;
        }
        let (start, end) = (i as u64 * 20, i as u64 * 20 + 20);
        match bursts.last_mut() {
            Some(last) if start - last.1 <= 60 => last.1 = end,
            _ => bursts.push((start, end)),
        }
    }
    bursts
}

fn leg_ms(leg: &[i16]) -> u64 {
    leg.len() as u64 / 8
}

/// The loudest RMS of the leg's 20 ms windows between two times.
fn loudest(leg: &[i16], from_ms: u64, to_ms: u64) -> f64 {
    let range = (from_ms as usize * 8).min(leg.len())..(to_ms as usize * 8).min(leg.len());
    leg[range].chunks(WINDOW).map(rms).fold(0.0, f64::max)
}

/// Polls the archive until the call is sealed; returns its folder.
async fn wait_sealed(root: &Path, call_sid: &str) -> (PathBuf, CallMetadata) {
    let store = LocalStore::new(root).expect("store");
    let deadline = Instant::now() + WAIT;
    loop {
        let calls = list_calls(&store).expect("archive lists");
        if let Some((key, metadata)) = calls.into_iter().find(|(_, m)| m.call_sid == call_sid) {
            if metadata.status == CallStatus::Sealed {
                return (store.local_dir(&key).expect("local"), metadata);
            }
        }
        assert!(Instant::now() < deadline, "call {call_sid} was not sealed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_echoed_call_is_recorded_aligned_on_both_channels() {
    init_logs();
    let root = tempfile::tempdir().unwrap();
    let archive = Archive::new(Arc::new(LocalStore::new(root.path()).unwrap()), true);
    let mut config = test_config();
    config.agent.echo_delay_ms = 500;
    let echo = Arc::new(EchoFactory { delay: Duration::from_millis(500) });
    let server = edge::start(config, secrets(), echo, Some(Arc::new(archive))).await.expect("server starts");
    let mut call = place_call(&server).await;
    // Two 400 ms tones a second apart; the echo plays each back half a second later.
    call.stream_audio(&tone(440.0, 400, 8_000)).await.unwrap();
    call.stream_audio(&silence(600)).await.unwrap();
    call.stream_audio(&tone(440.0, 400, 8_000)).await.unwrap();
    call.stream_audio(&silence(1_200)).await.unwrap();
    call.send_stop().unwrap();

    let (dir, metadata) = wait_sealed(root.path(), &StartOptions::default().call_sid).await;
    let (caller, agent) = read_legs(&dir).expect("the recording decodes");
    assert_eq!(caller.len(), agent.len());
    assert_eq!(Some(leg_ms(&caller)), metadata.duration_ms, "the file is as long as the call");
    assert!(leg_ms(&caller) >= 2_600, "the recording holds all the caller sent: {} ms", leg_ms(&caller));
    assert!(leg_ms(&caller) < 10_000, "the recording is longer than the call: {} ms", leg_ms(&caller));

    let heard = bursts(&caller);
    let played = bursts(&agent);
    assert_eq!(heard.len(), 2, "caller leg: {heard:?}");
    assert_eq!(played.len(), 2, "agent leg: {played:?}");
    for (start, end) in &heard {
        assert!((360..=440).contains(&(end - start)), "a 400 ms tone lasts {} ms: {heard:?}", end - start);
    }
    for (start, end) in &played {
        assert!((360..=520).contains(&(end - start)), "a 400 ms echo lasts {} ms: {played:?}", end - start);
    }
    assert!((960..=1_040).contains(&(heard[1].0 - heard[0].0)), "caller tones are a second apart: {heard:?}");
    for (caller_tone, agent_tone) in heard.iter().zip(&played) {
        let lag = agent_tone.0 as i64 - caller_tone.0 as i64;
        assert!((440..2_000).contains(&lag), "the echo plays 500 ms after the caller: {heard:?} {played:?}");
    }

    assert_eq!(metadata.ended_by.as_deref(), Some("Stopped"));
    assert_eq!(metadata.stream_sid, StartOptions::default().stream_sid);
    let from = metadata.from.expect("from");
    assert!(from != "+15550001111" && from.ends_with("1111"), "the number is redacted: {from}");
    let timeline = read_timeline(&dir).unwrap();
    assert!(matches!(timeline.first().map(|e| &e.event), Some(TimelineEvent::CallStarted { .. })), "{timeline:?}");
    assert_eq!(timeline.last().map(|e| &e.event), Some(&TimelineEvent::CallEnded { reason: "Stopped".into() }));
    server.shutdown().await.unwrap();
}

/// Drives the archive's tap directly with known times: agent audio plays back to back from its send time, and a clear
/// cuts it exactly there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clear_cuts_the_agent_leg_where_it_came() {
    let root = tempfile::tempdir().unwrap();
    let archive = Archive::new(Arc::new(LocalStore::new(root.path()).unwrap()), false);
    let call = CallInfo { call_sid: "CAcut".into(), stream_sid: "MZcut".into(), ..CallInfo::default() };
    // The test's clock starts before the recording's (which starts inside `open`): a frame stamped `i * 20` ms then
    // never lands a slot late, however long `open` takes on a loaded machine.
    let t0 = Instant::now();
    let tap = archive.open(&call);
    let ms = |n: u64| t0 + Duration::from_millis(n);
    let loud = Bytes::from(tone(300.0, 20, 8_000));
    for i in 1..=50 {
        tap.send(TapEvent::CallerAudio { at: ms(i * 20), frame: loud.clone() });
    }
    // A second of agent audio sent at once at 200 ms, cleared at 500 ms: the caller heard 200–500 ms of it.
    for _ in 0..50 {
        tap.send(TapEvent::AgentAudioSent { at: ms(200), frame: Bytes::from(tone(500.0, 20, 8_000)) });
    }
    tap.send(TapEvent::AgentAudioCleared { at: ms(500) });
    tap.send(TapEvent::Ended { at: ms(1_000), reason: "Stopped".into() });

    let (dir, metadata) = wait_sealed(root.path(), "CAcut").await;
    let (caller, agent) = read_legs(&dir).unwrap();
    assert_eq!(metadata.duration_ms, Some(1_000));
    assert_eq!(leg_ms(&caller), 1_000);
    let played = bursts(&agent);
    assert_eq!(played.len(), 1, "{played:?}");
    assert!(played[0].0.abs_diff(200) <= 20 && played[0].1.abs_diff(500) <= 20, "agent leg: {played:?}");
    assert!(loudest(&agent, 540, 1_000) < LOUD / 4.0, "agent audio after the clear");
    assert_eq!(bursts(&caller), vec![(0, 1_000)]);
    let timeline = read_timeline(&dir).unwrap();
    assert!(timeline.iter().any(|e| e.event == TimelineEvent::AgentAudioCleared && e.ms.abs_diff(500) <= 2));
}

/// The recording is the wire audio itself: μ-law bytes copied, not re-encoded, so both legs decode to exactly what
/// was sent, where it was sent, and the file is a stereo μ-law WAV whose sizes were patched at the seal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_recording_is_the_wire_audio_sample_for_sample_on_both_legs() {
    let root = tempfile::tempdir().unwrap();
    let archive = Archive::new(Arc::new(LocalStore::new(root.path()).unwrap()), false);
    let call = CallInfo { call_sid: "CAwire".into(), stream_sid: "MZwire".into(), ..CallInfo::default() };
    let t0 = Instant::now();
    let tap = archive.open(&call);
    let ms = |n: u64| t0 + Duration::from_millis(n);
    // The caller speaks a second of a sweep of tones (every frame different); the agent answers at 400 ms with
    // 300 ms of its own.
    let caller_frames: Vec<Bytes> = (0..50u64).map(|i| Bytes::from(tone(200.0 + 20.0 * i as f32, 20, 8_000))).collect();
    let agent_frames: Vec<Bytes> = (0..15u64).map(|i| Bytes::from(tone(700.0 + 30.0 * i as f32, 20, 8_000))).collect();
    for (i, frame) in caller_frames.iter().enumerate() {
        tap.send(TapEvent::CallerAudio { at: ms(20 * (i as u64 + 1)), frame: frame.clone() });
    }
    for frame in &agent_frames {
        tap.send(TapEvent::AgentAudioSent { at: ms(400), frame: frame.clone() });
    }
    tap.send(TapEvent::Ended { at: ms(1_000), reason: "Stopped".into() });

    let (dir, metadata) = wait_sealed(root.path(), "CAwire").await;
    assert!(!dir.join("recording.opus").exists(), "nothing is encoded during the call");
    let wav = std::fs::read(dir.join("recording.wav")).unwrap();
    let u16_at = |at: usize| u16::from_le_bytes([wav[at], wav[at + 1]]);
    let u32_at = |at: usize| u32::from_le_bytes(wav[at..at + 4].try_into().unwrap());
    assert_eq!((&wav[..4], &wav[8..16]), (&b"RIFF"[..], &b"WAVEfmt "[..]));
    assert_eq!((u16_at(20), u16_at(22), u32_at(24), u16_at(34)), (7, 2, 8_000, 8), "stereo 8 kHz 8-bit μ-law");
    assert_eq!(u32_at(4) as usize, wav.len() - 8, "the RIFF size is patched");
    assert_eq!(&wav[50..54], b"data");
    assert_eq!(u32_at(54) as usize, wav.len() - 58, "the data size is patched");
    assert_eq!(u32_at(46) as usize, (wav.len() - 58) / 2, "the fact chunk counts the sample pairs");

    let (caller, agent) = read_legs(&dir).unwrap();
    assert_eq!(metadata.duration_ms, Some(1_000));
    assert_eq!((caller.len(), agent.len()), (8_000, 8_000));
    let sent_caller: Vec<i16> = caller_frames.iter().flat_map(|f| parley::audio::mulaw::decode(f)).collect();
    assert!(caller == sent_caller, "the caller leg is the caller's audio, from the call's first sample");
    // The agent's audio starts where it was sent (the test's clock runs a little ahead of the recorder's, so up to a
    // few ms early) and is exactly what was sent, back to back; silence around it.
    let sent_agent: Vec<i16> = agent_frames.iter().flat_map(|f| parley::audio::mulaw::decode(f)).collect();
    let start =
        (0..=8 * 40).map(|early| 8 * 400 - early).find(|&at| agent[at..at + sent_agent.len()] == sent_agent[..]);
    let start = start.expect("the agent's audio is on the agent leg, unchanged, near 400 ms");
    assert!(agent[..start].iter().chain(&agent[start + sent_agent.len()..]).all(|&s| s == 0), "silence elsewhere");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_barge_in_silences_the_agent_channel_at_the_clear() {
    init_logs();
    let root = tempfile::tempdir().unwrap();
    let archive = Archive::new(Arc::new(LocalStore::new(root.path()).unwrap()), false);
    let openai = barge_in_model();
    let mut rig = Rig::start(RigOptions { openai, taps: Some(Arc::new(archive)), ..RigOptions::default() }).await;
    let call = rig.call(7).await;
    // About a second of the reply is heard before the caller cuts in.
    talk_over_the_agent(&mut rig, call, 60).await;

    let (dir, _) = wait_sealed(root.path(), &format!("CA{:032}", 7)).await;
    let timeline = read_timeline(&dir).unwrap();
    let cleared = timeline.iter().find(|e| e.event == TimelineEvent::AgentAudioCleared).expect("a clear").ms;
    assert!(timeline.iter().any(|e| matches!(e.event, TimelineEvent::BargeIn { turn: 1, .. })), "{timeline:?}");
    let turns = caller_turns(&dir).unwrap();
    assert_eq!(turns.first().map(|t| t.text.as_str()), Some("Book a table for two."), "{turns:?}");

    let (_, agent) = read_legs(&dir).unwrap();
    // The fake TTS speaks a quiet tone (RMS about 1,400).
    let before = loudest(&agent, cleared.saturating_sub(500), cleared);
    assert!(before > 700.0, "the reply played up to the clear at {cleared} ms: rms {before}");
    // The playout had audio queued ahead when the clear came; none of it may appear on the agent leg.
    let after = loudest(&agent, cleared + 40, cleared + 400);
    assert!(after < LOUD / 4.0, "agent audio after the clear at {cleared} ms: rms {after}");
}

/// A short lease, so that a call a crash left open is sealed within seconds.
const LEASE_SECS: u64 = 3;

fn parley_command(root: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_parley"));
    command
        .env("PARLEY__ARCHIVE__ROOT", root)
        .env("PARLEY__SERVER__LISTEN", "127.0.0.1:0")
        .env("PARLEY__SERVER__PUBLIC_URL", PUBLIC_URL)
        .env("PARLEY__AGENT__ECHO_DELAY_MS", "200")
        .env("PARLEY__ARCHIVE__LEASE_SECS", LEASE_SECS.to_string())
        .env("PARLEY__LOCAL__TRANSCRIBE__AFTER_CALL", "false")
        .env("TWILIO_AUTH_TOKEN", AUTH_TOKEN)
        .env("RUST_LOG", "warn");
    command
}

/// Starts `parley serve` archiving under `root`; returns once it listens (start-up housekeeping is done by then).
fn spawn_parley(root: &Path) -> (ParleyProcess, String) {
    let mut command = parley_command(root);
    command.arg("serve");
    spawn_listening(command)
}

/// An old, sealed call in the archive, as a previous month would have left it.
fn plant_old_call(root: &Path) -> PathBuf {
    let dir = root.join("2001/01/01/CAold");
    std::fs::create_dir_all(&dir).unwrap();
    let metadata = serde_json::json!({
        "call_sid": "CAold", "stream_sid": "MZold", "from": null, "to": null, "started_at_ms": 978_307_200_000u64,
        "ended_at_ms": 978_307_201_000u64, "duration_ms": 1000, "status": "sealed", "ended_by": "Stopped", "turns": 0
    });
    std::fs::write(dir.join("metadata.json"), metadata.to_string()).unwrap();
    dir
}

/// The call the crash test places (a Twilio CallSid: `CA` and 32 hex digits).
const CRASH_SID: &str = "CAc4a5c4a5c4a5c4a5c4a5c4a5c4a5c4a5";
/// The call the instance-restart test keeps live while another instance starts beside it.
const SHARED_SID: &str = "CA5a4ed0000000000000000000000000aa";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_mid_call_leaves_a_recording_that_the_restart_seals() {
    let root = tempfile::tempdir().unwrap();
    let old = plant_old_call(root.path());
    let (mut parley, addr) = spawn_parley(root.path());
    assert!(!old.exists(), "retention removed the call from 2001 at start-up");

    let mut call = connect_call(&addr, CRASH_SID).await.unwrap();
    let options = StartOptions { call_sid: CRASH_SID.into(), ..StartOptions::default() };
    call.start(&options).unwrap();
    call.send_dtmf("7").unwrap();
    // Keep talking until the archive holds over a second of the call, then kill Parley mid-sentence.
    let store = LocalStore::new(root.path()).unwrap();
    let deadline = Instant::now() + WAIT;
    let (dir, before) = loop {
        call.stream_audio(&tone(440.0, 200, 8_000)).await.unwrap();
        let found = list_calls(&store).unwrap().into_iter().find(|(_, m)| m.call_sid == CRASH_SID);
        if let Some(dir) = found.and_then(|(key, _)| store.local_dir(&key)) {
            if let Ok((caller, _)) = read_legs(&dir) {
                if leg_ms(&caller) >= 1_000 {
                    break (dir, leg_ms(&caller));
                }
            }
        }
        assert!(Instant::now() < deadline, "the archive never held a second of the call");
    };
    parley.child.kill().unwrap();
    parley.child.wait().unwrap();
    call.vanish();
    assert_eq!(read_metadata(&dir).unwrap().status, CallStatus::Open, "the crash left the call open");

    // The restart seals the call once the killed instance's lease on it has lapsed.
    let (restarted, _) = spawn_parley(root.path());
    let (_, metadata) = wait_sealed(root.path(), CRASH_SID).await;
    assert_eq!(metadata.ended_by.as_deref(), Some("recovered"));
    let (caller, agent) = read_legs(&dir).expect("the sealed recording decodes");
    assert!(leg_ms(&caller) >= before, "audio up to the kill is kept: {} < {before} ms", leg_ms(&caller));
    assert_eq!(metadata.duration_ms, Some(leg_ms(&caller)));
    assert_eq!(agent.len(), caller.len());
    assert!(loudest(&caller, 0, before) > LOUD, "the caller's tone is in the recording");
    let timeline = read_timeline(&dir).unwrap();
    assert!(matches!(timeline.first().map(|e| &e.event), Some(TimelineEvent::CallStarted { .. })), "{timeline:?}");
    assert!(timeline.iter().any(|e| e.event == TimelineEvent::Dtmf { digit: "7".into() }), "{timeline:?}");
    assert_eq!(timeline.last().map(|e| &e.event), Some(&TimelineEvent::CallEnded { reason: "recovered".into() }));
    drop(restarted);

    let list = parley_command(root.path()).args(["archive", "list"]).output().expect("runs");
    let list = String::from_utf8_lossy(&list.stdout);
    assert!(list.lines().any(|l| l.contains(CRASH_SID) && l.contains("sealed (recovered)")), "{list}");
    let show = parley_command(root.path()).args(["archive", "show", CRASH_SID]).output().expect("runs");
    assert!(show.status.success());
    let show = String::from_utf8_lossy(&show.stdout);
    assert!(show.contains("key     7") && show.contains("call ended (recovered)"), "{show}");
}

/// The caller leg of a call's recording so far, in ms (0 until the archive holds the call).
fn recorded_caller_ms(store: &LocalStore, call_sid: &str) -> u64 {
    let found = list_calls(store).unwrap().into_iter().find(|(_, m)| m.call_sid == call_sid);
    found.and_then(|(key, _)| store.local_dir(&key)).and_then(|dir| read_legs(&dir).ok()).map_or(0, |l| leg_ms(&l.0))
}

/// Thirty minutes of caller audio sent at once: Parley takes no more of it than the margin ahead of the clock (the
/// rest is dropped), seals the call at once, and another call's recording goes on all the while.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_minutes_of_audio_at_once_is_bounded_and_another_call_keeps_recording() {
    init_logs();
    let root = tempfile::tempdir().unwrap();
    let archive = Archive::new(Arc::new(LocalStore::new(root.path()).unwrap()), false);
    let echo = Arc::new(EchoFactory { delay: Duration::from_millis(100) });
    let server = edge::start(test_config(), secrets(), echo, Some(Arc::new(archive))).await.expect("server starts");
    let addr = server.local_addr.to_string();
    let store = LocalStore::new(root.path()).unwrap();
    let options = |n: u32| StartOptions {
        call_sid: format!("CA{n:032x}"),
        stream_sid: format!("MZ{n:032x}"),
        ..StartOptions::default()
    };
    let (steady_options, burst_options) = (options(0x5ead), options(0xb0));

    let mut steady = connect_call(&addr, &steady_options.call_sid).await.unwrap();
    steady.start(&steady_options).unwrap();
    let steady_talks = tokio::spawn(async move {
        steady.stream_audio(&tone(440.0, 8_000, 8_000)).await.unwrap();
        steady
    });

    let mut burst = connect_call(&addr, &burst_options.call_sid).await.unwrap();
    burst.start(&burst_options).unwrap();
    let started = Instant::now();
    // 30 minutes in one-second messages, then hang up.
    let one_second = tone(300.0, 1_000, 8_000);
    for _ in 0..1_800 {
        burst.send_media(&one_second).unwrap();
    }
    burst.send_stop().unwrap();
    let (dir, metadata) = wait_sealed(root.path(), &burst_options.call_sid).await;
    let call_lasted = started.elapsed();
    let (caller, _) = read_legs(&dir).unwrap();
    eprintln!("30 min sent at once: {} ms recorded, sealed {call_lasted:?} after start", leg_ms(&caller));
    assert!(
        leg_ms(&caller) <= call_lasted.as_millis() as u64 + 1_000 + 300,
        "{} ms recorded for a call of {call_lasted:?}: more than the 1 s margin ahead of the clock",
        leg_ms(&caller)
    );
    assert_eq!(metadata.duration_ms, Some(leg_ms(&caller)));
    let loud_ms: u64 = bursts(&caller).iter().map(|(from, to)| to - from).sum();
    assert!(loud_ms >= 1_000, "the audio within the margin is kept: {loud_ms} ms");

    // The steady call's recording goes on during and after the burst.
    let before = recorded_caller_ms(&store, &steady_options.call_sid);
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let after = recorded_caller_ms(&store, &steady_options.call_sid);
    // (The open recording is read in whole Ogg pages, a few hundred ms behind: growth, not a second, is asserted.)
    assert!(after >= before + 200, "the steady call's recording stalled: {before} ms then {after} ms");
    let mut steady = steady_talks.await.unwrap();
    steady.send_stop().unwrap();
    let (dir, _) = wait_sealed(root.path(), &steady_options.call_sid).await;
    let (caller, _) = read_legs(&dir).unwrap();
    let heard = bursts(&caller);
    assert_eq!(heard.len(), 1, "the steady tone is whole: {heard:?}");
    assert!((heard[0].1 - heard[0].0).abs_diff(8_000) <= 100, "8 s of tone recorded as {heard:?}");
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_restarting_beside_a_live_call_leaves_it_whole() {
    let root = tempfile::tempdir().unwrap();
    let (_live, addr) = spawn_parley(root.path());
    let mut call = connect_call(&addr, SHARED_SID).await.unwrap();
    call.start(&StartOptions { call_sid: SHARED_SID.into(), ..StartOptions::default() }).unwrap();
    call.send_dtmf("1").unwrap();
    call.stream_audio(&tone(440.0, 1_000, 8_000)).await.unwrap();

    // A second instance on the same archive starts mid-call, is killed, and starts again; then keeps running for
    // more than two lease periods (its periodic pass over the archive sees the live call each time).
    let (other, _) = spawn_parley(root.path());
    call.stream_audio(&tone(440.0, 500, 8_000)).await.unwrap();
    drop(other);
    let (_restarted, _) = spawn_parley(root.path());
    for _ in 0..(LEASE_SECS * 5 / 2) {
        call.stream_audio(&tone(440.0, 1_000, 8_000)).await.unwrap();
    }
    call.send_dtmf("2").unwrap();
    call.stream_audio(&tone(440.0, 500, 8_000)).await.unwrap();
    call.send_stop().unwrap();
    let streamed_ms = 1_000 + 500 + LEASE_SECS * 5 / 2 * 1_000 + 500;

    let (dir, metadata) = wait_sealed(root.path(), SHARED_SID).await;
    assert_ne!(metadata.ended_by.as_deref(), Some("recovered"), "the live call was sealed by another instance");
    let timeline = read_timeline(&dir).unwrap();
    let ends = timeline.iter().filter(|e| matches!(e.event, TimelineEvent::CallEnded { .. })).count();
    assert_eq!(ends, 1, "{timeline:?}");
    assert!(timeline.iter().any(|e| e.event == TimelineEvent::Dtmf { digit: "2".into() }), "{timeline:?}");
    let (caller, _) = read_legs(&dir).unwrap();
    assert!(leg_ms(&caller) >= streamed_ms, "the recording holds {} of {streamed_ms} ms", leg_ms(&caller));
    assert_eq!(metadata.duration_ms, Some(leg_ms(&caller)));
    // The tone runs to the end of the call: the recording was not cut when the other instance started.
    assert!(loudest(&caller, streamed_ms - 400, streamed_ms - 100) > LOUD, "the end of the call is missing");
    let owner = metadata.owner.expect("the call names its owner");
    assert!(!owner.instance.is_empty());
}

/// A model whose every answer reports the same usage, so a call's token count is known.
struct KnownUsageModel;

const KNOWN_REPLY: &str = "Your table for two is booked.";

#[async_trait::async_trait]
impl parley::llm::LanguageModel for KnownUsageModel {
    fn name(&self) -> &'static str {
        "known"
    }
    fn model(&self) -> &str {
        "known-model"
    }
    async fn stream(&self, _: parley::llm::LlmRequest) -> Result<parley::llm::LlmStream, parley::llm::LlmError> {
        use parley::llm::{FinishReason, LlmEvent, Usage};
        let usage =
            Usage { input_tokens: 1_200, cached_input_tokens: 400, output_tokens: 7, cache_write_input_tokens: 0 };
        let events = vec![
            Ok(LlmEvent::TextDelta(KNOWN_REPLY.into())),
            Ok(LlmEvent::Finished { reason: FinishReason::Stop, usage: Some(usage), request_id: None }),
        ];
        Ok(Box::pin(futures_util::stream::iter(events)))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_priced_call_has_its_cost_by_stage_in_its_metadata() {
    use parley::cost::{ModelUsage, PriceTable, TokenPrices};
    init_logs();
    let root = tempfile::tempdir().unwrap();
    let archive = Archive::new(Arc::new(LocalStore::new(root.path()).unwrap()), false);
    let prices = PriceTable {
        currency: "USD".into(),
        twilio_per_minute: Some(0.0085),
        stt_per_minute: [("deepgram".to_owned(), 0.0077)].into(),
        tts_per_thousand_chars: [("cartesia".to_owned(), 0.03)].into(),
        llm: [(
            "known-model".to_owned(),
            TokenPrices { input_per_million: 0.15, cached_input_per_million: Some(0.075), output_per_million: 0.6 },
        )]
        .into(),
    };
    let options = RigOptions {
        llm: Some(Arc::new(KnownUsageModel)),
        taps: Some(Arc::new(archive)),
        prices,
        ..RigOptions::default()
    };
    let mut rig = Rig::start(options).await;
    let mut call = rig.call(8).await;
    say(&mut call, 1_000).await;
    rig.next_report().await;
    call.hang_up().await;

    let (_, metadata) = wait_sealed(root.path(), &format!("CA{:032}", 8)).await;
    let cost = metadata.cost.expect("the call was priced");
    let usage = &cost.usage;
    let tokens = ModelUsage {
        provider: "known".into(),
        model: "known-model".into(),
        input_tokens: 1_200,
        cached_input_tokens: 400,
        output_tokens: 7,
    };
    assert_eq!(usage.llm, vec![tokens]);
    assert_eq!(usage.tts_characters, KNOWN_REPLY.len() as u64);
    let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
    assert!(close(cost.llm, (800.0 * 0.15 + 400.0 * 0.075 + 7.0 * 0.6) / 1e6), "{cost:?}");
    assert!(close(cost.tts, KNOWN_REPLY.len() as f64 / 1000.0 * 0.03), "{cost:?}");
    assert!(close(cost.twilio, 0.0085), "a call under a minute is billed one minute: {cost:?}");
    // Every caller frame after the STT connected was streamed to it: at least the second of speech, at most the call.
    let call_seconds = metadata.duration_ms.unwrap_or(0) as f64 / 1000.0;
    assert!(usage.stt_seconds >= 1.0 && usage.stt_seconds <= call_seconds + 0.5, "{usage:?} over {call_seconds} s");
    assert!(close(cost.stt, usage.stt_seconds / 60.0 * 0.0077), "{cost:?}");
    assert!((usage.call_seconds - call_seconds).abs() < 1.0, "{usage:?} vs {call_seconds} s");
    assert!(close(cost.total, cost.stt + cost.llm + cost.tts + cost.twilio) && cost.priced, "{cost:?}");
}
