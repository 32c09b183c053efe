//! The archive on an S3-compatible object store, against a real SeaweedFS started by the tests: the store itself,
//! a call recorded in parts while it goes on, a `kill -9` mid-call sealed by another start once the lease lapses,
//! and two archive workers sharing the after-call queue in the bucket.

mod common;
mod scale_out;
mod weed;

use std::io::Write;
use std::process::Command;
use std::time::{Duration, SystemTime};

use common::*;
use parley::archive::{
    call_recording_form, compress_recording, list_calls, read_call_legs, read_call_recording, read_call_timeline,
    ArchiveStore, CallKey, CallMetadata, CallStatus, RecordingForm, TimelineEvent, OPUS_RECORDING_FILE,
    WAV_RECORDING_FILE,
};
use sim_caller::{tone, StartOptions};
use tokio::time::Instant;
use weed::Weed;

const LEASE_SECS: u64 = 3;
/// The call that ends normally and the call whose instance is killed (CallSids as Twilio's: CA + 32 hex digits).
const ENDED_SID: &str = "CAe4ded00000000000000000000000000e";
const KILLED_SID: &str = "CAc1a1ed0000000000000000000000000c";

/// `parley serve` archiving on the bucket under `prefix`; returns once it listens.
fn spawn_parley(weed: &Weed, prefix: &str) -> (ParleyProcess, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_parley"));
    command
        .arg("serve")
        .envs(weed.parley_env(prefix))
        .env("PARLEY__ARCHIVE__LEASE_SECS", LEASE_SECS.to_string())
        .env("PARLEY__LOCAL__TRANSCRIBE__AFTER_CALL", "false")
        .env("PARLEY__SERVER__LISTEN", "127.0.0.1:0")
        .env("PARLEY__SERVER__PUBLIC_URL", PUBLIC_URL)
        .env("PARLEY__AGENT__ECHO_DELAY_MS", "200")
        .env("TWILIO_AUTH_TOKEN", AUTH_TOKEN)
        .env("RUST_LOG", "warn");
    spawn_listening(command)
}

fn find(store: &dyn ArchiveStore, call_sid: &str) -> Option<(CallKey, CallMetadata)> {
    list_calls(store).expect("the bucket lists").into_iter().find(|(_, m)| m.call_sid == call_sid)
}

async fn wait_sealed(store: &dyn ArchiveStore, call_sid: &str, within: Duration) -> (CallKey, CallMetadata) {
    let deadline = Instant::now() + within;
    loop {
        if let Some((key, metadata)) = find(store, call_sid) {
            if metadata.status == CallStatus::Sealed {
                return (key, metadata);
            }
        }
        assert!(Instant::now() < deadline, "call {call_sid} was not sealed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn leg_ms(leg: &[i16]) -> u64 {
    leg.len() as u64 / 8
}

#[test]
fn the_bucket_keeps_files_written_in_parts_and_replaced_whole() {
    let Some(weed) = Weed::start() else { return };
    let store = weed.store("store-test");
    let now = SystemTime::now();
    let key = store.create_call(CallKey::new("CA1", now)).unwrap();
    store.put(&key, "metadata.json", b"{}").unwrap();
    let again = store.create_call(CallKey::new("CA1", now)).unwrap();
    assert_eq!(again.name, "CA1-2", "a taken key gets a suffix");

    let mut file = store.create(&key, "timeline.jsonl").unwrap();
    file.write_all(b"one\n").unwrap();
    file.sync().unwrap();
    file.write_all(b"two\n").unwrap();
    file.flush().unwrap(); // within the upload period: not uploaded yet
    assert_eq!(store.get(&key, "timeline.jsonl").unwrap(), b"one\n");
    file.sync().unwrap();
    drop(file);
    let mut more = store.append(&key, "timeline.jsonl").unwrap();
    more.write_all(b"three\n").unwrap();
    more.sync().unwrap();
    assert_eq!(store.get(&key, "timeline.jsonl").unwrap(), b"one\ntwo\nthree\n");

    store.put(&key, "timeline.jsonl", b"whole\n").unwrap();
    assert_eq!(store.get(&key, "timeline.jsonl").unwrap(), b"whole\n", "a whole object replaces the parts");
    assert!(store.get(&key, "missing").is_err());

    assert_eq!(store.list().unwrap(), vec![key.clone()]);
    assert_eq!(store.list_since(key.days_since_epoch()).unwrap(), vec![key.clone()]);
    assert!(store.list_since(key.days_since_epoch() + 1).unwrap().is_empty());
    store.remove(&key).unwrap();
    assert!(store.list().unwrap().is_empty());
    assert!(store.get(&key, "metadata.json").is_err());

    // Records beside the calls (the after-call queue): a create succeeds once, whoever races for it.
    assert!(store.create_record(".queue/claims/a/0001", b"first").unwrap());
    assert!(!store.create_record(".queue/claims/a/0001", b"second").unwrap(), "the bucket refuses a second create");
    assert_eq!(store.get_record(".queue/claims/a/0001").unwrap().as_deref(), Some(&b"first"[..]));
    store.put_record(".queue/claims/a/0002", b"x").unwrap();
    assert_eq!(store.list_records(".queue/claims/a").unwrap(), vec!["0001", "0002"]);
    assert!(store.list().unwrap().is_empty(), "records are not calls");
    store.delete_record(".queue/claims/a/0001").unwrap();
    store.delete_record(".queue/claims/a/0001").unwrap();
    assert_eq!(store.get_record(".queue/claims/a/0001").unwrap(), None);
    assert!(store.list_records(".queue/nothing").unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_on_the_bucket_is_recorded_in_parts_and_sealed_when_it_ends() {
    let Some(weed) = Weed::start() else { return };
    let prefix = "ended";
    let (_parley, addr) = spawn_parley(&weed, prefix);
    let mut call = connect_call(&addr, ENDED_SID).await.unwrap();
    call.start(&StartOptions { call_sid: ENDED_SID.into(), ..StartOptions::default() }).unwrap();
    call.send_dtmf("5").unwrap();
    let store = weed.store(prefix);
    let call_ms = 6_000;
    for _ in 0..call_ms / 1_000 {
        call.stream_audio(&tone(440.0, 1_000, 8_000)).await.unwrap();
    }
    // While the call goes on, its recording is in the bucket already, in parts.
    let (key, open) = find(store.as_ref(), ENDED_SID).expect("the open call is in the bucket");
    assert_eq!(open.status, CallStatus::Open);
    let (live, _) = read_call_legs(store.as_ref(), &key).expect("the live recording decodes up to its last part");
    assert!(leg_ms(&live) + 2_000 >= call_ms, "only {} ms of {call_ms} ms uploaded", leg_ms(&live));

    call.send_stop().unwrap();
    let stopped = Instant::now();
    let (key, metadata) = wait_sealed(store.as_ref(), ENDED_SID, Duration::from_secs(20)).await;
    let seal_ms = stopped.elapsed().as_millis();
    assert_eq!(metadata.ended_by.as_deref(), Some("Stopped"));
    let (caller, agent) = read_call_legs(store.as_ref(), &key).unwrap();
    assert!(leg_ms(&caller) >= call_ms, "{} ms recorded of {call_ms}", leg_ms(&caller));
    assert_eq!(caller.len(), agent.len());
    let timeline = read_call_timeline(store.as_ref(), &key).unwrap();
    assert!(timeline.iter().any(|e| e.event == TimelineEvent::Dtmf { digit: "5".into() }), "{timeline:?}");
    assert!(matches!(timeline.last().map(|e| &e.event), Some(TimelineEvent::CallEnded { .. })), "{timeline:?}");
    // The call is recorded in its wire form: μ-law, its header patched at the seal (the first part rewritten).
    let duration_ms = metadata.duration_ms.unwrap();
    assert_eq!(leg_ms(&caller), duration_ms);
    let (form, wav) = read_call_recording(store.as_ref(), &key).unwrap();
    assert_eq!(form, RecordingForm::Mulaw);
    assert_eq!(&wav[..4], b"RIFF");
    assert_eq!(u32::from_le_bytes(wav[4..8].try_into().unwrap()) as usize, wav.len() - 8, "RIFF size patched");
    let data_size = u32::from_le_bytes(wav[wav.len() - caller.len() * 2 - 4..][..4].try_into().unwrap());
    assert_eq!(data_size as usize, caller.len() * 2, "data size patched");
    let recording = wav.len() as u64;

    // The after-call step makes recording.opus from it, checks it and deletes the μ-law file.
    let legs = compress_recording(store.as_ref(), &key).unwrap().expect("a sealed μ-law recording is compressed");
    assert_eq!(legs.0, caller, "the legs handed on are the μ-law ones");
    assert_eq!(call_recording_form(store.as_ref(), &key).unwrap(), Some(RecordingForm::Opus));
    assert!(!store.has(&key, WAV_RECORDING_FILE).unwrap());
    let (opus_caller, opus_agent) = read_call_legs(store.as_ref(), &key).unwrap();
    assert_eq!((opus_caller.len(), opus_agent.len()), (caller.len(), agent.len()), "the Opus copy lasts as long");
    assert!(compress_recording(store.as_ref(), &key).unwrap().is_none(), "done once");
    let compressed = store.get(&key, OPUS_RECORDING_FILE).unwrap().len() as u64;
    eprintln!(
        "figures: sealed {seal_ms} ms after the stop; recording {recording} bytes μ-law, {compressed} bytes Opus for \
         {duration_ms} ms = {} and {} bytes per call-minute",
        recording * 60_000 / duration_ms,
        compressed * 60_000 / duration_ms
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_killed_on_the_bucket_is_sealed_by_lease_expiry_with_its_audio() {
    let Some(weed) = Weed::start() else { return };
    let prefix = "killed";
    let (mut parley, addr) = spawn_parley(&weed, prefix);
    let mut call = connect_call(&addr, KILLED_SID).await.unwrap();
    call.start(&StartOptions { call_sid: KILLED_SID.into(), ..StartOptions::default() }).unwrap();
    let started = Instant::now();
    call.send_dtmf("9").unwrap();
    for _ in 0..5 {
        call.stream_audio(&tone(440.0, 1_000, 8_000)).await.unwrap();
    }
    // kill -9: no drain, no seal.
    parley.child.kill().unwrap();
    let killed_at_ms = started.elapsed().as_millis() as u64;
    let killed = Instant::now();
    parley.child.wait().unwrap();
    call.vanish();
    let store = weed.store(prefix);
    let (_, open) = find(store.as_ref(), KILLED_SID).expect("the call is in the bucket");
    assert_eq!(open.status, CallStatus::Open, "the kill left the call open");

    let (_restarted, _) = spawn_parley(&weed, prefix);
    let (key, metadata) = wait_sealed(store.as_ref(), KILLED_SID, Duration::from_secs(6 * LEASE_SECS + 10)).await;
    let sealed_after_ms = killed.elapsed().as_millis();
    assert_eq!(metadata.ended_by.as_deref(), Some("recovered"));
    let (caller, _) = read_call_legs(store.as_ref(), &key).expect("the resealed recording decodes");
    assert_eq!(call_recording_form(store.as_ref(), &key).unwrap(), Some(RecordingForm::Mulaw));
    let kept = leg_ms(&caller);
    assert!(kept + 2_000 >= killed_at_ms, "{kept} ms kept of a call killed at {killed_at_ms} ms");
    assert_eq!(metadata.duration_ms, Some(kept));
    let timeline = read_call_timeline(store.as_ref(), &key).unwrap();
    assert!(timeline.iter().any(|e| e.event == TimelineEvent::Dtmf { digit: "9".into() }), "{timeline:?}");
    let ends = timeline.iter().filter(|e| matches!(e.event, TimelineEvent::CallEnded { .. })).count();
    assert_eq!(ends, 1, "{timeline:?}");
    eprintln!(
        "figures: killed at {killed_at_ms} ms, {kept} ms kept ({} ms lost); sealed {sealed_after_ms} ms after the kill \
         (lease {LEASE_SECS} s)",
        killed_at_ms.saturating_sub(kept)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_share_twenty_calls_on_the_bucket() {
    let Some(weed) = Weed::start() else { return };
    scale_out::two_workers_share_the_queue(weed.store("workers")).await;
}
