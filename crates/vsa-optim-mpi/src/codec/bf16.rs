//! The `bf16` mode: every element as the upper 16 bits of its `f32`, rounded to nearest even.

use super::{
    Context, ExchangeMode, GradientCodec, LinearWire, check_grads, decode_linear_raw, decode_raw,
    fnv, raw_codec,
};
use crate::error::{Error, Result};

/// `x` rounded to `bf16` (round to nearest, ties to even), as its 16 bits. A finite `x`
/// within half a `bf16` step of `f32::MAX` or beyond rounds to infinity; NaN stays NaN.
pub fn f32_to_bf16(x: f32) -> u16 {
    let b = x.to_bits();
    if x.is_nan() {
        return ((b >> 16) as u16) | 0x40;
    }
    let rounded = b.wrapping_add(0x7fff + ((b >> 16) & 1));
    (rounded >> 16) as u16
}

/// The `f32` whose upper 16 bits are `h` (exact).
pub fn bf16_to_f32(h: u16) -> f32 {
    f32::from_bits(u32::from(h) << 16)
}

/// The sum of two `bf16` values as the [`Reduction::Allreduce`](crate::Reduction) mode
/// computes it for each pair MPI combines: both widened to `f32` (exact), added in `f32`
/// (round to nearest), and the sum rounded to `bf16` ([`f32_to_bf16`]). Commutative
/// bit for bit (`f32` addition is); not associative, like any rounded addition.
pub fn bf16_add(a: u16, b: u16) -> u16 {
    f32_to_bf16(bf16_to_f32(a) + bf16_to_f32(b))
}

/// `bf16` payloads: 2 bytes per element, each the round-to-nearest-even `bf16` of the
/// gradient element ([`f32_to_bf16`]). Stateless and deterministic. Its linear message
/// (for [`Reduction::Sum`](crate::Reduction)) is the same `bf16` values: ranks sum them in
/// `f32` in rank order and send the reduced chunks rounded to `bf16` again. Under
/// [`Reduction::Allreduce`](crate::Reduction) the values are summed by
/// [`Collective::all_reduce_sum_bf16`](crate::Collective::all_reduce_sum_bf16): every pair
/// [`bf16_add`]ed, in the order MPI picks.
#[derive(Debug, Clone)]
pub struct Bf16Codec {
    lens: Vec<usize>,
}

impl Bf16Codec {
    /// A codec for parameters of lengths `lens`.
    pub fn new(lens: &[usize]) -> Self {
        Self {
            lens: lens.to_vec(),
        }
    }

    /// The gradients rounded to `bf16`, as `f32`, appended to `out` (unchanged on error).
    fn values(&self, grads: &[Vec<f32>], out: &mut Vec<f32>) -> Result<()> {
        check_grads(&self.lens, grads)?;
        let start = out.len();
        out.extend(grads.iter().flatten().map(|&x| bf16_to_f32(f32_to_bf16(x))));
        if out[start..].iter().any(|x| !x.is_finite()) {
            out.truncate(start);
            return Err(Error::Codec(
                "a gradient element overflows bf16 (|x| ≥ 3.39e38)".into(),
            ));
        }
        Ok(())
    }

    fn encode_raw(&self, grads: &[Vec<f32>], out: &mut Vec<u8>) -> Result<()> {
        let mut v = Vec::new();
        self.values(grads, &mut v)?;
        LinearWire::Bf16.put(&v, out);
        Ok(())
    }
}

raw_codec!(Bf16Codec, ExchangeMode::Bf16, LinearWire::Bf16);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_is_to_nearest_even() {
        // 1 + 2⁻⁸ is halfway between bf16 1.0 and 1 + 2⁻⁷: ties go to the even 1.0.
        assert_eq!(bf16_to_f32(f32_to_bf16(1.0 + 2f32.powi(-8))), 1.0);
        // 1 + 3·2⁻⁸ is halfway between 1 + 2⁻⁷ (odd) and 1 + 2⁻⁶: goes up.
        assert_eq!(
            bf16_to_f32(f32_to_bf16(1.0 + 3.0 * 2f32.powi(-8))),
            1.0 + 2f32.powi(-6)
        );
        assert_eq!(bf16_to_f32(f32_to_bf16(-2.5)), -2.5);
        assert!(bf16_to_f32(f32_to_bf16(f32::MAX)).is_infinite());
        assert!(bf16_to_f32(f32_to_bf16(f32::NAN)).is_nan());
    }

    #[test]
    fn bf16_add_rounds_the_f32_sum_once_and_commutes() {
        let h = |x: f32| f32_to_bf16(x);
        // 1 + 2⁻⁸ (exact in f32) is a tie between 1 and 1 + 2⁻⁷: to even, 1.
        assert_eq!(bf16_to_f32(bf16_add(h(1.0), h(2f32.powi(-8)))), 1.0);
        // 1 + 3·2⁻⁸ rounds up to 1 + 2⁻⁶.
        let (a, b) = (h(1.0 + 2f32.powi(-7)), h(2f32.powi(-8)));
        assert_eq!(bf16_to_f32(bf16_add(a, b)), 1.0 + 2f32.powi(-6));
        assert_eq!(bf16_add(a, b), bf16_add(b, a));
        // Not associative: ((1 + 2⁻⁸) + 2⁻⁸) loses both halves, (1 + (2⁻⁸ + 2⁻⁸)) keeps them.
        let (one, e) = (h(1.0), h(2f32.powi(-8)));
        assert_eq!(bf16_to_f32(bf16_add(bf16_add(one, e), e)), 1.0);
        assert_eq!(
            bf16_to_f32(bf16_add(one, bf16_add(e, e))),
            1.0 + 2f32.powi(-7)
        );
        // The largest bf16 doubled overflows to infinity.
        assert!(bf16_to_f32(bf16_add(0x7f7f, 0x7f7f)).is_infinite());
    }
}
