//! Helpers shared by the test modules.

/// `fn rank` and `fn size` of a test transport, from its `rank` and `size` fields.
macro_rules! rank_and_size_fields {
    () => {
        fn rank(&self) -> usize {
            self.rank
        }

        fn size(&self) -> usize {
            self.size
        }
    };
}

use vsa_optim_mpi::{LengthsFirst, MPI_COUNT_LIMIT};

use crate::transport::ThreadPrims;

/// The bits of a parameter list, for exact comparisons (NaN included).
pub fn bits(x: &[Vec<f32>]) -> Vec<Vec<u32>> {
    x.iter()
        .map(|v| v.iter().map(|f| f.to_bits()).collect())
        .collect()
}

/// A real all-gather between threads: the lengths-first collective over threads.
pub type ThreadWorld = LengthsFirst<ThreadPrims>;

/// `size` thread ranks (move each to its own thread), each with MPI's limit.
pub fn thread_world(size: usize) -> Vec<ThreadWorld> {
    ThreadPrims::world(size)
        .into_iter()
        .map(|p| LengthsFirst::new(p, MPI_COUNT_LIMIT))
        .collect()
}

/// Smooth deterministic gradients for step `t`, one per length: element `i` of parameter
/// `k` is `0.1·sin(0.37·i + 1.3·(k + 1) + 0.71·t)`.
pub fn sines(lens: &[usize], t: u64) -> Vec<Vec<f32>> {
    lens.iter()
        .zip(1u64..)
        .map(|(&n, k)| {
            (0..n)
                .map(|i| ((i as f32 * 0.37 + k as f32 * 1.3 + t as f32 * 0.71).sin()) * 0.1)
                .collect()
        })
        .collect()
}

/// SplitMix64: a tiny seeded generator for fixed test inputs (no unseeded randomness).
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `[-1, 1)`.
    pub fn sym(&mut self) -> f32 {
        ((self.next_u64() >> 11) as f64 / (1u64 << 52) as f64 - 1.0) as f32
    }

    /// ±1 with equal odds.
    pub fn sign(&mut self) -> f32 {
        if self.next_u64() & 1 == 0 { 1.0 } else { -1.0 }
    }
}
