//! The VSA sketch codec: `grad-sketch`'s [`SketchCompressor`] with its error feedback.

use grad_sketch::{CompressedGradients, SketchCompressor, SketchConfig};

use super::{
    Context, ExchangeMode, GradientCodec, decode_error, finish_encode, sketch_error, split_state,
};
use crate::error::{Error, Result, sketch_config_error};

/// The `vsa` mode's codec: a [`SketchCompressor`] (with its error feedback, when the config
/// has it) on each rank. Binding keys come from the shared seed and the compressor's call
/// counter, which advances in lockstep on every rank, so any rank decodes any rank's
/// payload. A failed exchange restores the residuals and the counter.
#[derive(Debug)]
pub struct VsaCodec {
    compressor: SketchCompressor,
    backup: Vec<Vec<f32>>,
    backup_step: u64,
    staged: bool,
    names: Vec<String>,
}

impl VsaCodec {
    /// A codec for the parameters `shapes` (`(name, shape)` in any order; payloads follow
    /// the sorted-name order).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for an invalid config or parameter list.
    pub fn new(shapes: &[(String, Vec<usize>)], config: SketchConfig) -> Result<Self> {
        let compressor = SketchCompressor::new(shapes, config).map_err(sketch_config_error)?;
        let list = compressor.params().list();
        let names = list.iter().map(|p| p.name.clone()).collect();
        let backup = if config.error_feedback {
            list.iter().map(|p| vec![0f32; p.numel()]).collect()
        } else {
            Vec::new()
        };
        Ok(Self {
            compressor,
            backup,
            backup_step: 0,
            staged: false,
            names,
        })
    }

    /// The compressor.
    pub fn compressor(&self) -> &SketchCompressor {
        &self.compressor
    }

    fn residual_elements(&self) -> usize {
        self.backup.iter().map(Vec::len).sum()
    }
}

impl GradientCodec for VsaCodec {
    fn mode(&self) -> ExchangeMode {
        ExchangeMode::Vsa
    }

    fn fingerprint(&self) -> u64 {
        // The compressor's fingerprint covers dimension, ratio, seed, reconstruction,
        // quantization and parameters; error feedback changes what a rank sends too.
        vsa_core::rng::mix(
            self.compressor.fingerprint(),
            u64::from(self.compressor.config().error_feedback),
        )
    }

    fn encode(&mut self, _ctx: Context, grads: &[Vec<f32>], out: &mut Vec<u8>) -> Result<()> {
        let step = self.compressor.step();
        for (b, name) in self.backup.iter_mut().zip(&self.names) {
            if let Some(r) = self.compressor.residual(name) {
                b.copy_from_slice(r);
            }
        }
        // The compressor changes nothing on error.
        let z = self.compressor.compress(grads).map_err(sketch_error)?;
        self.backup_step = step;
        self.staged = true;
        let written = z.write_bytes(out);
        finish_encode(self, written)
    }

    fn decode(&mut self, ctx: Context, payload: &[u8], out: &mut [Vec<f32>]) -> Result<()> {
        let bad = |e: grad_sketch::Error| decode_error(ctx, e.to_string());
        let z = CompressedGradients::from_bytes(payload).map_err(bad)?;
        self.compressor.decompress_into(&z, out).map_err(bad)
    }

    fn commit(&mut self) {
        self.staged = false;
    }

    fn rollback(&mut self) {
        // Only an encode that was not committed is undone: a failure before this rank
        // encoded (its own NaN, or a check before the all-gather) leaves nothing to undo.
        if std::mem::take(&mut self.staged) {
            self.compressor.set_step(self.backup_step);
            for (b, name) in self.backup.iter().zip(&self.names) {
                // The backup was copied from a valid residual: it has the right length
                // and is finite, so this cannot fail.
                let _ = self.compressor.set_residual(name, b);
            }
        }
    }

    fn state(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + 4 * self.residual_elements());
        out.extend_from_slice(&self.compressor.step().to_le_bytes());
        for name in &self.names {
            if let Some(r) = self.compressor.residual(name) {
                for &x in r {
                    out.extend_from_slice(&x.to_le_bytes());
                }
            }
        }
        out
    }

    fn restore(&mut self, state: &[u8]) -> Result<()> {
        let total = self.residual_elements();
        let (step, mut words) = split_state(state, total, "VSA codec")?;
        if !words.clone().all(f32::is_finite) {
            return Err(Error::Codec(
                "VSA codec state holds a non-finite residual".into(),
            ));
        }
        for (b, name) in self.backup.iter_mut().zip(&self.names) {
            b.iter_mut().zip(words.by_ref()).for_each(|(b, w)| *b = w);
            self.compressor
                .set_residual(name, b)
                .map_err(sketch_error)?;
        }
        self.compressor.set_step(step);
        self.backup_step = step;
        self.staged = false;
        Ok(())
    }
}
