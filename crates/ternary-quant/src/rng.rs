//! Counter-based randomness: one ChaCha8 stream per (seed, tensor id, step), positioned by
//! element index.
//!
//! Element `i` of a tensor always consumes the 32-bit word at position `i` of the stream
//! selected by its [`RngKey`], so a kernel run on any chunking (or any number of threads, each
//! seeking with [`RngKey::stream_at`]) draws bit-identical numbers.
//!
//! The stream is `vsa_core::rng::chacha_stream(mix(mix(seed, DOMAIN), tensor_id), step)`, so
//! the whole workspace derives its randomness one way.

use rand_chacha::ChaCha8Rng;
use vsa_core::rng::{chacha_stream, mix};

/// Domain tag ("tquant\0\0") so that this crate's streams are independent of vsa-core's
/// random vectors drawn from the same seed.
const DOMAIN: u64 = 0x7471_7561_6E74_0000;

/// Identifies one random stream: the run's `seed`, the tensor's `tensor_id` and the
/// accumulation `step` (or any other counter the caller advances per draw).
///
/// The ChaCha8 key is derived from `(seed, tensor_id)`, the ChaCha stream number is `step`,
/// and the word position is the element index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct RngKey {
    /// Run seed.
    pub seed: u64,
    /// Counter advanced once per quantization of the same tensor (the micro-batch step).
    pub step: u64,
    /// Stable identifier of the tensor (e.g. its index in the parameter list).
    pub tensor_id: u64,
}

impl RngKey {
    /// A key from its three parts.
    pub const fn new(seed: u64, step: u64, tensor_id: u64) -> Self {
        Self {
            seed,
            step,
            tensor_id,
        }
    }

    /// The stream for this key, positioned so that the next 32-bit word is the one that
    /// belongs to element `index`.
    pub fn stream_at(&self, index: u64) -> ChaCha8Rng {
        let mut rng = chacha_stream(mix(mix(self.seed, DOMAIN), self.tensor_id), self.step);
        rng.set_word_pos(u128::from(index));
        rng
    }
}

/// `2^-24`: turns the top 24 bits of a random word into a uniform in `[0, 1)`.
pub(crate) const TWO_POW_M24: f32 = 1.0 / 16_777_216.0;

/// Uniform in `[0, 1)` on the grid `k · 2^-24`, from one random word.
#[inline(always)]
pub(crate) fn unit(r: u32) -> f32 {
    // Through i32: the value is < 2^24, and a signed convert is one instruction on SSE2.
    ((r >> 8) as i32) as f32 * TWO_POW_M24
}

/// Sequential 16-bit draws from one stream: element `i` uses the low (even `i`) or high (odd
/// `i`) half of 32-bit word `⌊i/2⌋`, so one ChaCha word serves two elements. A draw `r`
/// is the uniform `r·2^-16`, hence a probability `p` becomes `⌈p·2^16⌉/2^16`: a bias of at
/// most `2^-16` per decision (see `docs/ternary.md`).
pub(crate) struct Draws16 {
    rng: ChaCha8Rng,
    /// The current refill: `DRAW_WORDS` words as little-endian bytes.
    bytes: [u8; 4 * DRAW_WORDS],
    /// Draws of `bytes` already handed out.
    pos: usize,
}

/// Words generated per refill of [`Draws16`].
const DRAW_WORDS: usize = 256;

impl Draws16 {
    /// Draws for elements `0, 1, 2, …` of `key`'s stream.
    pub(crate) fn new(key: RngKey) -> Self {
        Self {
            rng: key.stream_at(0),
            bytes: [0; 4 * DRAW_WORDS],
            pos: 2 * DRAW_WORDS,
        }
    }

    /// The next `out.len()` draws, in element order: draw `i` of a refill is bytes
    /// `2i, 2i + 1` (little-endian), i.e. the low then the high half of each word.
    #[inline(always)]
    pub(crate) fn fill(&mut self, out: &mut [u16]) {
        let mut done = 0;
        while done < out.len() {
            if self.pos == 2 * DRAW_WORDS {
                rand_core::RngCore::fill_bytes(&mut self.rng, &mut self.bytes);
                self.pos = 0;
            }
            let n = (out.len() - done).min(2 * DRAW_WORDS - self.pos);
            let src = &self.bytes[2 * self.pos..2 * (self.pos + n)];
            for (d, b) in out[done..done + n].iter_mut().zip(src.chunks_exact(2)) {
                *d = u16::from_le_bytes([b[0], b[1]]);
            }
            self.pos += n;
            done += n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::RngCore;

    #[test]
    fn stream_at_seeks_to_element() {
        let key = RngKey::new(7, 3, 11);
        let mut a = key.stream_at(0);
        let words: Vec<u32> = (0..100).map(|_| a.next_u32()).collect();
        for start in [0u64, 1, 17, 64, 99] {
            let mut b = key.stream_at(start);
            assert_eq!(b.next_u32(), words[start as usize]);
        }
        // Different step, tensor or seed gives a different stream.
        for other in [
            RngKey::new(8, 3, 11),
            RngKey::new(7, 4, 11),
            RngKey::new(7, 3, 12),
        ] {
            assert_ne!(other.stream_at(0).next_u32(), words[0]);
        }
    }

    #[test]
    fn draws16_are_the_halves_of_the_words() {
        let key = RngKey::new(3, 1, 4);
        let mut a = key.stream_at(0);
        let words: Vec<u32> = (0..700).map(|_| a.next_u32()).collect();
        let mut d = Draws16::new(key);
        let mut got = vec![0u16; 1400];
        // Uneven pieces: the sequence must not depend on how it is requested.
        let mut at = 0;
        for piece in [1usize, 25, 320, 7, 511, 536] {
            d.fill(&mut got[at..at + piece]);
            at += piece;
        }
        for (i, &g) in got.iter().enumerate() {
            let w = words[i / 2];
            let expect = if i % 2 == 0 {
                w as u16
            } else {
                (w >> 16) as u16
            };
            assert_eq!(g, expect, "draw {i}");
        }
    }

    #[test]
    fn unit_is_in_range() {
        assert_eq!(unit(0), 0.0);
        assert!(unit(u32::MAX) < 1.0);
        assert_eq!(unit(u32::MAX), 1.0 - TWO_POW_M24);
    }
}
