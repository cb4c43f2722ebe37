//! Gradient codecs: how one rank's gradient becomes the bytes it sends, and back.
//!
//! A codec is given the parameter layout (one `Vec<f32>` per parameter, in the same order
//! on every rank) and, at each exchange, the step and the sending rank, which key any
//! randomness. Decoding any rank's payload must give the same values on every rank, so that
//! every rank computes the same average.

mod bf16;
mod method;
mod momentum;
mod ternary;
mod vsa;

pub use bf16::{Bf16Codec, bf16_add, bf16_to_f32, f32_to_bf16};
pub use method::MethodCodec;
pub use momentum::MomentumCodec;
pub use ternary::{DEFAULT_TERNARY_BLOCK, TernaryCodec, TernaryPacking};
pub use vsa::VsaCodec;

use crate::error::{Error, Result, config_error, sketch_config_error};

/// The exchange modes. Part of the start-up handshake: all ranks must use the same one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ExchangeMode {
    /// Raw little-endian `f32`: the bit-deterministic reference.
    F32,
    /// Unbiased stochastic ternary trits with one `f32` scale per block.
    Ternary,
    /// The VSA sketch of `grad-sketch` with error feedback ([`VsaCodec`]).
    Vsa,
    /// A `grad-sketch` method (heavy-hitter count sketch, random-k, top-k, PowerSGD) with
    /// error feedback ([`MethodCodec`]).
    Compressed,
    /// `bf16` (the upper 16 bits of the `f32`, rounded to nearest even): 2 bytes per
    /// element ([`Bf16Codec`]).
    Bf16,
}

impl ExchangeMode {
    /// The mode's wire tag.
    pub fn tag(self) -> u8 {
        match self {
            Self::F32 => 0,
            Self::Ternary => 1,
            Self::Vsa => 2,
            Self::Compressed => 3,
            Self::Bf16 => 4,
        }
    }

    /// A short lowercase name (`f32`, `ternary`, `vsa`, `compressed`, `bf16`).
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::Ternary => "ternary",
            Self::Vsa => "vsa",
            Self::Compressed => "compressed",
            Self::Bf16 => "bf16",
        }
    }
}

impl std::fmt::Display for ExchangeMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for ExchangeMode {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "f32" => Ok(Self::F32),
            "ternary" => Ok(Self::Ternary),
            "vsa" => Ok(Self::Vsa),
            "compressed" => Ok(Self::Compressed),
            "bf16" => Ok(Self::Bf16),
            other => Err(config_error(
                "mode",
                "f32, ternary, vsa, compressed or bf16",
                format!("{other:?}"),
            )),
        }
    }
}

impl ExchangeMode {
    /// Every mode, in tag order.
    pub const ALL: [Self; 5] = [
        Self::F32,
        Self::Ternary,
        Self::Vsa,
        Self::Compressed,
        Self::Bf16,
    ];
}

/// The number format of a linear message on the wire (see [`GradientCodec::linear`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LinearWire {
    /// Little-endian `f32`, 4 bytes per value.
    F32,
    /// Little-endian `bf16` ([`f32_to_bf16`]), 2 bytes per value.
    Bf16,
}

impl LinearWire {
    /// `f32` or `bf16`.
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::Bf16 => "bf16",
        }
    }

    /// Bytes per value.
    pub fn bytes(self) -> usize {
        match self {
            Self::F32 => 4,
            Self::Bf16 => 2,
        }
    }

    /// Appends `values` in this format.
    pub fn put(self, values: &[f32], out: &mut Vec<u8>) {
        match self {
            Self::F32 => out.extend(values.iter().flat_map(|x| x.to_le_bytes())),
            Self::Bf16 => out.extend(values.iter().flat_map(|&x| f32_to_bf16(x).to_le_bytes())),
        }
    }

    /// Reads `out.len()` values in this format from `bytes` (which must hold exactly that
    /// many; the caller checks).
    pub fn get(self, bytes: &[u8], out: &mut [f32]) {
        match self {
            Self::F32 => {
                for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                    *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                }
            }
            Self::Bf16 => {
                for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                    *o = bf16_to_f32(u16::from_le_bytes([c[0], c[1]]));
                }
            }
        }
    }
}

/// Which ranks and step an encode or decode belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Context {
    /// The training step (keys randomness; the same on every rank).
    pub step: u64,
    /// The rank whose gradient is encoded or decoded.
    pub rank: usize,
}

/// Turns one rank's gradient into bytes and back.
///
/// `encode` may stage internal state (error feedback, counters); the exchange calls
/// [`commit`](GradientCodec::commit) once every rank's payload was decoded, or
/// [`rollback`](GradientCodec::rollback) when the exchange failed on any rank, so a failed
/// exchange leaves the codec as it was.
pub trait GradientCodec {
    /// The mode, checked by the handshake.
    fn mode(&self) -> ExchangeMode;
    /// A hash of everything that must agree between ranks for payloads to decode the same
    /// (block sizes, dimensions, seeds), checked by the handshake.
    fn fingerprint(&self) -> u64;
    /// Appends the payload for `grads` (finite, in the layout given at construction) to
    /// `out`.
    ///
    /// # Errors
    /// Codec-specific; state must be unchanged on error.
    fn encode(&mut self, ctx: Context, grads: &[Vec<f32>], out: &mut Vec<u8>) -> Result<()>;
    /// Decodes rank `ctx.rank`'s payload into `out` (overwriting it).
    ///
    /// # Errors
    /// [`Error::Decode`] on a malformed payload; [`Error::LengthMismatch`] when `out` does
    /// not have the layout given at construction. This crate's codecs validate everything
    /// before writing, so `out` is untouched on error.
    fn decode(&mut self, ctx: Context, payload: &[u8], out: &mut [Vec<f32>]) -> Result<()>;
    /// Turns the exchange's result of a gathered step (the mean over ranks of the decoded
    /// payloads, summed in rank order) into what the exchange returns, after every rank's
    /// payload was decoded. The default returns the mean unchanged; [`MomentumCodec`]
    /// replaces it by the AdamW direction of its scheme.
    ///
    /// # Errors
    /// Codec-specific (the same on every rank for the same payloads); `mean` and the state
    /// are unchanged on error.
    fn finish(&mut self, _ctx: Context, _mean: &mut [Vec<f32>]) -> Result<()> {
        Ok(())
    }
    /// Makes the state staged by the last `encode` permanent.
    fn commit(&mut self) {}
    /// Discards the state staged by the last `encode`.
    fn rollback(&mut self) {}
    /// Checkpointable state (empty for stateless codecs).
    fn state(&self) -> Vec<u8> {
        Vec::new()
    }
    /// Restores [`state`](GradientCodec::state).
    ///
    /// # Errors
    /// [`Error::Codec`] when the bytes are not a state of this codec.
    fn restore(&mut self, state: &[u8]) -> Result<()> {
        if state.is_empty() {
            Ok(())
        } else {
            Err(Error::Codec(format!(
                "a stateless codec was given {} bytes of state",
                state.len()
            )))
        }
    }
    /// `Some(wire)` when this codec has a *linear message*: a vector of values, of the same
    /// length on every rank at a step, whose element-wise sum over ranks decodes like the
    /// message of the summed gradients (raw `f32`, `bf16`, a count sketch or a random-k
    /// selection with keys shared by all ranks). The summed exchange
    /// ([`Reduction::Sum`](crate::Reduction)) needs it. `None` (the default) otherwise.
    fn linear(&self) -> Option<LinearWire> {
        None
    }
    /// Appends this rank's linear message for `grads` to `out` (values exactly
    /// representable in the [`linear`](GradientCodec::linear) wire format). Stages state
    /// like [`encode`](GradientCodec::encode).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a codec without a linear message; otherwise as `encode`.
    fn encode_linear(
        &mut self,
        _ctx: Context,
        _grads: &[Vec<f32>],
        _out: &mut Vec<f32>,
    ) -> Result<()> {
        Err(not_linear(self.mode()))
    }
    /// Decodes the sum over ranks of the linear messages of step `ctx.step` into `out`
    /// (overwriting it; the exchange divides by the number of ranks afterwards). Called
    /// after [`encode_linear`](GradientCodec::encode_linear) of the same step.
    ///
    /// # Errors
    /// [`Error::Decode`] for a sum of the wrong length or with non-finite values;
    /// [`Error::LengthMismatch`] for `out`; `out` is untouched on error.
    fn decode_linear(&mut self, _ctx: Context, _sum: &[f32], _out: &mut [Vec<f32>]) -> Result<()> {
        Err(not_linear(self.mode()))
    }
}

fn not_linear(mode: ExchangeMode) -> Error {
    config_error(
        "reduction",
        "a codec whose messages can be summed (f32, bf16, count sketch, random-k)",
        mode,
    )
}

/// Checks a summed linear message's length and values, for `decode_linear`.
pub(crate) fn check_sum(ctx: Context, sum: &[f32], expected: usize) -> Result<()> {
    if sum.len() != expected {
        return Err(decode_error(
            ctx,
            format!(
                "a summed message of {} values, expected {expected}",
                sum.len()
            ),
        ));
    }
    if sum.iter().any(|x| !x.is_finite()) {
        return Err(decode_error(ctx, "the summed message is not finite"));
    }
    Ok(())
}

/// Writes a flat vector into a parameter list (the lengths were checked).
pub(crate) fn unflatten(flat: &[f32], out: &mut [Vec<f32>]) {
    let mut at = 0;
    for o in out.iter_mut() {
        let len = o.len();
        o.copy_from_slice(&flat[at..at + len]);
        at += len;
    }
}

pub(crate) fn check_grads(lens: &[usize], grads: &[Vec<f32>]) -> Result<()> {
    if grads.len() != lens.len() {
        return Err(Error::LengthMismatch {
            what: "number of parameters".into(),
            expected: lens.len(),
            actual: grads.len(),
        });
    }
    for (k, (g, &n)) in grads.iter().zip(lens).enumerate() {
        if g.len() != n {
            return Err(Error::LengthMismatch {
                what: format!("gradient of parameter {k}"),
                expected: n,
                actual: g.len(),
            });
        }
    }
    Ok(())
}

pub(crate) fn decode_error(ctx: Context, reason: impl Into<String>) -> Error {
    Error::Decode {
        rank: ctx.rank,
        reason: reason.into(),
    }
}

/// A grad-sketch error met while encoding or restoring, as [`Error::Codec`].
pub(crate) fn sketch_error(e: grad_sketch::Error) -> Error {
    Error::Codec(e.to_string())
}

/// Ends a staged encode: a failed write of the message rolls the codec back.
pub(crate) fn finish_encode(
    codec: &mut impl GradientCodec,
    written: grad_sketch::Result<()>,
) -> Result<()> {
    written.map_err(|e| {
        codec.rollback();
        sketch_error(e)
    })
}

/// Splits a stateful codec's state bytes (`u64` step, then `total` f32 values) after
/// checking their length; `who` names the codec in the error.
pub(crate) fn split_state<'a>(
    state: &'a [u8],
    total: usize,
    who: &str,
) -> Result<(u64, impl Iterator<Item = f32> + Clone + 'a)> {
    if state.len() != 8 + 4 * total {
        return Err(Error::Codec(format!(
            "{who} state of {} bytes, expected {}",
            state.len(),
            8 + 4 * total
        )));
    }
    let step = u64::from_le_bytes(state[..8].try_into().expect("8 bytes"));
    let words = state[8..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]));
    Ok((step, words))
}

/// FNV-1a over little-endian `u64` words: the fingerprints' hash.
pub(crate) fn fnv(words: impl IntoIterator<Item = u64>) -> u64 {
    vsa_core::rng::fnv1a(words.into_iter().flat_map(u64::to_le_bytes))
}

/// Implements [`GradientCodec`] for a raw codec: a struct with the parameter lengths `lens`
/// whose payload is one [`LinearWire`] value per element and whose linear message is the
/// same values. The struct supplies `values` (the checked values it sends, appended to a
/// `Vec<f32>`) and `encode_raw` (those values as payload bytes).
macro_rules! raw_codec {
    ($codec:ty, $mode:expr, $wire:expr) => {
        impl GradientCodec for $codec {
            fn mode(&self) -> ExchangeMode {
                $mode
            }

            fn fingerprint(&self) -> u64 {
                fnv(self.lens.iter().map(|&n| n as u64))
            }

            fn encode(
                &mut self,
                _ctx: Context,
                grads: &[Vec<f32>],
                out: &mut Vec<u8>,
            ) -> Result<()> {
                self.encode_raw(grads, out)
            }

            fn decode(&mut self, ctx: Context, payload: &[u8], out: &mut [Vec<f32>]) -> Result<()> {
                decode_raw(&self.lens, $wire, ctx, payload, out)
            }

            fn linear(&self) -> Option<LinearWire> {
                Some($wire)
            }

            fn encode_linear(
                &mut self,
                _ctx: Context,
                grads: &[Vec<f32>],
                out: &mut Vec<f32>,
            ) -> Result<()> {
                self.values(grads, out)
            }

            fn decode_linear(
                &mut self,
                ctx: Context,
                sum: &[f32],
                out: &mut [Vec<f32>],
            ) -> Result<()> {
                decode_linear_raw(&self.lens, ctx, sum, out)
            }
        }
    };
}
pub(crate) use raw_codec;

/// Raw `f32`, little-endian: `4·n` bytes, lossless.
#[derive(Debug, Clone)]
pub struct F32Codec {
    lens: Vec<usize>,
}

impl F32Codec {
    /// A codec for parameters of lengths `lens`.
    pub fn new(lens: &[usize]) -> Self {
        Self {
            lens: lens.to_vec(),
        }
    }

    fn values(&self, grads: &[Vec<f32>], out: &mut Vec<f32>) -> Result<()> {
        check_grads(&self.lens, grads)?;
        for g in grads {
            out.extend_from_slice(g);
        }
        Ok(())
    }

    /// Writes the gradients straight to bytes (no intermediate copy).
    fn encode_raw(&self, grads: &[Vec<f32>], out: &mut Vec<u8>) -> Result<()> {
        check_grads(&self.lens, grads)?;
        for g in grads {
            LinearWire::F32.put(g, out);
        }
        Ok(())
    }
}

raw_codec!(F32Codec, ExchangeMode::F32, LinearWire::F32);

/// Decodes a payload of raw values in `wire` format (f32 or bf16) into `out`, after
/// checking its length and `out`'s layout.
pub(crate) fn decode_raw(
    lens: &[usize],
    wire: LinearWire,
    ctx: Context,
    payload: &[u8],
    out: &mut [Vec<f32>],
) -> Result<()> {
    let expected = wire.bytes() * lens.iter().sum::<usize>();
    if payload.len() != expected {
        return Err(decode_error(
            ctx,
            format!(
                "{} payload of {} bytes, expected {expected}",
                wire.name(),
                payload.len()
            ),
        ));
    }
    check_grads(lens, out)?;
    let mut at = 0;
    for o in out.iter_mut() {
        let bytes = wire.bytes() * o.len();
        wire.get(&payload[at..at + bytes], o);
        at += bytes;
    }
    Ok(())
}

/// `decode_linear` of a codec whose linear message is the gradient itself: checks and
/// copies.
pub(crate) fn decode_linear_raw(
    lens: &[usize],
    ctx: Context,
    sum: &[f32],
    out: &mut [Vec<f32>],
) -> Result<()> {
    check_sum(ctx, sum, lens.iter().sum())?;
    check_grads(lens, out)?;
    unflatten(sum, out);
    Ok(())
}

/// The codec for `mode` over the parameters `shapes` (`(name, shape)` in any order; every
/// codec works in sorted-name order): f32, bf16, ternary (base-3 payload with one scale per 320
/// elements, randomness from `seed`), VSA (`vsa`, [`VsaCodec`] with `vsa`) or `compressed`
/// ([`MethodCodec`] with `method`).
///
/// # Errors
/// [`Error::InvalidConfig`] for an invalid parameter list or config.
pub fn codec_for(
    mode: ExchangeMode,
    shapes: &[(String, Vec<usize>)],
    seed: u64,
    vsa: grad_sketch::SketchConfig,
    method: grad_sketch::CompressorConfig,
) -> Result<Box<dyn GradientCodec + Send>> {
    let params = grad_sketch::Params::new(shapes).map_err(sketch_config_error)?;
    let lens: Vec<usize> = params
        .list()
        .iter()
        .map(grad_sketch::Param::numel)
        .collect();
    Ok(match mode {
        ExchangeMode::F32 => Box::new(F32Codec::new(&lens)),
        ExchangeMode::Ternary => Box::new(TernaryCodec::new(
            &lens,
            seed,
            DEFAULT_TERNARY_BLOCK,
            TernaryPacking::Base3,
        )?),
        ExchangeMode::Vsa => Box::new(VsaCodec::new(shapes, vsa)?),
        ExchangeMode::Compressed => Box::new(MethodCodec::new(shapes, method)?),
        ExchangeMode::Bf16 => Box::new(Bf16Codec::new(&lens)),
    })
}
