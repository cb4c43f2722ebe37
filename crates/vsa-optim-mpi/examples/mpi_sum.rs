//! Run under `mpirun -np N` (feature `mpi`): checks on every rank that the summed exchange
//! gives the same bits as all-gathering the messages and summing them in rank order, and
//! that the handshake refuses a rank with another reduction. The multi-rank test in
//! `tests/mpi_run.rs` launches it on 2 and 4 ranks.
//!
//! Prints one `MATCH <case> <hash>` line per case on every rank (the hash of the averaged
//! gradient's bits, which must agree between ranks), `ALLREDUCE <hash> <max relative
//! difference>` for the native `MPI_Allreduce` mode, and `REFUSED <field>`; exits with
//! status 1 on a mismatch.

use grad_sketch::{Compressor, CompressorConfig, Method};
use vsa_optim_mpi::reduce::{divide, mean_in_rank_order};
use vsa_optim_mpi::{
    Bf16Codec, Error, ExchangeConfig, F32Codec, GradientCodec, GradientExchange, MethodCodec,
    MpiWorld, Reduction, bf16_to_f32, f32_to_bf16,
};

const STEPS: usize = 3;

/// Sorted by name; 91 + 5 + 60 = 156 elements (uneven chunks on 4 ranks for the sketch).
fn params() -> Vec<(String, Vec<usize>)> {
    vec![
        ("a".to_string(), vec![7, 13]),
        ("b".to_string(), vec![5]),
        ("c".to_string(), vec![3, 4, 5]),
    ]
}

fn lens() -> Vec<usize> {
    params().iter().map(|(_, s)| s.iter().product()).collect()
}

/// Rank `r`'s gradient at `step`, the same on every process: heavy entries over noise.
fn grads(r: usize, step: usize) -> Vec<Vec<f32>> {
    lens()
        .iter()
        .enumerate()
        .map(|(k, &n)| {
            (0..n)
                .map(|j| {
                    let x = ((r * 7919 + step * 104_729 + k * 31 + j) as f32 * 0.618).sin();
                    if j % 17 == 3 { 20.0 * x } else { 0.1 * x }
                })
                .collect()
        })
        .collect()
}

fn hash(x: &[Vec<f32>]) -> u64 {
    x.iter().flatten().fold(0xcbf2_9ce4_8422_2325u64, |h, v| {
        (h ^ u64::from(v.to_bits())).wrapping_mul(0x100_0000_01b3)
    })
}

fn config() -> ExchangeConfig {
    ExchangeConfig {
        seed: 3,
        user_fingerprint: 1,
    }
}

fn zeros() -> Vec<Vec<f32>> {
    lens().iter().map(|&n| vec![0f32; n]).collect()
}

/// Runs the steps with `codec` and `reduction`, returning the averaged gradient per step.
fn exchange(
    world: &mut MpiWorld,
    codec: Box<dyn GradientCodec + Send>,
    reduction: Reduction,
) -> vsa_optim_mpi::Result<Vec<Vec<Vec<f32>>>> {
    let rank = vsa_optim_mpi::Collective::rank(world);
    let mut ex = GradientExchange::with_reduction(world, codec, &params(), config(), reduction)?;
    (0..STEPS)
        .map(|s| {
            let mut out = zeros();
            ex.mean(s as u64, &grads(rank, s), 0.0, &mut out)?;
            Ok(out)
        })
        .collect()
}

fn sketch_reference(n: usize, cfg: CompressorConfig) -> Vec<Vec<Vec<f32>>> {
    let mut cs: Vec<Compressor> = (0..n)
        .map(|_| Compressor::new(&params(), cfg).expect("valid"))
        .collect();
    (0..STEPS)
        .map(|s| {
            let msgs: Vec<_> = cs
                .iter_mut()
                .enumerate()
                .map(|(r, c)| c.compress(&grads(r, s)).expect("finite"))
                .collect();
            let mut sum = msgs[0].clone();
            for m in &msgs[1..] {
                cs[0].accumulate(&mut sum, m).expect("linear");
            }
            let mut d = cs[0].decompress(&sum).expect("valid");
            d.iter_mut().for_each(|v| divide(v, n));
            d
        })
        .collect()
}

fn check(
    rank: usize,
    case: &str,
    got: &[Vec<Vec<f32>>],
    expected: &[Vec<Vec<f32>>],
    ok: &mut bool,
) {
    let same = got
        .iter()
        .zip(expected)
        .all(|(g, e)| hash(g) == hash(e) && g == e);
    let h = got.iter().fold(0u64, |a, g| a.rotate_left(7) ^ hash(g));
    if same {
        println!("MATCH {case} {h:#018x}");
    } else {
        println!("MISMATCH {case} on rank {rank}");
        *ok = false;
    }
}

fn main() -> vsa_optim_mpi::Result<()> {
    let mut world = MpiWorld::init()?;
    let (rank, n) = {
        use vsa_optim_mpi::Collective;
        (world.rank(), world.size())
    };
    let mut ok = true;
    let f32_codec = || Box::new(F32Codec::new(&lens()));

    // f32: summed against gathered (and against a single-process rank-order mean).
    let gathered = exchange(&mut world, f32_codec(), Reduction::Gather)?;
    let summed = exchange(&mut world, f32_codec(), Reduction::Sum)?;
    let local: Vec<Vec<Vec<f32>>> = (0..STEPS)
        .map(|s| {
            let parts: Vec<Vec<Vec<f32>>> = (0..n).map(|r| grads(r, s)).collect();
            let refs: Vec<&[Vec<f32>]> = parts.iter().map(Vec::as_slice).collect();
            let mut out = zeros();
            mean_in_rank_order(&refs, &mut out).expect("same layout");
            out
        })
        .collect();
    check(rank, "f32-gather", &gathered, &local, &mut ok);
    check(rank, "f32-sum", &summed, &gathered, &mut ok);

    // Count sketch (heavy hitters) and random-k: summed against all-gather-then-sum.
    let methods = [
        (
            "count-sketch-sum",
            Method::CountSketch {
                rows: 3,
                ratio: 0.3,
                k_fraction: 0.1,
            },
        ),
        ("random-k-sum", Method::RandomK { ratio: 0.25 }),
    ];
    for (case, method) in methods {
        let cfg = CompressorConfig {
            method,
            seed: 17,
            error_feedback: true,
            dense_warmup_steps: 0,
        };
        let codec = Box::new(MethodCodec::new(&params(), cfg)?);
        let summed = exchange(&mut world, codec, Reduction::Sum)?;
        check(rank, case, &summed, &sketch_reference(n, cfg), &mut ok);
    }

    // bf16: f32 sums of the bf16 values in rank order, the sum rounded to bf16.
    let round = |x: f32| bf16_to_f32(f32_to_bf16(x));
    let bf16 = exchange(
        &mut world,
        Box::new(Bf16Codec::new(&lens())),
        Reduction::Sum,
    )?;
    let bf16_ref: Vec<Vec<Vec<f32>>> = (0..STEPS)
        .map(|s| {
            let parts: Vec<Vec<Vec<f32>>> = (0..n).map(|r| grads(r, s)).collect();
            let mut out = zeros();
            for (k, o) in out.iter_mut().enumerate() {
                for (j, x) in o.iter_mut().enumerate() {
                    let mut acc = round(parts[0][k][j]);
                    for p in &parts[1..] {
                        acc += round(p[k][j]);
                    }
                    *x = round(acc) / n as f32;
                }
            }
            out
        })
        .collect();
    check(rank, "bf16-sum", &bf16, &bf16_ref, &mut ok);

    // Native MPI_Allreduce: MPI's summation order, so compared within rounding.
    let reduced = exchange(&mut world, f32_codec(), Reduction::Allreduce)?;
    let worst = reduced
        .iter()
        .zip(&local)
        .flat_map(|(a, b)| a.iter().flatten().zip(b.iter().flatten()))
        .map(|(a, b)| (a - b).abs() / b.abs().max(1e-3))
        .fold(0f32, f32::max);
    let h = reduced.iter().fold(0u64, |a, g| a.rotate_left(7) ^ hash(g));
    println!("ALLREDUCE {h:#018x} {worst:e}");
    if worst > 1e-5 {
        ok = false;
    }

    // The handshake refuses a rank with another reduction, on every rank.
    let r = if rank == 1 {
        Reduction::Gather
    } else {
        Reduction::Sum
    };
    match GradientExchange::with_reduction(&mut world, f32_codec(), &params(), config(), r) {
        Err(Error::ConfigMismatch { field, rank: 1, .. }) => println!("REFUSED {field}"),
        other => {
            println!("NOT REFUSED: {:?}", other.map(|_| ()));
            ok = false;
        }
    }
    world.barrier();
    if !ok {
        std::process::exit(1);
    }
    Ok(())
}
