//! Integration tests of the transport layer under `GradientExchange`: the lengths-first
//! all-gather ([`LengthsFirst`]), whose oversize error every rank returns together (a scripted
//! rank, and a real exchange between threads that would hang if one rank failed alone), and
//! the checks on what a user-implemented [`Collective`] returns (a lying collective).

use std::collections::VecDeque;
use std::sync::mpsc;
use std::sync::{Arc, Barrier, Mutex};
use std::time::Duration;

use vsa_optim_mpi::{
    Collective, Error, ExchangeConfig, F32Codec, GatherPrimitives, Gathered, GradientExchange,
    HEADER_BYTES, LengthsFirst, MPI_COUNT_LIMIT, check_message_lengths,
};

fn params() -> Vec<(String, Vec<usize>)> {
    vec![("w".to_string(), vec![10, 10]), ("b".to_string(), vec![10])]
}

const LENS: [usize; 2] = [100, 10];
/// Header plus 4 bytes per element: the f32 frame of [`params`].
const FRAME: u64 = (HEADER_BYTES + 4 * 110) as u64;

fn grads(r: usize) -> Vec<Vec<f32>> {
    LENS.iter()
        .enumerate()
        .map(|(k, &n)| {
            (0..n)
                .map(|i| (i as f32 - 7.0) * 0.125 + (r * 3 + k) as f32)
                .collect()
        })
        .collect()
}

fn filled(v: f32) -> Vec<Vec<f32>> {
    LENS.iter().map(|&n| vec![v; n]).collect()
}

fn exchange<C: Collective>(c: C) -> vsa_optim_mpi::Result<GradientExchange<C>> {
    let codec = Box::new(F32Codec::new(&LENS));
    let config = ExchangeConfig {
        seed: 5,
        user_fingerprint: 0,
    };
    GradientExchange::new(c, codec, &params(), config)
}

// ---------------------------------------------------------------------------------------------
// check_message_lengths

#[test]
fn message_lengths_are_checked_per_message_and_per_offset() {
    // At the limit is fine, for a message and for an offset.
    check_message_lengths(&[10, 0, 10], 10).unwrap();
    check_message_lengths(&[], 0).unwrap();
    // One byte over: the first rank that is over is named, with its offset.
    let over = |lens: &[u64], limit| match check_message_lengths(lens, limit) {
        Err(Error::MessageTooLarge {
            rank,
            bytes,
            offset,
            limit: l,
        }) => {
            assert_eq!(l, limit);
            (rank, bytes, offset)
        }
        other => panic!("{lens:?}: {other:?}"),
    };
    assert_eq!(over(&[11, 1], 10), (0, 11, 0));
    assert_eq!(over(&[5, 6, 1], 10), (2, 1, 11));
    assert_eq!(
        over(&[1, 3_000_000_000, 1], MPI_COUNT_LIMIT),
        (1, 3_000_000_000, 1)
    );
    assert_eq!(MPI_COUNT_LIMIT, 2_147_483_647);
}

// ---------------------------------------------------------------------------------------------
// A scripted rank

/// One all-gather as the other ranks play it.
enum Round {
    /// Every other rank sends what this rank sends.
    Echo,
    /// The other ranks' parts, in rank order without this rank's.
    Parts(Vec<Vec<u8>>),
    /// Only the other ranks' `[length, limit]` words: their payload must never be asked for.
    Words(Vec<[u64; 2]>),
}

/// This process is rank `rank` of `size`; the other ranks follow `script`.
struct ScriptedPrims {
    rank: usize,
    size: usize,
    script: VecDeque<Round>,
    current: Option<Round>,
    word_calls: u64,
    payload_calls: u64,
}

impl ScriptedPrims {
    fn new(rank: usize, size: usize, script: Vec<Round>) -> Self {
        Self {
            rank,
            size,
            script: script.into(),
            current: None,
            word_calls: 0,
            payload_calls: 0,
        }
    }
}

impl GatherPrimitives for ScriptedPrims {
    rank_and_size_fields!();

    fn all_gather_words(&mut self, mine: &[u64], out: &mut [u64]) -> vsa_optim_mpi::Result<()> {
        self.word_calls += 1;
        let round = self
            .script
            .pop_front()
            .ok_or_else(|| Error::Transport("script exhausted".into()))?;
        let mut others: Vec<[u64; 2]> = match &round {
            Round::Echo => vec![[mine[0], mine[1]]; self.size - 1],
            Round::Parts(p) => p
                .iter()
                .map(|x| [x.len() as u64, MPI_COUNT_LIMIT])
                .collect(),
            Round::Words(w) => w.clone(),
        };
        others.insert(self.rank, [mine[0], mine[1]]);
        assert_eq!(out.len(), 2 * self.size);
        for (dst, w) in out.chunks_exact_mut(2).zip(others) {
            dst.copy_from_slice(&w);
        }
        self.current = Some(round);
        Ok(())
    }

    fn all_gather_known(
        &mut self,
        mine: &[u8],
        lens: &[u64],
        out: &mut [u8],
    ) -> vsa_optim_mpi::Result<()> {
        self.payload_calls += 1;
        let mut parts = match self.current.take() {
            Some(Round::Echo) => vec![mine.to_vec(); self.size - 1],
            Some(Round::Parts(p)) => p,
            _ => return Err(Error::Transport("no payload in this round".into())),
        };
        parts.insert(self.rank, mine.to_vec());
        let joined: Vec<u8> = parts.concat();
        let expected: Vec<u64> = parts.iter().map(|p| p.len() as u64).collect();
        assert_eq!(lens, expected, "lengths handed to the payload call");
        out.copy_from_slice(&joined);
        Ok(())
    }

    fn calls(&self) -> u64 {
        self.word_calls + self.payload_calls
    }
}

#[test]
fn an_oversize_message_of_another_rank_fails_here_before_any_payload_moves() {
    // Rank 2 of 3 would send 3 GB (an f32 gradient of 750M parameters): over MPI's 2³¹ − 1
    // byte count. This rank (1) learns it from the gathered lengths and fails without
    // waiting for a payload; rank 2 sees the same lengths and fails the same way.
    let script = vec![
        Round::Echo,
        Round::Words(vec![
            [FRAME, MPI_COUNT_LIMIT],
            [3_000_000_000, MPI_COUNT_LIMIT],
        ]),
    ];
    let prims = ScriptedPrims::new(1, 3, script);
    let mut ex = exchange(LengthsFirst::new(prims, MPI_COUNT_LIMIT)).unwrap();
    assert_eq!(ex.collective_calls(), 2, "handshake: lengths, then payload");
    let mut out = filled(9.0);
    let stats = ex.stats();
    let err = ex.mean(0, &grads(1), 0.5, &mut out).unwrap_err();
    match err {
        Error::MessageTooLarge {
            rank,
            bytes,
            offset,
            limit,
        } => assert_eq!(
            (rank, bytes, offset, limit),
            (2, 3_000_000_000, 2 * FRAME, MPI_COUNT_LIMIT)
        ),
        other => panic!("{other:?}"),
    }
    let prims = ex.collective_mut().inner();
    assert_eq!(
        (prims.word_calls, prims.payload_calls),
        (2, 1),
        "no payload call"
    );
    assert_eq!(out, filled(9.0), "output untouched");
    let after = ex.stats();
    assert_eq!(after.failed, stats.failed + 1);
    assert_eq!(
        (after.exchanges, after.bytes_sent, after.bytes_received),
        (stats.exchanges, stats.bytes_sent, stats.bytes_received)
    );
}

#[test]
fn this_ranks_own_oversize_message_fails_only_after_the_lengths_are_shared() {
    // This rank's limit is below its own frame. It still takes part in the lengths round
    // (so the other ranks learn of it), and every rank applies the smallest limit stated.
    let limit = FRAME - 1;
    let script = vec![Round::Echo, Round::Words(vec![[FRAME, MPI_COUNT_LIMIT]; 2])];
    let prims = ScriptedPrims::new(0, 3, script);
    let mut ex = exchange(LengthsFirst::new(prims, limit)).unwrap();
    let mut out = filled(1.0);
    let err = ex.mean(0, &grads(0), 0.5, &mut out).unwrap_err();
    assert!(
        matches!(err, Error::MessageTooLarge { rank: 0, bytes: FRAME, offset: 0, limit: l } if l == limit),
        "{err:?}"
    );
    let prims = ex.collective_mut().inner();
    assert_eq!((prims.word_calls, prims.payload_calls), (2, 1));
    assert_eq!(out, filled(1.0));
    // Another rank's smaller limit binds this rank too.
    let script = vec![
        Round::Echo,
        Round::Words(vec![[FRAME, 300], [FRAME, MPI_COUNT_LIMIT]]),
    ];
    let mut ex = exchange(LengthsFirst::new(
        ScriptedPrims::new(2, 3, script),
        MPI_COUNT_LIMIT,
    ))
    .unwrap();
    let err = ex.mean(0, &grads(2), 0.5, &mut out).unwrap_err();
    assert!(
        matches!(
            err,
            Error::MessageTooLarge {
                rank: 0,
                limit: 300,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn lengths_first_gathers_parts_in_rank_order() {
    let script = vec![Round::Parts(vec![b"ab".to_vec(), vec![], b"xyz".to_vec()])];
    let mut c = LengthsFirst::new(ScriptedPrims::new(2, 4, script), 10);
    let mut out = Gathered {
        bytes: vec![7u8; 3],
        lens: vec![9usize],
    };
    c.all_gather_bytes(b"me!!", &mut out).unwrap();
    assert_eq!(out.bytes, b"abme!!xyz");
    assert_eq!(out.lens, [2, 0, 4, 3]);
    assert_eq!(c.collective_calls(), 2);
    assert_eq!((c.rank(), c.size(), c.limit()), (2, 4, 10));
}

// ---------------------------------------------------------------------------------------------
// A real all-gather between threads, each rank with its own limit

/// Write your slot, wait, read all slots, wait. Also the transport of the thread tests in
/// `exchange.rs` (wrapped in [`LengthsFirst`]).
pub(crate) struct ThreadPrims {
    rank: usize,
    size: usize,
    words: Arc<Mutex<Vec<Vec<u64>>>>,
    bytes: Arc<Mutex<Vec<Vec<u8>>>>,
    barrier: Arc<Barrier>,
    calls: u64,
}

impl ThreadPrims {
    pub(crate) fn world(size: usize) -> Vec<Self> {
        let words = Arc::new(Mutex::new(vec![Vec::new(); size]));
        let bytes = Arc::new(Mutex::new(vec![Vec::new(); size]));
        let barrier = Arc::new(Barrier::new(size));
        (0..size)
            .map(|rank| Self {
                rank,
                size,
                words: Arc::clone(&words),
                bytes: Arc::clone(&bytes),
                barrier: Arc::clone(&barrier),
                calls: 0,
            })
            .collect()
    }
}

/// Writes `mine` into this rank's slot, waits for every rank, reads all slots, waits again.
fn gather_slots<T: Clone>(
    slots: &Mutex<Vec<Vec<T>>>,
    barrier: &Barrier,
    rank: usize,
    mine: &[T],
    out: &mut [T],
) {
    slots.lock().unwrap()[rank] = mine.to_vec();
    barrier.wait();
    out.clone_from_slice(&slots.lock().unwrap().concat());
    barrier.wait();
}

impl GatherPrimitives for ThreadPrims {
    rank_and_size_fields!();

    fn all_gather_words(&mut self, mine: &[u64], out: &mut [u64]) -> vsa_optim_mpi::Result<()> {
        self.calls += 1;
        gather_slots(&self.words, &self.barrier, self.rank, mine, out);
        Ok(())
    }

    fn all_gather_known(
        &mut self,
        mine: &[u8],
        _lens: &[u64],
        out: &mut [u8],
    ) -> vsa_optim_mpi::Result<()> {
        self.calls += 1;
        gather_slots(&self.bytes, &self.barrier, self.rank, mine, out);
        Ok(())
    }

    fn calls(&self) -> u64 {
        self.calls
    }
}

/// What one rank saw: the oversize error's fields, then the gathered ranks, then the bits
/// of a successful mean after the limit was raised.
type RankLog = ((usize, u64, u64, u64), Vec<u64>, Vec<Vec<u32>>);

#[test]
fn an_oversize_message_fails_on_every_rank_together_and_the_ranks_stay_in_lockstep() {
    // Rank 2's transport takes at most 200 bytes, below every rank's 464-byte frame. If any
    // rank failed on its own, the others would wait forever in the barrier: the test then
    // fails on the timeout below instead of passing.
    const N: usize = 3;
    let (tx, rx) = mpsc::channel();
    for prims in ThreadPrims::world(N) {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let r = prims.rank;
            let limit = if r == 2 { 200 } else { MPI_COUNT_LIMIT };
            let mut ex = exchange(LengthsFirst::new(prims, limit)).unwrap();
            let mut out = filled(3.0);
            let err = match ex.mean(0, &grads(r), r as f32, &mut out) {
                Err(Error::MessageTooLarge {
                    rank,
                    bytes,
                    offset,
                    limit,
                }) => (rank, bytes, offset, limit),
                other => panic!("rank {r}: {other:?}"),
            };
            assert_eq!(out, filled(3.0), "rank {r}: output untouched");
            // Still in lockstep: a small all-gather works.
            let gathered = ex.gather_u64(r as u64 * 10).unwrap();
            // With the limit raised, the same step goes through.
            ex.collective_mut().set_limit(MPI_COUNT_LIMIT);
            ex.mean(0, &grads(r), r as f32, &mut out).unwrap();
            let bits: Vec<Vec<u32>> = out
                .iter()
                .map(|v| v.iter().map(|x| x.to_bits()).collect())
                .collect();
            let _ = tx.send((r, (err, gathered, bits)));
        });
    }
    drop(tx);
    let mut logs: Vec<Option<RankLog>> = vec![None; N];
    for _ in 0..N {
        let (r, log) = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("a rank hung or panicked");
        logs[r] = Some(log);
    }
    let logs: Vec<RankLog> = logs.into_iter().map(Option::unwrap).collect();
    for log in &logs {
        assert_eq!(log.0, (0, FRAME, 0, 200), "the same error on every rank");
        assert_eq!(log.1, [0, 10, 20]);
        assert_eq!(log.2, logs[0].2, "the same bits on every rank");
    }
    // The mean of grads(0..3) in rank order.
    let expected = (grads(0)[0][5] + grads(1)[0][5] + grads(2)[0][5]) / 3.0;
    assert_eq!(logs[0].2[0][5], expected.to_bits());
}

// ---------------------------------------------------------------------------------------------
// A lying collective

type Lie = fn(&mut Vec<u8>, &mut Vec<usize>);

/// A world of two ranks in which the other rank echoes this rank's bytes; all-gather number
/// `lie_at` (0 is the handshake) is then altered by `lie`.
struct Liar {
    rank: usize,
    size: usize,
    lie: Lie,
    lie_at: u64,
    calls: u64,
}

impl Liar {
    /// Rank `rank` of 2, lying at all-gather number `lie_at`.
    fn new(rank: usize, lie: Lie, lie_at: u64) -> Self {
        Self {
            rank,
            size: 2,
            lie,
            lie_at,
            calls: 0,
        }
    }
}

impl Collective for Liar {
    rank_and_size_fields!();

    fn all_gather_bytes(&mut self, mine: &[u8], out: &mut Gathered) -> vsa_optim_mpi::Result<()> {
        out.clear();
        out.push(mine);
        out.push(mine);
        if self.calls == self.lie_at {
            (self.lie)(&mut out.bytes, &mut out.lens);
        }
        self.calls += 1;
        Ok(())
    }

    fn collective_calls(&self) -> u64 {
        self.calls
    }
}

const LIES: [(&str, Lie); 8] = [
    ("one part missing", |_, l| {
        l.pop();
    }),
    ("one part too many", |_, l| l.push(0)),
    ("a length too long", |_, l| l[1] += 1),
    ("a length too short", |_, l| l[1] -= 1),
    ("bytes beyond the parts", |o, _| o.push(0)),
    ("lengths that overflow", |_, l| l[1] = usize::MAX),
    ("own part shifted", |_, l| {
        l[0] -= 1;
        l[1] += 1;
    }),
    ("own part altered", |o, l| {
        // Both parts, so that rank 0's and rank 1's own part differ from what they sent.
        o[5] ^= 1;
        o[l[0] + 5] ^= 1;
    }),
];

fn malformed(what: &str, r: vsa_optim_mpi::Result<impl std::fmt::Debug>) {
    match r {
        Err(Error::MalformedGather { reason }) => assert!(!reason.is_empty()),
        other => panic!("{what}: {other:?}"),
    }
}

#[test]
fn a_lying_collective_gets_a_typed_error_never_a_panic() {
    for (what, lie) in LIES {
        for rank in [0, 1] {
            // At the handshake.
            let liar = Liar::new(rank, lie, 0);
            malformed(what, exchange(liar).map(|_| ()));

            // At a mean: the output, the codec state and the counters are unchanged, and
            // the next (honest) call works.
            let liar = Liar::new(rank, lie, 1);
            let mut ex = exchange(liar).unwrap();
            let mut out = filled(4.0);
            let (stats, state) = (ex.stats(), ex.codec_state());
            malformed(what, ex.mean(3, &grads(0), 0.25, &mut out));
            assert_eq!(out, filled(4.0), "{what}");
            assert_eq!(ex.codec_state(), state, "{what}");
            let after = ex.stats();
            assert_eq!(after.failed, stats.failed + 1, "{what}");
            assert_eq!(
                (after.exchanges, after.bytes_sent, after.bytes_received),
                (stats.exchanges, stats.bytes_sent, stats.bytes_received),
                "{what}"
            );
            assert_eq!(ex.mean(3, &grads(0), 0.25, &mut out).unwrap(), 0.25);
            assert_eq!(
                out,
                grads(0),
                "{what}: two equal parts average to the input"
            );

            // At a gather of u64s.
            let liar = Liar::new(rank, lie, 1);
            let mut ex = exchange(liar).unwrap();
            malformed(what, ex.gather_u64(77));
            assert_eq!(ex.gather_u64(77).unwrap(), [77, 77]);
        }
    }
}

#[test]
fn a_collective_that_misstates_its_rank_is_refused() {
    // A world of 2 whose rank is 2 or usize::MAX: refused at the handshake.
    for rank in [2, usize::MAX] {
        let liar = Liar::new(rank, |_, _| {}, u64::MAX);
        malformed("rank out of range", exchange(liar).map(|_| ()));
    }
}
