//! Noise amplification of extrapolating a WLS fit `h` steps ahead.

/// Variance factor Var[ĝ(T+h)] / σ² of the [`LinearWls`](crate::PredictorModel::LinearWls)
/// prediction `h` steps after the last sample, when the recorded gradients are the truth plus
/// independent noise of variance σ² and were recorded at every step (unit gaps).
///
/// `window = Some(W)` is `HistoryMode::Window(W)` after at least `W` samples;
/// `None` is `HistoryMode::Streaming` after infinitely many samples. The prediction is
/// ĝ = Σᵢ cᵢ gᵢ with cᵢ = wᵢ/A + (h − μ)·wᵢ(τᵢ − μ)/M₂, so the factor is Σᵢ cᵢ².
/// For one sample (`W = 1`) it is 1. For `decay` outside (0, 1], `W = 0`, or `window = None`
/// with `decay = 1` (infinite unweighted history) it returns NaN.
///
/// For `window = None` it equals the closed form (q = 1 − decay)
/// `q·[1/(1+d) + 2(qh+d)/(1+d)² + 2(qh+d)²/(1+d)³]`; see `docs/grad-predict.md`.
///
/// ```
/// // Window(8) without decay: 1/8 + (h + 3.5)²/42, so 1.0 at h = 2.56.
/// let f = grad_predict::extrapolation_variance_factor(1.0, Some(8), 1.0);
/// assert!((f - (0.125 + 4.5f64 * 4.5 / 42.0)).abs() < 1e-12);
/// ```
pub fn extrapolation_variance_factor(decay: f64, window: Option<usize>, horizon: f64) -> f64 {
    if !(decay > 0.0 && decay <= 1.0) || window == Some(0) || (window.is_none() && decay == 1.0) {
        return f64::NAN;
    }
    let n = match window {
        Some(w) => w,
        // Ages beyond which decay^age < 1e-30 contribute nothing measurable in f64.
        None => ((-30.0 * std::f64::consts::LN_10) / decay.ln()).ceil() as usize + 1,
    };
    let (mut a, mut s1) = (0.0f64, 0.0f64);
    for age in 0..n {
        let w = decay.powi(age as i32);
        a += w;
        s1 += w * -(age as f64);
    }
    let mu = s1 / a;
    let mut m2 = 0.0;
    for age in 0..n {
        let w = decay.powi(age as i32);
        let d = -(age as f64) - mu;
        m2 += w * d * d;
    }
    let mut vf = 0.0;
    for age in 0..n {
        let w = decay.powi(age as i32);
        let tau = -(age as f64);
        let c = if m2 > 0.0 {
            w / a + (horizon - mu) * w * (tau - mu) / m2
        } else {
            w / a
        };
        vf += c * c;
    }
    vf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streaming_matches_closed_form() {
        for &d in &[0.5f64, 0.8, 0.9, 0.95, 0.99] {
            let q = 1.0 - d;
            for &h in &[0.0f64, 1.0, 5.0, 20.0] {
                let x = q * h + d;
                let closed = q
                    * (1.0 / (1.0 + d)
                        + 2.0 * x / (1.0 + d).powi(2)
                        + 2.0 * x * x / (1.0 + d).powi(3));
                let num = extrapolation_variance_factor(d, None, h);
                assert!(
                    (num - closed).abs() <= 1e-9 * closed,
                    "d={d} h={h}: {num} vs {closed}"
                );
            }
        }
    }

    #[test]
    fn uniform_window_matches_ols_formula() {
        // Ordinary least squares over W equally spaced points: 1/W + (h − x̄)²/Sxx with
        // x̄ = −(W−1)/2 and Sxx = W(W²−1)/12.
        for w in 2..12usize {
            let wf = w as f64;
            for &h in &[0.0f64, 1.0, 3.0, 10.0] {
                let xbar = -(wf - 1.0) / 2.0;
                let expect = 1.0 / wf + (h - xbar).powi(2) / (wf * (wf * wf - 1.0) / 12.0);
                let got = extrapolation_variance_factor(1.0, Some(w), h);
                assert!(
                    (got - expect).abs() < 1e-12 * expect.max(1.0),
                    "W={w} h={h}"
                );
            }
        }
        assert_eq!(extrapolation_variance_factor(0.9, Some(1), 5.0), 1.0);
        assert!(extrapolation_variance_factor(1.0, None, 1.0).is_nan());
        assert!(extrapolation_variance_factor(0.0, Some(3), 1.0).is_nan());
        assert!(extrapolation_variance_factor(0.9, Some(0), 1.0).is_nan());
    }
}
