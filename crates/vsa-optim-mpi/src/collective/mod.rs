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

use crate::codec::{bf16_add, bf16_to_f32, f32_to_bf16};
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
        let all = gather_equal_parts(self, &mine, "an all-reduce")?;
        sum_in_rank_order(&all.bytes, buf);
        Ok(())
    }

    /// Sums `buf` over all ranks in place as `bf16` (every rank passes the same length, and
    /// every value is a `bf16` widened to `f32`, as [`Bf16Codec`](crate::Bf16Codec) makes
    /// them): the `bf16` all-reduce mode. Every pair is combined by
    /// [`bf16_add`](crate::bf16_add) (an `f32` addition rounded to `bf16`), so `N` ranks
    /// round `N − 1` times. The default implementation all-gathers the `bf16` values and
    /// adds them in rank order, `bf16(bf16(b₀ + b₁) + b₂) …`, bit-deterministic; `MpiWorld`
    /// calls `MPI_Allreduce` with a user-defined commutative operation, whose pairing is
    /// MPI's choice (reproducible only for a fixed rank count and MPI build).
    ///
    /// # Errors
    /// [`Error::MalformedGather`] when a rank sent another length; transport errors.
    fn all_reduce_sum_bf16(&mut self, buf: &mut [f32]) -> Result<()> {
        let mine: Vec<u8> = buf
            .iter()
            .flat_map(|&x| f32_to_bf16(x).to_le_bytes())
            .collect();
        let all = gather_equal_parts(self, &mine, "a bf16 all-reduce")?;
        bf16_sum_in_rank_order(&all.bytes, buf);
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

/// All-gathers `mine` and checks that every rank sent a part of the same length (the default
/// all-reduces); `what` names the operation in the error.
fn gather_equal_parts<C: Collective + ?Sized>(
    c: &mut C,
    mine: &[u8],
    what: &str,
) -> Result<Gathered> {
    let mut all = Gathered::default();
    c.all_gather_bytes(mine, &mut all)?;
    let lens = &all.lens;
    if lens.len() != c.size() || lens.iter().any(|&l| l != mine.len()) {
        return Err(Error::MalformedGather {
            reason: format!(
                "{what} of {} bytes per rank received parts of {lens:?} bytes",
                mine.len()
            ),
        });
    }
    Ok(all)
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

/// `buf = bf16(bf16(p₀ + p₁) + p₂) …` ([`bf16_add`]) over the little-endian `bf16` parts
/// of `all`, each `buf.len()` values long, in rank order.
fn bf16_sum_in_rank_order(all: &[u8], buf: &mut [f32]) {
    let part = 2 * buf.len();
    if part == 0 {
        return;
    }
    let mut acc = vec![0u16; buf.len()];
    for (r, p) in all.chunks_exact(part).enumerate() {
        for (a, c) in acc.iter_mut().zip(p.chunks_exact(2)) {
            let x = u16::from_le_bytes([c[0], c[1]]);
            *a = if r == 0 { x } else { bf16_add(*a, x) };
        }
    }
    for (b, &a) in buf.iter_mut().zip(&acc) {
        *b = bf16_to_f32(a);
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

    fn all_reduce_sum_bf16(&mut self, buf: &mut [f32]) -> Result<()> {
        (**self).all_reduce_sum_bf16(buf)
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

    fn all_reduce_sum_bf16(&mut self, buf: &mut [f32]) -> Result<()> {
        // One rank: the sum is the value itself, rounded to bf16 as the wire would.
        for x in buf.iter_mut() {
            *x = bf16_to_f32(f32_to_bf16(*x));
        }
        self.calls += 1;
        Ok(())
    }
}

mod lengths_first;
pub use lengths_first::{GatherPrimitives, LengthsFirst, MPI_COUNT_LIMIT, check_message_lengths};

#[cfg(feature = "mpi")]
pub use self::mpi_world::{MpiComm, MpiWorld};

#[cfg(feature = "mpi")]
mod mpi_world;
