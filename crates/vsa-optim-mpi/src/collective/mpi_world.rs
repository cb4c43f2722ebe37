//! The rsmpi transport ([`MpiWorld`], [`MpiComm`]), behind the `mpi` feature.

use mpi::Count;
use mpi::collective::{SystemOperation, UserOperation};
use mpi::datatype::{DynBuffer, DynBufferMut, Partition, PartitionMut};
use mpi::environment::Universe;
use mpi::topology::SimpleCommunicator;
use mpi::traits::{Communicator, CommunicatorCollectives};

use super::{AllToAll, GatherPrimitives, LengthsFirst, MPI_COUNT_LIMIT};
use crate::codec::{bf16_add, bf16_to_f32, f32_to_bf16};
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
    bf16_send: Vec<u16>,
    bf16_recv: Vec<u16>,
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
    Count::try_from(v)
        .map_err(|_| Error::Transport(format!("{v} exceeds MPI's count limit of {}", Count::MAX)))
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

    /// `MPI_Allreduce` of the `bf16` bits (`MPI_UNSIGNED_SHORT`) with a user-defined
    /// commutative operation that [`bf16_add`]s each pair (rsmpi's `user-operations`
    /// feature: the closure is called through a libffi trampoline). MPI has no `bf16`
    /// type and its built-in sum would add the bits as integers.
    fn all_reduce_sum_bf16(&mut self, buf: &mut [f32]) -> Result<()> {
        count(buf.len() as u64)?;
        self.bf16_send.clear();
        self.bf16_send.extend(buf.iter().map(|&x| f32_to_bf16(x)));
        self.bf16_recv.clear();
        self.bf16_recv.resize(buf.len(), 0);
        let op = UserOperation::commutative(add_bf16_pairs);
        self.world
            .all_reduce_into(&self.bf16_send[..], &mut self.bf16_recv[..], &op);
        for (b, &h) in buf.iter_mut().zip(&self.bf16_recv) {
            *b = bf16_to_f32(h);
        }
        self.calls += 1;
        Ok(())
    }
}

/// The user-defined operation of the `bf16` all-reduce: `inout[i] = bf16_add(in[i],
/// inout[i])`. MPI calls it only with the buffers' type, `u16` (`MPI_UNSIGNED_SHORT`); a
/// panic inside it would abort the job (rsmpi), so another type leaves `inout` as it is,
/// which cannot happen with the one call site above.
fn add_bf16_pairs(input: DynBuffer<'_>, inout: DynBufferMut<'_>) {
    if let (Some(x), Some(y)) = (input.downcast::<u16>(), inout.downcast::<u16>()) {
        for (y, &x) in y.iter_mut().zip(x) {
            *y = bf16_add(x, *y);
        }
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
        let universe = mpi::initialize()
            .ok_or_else(|| Error::Transport("MPI is already initialized in this process".into()))?;
        let comm = MpiComm {
            world: universe.world(),
            _universe: universe,
            counts: Vec::new(),
            displs: Vec::new(),
            recv_counts: Vec::new(),
            recv_displs: Vec::new(),
            reduce_send: Vec::new(),
            bf16_send: Vec::new(),
            bf16_recv: Vec::new(),
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
