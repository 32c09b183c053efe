//! G.711 μ-law, table-driven in both directions.
//!
//! Decoding is one lookup in a 256-entry table. Encoding uses a 256-entry segment table indexed by the top bits of
//! the biased magnitude, so neither direction branches on the segment. Both tables are computed at compile time.

const BIAS: i32 = 0x84;
const CLIP: i32 = 32_635;

/// Linear PCM16 value of each μ-law byte.
static DECODE: [i16; 256] = build_decode_table();
/// Segment (exponent) of a biased magnitude, indexed by `magnitude >> 7`.
static SEGMENT: [u8; 256] = build_segment_table();

const fn build_decode_table() -> [i16; 256] {
    let mut table = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        let byte = !(i as u8);
        let sign = byte & 0x80;
        let exponent = ((byte >> 4) & 0x07) as i32;
        let mantissa = (byte & 0x0F) as i32;
        let magnitude = (((mantissa << 3) + BIAS) << exponent) - BIAS;
        table[i] = if sign != 0 { -magnitude as i16 } else { magnitude as i16 };
        i += 1;
    }
    table
}

const fn build_segment_table() -> [u8; 256] {
    let mut table = [0u8; 256];
    let mut i = 1;
    while i < 256 {
        let mut segment = 0u8;
        let mut v = i >> 1;
        while v > 0 {
            segment += 1;
            v >>= 1;
        }
        table[i] = segment;
        i += 1;
    }
    table
}

/// Decodes one μ-law byte to a linear PCM16 sample.
#[inline]
pub fn decode_sample(byte: u8) -> i16 {
    DECODE[byte as usize]
}

/// Encodes one linear PCM16 sample to μ-law.
#[inline]
pub fn encode_sample(sample: i16) -> u8 {
    let mut value = i32::from(sample);
    let sign = if value < 0 {
        value = -value;
        0x80
    } else {
        0
    };
    let magnitude = value.min(CLIP) + BIAS;
    let segment = SEGMENT[((magnitude >> 7) & 0xFF) as usize];
    let mantissa = ((magnitude >> (segment + 3)) & 0x0F) as u8;
    !(sign | (segment << 4) | mantissa)
}

/// Decodes μ-law bytes into `out` (cleared first), reusing its allocation.
pub fn decode_into(mulaw: &[u8], out: &mut Vec<i16>) {
    out.clear();
    out.extend(mulaw.iter().map(|&b| decode_sample(b)));
}

/// Decodes μ-law bytes into a new PCM16 buffer.
pub fn decode(mulaw: &[u8]) -> Vec<i16> {
    let mut out = Vec::with_capacity(mulaw.len());
    decode_into(mulaw, &mut out);
    out
}

/// Encodes PCM16 samples into a new μ-law buffer.
pub fn encode(pcm: &[i16]) -> Vec<u8> {
    pcm.iter().map(|&s| encode_sample(s)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference encoder straight from the G.711 description, branchy and slow, to check the tables against.
    fn reference_encode(sample: i16) -> u8 {
        let mut value = i32::from(sample);
        let sign = if value < 0 {
            value = -value;
            0x80u8
        } else {
            0
        };
        let magnitude = value.min(CLIP) + BIAS;
        let mut segment = 7u8;
        let mut mask = 0x4000;
        while segment > 0 && magnitude & mask == 0 {
            segment -= 1;
            mask >>= 1;
        }
        let mantissa = ((magnitude >> (segment + 3)) & 0x0F) as u8;
        !(sign | (segment << 4) | mantissa)
    }

    #[test]
    fn table_encoder_matches_reference_for_every_sample() {
        for s in i16::MIN..=i16::MAX {
            assert_eq!(encode_sample(s), reference_encode(s), "sample {s}");
        }
    }

    #[test]
    fn known_values() {
        assert_eq!(encode_sample(0), 0xFF);
        assert_eq!(decode_sample(0xFF), 0);
        assert_eq!(decode_sample(0x7F), 0);
        assert_eq!(decode_sample(0x00), -32_124);
        assert_eq!(decode_sample(0x80), 32_124);
        assert_eq!(encode_sample(i16::MAX), 0x80);
        assert_eq!(encode_sample(i16::MIN), 0x00);
    }

    #[test]
    fn every_byte_survives_decode_then_encode() {
        for b in 0u8..=255 {
            let expected = if b == 0x7F { 0xFF } else { b }; // both zeros encode as positive zero
            assert_eq!(encode_sample(decode_sample(b)), expected, "byte {b:#04x}");
        }
    }

    #[test]
    fn quantisation_error_is_bounded_by_the_segment_step() {
        for s in (-32_000i16..=32_000).step_by(7) {
            let back = i32::from(decode_sample(encode_sample(s)));
            let err = (back - i32::from(s)).abs();
            // The largest segment's step is 1024; the error is at most half a step plus the bias rounding.
            assert!(err <= 1024, "sample {s} came back as {back}");
            if s.unsigned_abs() < 100 {
                assert!(err <= 8, "small sample {s} came back as {back}");
            }
        }
    }

    #[test]
    fn buffers_round_trip() {
        let pcm: Vec<i16> = (0..160).map(|i| ((i as f32 / 10.0).sin() * 8000.0) as i16).collect();
        let back = decode(&encode(&pcm));
        assert_eq!(back.len(), pcm.len());
        for (a, b) in pcm.iter().zip(&back) {
            assert!((i32::from(*a) - i32::from(*b)).abs() < 300);
        }
    }
}
