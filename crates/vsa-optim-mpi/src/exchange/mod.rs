//! [`GradientExchange`]: the start-up handshake and the per-step averaged exchange.

use std::time::Instant;

use crate::codec::{Context, ExchangeMode, GradientCodec, LinearWire, fnv};
use crate::collective::{AllToAll, Collective, Gathered};
use crate::error::{Error, Result, config_error};
use crate::reduce::{add_into, check_layout, divide};

mod handshake;
mod reduction;
mod summed;

pub use handshake::{HANDSHAKE_BYTES, Handshake, check_handshakes, layout_hash};
use reduction::owner;
pub use reduction::{Reduction, chunk};

/// Version of the handshake and frame layout; ranks with different versions refuse to
/// exchange. Version 2 added the handshake's `reduction` field.
pub const PROTOCOL_VERSION: u64 = 2;

const MAGIC: &[u8; 4] = b"VSAX";
/// Bytes of the frame header that precedes every payload.
pub const HEADER_BYTES: usize = 24;

const STATUS_OK: u8 = 0;
const STATUS_NON_FINITE: u8 = 1;
const STATUS_FAILED: u8 = 2;

/// Bytes of the frame a rank all-gathers before a summed or all-reduced step: the frame
/// header, then the length of its linear message (`u64`) and its transport's
/// [`byte_limit`](Collective::byte_limit) (`u64`).
pub const SUM_HEADER_BYTES: usize = HEADER_BYTES + 16;

/// Checks what a [`Collective`] returned before anything reads it: one part per rank, part
/// lengths that add up to the bytes received, and this rank's own part equal to what it sent.
/// A transport implemented outside this crate may get this wrong; a slice is never taken on
/// its word.
///
/// # Errors
/// [`Error::MalformedGather`] saying what does not add up.
fn check_gather<C: Collective + ?Sized>(collective: &C, mine: &[u8], got: &Gathered) -> Result<()> {
    let (recv, lens) = (&got.bytes, &got.lens);
    let bad = |reason: String| Err(Error::MalformedGather { reason });
    let (rank, size) = (collective.rank(), collective.size());
    if lens.len() != size || rank >= size {
        return bad(format!(
            "{} parts for {size} ranks, this process being rank {rank}",
            lens.len()
        ));
    }
    let Some(total) = lens.iter().try_fold(0usize, |a, &l| a.checked_add(l)) else {
        return bad("the part lengths overflow".into());
    };
    if total != recv.len() {
        return bad(format!(
            "part lengths add up to {total} bytes, but {} bytes were received",
            recv.len()
        ));
    }
    let at: usize = lens[..rank].iter().sum();
    if recv[at..at + lens[rank]] != *mine {
        return bad(format!(
            "rank {rank}'s own part ({} bytes) differs from the {} bytes it sent",
            lens[rank],
            mine.len()
        ));
    }
    Ok(())
}

/// One rank's input to [`GradientExchange::mean`].
#[derive(Clone, Copy)]
struct StepInput<'a> {
    step: u64,
    local: &'a [Vec<f32>],
    loss: f32,
}

/// Settings that every rank must agree on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ExchangeConfig {
    /// The run's seed (part of the handshake).
    pub seed: u64,
    /// A hash of any further configuration the caller wants checked at start-up.
    pub user_fingerprint: u64,
}

/// Counters of a [`GradientExchange`].
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ExchangeStats {
    /// Successful averaged exchanges.
    pub exchanges: u64,
    /// Exchanges that returned an error (on every rank).
    pub failed: u64,
    /// Bytes this rank contributed to all-gathers (its frames; the handshake included).
    pub bytes_sent: u64,
    /// Bytes this rank received from the other ranks.
    pub bytes_received: u64,
    /// Bytes of this rank's last gradient frame (header + payload).
    pub last_frame_bytes: usize,
    /// Bytes of one raw `f32` copy of the gradient (`4·n`), the reference for ratios.
    pub f32_bytes: usize,
    /// Wall-clock seconds spent inside [`GradientExchange::mean`] (encode, transport,
    /// decode, sum).
    pub seconds: f64,
}

/// Data-parallel gradient averaging over a [`Collective`] with a [`GradientCodec`].
///
/// Every rank builds one with the same parameter layout and configuration; construction
/// runs the handshake. Each [`mean`](GradientExchange::mean) call all-gathers every rank's
/// encoded gradient, decodes all of them and sums them in rank order, so every rank gets the
/// same bits. Buffers are kept between calls: no allocation in steady state.
pub struct GradientExchange<C: Collective> {
    collective: C,
    codec: Box<dyn GradientCodec + Send>,
    reduction: Reduction,
    lens: Vec<usize>,
    send: Vec<u8>,
    got: Gathered,
    acc: Vec<Vec<f32>>,
    scratch: Vec<Vec<f32>>,
    /// This rank's linear message, then the sum (summed and all-reduced steps).
    linear: Vec<f32>,
    /// The chunk of the sum this rank reduces, and another rank's part of it (summed steps).
    chunk: Vec<f32>,
    part: Vec<f32>,
    stats: ExchangeStats,
}

impl<C: Collective> std::fmt::Debug for GradientExchange<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GradientExchange")
            .field("rank", &self.collective.rank())
            .field("size", &self.collective.size())
            .field("mode", &self.codec.mode())
            .field("reduction", &self.reduction)
            .field("stats", &self.stats)
            .finish()
    }
}

impl<C: Collective> GradientExchange<C> {
    /// Builds a [`Reduction::Gather`] exchange and runs the start-up handshake (one
    /// all-gather of [`HANDSHAKE_BYTES`] bytes); see
    /// [`with_reduction`](GradientExchange::with_reduction).
    ///
    /// # Errors
    /// As [`with_reduction`](GradientExchange::with_reduction).
    pub fn new(
        collective: C,
        codec: Box<dyn GradientCodec + Send>,
        params: &[(String, Vec<usize>)],
        config: ExchangeConfig,
    ) -> Result<Self> {
        Self::with_reduction(collective, codec, params, config, Reduction::Gather)
    }

    /// Builds the exchange with `reduction` and runs the start-up handshake (one all-gather
    /// of [`HANDSHAKE_BYTES`] bytes). Whether the codec supports the reduction is checked
    /// after the handshake, so that every rank (having agreed on the mode, the codec's
    /// configuration and the reduction) returns the same verdict.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for an empty layout or an empty parameter, or (on every rank)
    /// a reduction the codec does not support: [`Reduction::Sum`] needs a codec with a
    /// linear message ([`GradientCodec::linear`]), [`Reduction::Allreduce`] the `f32` or
    /// `bf16` mode;
    /// [`Error::ConfigMismatch`] (on every rank) when ranks disagree on the world size, mode,
    /// seed, layout, codec, user fingerprint or reduction; transport errors.
    pub fn with_reduction(
        mut collective: C,
        codec: Box<dyn GradientCodec + Send>,
        params: &[(String, Vec<usize>)],
        config: ExchangeConfig,
        reduction: Reduction,
    ) -> Result<Self> {
        if params.is_empty() {
            return Err(config_error("params", "at least one parameter", "none"));
        }
        let lens: Vec<usize> = params.iter().map(|(_, s)| s.iter().product()).collect();
        if let Some(k) = lens.iter().position(|&n| n == 0) {
            return Err(config_error(
                "params",
                "parameters with at least one element each",
                format!("{:?} with shape {:?}", params[k].0, params[k].1),
            ));
        }
        let elements: usize = lens.iter().sum();
        let mine = Handshake {
            protocol: PROTOCOL_VERSION,
            world: collective.size() as u64,
            mode: u64::from(codec.mode().tag()),
            seed: config.seed,
            layout: layout_hash(params),
            elements: elements as u64,
            codec: codec.fingerprint(),
            user: config.user_fingerprint,
            reduction: u64::from(reduction.tag()),
        };
        let mut got = Gathered::default();
        let mine = mine.to_bytes();
        collective.all_gather_bytes(&mine, &mut got)?;
        check_gather(&collective, &mine, &got)?;
        let mut all = Vec::with_capacity(got.lens.len());
        let mut at = 0;
        for (r, &len) in got.lens.iter().enumerate() {
            all.push(Handshake::from_bytes(r, &got.bytes[at..at + len])?);
            at += len;
        }
        check_handshakes(&all)?;
        let supported = match reduction {
            Reduction::Gather => true,
            Reduction::Sum => codec.linear().is_some(),
            Reduction::Allreduce => matches!(codec.mode(), ExchangeMode::F32 | ExchangeMode::Bf16),
        };
        if !supported {
            return Err(config_error(
                "reduction",
                match reduction {
                    Reduction::Allreduce => "allreduce with the f32 or bf16 mode",
                    _ => "sum with a linear codec (f32, bf16, count sketch, random-k)",
                },
                format!("{reduction} with {}", codec.mode()),
            ));
        }
        let zeros = || lens.iter().map(|&n| vec![0f32; n]).collect::<Vec<_>>();
        let stats = ExchangeStats {
            bytes_sent: HANDSHAKE_BYTES as u64,
            bytes_received: (HANDSHAKE_BYTES * (all.len() - 1)) as u64,
            f32_bytes: 4 * elements,
            ..ExchangeStats::default()
        };
        Ok(Self {
            collective,
            codec,
            reduction,
            linear: Vec::new(),
            chunk: Vec::new(),
            part: Vec::new(),
            acc: zeros(),
            scratch: zeros(),
            lens,
            send: Vec::new(),
            got,
            stats,
        })
    }

    /// This rank.
    pub fn rank(&self) -> usize {
        self.collective.rank()
    }

    /// The number of ranks.
    pub fn size(&self) -> usize {
        self.collective.size()
    }

    /// The mode.
    pub fn mode(&self) -> ExchangeMode {
        self.codec.mode()
    }

    /// The reduction.
    pub fn reduction(&self) -> Reduction {
        self.reduction
    }

    /// The counters.
    pub fn stats(&self) -> ExchangeStats {
        self.stats
    }

    /// The transport's count of collective calls (see [`Collective::collective_calls`]).
    pub fn collective_calls(&self) -> u64 {
        self.collective.collective_calls()
    }

    /// The collective, for calls outside the exchange (barriers, aborts).
    pub fn collective_mut(&mut self) -> &mut C {
        &mut self.collective
    }

    /// The codec's checkpointable state (its call counter and error-feedback residuals;
    /// empty for codecs without state), as bytes. With
    /// [`restore_codec_state`](GradientExchange::restore_codec_state) this is the
    /// workspace's checkpoint pattern (`docs/checkpoints.md`): a snapshot, and `restore…`
    /// writing it back into an existing exchange.
    pub fn codec_state(&self) -> Vec<u8> {
        self.codec.state()
    }

    /// Restores the codec's state from [`codec_state`](GradientExchange::codec_state) into
    /// this exchange (same mode, parameters and config); on error nothing changes.
    ///
    /// # Errors
    /// The codec's decode errors.
    pub fn restore_codec_state(&mut self, state: &[u8]) -> Result<()> {
        self.codec.restore(state)
    }

    /// Averages `local` (this rank's gradient, one `Vec<f32>` per parameter) and `loss` over
    /// all ranks: writes `(Σ_r decode(encode(g_r))) / N` into `out`, summed in rank order,
    /// and returns the rank-order mean of the losses. Identical bits on every rank.
    ///
    /// Every rank must call it with the same `step`. A rank whose gradient or loss is not
    /// finite, or whose input is malformed, still takes part in the all-gather with a
    /// failure flag, so that every rank returns an error together instead of waiting.
    ///
    /// # Errors
    /// On every rank: [`Error::NonFinite`] (naming the first bad rank),
    /// [`Error::StepMismatch`], [`Error::Decode`], or, on ranks other than the one that
    /// failed, [`Error::Codec`] naming it. On the failing rank: its own error. On error
    /// `out` and the codec's state are unchanged.
    pub fn mean(
        &mut self,
        step: u64,
        local: &[Vec<f32>],
        loss: f32,
        out: &mut [Vec<f32>],
    ) -> Result<f32> {
        let t0 = Instant::now();
        let input = StepInput { step, local, loss };
        let r = match self.reduction {
            Reduction::Gather => self.gathered(input, out),
            Reduction::Sum | Reduction::Allreduce => self.summed(input, out),
        };
        match &r {
            Ok(_) => {
                self.codec.commit();
                self.stats.exchanges += 1;
            }
            Err(_) => {
                self.codec.rollback();
                self.stats.failed += 1;
            }
        }
        self.stats.seconds += t0.elapsed().as_secs_f64();
        r
    }

    /// Validates this rank's input and writes the frame header into `send`, then lets
    /// `encode` append to it (or to the linear message). Returns the local error, if any;
    /// the header's status tells the other ranks.
    fn local_frame(
        &mut self,
        StepInput { step, local, loss }: StepInput<'_>,
        out: &[Vec<f32>],
        encode: impl FnOnce(&mut Self, Context) -> Result<()>,
    ) -> Option<Error> {
        let rank = self.rank();
        // Local validation; failures are sent as a status so no rank waits.
        let mut local_error = check_layout(local, &self.acc)
            .and_then(|()| check_layout(out, &self.acc))
            .err();
        let mut status = STATUS_OK;
        if local_error.is_none()
            && (!loss.is_finite() || local.iter().any(|g| g.iter().any(|x| !x.is_finite())))
        {
            status = STATUS_NON_FINITE;
        }
        self.send.clear();
        self.send.extend_from_slice(MAGIC);
        self.send.push(PROTOCOL_VERSION as u8);
        self.send.push(STATUS_OK);
        self.send.extend_from_slice(&[0, 0]);
        self.send.extend_from_slice(&step.to_le_bytes());
        self.send.extend_from_slice(&loss.to_bits().to_le_bytes());
        self.send.extend_from_slice(&[0, 0, 0, 0]);
        if local_error.is_none() && status == STATUS_OK {
            let ctx = Context { step, rank };
            if let Err(e) = encode(self, ctx) {
                self.send.truncate(HEADER_BYTES);
                local_error = Some(e);
            }
        }
        if local_error.is_some() {
            status = STATUS_FAILED;
        }
        self.send[5] = status;
        local_error
    }

    /// All-gathers `send` into `recv` and counts the bytes.
    fn gather_frames(&mut self) -> Result<()> {
        self.collective
            .all_gather_bytes(&self.send, &mut self.got)?;
        check_gather(&self.collective, &self.send, &self.got)?;
        self.stats.bytes_sent += self.send.len() as u64;
        self.stats.bytes_received += (self.got.bytes.len() - self.send.len()) as u64;
        Ok(())
    }

    /// The verdict on the gathered frame headers, the same on every rank: frames of this
    /// protocol, one step, every status ok.
    fn verdict(&self, step: u64, local_error: Option<Error>) -> Result<()> {
        let rank = self.rank();
        // Headers first: every rank reaches the same verdict before decoding anything.
        let mut at = 0usize;
        let mut step0 = None;
        for (r, &len) in self.got.lens.iter().enumerate() {
            let frame = &self.got.bytes[at..at + len];
            at += len;
            if len < HEADER_BYTES || &frame[..4] != MAGIC || u64::from(frame[4]) != PROTOCOL_VERSION
            {
                return Err(Error::Decode {
                    rank: r,
                    reason: "not a gradient frame of this protocol version".into(),
                });
            }
            let s = u64::from_le_bytes(frame[8..16].try_into().expect("8 bytes"));
            match step0 {
                None => step0 = Some(s),
                Some(s0) if s0 != s => {
                    return Err(Error::StepMismatch {
                        rank: r,
                        expected: s0,
                        found: s,
                    });
                }
                Some(_) => {}
            }
        }
        at = 0;
        for (r, &len) in self.got.lens.iter().enumerate() {
            let st = self.got.bytes[at + 5];
            at += len;
            match st {
                STATUS_OK => {}
                STATUS_NON_FINITE => return Err(Error::NonFinite { rank: r, step }),
                _ if r == rank => {
                    return Err(local_error.unwrap_or_else(|| {
                        Error::Codec(format!("rank {r} failed to encode at step {step}"))
                    }));
                }
                _ => {
                    return Err(Error::Codec(format!(
                        "rank {r} failed to encode its gradient at step {step} (see its own error)"
                    )));
                }
            }
        }
        Ok(())
    }

    /// [`Reduction::Gather`]: all-gather the payloads, decode each, sum in rank order.
    fn gathered(&mut self, input: StepInput<'_>, out: &mut [Vec<f32>]) -> Result<f32> {
        let step = input.step;
        let local_error = self.local_frame(input, out, |me, ctx| {
            me.codec.encode(ctx, input.local, &mut me.send)
        });
        self.stats.last_frame_bytes = self.send.len();
        self.gather_frames()?;
        self.verdict(step, local_error)?;

        // Decode and sum in rank order.
        let mut loss_sum = 0f32;
        let mut at = 0;
        for (r, &len) in self.got.lens.iter().enumerate() {
            let frame = &self.got.bytes[at..at + len];
            at += len;
            let l = f32::from_bits(u32::from_le_bytes(
                frame[16..20].try_into().expect("4 bytes"),
            ));
            let ctx = Context { step, rank: r };
            let payload = &frame[HEADER_BYTES..];
            // A conforming sender flags its own non-finite values; finite bits from a
            // non-conforming or corrupted one are still refused, on every rank alike.
            let corrupt = |what: &str| Error::Decode {
                rank: r,
                reason: format!("{what} is not finite although the frame's status is ok"),
            };
            if !l.is_finite() {
                return Err(corrupt("the loss"));
            }
            let part = if r == 0 {
                &mut self.acc
            } else {
                &mut self.scratch
            };
            self.codec.decode(ctx, payload, part)?;
            if part.iter().any(|g| g.iter().any(|x| !x.is_finite())) {
                return Err(corrupt("a decoded gradient"));
            }
            if r == 0 {
                loss_sum = l;
            } else {
                loss_sum += l;
                for (a, s) in self.acc.iter_mut().zip(&self.scratch) {
                    add_into(a, s)?;
                }
            }
        }
        let n = self.got.lens.len();
        for a in &mut self.acc {
            divide(a, n);
        }
        let ctx = Context {
            step,
            rank: self.rank(),
        };
        self.codec.finish(ctx, &mut self.acc)?;
        for (o, a) in out.iter_mut().zip(&self.acc) {
            o.copy_from_slice(a);
        }
        Ok(loss_sum / n as f32)
    }

    /// All-gathers one `u64` per rank (a weights hash, a predictor digest), in rank order.
    ///
    /// # Errors
    /// Transport errors.
    pub fn gather_u64(&mut self, value: u64) -> Result<Vec<u64>> {
        let mine = value.to_le_bytes();
        self.collective.all_gather_bytes(&mine, &mut self.got)?;
        check_gather(&self.collective, &mine, &self.got)?;
        self.stats.bytes_sent += 8;
        self.stats.bytes_received += (self.got.bytes.len() - 8) as u64;
        // A rank out of lockstep may have sent something else: never read shifted words.
        if let Some(r) = self.got.lens.iter().position(|&len| len != 8) {
            return Err(Error::Decode {
                rank: r,
                reason: format!("{} bytes where a u64 was expected", self.got.lens[r]),
            });
        }
        self.got
            .bytes
            .chunks_exact(8)
            .enumerate()
            .map(|(r, c)| {
                c.try_into()
                    .map(u64::from_le_bytes)
                    .map_err(|_| Error::Decode {
                        rank: r,
                        reason: "not a u64".into(),
                    })
            })
            .collect()
    }

    /// Checks that every rank holds the same `value` (for example a digest of its
    /// predictor state).
    ///
    /// # Errors
    /// [`Error::ConfigMismatch`] with `field = what` on every rank when any rank differs.
    pub fn check_agreement(&mut self, what: &'static str, value: u64) -> Result<()> {
        let all = self.gather_u64(value)?;
        match all.iter().position(|&v| v != all[0]) {
            None => Ok(()),
            Some(r) => Err(Error::ConfigMismatch {
                field: what,
                rank: r,
                expected: format!("{:#018x}", all[0]),
                found: format!("{:#018x}", all[r]),
            }),
        }
    }

    /// The parameter lengths, in order.
    pub fn lens(&self) -> &[usize] {
        &self.lens
    }
}
