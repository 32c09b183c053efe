//! Start-up housekeeping: sealing the calls a crash left open, and deleting calls past retention.

use std::io::Write as _;
use std::path::Path;
use std::time::SystemTime;

use super::lease::millis_since_epoch;
use super::meta::{self, CallStatus};
use super::timeline::{self, TimelineEntry, TimelineEvent};
use super::{opus, wav, RecordingForm};
use super::{ArchiveError, ArchiveStore, CallKey, TIMELINE_FILE};

/// The `ended_by` of a call sealed because the instance recording it stopped without sealing it.
pub const RECOVERED: &str = "recovered";

/// Seals every call among `keys` that is abandoned at `now`: still open, and its owner's lease has lapsed (the
/// instance recording it is gone). Calls live on any instance, this one or another sharing the store, are left
/// alone. Returns the calls sealed; a call that cannot be sealed is logged and left as it is.
pub fn seal_abandoned_calls(
    store: &dyn ArchiveStore,
    keys: Vec<CallKey>,
    now: SystemTime,
) -> Result<Vec<CallKey>, ArchiveError> {
    let now_ms = millis_since_epoch(now);
    let mut sealed = Vec::new();
    for key in keys {
        let Ok(metadata) = meta::read(store, &key) else { continue };
        if !metadata.abandoned(now_ms) {
            continue;
        }
        match seal(store, &key) {
            Ok(()) => sealed.push(key),
            Err(err) => tracing::warn!(%err, call = %key, "cannot seal a call left open"),
        }
    }
    Ok(sealed)
}

/// Reseals the recording, ends the timeline and marks the metadata sealed, in that order: should this be interrupted
/// too, the metadata still says "open" and the next start-up tries again.
fn seal(store: &dyn ArchiveStore, key: &CallKey) -> Result<(), ArchiveError> {
    let mut metadata = meta::read(store, key)?;
    let duration_ms = match super::read_call_recording(store, key) {
        Ok((form, bytes)) => reseal_recording(store, key, form, &bytes)?,
        Err(_) => 0,
    };
    let entries = store.get(key, TIMELINE_FILE).map(|bytes| timeline::parse(&bytes)).unwrap_or_default();
    let last_ms = entries.last().map(|entry| entry.ms).unwrap_or(0);
    // Sealing is redone after an interruption (or by two instances at once): the timeline ends only once.
    let ended_already = entries.last().is_some_and(|entry| matches!(entry.event, TimelineEvent::CallEnded { .. }));
    if !ended_already {
        let ended = TimelineEntry {
            ms: last_ms.max(duration_ms),
            event: TimelineEvent::CallEnded { reason: RECOVERED.into() },
        };
        let mut timeline = store.append(key, TIMELINE_FILE)?;
        // A line torn by the crash is ended first, so the new line stands on its own.
        timeline
            .write_all(b"\n")
            .and_then(|()| timeline.write_all(&ended.to_line()))
            .map_err(ArchiveError::io(TIMELINE_FILE))?;
        timeline.sync()?;
    }
    metadata.duration_ms = Some(duration_ms);
    metadata.ended_at_ms = Some(metadata.started_at_ms + duration_ms);
    metadata.status = CallStatus::Sealed;
    metadata.ended_by = Some(RECOVERED.into());
    metadata.turns = entries.iter().filter(|e| matches!(e.event, TimelineEvent::CallerTurn { .. })).count() as u64;
    store.put(key, super::METADATA_FILE, &metadata.to_json())
}

/// Rewrites a recording a crash cut, whole, and returns its length in milliseconds: the μ-law recording cut to its
/// whole frames under a header with its sizes, or (a call recorded in Opus) the Ogg stream given its end.
fn reseal_recording(
    store: &dyn ArchiveStore,
    key: &CallKey,
    form: RecordingForm,
    bytes: &[u8],
) -> Result<u64, ArchiveError> {
    let path = key.relative_path().join(form.file_name());
    match form {
        RecordingForm::Mulaw => {
            let (resealed, pairs) = wav::reseal(bytes, Path::new(&path))?;
            store.put(key, form.file_name(), &resealed)?;
            Ok(pairs / 8)
        }
        RecordingForm::Opus => {
            let resealed = opus::reseal(bytes, Path::new(&path))?;
            store.put(key, form.file_name(), &resealed)?;
            Ok(opus::parse(&resealed, &path)?.packets.len().saturating_sub(1) as u64 * 20)
        }
    }
}

/// Deletes the calls that started more than `retention_days` days before `now` (by their folder's date). Returns how
/// many were deleted.
pub fn sweep_expired(store: &dyn ArchiveStore, retention_days: u32, now: SystemTime) -> Result<usize, ArchiveError> {
    let today = (millis_since_epoch(now) / 86_400_000) as i64;
    let mut removed = 0;
    for key in store.list()? {
        if today - key.days_since_epoch() > i64::from(retention_days) {
            store.remove(&key)?;
            removed += 1;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;
    use crate::archive::meta::CallMetadata;
    use crate::archive::opus::{OggOpusWriter, FRAME_SAMPLES};
    use crate::archive::{LocalStore, METADATA_FILE, OPUS_RECORDING_FILE, WAV_RECORDING_FILE};

    fn open_call(store: &LocalStore, sid: &str, at: SystemTime) -> CallKey {
        let key = store.create_call(CallKey::new(sid, at)).unwrap();
        let metadata = CallMetadata {
            call_sid: sid.into(),
            stream_sid: "MZ1".into(),
            from: None,
            to: None,
            started_at_ms: millis_since_epoch(at),
            ended_at_ms: None,
            duration_ms: None,
            status: CallStatus::Open,
            ended_by: None,
            turns: 0,
            cost: None,
            owner: None,
        };
        store.put(&key, METADATA_FILE, &metadata.to_json()).unwrap();
        key
    }

    #[test]
    fn a_mulaw_recording_cut_by_a_crash_is_sealed_to_its_whole_frames() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path()).unwrap();
        let key = open_call(&store, "CA1", SystemTime::now());
        // What a crash leaves: the header's placeholder sizes, 60 whole frames, half of the 61st and a torn pair.
        let mut writer = wav::MulawWavWriter::new(store.create(&key, WAV_RECORDING_FILE).unwrap()).unwrap();
        for n in 0..60u8 {
            writer.push(&[n; 2 * FRAME_SAMPLES]).unwrap();
        }
        writer.push(&[0x11; FRAME_SAMPLES]).unwrap();
        drop(writer);
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(store.local_dir(&key).unwrap().join(WAV_RECORDING_FILE))
            .unwrap();
        file.write_all(&[0x22]).unwrap();
        drop(file);
        let call_dir = store.local_dir(&key).unwrap();
        let (live, _) = crate::archive::read_legs(&call_dir).expect("an unsealed recording reads");
        assert_eq!(live.len(), 60 * FRAME_SAMPLES + FRAME_SAMPLES / 2, "whole pairs as far as they go");

        assert_eq!(seal_abandoned_calls(&store, store.list().unwrap(), SystemTime::now()).unwrap(), vec![key.clone()]);
        let metadata = meta::read(&store, &key).unwrap();
        assert_eq!((metadata.status, metadata.duration_ms), (CallStatus::Sealed, Some(1_200)));
        let bytes = std::fs::read(call_dir.join(WAV_RECORDING_FILE)).unwrap();
        let parsed = wav::parse(&bytes, Path::new("x")).unwrap();
        assert!(parsed.complete, "the header has its sizes");
        assert_eq!(parsed.pairs(), 60 * FRAME_SAMPLES as u64);
        let (caller, agent) = crate::archive::read_legs(&call_dir).unwrap();
        assert_eq!(caller.len(), 60 * FRAME_SAMPLES);
        assert_eq!(
            (caller[0], caller[FRAME_SAMPLES * 59]),
            (crate::audio::mulaw::decode_sample(0), crate::audio::mulaw::decode_sample(59))
        );
        assert_eq!(agent, caller);
    }

    #[test]
    fn open_calls_recorded_in_opus_are_sealed_with_what_they_hold() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path()).unwrap();
        let key = open_call(&store, "CA1", SystemTime::now());
        let mut writer = OggOpusWriter::new(store.create(&key, OPUS_RECORDING_FILE).unwrap()).unwrap();
        for _ in 0..60 {
            writer.push_frame(&[100; FRAME_SAMPLES], &[0; FRAME_SAMPLES]).unwrap();
        }
        drop(writer);
        store
            .put(&key, TIMELINE_FILE, b"{\"ms\":0,\"type\":\"call_started\",\"call_sid\":\"CA1\",\"stream_sid\":\"MZ1\"}\n{\"ms\":40,\"type\":\"caller_turn\",\"turn\":1,\"text\":\"hi\"}\n{\"ms\":9")
            .unwrap();
        let now = SystemTime::now();
        assert_eq!(seal_abandoned_calls(&store, store.list().unwrap(), now).unwrap().len(), 1);
        assert!(
            seal_abandoned_calls(&store, store.list().unwrap(), now).unwrap().is_empty(),
            "sealed calls stay sealed"
        );
        let call_dir = store.local_dir(&key).unwrap();
        let metadata = meta::read(&store, &key).unwrap();
        assert_eq!(metadata.status, CallStatus::Sealed);
        assert_eq!(metadata.ended_by.as_deref(), Some(RECOVERED));
        assert_eq!(metadata.duration_ms, Some(1_000));
        assert_eq!(metadata.turns, 1);
        let entries = timeline::read_timeline(&call_dir).unwrap();
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[2].event, TimelineEvent::CallEnded { reason: RECOVERED.into() });
        let (caller, agent) = crate::archive::read_legs(&call_dir).unwrap();
        assert_eq!((caller.len(), agent.len()), (50 * FRAME_SAMPLES, 50 * FRAME_SAMPLES));
    }

    #[test]
    fn a_call_another_instance_holds_is_left_alone_until_its_lease_lapses() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path()).unwrap();
        let now = SystemTime::now();
        let key = open_call(&store, "CAlive", now);
        let mut metadata = meta::read(&store, &key).unwrap();
        let other = crate::archive::Ownership::new("other", Duration::from_secs(10));
        metadata.owner = Some(other.claim(now));
        store.put(&key, METADATA_FILE, &metadata.to_json()).unwrap();
        assert!(seal_abandoned_calls(&store, store.list().unwrap(), now + Duration::from_secs(9)).unwrap().is_empty());
        assert_eq!(meta::read(&store, &key).unwrap().status, CallStatus::Open);
        let later = now + Duration::from_secs(11);
        assert_eq!(seal_abandoned_calls(&store, store.list().unwrap(), later).unwrap(), vec![key.clone()]);
        assert_eq!(meta::read(&store, &key).unwrap().ended_by.as_deref(), Some(RECOVERED));
    }

    #[test]
    fn retention_deletes_only_calls_past_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path()).unwrap();
        let now = UNIX_EPOCH + Duration::from_secs(20_000 * 86_400);
        let day = Duration::from_secs(86_400);
        let old = open_call(&store, "CAold", now - 31 * day);
        let recent = open_call(&store, "CArecent", now - 30 * day);
        let today = open_call(&store, "CAtoday", now);
        assert_eq!(sweep_expired(&store, 30, now).unwrap(), 1);
        assert_eq!(store.list().unwrap(), vec![recent, today]);
        assert!(!store.local_dir(&old).unwrap().parent().unwrap().exists(), "the empty day folder goes too");
    }
}
