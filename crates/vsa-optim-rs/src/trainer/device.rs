//! The per-parameter predictor history as tensors on the parameters' device.
//!
//! `grad-predict` solves the scalars (weights, fit, window coefficients) once per step for
//! the whole model; this module applies them element-wise with candle ops, in the same f32
//! operations and order as grad-predict's slice kernels, so that predictions and histories
//! equal the reference's (see `docs/trainer.md` for the exactness argument and the bound on
//! the quality sums, whose summation order differs).

use candle_core::{DType, Tensor};
use grad_predict::{PredictCoefficients, RecordCoefficients, StatPrecision};

use crate::error::Result;

/// The dtype a history of `precision` is stored in.
pub(crate) fn store_dtype(precision: StatPrecision) -> DType {
    match precision {
        StatPrecision::F32 => DType::F32,
        StatPrecision::Bf16 => DType::BF16,
        StatPrecision::F16 => DType::F16,
    }
}

/// One parameter's history: the buffers grad-predict keeps per element, as tensors.
#[derive(Debug, Clone, Default)]
pub(crate) struct History {
    /// The last gradient (`Replace`), or M₀ (streaming models). With f32 storage and the
    /// `LastGradient` model this is the recorded gradient tensor itself (a reference).
    pub(crate) a: Option<Tensor>,
    /// N₁ (streaming `LinearWls`).
    pub(crate) b: Option<Tensor>,
    /// Ring slots (`Window(W)`).
    pub(crate) slots: Vec<Option<Tensor>>,
    /// The residual r, f32; `None` means zero.
    pub(crate) residual: Option<Tensor>,
    /// Whether r is added to predictions.
    pub(crate) residual_active: bool,
    /// ‖r‖/‖g‖ at the latest correction.
    pub(crate) residual_ratio: f32,
}

/// What a Correct step measured for one parameter, still on the device: the four quality
/// sums (⟨f,g⟩, ‖f‖², ‖g‖², ‖f−g‖², f = the prediction the trainer would have used) and
/// ‖r‖² after the residual update, as 0-d f32 tensors.
pub(crate) struct CorrectionSums {
    pub(crate) sums: [Tensor; 5],
}

fn read(t: &Tensor) -> Result<Tensor> {
    Ok(t.to_dtype(DType::F32)?)
}

/// The error for a history buffer that should be held and is not (a malformed checkpoint).
pub(crate) fn missing() -> crate::error::Error {
    crate::error::Error::Checkpoint("predictor history is missing a buffer".into())
}

impl History {
    pub(crate) fn new(window: usize) -> Self {
        Self {
            slots: vec![None; window],
            ..Self::default()
        }
    }

    /// `x` as stored: the tensor itself for f32 storage of an f32 (or exactly representable)
    /// gradient, else rounded to the storage dtype.
    fn store(x: &Tensor, precision: StatPrecision, keep_dtype: bool) -> Result<Tensor> {
        let dtype = store_dtype(precision);
        if keep_dtype && precision == StatPrecision::F32 {
            // Any float gradient (f32, bf16, f16) is exact in f32: keep the reference.
            return Ok(x.detach());
        }
        Ok(x.to_dtype(dtype)?.detach())
    }

    /// The history after recording `g` with `coeffs` (pure: `self` is unchanged).
    /// `g32` is `g` as f32.
    pub(crate) fn recorded(
        &self,
        coeffs: RecordCoefficients,
        g: &Tensor,
        g32: &Tensor,
        precision: StatPrecision,
    ) -> Result<History> {
        let mut h = self.clone();
        match coeffs {
            RecordCoefficients::Replace => h.a = Some(Self::store(g, precision, true)?),
            RecordCoefficients::Mean { a0, b0 } => {
                let m = match &self.a {
                    None => g32.affine(f64::from(b0), 0.0)?,
                    Some(a) => {
                        (read(a)?.affine(f64::from(a0), 0.0)? + g32.affine(f64::from(b0), 0.0)?)?
                    }
                };
                h.a = Some(Self::store(&m, precision, false)?);
            }
            RecordCoefficients::Line { a0, b0, c1, c2 } => {
                let (m, n) = match (&self.a, &self.b) {
                    (Some(a), Some(b)) => {
                        let m32 = read(a)?;
                        // One temporary per statement (peak memory).
                        let n = read(b)?.affine(f64::from(c1), 0.0)?;
                        let n = (n + m32.affine(f64::from(c2), 0.0)?)?;
                        let m = m32.affine(f64::from(a0), 0.0)?;
                        let m = (m + g32.affine(f64::from(b0), 0.0)?)?;
                        (m, n)
                    }
                    _ => (g32.affine(f64::from(b0), 0.0)?, g32.zeros_like()?),
                };
                h.a = Some(Self::store(&m, precision, false)?);
                h.b = Some(Self::store(&n, precision, false)?);
            }
            RecordCoefficients::Slot { slot } => {
                let s = h.slots.get_mut(slot).ok_or_else(missing)?;
                *s = Some(Self::store(g, precision, true)?);
            }
        }
        Ok(h)
    }

    /// Ring slot `slot`; [`missing`] when it is empty or out of range.
    pub(crate) fn slot(&self, slot: usize) -> Result<&Tensor> {
        self.slots
            .get(slot)
            .and_then(Option::as_ref)
            .ok_or_else(missing)
    }

    /// The model's prediction without the residual, f32.
    pub(crate) fn model_prediction(&self, coeffs: &PredictCoefficients) -> Result<Tensor> {
        let a = || self.a.as_ref().ok_or_else(missing);
        match coeffs {
            PredictCoefficients::Copy => read(a()?),
            PredictCoefficients::Line { gamma } => {
                let m = read(a()?)?;
                let n = read(self.b.as_ref().ok_or_else(missing)?)?;
                Ok((&m + (n - &m)?.affine(f64::from(*gamma), 0.0)?)?)
            }
            PredictCoefficients::Window { terms } => {
                let mut acc: Option<Tensor> = None;
                for &(slot, c) in terms {
                    let term = read(self.slot(slot)?)?.affine(f64::from(c), 0.0)?;
                    acc = Some(match acc {
                        None => term,
                        Some(acc) => (acc + term)?,
                    });
                }
                acc.ok_or_else(missing)
            }
        }
    }

    /// The prediction the trainer applies: the model's plus the residual when active.
    pub(crate) fn prediction(&self, coeffs: &PredictCoefficients) -> Result<Tensor> {
        let p = self.model_prediction(coeffs)?;
        match (&self.residual, self.residual_active) {
            (Some(r), true) => Ok((p + r)?),
            _ => Ok(p),
        }
    }

    /// At a Correct step: measures the applied prediction against `g32`, updates the
    /// residual r ← (1 − ρ)·r + ρ·(g − ĝ₀), and returns the new residual with the sums.
    /// The prediction is formed once.
    pub(crate) fn correction(
        &self,
        coeffs: &PredictCoefficients,
        g32: &Tensor,
        rate: f32,
    ) -> Result<(Tensor, CorrectionSums)> {
        let p0 = self.model_prediction(coeffs)?;
        // One statement per temporary, so that at most two full-size temporaries are alive
        // at a time (peak memory, see `examples/trainer_memory.rs`).
        let r = {
            let step = (g32 - &p0)?.affine(f64::from(rate), 0.0)?;
            match &self.residual {
                Some(r) => (r.affine(f64::from(1.0 - rate), 0.0)? + step)?,
                None => step,
            }
        };
        let f = match (&self.residual, self.residual_active) {
            (Some(old), true) => (&p0 + old)?,
            _ => p0,
        };
        let dot = (&f * g32)?.sum_all()?;
        let pp = f.sqr()?.sum_all()?;
        let gg = g32.sqr()?.sum_all()?;
        let ee = (&f - g32)?.sqr()?.sum_all()?;
        drop(f);
        let rr = r.sqr()?.sum_all()?;
        let sums = [dot, pp, gg, ee, rr];
        Ok((r, CorrectionSums { sums }))
    }

    /// Bytes held by the history's tensors (16-bit or f32 elements), counting a tensor
    /// shared with the caller (the recorded gradient) too.
    pub(crate) fn bytes(&self) -> usize {
        let size = |t: &Option<Tensor>| {
            t.as_ref()
                .map_or(0, |t| t.elem_count() * t.dtype().size_in_bytes())
        };
        size(&self.a)
            + size(&self.b)
            + size(&self.residual)
            + self.slots.iter().map(size).sum::<usize>()
    }
}
