//! Seeded test data.
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

/// Seeded generator for test data (independent of the crate's own streams).
pub fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// Uniform in (0, 1).
pub fn uniform(r: &mut ChaCha8Rng) -> f64 {
    ((r.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
}

/// Standard normal (Box-Muller).
pub fn normal(r: &mut ChaCha8Rng) -> f64 {
    let (u, v) = (uniform(r), uniform(r));
    (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
}

/// Student t with 3 degrees of freedom: `z / sqrt(chi2_3 / 3)`.
pub fn student_t3(r: &mut ChaCha8Rng) -> f64 {
    let z = normal(r);
    let c: f64 = (0..3).map(|_| normal(r).powi(2)).sum();
    z / (c / 3.0).sqrt()
}

/// Ties the fixture values to a fixed generator: FNV-1a over 64-bit words.
pub fn fnv(words: impl IntoIterator<Item = u64>) -> u64 {
    words.into_iter().fold(0xCBF2_9CE4_8422_2325u64, |h, w| {
        (h ^ w).wrapping_mul(0x0000_0100_0000_01B3)
    })
}
