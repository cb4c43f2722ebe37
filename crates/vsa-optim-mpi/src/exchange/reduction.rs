//! [`Reduction`]: how the ranks' messages are combined, and the chunks of the summed
//! reduce-scatter.

use super::*;

/// How the ranks' messages are combined. Part of the handshake: every rank must use the
/// same one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Reduction {
    /// All-gather every rank's payload, decode each and sum the decoded gradients in rank
    /// order. Every codec; bit-deterministic for every rank count (a single process that
    /// decodes the same payloads gets the same bits). Each rank receives `(N − 1)·M` bytes
    /// for messages of `M` bytes.
    #[default]
    Gather,
    /// Sum the linear messages ([`GradientCodec::linear`]: f32, bf16, count sketch,
    /// random-k) before decoding, by a reduce-scatter (all-to-all of `N` chunks; rank `r`
    /// sums chunk `r` of every rank in rank order) and an all-gather of the reduced chunks:
    /// each rank sends and receives about `2(N − 1)/N · M` bytes, which does not grow with
    /// `N`. Every element is summed as `((m₀ + m₁) + m₂) + …` in rank order, so the sum is
    /// bit-identical to all-gathering the messages and summing them in rank order, for every
    /// `N` and every chunking; reproducible bit for bit at any rank count for `f32` and
    /// the sketches. The sum is decoded once (for the count sketch: the median and top-k of
    /// the summed sketch). `bf16` sums in `f32` and sends the reduced chunks as `bf16`.
    Sum,
    /// The native sum all-reduce (`MPI_Allreduce` under MPI): the fastest standard path,
    /// for the `f32` mode ([`Collective::all_reduce_sum_f32`], MPI's built-in sum) and the
    /// `bf16` mode ([`Collective::all_reduce_sum_bf16`], a user-defined operation that adds
    /// each pair in `f32` and rounds the sum to `bf16`, so `N` ranks round `N − 1` times
    /// where `Sum` rounds once). MPI picks the summation tree, so the bits are
    /// reproducible only for a fixed rank count and MPI build (and message size); use
    /// `Gather` or `Sum` for bit-determinism.
    Allreduce,
}

impl Reduction {
    /// Every reduction, in tag order.
    pub const ALL: [Self; 3] = [Self::Gather, Self::Sum, Self::Allreduce];

    /// The handshake tag.
    pub fn tag(self) -> u8 {
        match self {
            Self::Gather => 0,
            Self::Sum => 1,
            Self::Allreduce => 2,
        }
    }

    /// A short lowercase name (`gather`, `sum`, `allreduce`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Gather => "gather",
            Self::Sum => "sum",
            Self::Allreduce => "allreduce",
        }
    }
}

impl std::fmt::Display for Reduction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Reduction {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|r| r.name() == s)
            .ok_or_else(|| config_error("reduction", "gather, sum or allreduce", format!("{s:?}")))
    }
}

/// The elements of chunk `j` of a message of `m` values split over `n` ranks:
/// `⌊j·m/n⌋ .. ⌊(j+1)·m/n⌋` (chunk sizes differ by at most one).
pub fn chunk(j: usize, m: usize, n: usize) -> std::ops::Range<usize> {
    let at = |j: usize| ((j as u128 * m as u128) / n as u128) as usize;
    at(j)..at(j + 1)
}

/// The rank that reduces element `j` of a message of `m` values over `n` ranks.
pub(super) fn owner(j: usize, m: usize, n: usize) -> usize {
    (0..n).find(|&r| chunk(r, m, n).contains(&j)).unwrap_or(0)
}
