//! Zero-copy interop with `vsa_core::TernaryVector`, which uses the same two-bitplane layout
//! as [`crate::pack`].
//! No conversion is needed: the planes produced by [`crate::fused`] and [`crate::pack`] are
//! handed over as they are (vsa-core requires `len >= 1`).

use crate::error::{Error, Result};
use crate::pack::check_planes;

/// Wraps packed planes (validated here) as a `vsa_core::TernaryVector` without copying.
pub fn planes_to_vsa(
    len: usize,
    plus: Vec<u64>,
    minus: Vec<u64>,
) -> Result<vsa_core::TernaryVector> {
    if len == 0 {
        return Err(Error::InvalidParameter {
            param: "len",
            expected: "at least 1 (vsa-core vectors are non-empty)",
            actual: "0".into(),
        });
    }
    check_planes(len, &plus, &minus)?;
    vsa_core::TernaryVector::from_planes(len, plus, minus).map_err(|_| Error::InvalidPacked {
        what: "plus/minus",
        index: 0,
        detail: "rejected by vsa_core::TernaryVector::from_planes",
    })
}

/// The planes of a `vsa_core::TernaryVector`, ready for [`crate::dequantize_planes_into`].
pub fn vsa_planes(v: &vsa_core::TernaryVector) -> (&[u64], &[u64]) {
    v.planes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{RngKey, plane_words, quantize_stochastic_into, quantize_stochastic_planes_into};

    #[test]
    fn quantized_planes_are_vsa_vectors() {
        let x: Vec<f32> = (0..200).map(|i| (i as f32 * 0.37).sin()).collect();
        let key = RngKey::new(5, 0, 1);
        let w = plane_words(x.len());
        let (mut p, mut m) = (vec![0u64; w], vec![0u64; w]);
        let s = quantize_stochastic_planes_into(&x, key, &mut p, &mut m).unwrap();
        let v = planes_to_vsa(x.len(), p.clone(), m.clone()).unwrap();
        let mut q = vec![0i8; x.len()];
        quantize_stochastic_into(&x, s, key, 0, &mut q).unwrap();
        assert_eq!(v.to_trits(), q);
        assert_eq!(vsa_planes(&v), (&p[..], &m[..]));
        assert!(planes_to_vsa(0, vec![], vec![]).is_err());
        assert!(planes_to_vsa(3, vec![1], vec![1]).is_err());
    }
}
