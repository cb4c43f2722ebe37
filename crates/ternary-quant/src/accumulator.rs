//! [`PackedAccumulator`]: micro-batch gradient accumulation whose state is packed trits.
//!
//! The held state after `k` micro-batches is the running mean `m_k` as base-3 trits
//! (1.6 bits/element) times one `f32` scale per block of [`AccumulatorConfig::scale_granularity`]
//! elements. Each step computes, element by element and in `f32`,
//!
//! ```text
//! v = ((k−1)/k) · m_{k−1} + g_k / k
//! ```
//!
//! and requantizes `v` block by block, stochastically with `s_b = max_{i∈b} |v_i|` (so
//! `E[m_k | m_{k−1}] = v`, and by the tower property `E[m_k] = (g_1 + … + g_k)/k`), or, with
//! `stochastic: false`, deterministically with absmean (biased, for comparison). Nothing of
//! size `O(len)` is held besides the packed trits and the scales: `v` is recomputed from the
//! packed state in 320-element stack tiles, once to find the block scale, once to quantize.

use crate::error::{Error, Result, check_len};
use crate::fused::dequantize_base3_unchecked;
use crate::pack::{BASE3_ZERO, DECODE_F32, base3_bytes, check_base3, pack_base3_unchecked};
use crate::quant::{RAND_TILE, checked_max_abs, fill_words, prescale, stochastic_trit};
use crate::rng::RngKey;

/// Default scale block: 320 elements = 64 base-3 bytes + one `f32`, i.e. 1.7 bits/element.
/// Chosen by the measurements in `docs/ternary.md`.
pub const DEFAULT_SCALE_BLOCK: usize = 320;

/// How many elements share one `f32` scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum ScaleGranularity {
    /// One scale for the whole tensor: 1.6 bits/element + O(1) (the stretch goal), but a
    /// single outlier inflates every element's variance.
    PerTensor,
    /// One scale per block of this many elements (a positive multiple of 5, so blocks are
    /// whole base-3 bytes): `1.6 + 32/block` bits/element.
    PerBlock(usize),
}

/// Configuration of a [`PackedAccumulator`]: plain public fields, validated by
/// [`PackedAccumulator::new`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct AccumulatorConfig {
    /// Micro-batches per accumulation (`>= 1`); `accumulate` fails past it until `reset`.
    pub accumulation_steps: usize,
    /// Unbiased stochastic requantization (`true`, default) or deterministic absmean (`false`,
    /// biased; no randomness).
    pub stochastic: bool,
    /// Run seed for the random streams.
    pub seed: u64,
    /// Identifier of this tensor, so that tensors of one model draw independent streams.
    pub tensor_id: u64,
    /// Scale sharing; default [`ScaleGranularity::PerBlock`]`(`[`DEFAULT_SCALE_BLOCK`]`)`.
    pub scale_granularity: ScaleGranularity,
}

impl Default for AccumulatorConfig {
    fn default() -> Self {
        Self {
            accumulation_steps: 8,
            stochastic: true,
            seed: 0,
            tensor_id: 0,
            scale_granularity: ScaleGranularity::PerBlock(DEFAULT_SCALE_BLOCK),
        }
    }
}

impl AccumulatorConfig {
    /// Checks every field; the error names the field.
    pub fn validate(&self) -> Result<()> {
        if self.accumulation_steps == 0 {
            return Err(Error::InvalidParameter {
                param: "accumulation_steps",
                expected: "at least 1",
                actual: "0".into(),
            });
        }
        if let ScaleGranularity::PerBlock(b) = self.scale_granularity
            && (b == 0 || !b.is_multiple_of(5))
        {
            return Err(Error::InvalidParameter {
                param: "scale_granularity",
                expected: "PerBlock(n) with n a positive multiple of 5",
                actual: format!("PerBlock({b})"),
            });
        }
        Ok(())
    }
}

/// The complete state of a [`PackedAccumulator`], for checkpointing (serde with the `serde`
/// feature). The RNG position is explicit: the next micro-batch uses the stream
/// `RngKey { seed, step: count, tensor_id }`, so `(config, count)` fixes every future draw.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct AccumulatorState {
    /// Number of elements.
    pub len: usize,
    /// Configuration.
    pub config: AccumulatorConfig,
    /// Micro-batches accumulated since the last reset.
    pub count: usize,
    /// Base-3 trits of the running mean, `ceil(len/5)` bytes.
    pub trits: Vec<u8>,
    /// One scale per block.
    pub scales: Vec<f32>,
}

/// Gradient accumulator holding the running mean as packed trits plus per-block scales.
///
/// ```
/// use ternary_quant::{AccumulatorConfig, PackedAccumulator};
/// let mut acc = PackedAccumulator::new(1000, AccumulatorConfig { accumulation_steps: 2, ..Default::default() })?;
/// acc.accumulate(&vec![1.0; 1000])?;
/// acc.accumulate(&vec![3.0; 1000])?;
/// assert!(acc.ready());
/// let mut mean = vec![0.0; 1000];
/// acc.mean_into(&mut mean)?;
/// // A constant block is represented exactly: mean = 2 everywhere.
/// assert!(mean.iter().all(|&m| m == 2.0));
/// assert!(acc.memory_bytes() * 8 <= 2 * 1000 + 8 * 256);
/// # Ok::<(), ternary_quant::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct PackedAccumulator {
    len: usize,
    block: usize,
    config: AccumulatorConfig,
    count: usize,
    trits: Vec<u8>,
    scales: Vec<f32>,
}

fn block_len(len: usize, g: ScaleGranularity) -> usize {
    match g {
        ScaleGranularity::PerTensor => len.div_ceil(5).max(1) * 5,
        ScaleGranularity::PerBlock(b) => b,
    }
}

/// `v_i = ((k−1)/k)·s·t_i + g_i/k` for one tile (`g.len() == v.len() <= 320`), clamped to the
/// finite range (a convex combination of finite values can only round past `f32::MAX`).
#[inline]
fn tile_values(bytes: &[u8], g: &[f32], a_s: f32, b: f32, v: &mut [f32]) {
    let mut vc = v.chunks_exact_mut(5);
    let gc = g.chunks_exact(5);
    let grem = gc.remainder();
    for ((vo, gi), &byte) in (&mut vc).zip(gc).zip(bytes) {
        let d = &DECODE_F32[usize::from(byte)];
        for ((o, &gj), &dj) in vo.iter_mut().zip(gi).zip(d) {
            *o = (a_s * dj + b * gj).clamp(-f32::MAX, f32::MAX);
        }
    }
    let vrem = vc.into_remainder();
    if let (false, Some(&byte)) = (vrem.is_empty(), bytes.last()) {
        let d = &DECODE_F32[usize::from(byte)];
        for ((o, &gj), &dj) in vrem.iter_mut().zip(grem).zip(d) {
            *o = (a_s * dj + b * gj).clamp(-f32::MAX, f32::MAX);
        }
    }
}

impl PackedAccumulator {
    /// An empty accumulator for tensors of `len` elements; fails on an invalid `config`.
    pub fn new(len: usize, config: AccumulatorConfig) -> Result<Self> {
        config.validate()?;
        let block = block_len(len, config.scale_granularity);
        Ok(Self {
            len,
            block,
            config,
            count: 0,
            trits: vec![BASE3_ZERO; base3_bytes(len)],
            scales: vec![0.0; len.div_ceil(block)],
        })
    }

    /// Number of elements per gradient.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The configuration.
    pub fn config(&self) -> &AccumulatorConfig {
        &self.config
    }

    /// Micro-batches accumulated since the last reset.
    pub fn count(&self) -> usize {
        self.count
    }

    /// `true` once `accumulation_steps` micro-batches are in.
    pub fn ready(&self) -> bool {
        self.count >= self.config.accumulation_steps
    }

    /// The random stream the next [`accumulate`](Self::accumulate) will use (element `i`
    /// draws word `i` of it).
    pub fn next_rng_key(&self) -> RngKey {
        RngKey::new(self.config.seed, self.count as u64, self.config.tensor_id)
    }

    /// Bytes actually held: the struct itself plus the capacities of its two buffers.
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.trits.capacity() * std::mem::size_of::<u8>()
            + self.scales.capacity() * std::mem::size_of::<f32>()
    }

    /// `8 · memory_bytes() / len` (infinite for an empty tensor).
    pub fn bits_per_element(&self) -> f64 {
        (self.memory_bytes() * 8) as f64 / self.len as f64
    }

    /// Adds one micro-batch gradient (updates the running mean and requantizes it).
    ///
    /// Errors, with the state unchanged: [`Error::AccumulationFull`] after
    /// `accumulation_steps` calls without [`reset`](Self::reset),
    /// [`Error::LengthMismatch`], [`Error::NonFinite`]. Does not allocate.
    pub fn accumulate(&mut self, grad: &[f32]) -> Result<()> {
        if self.count >= self.config.accumulation_steps {
            return Err(Error::AccumulationFull {
                accumulation_steps: self.config.accumulation_steps,
            });
        }
        check_len("grad", self.len, grad.len())?;
        checked_max_abs("grad", grad)?;
        // From here on nothing can fail.
        let k = self.count + 1;
        let a = self.count as f32 / k as f32;
        let b = 1.0 / k as f32;
        let mut rng = self.next_rng_key().stream_at(0);
        let stochastic = self.config.stochastic;
        let mut v = [0f32; RAND_TILE];
        let mut trit = [0i8; RAND_TILE];
        let mut rbytes = [0u8; 4 * RAND_TILE];
        let mut rand = [0u32; RAND_TILE];
        for (bi, scale) in self.scales.iter_mut().enumerate() {
            let e0 = bi * self.block;
            let e1 = (e0 + self.block).min(self.len);
            let g = &grad[e0..e1];
            let bytes = &mut self.trits[e0 / 5..base3_bytes(e1)];
            let a_s = a * *scale;
            // Pass 1: block statistic (max |v| or mean |v|).
            let (mut mx, mut sum) = (0f32, 0f64);
            for (gt, bt) in g.chunks(RAND_TILE).zip(bytes.chunks(RAND_TILE / 5)) {
                let vt = &mut v[..gt.len()];
                tile_values(bt, gt, a_s, b, vt);
                if stochastic {
                    mx = vt.iter().fold(mx, |m, x| m.max(x.abs()));
                } else {
                    sum += vt.iter().map(|x| f64::from(x.abs())).sum::<f64>();
                }
            }
            let new_scale = if stochastic {
                mx
            } else {
                (sum / g.len() as f64) as f32
            };
            // Pass 2: requantize tile by tile, overwriting each tile's bytes after reading them.
            if new_scale == 0.0 {
                bytes.fill(BASE3_ZERO);
            } else {
                let (pre, inv) = prescale(new_scale);
                rng.set_word_pos(e0 as u128);
                for (gt, bt) in g.chunks(RAND_TILE).zip(bytes.chunks_mut(RAND_TILE / 5)) {
                    let n = gt.len();
                    let vt = &mut v[..n];
                    tile_values(bt, gt, a_s, b, vt);
                    let tt = &mut trit[..n];
                    if stochastic {
                        let r = &mut rand[..n];
                        fill_words(&mut rng, &mut rbytes, r);
                        for ((t, &x), &rw) in tt.iter_mut().zip(vt.iter()).zip(r.iter()) {
                            *t = stochastic_trit(x, rw, pre, inv);
                        }
                    } else {
                        crate::quant::threshold_trits(vt, new_scale, 2.0, tt);
                    }
                    pack_base3_unchecked(tt, bt);
                }
            }
            *scale = new_scale;
        }
        self.count = k;
        Ok(())
    }

    /// Writes the accumulated mean `m_k` (zeros before the first micro-batch) into `out`.
    pub fn mean_into(&self, out: &mut [f32]) -> Result<()> {
        check_len("out", self.len, out.len())?;
        for (bi, &scale) in self.scales.iter().enumerate() {
            let e0 = bi * self.block;
            let e1 = (e0 + self.block).min(self.len);
            dequantize_base3_unchecked(
                &self.trits[e0 / 5..base3_bytes(e1)],
                scale,
                &mut out[e0..e1],
            );
        }
        Ok(())
    }

    /// Convenience: the mean in a new `Vec` (allocates; prefer [`mean_into`](Self::mean_into)).
    pub fn mean(&self) -> Vec<f32> {
        let mut out = vec![0.0; self.len];
        // Cannot fail: `out` has the right length.
        let _ = self.mean_into(&mut out);
        out
    }

    /// Forgets all micro-batches (count 0, mean 0); keeps the buffers, so no allocation.
    pub fn reset(&mut self) {
        self.count = 0;
        self.trits.fill(BASE3_ZERO);
        self.scales.fill(0.0);
    }

    /// Like [`reset`](Self::reset), and from now on draws from the streams of `seed`
    /// (`config().seed` becomes `seed`). Callers that run many accumulation windows use it to
    /// give each window fresh randomness (the streams are otherwise keyed by `count`, which
    /// restarts at 0). Keeps the buffers, so no allocation.
    pub fn reset_with_seed(&mut self, seed: u64) {
        self.reset();
        self.config.seed = seed;
    }

    /// A copy of the full state, for checkpointing.
    pub fn state(&self) -> AccumulatorState {
        AccumulatorState {
            len: self.len,
            config: self.config,
            count: self.count,
            trits: self.trits.clone(),
            scales: self.scales.clone(),
        }
    }

    /// Rebuilds an accumulator from a state, validating every field (config, count, buffer
    /// sizes, canonical base-3 bytes, finite non-negative scales).
    pub fn from_state(state: AccumulatorState) -> Result<Self> {
        let mut acc = Self::new(state.len, state.config)?;
        if state.count > state.config.accumulation_steps {
            return Err(Error::InvalidParameter {
                param: "count",
                expected: "at most accumulation_steps",
                actual: state.count.to_string(),
            });
        }
        check_base3(state.len, &state.trits)?;
        check_len("scales", acc.scales.len(), state.scales.len())?;
        if let Some(s) = state.scales.iter().find(|s| !(s.is_finite() && **s >= 0.0)) {
            return Err(Error::InvalidParameter {
                param: "scales",
                expected: "finite values >= 0",
                actual: s.to_string(),
            });
        }
        acc.count = state.count;
        // Copy into the exactly sized buffers of `new`: a deserialized `Vec` may carry spare
        // capacity, which `memory_bytes` would (rightly) count.
        acc.trits.copy_from_slice(&state.trits);
        acc.scales.copy_from_slice(&state.scales);
        Ok(acc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(steps: usize) -> AccumulatorConfig {
        AccumulatorConfig {
            accumulation_steps: steps,
            ..Default::default()
        }
    }

    #[test]
    fn errors_leave_state_unchanged() {
        let mut acc = PackedAccumulator::new(7, cfg(2)).unwrap();
        acc.accumulate(&[0.5, -1.0, 0.0, 2.0, 1.0, 0.25, -0.75])
            .unwrap();
        let before = acc.clone();
        assert_eq!(
            acc.accumulate(&[0.0; 6]),
            Err(Error::LengthMismatch {
                what: "grad",
                expected: 7,
                actual: 6
            })
        );
        let mut bad = [0.0f32; 7];
        bad[4] = f32::NAN;
        assert!(matches!(
            acc.accumulate(&bad),
            Err(Error::NonFinite { index: 4, .. })
        ));
        assert_eq!(acc, before);
        acc.accumulate(&[0.0; 7]).unwrap();
        let full = acc.clone();
        assert_eq!(
            acc.accumulate(&[0.0; 7]),
            Err(Error::AccumulationFull {
                accumulation_steps: 2
            })
        );
        assert_eq!(acc, full);
        assert!(acc.ready());
        acc.reset();
        assert_eq!(acc.count(), 0);
        assert_eq!(acc.mean(), vec![0.0; 7]);
    }

    #[test]
    fn reset_with_seed_switches_streams() {
        let g: Vec<f32> = (0..40).map(|i| (i as f32 * 0.37).sin()).collect();
        let mut a = PackedAccumulator::new(40, cfg(1)).unwrap();
        a.accumulate(&g).unwrap();
        let first = a.mean();
        a.reset_with_seed(99);
        assert_eq!((a.count(), a.config().seed), (0, 99));
        assert_eq!(a.next_rng_key(), RngKey::new(99, 0, 0));
        a.accumulate(&g).unwrap();
        // Same input, fresh stream: some stochastic rounding differs.
        assert_ne!(a.mean(), first);
        let mut b = PackedAccumulator::new(40, AccumulatorConfig { seed: 99, ..cfg(1) }).unwrap();
        b.accumulate(&g).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn invalid_configs() {
        assert!(PackedAccumulator::new(10, cfg(0)).is_err());
        for b in [0, 7, 64] {
            let c = AccumulatorConfig {
                scale_granularity: ScaleGranularity::PerBlock(b),
                ..cfg(1)
            };
            assert!(matches!(
                PackedAccumulator::new(10, c),
                Err(Error::InvalidParameter {
                    param: "scale_granularity",
                    ..
                })
            ));
        }
    }

    #[test]
    fn zeros_subnormals_and_constants() {
        for g in [ScaleGranularity::PerTensor, ScaleGranularity::PerBlock(5)] {
            for stochastic in [true, false] {
                let c = AccumulatorConfig {
                    scale_granularity: g,
                    stochastic,
                    ..cfg(3)
                };
                let mut acc = PackedAccumulator::new(12, c).unwrap();
                acc.accumulate(&[0.0; 12]).unwrap();
                assert_eq!(acc.mean(), vec![0.0; 12]);
                let tiny = f32::from_bits(3);
                acc.accumulate(&[tiny; 12]).unwrap();
                assert!(acc.mean().iter().all(|m| m.is_finite() && *m >= 0.0));
                acc.accumulate(&[f32::MAX; 12]).unwrap();
                assert!(acc.mean().iter().all(|m| m.is_finite()));
            }
        }
    }

    #[test]
    fn memory_is_at_most_two_bits_per_element() {
        let n = 1 << 20;
        for (g, bound) in [
            (ScaleGranularity::PerTensor, 1.6),
            (ScaleGranularity::PerBlock(DEFAULT_SCALE_BLOCK), 1.7),
        ] {
            let acc = PackedAccumulator::new(
                n,
                AccumulatorConfig {
                    scale_granularity: g,
                    ..cfg(8)
                },
            )
            .unwrap();
            let bits = acc.bits_per_element();
            // Heap: exactly ceil(n/5) bytes + 4 bytes per block; the O(1) struct adds < 1e-3.
            assert!(bits <= bound + 1e-3 && bits >= bound, "{g:?}: {bits}");
        }
    }

    #[test]
    fn state_round_trip_and_validation() {
        let mut acc = PackedAccumulator::new(13, cfg(3)).unwrap();
        acc.accumulate(&[
            1.0, -2.0, 3.0, 0.5, 0.0, 1.0, 1.0, -1.0, 0.1, 0.2, 0.3, 0.4, 9.0,
        ])
        .unwrap();
        let back = PackedAccumulator::from_state(acc.state()).unwrap();
        assert_eq!(back, acc);
        let mut bad = acc.state();
        bad.trits[0] = 250;
        assert!(PackedAccumulator::from_state(bad).is_err());
        let mut bad = acc.state();
        bad.count = 4;
        assert!(PackedAccumulator::from_state(bad).is_err());
        let mut bad = acc.state();
        bad.scales[0] = f32::INFINITY;
        assert!(PackedAccumulator::from_state(bad).is_err());
    }
}
