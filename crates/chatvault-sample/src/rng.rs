//! Seeded random streams. Every purpose gets its own ChaCha stream so that adding draws to one
//! part of the generator does not shift the output of another.

use rand::{Rng, SeedableRng};
use rand_chacha::{ChaCha8Rng, ChaCha20Rng};

pub(crate) const STREAM_CONTACTS: u64 = 1;
pub(crate) const STREAM_CHAT_WEIGHTS: u64 = 2;
pub(crate) const STREAM_HISTORY: u64 = 3;
pub(crate) const STREAM_MEDIA_PLAN: u64 = 4;
/// Day `d` of `next_day` uses stream `STREAM_DAY_BASE + d`.
pub(crate) const STREAM_DAY_BASE: u64 = 1 << 20;
/// Media file contents: `STREAM_MEDIA_CONTENT | day << 24 | index`.
pub(crate) const STREAM_MEDIA_CONTENT: u64 = 1 << 62;

/// The decision stream for one purpose.
pub(crate) fn stream(seed: u64, stream: u64) -> ChaCha20Rng {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    rng
}

/// The (faster, 8-round) stream that fills one media file.
pub(crate) fn content(seed: u64, day: u32, index: u32) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(STREAM_MEDIA_CONTENT | u64::from(day) << 24 | u64::from(index));
    rng
}

/// A value in `lo..=hi` skewed towards `lo` (density falls like `u²`), in integers only so the
/// result does not depend on the platform's libm.
pub(crate) fn skewed(rng: &mut impl Rng, lo: u64, hi: u64) -> u64 {
    const SCALE: u128 = 1 << 20;
    let u = rng.gen_range(0..=SCALE);
    lo + ((u128::from(hi - lo) * u * u) / (SCALE * SCALE)) as u64
}

/// Cumulative weights for picking an index with `pick`.
pub(crate) struct Weighted {
    cumulative: Vec<u64>,
}

impl Weighted {
    pub(crate) fn new(weights: &[u64]) -> Self {
        let mut sum = 0;
        let cumulative = weights
            .iter()
            .map(|w| {
                sum += w;
                sum
            })
            .collect();
        Self { cumulative }
    }

    pub(crate) fn pick(&self, rng: &mut impl Rng) -> usize {
        let total = *self.cumulative.last().expect("at least one weight");
        let x = rng.gen_range(0..total);
        self.cumulative.partition_point(|&c| c <= x)
    }
}

/// Standard base64 (with padding), for the hash columns WhatsApp stores as text.
pub(crate) fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Upper-case hex, as in WhatsApp message key ids.
pub(crate) fn hex_upper(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
    out
}

/// `len` characters of `[A-Za-z0-9_-]`, like the ids in share links.
pub(crate) fn token(rng: &mut impl Rng, len: usize) -> String {
    const CHARS: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";
    (0..len)
        .map(|_| CHARS[rng.gen_range(0..64u32) as usize] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn skewed_stays_in_range() {
        let mut rng = stream(1, 1);
        for _ in 0..10_000 {
            let v = skewed(&mut rng, 10, 20);
            assert!((10..=20).contains(&v));
        }
    }

    #[test]
    fn weighted_pick_respects_zero_weights() {
        let w = Weighted::new(&[0, 5, 0, 5]);
        let mut rng = stream(2, 2);
        for _ in 0..1000 {
            let i = w.pick(&mut rng);
            assert!(i == 1 || i == 3);
        }
    }
}
