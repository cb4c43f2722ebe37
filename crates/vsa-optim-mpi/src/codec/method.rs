//! The `compressed` mode's codec: any `grad_sketch::Compressor` method (heavy-hitter count
//! sketch, random-k, top-k, PowerSGD) with its error feedback and warm start.

use grad_sketch::{Compressor, CompressorConfig, CompressorState, Message, Method, Part};

use super::{
    Context, ExchangeMode, GradientCodec, LinearWire, check_sum, decode_error, finish_encode,
    sketch_error, split_state,
};
use crate::error::{Result, sketch_config_error};

/// A [`Compressor`] on each rank. Keys come from the shared seed and the compressor's call
/// counter, which advances in lockstep on every rank; the fingerprint covers the method and
/// its parameters, so the handshake refuses a rank whose decoding config differs. A failed
/// exchange restores the residuals, the warm starts and the counter.
///
/// The count sketch and random-k (and every method's dense warm-up) are linear in the
/// gradient with keys from `(seed, name, step)`, so under
/// [`Reduction::Sum`](crate::Reduction) the ranks sum their messages (the sketch tables or
/// the selected values) and decode the sum once; error feedback stays per rank (each rank
/// keeps what its own message did not carry). Top-k and PowerSGD are not linear: they only
/// run gathered.
#[derive(Debug)]
pub struct MethodCodec {
    compressor: Compressor,
    backup: CompressorState,
    staged: bool,
    /// The last linear message, whose parts are overwritten by the sum to decode it.
    last: Option<Message>,
}

impl MethodCodec {
    /// A codec for the parameters `shapes` (`(name, shape)` in any order; payloads follow
    /// the sorted-name order).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`](crate::Error::InvalidConfig) for an invalid config or parameter
    /// list.
    pub fn new(shapes: &[(String, Vec<usize>)], config: CompressorConfig) -> Result<Self> {
        let compressor = Compressor::new(shapes, config).map_err(sketch_config_error)?;
        let backup = compressor.state();
        Ok(Self {
            compressor,
            backup,
            staged: false,
            last: None,
        })
    }

    /// The compressor.
    pub fn compressor(&self) -> &Compressor {
        &self.compressor
    }
}

impl GradientCodec for MethodCodec {
    fn mode(&self) -> ExchangeMode {
        ExchangeMode::Compressed
    }

    fn fingerprint(&self) -> u64 {
        self.compressor.fingerprint()
    }

    fn encode(&mut self, _ctx: Context, grads: &[Vec<f32>], out: &mut Vec<u8>) -> Result<()> {
        self.compressor.copy_state_into(&mut self.backup);
        let m = self.compressor.compress(grads).map_err(sketch_error)?;
        self.staged = true;
        let written = m.write_bytes(out);
        finish_encode(self, written)
    }

    fn decode(&mut self, ctx: Context, payload: &[u8], out: &mut [Vec<f32>]) -> Result<()> {
        let bad = |e: grad_sketch::Error| decode_error(ctx, e.to_string());
        let m = Message::from_bytes(payload).map_err(bad)?;
        self.compressor.decompress_into(&m, out).map_err(bad)
    }

    fn linear(&self) -> Option<LinearWire> {
        match self.compressor.config().method {
            Method::CountSketch { .. } | Method::RandomK { .. } => Some(LinearWire::F32),
            Method::TopK { .. }
            | Method::PowerSgd { .. }
            | Method::TopKPacked { .. }
            | Method::RandomKPacked { .. } => None,
        }
    }

    fn encode_linear(
        &mut self,
        ctx: Context,
        grads: &[Vec<f32>],
        out: &mut Vec<f32>,
    ) -> Result<()> {
        if self.linear().is_none() {
            return Err(super::not_linear(self.mode()));
        }
        self.compressor.copy_state_into(&mut self.backup);
        let m = self.compressor.compress(grads).map_err(sketch_error)?;
        self.staged = true;
        for p in &m.parts {
            match p {
                Part::Dense(v) | Part::Values(v) => out.extend_from_slice(v),
                _ => {
                    self.rollback();
                    return Err(decode_error(ctx, "a linear method made a non-linear part"));
                }
            }
        }
        self.last = Some(m);
        Ok(())
    }

    fn decode_linear(&mut self, ctx: Context, sum: &[f32], out: &mut [Vec<f32>]) -> Result<()> {
        let Some(m) = self.last.as_mut() else {
            return Err(decode_error(
                ctx,
                "no linear message was encoded at this step",
            ));
        };
        let total = m
            .parts
            .iter()
            .map(|p| match p {
                Part::Dense(v) | Part::Values(v) => v.len(),
                _ => 0,
            })
            .sum();
        check_sum(ctx, sum, total)?;
        if m.step + 1 != self.compressor.step() {
            return Err(decode_error(ctx, "the sum is not of the last encoded step"));
        }
        let mut at = 0;
        for p in &mut m.parts {
            if let Part::Dense(v) | Part::Values(v) = p {
                let len = v.len();
                v.copy_from_slice(&sum[at..at + len]);
                at += len;
            }
        }
        let bad = |e: grad_sketch::Error| decode_error(ctx, e.to_string());
        self.compressor.decompress_into(m, out).map_err(bad)
    }

    fn commit(&mut self) {
        self.staged = false;
    }

    fn rollback(&mut self) {
        if std::mem::take(&mut self.staged) {
            // The backup was copied from this compressor: same shapes, finite.
            let _ = self.compressor.restore(&self.backup);
        }
    }

    fn state(&self) -> Vec<u8> {
        let s = self.compressor.state();
        let mut out = s.step.to_le_bytes().to_vec();
        for v in s.residuals.iter().chain(&s.warm_starts) {
            out.extend(v.iter().flat_map(|x| x.to_le_bytes()));
        }
        out
    }

    fn restore(&mut self, state: &[u8]) -> Result<()> {
        let mut s = self.compressor.state();
        let total: usize = s.residuals.iter().chain(&s.warm_starts).map(Vec::len).sum();
        let (step, mut words) = split_state(state, total, "compressed codec")?;
        s.step = step;
        for v in s.residuals.iter_mut().chain(s.warm_starts.iter_mut()) {
            v.iter_mut().zip(words.by_ref()).for_each(|(x, w)| *x = w);
        }
        self.compressor.restore(&s).map_err(sketch_error)?;
        self.staged = false;
        Ok(())
    }
}
