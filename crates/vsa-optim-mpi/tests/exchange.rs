//! Integration tests of the handshake and of `GradientExchange`, over `SingleProcess`, over a
//! scripted multi-rank collective (this process plays one rank; the other ranks' frames are
//! built by hand from the documented frame layout), and over a collective of threads.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use proptest::prelude::*;
use vsa_optim_mpi::reduce::mean_in_rank_order;
use vsa_optim_mpi::{
    Collective, Context, DEFAULT_TERNARY_BLOCK, Error, ExchangeConfig, ExchangeMode, F32Codec,
    Gathered, GradientCodec, GradientExchange, HANDSHAKE_BYTES, HEADER_BYTES, Handshake,
    PROTOCOL_VERSION, SingleProcess, TernaryCodec, TernaryPacking, check_handshakes, layout_hash,
};

use crate::common::{Rng, bits, thread_world};

// ---------------------------------------------------------------------------------------------
// Helpers

fn params() -> Vec<(String, Vec<usize>)> {
    vec![
        ("layer.w".to_string(), vec![30, 25]),
        ("layer.b".to_string(), vec![25]),
        ("head".to_string(), vec![3]),
    ]
}

fn lens(params: &[(String, Vec<usize>)]) -> Vec<usize> {
    params.iter().map(|(_, s)| s.iter().product()).collect()
}

fn random_grads(lens: &[usize], seed: u64) -> Vec<Vec<f32>> {
    let mut rng = Rng(seed);
    lens.iter()
        .map(|&n| (0..n).map(|_| rng.sym() * 4.0).collect())
        .collect()
}

fn filled(lens: &[usize], v: f32) -> Vec<Vec<f32>> {
    lens.iter().map(|&n| vec![v; n]).collect()
}

fn f32_codec(p: &[(String, Vec<usize>)]) -> Box<dyn GradientCodec + Send> {
    Box::new(F32Codec::new(&lens(p)))
}

/// A one-rank f32 exchange over `params`, with [`config`]`(seed)`.
fn single_f32(params: &[(String, Vec<usize>)], seed: u64) -> GradientExchange<SingleProcess> {
    GradientExchange::new(
        SingleProcess::new(),
        f32_codec(params),
        params,
        config(seed),
    )
    .unwrap()
}

fn ternary_codec(p: &[(String, Vec<usize>)], seed: u64) -> Box<dyn GradientCodec + Send> {
    Box::new(
        TernaryCodec::new(&lens(p), seed, DEFAULT_TERNARY_BLOCK, TernaryPacking::Base3).unwrap(),
    )
}

fn config(seed: u64) -> ExchangeConfig {
    ExchangeConfig {
        seed,
        user_fingerprint: 0xfeed,
    }
}

/// A gradient frame built by hand from the documented layout: magic "VSAX", version u8,
/// status u8, 2 reserved bytes, step u64 LE, loss f32 bits LE, 4 reserved bytes, payload.
fn frame(status: u8, step: u64, loss: f32, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(b"VSAX");
    f.push(PROTOCOL_VERSION as u8);
    f.push(status);
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(&step.to_le_bytes());
    f.extend_from_slice(&loss.to_bits().to_le_bytes());
    f.extend_from_slice(&[0, 0, 0, 0]);
    assert_eq!(f.len(), HEADER_BYTES);
    f.extend_from_slice(payload);
    f
}

fn f32_payload(grads: &[Vec<f32>]) -> Vec<u8> {
    grads
        .iter()
        .flatten()
        .flat_map(|x| x.to_le_bytes())
        .collect()
}

/// The other ranks' parts of one all-gather, computed from this rank's bytes.
type Script = Box<dyn FnOnce(&[u8]) -> Vec<Vec<u8>> + Send>;

/// A world in which this process is rank `rank` of `size`: each all-gather pops a script that
/// returns the other ranks' parts (in rank order, without this rank's), and this rank's own
/// bytes are put in their place. Everything this rank sent is recorded.
struct Scripted {
    rank: usize,
    size: usize,
    script: VecDeque<Script>,
    sent: Vec<Vec<u8>>,
    calls: u64,
}

impl Scripted {
    /// Starts with a handshake round in which every other rank sends this rank's handshake.
    fn new(rank: usize, size: usize) -> Self {
        let mut s = Self {
            rank,
            size,
            script: VecDeque::new(),
            sent: Vec::new(),
            calls: 0,
        };
        s.push(move |mine| vec![mine.to_vec(); size - 1]);
        s
    }

    /// A world whose handshake round is `handshake` instead of the echo.
    fn with_handshake(
        rank: usize,
        size: usize,
        handshake: impl FnOnce(&[u8]) -> Vec<Vec<u8>> + Send + 'static,
    ) -> Self {
        let mut s = Self::new(rank, size);
        s.script.clear();
        s.push(handshake);
        s
    }

    fn push(&mut self, f: impl FnOnce(&[u8]) -> Vec<Vec<u8>> + Send + 'static) {
        self.script.push_back(Box::new(f));
    }

    /// Queues a gradient round whose other ranks send `frames` (indexed by rank; this
    /// rank's entry is ignored).
    fn push_frames(&mut self, frames: Vec<Vec<u8>>) {
        let me = self.rank;
        self.push(move |_| {
            frames
                .into_iter()
                .enumerate()
                .filter(|&(r, _)| r != me)
                .map(|(_, f)| f)
                .collect()
        });
    }
}

impl Collective for Scripted {
    rank_and_size_fields!();

    fn all_gather_bytes(&mut self, mine: &[u8], out: &mut Gathered) -> vsa_optim_mpi::Result<()> {
        let f = self
            .script
            .pop_front()
            .ok_or_else(|| Error::Transport("script exhausted".into()))?;
        let mut others = f(mine);
        assert_eq!(
            others.len(),
            self.size - 1,
            "script must give size − 1 parts"
        );
        others.insert(self.rank, mine.to_vec());
        out.clear();
        for p in &others {
            out.push(p);
        }
        self.sent.push(mine.to_vec());
        self.calls += 1;
        Ok(())
    }

    fn collective_calls(&self) -> u64 {
        self.calls
    }
}

/// Counts calls and can be told to fail its next encode; otherwise an F32 codec.
#[derive(Default)]
struct Counters {
    encode: AtomicU64,
    decode: AtomicU64,
    commit: AtomicU64,
    rollback: AtomicU64,
    fail_next_encode: AtomicU64,
}

struct Spy {
    inner: F32Codec,
    c: Arc<Counters>,
}

impl GradientCodec for Spy {
    fn mode(&self) -> ExchangeMode {
        ExchangeMode::F32
    }

    fn fingerprint(&self) -> u64 {
        self.inner.fingerprint()
    }

    fn encode(
        &mut self,
        ctx: Context,
        grads: &[Vec<f32>],
        out: &mut Vec<u8>,
    ) -> vsa_optim_mpi::Result<()> {
        self.c.encode.fetch_add(1, Ordering::SeqCst);
        if self.c.fail_next_encode.swap(0, Ordering::SeqCst) != 0 {
            return Err(Error::Codec("spy encode failure".into()));
        }
        self.inner.encode(ctx, grads, out)
    }

    fn decode(
        &mut self,
        ctx: Context,
        payload: &[u8],
        out: &mut [Vec<f32>],
    ) -> vsa_optim_mpi::Result<()> {
        self.c.decode.fetch_add(1, Ordering::SeqCst);
        self.inner.decode(ctx, payload, out)
    }

    fn commit(&mut self) {
        self.c.commit.fetch_add(1, Ordering::SeqCst);
    }

    fn rollback(&mut self) {
        self.c.rollback.fetch_add(1, Ordering::SeqCst);
    }
}

fn load(a: &AtomicU64) -> u64 {
    a.load(Ordering::SeqCst)
}

// ---------------------------------------------------------------------------------------------
// Handshake

fn handshake() -> Handshake {
    Handshake {
        protocol: PROTOCOL_VERSION,
        world: 3,
        mode: 1,
        seed: 42,
        elements: 1000,
        layout: 0x1111_2222_3333_4444,
        codec: 0x5555_6666_7777_8888,
        user: 0x9999_aaaa_bbbb_cccc,
        reduction: 1,
    }
}

/// Field names in declaration order, each with a setter that changes only that field.
type Setter = fn(&mut Handshake);
const FIELDS: [(&str, Setter); 9] = [
    ("protocol version", |h| h.protocol += 1),
    ("world size", |h| h.world += 1),
    ("mode", |h| h.mode = 0),
    ("seed", |h| h.seed ^= 1 << 63),
    ("total gradient elements", |h| h.elements -= 1),
    ("parameter layout (names and shapes)", |h| h.layout ^= 1),
    ("codec configuration", |h| h.codec = 0),
    ("training configuration", |h| h.user += 7),
    ("reduction (gather, sum or allreduce)", |h| h.reduction = 0),
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn handshake_bytes_roundtrip(w in prop::array::uniform9(any::<u64>()), rank in 0usize..100) {
        let h = Handshake {
            protocol: w[0], world: w[1], mode: w[2], seed: w[3],
            elements: w[4], layout: w[5], codec: w[6], user: w[7], reduction: w[8],
        };
        let b = h.to_bytes();
        prop_assert_eq!(Handshake::from_bytes(rank, &b).unwrap(), h);
        // Little-endian words in declaration order.
        for (k, &v) in w.iter().enumerate() {
            prop_assert_eq!(&b[8 * k..8 * k + 8], &v.to_le_bytes());
        }
    }
}

#[test]
fn handshake_wrong_length_is_decode_error() {
    let b = handshake().to_bytes();
    for len in [0usize, 8, 63] {
        let err = Handshake::from_bytes(5, &b[..len]).unwrap_err();
        assert!(matches!(err, Error::Decode { rank: 5, .. }), "{err:?}");
    }
    let mut long = b.to_vec();
    long.push(0);
    assert!(matches!(
        Handshake::from_bytes(1, &long),
        Err(Error::Decode { rank: 1, .. })
    ));
}

#[test]
fn check_handshakes_accepts_equal_records() {
    let h = handshake();
    check_handshakes(&[h]).unwrap();
    check_handshakes(&[h, h, h, h]).unwrap();
}

#[test]
fn check_handshakes_names_each_field_and_rank() {
    let reference = handshake();
    for (name, set) in FIELDS {
        let mut other = reference;
        set(&mut other);
        assert_ne!(other, reference);
        let err = check_handshakes(&[reference, reference, other]).unwrap_err();
        let msg = err.to_string();
        match err {
            Error::ConfigMismatch {
                field,
                rank,
                ref expected,
                ref found,
            } => {
                assert_eq!(field, name);
                assert_eq!(rank, 2);
                assert_ne!(expected, found);
                assert_eq!(
                    msg,
                    format!(
                        "configuration mismatch between ranks: {name} is {expected} on rank 0 but {found} on rank 2"
                    )
                );
            }
            other => panic!("{name}: {other:?}"),
        }
    }
}

#[test]
fn check_handshakes_display_values() {
    let reference = handshake();
    let mut seed = reference;
    seed.seed = 7;
    assert_eq!(
        check_handshakes(&[reference, seed])
            .unwrap_err()
            .to_string(),
        "configuration mismatch between ranks: seed is 42 on rank 0 but 7 on rank 1"
    );
    // Modes are shown by name.
    let mut mode = reference;
    mode.mode = 0;
    assert_eq!(
        check_handshakes(&[reference, mode])
            .unwrap_err()
            .to_string(),
        "configuration mismatch between ranks: mode is ternary on rank 0 but f32 on rank 1"
    );
    mode.mode = 9;
    assert!(
        check_handshakes(&[reference, mode])
            .unwrap_err()
            .to_string()
            .contains("unknown mode 9")
    );
    // Hashes as 0x-prefixed 16-digit hex.
    let mut layout = reference;
    layout.layout = 0xab;
    assert_eq!(
        check_handshakes(&[reference, layout])
            .unwrap_err()
            .to_string(),
        "configuration mismatch between ranks: parameter layout (names and shapes) is \
         0x1111222233334444 on rank 0 but 0x00000000000000ab on rank 1"
    );
}

#[test]
fn check_handshakes_first_field_then_first_rank_wins() {
    let reference = handshake();
    // Every pair of fields i < j: rank 1 differs in j, rank 2 in i (and j): field i wins,
    // and it is reported on rank 2, the first rank that differs *in that field*.
    for (i, (name_i, set_i)) in FIELDS.iter().enumerate() {
        for (j, (_, set_j)) in FIELDS.iter().enumerate().skip(i + 1) {
            let mut r1 = reference;
            set_j(&mut r1);
            let mut r2 = r1;
            set_i(&mut r2);
            match check_handshakes(&[reference, r1, r2]).unwrap_err() {
                Error::ConfigMismatch { field, rank, .. } => {
                    assert_eq!((field, rank), (*name_i, 2), "fields {i}, {j}");
                }
                other => panic!("{other:?}"),
            }
        }
    }
    // Within one field, the first differing rank.
    let mut a = reference;
    a.seed = 1;
    let mut b = reference;
    b.seed = 2;
    match check_handshakes(&[reference, reference, a, b]).unwrap_err() {
        Error::ConfigMismatch {
            field: "seed",
            rank: 2,
            found,
            ..
        } => assert_eq!(found, "1"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn check_handshakes_empty_is_error() {
    assert!(matches!(
        check_handshakes(&[]),
        Err(Error::InvalidConfig { .. })
    ));
}

fn p(list: &[(&str, &[usize])]) -> Vec<(String, Vec<usize>)> {
    list.iter()
        .map(|(n, s)| (n.to_string(), s.to_vec()))
        .collect()
}

#[test]
fn layout_hash_sees_names_shapes_order_and_boundaries() {
    let base = p(&[("w", &[2, 3]), ("b", &[3])]);
    let h = layout_hash(&base);
    assert_eq!(h, layout_hash(&p(&[("w", &[2, 3]), ("b", &[3])])));
    let variants = [
        p(&[("v", &[2, 3]), ("b", &[3])]),    // a name
        p(&[("w", &[3, 2]), ("b", &[3])]),    // a shape, same elements
        p(&[("w", &[6]), ("b", &[3])]),       // a rank, same elements
        p(&[("w", &[2, 3]), ("b", &[4])]),    // a size
        p(&[("b", &[3]), ("w", &[2, 3])]),    // the order
        p(&[("w", &[2, 3])]),                 // a parameter dropped
        p(&[("w", &[2, 3]), ("b", &[3, 1])]), // a trailing 1
    ];
    for v in &variants {
        assert_ne!(layout_hash(v), h, "{v:?}");
    }
    // Pairs whose word sequences collide when a length prefix is dropped (the hash is over
    // name.len, name bytes, shape.len, dims per parameter):
    // * without the name length: "a\u{2}",[5] and "a",[1, 5] are both 97, 2, 1, 5;
    // * without the shape length: ("a",[2]),("b",[1]) and ("a",[2, 1, 98 ('b'), 1]) are both
    //   1, 97, 2, 1, 98, 1;
    // * without both: "ab",[1] and "a",[98, 1] are both 97, 98, 1.
    let pairs = [
        (p(&[("a\u{2}", &[5])]), p(&[("a", &[1, 5])])),
        (p(&[("a", &[2]), ("b", &[1])]), p(&[("a", &[2, 1, 98, 1])])),
        (p(&[("ab", &[1])]), p(&[("a", &[98, 1])])),
        (p(&[("", &[])]), p(&[])),
    ];
    for (a, b) in &pairs {
        assert_ne!(layout_hash(a), layout_hash(b), "{a:?} vs {b:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// GradientExchange over SingleProcess

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// One rank: the mean is the input bit for bit (division by 1 is exact) and the loss is
    /// returned unchanged; the counters follow the frame sizes.
    #[test]
    fn single_rank_mean_is_identity(
        shapes in prop::collection::vec(prop::collection::vec(1usize..12, 0..3), 1..4),
        seed in any::<u64>(),
        loss in -1e30f32..1e30,
        steps in 1u64..4,
    ) {
        let params: Vec<(String, Vec<usize>)> = shapes
            .into_iter()
            .enumerate()
            .map(|(k, s)| (format!("p{k}"), s))
            .collect();
        let l = lens(&params);
        let n: usize = l.iter().sum();
        let mut ex = GradientExchange::new(SingleProcess::new(), f32_codec(&params), &params,
            ExchangeConfig::default()).unwrap();
        prop_assert_eq!(ex.collective_calls(), 1);
        prop_assert_eq!(ex.lens(), &l[..]);
        for step in 0..steps {
            let g = random_grads(&l, seed ^ step);
            let mut out = filled(&l, f32::NAN);
            let got = ex.mean(step, &g, loss, &mut out).unwrap();
            prop_assert_eq!(got.to_bits(), loss.to_bits());
            prop_assert_eq!(bits(&out), bits(&g));
            prop_assert_eq!(ex.collective_calls(), 2 + step);
        }
        let s = ex.stats();
        prop_assert_eq!(s.exchanges, steps);
        prop_assert_eq!(s.failed, 0);
        prop_assert_eq!(s.f32_bytes, 4 * n);
        prop_assert_eq!(s.last_frame_bytes, HEADER_BYTES + 4 * n);
        prop_assert_eq!(s.bytes_sent, HANDSHAKE_BYTES as u64 + steps * (HEADER_BYTES + 4 * n) as u64);
        prop_assert_eq!(s.bytes_received, 0);
    }
}

#[test]
fn single_rank_frame_layout_matches_documentation() {
    let params = params();
    let l = lens(&params);
    let mut coll = Scripted::new(0, 1);
    coll.push(|_| Vec::new());
    let mut ex = GradientExchange::new(coll, f32_codec(&params), &params, config(3)).unwrap();
    let g = random_grads(&l, 1);
    let mut out = filled(&l, 0.0);
    ex.mean(0x0102_0304_0506_0708, &g, -2.5, &mut out).unwrap();
    let sent = &ex.collective_mut().sent;
    // The handshake: HANDSHAKE_BYTES bytes, this rank's record.
    let h = Handshake::from_bytes(0, &sent[0]).unwrap();
    assert_eq!(
        h,
        Handshake {
            protocol: PROTOCOL_VERSION,
            world: 1,
            mode: 0,
            seed: 3,
            elements: l.iter().sum::<usize>() as u64,
            layout: layout_hash(&params),
            codec: F32Codec::new(&l).fingerprint(),
            user: 0xfeed,
            reduction: 0,
        }
    );
    // The gradient frame, byte for byte.
    assert_eq!(
        sent[1],
        frame(0, 0x0102_0304_0506_0708, -2.5, &f32_payload(&g))
    );
}

#[test]
fn single_rank_ternary_mean_is_the_decoded_payload() {
    let params = params();
    let l = lens(&params);
    let mut ex = GradientExchange::new(
        SingleProcess::new(),
        ternary_codec(&params, 9),
        &params,
        config(9),
    )
    .unwrap();
    assert_eq!(ex.mode(), ExchangeMode::Ternary);
    let mut reference =
        TernaryCodec::new(&l, 9, DEFAULT_TERNARY_BLOCK, TernaryPacking::Base3).unwrap();
    for step in [0u64, 1, 17] {
        let g = random_grads(&l, 100 + step);
        let mut out = filled(&l, 0.0);
        ex.mean(step, &g, 1.0, &mut out).unwrap();
        let mut payload = Vec::new();
        let ctx = Context { step, rank: 0 };
        reference.encode(ctx, &g, &mut payload).unwrap();
        let mut expected = filled(&l, 0.0);
        reference.decode(ctx, &payload, &mut expected).unwrap();
        assert_eq!(bits(&out), bits(&expected));
        assert_ne!(out, g, "ternary is lossy");
        let s = ex.stats();
        assert_eq!(s.last_frame_bytes, HEADER_BYTES + reference.payload_bytes());
    }
}

#[test]
fn single_rank_non_finite_is_refused_everywhere() {
    let params = params();
    let l = lens(&params);
    let mut ex = single_f32(&params, 1);
    let good = random_grads(&l, 5);
    let mut out = filled(&l, 0.0);
    ex.mean(0, &good, 0.5, &mut out).unwrap();
    let snapshot = out.clone();
    let cases: Vec<(Vec<Vec<f32>>, f32)> = vec![
        (
            {
                let mut g = good.clone();
                g[0][7] = f32::NAN;
                g
            },
            0.5,
        ),
        (
            {
                let mut g = good.clone();
                g[2][2] = f32::INFINITY;
                g
            },
            0.5,
        ),
        (
            {
                let mut g = good.clone();
                g[1][0] = f32::NEG_INFINITY;
                g
            },
            0.5,
        ),
        (good.clone(), f32::NAN),
        (good.clone(), f32::INFINITY),
    ];
    for (k, (g, loss)) in cases.into_iter().enumerate() {
        let before = ex.stats();
        let calls = ex.collective_calls();
        let step = 10 + k as u64;
        let err = ex.mean(step, &g, loss, &mut out).unwrap_err();
        assert!(
            matches!(err, Error::NonFinite { rank: 0, step: s } if s == step),
            "{err:?}"
        );
        assert_eq!(bits(&out), bits(&snapshot), "out must be untouched");
        let after = ex.stats();
        assert_eq!(after.failed, before.failed + 1);
        assert_eq!(after.exchanges, before.exchanges);
        // The rank still took part in the all-gather, with a header-only frame.
        assert_eq!(ex.collective_calls(), calls + 1);
        assert_eq!(after.bytes_sent, before.bytes_sent + HEADER_BYTES as u64);
        assert_eq!(after.last_frame_bytes, HEADER_BYTES);
    }
    // The exchange recovers.
    let g = random_grads(&l, 6);
    ex.mean(99, &g, 0.25, &mut out).unwrap();
    assert_eq!(bits(&out), bits(&g));
    assert_eq!(ex.stats().exchanges, 2);
    assert_eq!(ex.stats().failed, 5);
}

#[test]
fn single_rank_wrong_layout_is_length_mismatch() {
    let params = params();
    let l = lens(&params);
    let mut ex = single_f32(&params, 1);
    let good = random_grads(&l, 5);
    let mut out = filled(&l, 3.0);
    let mut short = good.clone();
    short[1].pop();
    let mut fewer = good.clone();
    fewer.pop();
    let mut more = good.clone();
    more.push(vec![1.0]);
    for bad in [short, fewer, more] {
        let err = ex.mean(0, &bad, 0.0, &mut out).unwrap_err();
        assert!(matches!(err, Error::LengthMismatch { .. }), "{err:?}");
        assert_eq!(out, filled(&l, 3.0));
    }
    // A wrong `out` layout, even with a NaN in the input: the layout error wins locally.
    let mut bad_out = filled(&l, 3.0);
    bad_out[0].push(0.0);
    let err = ex.mean(0, &good, 0.0, &mut bad_out).unwrap_err();
    assert!(matches!(err, Error::LengthMismatch { .. }), "{err:?}");
    let mut nan = good.clone();
    nan[0][0] = f32::NAN;
    let err = ex.mean(0, &nan, 0.0, &mut bad_out).unwrap_err();
    assert!(matches!(err, Error::LengthMismatch { .. }), "{err:?}");
    assert_eq!(bad_out[0][..l[0]], filled(&l, 3.0)[0][..]);
    assert_eq!(ex.stats().failed, 5);
    assert_eq!(ex.stats().exchanges, 0);
}

#[test]
fn construction_rejects_empty_layouts() {
    let err = GradientExchange::new(
        SingleProcess::new(),
        Box::new(F32Codec::new(&[])),
        &[],
        config(0),
    )
    .unwrap_err();
    assert!(matches!(err, Error::InvalidConfig { .. }), "{err:?}");
    for shape in [vec![0usize], vec![3, 0, 2]] {
        let params = p(&[("ok", &[2]), ("empty", &shape)]);
        let err =
            GradientExchange::new(SingleProcess::new(), f32_codec(&params), &params, config(0))
                .unwrap_err();
        match err {
            Error::InvalidConfig {
                parameter, actual, ..
            } => {
                assert_eq!(parameter, "params");
                assert!(actual.contains("empty"), "{actual}");
            }
            other => panic!("{other:?}"),
        }
    }
    // A scalar (shape []) has one element and is accepted.
    let params = p(&[("scalar", &[])]);
    let mut ex = single_f32(&params, 0);
    assert_eq!(ex.lens(), &[1]);
    let mut out = vec![vec![0.0]];
    ex.mean(0, &[vec![-4.0]], 1.0, &mut out).unwrap();
    assert_eq!(out, [[-4.0]]);
}

#[test]
fn single_rank_gather_and_agreement() {
    let params = params();
    let mut ex = single_f32(&params, 1);
    assert_eq!((ex.rank(), ex.size()), (0, 1));
    assert_eq!(
        ex.gather_u64(0xdead_beef_0123_4567).unwrap(),
        [0xdead_beef_0123_4567]
    );
    ex.check_agreement("predictor digest", 12).unwrap();
    let s = ex.stats();
    assert_eq!(s.bytes_sent, HANDSHAKE_BYTES as u64 + 16);
    assert_eq!(s.bytes_received, 0);
    assert_eq!(ex.collective_calls(), 3);
}

#[test]
fn codec_commit_and_rollback() {
    let params = params();
    let l = lens(&params);
    let c = Arc::new(Counters::default());
    let spy = Box::new(Spy {
        inner: F32Codec::new(&l),
        c: Arc::clone(&c),
    });
    let mut ex = GradientExchange::new(SingleProcess::new(), spy, &params, config(1)).unwrap();
    let g = random_grads(&l, 2);
    let mut out = filled(&l, 0.0);
    ex.mean(0, &g, 0.0, &mut out).unwrap();
    assert_eq!(
        (
            load(&c.encode),
            load(&c.decode),
            load(&c.commit),
            load(&c.rollback)
        ),
        (1, 1, 1, 0)
    );
    // A non-finite gradient is refused before encoding, and rolled back.
    let mut nan = g.clone();
    nan[1][3] = f32::NAN;
    ex.mean(1, &nan, 0.0, &mut out).unwrap_err();
    assert_eq!(
        (
            load(&c.encode),
            load(&c.decode),
            load(&c.commit),
            load(&c.rollback)
        ),
        (1, 1, 1, 1)
    );
    // An encode failure is this rank's own error, rolled back, `out` untouched.
    c.fail_next_encode.store(1, Ordering::SeqCst);
    let before = out.clone();
    let err = ex.mean(2, &random_grads(&l, 3), 0.0, &mut out).unwrap_err();
    assert!(
        matches!(&err, Error::Codec(m) if m == "spy encode failure"),
        "{err:?}"
    );
    assert_eq!(out, before);
    assert_eq!(
        (
            load(&c.encode),
            load(&c.decode),
            load(&c.commit),
            load(&c.rollback)
        ),
        (2, 1, 1, 2)
    );
    assert_eq!(ex.stats().last_frame_bytes, HEADER_BYTES);
}

#[test]
fn codec_layout_disagreeing_with_params_fails_at_mean() {
    // The constructor cannot see the codec's layout; a mismatch surfaces at the first mean
    // as the codec's LengthMismatch (not as a panic or a wrong result).
    let params = p(&[("w", &[4]), ("b", &[2])]);
    let mut ex = GradientExchange::new(
        SingleProcess::new(),
        Box::new(F32Codec::new(&[3, 3])),
        &params,
        config(0),
    )
    .unwrap();
    let mut out = vec![vec![0.0; 4], vec![0.0; 2]];
    let err = ex
        .mean(0, &[vec![1.0; 4], vec![1.0; 2]], 0.0, &mut out)
        .unwrap_err();
    assert!(matches!(err, Error::LengthMismatch { .. }), "{err:?}");
    assert_eq!(out, [vec![0.0; 4], vec![0.0; 2]]);
}

// ---------------------------------------------------------------------------------------------
// Scripted multi-rank exchange

/// Three ranks' gradients and losses whose rank-order sums differ from other orders:
/// 1e8 + 1 − 1e8 is 0 left to right in f32, 1 if the 1 came last.
fn three_ranks(l: &[usize]) -> (Vec<Vec<Vec<f32>>>, [f32; 3]) {
    let mut g: Vec<Vec<Vec<f32>>> = (0..3).map(|r| random_grads(l, 1000 + r)).collect();
    for (r, v) in [1.0e8f32, 1.0, -1.0e8].into_iter().enumerate() {
        g[r][0][0] = v;
        g[r][1][3] = -v;
    }
    (g, [1.0e8, 1.0, -1.0e8])
}

#[test]
fn three_ranks_f32_is_rank_order_mean_bit_for_bit() {
    let params = params();
    let l = lens(&params);
    let (g, losses) = three_ranks(&l);
    let refs: Vec<&[Vec<f32>]> = g.iter().map(|x| x.as_slice()).collect();
    let mut expected = filled(&l, 0.0);
    mean_in_rank_order(&refs, &mut expected).unwrap();
    assert_eq!(expected[0][0], 0.0, "the order-sensitive element");
    let expected_loss = ((losses[0] + losses[1]) + losses[2]) / 3.0;
    assert_eq!(expected_loss, 0.0);
    let step = 41;
    let frames: Vec<Vec<u8>> = (0..3)
        .map(|r| frame(0, step, losses[r], &f32_payload(&g[r])))
        .collect();
    for me in 0..3 {
        let mut coll = Scripted::new(me, 3);
        coll.push_frames(frames.clone());
        let mut ex = GradientExchange::new(coll, f32_codec(&params), &params, config(1)).unwrap();
        assert_eq!((ex.rank(), ex.size()), (me, 3));
        let mut out = filled(&l, f32::NAN);
        let loss = ex.mean(step, &g[me], losses[me], &mut out).unwrap();
        assert_eq!(bits(&out), bits(&expected), "rank {me}");
        assert_eq!(loss.to_bits(), expected_loss.to_bits());
        // This rank's frame is the documented layout.
        assert_eq!(ex.collective_mut().sent[1], frames[me]);
        let s = ex.stats();
        let frame_bytes = (HEADER_BYTES + 4 * l.iter().sum::<usize>()) as u64;
        assert_eq!(s.bytes_sent, HANDSHAKE_BYTES as u64 + frame_bytes);
        assert_eq!(
            s.bytes_received,
            2 * HANDSHAKE_BYTES as u64 + 2 * frame_bytes
        );
        assert_eq!(s.exchanges, 1);
    }
}

#[test]
fn three_ranks_ternary_is_rank_order_mean_of_decodes() {
    let params = params();
    let l = lens(&params);
    let (g, losses) = three_ranks(&l);
    let step = 8;
    for packing in [TernaryPacking::Planes, TernaryPacking::Base3] {
        let mut codec = TernaryCodec::new(&l, 21, DEFAULT_TERNARY_BLOCK, packing).unwrap();
        let mut frames = Vec::new();
        let mut decoded = Vec::new();
        for (r, gr) in g.iter().enumerate() {
            let ctx = Context { step, rank: r };
            let mut payload = Vec::new();
            codec.encode(ctx, gr, &mut payload).unwrap();
            let mut d = filled(&l, 0.0);
            codec.decode(ctx, &payload, &mut d).unwrap();
            frames.push(frame(0, step, losses[r], &payload));
            decoded.push(d);
        }
        let refs: Vec<&[Vec<f32>]> = decoded.iter().map(|x| x.as_slice()).collect();
        let mut expected = filled(&l, 0.0);
        mean_in_rank_order(&refs, &mut expected).unwrap();
        for me in 0..3 {
            let mut coll = Scripted::new(me, 3);
            coll.push_frames(frames.clone());
            let c = Box::new(codec.clone());
            let mut ex = GradientExchange::new(coll, c, &params, config(21)).unwrap();
            let mut out = filled(&l, f32::NAN);
            ex.mean(step, &g[me], losses[me], &mut out).unwrap();
            assert_eq!(bits(&out), bits(&expected), "{packing:?} rank {me}");
            assert_eq!(ex.collective_mut().sent[1], frames[me], "own frame");
            assert_eq!(
                ex.stats().last_frame_bytes,
                HEADER_BYTES + codec.payload_bytes()
            );
        }
    }
}

/// Runs one mean as rank `me` of 3 against `frames` (this rank's entry is ignored) and
/// returns the error, after checking that `out` was untouched and the failure counted.
fn failing_mean(me: usize, step: u64, frames: Vec<Vec<u8>>, local: &[Vec<f32>]) -> Error {
    let params = params();
    let l = lens(&params);
    let mut coll = Scripted::new(me, 3);
    coll.push_frames(frames);
    let mut ex = GradientExchange::new(coll, f32_codec(&params), &params, config(1)).unwrap();
    let mut out = filled(&l, 7.0);
    let err = ex.mean(step, local, 0.5, &mut out).unwrap_err();
    assert_eq!(out, filled(&l, 7.0), "out must be untouched on {err:?}");
    assert_eq!((ex.stats().failed, ex.stats().exchanges), (1, 0));
    err
}

fn good_frames(step: u64) -> (Vec<Vec<Vec<f32>>>, Vec<Vec<u8>>) {
    let l = lens(&params());
    let (g, losses) = three_ranks(&l);
    let frames = (0..3)
        .map(|r| frame(0, step, losses[r], &f32_payload(&g[r])))
        .collect();
    (g, frames)
}

#[test]
fn remote_non_finite_is_named_on_every_rank() {
    let step = 5;
    for me in [0usize, 1] {
        let (g, mut frames) = good_frames(step);
        // A rank with a NaN sends a header-only frame with status 1.
        frames[2] = frame(1, step, 0.5, &[]);
        let err = failing_mean(me, step, frames.clone(), &g[me]);
        assert!(
            matches!(err, Error::NonFinite { rank: 2, step: 5 }),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "rank 2 had a non-finite gradient or loss at step 5; the exchange was abandoned on every rank"
        );
    }
    // Two bad ranks: the first is named; also when this rank is the later bad one.
    let (g, mut frames) = good_frames(step);
    frames[0] = frame(1, step, f32::NAN, &[]);
    let mut nan = g[2].clone();
    nan[0][1] = f32::NAN;
    let err = failing_mean(2, step, frames.clone(), &nan);
    assert!(matches!(err, Error::NonFinite { rank: 0, .. }), "{err:?}");
    // This rank bad, a later rank fine: this rank is named.
    let mut nan = g[1].clone();
    nan[2][0] = f32::INFINITY;
    let (_, frames) = good_frames(step);
    let err = failing_mean(1, step, frames, &nan);
    assert!(matches!(err, Error::NonFinite { rank: 1, .. }), "{err:?}");
}

#[test]
fn non_finite_values_behind_an_ok_status_are_refused() {
    // A non-conforming (or corrupted) rank 2 sends status ok with a NaN in its payload,
    // or with a NaN loss: every rank refuses the frame, naming rank 2, output untouched.
    let step = 4;
    for me in [0usize, 1] {
        let (g, mut frames) = good_frames(step);
        let mut bad = g[2].clone();
        bad[1][0] = f32::NAN;
        frames[2] = frame(0, step, 0.5, &f32_payload(&bad));
        let err = failing_mean(me, step, frames, &g[me]);
        assert!(matches!(err, Error::Decode { rank: 2, .. }), "{err:?}");
        assert!(err.to_string().contains("not finite"), "{err}");
        let (g, mut frames) = good_frames(step);
        frames[2] = frame(0, step, f32::INFINITY, &f32_payload(&g[2]));
        let err = failing_mean(me, step, frames, &g[me]);
        assert!(matches!(err, Error::Decode { rank: 2, .. }), "{err:?}");
    }
}

#[test]
fn remote_encode_failure_is_a_codec_error_naming_the_rank() {
    let step = 3;
    let (g, mut frames) = good_frames(step);
    frames[1] = frame(2, step, 0.5, &[]);
    let err = failing_mean(0, step, frames, &g[0]);
    match err {
        Error::Codec(msg) => assert!(msg.contains("rank 1"), "{msg}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn remote_step_mismatch() {
    let step = 100;
    // A later rank at another step.
    let (g, mut frames) = good_frames(step);
    frames[2] = frame(0, step + 1, 0.5, &f32_payload(&g[2]));
    let err = failing_mean(0, step, frames, &g[0]);
    assert!(
        matches!(
            err,
            Error::StepMismatch {
                rank: 2,
                expected: 100,
                found: 101
            }
        ),
        "{err:?}"
    );
    // Rank 0 at another step, seen from rank 1: rank 1 itself is the one named.
    let (g, mut frames) = good_frames(step);
    frames[0] = frame(0, 7, 0.5, &f32_payload(&g[0]));
    let err = failing_mean(1, step, frames, &g[1]);
    assert!(
        matches!(
            err,
            Error::StepMismatch {
                rank: 1,
                expected: 7,
                found: 100
            }
        ),
        "{err:?}"
    );
    // A step mismatch is found before a NaN status (headers first).
    let (g, mut frames) = good_frames(step);
    frames[1] = frame(1, step, 0.5, &[]);
    frames[2] = frame(0, step + 5, 0.5, &f32_payload(&g[2]));
    let err = failing_mean(0, step, frames, &g[0]);
    assert!(
        matches!(err, Error::StepMismatch { rank: 2, .. }),
        "{err:?}"
    );
}

#[test]
fn remote_malformed_frames_are_decode_errors_naming_the_rank() {
    let step = 9;
    type Damage = fn(&mut Vec<u8>);
    let garble: Vec<(&str, Damage)> = vec![
        ("payload one byte short", |f| {
            f.pop();
        }),
        ("payload one byte long", |f| f.push(0)),
        ("no payload", |f| f.truncate(HEADER_BYTES)),
        ("header cut", |f| f.truncate(10)),
        ("empty frame", |f| f.clear()),
        ("bad magic", |f| f[0] = b'X'),
        ("other protocol version", |f| {
            f[4] = PROTOCOL_VERSION as u8 + 1
        }),
    ];
    for (what, damage) in garble {
        for (me, bad) in [(0usize, 2usize), (2, 1), (1, 0)] {
            let (g, mut frames) = good_frames(step);
            damage(&mut frames[bad]);
            let err = failing_mean(me, step, frames, &g[me]);
            match err {
                Error::Decode { rank, .. } => assert_eq!(rank, bad, "{what}"),
                other => panic!("{what}: {other:?}"),
            }
        }
    }
}

#[test]
fn remote_malformed_ternary_payload_is_decode_error() {
    let params = params();
    let l = lens(&params);
    let step = 4;
    let codec = TernaryCodec::new(&l, 2, DEFAULT_TERNARY_BLOCK, TernaryPacking::Base3).unwrap();
    let mut frames = Vec::new();
    let g: Vec<_> = (0..3).map(|r| random_grads(&l, 50 + r)).collect();
    for (r, gr) in g.iter().enumerate() {
        let mut payload = Vec::new();
        codec
            .clone()
            .encode(Context { step, rank: r }, gr, &mut payload)
            .unwrap();
        frames.push(frame(0, step, 0.0, &payload));
    }
    // A negative scale in rank 1's first block; a byte > 242 in rank 2's trits.
    let mut bad_scale = frames.clone();
    bad_scale[1][HEADER_BYTES..HEADER_BYTES + 4].copy_from_slice(&(-1.0f32).to_le_bytes());
    let mut bad_trit = frames.clone();
    bad_trit[2][HEADER_BYTES + 3 * 4 + 5] = 250;
    for (frames, bad) in [(bad_scale, 1usize), (bad_trit, 2)] {
        let mut coll = Scripted::new(0, 3);
        coll.push_frames(frames);
        let mut ex =
            GradientExchange::new(coll, Box::new(codec.clone()), &params, config(2)).unwrap();
        let mut out = filled(&l, 7.0);
        let err = ex.mean(step, &g[0], 0.0, &mut out).unwrap_err();
        assert!(
            matches!(err, Error::Decode { rank, .. } if rank == bad),
            "{err:?}"
        );
        assert_eq!(out, filled(&l, 7.0));
    }
}

// ---------------------------------------------------------------------------------------------
// Scripted handshakes

/// Rank 2 of 3 sends `mine` changed by `change`; rank 1 echoes.
fn handshake_from_rank2(change: fn(&mut Handshake)) -> Scripted {
    Scripted::with_handshake(0, 3, move |mine| {
        let mut h = Handshake::from_bytes(0, mine).unwrap();
        change(&mut h);
        vec![mine.to_vec(), h.to_bytes().to_vec()]
    })
}

#[test]
fn handshake_mismatch_at_construction() {
    let params = params();
    let cases: [(&str, Setter); 6] = [
        ("seed", |h| h.seed += 1),
        ("world size", |h| h.world = 2),
        ("mode", |h| h.mode = 1),
        ("parameter layout (names and shapes)", |h| h.layout ^= 4),
        ("codec configuration", |h| h.codec ^= 4),
        ("training configuration", |h| h.user = 0),
    ];
    for (name, change) in cases {
        let err = GradientExchange::new(
            handshake_from_rank2(change),
            f32_codec(&params),
            &params,
            config(1),
        )
        .unwrap_err();
        match err {
            Error::ConfigMismatch { field, rank, .. } => {
                assert_eq!((field, rank), (name, 2));
            }
            other => panic!("{name}: {other:?}"),
        }
    }
    // The seed is shown as numbers.
    let err = GradientExchange::new(
        handshake_from_rank2(|h| h.seed = 77),
        f32_codec(&params),
        &params,
        config(1),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "configuration mismatch between ranks: seed is 1 on rank 0 but 77 on rank 2"
    );
    // The real thing: rank 1 built with another layout of the same sizes (750, 25, 3).
    let other_params = p(&[("layer.w", &[25, 30]), ("layer.b", &[25]), ("head", &[3])]);
    let theirs = Handshake {
        protocol: PROTOCOL_VERSION,
        world: 3,
        mode: 0,
        seed: 1,
        elements: lens(&params).iter().sum::<usize>() as u64,
        layout: layout_hash(&other_params),
        codec: F32Codec::new(&lens(&other_params)).fingerprint(),
        user: 0xfeed,
        reduction: 0,
    };
    let coll = Scripted::with_handshake(0, 3, move |mine| {
        vec![theirs.to_bytes().to_vec(), mine.to_vec()]
    });
    let err = GradientExchange::new(coll, f32_codec(&params), &params, config(1)).unwrap_err();
    assert!(
        matches!(
            err,
            Error::ConfigMismatch {
                field: "parameter layout (names and shapes)",
                rank: 1,
                ..
            }
        ),
        "{err:?}"
    );
    // A ternary rank among f32 ranks.
    let mut tern = theirs;
    tern.layout = layout_hash(&params);
    tern.mode = u64::from(ExchangeMode::Ternary.tag());
    let coll = Scripted::with_handshake(2, 3, move |mine| {
        vec![mine.to_vec(), tern.to_bytes().to_vec()]
    });
    match GradientExchange::new(coll, f32_codec(&params), &params, config(1)).unwrap_err() {
        Error::ConfigMismatch {
            field: "mode",
            rank: 1,
            expected,
            found,
        } => assert_eq!((expected.as_str(), found.as_str()), ("f32", "ternary")),
        other => panic!("{other:?}"),
    }
    // A handshake that is not HANDSHAKE_BYTES long.
    let coll = Scripted::with_handshake(0, 3, |mine| vec![mine.to_vec(), mine[..63].to_vec()]);
    let err = GradientExchange::new(coll, f32_codec(&params), &params, config(1)).unwrap_err();
    assert!(matches!(err, Error::Decode { rank: 2, .. }), "{err:?}");
}

#[test]
fn agreement_check_names_the_differing_rank() {
    let params = params();
    let mut coll = Scripted::new(1, 3);
    coll.push(|_| vec![5u64.to_le_bytes().to_vec(), 5u64.to_le_bytes().to_vec()]);
    coll.push(|_| vec![5u64.to_le_bytes().to_vec(), 6u64.to_le_bytes().to_vec()]);
    coll.push(|_| vec![1u64.to_le_bytes().to_vec(), 2u64.to_le_bytes().to_vec()]);
    let mut ex = GradientExchange::new(coll, f32_codec(&params), &params, config(1)).unwrap();
    ex.check_agreement("weights hash", 5).unwrap();
    match ex.check_agreement("weights hash", 5).unwrap_err() {
        Error::ConfigMismatch {
            field: "weights hash",
            rank: 2,
            expected,
            found,
        } => {
            assert_eq!(expected, "0x0000000000000005");
            assert_eq!(found, "0x0000000000000006");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(ex.gather_u64(9).unwrap(), [1, 9, 2]);
    assert_eq!(ex.stats().bytes_sent, HANDSHAKE_BYTES as u64 + 3 * 8);
    assert_eq!(
        ex.stats().bytes_received,
        2 * HANDSHAKE_BYTES as u64 + 3 * 16
    );
}

#[test]
fn gather_u64_rejects_parts_that_are_not_8_bytes() {
    // A rank out of lockstep (here rank 2 sends a 24-byte gradient header while the others
    // gather a u64, or rank 0 sends 4 bytes) must not be read as a shifted sequence of u64s.
    let params = params();
    let mut coll = Scripted::new(1, 3);
    coll.push(|_| vec![5u64.to_le_bytes().to_vec(), frame(0, 0, 0.0, &[])]);
    coll.push(|_| vec![vec![1, 2, 3, 4], 5u64.to_le_bytes().to_vec()]);
    let mut ex = GradientExchange::new(coll, f32_codec(&params), &params, config(1)).unwrap();
    let err = ex.gather_u64(5).unwrap_err();
    assert!(matches!(err, Error::Decode { rank: 2, .. }), "{err:?}");
    let err = ex.check_agreement("digest", 5).unwrap_err();
    assert!(matches!(err, Error::Decode { rank: 0, .. }), "{err:?}");
}

// ---------------------------------------------------------------------------------------------
// A real exchange between threads

/// One rank's result of one step: the output bits and the loss bits, or the error's text.
type StepResult = Result<(Vec<Vec<u32>>, u32), String>;

/// Runs `steps` exchanges on `n` threads, each with its codec from `make`, and returns each
/// rank's per-step results (output bits and loss, or the error's text).
fn run_threads(
    n: usize,
    make: fn() -> Box<dyn GradientCodec + Send>,
    inputs: Vec<Vec<(Vec<Vec<f32>>, f32)>>,
) -> Vec<Vec<StepResult>> {
    let handles: Vec<_> = thread_world(n)
        .into_iter()
        .zip(inputs)
        .map(|(world, steps)| {
            std::thread::spawn(move || {
                let params = params();
                let l = lens(&params);
                let mut ex = GradientExchange::new(world, make(), &params, config(3)).unwrap();
                let mut res = Vec::new();
                for (step, (g, loss)) in steps.iter().enumerate() {
                    let mut out = filled(&l, 0.0);
                    res.push(
                        ex.mean(step as u64, g, *loss, &mut out)
                            .map(|m| (bits(&out), m.to_bits()))
                            .map_err(|e| e.to_string()),
                    );
                }
                res
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

#[test]
fn thread_world_gives_identical_bits_and_fails_together() {
    const N: usize = 3;
    let l = lens(&params());
    // Step 0 fine, step 1 rank 1 has a NaN, step 2 fine again.
    let inputs: Vec<Vec<(Vec<Vec<f32>>, f32)>> = (0..N)
        .map(|r| {
            (0..3u64)
                .map(|s| {
                    let mut g = random_grads(&l, 10 * s + r as u64);
                    if s == 1 && r == 1 {
                        g[1][2] = f32::NAN;
                    }
                    (g, r as f32 + s as f32 * 0.5)
                })
                .collect()
        })
        .collect();
    let makers: [fn() -> Box<dyn GradientCodec + Send>; 2] =
        [|| f32_codec(&params()), || ternary_codec(&params(), 3)];
    for (m, make) in makers.into_iter().enumerate() {
        let res = run_threads(N, make, inputs.clone());
        for step in [0usize, 2] {
            // Reference: decode every rank's encoding as a single process would, then sum in
            // rank order.
            let mut codec = make();
            let decoded: Vec<Vec<Vec<f32>>> = (0..N)
                .map(|r| {
                    let ctx = Context {
                        step: step as u64,
                        rank: r,
                    };
                    let mut payload = Vec::new();
                    codec.encode(ctx, &inputs[r][step].0, &mut payload).unwrap();
                    let mut d = filled(&l, 0.0);
                    codec.decode(ctx, &payload, &mut d).unwrap();
                    d
                })
                .collect();
            let refs: Vec<&[Vec<f32>]> = decoded.iter().map(|x| x.as_slice()).collect();
            let mut expected = filled(&l, 0.0);
            mean_in_rank_order(&refs, &mut expected).unwrap();
            let loss = ((inputs[0][step].1 + inputs[1][step].1) + inputs[2][step].1) / 3.0;
            for (r, rr) in res.iter().enumerate() {
                let (out, lb) = rr[step].as_ref().unwrap();
                assert_eq!(out, &bits(&expected), "codec {m} rank {r} step {step}");
                assert_eq!(*lb, loss.to_bits());
            }
        }
        for rr in &res {
            assert_eq!(
                rr[1].as_ref().unwrap_err(),
                "rank 1 had a non-finite gradient or loss at step 1; the exchange was abandoned on every rank"
            );
        }
    }
}
