//! Matrix-free random projection `S: ℝⁿ → ℝᴰ` by chunked sign binding.

use crate::error::{Result, check_len, check_nonzero};
use crate::real::{xor_signs_add, xor_signs_into};
use crate::rng::{chacha_stream, domain, mix};

/// Signs generated per refill of the stack buffer (64 words of 64 signs).
const SIGN_BLOCK: usize = 64 * 64;

/// A random projection `S` from `ℝⁿ` (`input_len`) to `ℝᴰ` (`output_len`), never stored.
///
/// **Definition.** Split `x` into `k = ceil(n/D)` chunks `x_c = x[cD .. min((c+1)D, n)]`
/// (the last one may be shorter), bind each with its own ±1 key `s_c` and add them:
///
/// `y_j = (S x)_j = Σ_c s_c(j) · x[cD + j]`,  `(Sᵀ y)[cD + j] = s_c(j) · y_j`.
///
/// Key `s_c` is read from `chacha_stream(mix(seed, PROJECTION), c)`: element `j` is −1 when
/// bit `j % 64` of the `(j / 64)`-th `next_u64` is set. Signs are generated 64 per `u64` and
/// applied by XOR on the `f32` sign bit.
///
/// **Algebra.** Row `j` of `S` touches only columns `cD + j`, so rows are disjoint and
/// `S Sᵀ = diag(m_j)` **exactly**, where `m_j` = [`slot_count`](Self::slot_count)`(j)` = the
/// number of chunks reaching slot `j` (`k` for `j < r`, `k − 1` for `j ≥ r`, with
/// `r = n − (k−1)D` the length of the last chunk). Hence
/// `P = Sᵀ diag(1/m) S` ([`reconstruct_into`](Self::reconstruct_into) after
/// [`encode_into`](Self::encode_into)) is an exact orthogonal projector of rank `min(n, D)`,
/// and `(1/k)·SᵀS` has eigenvalues `m_j/k ∈ [0, 1]`, so it is a contraction. For any fixed
/// `x` and random keys, `E‖Px‖² ≈ ‖x‖²/k`, `cos(x, Px) ≈ √(D/n)`, and
/// `‖x − Px‖² = ‖x‖² − ‖Px‖² ≤ ‖x‖²` (what error feedback needs). See `docs/vsa-core.md`.
///
/// **Cost.** Memory O(1) beyond the seed (a 512-byte stack buffer of signs); encode and
/// transpose are O(n) flops plus O(n/64) ChaCha8 words, no allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(try_from = "RawProjection"))]
pub struct RandomProjection {
    input_len: usize,
    output_len: usize,
    seed: u64,
}

#[cfg(feature = "serde")]
#[derive(serde::Deserialize)]
struct RawProjection {
    input_len: usize,
    output_len: usize,
    seed: u64,
}

#[cfg(feature = "serde")]
impl TryFrom<RawProjection> for RandomProjection {
    type Error = crate::Error;
    fn try_from(r: RawProjection) -> Result<Self> {
        Self::new(r.input_len, r.output_len, r.seed)
    }
}

impl RandomProjection {
    /// A projection from length `input_len` (n) to `output_len` (D); both must be ≥ 1.
    pub fn new(input_len: usize, output_len: usize, seed: u64) -> Result<Self> {
        check_nonzero("input_len", input_len)?;
        check_nonzero("output_len", output_len)?;
        Ok(Self {
            input_len,
            output_len,
            seed,
        })
    }

    /// n.
    pub fn input_len(&self) -> usize {
        self.input_len
    }

    /// D.
    pub fn output_len(&self) -> usize {
        self.output_len
    }

    /// The seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// `k = ceil(n / D)`, the number of chunks.
    pub fn num_chunks(&self) -> usize {
        self.input_len.div_ceil(self.output_len)
    }

    /// `m_j`, the number of chunks that reach slot `j`: the diagonal of `S Sᵀ`. `None` when
    /// `j >= D`. Zero for `j >= n` (only when `n < D`).
    pub fn slot_count(&self, slot: usize) -> Option<usize> {
        (slot < self.output_len).then(|| {
            if slot >= self.input_len {
                0
            } else {
                (self.input_len - slot).div_ceil(self.output_len)
            }
        })
    }

    /// The bounds of chunk `c` in `x`.
    fn chunk(&self, c: usize) -> (usize, usize) {
        let start = c * self.output_len;
        (start, (start + self.output_len).min(self.input_len))
    }

    /// Applies `f(x_sub, signs, offset)` over chunk `c` in blocks of `SIGN_BLOCK` elements.
    fn for_signs(&self, c: usize, mut f: impl FnMut(usize, usize, &[u64])) {
        let (start, end) = self.chunk(c);
        let mut rng = chacha_stream(mix(self.seed, domain::PROJECTION), c as u64);
        let mut buf = [0u64; SIGN_BLOCK / 64];
        let mut o = 0;
        while start + o < end {
            let n = SIGN_BLOCK.min(end - start - o);
            let words = n.div_ceil(64);
            for w in &mut buf[..words] {
                *w = rand_core::RngCore::next_u64(&mut rng);
            }
            f(o, n, &buf[..words]);
            o += n;
        }
    }

    /// `y = S x`. `x.len() == n`, `y.len() == D`; `y` is overwritten. No allocation.
    pub fn encode_into(&self, x: &[f32], y: &mut [f32]) -> Result<()> {
        check_len("x", self.input_len, x.len())?;
        check_len("y", self.output_len, y.len())?;
        y.fill(0.0);
        for c in 0..self.num_chunks() {
            let (start, _) = self.chunk(c);
            self.for_signs(c, |o, n, signs| {
                xor_signs_add(&x[start + o..start + o + n], signs, &mut y[o..o + n]);
            });
        }
        Ok(())
    }

    /// `x = Sᵀ y` (the adjoint: `⟨S x, y⟩ = ⟨x, Sᵀ y⟩`). `x` is overwritten. No allocation.
    pub fn transpose_into(&self, y: &[f32], x: &mut [f32]) -> Result<()> {
        check_len("y", self.output_len, y.len())?;
        check_len("x", self.input_len, x.len())?;
        for c in 0..self.num_chunks() {
            let (start, _) = self.chunk(c);
            self.for_signs(c, |o, n, signs| {
                xor_signs_into(&y[o..o + n], signs, &mut x[start + o..start + o + n]);
            });
        }
        Ok(())
    }

    /// `x = Sᵀ diag(1/m) y` (slots with `m_j = 0` give 0). After
    /// [`encode_into`](Self::encode_into) this is the exact orthogonal projection
    /// `x̂ = P x` onto the row space of `S`. No allocation.
    pub fn reconstruct_into(&self, y: &[f32], x: &mut [f32]) -> Result<()> {
        self.transpose_into(y, x)?;
        let k = self.num_chunks();
        let d = self.output_len;
        // Slots j < r are reached by k chunks, slots j >= r by k - 1.
        let r = self.input_len - (k - 1) * d;
        let (full, short) = (
            1.0 / k as f32,
            if k > 1 { 1.0 / (k - 1) as f32 } else { 0.0 },
        );
        for chunk in x.chunks_mut(d) {
            let split = r.min(chunk.len());
            chunk[..split].iter_mut().for_each(|v| *v *= full);
            chunk[split..].iter_mut().for_each(|v| *v *= short);
        }
        Ok(())
    }
}
