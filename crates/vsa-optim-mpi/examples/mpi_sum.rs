//! Run under `mpirun -np N` (feature `mpi`): checks on every rank that the summed exchange
//! gives the same bits as all-gathering the messages and summing them in rank order, and
//! that the handshake refuses a rank with another reduction. The multi-rank test in
//! `tests/mpi_run.rs` launches it on 2 and 4 ranks.
//!
//! Prints one `MATCH <case> <hash>` line per case on every rank (the hash of the averaged
//! gradient's bits, which must agree between ranks), `ALLREDUCE <hash> <max relative
//! difference>` for the native `MPI_Allreduce` mode, `BF16ALLREDUCE <hash> <error / bound>
//! <max error> <max error of the summed bf16 mode>` for bf16 over `MPI_Allreduce` (a
//! user-defined operation; errors against the rank-order f32 mean), and `REFUSED <field>`
//! / `REFUSED-BF16 <field>`; exits with status 1 on a mismatch.

mod common;

use common::{
    bf16_allreduce_error_ratio, bf16_allreduce_rank_order_reference, bf16_sum_reference, filled,
    grads, lens, max_abs_error, method_reference, params,
};
use grad_sketch::{CompressorConfig, Method, MomentumCompressor, MomentumConfig};
use vsa_optim_mpi::reduce::mean_in_rank_order;
use vsa_optim_mpi::{
    Bf16Codec, Error, ExchangeConfig, F32Codec, GradientCodec, GradientExchange, MethodCodec,
    MomentumCodec, MpiWorld, Reduction,
};

const STEPS: usize = 3;

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
            let mut out = filled(0.0);
            ex.mean(s as u64, &grads(rank, s), 0.0, &mut out)?;
            Ok(out)
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
            let mut out = filled(0.0);
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
        check(
            rank,
            case,
            &summed,
            &method_reference(n, cfg, STEPS),
            &mut ok,
        );
    }

    // bf16: f32 sums of the bf16 values in rank order, the sum rounded to bf16.
    let bf16 = exchange(
        &mut world,
        Box::new(Bf16Codec::new(&lens())),
        Reduction::Sum,
    )?;
    let bf16_ref = bf16_sum_reference(n, STEPS);
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

    // bf16 over MPI_Allreduce with the user-defined operation: MPI's pairing, each pair
    // added in f32 and rounded to bf16. Two runs must give the same bits (a fixed rank
    // count and MPI build), within the derived bound of the f32 mean.
    let bf16_codec = || Box::new(Bf16Codec::new(&lens()));
    let first = exchange(&mut world, bf16_codec(), Reduction::Allreduce)?;
    let second = exchange(&mut world, bf16_codec(), Reduction::Allreduce)?;
    check(rank, "bf16-allreduce-rerun", &second, &first, &mut ok);
    if n == 2 {
        // One addition, and bf16_add commutes: whatever MPI does, the rank-order bits.
        let pairs = bf16_allreduce_rank_order_reference(n, STEPS);
        check(rank, "bf16-allreduce-one-pair", &first, &pairs, &mut ok);
    }
    let ratio = bf16_allreduce_error_ratio(n, &first);
    let h = first.iter().fold(0u64, |a, g| a.rotate_left(7) ^ hash(g));
    println!(
        "BF16ALLREDUCE {h:#018x} {ratio:.4} {:e} {:e}",
        max_abs_error(n, &first),
        max_abs_error(n, &bf16)
    );
    if ratio > 1.0 {
        println!("MISMATCH bf16-allreduce beyond the bound ({ratio} × the bound)");
        ok = false;
    }
    // The handshake takes bf16 with the all-reduce (above) and refuses a rank that sums.
    let r = if rank == 1 {
        Reduction::Sum
    } else {
        Reduction::Allreduce
    };
    match GradientExchange::with_reduction(&mut world, bf16_codec(), &params(), config(), r) {
        Err(Error::ConfigMismatch { field, rank: 1, .. }) => println!("REFUSED-BF16 {field}"),
        other => {
            println!("NOT REFUSED: {:?}", other.map(|_| ()));
            ok = false;
        }
    }

    // The momentum scheme over the gathered exchange: every rank returns the AdamW
    // direction of one process that runs one scheme per rank and applies their messages in
    // rank order (2 exact warm-up steps, then top-10% of the momentum with error feedback).
    let momentum = MomentumConfig {
        compressor: CompressorConfig {
            method: Method::TopK { k_fraction: 0.1 },
            seed: 5,
            error_feedback: true,
            dense_warmup_steps: 2,
        },
        ..MomentumConfig::default()
    };
    let got = exchange(
        &mut world,
        Box::new(MomentumCodec::new(&params(), momentum)?),
        Reduction::Gather,
    )?;
    let mut schemes: Vec<MomentumCompressor> = (0..n)
        .map(|_| MomentumCompressor::new(&params(), momentum).expect("a valid config"))
        .collect();
    let expected: Vec<Vec<Vec<f32>>> = (0..STEPS)
        .map(|s| {
            let msgs: Vec<_> = schemes
                .iter_mut()
                .enumerate()
                .map(|(r, c)| c.compress(&grads(r, s)).expect("finite"))
                .collect();
            let mut d = filled(0.0);
            for c in &mut schemes {
                c.apply(&msgs, &mut d).expect("finite moments");
            }
            d
        })
        .collect();
    check(rank, "momentum-gather", &got, &expected, &mut ok);

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
