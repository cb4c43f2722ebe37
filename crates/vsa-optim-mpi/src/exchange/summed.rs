//! The summed and all-reduced step ([`Reduction::Sum`], [`Reduction::Allreduce`]): a header
//! all-gather for a common verdict, then the reduce-scatter and all-gather of the linear
//! messages (or the native all-reduce), decoded once.

use super::*;

impl<C: Collective> GradientExchange<C> {
    /// [`Reduction::Sum`] and [`Reduction::Allreduce`]: a header all-gather (status, step,
    /// loss, message length, byte limit) gives every rank the same verdict; then the linear
    /// messages are summed (reduce-scatter and all-gather, or the native all-reduce) and the
    /// sum is decoded once.
    pub(super) fn summed(&mut self, input: StepInput<'_>, out: &mut [Vec<f32>]) -> Result<f32> {
        let step = input.step;
        let wire = self.codec.linear().unwrap_or(LinearWire::F32);
        let limit = self.collective.byte_limit();
        self.linear.clear();
        let local_error = self.local_frame(input, out, |me, ctx| {
            me.codec.encode_linear(ctx, input.local, &mut me.linear)
        });
        if local_error.is_some() {
            self.linear.clear();
        }
        let m = self.linear.len() as u64;
        self.send.extend_from_slice(&m.to_le_bytes());
        self.send.extend_from_slice(&limit.to_le_bytes());
        self.gather_frames()?;
        self.verdict(step, local_error)?;

        // Every frame is a sum header; every rank's message has rank 0's length; the
        // payload fits the smallest limit. All ranks see the same frames.
        let n = self.got.lens.len();
        let (mut losses, mut lens, mut limits) = (Vec::new(), Vec::new(), Vec::new());
        let mut at = 0;
        for (r, &len) in self.got.lens.iter().enumerate() {
            let frame = &self.got.bytes[at..at + len];
            at += len;
            if len != SUM_HEADER_BYTES {
                return Err(Error::Decode {
                    rank: r,
                    reason: format!(
                        "a summed step's header of {len} bytes, expected {SUM_HEADER_BYTES}"
                    ),
                });
            }
            let word = |i: usize| u64::from_le_bytes(frame[i..i + 8].try_into().expect("8 bytes"));
            let l = f32::from_bits(u32::from_le_bytes(
                frame[16..20].try_into().expect("4 bytes"),
            ));
            if !l.is_finite() {
                return Err(Error::Decode {
                    rank: r,
                    reason: "the loss is not finite although the frame's status is ok".into(),
                });
            }
            losses.push(l);
            lens.push(word(HEADER_BYTES));
            limits.push(word(HEADER_BYTES + 8));
        }
        if let Some(r) = lens.iter().position(|&l| l != lens[0]) {
            return Err(Error::Decode {
                rank: r,
                reason: format!(
                    "a linear message of {} values where rank 0's has {}",
                    lens[r], lens[0]
                ),
            });
        }
        let limit = limits.iter().copied().min().unwrap_or(u64::MAX);
        let bytes = lens[0].saturating_mul(wire.bytes() as u64);
        if bytes > limit {
            return Err(Error::MessageTooLarge {
                rank: 0,
                bytes,
                offset: 0,
                limit,
            });
        }
        let mut loss_sum = losses[0];
        for &l in &losses[1..] {
            loss_sum += l;
        }

        match self.reduction {
            Reduction::Allreduce => {
                match wire {
                    LinearWire::F32 => self.collective.all_reduce_sum_f32(&mut self.linear)?,
                    LinearWire::Bf16 => self.collective.all_reduce_sum_bf16(&mut self.linear)?,
                }
                // Nominal: a bandwidth-optimal all-reduce moves 2(N − 1)/N of the message
                // each way; MPI picks the algorithm.
                let moved = (2 * (n as u64 - 1) * wire.bytes() as u64 * m) / n as u64;
                self.stats.bytes_sent += moved;
                self.stats.bytes_received += moved;
            }
            _ => self.reduce_scatter_gather(wire)?,
        }
        self.stats.last_frame_bytes = SUM_HEADER_BYTES + wire.bytes() * self.linear.len();
        if let Some(j) = self.linear.iter().position(|x| !x.is_finite()) {
            return Err(Error::Decode {
                rank: owner(j, self.linear.len(), n),
                reason: format!("the sum over ranks overflows at element {j}"),
            });
        }
        let ctx = Context {
            step,
            rank: self.rank(),
        };
        self.codec.decode_linear(ctx, &self.linear, &mut self.acc)?;
        for a in &mut self.acc {
            divide(a, n);
        }
        for (o, a) in out.iter_mut().zip(&self.acc) {
            o.copy_from_slice(a);
        }
        Ok(loss_sum / n as f32)
    }

    /// Sums `linear` over the ranks in place: all-to-all of `N` chunks (rank `r` gets chunk
    /// `r` of every rank), the rank-order sum of this rank's chunk, all-gather of the
    /// reduced chunks. Every length is known to every rank (the verdict checked them).
    fn reduce_scatter_gather(&mut self, wire: LinearWire) -> Result<()> {
        let (n, me) = (self.collective.size(), self.rank());
        let m = self.linear.len();
        let w = wire.bytes();
        let chunk_lens: Vec<usize> = (0..n).map(|j| w * chunk(j, m, n).len()).collect();
        let mine = chunk(me, m, n);
        self.send.clear();
        wire.put(&self.linear, &mut self.send);
        let recv_lens = vec![chunk_lens[me]; n];
        let parts = AllToAll {
            send: &self.send,
            send_lens: &chunk_lens,
            recv_lens: &recv_lens,
        };
        self.collective
            .all_to_all_bytes(parts, &mut self.got.bytes)?;
        if self.got.bytes.len() != n * chunk_lens[me] {
            return Err(Error::MalformedGather {
                reason: format!(
                    "an all-to-all of {n} parts of {} bytes returned {} bytes",
                    chunk_lens[me],
                    self.got.bytes.len()
                ),
            });
        }
        self.stats.bytes_sent += (w * (m - mine.len())) as u64;
        self.stats.bytes_received += ((n - 1) * chunk_lens[me]) as u64;
        // ((c₀ + c₁) + c₂) + … in rank order, element by element: the same additions as
        // summing the whole messages in rank order.
        self.chunk.clear();
        self.chunk.resize(mine.len(), 0.0);
        self.part.clear();
        self.part.resize(mine.len(), 0.0);
        for (r, bytes) in self
            .got
            .bytes
            .chunks_exact(chunk_lens[me].max(1))
            .enumerate()
        {
            if r == 0 {
                wire.get(bytes, &mut self.chunk);
            } else {
                wire.get(bytes, &mut self.part);
                add_into(&mut self.chunk, &self.part)?;
            }
        }
        self.send.clear();
        wire.put(&self.chunk, &mut self.send);
        self.collective
            .all_gather_bytes(&self.send, &mut self.got)?;
        check_gather(&self.collective, &self.send, &self.got)?;
        if self.got.lens != chunk_lens {
            return Err(Error::MalformedGather {
                reason: format!(
                    "reduced chunks of {:?} bytes where {chunk_lens:?} were expected",
                    self.got.lens
                ),
            });
        }
        self.stats.bytes_sent += self.send.len() as u64;
        self.stats.bytes_received += (self.got.bytes.len() - self.send.len()) as u64;
        wire.get(&self.got.bytes, &mut self.linear);
        Ok(())
    }
}
