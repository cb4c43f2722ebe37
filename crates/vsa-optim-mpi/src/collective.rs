//! The one collective the exchange needs: an all-gather of byte strings, in rank order.
//!
//! [`MpiWorld`] (feature `mpi`) implements it with two MPI calls: `MPI_Allgather` of the
//! lengths, then `MPI_Allgatherv` of the bytes. [`SingleProcess`] is the world of one rank,
//! for single-machine runs and for tests of everything above the transport.

use crate::error::Result;

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
    /// # Errors
    /// [`Error::Transport`](crate::Error::Transport) when the transport fails or a message is
    /// too large for it.
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

#[cfg(feature = "mpi")]
pub use self::mpi_world::MpiWorld;

#[cfg(feature = "mpi")]
mod mpi_world {
    use mpi::Count;
    use mpi::datatype::PartitionMut;
    use mpi::environment::Universe;
    use mpi::topology::SimpleCommunicator;
    use mpi::traits::{Communicator, CommunicatorCollectives};

    use super::Collective;
    use crate::error::{Error, Result};

    /// `MPI_COMM_WORLD` through rsmpi. Created once per process; dropping it finalizes MPI.
    ///
    /// MPI's default error handler is kept (errors are fatal), so a rank that dies makes
    /// `mpirun` stop the whole job instead of leaving the others waiting.
    pub struct MpiWorld {
        // Field order matters: the communicator is dropped before the universe finalizes.
        world: SimpleCommunicator,
        _universe: Universe,
        counts: Vec<Count>,
        displs: Vec<Count>,
        calls: u64,
    }

    impl std::fmt::Debug for MpiWorld {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("MpiWorld")
                .field("rank", &self.world.rank())
                .field("size", &self.world.size())
                .field("calls", &self.calls)
                .finish()
        }
    }

    impl MpiWorld {
        /// Initializes MPI (single-threaded use) and takes the world communicator.
        ///
        /// # Errors
        /// [`Error::Transport`] when MPI was already initialized in this process.
        pub fn init() -> Result<Self> {
            let universe = mpi::initialize().ok_or_else(|| {
                Error::Transport("MPI is already initialized in this process".into())
            })?;
            let world = universe.world();
            Ok(Self {
                world,
                _universe: universe,
                counts: Vec::new(),
                displs: Vec::new(),
                calls: 0,
            })
        }

        /// Stops every rank of the job at once (`MPI_Abort`) with exit code `code`: for an
        /// error that only this rank can see, so that no other rank waits forever.
        pub fn abort(&self, code: i32) -> ! {
            self.world.abort(code)
        }

        /// Blocks until every rank has called it.
        pub fn barrier(&mut self) {
            self.calls += 1;
            self.world.barrier();
        }

        /// A barrier that gives up after `timeout`: true when every rank arrived in time.
        /// Use it before exiting after an error that every rank saw (so that all of them
        /// report it before `mpirun` stops the job); an error that only some ranks saw ends
        /// in the timeout instead of a hang. An unfinished barrier is left pending, so call
        /// this only right before the process exits.
        pub fn barrier_with_timeout(&mut self, timeout: std::time::Duration) -> bool {
            self.calls += 1;
            let t0 = std::time::Instant::now();
            let mut req = self.world.immediate_barrier();
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

    impl Collective for MpiWorld {
        fn rank(&self) -> usize {
            self.world.rank() as usize
        }

        fn size(&self) -> usize {
            self.world.size() as usize
        }

        fn all_gather_bytes(
            &mut self,
            mine: &[u8],
            out: &mut Vec<u8>,
            lens: &mut Vec<usize>,
        ) -> Result<()> {
            let n = self.size();
            let my_len = Count::try_from(mine.len()).map_err(|_| {
                Error::Transport(format!(
                    "a message of {} bytes exceeds MPI's count limit of {} bytes",
                    mine.len(),
                    Count::MAX
                ))
            })?;
            self.counts.clear();
            self.counts.resize(n, 0);
            self.world.all_gather_into(&my_len, &mut self.counts[..]);
            self.displs.clear();
            let mut total: i64 = 0;
            for &c in &self.counts {
                self.displs.push(Count::try_from(total).map_err(|_| {
                    Error::Transport("gathered messages exceed MPI's count limit".into())
                })?);
                total += i64::from(c);
            }
            out.clear();
            out.resize(total as usize, 0);
            {
                let mut part = PartitionMut::new(&mut out[..], &self.counts[..], &self.displs[..]);
                self.world.all_gather_varcount_into(mine, &mut part);
            }
            lens.clear();
            lens.extend(self.counts.iter().map(|&c| c as usize));
            self.calls += 2;
            Ok(())
        }

        fn collective_calls(&self) -> u64 {
            self.calls
        }
    }
}
