//! Just enough RIFF/WAV for Parley: reading the PCM16 that `espeak-ng --stdout` writes, and writing the PCM16 files
//! uploaded to transcription servers.

/// Why a WAV stream could not be read.
#[derive(Debug, thiserror::Error)]
pub enum WavError {
    #[error("not a RIFF/WAVE stream")]
    NotWav,
    #[error("unsupported WAV format: {0}")]
    Unsupported(String),
    #[error("WAV stream has no data chunk")]
    NoData,
}

/// Mono PCM16 audio with its rate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pcm {
    pub sample_rate: u32,
    pub samples: Vec<i16>,
}

fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

/// Reads a PCM16 WAV stream, mixing channels down to mono.
///
/// A streamed WAV (eSpeak NG writing to a pipe) cannot know its length up front and puts a placeholder size in the
/// data chunk, so the data chunk is taken to run to the end of the bytes whenever its size says more than is there.
pub fn read(bytes: &[u8]) -> Result<Pcm, WavError> {
    if bytes.get(0..4) != Some(b"RIFF") || bytes.get(8..12) != Some(b"WAVE") {
        return Err(WavError::NotWav);
    }
    let mut at = 12;
    let mut format: Option<(u16, u16, u32, u16)> = None;
    while let (Some(id), Some(size)) = (bytes.get(at..at + 4), u32_at(bytes, at + 4)) {
        let body = at + 8;
        if id == b"fmt " {
            let tag = u16_at(bytes, body).ok_or(WavError::NotWav)?;
            let channels = u16_at(bytes, body + 2).ok_or(WavError::NotWav)?;
            let rate = u32_at(bytes, body + 4).ok_or(WavError::NotWav)?;
            let bits = u16_at(bytes, body + 14).ok_or(WavError::NotWav)?;
            format = Some((tag, channels, rate, bits));
        } else if id == b"data" {
            let (tag, channels, rate, bits) = format.ok_or(WavError::NoData)?;
            if tag != 1 || bits != 16 || channels == 0 {
                return Err(WavError::Unsupported(format!("format tag {tag}, {bits} bits, {channels} channels")));
            }
            let end = body.saturating_add(size as usize).min(bytes.len());
            let data = bytes.get(body..end).unwrap_or_default();
            let interleaved: Vec<i16> =
                data.chunks_exact(2).map(|pair| i16::from_le_bytes([pair[0], pair[1]])).collect();
            let samples = interleaved
                .chunks_exact(channels as usize)
                .map(|frame| (frame.iter().map(|&s| i32::from(s)).sum::<i32>() / i32::from(channels)) as i16)
                .collect();
            return Ok(Pcm { sample_rate: rate, samples });
        }
        // Chunks are padded to an even length.
        at = body.saturating_add(size as usize).saturating_add(size as usize & 1);
    }
    Err(WavError::NoData)
}

/// Writes mono PCM16 as a canonical 44-byte-header WAV file.
pub fn write(pcm: &[i16], sample_rate: u32) -> Vec<u8> {
    let data_len = (pcm.len() * 2) as u32;
    let mut out = Vec::with_capacity(44 + pcm.len() * 2);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data_len).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&sample_rate.to_le_bytes());
    out.extend_from_slice(&(sample_rate * 2).to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    for sample in pcm {
        out.extend_from_slice(&sample.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let pcm: Vec<i16> = (0..100).map(|i| (i * 300 - 15000) as i16).collect();
        let bytes = write(&pcm, 16000);
        assert_eq!(read(&bytes).unwrap(), Pcm { sample_rate: 16000, samples: pcm });
    }

    #[test]
    fn a_streamed_header_reads_to_the_end() {
        let pcm = vec![1i16, -2, 3];
        let mut bytes = write(&pcm, 22050);
        bytes[40..44].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(read(&bytes).unwrap().samples, pcm);
    }

    #[test]
    fn rejects_what_is_not_wav() {
        assert!(matches!(read(b"hello world, not a wave"), Err(WavError::NotWav)));
    }
}
