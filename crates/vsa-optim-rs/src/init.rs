//! Deterministic parameter initialisation.
//!
//! candle-nn's layer constructors draw their initial weights from an unseeded thread RNG, so
//! two runs of the same program start from different weights. [`deterministic_init`]
//! overwrites every float variable of a `VarMap` from a counter-based ChaCha stream keyed by
//! the seed and the variable's name, so the initial weights depend on nothing else.

use candle_core::Tensor;
use candle_nn::VarMap;
use rand_core::RngCore;

use crate::error::Result;
use crate::params::ParamSet;

/// Re-initialises the float variables of `varmap` (in sorted-name order):
/// - rank ≥ 2: uniform in `±1/√fan_in`, with `fan_in` the product of all dims but the first
///   (PyTorch's default bound for `Linear`, and a unit-scale embedding table);
/// - rank 1 whose name ends in `bias`: zeros;
/// - other rank-1 variables (layer-norm gains): left as constructed (candle sets them to 1).
///
/// The stream for a variable is `vsa_core::rng::chacha_stream(seed, key_from_name(name))`,
/// so the values do not depend on how many other variables exist or their order.
///
/// # Errors
/// Candle errors, or an empty `VarMap`.
pub fn deterministic_init(varmap: &VarMap, seed: u64) -> Result<()> {
    let (set, vars) = ParamSet::from_varmap(varmap)?;
    for (spec, var) in set.specs().iter().zip(vars) {
        let n = spec.numel();
        let values: Vec<f32> = if spec.shape.len() >= 2 {
            let fan_in: usize = spec.shape[1..].iter().product();
            let bound = 1.0 / (fan_in as f64).sqrt();
            let mut rng =
                vsa_core::rng::chacha_stream(seed, vsa_core::rng::key_from_name(&spec.name));
            (0..n)
                .map(|_| {
                    // 24 random bits → uniform in [0, 1), exact in f32.
                    let u = (rng.next_u32() >> 8) as f64 / (1u64 << 24) as f64;
                    ((2.0 * u - 1.0) * bound) as f32
                })
                .collect()
        } else if spec.name.ends_with("bias") {
            vec![0.0; n]
        } else {
            continue;
        };
        let t =
            Tensor::from_vec(values, spec.shape.as_slice(), var.device())?.to_dtype(var.dtype())?;
        var.set(&t)?;
    }
    Ok(())
}
