//! [`MomentumCodec`]: `grad-sketch`'s [`MomentumCompressor`] (error feedback on the momentum
//! under AdamW, the variance frozen after an exact warm-up, after 1-bit Adam) as an
//! exchange codec.

use grad_sketch::{Message, MomentumCompressor, MomentumConfig, MomentumState};

use super::{
    Context, ExchangeMode, GradientCodec, decode_error, finish_encode, fnv, sketch_error,
    split_state,
};
use crate::error::{Error, Result, sketch_config_error};

/// A [`MomentumCompressor`] on each rank, exchanged gathered.
///
/// The scheme's step has two halves: `compress` (the dense gradient during the warm-up,
/// afterwards the compressed `β₁m + (1−β₁)g` with error feedback) on each rank, and
/// `apply` of **every rank's message** on every rank, which updates AdamW's moments and
/// returns the AdamW direction `d`. In the exchange:
///
/// * [`encode`](GradientCodec::encode) is `compress` (after a snapshot of the scheme's
///   state, for [`rollback`](GradientCodec::rollback));
/// * [`decode`](GradientCodec::decode) checks and decodes rank `r`'s message (the exchange
///   sums and checks the decoded values as for any codec) and keeps it, in rank order;
/// * [`finish`](GradientCodec::finish) calls `apply` with the kept messages and replaces
///   the exchange's mean by `d`: **what the exchange returns is the AdamW direction, not an
///   averaged gradient**, and the caller steps `θ ← θ·(1 − lr·wd) − lr·d` (no optimizer
///   of its own).
///
/// Every rank applies the same messages in the same order, so every rank's moments and
/// directions are the same bits, and equal to one process that runs `N` schemes and
/// applies their messages in rank order (tested). The mode is
/// [`ExchangeMode::Compressed`]; the fingerprint covers the compressor's configuration and
/// AdamW's `β₁`, `β₂`, `ε` and frozen floor, and differs from a [`MethodCodec`]'s, so the
/// handshake refuses a rank that runs the plain method. Only [`Reduction::Gather`]: `apply`
/// takes the messages themselves (top-k, the default, is not linear anyway).
///
/// [`MethodCodec`]: crate::MethodCodec
/// [`Reduction::Gather`]: crate::Reduction::Gather
#[derive(Debug)]
pub struct MomentumCodec {
    scheme: MomentumCompressor,
    /// The state before the staged `compress`, for a rollback.
    backup: Option<MomentumState>,
    /// The messages of this step, in rank order.
    received: Vec<Message>,
}

impl MomentumCodec {
    /// A codec for the parameters `shapes` (`(name, shape)` in any order; payloads and
    /// directions follow the sorted-name order).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for an invalid config (a warm-up of 0 steps included) or
    /// parameter list.
    pub fn new(shapes: &[(String, Vec<usize>)], config: MomentumConfig) -> Result<Self> {
        let scheme = MomentumCompressor::new(shapes, config).map_err(sketch_config_error)?;
        Ok(Self {
            scheme,
            backup: None,
            received: Vec::new(),
        })
    }

    /// The scheme (its moments, step and compressor).
    pub fn scheme(&self) -> &MomentumCompressor {
        &self.scheme
    }
}

/// The f32 vectors of a state, in the order of [`MomentumCodec`]'s state bytes.
fn vectors(s: &MomentumState) -> impl Iterator<Item = &Vec<f32>> {
    s.compressor
        .residuals
        .iter()
        .chain(&s.compressor.warm_starts)
        .chain(&s.moments.momentum)
        .chain(&s.moments.variance)
}

impl GradientCodec for MomentumCodec {
    fn mode(&self) -> ExchangeMode {
        ExchangeMode::Compressed
    }

    fn fingerprint(&self) -> u64 {
        let adam = self.scheme.config().adam;
        fnv([
            // "momentum": keeps a plain MethodCodec of the same compressor apart.
            0x6d6f_6d65_6e74_756d,
            self.scheme.compressor().fingerprint(),
            adam.beta1.to_bits(),
            adam.beta2.to_bits(),
            adam.eps.to_bits(),
            adam.frozen_floor.to_bits(),
        ])
    }

    fn encode(&mut self, _ctx: Context, grads: &[Vec<f32>], out: &mut Vec<u8>) -> Result<()> {
        self.received.clear();
        let before = self.scheme.state();
        let m = self.scheme.compress(grads).map_err(sketch_error)?;
        self.backup = Some(before);
        let written = m.write_bytes(out);
        finish_encode(self, written)
    }

    fn decode(&mut self, ctx: Context, payload: &[u8], out: &mut [Vec<f32>]) -> Result<()> {
        if ctx.rank != self.received.len() {
            return Err(decode_error(
                ctx,
                format!(
                    "the momentum codec decodes in rank order: rank {} expected",
                    self.received.len()
                ),
            ));
        }
        let bad = |e: grad_sketch::Error| decode_error(ctx, e.to_string());
        let m = Message::from_bytes(payload).map_err(bad)?;
        let inner = self.scheme.compressor();
        inner.check(&m).map_err(bad)?;
        if m.step != self.scheme.step() {
            return Err(decode_error(
                ctx,
                format!(
                    "a message of step {}, this scheme applies step {}",
                    m.step,
                    self.scheme.step()
                ),
            ));
        }
        inner.decompress_into(&m, out).map_err(bad)?;
        self.received.push(m);
        Ok(())
    }

    fn finish(&mut self, _ctx: Context, mean: &mut [Vec<f32>]) -> Result<()> {
        // `apply` validates everything before it writes: on error neither `mean` nor the
        // moments change (the exchange then rolls the compress back).
        self.scheme
            .apply(&self.received, mean)
            .map_err(|e| Error::Codec(format!("the momentum scheme's update: {e}")))
    }

    fn commit(&mut self) {
        self.backup = None;
        self.received.clear();
    }

    fn rollback(&mut self) {
        self.received.clear();
        if let Some(b) = self.backup.take() {
            // A snapshot of this scheme: same parameters and config, finite.
            let _ = self.scheme.restore(&b);
        }
    }

    fn state(&self) -> Vec<u8> {
        let s = self.scheme.state();
        let mut out = s.compressor.step.to_le_bytes().to_vec();
        out.extend(s.moments.step.to_le_bytes());
        for v in vectors(&s) {
            out.extend(v.iter().flat_map(|x| x.to_le_bytes()));
        }
        out
    }

    fn restore(&mut self, state: &[u8]) -> Result<()> {
        let mut s = self.scheme.state();
        let total: usize = vectors(&s).map(Vec::len).sum();
        if state.len() < 8 {
            return Err(Error::Codec(format!(
                "momentum codec state of {} bytes, expected {}",
                state.len(),
                16 + 4 * total
            )));
        }
        let compressor_step = u64::from_le_bytes(state[..8].try_into().expect("8 bytes"));
        let (step, mut words) = split_state(&state[8..], total, "momentum codec")?;
        s.compressor.step = compressor_step;
        s.moments.step = step;
        let c = &mut s.compressor;
        let m = &mut s.moments;
        for v in c
            .residuals
            .iter_mut()
            .chain(c.warm_starts.iter_mut())
            .chain(m.momentum.iter_mut())
            .chain(m.variance.iter_mut())
        {
            v.iter_mut().zip(words.by_ref()).for_each(|(x, w)| *x = w);
        }
        // Validates fully (finite values, steps that fit) before it writes.
        self.scheme.restore(&s).map_err(sketch_error)?;
        self.backup = None;
        self.received.clear();
        Ok(())
    }
}
