//! ndarray conveniences (feature `ndarray`, on by default).

use crate::accumulator::PackedAccumulator;
use crate::error::{Error, Result};
use crate::rng::RngKey;
use ndarray::{Array, ArrayBase, ArrayD, Data, Dimension, IxDyn};

/// The data of `a` in logical (row-major) order: borrowed when contiguous, copied otherwise.
fn logical<S: Data<Elem = f32>, D: Dimension>(a: &ArrayBase<S, D>) -> std::borrow::Cow<'_, [f32]> {
    match a.as_slice() {
        Some(s) => std::borrow::Cow::Borrowed(s),
        None => std::borrow::Cow::Owned(a.iter().copied().collect()),
    }
}

/// Absmean (BitNet b1.58) quantization of an array: `(γ, trits)` with `trits` of `x`'s shape.
pub fn quantize_absmean_array<S, D>(x: &ArrayBase<S, D>) -> Result<(f32, Array<i8, D>)>
where
    S: Data<Elem = f32>,
    D: Dimension,
{
    let data = logical(x);
    let mut out = Array::<i8, D>::zeros(x.raw_dim());
    let scale = crate::quantize_absmean_into(&data, out.as_slice_mut().unwrap_or(&mut []))?;
    Ok((scale, out))
}

/// Stochastic unbiased quantization of an array with `scale = max|x|`: `(scale, trits)`.
/// Element order (hence word positions in `key`'s stream) is the logical row-major order.
pub fn quantize_stochastic_array<S, D>(
    x: &ArrayBase<S, D>,
    key: RngKey,
) -> Result<(f32, Array<i8, D>)>
where
    S: Data<Elem = f32>,
    D: Dimension,
{
    let data = logical(x);
    let scale = crate::max_abs(&data)?;
    let mut out = Array::<i8, D>::zeros(x.raw_dim());
    crate::quantize_stochastic_into(&data, scale, key, 0, out.as_slice_mut().unwrap_or(&mut []))?;
    Ok((scale, out))
}

impl PackedAccumulator {
    /// [`accumulate`](Self::accumulate) for an array of any shape with `len` elements, read in
    /// logical row-major order (copied once if not contiguous).
    pub fn accumulate_array<S, D>(&mut self, grad: &ArrayBase<S, D>) -> Result<()>
    where
        S: Data<Elem = f32>,
        D: Dimension,
    {
        self.accumulate(&logical(grad))
    }

    /// The accumulated mean as an array of `shape` (whose product must be `len`).
    pub fn mean_array(&self, shape: &[usize]) -> Result<ArrayD<f32>> {
        let n: usize = shape.iter().product();
        if n != self.len() {
            return Err(Error::ShapeMismatch {
                what: "shape",
                expected: vec![self.len()],
                actual: shape.to_vec(),
            });
        }
        let mut out = ArrayD::<f32>::zeros(IxDyn(shape));
        self.mean_into(out.as_slice_mut().unwrap_or(&mut []))?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::AccumulatorConfig;
    use ndarray::{Array2, array};

    #[test]
    fn array_helpers_match_slices() {
        let x = array![[0.1f32, -0.5, 2.0], [0.25, -0.15, 0.0]];
        let (g, q) = quantize_absmean_array(&x).unwrap();
        assert!((g - 0.5).abs() < 1e-6);
        assert_eq!(q, array![[0i8, -1, 1], [0, 0, 0]]);
        // Transposed view is not contiguous: logical order still used.
        let (_, qt) = quantize_absmean_array(&x.t()).unwrap();
        assert_eq!(qt, q.t());
        let (s, qs) = quantize_stochastic_array(&x, RngKey::new(1, 2, 3)).unwrap();
        assert_eq!(s, 2.0);
        let mut flat = [0i8; 6];
        crate::quantize_stochastic_into(
            x.as_slice().unwrap(),
            2.0,
            RngKey::new(1, 2, 3),
            0,
            &mut flat,
        )
        .unwrap();
        assert_eq!(qs.as_slice().unwrap(), &flat);

        let mut acc = PackedAccumulator::new(6, AccumulatorConfig::default()).unwrap();
        acc.accumulate_array(&Array2::<f32>::from_elem((2, 3), 0.5))
            .unwrap();
        let m = acc.mean_array(&[2, 3]).unwrap();
        assert!(m.iter().all(|&v| v == 0.5));
        assert!(matches!(
            acc.mean_array(&[4, 2]),
            Err(Error::ShapeMismatch { .. })
        ));
    }
}
