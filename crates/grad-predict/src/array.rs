//! ndarray adapters: the predictor's slice API for standard-layout ndarray views.

use crate::error::{Error, Result};
use crate::predictor::GradientPredictor;
use crate::quality::PredictionQuality;

impl GradientPredictor {
    /// [`record`](Self::record) for an ndarray view of any shape (standard layout).
    ///
    /// # Errors
    /// [`Error::NotContiguous`], or as [`record`](Self::record).
    pub fn record_array<D: ndarray::Dimension>(
        &mut self,
        step: u64,
        grad: ndarray::ArrayView<'_, f32, D>,
    ) -> Result<()> {
        let g = grad
            .as_slice()
            .ok_or(Error::NotContiguous { what: "grad" })?;
        self.record(step, g)
    }

    /// [`predict_into`](Self::predict_into) for an ndarray view of any shape (standard layout).
    ///
    /// # Errors
    /// [`Error::NotContiguous`], or as [`predict_into`](Self::predict_into).
    pub fn predict_into_array<D: ndarray::Dimension>(
        &self,
        step: u64,
        mut out: ndarray::ArrayViewMut<'_, f32, D>,
    ) -> Result<()> {
        let o = out
            .as_slice_mut()
            .ok_or(Error::NotContiguous { what: "out" })?;
        self.predict_into(step, o)
    }

    /// [`record_correction`](Self::record_correction) for an ndarray view (standard layout).
    ///
    /// # Errors
    /// [`Error::NotContiguous`], or as [`record_correction`](Self::record_correction).
    pub fn record_correction_array<D: ndarray::Dimension>(
        &mut self,
        step: u64,
        grad: ndarray::ArrayView<'_, f32, D>,
    ) -> Result<PredictionQuality> {
        let g = grad
            .as_slice()
            .ok_or(Error::NotContiguous { what: "grad" })?;
        self.record_correction(step, g)
    }
}
