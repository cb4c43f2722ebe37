//! Shared helpers and proptest strategies.

use proptest::prelude::*;

/// FNV-1a 64 over the little-endian bytes of `words`: the digest used by the golden tests.
pub fn digest(words: &[u64]) -> u64 {
    let mut h: u64 = 0xCBF2_9CE4_8422_2325;
    for w in words {
        for b in w.to_le_bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01B3);
        }
    }
    h
}

/// Lengths that exercise partial words: 1..=300 (most are not multiples of 64).
pub fn len_strategy() -> impl Strategy<Value = usize> {
    1usize..=300
}

/// A bipolar vector of the given length as ±1 values.
pub fn bipolar(len: usize) -> impl Strategy<Value = Vec<i8>> {
    proptest::collection::vec(prop_oneof![Just(1i8), Just(-1i8)], len)
}

/// A ternary vector of the given length as trits.
pub fn trits(len: usize) -> impl Strategy<Value = Vec<i8>> {
    proptest::collection::vec(-1i8..=1, len)
}

/// Reference rotation: element i moves to (i + k) mod n.
pub fn rotate_ref<T: Copy>(v: &[T], k: usize) -> Vec<T> {
    let n = v.len();
    let mut out = v.to_vec();
    for (i, &x) in v.iter().enumerate() {
        out[(i + k) % n] = x;
    }
    out
}
