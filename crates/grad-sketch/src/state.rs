//! Checkpoints of the VSA sketch: [`SketchState`], and the parameter check shared with
//! [`CompressorState`](crate::CompressorState).
//!
//! Every checkpointable type of this crate follows one pattern: `state()` returns a plain
//! value (serde with the `serde` feature) that names its parameters and config;
//! `from_state(state)` builds a new compressor from one; `restore(&mut self, &state)` puts
//! one back into an existing compressor, which must have the same parameters and config.
//! Both validate everything first, return a typed error and change nothing on error.

use crate::compressor::SketchCompressor;
use crate::config::SketchConfig;
use crate::error::{Error, Result};
use crate::params::Params;

/// A [`SketchCompressor`]'s state: its parameters and config, the call counter (which keys
/// the next call's projections) and the error-feedback residuals. Restoring it resumes a
/// run bit for bit.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct SketchState {
    /// Parameter names, sorted.
    pub names: Vec<String>,
    /// Parameter shapes, in the order of `names`.
    pub shapes: Vec<Vec<usize>>,
    /// The configuration.
    pub config: SketchConfig,
    /// Successful compress calls so far.
    pub step: u64,
    /// One residual per parameter, in the order of `names` (one `f32` per element; empty
    /// vectors when error feedback is off).
    pub residuals: Vec<Vec<f32>>,
}

/// The declared parameters as `(names, shapes)`, in sorted order.
pub(crate) fn names_and_shapes(params: &Params) -> (Vec<String>, Vec<Vec<usize>>) {
    params
        .list()
        .iter()
        .map(|p| (p.name.clone(), p.shape.clone()))
        .unzip()
}

/// `(name, shape)` pairs of a state, for `new`.
pub(crate) fn declared(
    names: &[String],
    shapes: &[Vec<usize>],
) -> Result<Vec<(String, Vec<usize>)>> {
    if names.len() != shapes.len() {
        return Err(Error::InvalidState(format!(
            "state: {} names and {} shapes (expected equal counts)",
            names.len(),
            shapes.len()
        )));
    }
    Ok(names.iter().cloned().zip(shapes.iter().cloned()).collect())
}

/// Checks that a state's parameters and config are this compressor's.
pub(crate) fn check_same<C: PartialEq + std::fmt::Debug>(
    params: &Params,
    config: &C,
    names: &[String],
    shapes: &[Vec<usize>],
    state_config: &C,
) -> Result<()> {
    let list = params.list();
    let same = list.len() == names.len()
        && list.len() == shapes.len()
        && list
            .iter()
            .zip(names.iter().zip(shapes))
            .all(|(p, (n, s))| &p.name == n && &p.shape == s);
    if !same {
        let (have_n, have_s) = names_and_shapes(params);
        return Err(Error::InvalidState(format!(
            "state for parameters {names:?} {shapes:?}: this compressor has {have_n:?} {have_s:?}"
        )));
    }
    if state_config != config {
        return Err(Error::InvalidState(format!(
            "state config {state_config:?} differs from this compressor's {config:?}"
        )));
    }
    Ok(())
}

/// Checks `count` vectors against the expected lengths (`want`), and that all are finite.
pub(crate) fn check_buffers(what: &str, have: &[Vec<f32>], want: &[usize]) -> Result<()> {
    let lengths: Vec<usize> = have.iter().map(Vec::len).collect();
    if lengths != want {
        return Err(Error::InvalidState(format!(
            "{what}: expected lengths {want:?}, got {lengths:?}"
        )));
    }
    if !have.iter().flatten().all(|x| x.is_finite()) {
        return Err(Error::InvalidState(format!(
            "{what}: a value is not finite"
        )));
    }
    Ok(())
}

impl SketchCompressor {
    /// A copy of the state (see [`SketchState`]).
    pub fn state(&self) -> SketchState {
        let (names, shapes) = names_and_shapes(self.params());
        let residuals = names
            .iter()
            .map(|n| self.residual(n).map_or_else(Vec::new, <[f32]>::to_vec))
            .collect();
        SketchState {
            names,
            shapes,
            config: *self.config(),
            step: self.step(),
            residuals,
        }
    }

    /// Builds a compressor from a state: [`new`](Self::new) with the state's parameters and
    /// config, then [`restore`](Self::restore).
    ///
    /// # Errors
    /// As [`new`](Self::new) and [`restore`](Self::restore).
    pub fn from_state(state: SketchState) -> Result<Self> {
        let shapes = declared(&state.names, &state.shapes)?;
        let mut c = Self::new(&shapes, state.config)?;
        c.restore(&state)?;
        Ok(c)
    }

    /// Puts a state back into this compressor, which must have the same parameters (names
    /// and shapes, in sorted order) and config. Validates everything first: on error nothing
    /// changes.
    ///
    /// # Errors
    /// [`Error::InvalidState`] for other parameters or config, residuals of the wrong number
    /// or lengths (one per parameter, empty when error feedback is off), or a non-finite
    /// residual.
    pub fn restore(&mut self, state: &SketchState) -> Result<()> {
        check_same(
            self.params(),
            self.config(),
            &state.names,
            &state.shapes,
            &state.config,
        )?;
        let ef = self.config().error_feedback;
        let want: Vec<usize> = self
            .params()
            .list()
            .iter()
            .map(|p| if ef { p.numel() } else { 0 })
            .collect();
        check_buffers("residuals", &state.residuals, &want)?;
        if ef {
            for (name, r) in state.names.iter().zip(&state.residuals) {
                // Checked above: a declared name, the right length, finite values.
                self.set_residual(name, r)?;
            }
        }
        self.set_step(state.step);
        Ok(())
    }
}
