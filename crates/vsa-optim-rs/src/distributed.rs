//! Data-parallel training: gradient exchange between ranks and its integration with
//! [`DeterministicPhaseTrainer`](crate::DeterministicPhaseTrainer) (feature `distributed`;
//! the MPI transport needs feature `mpi`).
//!
//! Each rank computes the gradient of its shard of the global batch, and
//! [`DataParallel::average_host`] (or [`DataParallel::average_grad_store`]) returns the
//! average over all ranks, identical bits on every rank, in one of three modes:
//! `f32` (lossless, fixed rank-order sum), `ternary` ([`TernaryCodec`]) or `vsa`
//! ([`VsaCodec`]: [`VSAGradientCompressor`] with error feedback).
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

use candle_core::backprop::GradStore;
use candle_core::{Device, Tensor};
use candle_nn::VarMap;

#[cfg(feature = "mpi")]
pub use vsa_optim_mpi::MpiWorld;
pub use vsa_optim_mpi::{
    Collective, Context, DEFAULT_TERNARY_BLOCK, ExchangeConfig, ExchangeMode, ExchangeStats,
    F32Codec, GradientCodec, GradientExchange, Handshake, SingleProcess, TernaryCodec,
    TernaryPacking, reduce,
};

use crate::compress::{CompressedGradients, VSAConfig, VSAGradientCompressor};
use crate::error::{Error, Result};
use crate::params::ParamSet;

/// The `vsa` mode's codec: a [`VSAGradientCompressor`] (with its error feedback, when the
/// config has it) on each rank. Binding keys come from the shared seed and the compressor's
/// call counter, which advances in lockstep on every rank, so any rank decodes any rank's
/// payload. A failed exchange restores the residuals and the counter.
#[derive(Debug)]
pub struct VsaCodec {
    compressor: VSAGradientCompressor,
    backup: Vec<Vec<f32>>,
    backup_step: u64,
    staged: bool,
    names: Vec<String>,
}

impl VsaCodec {
    /// A codec for the parameters `shapes`.
    ///
    /// # Errors
    /// As [`VSAGradientCompressor::new`].
    pub fn new(shapes: &[(String, Vec<usize>)], config: VSAConfig) -> Result<Self> {
        let compressor = VSAGradientCompressor::new(shapes, config, &Device::Cpu)?;
        let names: Vec<String> = compressor
            .params()
            .specs()
            .iter()
            .map(|s| s.name.clone())
            .collect();
        let backup = compressor
            .params()
            .specs()
            .iter()
            .map(|s| vec![0f32; s.numel()])
            .collect();
        Ok(Self {
            compressor,
            backup,
            backup_step: 0,
            staged: false,
            names,
        })
    }

    /// The compressor.
    pub fn compressor(&self) -> &VSAGradientCompressor {
        &self.compressor
    }
}

fn codec_error(e: Error) -> vsa_optim_mpi::Error {
    vsa_optim_mpi::Error::Codec(e.to_string())
}

impl GradientCodec for VsaCodec {
    fn mode(&self) -> ExchangeMode {
        ExchangeMode::Vsa
    }

    fn fingerprint(&self) -> u64 {
        // The compressor's fingerprint covers dimension, ratio, seed, reconstruction,
        // quantization and parameters; error feedback changes what a rank sends too.
        crate::vsa_core::rng::mix(
            self.compressor.fingerprint(),
            u64::from(self.compressor.config().error_feedback),
        )
    }

    fn encode(
        &mut self,
        _ctx: Context,
        grads: &[Vec<f32>],
        out: &mut Vec<u8>,
    ) -> vsa_optim_mpi::Result<()> {
        self.backup_step = self.compressor.step();
        self.staged = true;
        if self.compressor.config().error_feedback {
            for (b, name) in self.backup.iter_mut().zip(&self.names) {
                if let Some(r) = self.compressor.residual(name) {
                    b.copy_from_slice(r);
                }
            }
        }
        let z = self.compressor.compress_host(grads).map_err(codec_error)?;
        out.extend_from_slice(&z.to_bytes());
        Ok(())
    }

    fn decode(
        &mut self,
        ctx: Context,
        payload: &[u8],
        out: &mut [Vec<f32>],
    ) -> vsa_optim_mpi::Result<()> {
        let bad = |e: Error| vsa_optim_mpi::Error::Decode {
            rank: ctx.rank,
            reason: e.to_string(),
        };
        let z = CompressedGradients::from_bytes(payload).map_err(bad)?;
        self.compressor.decompress_host_into(&z, out).map_err(bad)
    }

    fn commit(&mut self) {
        self.staged = false;
    }

    fn rollback(&mut self) {
        // Only an encode that was not committed is undone: a failure before this rank
        // encoded (its own NaN, or a check before the all-gather) leaves nothing to undo.
        if std::mem::take(&mut self.staged) {
            self.compressor.set_step(self.backup_step);
            if self.compressor.config().error_feedback {
                for (b, name) in self.backup.iter().zip(&self.names) {
                    // The backup was copied from a valid residual: it has the right length
                    // and is finite, so this cannot fail.
                    let _ = self.compressor.set_residual(name, b);
                }
            }
        }
    }

    fn state(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&self.compressor.step().to_le_bytes());
        for name in &self.names {
            if let Some(r) = self.compressor.residual(name) {
                for &x in r {
                    out.extend_from_slice(&x.to_le_bytes());
                }
            }
        }
        out
    }

    fn restore(&mut self, state: &[u8]) -> vsa_optim_mpi::Result<()> {
        let bad = |reason: String| vsa_optim_mpi::Error::Decode {
            rank: usize::MAX,
            reason,
        };
        let ef = self.compressor.config().error_feedback;
        let total: usize = if ef {
            self.backup.iter().map(Vec::len).sum()
        } else {
            0
        };
        if state.len() != 8 + 4 * total {
            return Err(bad(format!(
                "VSA codec state of {} bytes, expected {}",
                state.len(),
                8 + 4 * total
            )));
        }
        let step = u64::from_le_bytes(state[..8].try_into().expect("8 bytes"));
        let mut values: Vec<Vec<f32>> = Vec::new();
        if ef {
            let mut words = state[8..]
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]));
            for b in &self.backup {
                let v: Vec<f32> = words.by_ref().take(b.len()).collect();
                if !v.iter().all(|x| x.is_finite()) {
                    return Err(bad("VSA codec state holds a non-finite residual".into()));
                }
                values.push(v);
            }
        }
        for (name, v) in self.names.iter().zip(&values) {
            self.compressor
                .set_residual(name, v)
                .map_err(|e| bad(e.to_string()))?;
        }
        self.compressor.set_step(step);
        self.backup_step = step;
        self.staged = false;
        Ok(())
    }
}

/// The codec for `mode` over the parameters `shapes`: f32, ternary (base-3 payload with
/// one scale per 320 elements, randomness from `seed`) or VSA (`vsa`).
///
/// # Errors
/// [`Error::InvalidConfig`] for an invalid VSA config or unsupported mode; parameter errors.
pub fn codec_for(
    mode: ExchangeMode,
    shapes: &[(String, Vec<usize>)],
    seed: u64,
    vsa: VSAConfig,
) -> Result<Box<dyn GradientCodec + Send>> {
    let params = ParamSet::new(shapes)?;
    let lens: Vec<usize> = params.specs().iter().map(|s| s.numel()).collect();
    Ok(match mode {
        ExchangeMode::F32 => Box::new(F32Codec::new(&lens)),
        ExchangeMode::Ternary => Box::new(TernaryCodec::new(
            &lens,
            seed,
            DEFAULT_TERNARY_BLOCK,
            TernaryPacking::Base3,
        )?),
        ExchangeMode::Vsa => Box::new(VsaCodec::new(shapes, vsa)?),
        other => {
            return Err(Error::InvalidConfig {
                field: "mode",
                reason: format!("unsupported exchange mode {other}"),
            });
        }
    })
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
    /// [`Error::Exchange`] wrapping `ConfigMismatch`.
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
        let params = ParamSet::new(shapes)?;
        let codec = codec_for(mode, shapes, seed, vsa)?;
        let sorted: Vec<(String, Vec<usize>)> = params
            .specs()
            .iter()
            .map(|s| (s.name.clone(), s.shape.clone()))
            .collect();
        let exchange = GradientExchange::new(
            collective,
            codec,
            &sorted,
            ExchangeConfig {
                seed,
                user_fingerprint,
            },
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
    /// [`Error::Exchange`]: non-finite values on any rank, layout errors, transport errors.
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
