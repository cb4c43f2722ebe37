//! The one collective the exchange needs: an all-gather of byte strings, in rank order.
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
    /// Gathers every rank's `mine` on every rank: `out` becomes the concatenation in rank
    /// order and `lens[r]` the length of rank `r`'s part. Both buffers are reused (no
    /// allocation once they are large enough). Every rank must call it, in the same order
    /// relative to its other collective calls.
    ///
    /// An error must reach every rank alike (or stop the job): a rank that returns early
    /// on its own leaves the others waiting in the collective. [`LengthsFirst`] gives this for
    /// any transport built from [`GatherPrimitives`].
    ///
    /// # Errors
    /// [`Error::Transport`] when the transport fails; [`Error::MessageTooLarge`] (on every
    /// rank) when a message is too large for it.
    fn all_gather_bytes(
        &mut self,
        mine: &[u8],
        out: &mut Vec<u8>,
        lens: &mut Vec<usize>,
    ) -> Result<()>;
    /// The number of collective operations issued so far (each [`all_gather_bytes`] counts
    /// the transport calls it makes), for proving that a step did not communicate.
    ///
    /// [`all_gather_bytes`]: Collective::all_gather_bytes
    fn collective_calls(&self) -> u64;
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

    fn all_gather_bytes(
        &mut self,
        mine: &[u8],
        out: &mut Vec<u8>,
        lens: &mut Vec<usize>,
    ) -> Result<()> {
        (**self).all_gather_bytes(mine, out, lens)
    }

    fn collective_calls(&self) -> u64 {
        (**self).collective_calls()
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

    fn all_gather_bytes(
        &mut self,
        mine: &[u8],
        out: &mut Vec<u8>,
        lens: &mut Vec<usize>,
    ) -> Result<()> {
        out.clear();
        out.extend_from_slice(mine);
        lens.clear();
        lens.push(mine.len());
        self.calls += 1;
        Ok(())
    }

    fn collective_calls(&self) -> u64 {
        self.calls
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

    fn all_gather_bytes(
        &mut self,
        mine: &[u8],
        out: &mut Vec<u8>,
        lens: &mut Vec<usize>,
    ) -> Result<()> {
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
        out.clear();
        out.resize(total, 0);
        self.inner.all_gather_known(mine, &self.lens, out)?;
        lens.clear();
        lens.extend(self.lens.iter().map(|&l| l as usize));
        Ok(())
    }

    fn collective_calls(&self) -> u64 {
        self.inner.calls()
    }
}

#[cfg(feature = "mpi")]
pub use self::mpi_world::{MpiComm, MpiWorld};

#[cfg(feature = "mpi")]
mod mpi_world {
    use mpi::Count;
    use mpi::datatype::PartitionMut;
    use mpi::environment::Universe;
    use mpi::topology::SimpleCommunicator;
    use mpi::traits::{Communicator, CommunicatorCollectives};

    use super::{GatherPrimitives, LengthsFirst, MPI_COUNT_LIMIT};
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
            self.counts.clear();
            self.displs.clear();
            let mut offset = 0u64;
            for &l in lens {
                self.counts.push(count(l)?);
                self.displs.push(count(offset)?);
                offset += l;
            }
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
