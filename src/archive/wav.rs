//! `recording.wav`: the call's two legs as they crossed the wire — G.711 μ-law, 8 kHz, 8 bits, two channels
//! interleaved (left = caller, right = agent), in a RIFF/WAVE file with format tag 7 (`WAVE_FORMAT_MULAW`).
//!
//! The recorder appends the audio as it becomes final, so recording a call costs a copy of its bytes and nothing
//! else (the Opus form is made after the call, see [`super::compress`]). The header's sizes (RIFF, `fact`, `data`)
//! are unknown until the call ends: they are written as `0xFFFFFFFF` and patched when the call is sealed. A file that
//! a crash cut keeps the placeholders (and maybe half a sample pair): the reader takes the data as long as the bytes
//! actually present, whole sample pairs only, and recovery rewrites it with its sizes ([`reseal`]).

use std::io::Write;
use std::path::Path;

use super::opus::FRAME_SAMPLES;
use super::store::CallWriter;
use super::{ArchiveError, WAV_RECORDING_FILE};
use crate::audio::mulaw;

/// `WAVE_FORMAT_MULAW`.
const FORMAT_MULAW: u16 = 7;
/// `WAVE_FORMAT_PCM`, for the 16-bit copy served to browsers.
const FORMAT_PCM: u16 = 1;
const CHANNELS: u16 = 2;
const RATE: u32 = 8_000;
/// The size a header carries until the call is sealed.
const UNKNOWN: u32 = u32::MAX;
/// RIFF + `fmt ` (18 bytes, as non-PCM formats have) + `fact` + `data` headers.
pub(crate) const HEADER_LEN: usize = 12 + 8 + 18 + 8 + 4 + 8;
/// Bytes of one 20 ms frame of both legs.
pub(crate) const FRAME_BYTES: usize = FRAME_SAMPLES * CHANNELS as usize;
/// The μ-law byte of silence (it decodes to 0).
pub(crate) const SILENCE: u8 = 0xFF;

/// The header of a μ-law recording of `pairs` sample pairs; `None` while the length is not known yet.
pub(crate) fn header(pairs: Option<u64>) -> [u8; HEADER_LEN] {
    let data = pairs.map_or(UNKNOWN, |pairs| u32::try_from(pairs * u64::from(CHANNELS)).unwrap_or(UNKNOWN));
    let riff = if data == UNKNOWN { UNKNOWN } else { data.saturating_add(HEADER_LEN as u32 - 8) };
    let frames = if data == UNKNOWN { UNKNOWN } else { data / u32::from(CHANNELS) };
    let mut out = [0u8; HEADER_LEN];
    let mut at = 0;
    let mut put = |bytes: &[u8]| {
        out[at..at + bytes.len()].copy_from_slice(bytes);
        at += bytes.len();
    };
    put(b"RIFF");
    put(&riff.to_le_bytes());
    put(b"WAVE");
    put(b"fmt ");
    put(&18u32.to_le_bytes());
    put(&FORMAT_MULAW.to_le_bytes());
    put(&CHANNELS.to_le_bytes());
    put(&RATE.to_le_bytes());
    put(&(RATE * u32::from(CHANNELS)).to_le_bytes()); // bytes per second
    put(&CHANNELS.to_le_bytes()); // block align: one byte per channel
    put(&8u16.to_le_bytes()); // bits per sample
    put(&0u16.to_le_bytes()); // no extension
    put(b"fact");
    put(&4u32.to_le_bytes());
    put(&frames.to_le_bytes());
    put(b"data");
    put(&data.to_le_bytes());
    out
}

/// Writes a μ-law recording as the call goes on: the header first (synced, so the file is recognisable from its
/// first byte), then interleaved sample pairs, and the header again with its sizes at [`MulawWavWriter::finish`].
pub(crate) struct MulawWavWriter {
    out: Box<dyn CallWriter>,
    pairs: u64,
}

impl MulawWavWriter {
    pub(crate) fn new(mut out: Box<dyn CallWriter>) -> Result<MulawWavWriter, ArchiveError> {
        out.write_all(&header(None)).map_err(ArchiveError::io(WAV_RECORDING_FILE))?;
        out.sync()?;
        Ok(MulawWavWriter { out, pairs: 0 })
    }

    /// Appends interleaved (caller, agent) μ-law pairs; a trailing odd byte is a bug of the caller and is dropped.
    pub(crate) fn push(&mut self, interleaved: &[u8]) -> Result<(), ArchiveError> {
        let whole = interleaved.len() - interleaved.len() % 2;
        self.out.write_all(&interleaved[..whole]).map_err(ArchiveError::io(WAV_RECORDING_FILE))?;
        self.pairs += (whole / 2) as u64;
        Ok(())
    }

    /// Hands what was written to the store (every recorder tick).
    pub(crate) fn flush(&mut self) -> Result<(), ArchiveError> {
        self.out.flush().map_err(ArchiveError::io(WAV_RECORDING_FILE))
    }

    /// Sample pairs written (8 per millisecond).
    pub(crate) fn pairs(&self) -> u64 {
        self.pairs
    }

    /// Everything in the store, then the header's sizes patched.
    pub(crate) fn finish(mut self) -> Result<(), ArchiveError> {
        self.out.sync()?;
        self.out.rewrite_start(&header(Some(self.pairs)))?;
        self.out.sync()
    }
}

/// A μ-law recording's sample data, as far as it is whole.
#[derive(Debug)]
pub(crate) struct ParsedWav<'a> {
    /// Interleaved (caller, agent) μ-law pairs; whole pairs only.
    pub data: &'a [u8],
    /// Whether the header's sizes were patched (the call was sealed) and the data is all there.
    pub complete: bool,
}

impl ParsedWav<'_> {
    #[cfg(test)]
    pub(crate) fn pairs(&self) -> u64 {
        (self.data.len() / CHANNELS as usize) as u64
    }
}

fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

/// Reads a μ-law recording Parley wrote, sealed or cut by a crash (placeholder sizes, a torn last pair).
pub(crate) fn parse<'a>(bytes: &'a [u8], path: &Path) -> Result<ParsedWav<'a>, ArchiveError> {
    let not_wav = |message: String| ArchiveError::NotWav { path: path.to_owned(), message };
    if bytes.get(0..4) != Some(b"RIFF") || bytes.get(8..12) != Some(b"WAVE") {
        return Err(not_wav("no RIFF/WAVE header".into()));
    }
    let mut at = 12;
    let mut format = None;
    while let (Some(id), Some(size)) = (bytes.get(at..at + 4), u32_at(bytes, at + 4)) {
        let body = at + 8;
        if id == b"fmt " {
            let field = |offset| u16_at(bytes, body + offset).ok_or_else(|| not_wav("a short fmt chunk".into()));
            let (tag, channels, bits) = (field(0)?, field(2)?, field(14)?);
            let rate = u32_at(bytes, body + 4).ok_or_else(|| not_wav("a short fmt chunk".into()))?;
            format = Some((tag, channels, rate, bits));
        } else if id == b"data" {
            match format {
                Some((FORMAT_MULAW, CHANNELS, RATE, 8)) => {}
                Some((tag, channels, rate, bits)) => {
                    return Err(not_wav(format!(
                        "format {tag}, {channels} channels, {rate} Hz, {bits} bits; Parley records stereo 8 kHz μ-law"
                    )))
                }
                None => return Err(not_wav("no fmt chunk before the data".into())),
            }
            let present = bytes.len() - body.min(bytes.len());
            let complete = size != UNKNOWN && size as usize <= present;
            let len = if complete { size as usize } else { present };
            let len = len - len % CHANNELS as usize;
            return Ok(ParsedWav { data: &bytes[body..body + len], complete });
        }
        // Chunks are padded to an even size.
        at = body.saturating_add(size as usize).saturating_add(size as usize % 2);
    }
    Err(not_wav("no data chunk".into()))
}

/// The two legs (caller, agent) as 8 kHz PCM.
pub(crate) fn decode_legs(bytes: &[u8], path: &Path) -> Result<(Vec<i16>, Vec<i16>), ArchiveError> {
    let parsed = parse(bytes, path)?;
    let caller = parsed.data.iter().step_by(2).map(|&b| mulaw::decode_sample(b)).collect();
    let agent = parsed.data.iter().skip(1).step_by(2).map(|&b| mulaw::decode_sample(b)).collect();
    Ok((caller, agent))
}

/// Rewrites a recording a crash left unsealed: its whole 20 ms frames (the recorder only ever writes whole frames;
/// anything after the last is a torn write) under a header with its sizes. Returns the bytes and the sample pairs.
///
/// A crash while the header itself was being written leaves a prefix of it: that is an empty recording.
pub(crate) fn reseal(bytes: &[u8], path: &Path) -> Result<(Vec<u8>, u64), ArchiveError> {
    if bytes.len() < HEADER_LEN && header(None).starts_with(bytes) {
        return Ok((header(Some(0)).to_vec(), 0));
    }
    let parsed = parse(bytes, path)?;
    let whole = parsed.data.len() - parsed.data.len() % FRAME_BYTES;
    let data = &parsed.data[..whole];
    let pairs = (data.len() / CHANNELS as usize) as u64;
    let mut out = Vec::with_capacity(HEADER_LEN + data.len());
    out.extend_from_slice(&header(Some(pairs)));
    out.extend_from_slice(data);
    Ok((out, pairs))
}

/// The recording as a 16-bit PCM stereo WAV, which every browser plays (not all of them play μ-law).
pub(crate) fn to_pcm16(bytes: &[u8], path: &Path) -> Result<Vec<u8>, ArchiveError> {
    let parsed = parse(bytes, path)?;
    let data_len = u32::try_from(parsed.data.len() * 2).unwrap_or(u32::MAX - 44);
    let mut out = Vec::with_capacity(44 + data_len as usize);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(data_len + 36).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&FORMAT_PCM.to_le_bytes());
    out.extend_from_slice(&CHANNELS.to_le_bytes());
    out.extend_from_slice(&RATE.to_le_bytes());
    out.extend_from_slice(&(RATE * u32::from(CHANNELS) * 2).to_le_bytes());
    out.extend_from_slice(&(CHANNELS * 2).to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    for &byte in parsed.data {
        out.extend_from_slice(&mulaw::decode_sample(byte).to_le_bytes());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recording(pairs: &[(u8, u8)], sealed: bool) -> Vec<u8> {
        let mut bytes = header(sealed.then_some(pairs.len() as u64)).to_vec();
        for &(caller, agent) in pairs {
            bytes.extend_from_slice(&[caller, agent]);
        }
        bytes
    }

    #[test]
    fn a_sealed_recording_reads_back_its_two_legs() {
        let pairs: Vec<(u8, u8)> = (0..FRAME_SAMPLES as u8).map(|i| (i, 255 - i)).collect();
        let bytes = recording(&pairs, true);
        let parsed = parse(&bytes, Path::new("x")).unwrap();
        assert!(parsed.complete);
        assert_eq!(parsed.pairs(), FRAME_SAMPLES as u64);
        let (caller, agent) = decode_legs(&bytes, Path::new("x")).unwrap();
        assert_eq!(caller[5], mulaw::decode_sample(5));
        assert_eq!(agent[5], mulaw::decode_sample(250));
        // What a standard reader sees: RIFF size, μ-law, two channels, 8 kHz, 8 bits, the sample count.
        assert_eq!(u32_at(&bytes, 4), Some((bytes.len() - 8) as u32));
        assert_eq!((u16_at(&bytes, 20), u16_at(&bytes, 22), u32_at(&bytes, 24)), (Some(7), Some(2), Some(8_000)));
        assert_eq!(u32_at(&bytes, 46), Some(FRAME_SAMPLES as u32));
        assert_eq!(u32_at(&bytes, HEADER_LEN - 4), Some(2 * FRAME_SAMPLES as u32));
    }

    #[test]
    fn a_recording_cut_by_a_crash_reads_its_whole_pairs_and_reseals_to_whole_frames() {
        // Two and a half frames under the placeholder header, and half a pair torn off the end.
        let pairs: Vec<(u8, u8)> = (0..FRAME_SAMPLES * 5 / 2).map(|i| (i as u8, 0x80)).collect();
        let mut bytes = recording(&pairs, false);
        bytes.push(0x42);
        let parsed = parse(&bytes, Path::new("x")).unwrap();
        assert!(!parsed.complete);
        assert_eq!(parsed.pairs(), pairs.len() as u64);
        let (sealed, sealed_pairs) = reseal(&bytes, Path::new("x")).unwrap();
        assert_eq!(sealed_pairs, 2 * FRAME_SAMPLES as u64);
        let parsed = parse(&sealed, Path::new("x")).unwrap();
        assert!(parsed.complete);
        assert_eq!(parsed.data, &bytes[HEADER_LEN..HEADER_LEN + 2 * FRAME_BYTES]);
    }

    #[test]
    fn a_header_cut_short_reseals_as_an_empty_recording() {
        for cut in [0, 3, 30, HEADER_LEN - 1] {
            let (sealed, pairs) = reseal(&header(None)[..cut], Path::new("x")).unwrap();
            assert_eq!(pairs, 0);
            let parsed = parse(&sealed, Path::new("x")).unwrap();
            assert!(parsed.complete && parsed.data.is_empty(), "{cut}");
        }
        assert!(reseal(b"OggS", Path::new("x")).is_err(), "not a prefix of Parley's header");
    }

    #[test]
    fn what_is_not_a_parley_recording_is_refused_not_panicked_on() {
        for bytes in [&b""[..], b"RIFF", b"RIFF\0\0\0\0WAVEfmt \x02\0\0\0", b"RIFF\xff\xff\xff\xffWAVEdata\x10\0\0\0"] {
            assert!(parse(bytes, Path::new("x")).is_err(), "{bytes:?}");
        }
        let mut pcm = header(Some(0)).to_vec();
        pcm[20] = 1;
        assert!(parse(&pcm, Path::new("x")).unwrap_err().to_string().contains("format 1"));
    }

    #[test]
    fn browsers_get_16_bit_pcm() {
        let bytes = recording(&[(0x00, 0xFF), (0x80, 0x7F)], true);
        let pcm = to_pcm16(&bytes, Path::new("x")).unwrap();
        assert_eq!(pcm.len(), 44 + 8);
        assert_eq!((u16_at(&pcm, 20), u16_at(&pcm, 22), u16_at(&pcm, 34)), (Some(1), Some(2), Some(16)));
        assert_eq!(u16_at(&pcm, 44).map(|s| s as i16), Some(mulaw::decode_sample(0x00)));
        assert_eq!(u16_at(&pcm, 46), Some(0));
    }
}
