//! The collectives the exchange needs: an all-gather of byte strings in rank order (every
//! mode), an all-to-all of byte strings (the reduce-scatter of the summed mode) and a sum
//! all-reduce of `f32` (the native all-reduce mode). Only the all-gather is required: the
//! other two have default implementations on top of it, so a foreign transport keeps working.
//!
//! [`MpiWorld`] (feature `mpi`) implements it with two MPI calls: `MPI_Allgather` of the
//! lengths, then `MPI_Allgatherv` of the bytes. The decision between the two calls is
//! [`LengthsFirst`], generic over the two primitives ([`GatherPrimitives`]), so that a message
//! too large for the transport is refused by every rank alike (the lengths are known to all
//! of them) instead of by one rank while the others wait. [`SingleProcess`] is the world of
//! one rank, for single-machine runs and for tests of everything above the transport.

use crate::error::{Error, Result};

/// A group of ranks that can all-gather byte strings.
pub trait Collective {
    /// This process's rank, `0 ≤ rank < size`.
    fn rank(&self) -> usize;
    /// The number of ranks.
    fn size(&self) -> usize;
    /// Gathers every rank's `mine` on every rank: `out.bytes` becomes the concatenation in
    /// rank order and `out.lens[r]` the length of rank `r`'s part. Both buffers are reused
    /// (no allocation once they are large enough). Every rank must call it, in the same order
    /// relative to its other collective calls.
    ///
    /// An error must reach every rank alike (or stop the job): a rank that returns early
    /// on its own leaves the others waiting in the collective. [`LengthsFirst`] gives this for
    /// any transport built from [`GatherPrimitives`].
    ///
    /// # Errors
    /// [`Error::Transport`] when the transport fails; [`Error::MessageTooLarge`] (on every
    /// rank) when a message is too large for it.
    fn all_gather_bytes(&mut self, mine: &[u8], out: &mut Gathered) -> Result<()>;
    /// The number of collective operations issued so far (each [`all_gather_bytes`] counts
    /// the transport calls it makes), for proving that a step did not communicate.
    ///
    /// [`all_gather_bytes`]: Collective::all_gather_bytes
    fn collective_calls(&self) -> u64;

    /// All-to-all of byte strings whose lengths every rank agreed on beforehand: this rank
    /// sends `parts.send_lens[j]` bytes to rank `j` (the parts of `parts.send`, in rank
    /// order) and receives `parts.recv_lens[i]` bytes from every rank `i` into `out`
    /// (resized; rank order). Rank `i`'s `send_lens[j]` must equal rank `j`'s
    /// `recv_lens[i]`, and every length and
    /// offset must be within every rank's [`byte_limit`](Collective::byte_limit): the caller
    /// agrees on them first (the exchange does, with a header all-gather), because a
    /// transport cannot refuse a mismatch on every rank alike.
    ///
    /// The default implementation all-gathers every rank's whole `send` (with its lengths)
    /// and keeps the parts addressed to this rank: correct on any transport, but it moves
    /// `N` times the bytes. [`LengthsFirst`] forwards to
    /// [`GatherPrimitives::all_to_all_known`], which `MpiWorld` implements with
    /// `MPI_Alltoallv`.
    ///
    /// # Errors
    /// [`Error::LengthMismatch`] when `send_lens` or `recv_lens` do not have one entry per
    /// rank or `send_lens` does not add up to `send.len()` (nothing is sent);
    /// [`Error::MalformedGather`] when a rank sent another length than this rank expects;
    /// transport errors.
    fn all_to_all_bytes(&mut self, parts: AllToAll<'_>, out: &mut Vec<u8>) -> Result<()> {
        parts.check(self.size())?;
        let n = self.size();
        let mut mine = Vec::with_capacity(8 * n + parts.send.len());
        for &l in parts.send_lens {
            mine.extend_from_slice(&(l as u64).to_le_bytes());
        }
        mine.extend_from_slice(parts.send);
        let mut all = Gathered::default();
        self.all_gather_bytes(&mine, &mut all)?;
        parts_for_me(self.rank(), n, &all, parts.recv_lens, out)
    }

    /// Sums `buf` over all ranks in place (every rank passes the same length): the native
    /// all-reduce mode. The default implementation all-gathers the values and sums them in
    /// rank order, `((b₀ + b₁) + b₂) + …`, so it is bit-deterministic; `MpiWorld` calls
    /// `MPI_Allreduce`, whose summation order is MPI's choice (reproducible only for a fixed
    /// rank count and MPI build).
    ///
    /// # Errors
    /// [`Error::MalformedGather`] when a rank sent another length; transport errors.
    fn all_reduce_sum_f32(&mut self, buf: &mut [f32]) -> Result<()> {
        let mine: Vec<u8> = buf.iter().flat_map(|x| x.to_le_bytes()).collect();
        let mut all = Gathered::default();
        self.all_gather_bytes(&mine, &mut all)?;
        let lens = &all.lens;
        if lens.len() != self.size() || lens.iter().any(|&l| l != mine.len()) {
            return Err(Error::MalformedGather {
                reason: format!(
                    "an all-reduce of {} bytes per rank received parts of {lens:?} bytes",
                    mine.len()
                ),
            });
        }
        sum_in_rank_order(&all.bytes, buf);
        Ok(())
    }

    /// The most bytes this rank's transport carries per message and per offset (the
    /// exchange all-gathers it and checks its payloads against the smallest); unlimited by
    /// default.
    fn byte_limit(&self) -> u64 {
        u64::MAX
    }
}

/// The result of [`Collective::all_gather_bytes`]: every rank's bytes in rank order, and
/// the length of each rank's part. Reused between calls.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Gathered {
    /// The parts, concatenated in rank order.
    pub bytes: Vec<u8>,
    /// `lens[r]`: the bytes of rank `r`'s part.
    pub lens: Vec<usize>,
}

impl Gathered {
    /// Empties both lists (keeping their memory).
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.lens.clear();
    }

    /// Appends the next rank's part.
    pub fn push(&mut self, part: &[u8]) {
        self.bytes.extend_from_slice(part);
        self.lens.push(part.len());
    }
}

/// What one rank sends and expects in [`Collective::all_to_all_bytes`].
#[derive(Debug, Clone, Copy)]
pub struct AllToAll<'a> {
    /// The parts for ranks `0, 1, …`, concatenated.
    pub send: &'a [u8],
    /// `send_lens[j]`: the bytes of the part for rank `j`.
    pub send_lens: &'a [usize],
    /// `recv_lens[i]`: the bytes this rank expects from rank `i`.
    pub recv_lens: &'a [usize],
}

impl AllToAll<'_> {
    /// Checks one entry per rank in both length lists and that `send_lens` adds up to
    /// `send`.
    ///
    /// # Errors
    /// [`Error::LengthMismatch`].
    pub fn check(&self, ranks: usize) -> Result<()> {
        for (what, lens) in [
            ("all-to-all send lengths", self.send_lens),
            ("all-to-all receive lengths", self.recv_lens),
        ] {
            if lens.len() != ranks {
                return Err(Error::LengthMismatch {
                    what: what.into(),
                    expected: ranks,
                    actual: lens.len(),
                });
            }
        }
        let total = self
            .send_lens
            .iter()
            .try_fold(0usize, |a, &l| a.checked_add(l));
        if total != Some(self.send.len()) {
            return Err(Error::LengthMismatch {
                what: "all-to-all send buffer".into(),
                expected: total.unwrap_or(usize::MAX),
                actual: self.send.len(),
            });
        }
        Ok(())
    }
}

/// From an all-gather of `[n u64 lengths][parts]` per rank, the parts addressed to rank
/// `me`, in rank order, after checking every length against `recv_lens`.
fn parts_for_me(
    me: usize,
    n: usize,
    all: &Gathered,
    recv_lens: &[usize],
    out: &mut Vec<u8>,
) -> Result<()> {
    let (all, lens) = (&all.bytes, &all.lens);
    let bad = |reason: String| Error::MalformedGather { reason };
    if lens.len() != n || lens.iter().sum::<usize>() != all.len() {
        return Err(bad(format!(
            "{} parts adding up to {} bytes for {n} ranks and {} bytes received",
            lens.len(),
            lens.iter().sum::<usize>(),
            all.len()
        )));
    }
    out.clear();
    let mut at = 0usize;
    for (i, &len) in lens.iter().enumerate() {
        let part = &all[at..at + len];
        at += len;
        let words: Option<Vec<usize>> = part.get(..8 * n).map(|h| {
            h.chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")) as usize)
                .collect()
        });
        let Some(words) = words else {
            return Err(bad(format!(
                "rank {i}'s all-to-all part has no length table"
            )));
        };
        let body = &part[8 * n..];
        let offset = words[..me]
            .iter()
            .try_fold(0usize, |a, &l| a.checked_add(l));
        let range = offset.and_then(|o| Some(o..o.checked_add(words[me])?));
        let piece = range.and_then(|r| body.get(r));
        match piece {
            Some(p) if p.len() == recv_lens[i] => out.extend_from_slice(p),
            _ => {
                return Err(bad(format!(
                    "rank {i} sent {} bytes to rank {me}, which expected {}",
                    words[me], recv_lens[i]
                )));
            }
        }
    }
    Ok(())
}

/// `buf = ((p₀ + p₁) + p₂) + …` over the little-endian `f32` parts of `all`, each
/// `buf.len()` values long, in rank order.
fn sum_in_rank_order(all: &[u8], buf: &mut [f32]) {
    let part = 4 * buf.len();
    if part == 0 {
        return;
    }
    for (r, p) in all.chunks_exact(part).enumerate() {
        for (b, c) in buf.iter_mut().zip(p.chunks_exact(4)) {
            let x = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            *b = if r == 0 { x } else { *b + x };
        }
    }
}

/// A borrowed collective is a collective, so a caller can lend its world to an exchange and
/// keep it for what comes after (a final barrier, an abort).
impl<C: Collective + ?Sized> Collective for &mut C {
    fn rank(&self) -> usize {
        (**self).rank()
    }

    fn size(&self) -> usize {
        (**self).size()
    }

    fn all_gather_bytes(&mut self, mine: &[u8], out: &mut Gathered) -> Result<()> {
        (**self).all_gather_bytes(mine, out)
    }

    fn collective_calls(&self) -> u64 {
        (**self).collective_calls()
    }

    fn all_to_all_bytes(&mut self, parts: AllToAll<'_>, out: &mut Vec<u8>) -> Result<()> {
        (**self).all_to_all_bytes(parts, out)
    }

    fn all_reduce_sum_f32(&mut self, buf: &mut [f32]) -> Result<()> {
        (**self).all_reduce_sum_f32(buf)
    }

    fn byte_limit(&self) -> u64 {
        (**self).byte_limit()
    }
}

/// The world of one process: rank 0 of 1. All-gather copies the input.
#[derive(Debug, Default, Clone)]
pub struct SingleProcess {
    calls: u64,
}

impl SingleProcess {
    /// A world of one rank.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Collective for SingleProcess {
    fn rank(&self) -> usize {
        0
    }

    fn size(&self) -> usize {
        1
    }

    fn all_gather_bytes(&mut self, mine: &[u8], out: &mut Gathered) -> Result<()> {
        out.clear();
        out.push(mine);
        self.calls += 1;
        Ok(())
    }

    fn collective_calls(&self) -> u64 {
        self.calls
    }

    fn all_to_all_bytes(&mut self, parts: AllToAll<'_>, out: &mut Vec<u8>) -> Result<()> {
        parts.check(1)?;
        out.clear();
        out.extend_from_slice(parts.send);
        self.calls += 1;
        Ok(())
    }

    fn all_reduce_sum_f32(&mut self, _buf: &mut [f32]) -> Result<()> {
        self.calls += 1;
        Ok(())
    }
}

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

    fn byte_limit(&self) -> u64 {
        self.limit
    }
}

#[cfg(feature = "mpi")]
pub use self::mpi_world::{MpiComm, MpiWorld};

#[cfg(feature = "mpi")]
mod mpi_world {
    use mpi::Count;
    use mpi::collective::SystemOperation;
    use mpi::datatype::{Partition, PartitionMut};
    use mpi::environment::Universe;
    use mpi::topology::SimpleCommunicator;
    use mpi::traits::{Communicator, CommunicatorCollectives};

    use super::{AllToAll, GatherPrimitives, LengthsFirst, MPI_COUNT_LIMIT};
    use crate::error::{Error, Result};

    /// `MPI_COMM_WORLD` through rsmpi: the all-gather of byte strings agrees on the lengths
    /// first ([`LengthsFirst`]), so a message over [`MPI_COUNT_LIMIT`] bytes (or a lower limit
    /// set with [`LengthsFirst::set_limit`]) is refused by every rank alike.
    ///
    /// MPI's default error handler is kept (errors are fatal), so a rank that dies makes
    /// `mpirun` stop the whole job instead of leaving the others waiting.
    pub type MpiWorld = LengthsFirst<MpiComm>;

    /// The two MPI calls under [`MpiWorld`] (`MPI_Allgather`, `MPI_Allgatherv`) and the MPI
    /// environment. Created once per process by [`MpiWorld::init`]; dropping it finalizes MPI.
    pub struct MpiComm {
        // Field order matters: the communicator is dropped before the universe finalizes.
        world: SimpleCommunicator,
        _universe: Universe,
        counts: Vec<Count>,
        displs: Vec<Count>,
        recv_counts: Vec<Count>,
        recv_displs: Vec<Count>,
        reduce_send: Vec<f32>,
        calls: u64,
    }

    impl std::fmt::Debug for MpiComm {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("MpiComm")
                .field("rank", &self.world.rank())
                .field("size", &self.world.size())
                .field("calls", &self.calls)
                .finish()
        }
    }

    /// Every length and offset was checked against the ranks' agreed limit, so this fails
    /// only for a limit set above MPI's, and then on every rank alike (the same lengths).
    fn count(v: u64) -> Result<Count> {
        Count::try_from(v).map_err(|_| {
            Error::Transport(format!("{v} exceeds MPI's count limit of {}", Count::MAX))
        })
    }

    impl GatherPrimitives for MpiComm {
        fn rank(&self) -> usize {
            self.world.rank() as usize
        }

        fn size(&self) -> usize {
            self.world.size() as usize
        }

        fn all_gather_words(&mut self, mine: &[u64], out: &mut [u64]) -> Result<()> {
            self.world.all_gather_into(mine, out);
            self.calls += 1;
            Ok(())
        }

        fn all_gather_known(&mut self, mine: &[u8], lens: &[u64], out: &mut [u8]) -> Result<()> {
            fill_counts(lens.iter().copied(), &mut self.counts, &mut self.displs)?;
            {
                let mut part = PartitionMut::new(out, &self.counts[..], &self.displs[..]);
                self.world.all_gather_varcount_into(mine, &mut part);
            }
            self.calls += 1;
            Ok(())
        }

        fn calls(&self) -> u64 {
            self.calls
        }

        fn all_to_all_known(&mut self, parts: AllToAll<'_>, out: &mut [u8]) -> Result<()> {
            let send = parts.send_lens.iter().map(|&x| x as u64);
            fill_counts(send, &mut self.counts, &mut self.displs)?;
            fill_counts(
                parts.recv_lens.iter().map(|&x| x as u64),
                &mut self.recv_counts,
                &mut self.recv_displs,
            )?;
            {
                let part = Partition::new(parts.send, &self.counts[..], &self.displs[..]);
                let mut recv = PartitionMut::new(out, &self.recv_counts[..], &self.recv_displs[..]);
                self.world.all_to_all_varcount_into(&part, &mut recv);
            }
            self.calls += 1;
            Ok(())
        }

        fn all_reduce_sum_f32(&mut self, buf: &mut [f32]) -> Result<()> {
            count(buf.len() as u64)?;
            self.reduce_send.clear();
            self.reduce_send.extend_from_slice(buf);
            self.world
                .all_reduce_into(&self.reduce_send[..], buf, SystemOperation::sum());
            self.calls += 1;
            Ok(())
        }
    }

    /// MPI counts and displacements of parts of lengths `lens`, in order.
    fn fill_counts(
        lens: impl IntoIterator<Item = u64>,
        counts: &mut Vec<Count>,
        displs: &mut Vec<Count>,
    ) -> Result<()> {
        counts.clear();
        displs.clear();
        let mut offset = 0u64;
        for l in lens {
            counts.push(count(l)?);
            displs.push(count(offset)?);
            offset += l;
        }
        Ok(())
    }

    impl LengthsFirst<MpiComm> {
        /// Initializes MPI (single-threaded use) and takes the world communicator, with
        /// MPI's message limit ([`MPI_COUNT_LIMIT`]).
        ///
        /// # Errors
        /// [`Error::Transport`] when MPI was already initialized in this process.
        pub fn init() -> Result<Self> {
            let universe = mpi::initialize().ok_or_else(|| {
                Error::Transport("MPI is already initialized in this process".into())
            })?;
            let comm = MpiComm {
                world: universe.world(),
                _universe: universe,
                counts: Vec::new(),
                displs: Vec::new(),
                recv_counts: Vec::new(),
                recv_displs: Vec::new(),
                reduce_send: Vec::new(),
                calls: 0,
            };
            Ok(Self::new(comm, MPI_COUNT_LIMIT))
        }

        /// Stops every rank of the job at once (`MPI_Abort`) with exit code `code`: for an
        /// error that only this rank can see, so that no other rank waits forever.
        pub fn abort(&self, code: i32) -> ! {
            self.inner().world.abort(code)
        }

        /// Blocks until every rank has called it.
        pub fn barrier(&mut self) {
            let c = self.inner_mut();
            c.calls += 1;
            c.world.barrier();
        }

        /// A barrier that gives up after `timeout`: true when every rank arrived in time.
        /// Use it before exiting after an error that every rank saw (so that all of them
        /// report it before `mpirun` stops the job); an error that only some ranks saw ends
        /// in the timeout instead of a hang. An unfinished barrier is left pending, so call
        /// this only right before the process exits.
        pub fn barrier_with_timeout(&mut self, timeout: std::time::Duration) -> bool {
            let c = self.inner_mut();
            c.calls += 1;
            let t0 = std::time::Instant::now();
            let mut req = c.world.immediate_barrier();
            loop {
                match req.test() {
                    Ok(_) => return true,
                    Err(pending) => req = pending,
                }
                if t0.elapsed() >= timeout {
                    // Dropping a pending request panics in rsmpi; the process is about to
                    // exit, so the request is deliberately leaked.
                    std::mem::forget(req);
                    return false;
                }
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
    }
}
