//! Runtime choice of the instruction set for the accumulator step, with no `unsafe` in this
//! crate.
//!
//! The step's loops are plain Rust that LLVM vectorizes. Compiled for the default x86-64
//! target they get SSE2 (four `f32` lanes); run through [`Isa::run`] on a machine with AVX2,
//! the same code, inlined (`#[inline(always)]` down the call tree) into a function compiled
//! with `avx2,fma,…` enabled, gets eight. The `#[target_feature]` function and the CPU check
//! that makes calling it sound are `pulp`'s ([`pulp::x86::V3`]: a token that exists only
//! once the features are detected, and `vectorize`, a safe method).
//!
//! **Same bits on every path.** Vectorizing never changes a float result in Rust: LLVM gets
//! no fast-math flags and never contracts `a·b + c` into an FMA, so enabling `fma` changes
//! nothing unless the code calls `mul_add` (the step does not); every loop is element-wise or
//! a maximum (which does not depend on the order), and the one sum (deterministic absmean's
//! `f64` block mean) is a sequential fold, which LLVM does not reorder. The tests run the
//! step on every path available and compare the packed state bit for bit.

/// An instruction set the accumulator step can run on.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Isa {
    /// The compilation target's own (SSE2 on the default x86-64 target).
    Baseline,
    /// x86-64-v3: AVX2, FMA, BMI1/2, LZCNT (detected at run time).
    #[cfg(target_arch = "x86_64")]
    V3(pulp::x86::V3),
}

impl Isa {
    /// The widest supported instruction set of this machine.
    #[inline]
    pub(crate) fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        if let Some(v3) = pulp::x86::V3::try_new() {
            return Self::V3(v3);
        }
        Self::Baseline
    }

    /// Every instruction set available on this machine, the baseline first (for the tests
    /// that compare the paths).
    #[cfg(test)]
    pub(crate) fn available() -> Vec<Self> {
        let mut v = vec![Self::Baseline];
        #[cfg(target_arch = "x86_64")]
        v.extend(pulp::x86::V3::try_new().map(Self::V3));
        v
    }

    /// Runs `f` compiled for this instruction set: whatever `f` inlines is vectorized with
    /// its lanes (so the hot call tree below `f` is `#[inline(always)]`).
    #[inline(always)]
    pub(crate) fn run<F: pulp::NullaryFnOnce>(self, f: F) -> F::Output {
        match self {
            Self::Baseline => f.call(),
            #[cfg(target_arch = "x86_64")]
            Self::V3(v3) => v3.vectorize(f),
        }
    }
}
