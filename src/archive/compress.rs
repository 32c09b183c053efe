//! After the call: the μ-law recording (`recording.wav`, written live at no CPU cost) becomes `recording.opus`, about
//! a quarter of its size, and the μ-law file is deleted once the Opus file is written and read back whole.
//!
//! The after-call worker (the one that transcribes, on any machine sharing the archive) does this before it
//! transcribes, and transcribes the μ-law legs it already decoded. Until it has run — or when after-call processing is
//! off — the call keeps its μ-law recording, which every reader accepts ([`super::read_call_legs`]).

use std::path::Path;

use super::opus::{self, OggOpusWriter, FRAME_SAMPLES};
use super::{wav, ArchiveError, ArchiveStore, CallKey, OPUS_RECORDING_FILE, WAV_RECORDING_FILE};

/// A call's two legs (caller, agent), 8 kHz PCM.
pub type Legs = (Vec<i16>, Vec<i16>);

/// Writes the call's `recording.opus` from its sealed μ-law recording, checks it, then deletes the μ-law file;
/// returns the legs it decoded. `None` when there is nothing to do: no μ-law recording (done already, or a call
/// recorded in Opus), or one whose header was never patched (a call not sealed yet is left alone).
pub fn compress_recording(store: &dyn ArchiveStore, key: &CallKey) -> Result<Option<Legs>, ArchiveError> {
    let path = key.relative_path().join(WAV_RECORDING_FILE);
    let bytes = match store.get(key, WAV_RECORDING_FILE) {
        Ok(bytes) => bytes,
        Err(err) if super::not_found(&err) => return Ok(None),
        Err(err) => return Err(err),
    };
    if !wav::parse(&bytes, &path)?.complete {
        return Ok(None);
    }
    let (caller, agent) = wav::decode_legs(&bytes, &path)?;
    let encoded = encode(&caller, &agent)?;
    verify(&encoded, caller.len(), &key.relative_path().join(OPUS_RECORDING_FILE))?;
    store.put(key, OPUS_RECORDING_FILE, &encoded)?;
    store.delete(key, WAV_RECORDING_FILE)?;
    Ok(Some((caller, agent)))
}

/// Both legs as stereo Ogg Opus, 20 ms a packet (a last partial frame is padded with silence).
pub(crate) fn encode(caller: &[i16], agent: &[i16]) -> Result<Vec<u8>, ArchiveError> {
    // About 4 KB a second at the writer's bitrate.
    let mut writer = OggOpusWriter::new(Vec::with_capacity(caller.len() / 2 + 4_096))?;
    for (caller, agent) in caller.chunks(FRAME_SAMPLES).zip(agent.chunks(FRAME_SAMPLES)) {
        writer.push_frame(caller, agent)?;
    }
    writer.finish()
}

/// The Opus file is complete and decodes to the recording's length (rounded up to whole frames).
fn verify(encoded: &[u8], samples: usize, path: &Path) -> Result<(), ArchiveError> {
    let invalid = |message: String| ArchiveError::NotOpus { path: path.to_owned(), message };
    if !opus::parse(encoded, path)?.complete {
        return Err(invalid("the encoded recording has no end of stream".into()));
    }
    let (caller, agent) = opus::decode_legs(encoded, path)?;
    let expected = samples.div_ceil(FRAME_SAMPLES) * FRAME_SAMPLES;
    if caller.len() != expected || agent.len() != expected {
        return Err(invalid(format!("decodes to {} samples where the μ-law recording has {expected}", caller.len())));
    }
    Ok(())
}
