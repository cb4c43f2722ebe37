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
// Kept for other callers (the accumulator's step draws 8 bits, [`Draws8`]).
#[allow(dead_code)]
pub(crate) struct Draws16 {
    rng: ChaCha8Rng,
    /// The current refill: `DRAW_WORDS` words as little-endian bytes.
    bytes: [u8; 4 * DRAW_WORDS],
    /// Draws of `bytes` already handed out.
    pos: usize,
}

/// Words generated per refill of [`Draws16`].
const DRAW_WORDS: usize = 256;

#[allow(dead_code)]
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
    #[inline]
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

/// Domain tag ("trefine\0") of the refinement words of [`Draws8`]: independent of the
/// ChaCha streams of the same key.
const REFINE_DOMAIN: u64 = 0x7472_6566_696E_6500;

/// Sequential 8-bit draws from one stream, with an exact refinement on ties.
///
/// Element `i` uses byte `i mod 4` of 32-bit word `⌊i/4⌋` (little-endian: byte `i` of the
/// stream), so one ChaCha word serves four elements. A rounding decision "up with probability
/// `p`" is taken as `r < p` for the uniform `r = (r8 + u)/256`, where `r8` is the element's
/// draw and `u ∈ [0, 1)` a refinement that is only computed when the draw alone cannot decide
/// (`⌊256·p⌋ = r8`, probability `2^-8`): see [`round_up_fast`] and [`Draws8::refine`]. The
/// refinement of element `i` is the top 24 bits of `vsa_core::rng::mix(k, i)`, `k` derived
/// from `(seed, tensor_id, step)`, so it depends on the element index only, never on
/// chunking. The decision is then up with probability `(⌊t⌋ + ⌈frac(t)·2^24⌉·2^-24)/256`
/// for `t = 256·p`: at most `2^-32` above `p` (see `docs/ternary.md` §3.1).
pub(crate) struct Draws8 {
    rng: ChaCha8Rng,
    /// The current refill: `DRAW_WORDS` words as little-endian bytes.
    bytes: [u8; 4 * DRAW_WORDS],
    /// Draws of `bytes` already handed out.
    pos: usize,
    /// Element index of the next draw.
    next: u64,
    /// `splitmix64` of the refinement key, so that `refine(i) = mix(key, i)`.
    refine_key: u64,
}

impl Draws8 {
    /// Draws for elements `0, 1, 2, …` of `key`'s stream.
    pub(crate) fn new(key: RngKey) -> Self {
        let k = mix(mix(mix(key.seed, REFINE_DOMAIN), key.tensor_id), key.step);
        Self {
            rng: key.stream_at(0),
            bytes: [0; 4 * DRAW_WORDS],
            pos: 4 * DRAW_WORDS,
            next: 0,
            refine_key: vsa_core::rng::splitmix64(k),
        }
    }

    /// The next `out.len()` draws, in element order; returns the element index of `out[0]`.
    #[inline]
    pub(crate) fn fill(&mut self, out: &mut [u8]) -> u64 {
        let first = self.next;
        let mut done = 0;
        while done < out.len() {
            if self.pos == 4 * DRAW_WORDS {
                rand_core::RngCore::fill_bytes(&mut self.rng, &mut self.bytes);
                self.pos = 0;
            }
            let n = (out.len() - done).min(4 * DRAW_WORDS - self.pos);
            out[done..done + n].copy_from_slice(&self.bytes[self.pos..self.pos + n]);
            self.pos += n;
            done += n;
        }
        self.next += out.len() as u64;
        first
    }

    /// The refinement uniform `u ∈ [0, 1)` of element `index`, on the grid `k·2^-24`: the top
    /// 24 bits of `vsa_core::rng::mix(key, index)` (`mix(a, b) = splitmix64(splitmix64(a) ^
    /// b)`; the first half is precomputed).
    #[inline]
    pub(crate) fn refine(&self, index: u64) -> f32 {
        let w = vsa_core::rng::splitmix64(self.refine_key ^ index);
        ((w >> 40) as i32) as f32 * TWO_POW_M24
    }

    /// The exact decision for element `index`, draw `r8`, threshold `t = 256·p >= 0`:
    /// [`round_up_fast`], and on a tie the refinement.
    #[inline]
    pub(crate) fn round_up(&self, t: f32, r8: u8, index: u64) -> bool {
        let (up, tie) = round_up_fast(t, r8);
        up || (tie && self.refine(index) < t - f32::from(r8))
    }
}

/// The part of an 8-bit decision the draw settles alone, for `t = 256·p >= 0` (`p` the
/// probability of rounding up, `t` finite): `(up, tie)`. `up` when `r8 + 1 <= t` (then
/// `r8 + u < t` for every `u < 1`); neither when `t <= r8`; a tie when `r8 < t < r8 + 1`,
/// decided by `u < t − r8` (exact in `f32`: `t − r8 ∈ (0, 1)`, Sterbenz).
#[inline(always)]
pub(crate) fn round_up_fast(t: f32, r8: u8) -> (bool, bool) {
    let rf = f32::from(r8);
    let up = rf + 1.0 <= t;
    (up, !up & (rf < t))
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
    fn draws8_are_the_bytes_of_the_words() {
        let key = RngKey::new(3, 1, 4);
        let mut a = key.stream_at(0);
        let words: Vec<u32> = (0..1100).map(|_| a.next_u32()).collect();
        let mut d = Draws8::new(key);
        let mut got = vec![0u8; 4400];
        let mut at = 0;
        for piece in [1usize, 25, 320, 7, 1023, 1024, 2000] {
            assert_eq!(d.fill(&mut got[at..at + piece]), at as u64);
            at += piece;
        }
        for (i, &g) in got.iter().enumerate() {
            assert_eq!(g, (words[i / 4] >> (8 * (i % 4))) as u8, "draw {i}");
        }
        // The refinement depends on the key and the index only.
        let d2 = Draws8::new(key);
        assert_eq!(d.refine(17), d2.refine(17));
        assert_ne!(d.refine(17), d.refine(18));
        assert_ne!(Draws8::new(RngKey::new(3, 2, 4)).refine(17), d.refine(17));
        let w = mix(mix(mix(mix(3, REFINE_DOMAIN), 4), 1), 17);
        assert_eq!(d.refine(17), (w >> 40) as f32 * TWO_POW_M24);
    }

    /// The decision is up with probability `(⌊t⌋ + ⌈frac(t)·2^24⌉·2^-24)/256`: counted
    /// exactly over all 256 draws, with the refinement replaced by its grid.
    #[test]
    fn eight_bit_decisions_are_exact_up_to_the_refinement_grid() {
        for t in [
            0.0f32, 1e-30, 0.3, 1.0, 1.5, 37.25, 254.999, 255.0, 255.5, 256.0, 300.0,
        ] {
            let (mut ups, mut ties) = (0u32, 0u32);
            for r8 in 0..=255u8 {
                let (up, tie) = round_up_fast(t, r8);
                assert!(!(up && tie));
                ups += u32::from(up);
                if tie {
                    ties += 1;
                    assert_eq!(r8 as f32, t.floor(), "t {t}");
                    assert!(t - f32::from(r8) > 0.0 && t - f32::from(r8) < 1.0);
                }
            }
            let fl = t.floor().min(256.0);
            assert_eq!(ups as f32, if t >= 256.0 { 256.0 } else { fl }, "t {t}");
            assert_eq!(ties, u32::from(t < 256.0 && t != t.floor()), "t {t}");
        }
    }

    #[test]
    fn unit_is_in_range() {
        assert_eq!(unit(0), 0.0);
        assert!(unit(u32::MAX) < 1.0);
        assert_eq!(unit(u32::MAX), 1.0 - TWO_POW_M24);
    }
}
