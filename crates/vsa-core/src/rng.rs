//! Seeding and key derivation. Every random bit in this crate (and in the crates above it)
//! comes from a [`ChaCha8Rng`] stream picked by [`chacha_stream`], keyed by a seed and an id,
//! so any vector can be regenerated alone, in any order, on any thread.
//!
//! The functions here are part of the crate's stability promise: their outputs are pinned by
//! golden-value tests and will not change within a major version.

use rand_chacha::ChaCha8Rng;
use rand_core::SeedableRng;

/// The golden-ratio increment of SplitMix64 (`floor(2^64 / phi)`).
pub const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64 finaliser applied to `x + GOLDEN_GAMMA` (Steele, Lea & Flood 2014).
///
/// `splitmix64(s + i * GOLDEN_GAMMA)` for `i = 0, 1, 2, …` is exactly the SplitMix64 sequence
/// started from state `s`. The map is a bijection on `u64`.
///
/// ```
/// assert_eq!(vsa_core::rng::splitmix64(0), 0xE220_A839_7B1D_CDAF);
/// ```
#[inline]
pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(GOLDEN_GAMMA);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Non-commutative combination of two words: `splitmix64(splitmix64(a) ^ b)`.
///
/// Use it to derive keys from tuples, left to right:
/// `mix(mix(mix(seed, param), step), chunk)`. For fixed `a` it is a bijection in `b`, so
/// distinct ids under one parent never collide; `mix(a, b) != mix(b, a)` in general.
#[inline]
pub fn mix(a: u64, b: u64) -> u64 {
    splitmix64(splitmix64(a) ^ b)
}

/// FNV-1a, 64 bit, over the UTF-8 bytes of `name`. Stable forever: names in checkpoints and
/// codebooks map to the same key in every version.
///
/// ```
/// // The FNV-1a offset basis is the hash of the empty string.
/// assert_eq!(vsa_core::rng::key_from_name(""), 0xCBF2_9CE4_8422_2325);
/// assert_eq!(vsa_core::rng::key_from_name("a"), 0xAF63_DC4C_8601_EC8C);
/// ```
pub fn key_from_name(name: &str) -> u64 {
    fnv1a(name.bytes())
}

/// FNV-1a, 64 bit, over a byte sequence: the workspace's one fingerprint hash (names,
/// checkpoint states, weights, configurations). Not cryptographic.
///
/// ```
/// assert_eq!(vsa_core::rng::fnv1a(*b"a"), vsa_core::rng::key_from_name("a"));
/// ```
pub fn fnv1a(bytes: impl IntoIterator<Item = u8>) -> u64 {
    const OFFSET: u64 = 0xCBF2_9CE4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01B3;
    bytes
        .into_iter()
        .fold(OFFSET, |h, b| (h ^ u64::from(b)).wrapping_mul(PRIME))
}

/// The ChaCha8 stream `stream` under `seed`.
///
/// The 32-byte ChaCha key is the first four outputs of SplitMix64 started at `seed`
/// (`splitmix64(seed + i * GOLDEN_GAMMA)`, `i = 0..4`, each little-endian), then
/// `set_stream(stream)`. The generator starts at word position 0; callers may
/// `set_word_pos` for counter-based random access (ChaCha is a counter-mode cipher, so
/// position `p` costs O(1) to reach).
pub fn chacha_stream(seed: u64, stream: u64) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    for (i, chunk) in key.chunks_exact_mut(8).enumerate() {
        let word = splitmix64(seed.wrapping_add((i as u64).wrapping_mul(GOLDEN_GAMMA)));
        chunk.copy_from_slice(&word.to_le_bytes());
    }
    let mut rng = ChaCha8Rng::from_seed(key);
    rng.set_stream(stream);
    rng
}

/// Domain tags, mixed into the seed so that different kinds of object drawn from the same
/// `(seed, key)` are independent.
pub(crate) mod domain {
    /// Bipolar vectors (binary and the real ±1 expansion share it on purpose).
    pub const BIPOLAR: u64 = 0x6269_706F_6C61_7200; // "bipolar\0"
    /// Ternary vectors.
    pub const TERNARY: u64 = 0x7465_726E_6172_7900; // "ternary\0"
    /// Random-projection chunk keys.
    pub const PROJECTION: u64 = 0x7072_6F6A_6563_7400; // "project\0"
    /// The fixed tie-break vector of binary bundling.
    pub const TIE: u64 = 0x7469_652D_6272_6B00; // "tie-brk\0"
}
