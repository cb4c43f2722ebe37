//! `grad-predict`: closed-form WLS (Cramer's rule) gradient prediction on plain slices.
//! Placeholder; filled by its issue.

/// How a predictor keeps its history of recorded gradients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum HistoryMode {
    /// Keep the last `W` gradients in a ring buffer (the seed's `history_window`).
    Window(usize),
    /// Keep only the exponentially decayed sufficient statistics: O(1) history per element.
    Streaming,
}

/// Which model turns the history into a prediction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum PredictorModel {
    /// Reuse the last true gradient.
    LastGradient,
    /// An exponentially decayed mean of the history (the WLS baseline `b` alone).
    DecayedMean,
    /// Linear weighted least squares `b + v·t`, solved by Cramer's rule.
    LinearWls,
}
