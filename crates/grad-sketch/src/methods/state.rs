//! A [`Compressor`]'s checkpointable state, and summing messages of linear methods.
//!
//! The checkpoint pattern is the crate's (see [`SketchState`](crate::SketchState)):
//! [`Compressor::state`] takes a snapshot, [`Compressor::from_state`] builds a new compressor
//! from one, [`Compressor::restore`] puts one back into an existing compressor.

use super::CompressorConfig;
use super::compressor::Compressor;
use super::message::{Message, Part};
use crate::error::{Result, invalid};
use crate::state::{check_buffers, check_same, declared};

/// A [`Compressor`]'s state: its parameters and config, the step, the error-feedback
/// residuals and PowerSGD's warm starts (empty vectors where a parameter has none), in
/// sorted-name order. Restoring it resumes a run bit for bit.
#[derive(Debug, Clone, Default, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct CompressorState {
    /// Parameter names, sorted.
    pub names: Vec<String>,
    /// Parameter shapes, in the order of `names`.
    pub shapes: Vec<Vec<usize>>,
    /// The configuration.
    pub config: CompressorConfig,
    /// Successful compress calls so far.
    pub step: u64,
    /// Residuals (empty when error feedback is off).
    pub residuals: Vec<Vec<f32>>,
    /// PowerSGD `Q` factors (empty for parameters sent dense and other methods).
    pub warm_starts: Vec<Vec<f32>>,
}

impl Compressor {
    /// Copies the state into `out`, reusing its buffers (no allocation once `out` has the
    /// shapes and names).
    pub fn copy_state_into(&self, out: &mut CompressorState) {
        let list = self.params.list();
        out.names.resize_with(list.len(), String::new);
        out.shapes.resize_with(list.len(), Vec::new);
        for ((n, s), p) in out.names.iter_mut().zip(out.shapes.iter_mut()).zip(list) {
            n.clone_from(&p.name);
            s.clone_from(&p.shape);
        }
        out.config = self.config;
        out.step = self.step;
        for (dst, src) in [
            (&mut out.residuals, &self.residuals),
            (&mut out.warm_starts, &self.q),
        ] {
            dst.resize_with(src.len(), Vec::new);
            for (d, s) in dst.iter_mut().zip(src) {
                d.clear();
                d.extend_from_slice(s);
            }
        }
    }

    /// The state (see [`CompressorState`]).
    pub fn state(&self) -> CompressorState {
        let mut s = CompressorState::default();
        self.copy_state_into(&mut s);
        s
    }

    /// Builds a compressor from a state: [`new`](Self::new) with the state's parameters and
    /// config, then [`restore`](Self::restore).
    ///
    /// # Errors
    /// As [`new`](Self::new) and [`restore`](Self::restore).
    pub fn from_state(state: CompressorState) -> Result<Self> {
        let shapes = declared(&state.names, &state.shapes)?;
        let mut c = Self::new(&shapes, state.config)?;
        c.restore(&state)?;
        Ok(c)
    }

    /// Puts a state back into this compressor, which must have the same parameters (names
    /// and shapes, in sorted order) and config.
    ///
    /// # Errors
    /// [`Error::InvalidState`](crate::Error::InvalidState) for other parameters or config,
    /// vectors of the wrong number or lengths, or non-finite values; nothing changes on
    /// error.
    pub fn restore(&mut self, state: &CompressorState) -> Result<()> {
        check_same(
            &self.params,
            &self.config,
            &state.names,
            &state.shapes,
            &state.config,
        )?;
        for (what, have, want) in [
            ("residuals", &state.residuals, &self.residuals),
            ("warm starts", &state.warm_starts, &self.q),
        ] {
            let lengths: Vec<usize> = want.iter().map(Vec::len).collect();
            check_buffers(what, have, &lengths)?;
        }
        self.copy_from(state);
        Ok(())
    }

    fn copy_from(&mut self, state: &CompressorState) {
        self.step = state.step;
        for (d, s) in self.residuals.iter_mut().zip(&state.residuals) {
            d.copy_from_slice(s);
        }
        for (d, s) in self.q.iter_mut().zip(&state.warm_starts) {
            d.copy_from_slice(s);
        }
    }

    /// Adds `other` into `sum` part by part: the sum of two ranks' messages for a linear
    /// method (count sketch, random-k, dense warm-up) decodes like the message of the summed
    /// gradients. Sums are taken in the order of the calls, so a fixed reduction order gives
    /// the same bits.
    ///
    /// # Errors
    /// [`Error::FingerprintMismatch`](crate::Error::FingerprintMismatch);
    /// [`Error::InvalidCompressed`](crate::Error::InvalidCompressed) for messages of another
    /// step or shape, or a method that is not linear in the gradient (top-k, PowerSGD).
    /// On error `sum` is unchanged.
    pub fn accumulate(&self, sum: &mut Message, other: &Message) -> Result<()> {
        self.check(sum)?;
        self.check(other)?;
        if sum.step != other.step {
            return Err(invalid(format!(
                "steps differ: {} and {}",
                sum.step, other.step
            )));
        }
        for (a, b) in sum.parts.iter().zip(&other.parts) {
            match (a, b) {
                (Part::Dense(_), Part::Dense(_)) | (Part::Values(_), Part::Values(_)) => {}
                _ => {
                    return Err(invalid(format!(
                        "{} messages are not linear in the gradient: decode, then sum",
                        self.config.method.label()
                    )));
                }
            }
        }
        let mut summed = sum.parts.clone();
        for (a, b) in summed.iter_mut().zip(&other.parts) {
            if let (Part::Dense(x) | Part::Values(x), Part::Dense(y) | Part::Values(y)) = (a, b) {
                x.iter_mut().zip(y).for_each(|(x, y)| *x += y);
            }
        }
        if !summed.iter().all(Part::all_finite) {
            return Err(invalid("the sum overflows f32"));
        }
        sum.parts = summed;
        Ok(())
    }
}
