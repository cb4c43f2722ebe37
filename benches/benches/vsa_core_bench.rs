//! vsa-core kernels: bind, bundle (2 and 16), dot/cosine/Hamming and permute at D = 10,000 and
//! D = 1,000,000 for the binary, ternary and real models, the random projection, and (with
//! `--features peers`) trit-vsa 0.3 on the same ternary vectors.
//!
//! Throughput is the byte size of **one operand vector** (D/8 binary, D/4 ternary, 4·D real;
//! 4·n for the projection input), and each group has a `memcpy` of exactly those bytes, so
//! `memcpy time / kernel time` is the kernel's fraction of copy bandwidth per operand.
use std::hint::black_box;

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, Throughput};
use vsa_optim_rs::vsa_core::{BinaryVector, RandomProjection, RealVector, TernaryVector};

const DIMS: [usize; 2] = [10_000, 1_000_000];
const SEED: u64 = 0x5EED;
/// A rotation that is not a multiple of 64 (the slow path of packed permute).
const SHIFT: usize = 1_234_567;

fn memcpy(group: &mut BenchmarkGroup<'_, WallTime>, bytes: usize) {
    let src = vec![0xA5u8; bytes];
    group.bench_function("memcpy", crate::memcpy(&src));
}

fn binary(c: &mut Criterion, d: usize) {
    let vs: Vec<BinaryVector> = (0..16)
        .map(|k| BinaryVector::random(d, SEED, k).unwrap())
        .collect();
    let two: Vec<&BinaryVector> = vs[..2].iter().collect();
    let all: Vec<&BinaryVector> = vs.iter().collect();
    let (a, b) = (&vs[0], &vs[1]);
    let mut out = BinaryVector::ones(d).unwrap();
    let mut g = c.benchmark_group(format!("vsa_core/binary/D={d}"));
    g.throughput(Throughput::Bytes(d.div_ceil(64) as u64 * 8));
    memcpy(&mut g, d.div_ceil(64) * 8);
    g.bench_function("bind", |bch| {
        bch.iter(|| a.bind_into(black_box(b), &mut out).unwrap())
    });
    g.bench_function("bundle2", |bch| {
        bch.iter(|| BinaryVector::bundle_into(black_box(&two), &mut out).unwrap())
    });
    g.bench_function("bundle16", |bch| {
        bch.iter(|| BinaryVector::bundle_into(black_box(&all), &mut out).unwrap())
    });
    g.bench_function("dot", |bch| {
        bch.iter(|| black_box(a).dot(black_box(b)).unwrap())
    });
    g.bench_function("cosine", |bch| {
        bch.iter(|| black_box(a).cosine(black_box(b)).unwrap())
    });
    g.bench_function("hamming", |bch| {
        bch.iter(|| black_box(a).hamming(black_box(b)).unwrap())
    });
    g.bench_function("permute", |bch| {
        bch.iter(|| a.permute_into(black_box(SHIFT), &mut out).unwrap())
    });
    g.finish();
}

fn ternary(c: &mut Criterion, d: usize) {
    let vs: Vec<TernaryVector> = (0..16)
        .map(|k| TernaryVector::random(d, SEED, k).unwrap())
        .collect();
    let two: Vec<&TernaryVector> = vs[..2].iter().collect();
    let all: Vec<&TernaryVector> = vs.iter().collect();
    let (a, b) = (&vs[0], &vs[1]);
    let mut out = TernaryVector::zeros(d).unwrap();
    let bytes = 2 * d.div_ceil(64) * 8;
    let mut g = c.benchmark_group(format!("vsa_core/ternary/D={d}"));
    g.throughput(Throughput::Bytes(bytes as u64));
    memcpy(&mut g, bytes);
    g.bench_function("bind", |bch| {
        bch.iter(|| a.bind_into(black_box(b), &mut out).unwrap())
    });
    g.bench_function("bundle2", |bch| {
        bch.iter(|| TernaryVector::bundle_into(black_box(&two), &mut out).unwrap())
    });
    g.bench_function("bundle16", |bch| {
        bch.iter(|| TernaryVector::bundle_into(black_box(&all), &mut out).unwrap())
    });
    g.bench_function("dot", |bch| {
        bch.iter(|| black_box(a).dot(black_box(b)).unwrap())
    });
    g.bench_function("cosine", |bch| {
        bch.iter(|| black_box(a).cosine(black_box(b)).unwrap())
    });
    g.bench_function("permute", |bch| {
        bch.iter(|| a.permute_into(black_box(SHIFT), &mut out).unwrap())
    });
    g.finish();
}

fn real(c: &mut Criterion, d: usize) {
    let vs: Vec<RealVector> = (0..16)
        .map(|k| RealVector::random(d, SEED, k).unwrap())
        .collect();
    let two: Vec<&RealVector> = vs[..2].iter().collect();
    let all: Vec<&RealVector> = vs.iter().collect();
    let key = BinaryVector::random(d, SEED, 99).unwrap();
    let a = &vs[0];
    let mut out = RealVector::zeros(d).unwrap();
    let mut g = c.benchmark_group(format!("vsa_core/real/D={d}"));
    g.throughput(Throughput::Bytes(4 * d as u64));
    memcpy(&mut g, 4 * d);
    g.bench_function("bind", |bch| {
        bch.iter(|| a.bind_into(black_box(&key), &mut out).unwrap())
    });
    g.bench_function("bundle2", |bch| {
        bch.iter(|| RealVector::bundle_into(black_box(&two), &mut out).unwrap())
    });
    g.bench_function("bundle16", |bch| {
        bch.iter(|| RealVector::bundle_into(black_box(&all), &mut out).unwrap())
    });
    g.bench_function("dot", |bch| {
        bch.iter(|| black_box(a).dot(black_box(&vs[1])).unwrap())
    });
    g.bench_function("cosine", |bch| {
        bch.iter(|| black_box(a).cosine(black_box(&vs[1])).unwrap())
    });
    g.bench_function("permute", |bch| {
        bch.iter(|| a.permute_into(black_box(SHIFT), &mut out).unwrap())
    });
    g.finish();
}

fn projection(c: &mut Criterion) {
    let (n, d) = (1_000_000, 10_000);
    let p = RandomProjection::new(n, d, SEED).unwrap();
    let x = RealVector::random(n, SEED, 1).unwrap().into_vec();
    let mut y = vec![0f32; d];
    let mut xt = vec![0f32; n];
    let mut g = c.benchmark_group(format!("vsa_core/projection/n={n},D={d}"));
    g.throughput(Throughput::Bytes(4 * n as u64));
    memcpy(&mut g, 4 * n);
    g.bench_function("encode", |b| {
        b.iter(|| p.encode_into(black_box(&x), &mut y).unwrap())
    });
    g.bench_function("transpose", |b| {
        b.iter(|| p.transpose_into(black_box(&y), &mut xt).unwrap())
    });
    g.bench_function("reconstruct", |b| {
        b.iter(|| p.reconstruct_into(black_box(&y), &mut xt).unwrap())
    });
    g.finish();
}

/// trit-vsa 0.3 side by side on the same ternary vectors (its planes are u32 words with the
/// same LSB-first layout, so the conversion is a split of each u64).
#[cfg(feature = "peers")]
fn peers(c: &mut Criterion, d: usize) {
    use trit_vsa::PackedTritVec;
    let to_u32 = |w: &[u64]| -> Vec<u32> {
        let mut v: Vec<u32> = w
            .iter()
            .flat_map(|x| [*x as u32, (*x >> 32) as u32])
            .collect();
        v.truncate(d.div_ceil(32));
        v
    };
    let ours: Vec<TernaryVector> = (0..16)
        .map(|k| TernaryVector::random(d, SEED, k).unwrap())
        .collect();
    let theirs: Vec<PackedTritVec> = ours
        .iter()
        .map(|v| {
            let (p, m) = v.planes();
            PackedTritVec::from_planes(to_u32(p), to_u32(m), d).unwrap()
        })
        .collect();
    // Same vectors, same answers.
    assert_eq!(
        i64::from(trit_vsa::simd::simd_dot(&theirs[0], &theirs[1])),
        ours[0].dot(&ours[1]).unwrap()
    );
    let ours_all: Vec<&TernaryVector> = ours.iter().collect();
    let theirs_all: Vec<&PackedTritVec> = theirs.iter().collect();
    let mut out = TernaryVector::zeros(d).unwrap();
    let bytes = 2 * d.div_ceil(64) * 8;
    let mut g = c.benchmark_group(format!("vsa_core/peers_ternary/D={d}"));
    g.throughput(Throughput::Bytes(bytes as u64));
    g.sample_size(10);
    memcpy(&mut g, bytes);
    g.bench_function("ours/bind", |b| {
        b.iter(|| ours[0].bind_into(black_box(&ours[1]), &mut out).unwrap())
    });
    g.bench_function("trit-vsa/bind", |b| {
        b.iter(|| trit_vsa::vsa::bind(black_box(&theirs[0]), black_box(&theirs[1])))
    });
    g.bench_function("ours/bundle16", |b| {
        b.iter(|| TernaryVector::bundle_into(black_box(&ours_all), &mut out).unwrap())
    });
    g.bench_function("trit-vsa/bundle_many16", |b| {
        b.iter(|| trit_vsa::vsa::bundle_many(black_box(&theirs_all)))
    });
    g.bench_function("ours/dot", |b| {
        b.iter(|| black_box(&ours[0]).dot(black_box(&ours[1])).unwrap())
    });
    g.bench_function("trit-vsa/simd_dot", |b| {
        b.iter(|| trit_vsa::simd::simd_dot(black_box(&theirs[0]), black_box(&theirs[1])))
    });
    g.finish();
}

/// Registers the vsa-core benchmark groups.
pub fn benches(c: &mut Criterion) {
    for d in DIMS {
        binary(c, d);
        ternary(c, d);
        real(c, d);
    }
    projection(c);
    #[cfg(feature = "peers")]
    for d in DIMS {
        peers(c, d);
    }
}
