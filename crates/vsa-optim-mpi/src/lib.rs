//! `vsa-optim-mpi`: data-parallel gradient exchange for `vsa-optim-rs`, over MPI.
//!
//! Each rank computes the gradient of its shard of the global batch; a
//! [`GradientExchange`] turns the ranks' gradients into one average that is **the same bits
//! on every rank**, in one of these [`ExchangeMode`]s:
//!
//! * `f32` ([`F32Codec`]): lossless. Every rank all-gathers every rank's gradient and sums
//!   them in rank order ([`reduce`]), so the result does not depend on MPI's reduction
//!   algorithm, and a single process that computes the same shards gets the same weights.
//! * `ternary` ([`TernaryCodec`]): unbiased stochastic trits with one scale per 320-element
//!   block, 1.7 (base 3) or 2.1 (bitplanes) bits per element on the wire.
//! * `vsa` ([`VsaCodec`]): the VSA sketch of `grad-sketch` with error feedback.
//! * `compressed` ([`MethodCodec`]): a `grad-sketch` method (heavy-hitter count sketch,
//!   random-k, top-k, PowerSGD) with error feedback.
//! * `bf16` ([`Bf16Codec`]): every element rounded to `bf16`, 2 bytes.
//!
//! [`MomentumCodec`] runs `grad-sketch`'s `MomentumCompressor` (error feedback on the
//! momentum under AdamW) over the gathered exchange: the exchange then returns the AdamW
//! direction instead of an averaged gradient.
//!
//! and one of three [`Reduction`]s (part of the handshake): `Gather` (the default above),
//! `Sum` (codecs with a linear message: f32, bf16, the count sketch and random-k are summed
//! before decoding by a rank-order reduce-scatter and an all-gather, about `2(N − 1)/N` of
//! one message per rank, with the bits of all-gather-then-sum) and `Allreduce` (f32 or bf16
//! over the transport's native sum all-reduce, `MPI_Allreduce`; bf16 through a
//! user-defined operation: reproducible only for a fixed rank count and MPI build).
//! `docs/distributed.md` §11 has the derivation.
//!
//! [`codec_for`] builds any of them from a mode, the parameter shapes and the configs.
//!
//! The exchange runs a start-up [`Handshake`] (world size, mode, seed, parameter layout,
//! codec and training configuration), so that a misconfigured rank gives a typed
//! [`Error::ConfigMismatch`] on every rank instead of garbage or a hang. A rank with a NaN
//! gradient still takes part in the all-gather with a failure flag, so every rank returns
//! [`Error::NonFinite`] together.
//!
//! The transport is a [`Collective`]: `MpiWorld` (feature `mpi`, rsmpi over the system's
//! MPI, for example Debian's OpenMPI) or [`SingleProcess`]. Without the `mpi` feature this
//! crate needs no MPI library. A `Collective` needs only
//! [`all_gather_bytes`](Collective::all_gather_bytes): the all-to-all and the sum
//! all-reduce have default implementations on top of it. Another transport implements the
//! two calls of [`GatherPrimitives`] and gets, through [`LengthsFirst`], the same guarantee as `MpiWorld`:
//! a message too large for it fails on every rank together ([`Error::MessageTooLarge`]).
//! Whatever a `Collective` returns is checked before it is read
//! ([`Error::MalformedGather`]).
//!
//! Because every rank records the same averaged gradient, every rank's
//! `DeterministicPhaseTrainer` predictor stays bit-identical, and a predicted step needs no
//! communication at all (see `docs/distributed.md`).
//!
//! # Quick start
//!
//! ```
//! use vsa_optim_mpi::{ExchangeConfig, F32Codec, GradientExchange, SingleProcess};
//!
//! let params = vec![("w".to_string(), vec![2, 2]), ("b".to_string(), vec![2])];
//! let codec = Box::new(F32Codec::new(&[4, 2]));
//! let mut ex = GradientExchange::new(SingleProcess::new(), codec, &params, ExchangeConfig::default())?;
//! let local = vec![vec![1.0f32, 2.0, 3.0, 4.0], vec![0.5, -0.5]];
//! let mut avg = vec![vec![0f32; 4], vec![0f32; 2]];
//! let loss = ex.mean(0, &local, 0.25, &mut avg)?;
//! assert_eq!(avg, local); // one rank: the mean is the input, exactly
//! assert_eq!(loss, 0.25);
//! // A NaN is refused, and the output is untouched.
//! let bad = vec![vec![f32::NAN, 0.0, 0.0, 0.0], vec![0.0, 0.0]];
//! assert!(ex.mean(1, &bad, 0.0, &mut avg).is_err());
//! assert_eq!(avg, local);
//! # Ok::<(), vsa_optim_mpi::Error>(())
//! ```
//!
//! Under MPI, replace `SingleProcess::new()` by `MpiWorld::init()?` and launch with
//! `mpirun -np N`. The README's `cargo xtask mpi` runs the digits MLP and the char-LM.
//!
//! Sibling crates: `ternary-quant` (the trits), `vsa-core`, and the facade `vsa-optim-rs`
//! (feature `mpi`).
#![deny(missing_docs)]

mod codec;
mod collective;
mod error;
mod exchange;
pub mod reduce;

pub use codec::{
    Bf16Codec, Context, DEFAULT_TERNARY_BLOCK, ExchangeMode, F32Codec, GradientCodec, LinearWire,
    MethodCodec, MomentumCodec, TernaryCodec, TernaryPacking, VsaCodec, bf16_add, bf16_to_f32,
    codec_for, f32_to_bf16,
};
pub use collective::{
    AllToAll, Collective, GatherPrimitives, Gathered, LengthsFirst, MPI_COUNT_LIMIT, SingleProcess,
    check_message_lengths,
};
#[cfg(feature = "mpi")]
pub use collective::{MpiComm, MpiWorld};
pub use error::{Error, Result};
pub use exchange::{
    ExchangeConfig, ExchangeStats, GradientExchange, HANDSHAKE_BYTES, HEADER_BYTES, Handshake,
    PROTOCOL_VERSION, Reduction, SUM_HEADER_BYTES, check_handshakes, chunk, layout_hash,
};
