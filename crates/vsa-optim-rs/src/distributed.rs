//! Data-parallel training: gradient exchange between ranks and its integration with
//! [`DeterministicPhaseTrainer`](crate::DeterministicPhaseTrainer) (feature `distributed`;
//! the MPI transport needs feature `mpi`).
//!
//! Each rank computes the gradient of its shard of the global batch, and
//! [`DataParallel::average_host`] (or [`DataParallel::average_grad_store`]) returns the
//! average over all ranks, identical bits on every rank, in one of four modes:
//! `f32` (lossless, fixed rank-order sum), `ternary` ([`TernaryCodec`]), `vsa`
//! ([`VsaCodec`]: the VSA sketch of [`grad_sketch`] with error feedback) or `compressed`
//! ([`MethodCodec`]: top-k, random-k, the heavy-hitter count sketch or PowerSGD).
//!
//! Every rank then records the same averaged gradient in its trainer, so every rank's
//! predictor and scheduler stay bit-identical, and a predicted step needs no communication:
//! the training loop simply does not call the exchange on Predict steps.
//!
//! ```
//! use vsa_optim_rs::distributed::{DataParallel, ExchangeMode, SingleProcess};
//! use vsa_optim_rs::{DeterministicPhaseConfig, DeterministicPhaseTrainer, VSAConfig};
//! use candle_core::Device;
//!
//! let shapes = vec![("w".to_string(), vec![4, 3])];
//! let mut dp = DataParallel::new(SingleProcess::new(), ExchangeMode::Ternary, &shapes, 7,
//!     VSAConfig::default(), 0)?;
//! let mut trainer = DeterministicPhaseTrainer::new(&shapes, DeterministicPhaseConfig::default(), &Device::Cpu)?;
//! let info = trainer.begin_step()?;
//! assert!(info.needs_backward); // warmup
//! let local = vec![vec![0.5f32; 12]];
//! let (avg, loss) = dp.average_host(info.step, &local, 1.0)?;
//! assert_eq!(loss, 1.0);
//! assert!(avg[0].iter().all(|&x| x == 0.5)); // |x| = max|x| is kept exactly
//! trainer.record_full_host(avg)?;
//! trainer.end_step(loss)?;
//! # Ok::<(), vsa_optim_rs::Error>(())
//! ```

use candle_core::Tensor;
use candle_core::backprop::GradStore;
use candle_nn::VarMap;

#[cfg(feature = "mpi")]
pub use vsa_optim_mpi::MpiWorld;
pub use vsa_optim_mpi::{
    Bf16Codec, Collective, Context, DEFAULT_TERNARY_BLOCK, ExchangeConfig, ExchangeMode,
    ExchangeStats, F32Codec, GradientCodec, GradientExchange, Handshake, MethodCodec, Reduction,
    SingleProcess, TernaryCodec, TernaryPacking, VsaCodec, reduce,
};

use crate::compress::VSAConfig;
use crate::error::Result;
use crate::params::ParamSet;

/// The codec for `mode` over the parameters `shapes`: f32, ternary (base-3 payload with
/// one scale per 320 elements, randomness from `seed`), VSA (`vsa`) or `compressed`
/// ([`grad_sketch::CompressorConfig::default`](crate::grad_sketch::CompressorConfig) keyed
/// by `seed`; build a [`MethodCodec`] for another method). Built by
/// [`vsa_optim_mpi::codec_for`].
///
/// # Errors
/// [`Error::Exchange`](crate::Error::Exchange) wrapping `InvalidConfig` for an invalid VSA
/// config or parameter list.
pub fn codec_for(
    mode: ExchangeMode,
    shapes: &[(String, Vec<usize>)],
    seed: u64,
    vsa: VSAConfig,
) -> Result<Box<dyn GradientCodec + Send>> {
    let method = crate::grad_sketch::CompressorConfig {
        seed,
        ..Default::default()
    };
    Ok(vsa_optim_mpi::codec_for(mode, shapes, seed, vsa, method)?)
}

/// Data-parallel gradient averaging for candle models, in sorted-parameter-name order.
#[derive(Debug)]
pub struct DataParallel<C: Collective> {
    exchange: GradientExchange<C>,
    params: ParamSet,
    avg: Vec<Vec<f32>>,
}

impl<C: Collective> DataParallel<C> {
    /// Builds the exchange for the parameters `shapes` and runs the start-up handshake:
    /// every rank must pass the same shapes, mode, seed, VSA config and `user_fingerprint`
    /// (a hash of whatever else must agree, e.g. the trainer config), or every rank gets
    /// [`Error::Exchange`](crate::Error::Exchange) wrapping `ConfigMismatch`.
    ///
    /// # Errors
    /// Parameter errors, invalid configs, handshake mismatches, transport errors.
    pub fn new(
        collective: C,
        mode: ExchangeMode,
        shapes: &[(String, Vec<usize>)],
        seed: u64,
        vsa: VSAConfig,
        user_fingerprint: u64,
    ) -> Result<Self> {
        let codec = codec_for(mode, shapes, seed, vsa)?;
        Self::with_codec(
            collective,
            codec,
            shapes,
            seed,
            Reduction::Gather,
            user_fingerprint,
        )
    }

    /// As [`DataParallel::new`], with any codec (for example a [`MethodCodec`] for a
    /// count sketch or random-k) and a [`Reduction`]: [`Reduction::Gather`] (what `new`
    /// uses; every codec, bit-deterministic for every rank count), [`Reduction::Sum`]
    /// (linear codecs only: f32, bf16, count sketch, random-k; the messages are summed
    /// before decoding, so bytes per rank do not grow with the rank count, with the same
    /// bits as `Gather`) or [`Reduction::Allreduce`] (f32 over the native all-reduce:
    /// reproducible only for a fixed rank count and MPI build). The reduction is part of
    /// the handshake, so every rank must pass the same one.
    ///
    /// # Errors
    /// As [`DataParallel::new`]; a codec that does not support `reduction` is refused on
    /// every rank.
    pub fn with_codec(
        collective: C,
        codec: Box<dyn GradientCodec + Send>,
        shapes: &[(String, Vec<usize>)],
        seed: u64,
        reduction: Reduction,
        user_fingerprint: u64,
    ) -> Result<Self> {
        let params = ParamSet::new(shapes)?;
        let sorted: Vec<(String, Vec<usize>)> = params
            .specs()
            .iter()
            .map(|s| (s.name.clone(), s.shape.clone()))
            .collect();
        let exchange = GradientExchange::with_reduction(
            collective,
            codec,
            &sorted,
            ExchangeConfig {
                seed,
                user_fingerprint,
            },
            reduction,
        )?;
        let avg = params
            .specs()
            .iter()
            .map(|s| vec![0f32; s.numel()])
            .collect();
        Ok(Self {
            exchange,
            params,
            avg,
        })
    }

    /// The parameters, sorted by name (the order of every host gradient list).
    pub fn params(&self) -> &ParamSet {
        &self.params
    }

    /// The underlying exchange (stats, rank, codec state, agreement checks).
    pub fn exchange(&self) -> &GradientExchange<C> {
        &self.exchange
    }

    /// The underlying exchange, mutably.
    pub fn exchange_mut(&mut self) -> &mut GradientExchange<C> {
        &mut self.exchange
    }

    /// Averages this rank's host gradients (sorted-name order) and loss over all ranks;
    /// returns the average (identical on every rank) and the mean loss.
    ///
    /// # Errors
    /// [`Error::Exchange`](crate::Error::Exchange): non-finite values on any rank, layout errors, transport errors.
    /// On error nothing changes on any rank.
    pub fn average_host(
        &mut self,
        step: u64,
        local: &[Vec<f32>],
        loss: f32,
    ) -> Result<(&[Vec<f32>], f32)> {
        let loss = self.exchange.mean(step, local, loss, &mut self.avg)?;
        Ok((&self.avg, loss))
    }

    /// Averages a `GradStore` for the variables of `varmap` and returns the averaged
    /// gradients as a new `GradStore` (f32 on the variables' device and dtype).
    ///
    /// # Errors
    /// As [`DataParallel::average_host`], plus missing or mismatched variables.
    pub fn average_grad_store(
        &mut self,
        step: u64,
        varmap: &VarMap,
        grads: &GradStore,
        loss: f32,
    ) -> Result<(GradStore, f32)> {
        let (map, vars) = self.params.grad_store_map(varmap, grads)?;
        let host = self.params.to_host_f32(&map)?;
        let loss = self.exchange.mean(step, &host, loss, &mut self.avg)?;
        let mut store = GradStore::default();
        for ((spec, var), a) in self.params.specs().iter().zip(&vars).zip(&self.avg) {
            let t = Tensor::from_slice(a.as_slice(), spec.shape.as_slice(), var.device())?
                .to_dtype(var.dtype())?;
            store.insert(var.as_tensor(), t);
        }
        Ok((store, loss))
    }
}
