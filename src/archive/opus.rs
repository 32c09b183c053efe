//! `recording.opus`: a stereo Ogg Opus stream (RFC 7845) encoded at the phone's own 8 kHz (Opus accepts it directly,
//! so nothing is resampled; players decode to 48 kHz themselves). One 20 ms packet per call frame; an Ogg page ends
//! every [`PAGE_FRAMES`] packets. It is made after the call from the μ-law recording ([`super::compress`]); calls
//! archived before that was so have it written live, and a crash may have left one without its end ([`reseal`]).

use std::io::Write;
use std::path::Path;

use audiopus::coder::{Decoder, Encoder};
use audiopus::{Application, Bitrate, Channels, SampleRate};
use ogg::reading::PacketReader;
use ogg::writing::{PacketWriteEndInfo, PacketWriter};

use super::{ArchiveError, OPUS_RECORDING_FILE};

/// Sample rate of the legs written into and read out of a recording.
pub const LEG_SAMPLE_RATE: u32 = 8_000;
/// Samples per leg in one 20 ms packet.
pub(crate) const FRAME_SAMPLES: usize = 160;
/// Ogg Opus granule positions count 48 kHz samples whatever the input rate.
const GRANULE_PER_FRAME: u64 = 960;
const GRANULE_PER_SAMPLE: u64 = 6;
/// Half a second of packets per page.
pub(crate) const PAGE_FRAMES: u64 = 25;
/// Enough for speech on two channels without the encoder folding them together.
const BITRATE: i32 = 32_000;
const SERIAL: u32 = 0x5041_524c;
/// The largest packet Opus produces.
const MAX_PACKET: usize = 4_000;

/// Opus encoder complexity (0-10) for the archive.
const ENCODER_COMPLEXITY: u8 = 0;

/// Writes a stereo Ogg Opus stream packet by packet.
pub(crate) struct OggOpusWriter<W: Write> {
    encoder: Encoder,
    packets: PacketWriter<'static, W>,
    pre_skip: u64,
    frames: u64,
    scratch: Vec<u8>,
}

impl<W: Write> OggOpusWriter<W> {
    /// Writes the Opus headers and flushes them.
    pub(crate) fn new(out: W) -> Result<OggOpusWriter<W>, ArchiveError> {
        let mut encoder = Encoder::new(SampleRate::Hz8000, Channels::Stereo, Application::Voip)?;
        encoder.set_bitrate(Bitrate::BitsPerSecond(BITRATE))?;
        // Telephone speech at 8 kHz loses nothing audible at a low complexity, and the default (10) made the
        // recorder Parley's largest CPU cost under load (measured with tools/loadgen).
        encoder.set_complexity(ENCODER_COMPLEXITY)?;
        // The encoder reports its look-ahead in input samples; the header wants 48 kHz samples.
        let pre_skip = u64::from(encoder.lookahead()?) * GRANULE_PER_SAMPLE;
        let mut writer = OggOpusWriter {
            encoder,
            packets: PacketWriter::new(out),
            pre_skip,
            frames: 0,
            scratch: vec![0; MAX_PACKET],
        };
        let mut head = b"OpusHead".to_vec();
        head.push(1); // version
        head.push(2); // channels
        head.extend_from_slice(&(pre_skip as u16).to_le_bytes());
        head.extend_from_slice(&LEG_SAMPLE_RATE.to_le_bytes());
        head.extend_from_slice(&0i16.to_le_bytes()); // output gain
        head.push(0); // channel mapping family: mono/stereo
        let mut tags = b"OpusTags".to_vec();
        let vendor = b"parley";
        tags.extend_from_slice(&(vendor.len() as u32).to_le_bytes());
        tags.extend_from_slice(vendor);
        tags.extend_from_slice(&0u32.to_le_bytes());
        writer.write(head, PacketWriteEndInfo::EndPage, 0)?;
        writer.write(tags, PacketWriteEndInfo::EndPage, 0)?;
        writer.flush()?;
        Ok(writer)
    }

    /// Encodes 20 ms of both legs; every [`PAGE_FRAMES`] frames the page is closed and flushed.
    pub(crate) fn push_frame(&mut self, caller: &[i16], agent: &[i16]) -> Result<(), ArchiveError> {
        let mut interleaved = [0i16; FRAME_SAMPLES * 2];
        for (i, pair) in interleaved.chunks_exact_mut(2).enumerate() {
            pair[0] = caller.get(i).copied().unwrap_or(0);
            pair[1] = agent.get(i).copied().unwrap_or(0);
        }
        // One packet buffer per recording, not a zeroed 4 KB allocation per 20 ms frame.
        let len = self.encoder.encode(&interleaved, &mut self.scratch)?;
        let packet = self.scratch[..len].to_vec();
        self.push_packet(packet)
    }

    /// Adds an already encoded 20 ms packet (resealing a recording re-uses its packets).
    pub(crate) fn push_packet(&mut self, packet: Vec<u8>) -> Result<(), ArchiveError> {
        self.frames += 1;
        let end_page = self.frames.is_multiple_of(PAGE_FRAMES);
        let info = if end_page { PacketWriteEndInfo::EndPage } else { PacketWriteEndInfo::NormalPacket };
        self.write(packet, info, self.frames * GRANULE_PER_FRAME)?;
        if end_page {
            self.flush()?;
        }
        Ok(())
    }

    /// Ends the stream: one more packet of silence carries the encoder's look-ahead out, and the last granule position
    /// tells players to stop exactly where the audio ends.
    pub(crate) fn finish(mut self) -> Result<W, ArchiveError> {
        let mut packet = vec![0u8; MAX_PACKET];
        let len = self.encoder.encode(&[0i16; FRAME_SAMPLES * 2], &mut packet)?;
        packet.truncate(len);
        let end = self.frames * GRANULE_PER_FRAME + self.pre_skip;
        self.write(packet, PacketWriteEndInfo::EndStream, end)?;
        self.flush()?;
        Ok(self.packets.into_inner())
    }

    fn write(&mut self, packet: Vec<u8>, info: PacketWriteEndInfo, granule: u64) -> Result<(), ArchiveError> {
        self.packets.write_packet(packet, SERIAL, info, granule).map_err(ArchiveError::io(OPUS_RECORDING_FILE))
    }

    fn flush(&mut self) -> Result<(), ArchiveError> {
        self.packets.inner_mut().flush().map_err(ArchiveError::io(OPUS_RECORDING_FILE))
    }
}

/// A recording's packets, as far as its pages are intact.
pub(crate) struct ParsedRecording {
    pub channels: u8,
    /// In 48 kHz samples.
    pub pre_skip: u64,
    /// The audio packets, headers excluded.
    pub packets: Vec<Vec<u8>>,
    /// Granule position of the last intact page.
    pub last_granule: u64,
    /// Whether the stream was ended properly (a sealed recording).
    pub complete: bool,
}

/// Reads an Ogg Opus stream; a torn or missing tail (a crash mid-write) ends it at the last intact page.
pub(crate) fn parse(bytes: &[u8], path: &Path) -> Result<ParsedRecording, ArchiveError> {
    let not_opus = |message: &str| ArchiveError::NotOpus { path: path.to_owned(), message: message.to_owned() };
    let mut reader = PacketReader::new(std::io::Cursor::new(bytes));
    let head = match reader.read_packet() {
        Ok(Some(packet)) => packet,
        Ok(None) => return Err(not_opus("the file is empty")),
        Err(err) => return Err(ArchiveError::Ogg { path: path.to_owned(), message: err.to_string() }),
    };
    let data = &head.data;
    if data.len() < 19 || !data.starts_with(b"OpusHead") {
        return Err(not_opus("no OpusHead"));
    }
    let channels = data[9];
    let pre_skip = u64::from(u16::from_le_bytes([data[10], data[11]]));
    let mut recording = ParsedRecording { channels, pre_skip, packets: Vec::new(), last_granule: 0, complete: false };
    let mut seen_tags = false;
    // A read error past the headers is a torn tail: keep what came before it.
    while let Ok(Some(packet)) = reader.read_packet() {
        if !seen_tags {
            seen_tags = true;
            if packet.data.starts_with(b"OpusTags") {
                continue;
            }
        }
        recording.last_granule = packet.absgp_page();
        recording.complete = packet.last_in_stream();
        recording.packets.push(packet.data);
        if recording.complete {
            break;
        }
    }
    Ok(recording)
}

/// Rewrites a recording that a crash left without its end: its intact packets, then a proper end of stream.
pub(crate) fn reseal(bytes: &[u8], path: &Path) -> Result<Vec<u8>, ArchiveError> {
    let recording = parse(bytes, path)?;
    let mut writer = OggOpusWriter::new(Vec::with_capacity(bytes.len() + 1024))?;
    for packet in recording.packets {
        writer.push_packet(packet)?;
    }
    writer.finish()
}

pub(crate) fn decode_legs(bytes: &[u8], path: &Path) -> Result<(Vec<i16>, Vec<i16>), ArchiveError> {
    let recording = parse(bytes, path)?;
    if recording.channels != 2 {
        return Err(ArchiveError::NotOpus {
            path: path.to_owned(),
            message: format!("{} channels; Parley records two", recording.channels),
        });
    }
    let mut decoder = Decoder::new(SampleRate::Hz8000, Channels::Stereo)?;
    // The longest Opus packet is 120 ms.
    let mut buffer = vec![0i16; 2 * 120 * LEG_SAMPLE_RATE as usize / 1000];
    let mut interleaved = Vec::with_capacity(recording.packets.len() * FRAME_SAMPLES * 2);
    for packet in &recording.packets {
        let samples = decoder.decode(Some(packet.as_slice()), &mut buffer[..], false)?;
        interleaved.extend_from_slice(&buffer[..samples * 2]);
    }
    let skip = (recording.pre_skip / GRANULE_PER_SAMPLE) as usize;
    let decoded = (interleaved.len() / 2).saturating_sub(skip);
    let by_granule = (recording.last_granule.saturating_sub(recording.pre_skip) / GRANULE_PER_SAMPLE) as usize;
    let len = decoded.min(by_granule);
    let frames = interleaved.get(skip * 2..(skip + len) * 2).unwrap_or(&[]);
    let caller = frames.iter().step_by(2).copied().collect();
    let agent = frames.iter().skip(1).step_by(2).copied().collect();
    Ok((caller, agent))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(frequency: f32, samples: usize) -> Vec<i16> {
        (0..samples).map(|i| ((i as f32 / 8000.0 * frequency * std::f32::consts::TAU).sin() * 8000.0) as i16).collect()
    }

    fn rms(samples: &[i16]) -> f64 {
        (samples.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / samples.len().max(1) as f64).sqrt()
    }

    #[test]
    fn a_sealed_recording_reads_back_at_its_length_on_its_channels() {
        let mut writer = OggOpusWriter::new(Vec::new()).unwrap();
        let loud = tone(440.0, FRAME_SAMPLES);
        let quiet = [0i16; FRAME_SAMPLES];
        for i in 0..100 {
            if i < 50 {
                writer.push_frame(&loud, &quiet).unwrap();
            } else {
                writer.push_frame(&quiet, &loud).unwrap();
            }
        }
        let bytes = writer.finish().unwrap();
        let parsed = parse(&bytes, Path::new("x")).unwrap();
        assert!(parsed.complete);
        // OpusHead, after the first page's 28 header bytes, says the input was 8 kHz.
        assert_eq!(&bytes[28..36], b"OpusHead");
        assert_eq!(bytes[28 + 9], 2);
        assert_eq!(&bytes[28 + 12..28 + 16], &8_000u32.to_le_bytes());
        let (caller, agent) = decode_legs(&bytes, Path::new("x")).unwrap();
        assert_eq!(caller.len(), 100 * FRAME_SAMPLES);
        assert_eq!(agent.len(), caller.len());
        assert!(rms(&caller[1_000..7_000]) > 2_000.0, "{}", rms(&caller[1_000..7_000]));
        assert!(rms(&agent[1_000..7_000]) < 300.0, "{}", rms(&agent[1_000..7_000]));
        assert!(rms(&agent[9_000..15_000]) > 2_000.0);
        assert!(rms(&caller[9_000..15_000]) < 300.0);
    }

    #[test]
    fn a_torn_recording_reads_to_its_last_page_and_reseals() {
        let mut writer = OggOpusWriter::new(Vec::new()).unwrap();
        for _ in 0..60 {
            writer.push_frame(&tone(300.0, FRAME_SAMPLES), &[0; FRAME_SAMPLES]).unwrap();
        }
        // Dropped without finish: two whole pages (50 frames) and ten packets never paged; then a torn byte tail.
        let mut bytes = writer.packets.into_inner();
        bytes.extend_from_slice(b"OggS\0\0\0");
        let parsed = parse(&bytes, Path::new("x")).unwrap();
        assert!(!parsed.complete);
        assert_eq!(parsed.packets.len(), 50);
        let sealed = reseal(&bytes, Path::new("x")).unwrap();
        assert!(parse(&sealed, Path::new("x")).unwrap().complete);
        let (caller, _) = decode_legs(&sealed, Path::new("x")).unwrap();
        assert_eq!(caller.len(), 50 * FRAME_SAMPLES);
    }
}
