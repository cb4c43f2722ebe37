//! [`LengthsFirst`]: a [`Collective`] over two all-gathers (lengths, then bytes), refusing
//! any message over the transport's limit on every rank alike, and the primitives a
//! transport provides for it ([`GatherPrimitives`]).

use super::*;

/// The most bytes one MPI call can carry per message and per offset: MPI counts and
/// displacements are C `int`s, so `2³¹ − 1`.
pub const MPI_COUNT_LIMIT: u64 = i32::MAX as u64;

/// The two calls of a transport under [`LengthsFirst`]: an all-gather of a few words per
/// rank, then an all-gather of byte strings whose lengths every rank already knows.
pub trait GatherPrimitives {
    /// This process's rank, `0 ≤ rank < size`.
    fn rank(&self) -> usize;
    /// The number of ranks.
    fn size(&self) -> usize;
    /// Gathers every rank's `mine` (the same length on every rank) into `out`, in rank
    /// order; `out.len() == size · mine.len()`.
    ///
    /// # Errors
    /// [`Error::Transport`] when the transport fails.
    fn all_gather_words(&mut self, mine: &[u64], out: &mut [u64]) -> Result<()>;
    /// Gathers every rank's `mine` into `out`, rank `r`'s part at the sum of `lens[..r]`.
    /// `lens` is the same on every rank, `lens[rank] == mine.len()`, `out.len()` is the sum
    /// of `lens`, and every length and offset is within every rank's stated limit.
    ///
    /// # Errors
    /// [`Error::Transport`] when the transport fails.
    fn all_gather_known(&mut self, mine: &[u8], lens: &[u64], out: &mut [u8]) -> Result<()>;
    /// The number of transport calls made so far.
    fn calls(&self) -> u64;
    /// All-to-all with agreed lengths (see [`Collective::all_to_all_bytes`]): the parts of
    /// `parts.send` to their ranks, `parts.recv_lens[i]` bytes from rank `i` into `out`
    /// (whose length is their sum), in rank order.
    ///
    /// The default implementation all-gathers every rank's length table
    /// ([`all_gather_words`](GatherPrimitives::all_gather_words)), then every rank's
    /// `send` ([`all_gather_known`](GatherPrimitives::all_gather_known)), and keeps the
    /// parts addressed to this rank; `MpiComm` calls `MPI_Alltoallv`.
    ///
    /// # Errors
    /// [`Error::MalformedGather`] when a rank sent another length than expected; transport
    /// errors.
    fn all_to_all_known(&mut self, parts: AllToAll<'_>, out: &mut [u8]) -> Result<()> {
        let n = self.size();
        let me = self.rank();
        let mut table = vec![0u64; n * n];
        let send_lens: Vec<u64> = parts.send_lens.iter().map(|&l| l as u64).collect();
        self.all_gather_words(&send_lens, &mut table)?;
        let totals: Vec<u64> = table.chunks_exact(n).map(|row| row.iter().sum()).collect();
        let total = usize::try_from(totals.iter().sum::<u64>()).map_err(|_| {
            Error::Transport("the gathered messages do not fit in this process's memory".into())
        })?;
        let mut all = vec![0u8; total];
        self.all_gather_known(parts.send, &totals, &mut all)?;
        let (mut at, mut put) = (0usize, 0usize);
        for (i, row) in table.chunks_exact(n).enumerate() {
            let start = at + row[..me].iter().sum::<u64>() as usize;
            let len = row[me] as usize;
            if len != parts.recv_lens[i] || put + len > out.len() {
                return Err(Error::MalformedGather {
                    reason: format!(
                        "rank {i} sent {} bytes to rank {me}, which expected {}",
                        row[me], parts.recv_lens[i]
                    ),
                });
            }
            out[put..put + len].copy_from_slice(&all[start..start + len]);
            put += len;
            at += totals[i] as usize;
        }
        Ok(())
    }
    /// Sums `buf` over all ranks in place (the same length on every rank). The default
    /// implementation all-gathers the values and sums them in rank order (bit-deterministic);
    /// `MpiComm` calls `MPI_Allreduce`.
    ///
    /// # Errors
    /// Transport errors.
    fn all_reduce_sum_f32(&mut self, buf: &mut [f32]) -> Result<()> {
        let n = self.size();
        let mine: Vec<u8> = buf.iter().flat_map(|x| x.to_le_bytes()).collect();
        let lens = vec![mine.len() as u64; n];
        let mut all = vec![0u8; n * mine.len()];
        self.all_gather_known(&mine, &lens, &mut all)?;
        sum_in_rank_order(&all, buf);
        Ok(())
    }
    /// Sums `buf` over all ranks in place as `bf16` (see
    /// [`Collective::all_reduce_sum_bf16`]). The default implementation all-gathers the
    /// `bf16` values and adds them in rank order (bit-deterministic); `MpiComm` calls
    /// `MPI_Allreduce` with a user-defined operation.
    ///
    /// # Errors
    /// Transport errors.
    fn all_reduce_sum_bf16(&mut self, buf: &mut [f32]) -> Result<()> {
        let n = self.size();
        let mine: Vec<u8> = buf
            .iter()
            .flat_map(|&x| f32_to_bf16(x).to_le_bytes())
            .collect();
        let lens = vec![mine.len() as u64; n];
        let mut all = vec![0u8; n * mine.len()];
        self.all_gather_known(&mine, &lens, &mut all)?;
        bf16_sum_in_rank_order(&all, buf);
        Ok(())
    }
}

/// A [`Collective`] over [`GatherPrimitives`] that agrees on the message lengths first.
///
/// Each all-gather first gathers `[length, limit]` from every rank, so every rank sees every
/// length and the smallest limit. If any message, or the offset at which it lands, exceeds
/// that limit, every rank returns the same [`Error::MessageTooLarge`] before any payload
/// moves; otherwise the payloads are gathered. No rank can fail alone, so none waits forever.
#[derive(Debug, Clone)]
pub struct LengthsFirst<P> {
    inner: P,
    limit: u64,
    words: Vec<u64>,
    lens: Vec<u64>,
}

impl<P: GatherPrimitives> LengthsFirst<P> {
    /// Wraps `inner`, whose calls carry at most `limit` bytes per message and per offset
    /// (for example [`MPI_COUNT_LIMIT`]).
    pub fn new(inner: P, limit: u64) -> Self {
        Self {
            inner,
            limit,
            words: Vec::new(),
            lens: Vec::new(),
        }
    }

    /// This rank's limit (the effective one is the smallest over all ranks).
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Lowers or raises this rank's limit, for example to test the oversize path with small
    /// messages.
    pub fn set_limit(&mut self, limit: u64) {
        self.limit = limit;
    }

    /// The primitives.
    pub fn inner(&self) -> &P {
        &self.inner
    }

    /// The primitives, mutably (for calls outside the all-gather).
    pub fn inner_mut(&mut self) -> &mut P {
        &mut self.inner
    }
}

/// Checks gathered message lengths against a limit, the same way on every rank: the first
/// rank whose length or offset (the sum of the lengths before it) exceeds `limit`.
///
/// # Errors
/// [`Error::MessageTooLarge`] naming that rank.
pub fn check_message_lengths(lens: &[u64], limit: u64) -> Result<()> {
    let mut offset = 0u64;
    for (rank, &bytes) in lens.iter().enumerate() {
        if bytes > limit || offset > limit {
            return Err(Error::MessageTooLarge {
                rank,
                bytes,
                offset,
                limit,
            });
        }
        offset += bytes;
    }
    Ok(())
}

impl<P: GatherPrimitives> Collective for LengthsFirst<P> {
    fn rank(&self) -> usize {
        self.inner.rank()
    }

    fn size(&self) -> usize {
        self.inner.size()
    }

    fn all_gather_bytes(&mut self, mine: &[u8], out: &mut Gathered) -> Result<()> {
        let n = self.inner.size();
        // A usize always fits in a u64 on the platforms Rust supports.
        let my_len = mine.len() as u64;
        self.words.clear();
        self.words.resize(2 * n, 0);
        self.inner
            .all_gather_words(&[my_len, self.limit], &mut self.words)?;
        // Every rank now holds the same words and reaches the same verdict.
        let limit = self.words.iter().skip(1).step_by(2).copied().min();
        let limit = limit.unwrap_or(self.limit);
        self.lens.clear();
        self.lens.extend(self.words.iter().step_by(2));
        check_message_lengths(&self.lens, limit)?;
        let total = self.lens.iter().try_fold(0usize, |acc, &l| {
            usize::try_from(l).ok().and_then(|l| acc.checked_add(l))
        });
        let total = total.ok_or_else(|| {
            Error::Transport("the gathered messages do not fit in this process's memory".into())
        })?;
        out.bytes.clear();
        out.bytes.resize(total, 0);
        self.inner
            .all_gather_known(mine, &self.lens, &mut out.bytes)?;
        out.lens.clear();
        out.lens.extend(self.lens.iter().map(|&l| l as usize));
        Ok(())
    }

    fn collective_calls(&self) -> u64 {
        self.inner.calls()
    }

    fn all_to_all_bytes(&mut self, parts: AllToAll<'_>, out: &mut Vec<u8>) -> Result<()> {
        parts.check(self.inner.size())?;
        out.clear();
        out.resize(parts.recv_lens.iter().sum(), 0);
        self.inner.all_to_all_known(parts, out)
    }

    fn all_reduce_sum_f32(&mut self, buf: &mut [f32]) -> Result<()> {
        self.inner.all_reduce_sum_f32(buf)
    }

    fn all_reduce_sum_bf16(&mut self, buf: &mut [f32]) -> Result<()> {
        self.inner.all_reduce_sum_bf16(buf)
    }

    fn byte_limit(&self) -> u64 {
        self.limit
    }
}
