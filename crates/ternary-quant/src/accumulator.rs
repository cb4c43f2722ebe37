//! [`PackedAccumulator`]: micro-batch gradient accumulation whose state is packed trits.
//!
//! The held state after `k` micro-batches is the running mean `m_k` as `n` balanced trits per
//! element ([`AccumulatorConfig::trits_per_element`], values in `[−L, L]`,
//! `L = (3^n − 1)/2`, packed base 3: `1.6·n` bits) times one scale per block of
//! [`AccumulatorConfig::scale_granularity`] elements, held as an `f32` or as a one-byte
//! logarithmic code ([`ScaleFormat`]). Each step computes, element by element and in `f32`,
//!
//! ```text
//! v = ((k−1)/k) · m_{k−1} + g_k / k
//! ```
//!
//! and requantizes `v` block by block onto the levels `s_b·j/L`: stochastically with
//! `s_b >= max_{i∈b} |v_i|` (unbiased: `E[m_k | m_{k−1}] = v` up to `2^-16·s_b/L` per element,
//! so `E[m_k] = (g_1 + … + g_k)/k`), or deterministically (absmean for one trit, nearest
//! level otherwise; biased, for comparison). Nothing of size `O(len)` is held besides the
//! packed levels and the scales. The error of this scheme, and why small blocks with 8-bit
//! scales are the default, is derived in `docs/ternary.md`.

use crate::acc_step::{Choice, Scratch, Step, TILE, Tile};
use crate::dither::{self, Rounding};
use crate::error::{Error, Result, check_len};
use crate::levels::{check_trits_per_element, decode_levels_f32, levels_bytes, max_level};
use crate::pack::{BASE3_ZERO, check_base3};
use crate::quant::checked_max_abs;
use crate::rng::{Draws16, RngKey};
pub use crate::scales::ScaleFormat;
use crate::scales::{Log8Table, ZERO_CODE, log8_code, log8_scale};
use crate::simd::Isa;

/// The `f32`-scale block: 320 elements = 64 base-3 bytes = 5 bitplane words + one `f32`
/// (1.7 bits/element at one trit). The block of the transport codecs (e.g. the MPI ternary
/// codec) and of [`AccumulatorConfig::block320_f32`], the accumulator's earlier default.
pub const DEFAULT_SCALE_BLOCK: usize = 320;

/// The accumulator's default block with [`ScaleFormat::Log8`] scales: 25 elements, i.e.
/// `1.6 + 8/25 = 1.92` bits/element at one trit. Chosen in `docs/ternary.md`.
pub const DEFAULT_COMPACT_BLOCK: usize = 25;

/// How many elements share one scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum ScaleGranularity {
    /// One scale for the whole tensor: `1.6·n` bits/element + O(1), but a single outlier
    /// inflates every element's variance.
    PerTensor,
    /// One scale per block of this many elements (a positive multiple of 5, so blocks are
    /// whole base-3 bytes at every trit count).
    PerBlock(usize),
}

/// Configuration of a [`PackedAccumulator`]: plain public fields, validated by
/// [`PackedAccumulator::new`]. The default is one trit per element, blocks of
/// [`DEFAULT_COMPACT_BLOCK`] with [`ScaleFormat::Log8`] scales (1.92 bits/element).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct AccumulatorConfig {
    /// Micro-batches per accumulation (`>= 1`); `accumulate` fails past it until `reset`.
    pub accumulation_steps: usize,
    /// Unbiased stochastic requantization (`true`, default) or deterministic (`false`:
    /// absmean for one trit, nearest level otherwise; biased, no randomness).
    pub stochastic: bool,
    /// Run seed for the random streams.
    pub seed: u64,
    /// Identifier of this tensor, so that tensors of one model draw independent streams.
    pub tensor_id: u64,
    /// Scale sharing; default [`ScaleGranularity::PerBlock`]`(`[`DEFAULT_COMPACT_BLOCK`]`)`.
    pub scale_granularity: ScaleGranularity,
    /// Balanced trits held per element: 1, 2, 3 or 5 (3, 9, 27 or 243 levels). Default 1.
    #[cfg_attr(feature = "serde", serde(default = "one_trit"))]
    pub trits_per_element: u8,
    /// How block scales are held; default [`ScaleFormat::Log8`].
    #[cfg_attr(feature = "serde", serde(default = "f32_scales"))]
    pub scale_format: ScaleFormat,
    /// How the held levels are rounded and read back: [`Rounding::Stochastic`] (default) or
    /// the subtractive-dither decode [`Rounding::Subtractive`] (`docs/ternary.md` §3.3).
    /// States written before it existed load as `Stochastic`.
    #[cfg_attr(feature = "serde", serde(default))]
    pub rounding: Rounding,
}

#[cfg(feature = "serde")]
fn one_trit() -> u8 {
    1
}

/// States written before `scale_format` existed held `f32` scales.
#[cfg(feature = "serde")]
fn f32_scales() -> ScaleFormat {
    ScaleFormat::F32
}

impl Default for AccumulatorConfig {
    fn default() -> Self {
        Self {
            accumulation_steps: 8,
            stochastic: true,
            seed: 0,
            tensor_id: 0,
            scale_granularity: ScaleGranularity::PerBlock(DEFAULT_COMPACT_BLOCK),
            trits_per_element: 1,
            scale_format: ScaleFormat::Log8,
            rounding: Rounding::Stochastic,
        }
    }
}

impl AccumulatorConfig {
    /// The earlier default, kept for comparison: one `f32` scale per
    /// [`DEFAULT_SCALE_BLOCK`] elements (1.7 bits/element at one trit).
    pub fn block320_f32() -> Self {
        Self {
            scale_granularity: ScaleGranularity::PerBlock(DEFAULT_SCALE_BLOCK),
            scale_format: ScaleFormat::F32,
            ..Self::default()
        }
    }

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
        check_trits_per_element(self.trits_per_element)?;
        self.rounding.validate(self.stochastic)
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
    /// The packed levels of the running mean, `⌈n·len/5⌉` bytes (see [`crate::levels`]).
    pub trits: Vec<u8>,
    /// [`ScaleFormat::F32`]: one scale per block. [`ScaleFormat::Log8`]: one value, the
    /// tensor's reference `R`.
    pub scales: Vec<f32>,
    /// [`ScaleFormat::Log8`]: one code per block (255 = zero); empty for `F32`.
    #[cfg_attr(feature = "serde", serde(default))]
    pub codes: Vec<u8>,
}

impl AccumulatorState {
    /// The lengths `(trits, scales, codes)` of the buffers of an accumulator of `len`
    /// elements with `config` (those of [`PackedAccumulator::new`]): `⌈n·len/5⌉` level
    /// bytes; with [`ScaleFormat::F32`] one scale per block and no codes, with
    /// [`ScaleFormat::Log8`] one scale (the reference) and one code per block.
    ///
    /// # Errors
    /// As [`AccumulatorConfig::validate`]; [`Error::InvalidParameter`] (`len`) above
    /// `usize::MAX / 5`, where the level count would overflow.
    pub fn buffer_lens(len: usize, config: &AccumulatorConfig) -> Result<(usize, usize, usize)> {
        config.validate()?;
        if len > usize::MAX / 5 {
            return Err(Error::InvalidParameter {
                param: "len",
                expected: "at most usize::MAX / 5",
                actual: len.to_string(),
            });
        }
        let blocks = len.div_ceil(block_len(len, config.scale_granularity));
        let trits = levels_bytes(config.trits_per_element, len);
        Ok(match config.scale_format {
            ScaleFormat::F32 => (trits, blocks, 0),
            ScaleFormat::Log8 => (trits, 1, blocks),
        })
    }
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
/// // A constant tensor is represented exactly: mean = 2 everywhere.
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
    codes: Vec<u8>,
}

/// [`PackedAccumulator::step`] as a job for [`Isa::run`].
struct StepJob<'a> {
    acc: &'a mut PackedAccumulator,
    grad: &'a [f32],
}

impl pulp::NullaryFnOnce for StepJob<'_> {
    type Output = Result<()>;

    #[inline(always)]
    fn call(self) -> Result<()> {
        self.acc.step(self.grad)
    }
}

fn block_len(len: usize, g: ScaleGranularity) -> usize {
    match g {
        ScaleGranularity::PerTensor => len.div_ceil(5).max(1) * 5,
        ScaleGranularity::PerBlock(b) => b,
    }
}

impl PackedAccumulator {
    /// An empty accumulator for tensors of `len` elements; fails on an invalid `config` or a
    /// `len` above `usize::MAX / 5` (see [`AccumulatorState::buffer_lens`]).
    pub fn new(len: usize, config: AccumulatorConfig) -> Result<Self> {
        let (trits, scales, codes) = AccumulatorState::buffer_lens(len, &config)?;
        Ok(Self {
            len,
            block: block_len(len, config.scale_granularity),
            config,
            count: 0,
            trits: vec![BASE3_ZERO; trits],
            scales: vec![0.0; scales],
            codes: vec![ZERO_CODE; codes],
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
    /// draws the 16-bit half `i mod 2` of word `⌊i/2⌋` of it).
    pub fn next_rng_key(&self) -> RngKey {
        RngKey::new(self.config.seed, self.count as u64, self.config.tensor_id)
    }

    /// Bytes actually held: the struct itself plus the capacities of its buffers.
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.trits.capacity()
            + self.scales.capacity() * std::mem::size_of::<f32>()
            + self.codes.capacity()
    }

    /// `8 · memory_bytes() / len` (infinite for an empty tensor).
    pub fn bits_per_element(&self) -> f64 {
        (self.memory_bytes() * 8) as f64 / self.len as f64
    }

    /// The scale of block `bi` (0 for an all-zero block).
    fn scale(&self, bi: usize) -> f32 {
        match self.config.scale_format {
            ScaleFormat::F32 => self.scales[bi],
            ScaleFormat::Log8 => log8_scale(self.scales[0], self.codes[bi]),
        }
    }

    /// Adds one micro-batch gradient (updates the running mean and requantizes it).
    ///
    /// Errors, with the state unchanged: [`Error::AccumulationFull`] after
    /// `accumulation_steps` calls without [`reset`](Self::reset),
    /// [`Error::LengthMismatch`], [`Error::NonFinite`]. Does not allocate.
    ///
    /// The step runs on the widest instruction set the machine has (AVX2 where detected,
    /// see `simd.rs`), with the same result bit for bit on every one.
    pub fn accumulate(&mut self, grad: &[f32]) -> Result<()> {
        self.accumulate_on(Isa::detect(), grad)
    }

    /// [`accumulate`](Self::accumulate) on the instruction set `isa`.
    pub(crate) fn accumulate_on(&mut self, isa: Isa, grad: &[f32]) -> Result<()> {
        if self.count >= self.config.accumulation_steps {
            return Err(Error::AccumulationFull {
                accumulation_steps: self.config.accumulation_steps,
            });
        }
        check_len("grad", self.len, grad.len())?;
        isa.run(StepJob { acc: self, grad })
    }

    /// The step after the count and length checks: validates `grad` (finite), then updates
    /// the state. Inlined into [`Isa::run`]'s context, so its loops get that set's lanes.
    #[inline(always)]
    fn step(&mut self, grad: &[f32]) -> Result<()> {
        let gmax = checked_max_abs("grad", grad)?;
        // From here on nothing can fail.
        let k = self.count + 1;
        if let Rounding::Subtractive { .. } = self.config.rounding {
            let held = dither::Held {
                block: self.block,
                n: self.config.trits_per_element,
                count: self.count,
                seed: self.config.seed,
                tensor_id: self.config.tensor_id,
                rounding: self.config.rounding,
                fmt: self.config.scale_format,
                trits: &mut self.trits,
                scales: &mut self.scales,
                codes: &mut self.codes,
            };
            dither::step(held, grad, gmax);
            self.count = k;
            return Ok(());
        }
        let n = self.config.trits_per_element;
        let step = Step {
            n,
            l: max_level(n) as f32,
            stochastic: self.config.stochastic,
            a: self.count as f32 / k as f32,
            b: 1.0 / k as f32,
        };
        // Log8: the reference R = a·R_old + b·max|g| bounds every |v| = |a·m + b·g| up to the
        // rounding of the two f32 expressions (a few ulps); a block statistic above R gets
        // code 0 (scale R) and its levels clip at L: a bias below 2^-22·R, far under the
        // 2^-16 bound of the 16-bit draws (docs/ternary.md). Computed exactly like `v`, so
        // a constant tensor stays exact at one trit.
        let r_old = self.scales.first().copied().unwrap_or(0.0);
        let r_new = (step.a * r_old + step.b * gmax).min(f32::MAX);
        let mut draws = self
            .config
            .stochastic
            .then(|| Draws16::new(self.next_rng_key()));
        let blocks = self.len.div_ceil(self.block);
        let nn = usize::from(n);
        let mut scratch = Scratch::new();
        let fmt = self.config.scale_format;
        // Log8: the 255 scales of `r_new` as a table (same values as `log8_scale`), so that
        // each block's code is an estimate and four compares and its rounding factors a
        // load, and the held blocks' level units `s(R_old, c)/L` as another, so that no block
        // divides; worth building for more than a few blocks.
        let l = step.l;
        let tables = fmt == ScaleFormat::Log8 && blocks >= 64;
        let table = tables.then(|| Log8Table::new(r_new, l));
        let table = table.as_ref();
        let old_units: Option<[f32; 256]> = tables.then(|| {
            let r_old = self.scales[0];
            std::array::from_fn(|c| log8_scale(r_old, c as u8) / l)
        });
        let choose = move |stat: f32| match fmt {
            ScaleFormat::F32 => Choice::new(stat, 0, l),
            ScaleFormat::Log8 => {
                let c = if stat >= r_new {
                    if stat == 0.0 { ZERO_CODE } else { 0 }
                } else {
                    table.map_or_else(|| log8_code(r_new, stat), |t| t.code(stat))
                };
                match table {
                    Some(t) => {
                        let (pre, inv) = t.pre_inv(c);
                        Choice {
                            scale: t.scale(c),
                            code: c,
                            pre,
                            inv,
                        }
                    }
                    None => Choice::new(log8_scale(r_new, c), c, l),
                }
            }
        };
        if self.block <= TILE {
            // Whole blocks per stack tile: one decode, one draw copy, one pack per tile.
            let tile = TILE / self.block * self.block;
            let mut units = [0f32; TILE / 5];
            let mut chosen = [(0f32, 0u8); TILE / 5];
            for t0 in (0..self.len).step_by(tile) {
                let t1 = (t0 + tile).min(self.len);
                let (bi0, nbk) = (t0 / self.block, (t1 - t0).div_ceil(self.block));
                match &old_units {
                    Some(ou) => {
                        for (u, &c) in units[..nbk].iter_mut().zip(&self.codes[bi0..]) {
                            *u = ou[usize::from(c)];
                        }
                    }
                    None => {
                        for (j, u) in units[..nbk].iter_mut().enumerate() {
                            *u = self.scale(bi0 + j) / step.l;
                        }
                    }
                }
                let tile = Tile {
                    bytes: &mut self.trits[nn * t0 / 5..(nn * t1).div_ceil(5)],
                    g: &grad[t0..t1],
                    block: self.block,
                    old_units: &units[..nbk],
                    chosen: &mut chosen[..nbk],
                };
                step.blocks(tile, choose, draws.as_mut(), &mut scratch);
                for (j, &(s, c)) in chosen[..nbk].iter().enumerate() {
                    match fmt {
                        ScaleFormat::F32 => self.scales[bi0 + j] = s,
                        ScaleFormat::Log8 => self.codes[bi0 + j] = c,
                    }
                }
            }
        } else {
            for bi in 0..blocks {
                let e0 = bi * self.block;
                let e1 = (e0 + self.block).min(self.len);
                let old_unit = self.scale(bi) / step.l;
                let bytes = &mut self.trits[nn * e0 / 5..(nn * e1).div_ceil(5)];
                let (s, c) = step.block(
                    bytes,
                    &grad[e0..e1],
                    old_unit,
                    choose,
                    draws.as_mut(),
                    &mut scratch,
                );
                match fmt {
                    ScaleFormat::F32 => self.scales[bi] = s,
                    ScaleFormat::Log8 => self.codes[bi] = c,
                }
            }
        }
        if self.config.scale_format == ScaleFormat::Log8 {
            self.scales[0] = r_new;
        }
        self.count = k;
        Ok(())
    }

    /// Writes the accumulated mean `m_k` (zeros before the first micro-batch) into `out`.
    pub fn mean_into(&self, out: &mut [f32]) -> Result<()> {
        check_len("out", self.len, out.len())?;
        let n = self.config.trits_per_element;
        if let Rounding::Subtractive { .. } = self.config.rounding {
            dither::mean_into(
                self.block,
                n,
                self.count,
                (self.config.seed, self.config.tensor_id),
                self.config.rounding,
                self.config.scale_format,
                (&self.trits, &self.scales, &self.codes),
                out,
            );
            return Ok(());
        }
        let nn = usize::from(n);
        let l = max_level(n) as f32;
        for bi in 0..self.len.div_ceil(self.block) {
            let e0 = bi * self.block;
            let e1 = (e0 + self.block).min(self.len);
            let unit = self.scale(bi) / l;
            if n == 1 {
                crate::fused::dequantize_base3_unchecked(
                    &self.trits[e0 / 5..e1.div_ceil(5)],
                    unit,
                    &mut out[e0..e1],
                );
                continue;
            }
            for t0 in (e0..e1).step_by(TILE) {
                let t1 = (t0 + TILE).min(e1);
                let o = &mut out[t0..t1];
                decode_levels_f32(n, &self.trits[nn * t0 / 5..(nn * t1).div_ceil(5)], o);
                for x in o.iter_mut() {
                    *x *= unit;
                }
            }
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
        self.codes.fill(ZERO_CODE);
    }

    /// Like [`reset`](Self::reset), and from now on draws from the streams of `seed`
    /// (`config().seed` becomes `seed`). Callers that run many accumulation windows use it to
    /// give each window fresh randomness (the streams are otherwise keyed by `count`, which
    /// restarts at 0). Keeps the buffers, so no allocation.
    pub fn reset_with_seed(&mut self, seed: u64) {
        self.reset();
        self.config.seed = seed;
    }

    /// A copy of the full state, for checkpointing (see [`AccumulatorState`]). The
    /// checkpoint pattern: `state()` takes a snapshot, [`from_state`](Self::from_state)
    /// builds a new accumulator from one, [`restore`](Self::restore) puts one back into an
    /// existing accumulator.
    pub fn state(&self) -> AccumulatorState {
        AccumulatorState {
            len: self.len,
            config: self.config,
            count: self.count,
            trits: self.trits.clone(),
            scales: self.scales.clone(),
            codes: self.codes.clone(),
        }
    }

    /// Builds an accumulator from a state, validating every field (config, count, buffer
    /// sizes, canonical base-3 bytes, finite non-negative scales): [`new`](Self::new) with
    /// the state's length and config, then [`restore`](Self::restore).
    ///
    /// # Errors
    /// As [`new`](Self::new) for an invalid config, and as [`restore`](Self::restore).
    pub fn from_state(state: AccumulatorState) -> Result<Self> {
        let mut acc = Self::new(state.len, state.config)?;
        acc.restore(&state)?;
        Ok(acc)
    }

    /// Puts a state taken from an accumulator of the same length and config back into this
    /// one. The config must match apart from `seed`, which
    /// [`reset_with_seed`](Self::reset_with_seed) moves and which is taken from the state.
    /// Validates everything before writing, so on error nothing changes; never allocates.
    ///
    /// # Errors
    /// [`Error::LengthMismatch`] for another length or buffer sizes,
    /// [`Error::InvalidParameter`] (`config`) for another config, (`count`) for a count
    /// above `accumulation_steps`, (`scales`) for a negative or non-finite scale;
    /// [`Error::InvalidPacked`] for level bytes that are not canonical base 3.
    pub fn restore(&mut self, state: &AccumulatorState) -> Result<()> {
        check_len("state.len", self.len, state.len)?;
        let unseeded = AccumulatorConfig {
            seed: self.config.seed,
            ..state.config
        };
        if unseeded != self.config {
            return Err(Error::InvalidParameter {
                param: "config",
                expected: "this accumulator's config (only the seed may differ)",
                actual: format!("{:?}", state.config),
            });
        }
        if state.count > state.config.accumulation_steps {
            return Err(Error::InvalidParameter {
                param: "count",
                expected: "at most accumulation_steps",
                actual: state.count.to_string(),
            });
        }
        let nt = usize::from(state.config.trits_per_element) * state.len;
        check_base3(nt, &state.trits)?;
        check_len("scales", self.scales.len(), state.scales.len())?;
        check_len("codes", self.codes.len(), state.codes.len())?;
        if let Some(s) = state.scales.iter().find(|s| !(s.is_finite() && **s >= 0.0)) {
            return Err(Error::InvalidParameter {
                param: "scales",
                expected: "finite values >= 0",
                actual: s.to_string(),
            });
        }
        // Copy into the exactly sized buffers of `new`: a deserialized `Vec` may carry spare
        // capacity, which `memory_bytes` would (rightly) count.
        self.config.seed = state.config.seed;
        self.count = state.count;
        self.trits.copy_from_slice(&state.trits);
        self.scales.copy_from_slice(&state.scales);
        self.codes.copy_from_slice(&state.codes);
        Ok(())
    }
}

#[cfg(test)]
#[path = "accumulator_tests.rs"]
mod tests;
