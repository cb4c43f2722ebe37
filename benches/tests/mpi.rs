//! Multi-rank tests under real `mpirun` (feature `mpi`; `.ci/run` installs OpenMPI and runs
//! them inside `unshare -n` with only loopback up).
//!
//! Each test launches `mpi_train` on 2 or 4 ranks and checks what the ranks printed or wrote:
//! f32 weights equal the single-process reference bit for bit, predicted steps make no
//! collective call, compressed modes train, bf16 over `MPI_Allreduce` repeats its bits, a
//! killed rank stops the job and a resume from the last checkpoint ends with the same
//! weights, and misconfigured ranks all fail with the same typed error.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const EXE: &str = env!("CARGO_BIN_EXE_mpi_train");

/// Runs `mpi_train` on `np` ranks; fails the test if the job runs past `limit` (a hang).
fn mpirun(np: usize, args: &[&str], limit: Duration) -> Output {
    let mut c = Command::new("mpirun");
    c.args([
        "--allow-run-as-root",
        "--oversubscribe",
        "--bind-to",
        "none",
    ]);
    // No backtraces: error lines stay short single writes that mpirun forwards whole.
    c.env("RUST_BACKTRACE", "0");
    c.args(["-x", "RAYON_NUM_THREADS=1", "-x", "RUST_BACKTRACE"]);
    c.args(["-np", &np.to_string(), EXE]);
    c.args(args);
    wait_with_limit(c, limit)
}

fn reference(np: usize, args: &[&str]) -> Output {
    let mut c = Command::new(EXE);
    c.args(args);
    c.args(["--reference", &np.to_string()]);
    wait_with_limit(c, Duration::from_secs(300))
}

fn wait_with_limit(mut c: Command, limit: Duration) -> Output {
    let shown = format!("{c:?}");
    let mut child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{shown}: {e} (is OpenMPI installed? see .ci/run)"));
    let t0 = Instant::now();
    loop {
        if child.try_wait().expect("wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            let o = child.wait_with_output().expect("output");
            panic!(
                "{shown} still running after {limit:?} (hung):\n{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn ok(o: Output) -> Output {
    assert!(
        o.status.success(),
        "failed with {}:\n{}",
        o.status,
        text(&o)
    );
    o
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vsa-mpi-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).expect("result file")).expect("json")
}

/// Runs `mpi_train args --out DIR/NAME.json` on `np` ranks within `limit`, checks that it
/// succeeded and returns the result file.
fn train(np: usize, dir: &Path, name: &str, args: &[&str], limit: Duration) -> serde_json::Value {
    let out = dir.join(format!("{name}.json"));
    let mut a = args.to_vec();
    a.extend(["--out", out.to_str().unwrap()]);
    ok(mpirun(np, &a, limit));
    json(&out)
}

fn u(v: &serde_json::Value, k: &str) -> u64 {
    v[k].as_u64()
        .unwrap_or_else(|| panic!("{k} missing in {v}"))
}

fn final_metric(v: &serde_json::Value) -> f64 {
    v["curve"].as_array().expect("curve").last().expect("point")["metric"]
        .as_f64()
        .expect("metric")
}

/// Runs `mpi_train args extra` on `np` ranks and the single-process reference with `args`
/// (no `extra`), and returns both results.
fn run_and_reference(
    dir: &Path,
    name: &str,
    np: usize,
    args: &[&str],
    extra: &[&str],
) -> (serde_json::Value, serde_json::Value) {
    let refo = dir.join(format!("{name}{np}-ref.json"));
    let mut a = args.to_vec();
    a.extend(extra);
    let v = train(
        np,
        dir,
        &format!("{name}{np}"),
        &a,
        Duration::from_secs(300),
    );
    let mut a = args.to_vec();
    a.extend(["--out", refo.to_str().unwrap()]);
    ok(reference(np, &a));
    (v, json(&refo))
}

#[test]
fn f32_ranks_match_the_single_process_reference_bit_for_bit() {
    let dir = tmp("f32");
    let args = ["--mode", "f32", "--trainer", "best", "--steps", "40"];
    for np in [2usize, 4] {
        let (v, r) = run_and_reference(&dir, "np", np, &args, &[]);
        assert_eq!(u(&v, "weights_hash"), u(&r, "weights_hash"), "np {np}");
        assert_eq!(u(&v, "trainer_digest"), u(&r, "trainer_digest"), "np {np}");
        // The trainer predicted some steps, and they made no collective call: the total is
        // the handshake (2 MPI calls), 2 per exchanged step, and the two final agreement
        // checks (2 each).
        let (bw, pr) = (u(&v, "backward_steps"), u(&v, "predicted_steps"));
        assert_eq!(bw + pr, 40);
        assert!(pr >= 5, "predicted {pr}");
        assert_eq!(u(&v, "calls_in_predicted_steps"), 0);
        assert_eq!(u(&v, "collective_calls"), 2 + 2 * bw + 4);
        assert_eq!(u(&v, "frame_bytes"), 24 + 4 * 9610);
    }
    // The char-LM too (3 steps, one micro-batch per rank): bit-identical to the reference.
    let args = ["--workload", "charlm", "--trainer", "none", "--steps", "3"];
    let (v, r) = run_and_reference(&dir, "lm", 2, &args, &[]);
    assert_eq!(u(&v, "weights_hash"), u(&r, "weights_hash"));
}

#[test]
fn summed_reductions_train_to_the_gathered_bits() {
    // The reduce-scatter sum adds every element in rank order, as the all-gather does, so
    // a whole training run gives the same weights: f32 at 2 and 4 ranks against the
    // single-process reference, and random-k (a linear, shared-mask method) summed
    // against gathered. The native all-reduce is only checked to train: its summation
    // order is MPI's.
    let dir = tmp("summed");
    let args = ["--mode", "f32", "--trainer", "best", "--steps", "40"];
    for np in [2usize, 4] {
        let (v, r) = run_and_reference(&dir, "sum", np, &args, &["--reduction", "sum"]);
        assert_eq!(v["reduction"], "sum");
        assert_eq!(u(&v, "weights_hash"), u(&r, "weights_hash"), "np {np}");
        assert_eq!(u(&v, "trainer_digest"), u(&r, "trainer_digest"), "np {np}");
    }
    // Random-k with error feedback sends its values unscaled: summed and gathered add the
    // same numbers in the same order. Without it, gathered scales each rank's values by
    // 1/ratio before the sum and summed scales the sum once, so only the accuracy agrees.
    let mut runs = Vec::new();
    for ef in [true, false] {
        for reduction in ["gather", "sum"] {
            let mut a = vec![
                "--mode",
                "compressed",
                "--method",
                "random-k",
                "--ratio",
                "0.1",
                "--reduction",
                reduction,
                "--trainer",
                "none",
                "--steps",
                "30",
            ];
            if ef {
                a.push("--error-feedback");
            }
            let name = format!("randk-{reduction}-{ef}");
            let v = train(2, &dir, &name, &a, Duration::from_secs(300));
            assert_eq!(u(&v, "backward_steps"), 30);
            runs.push((u(&v, "weights_hash"), final_metric(&v)));
        }
    }
    assert_eq!(runs[0].0, runs[1].0, "random-k + EF summed vs gathered");
    assert!(
        (runs[2].1 - runs[3].1).abs() < 1.0,
        "random-k summed {} vs gathered {}",
        runs[3].1,
        runs[2].1
    );
    let a = [
        "--reduction",
        "allreduce",
        "--trainer",
        "none",
        "--steps",
        "30",
    ];
    let v = train(2, &dir, "allreduce", &a, Duration::from_secs(300));
    assert_eq!(v["reduction"], "allreduce");
    assert!(
        final_metric(&v) > 50.0,
        "allreduce metric {}",
        final_metric(&v)
    );
    // A non-linear method cannot be summed: every rank fails with the same typed error.
    let a = [
        "--mode",
        "compressed",
        "--method",
        "top-k",
        "--reduction",
        "sum",
        "--steps",
        "2",
    ];
    let o = mpirun(2, &a, Duration::from_secs(120));
    every_rank_failed_with(&o, 2, "invalid config `reduction`");
}

#[test]
fn bf16_over_mpi_allreduce_trains_with_the_same_bits_twice() {
    // bf16 over MPI_Allreduce with the user-defined operation (each pair added in f32 and
    // rounded to bf16): reproducible for a fixed rank count and MPI build, so two runs end
    // with the same weights. At 2 ranks there is one addition per element, the same one the
    // summed mode makes (the f32 sum of the two bf16 values rounded to bf16), so the weights
    // equal the summed run's bit for bit; at 4 ranks MPI's pairing rounds 3 times, and the
    // run is only checked to train.
    let dir = tmp("bf16-allreduce");
    let common = ["--mode", "bf16", "--trainer", "none", "--steps", "30"];
    for np in [2usize, 4] {
        let mut hashes = Vec::new();
        for k in 0..2 {
            let mut a = common.to_vec();
            a.extend(["--reduction", "allreduce"]);
            let v = train(
                np,
                &dir,
                &format!("all-{np}-{k}"),
                &a,
                Duration::from_secs(300),
            );
            assert_eq!(v["reduction"], "allreduce");
            assert_eq!(u(&v, "backward_steps"), 30);
            assert!(
                final_metric(&v) > 50.0,
                "np {np}: bf16 allreduce metric {}",
                final_metric(&v)
            );
            hashes.push(u(&v, "weights_hash"));
        }
        assert_eq!(hashes[0], hashes[1], "np {np}: two runs, other bits");
        if np == 2 {
            let mut a = common.to_vec();
            a.extend(["--reduction", "sum"]);
            let v = train(np, &dir, "sum-2", &a, Duration::from_secs(300));
            assert_eq!(
                u(&v, "weights_hash"),
                hashes[0],
                "2 ranks: allreduce vs sum"
            );
        }
    }
}

#[test]
fn compressed_modes_train_within_their_bounds() {
    // Digits MLP, full batch split over 2 ranks, 300 steps, no trainer, lr 1e-3, seed 0.
    // Measured (release, 2026-11-26): f32 90.24%, ternary 89.23%, vsa (10x, error feedback)
    // 87.21%. Bounds: ternary within 2 points and vsa within 4 points of f32 -- the same
    // tolerances as the single-process tests of issues 3 and 6 (benches/tests/ternary.rs,
    // compress.rs); the issues' goals (1 and 2 points) are not met by vsa at 300 steps,
    // see docs/benchmarks.md.
    let dir = tmp("modes");
    let mut acc = Vec::new();
    for mode in ["f32", "ternary", "vsa"] {
        let a = ["--mode", mode, "--trainer", "none"];
        let v = train(2, &dir, mode, &a, Duration::from_secs(600));
        assert_eq!(u(&v, "backward_steps"), 300);
        acc.push((final_metric(&v), u(&v, "frame_bytes")));
    }
    let (f32_acc, f32_bytes) = acc[0];
    assert!(f32_acc > 85.0, "f32 {f32_acc}");
    assert!(
        acc[1].0 > f32_acc - 2.0,
        "ternary {} vs {f32_acc}",
        acc[1].0
    );
    assert!(acc[2].0 > f32_acc - 4.0, "vsa {} vs {f32_acc}", acc[2].0);
    // Ternary wire size: per parameter 4 bytes per 320-element block + 1 byte per 5 trits.
    let tern: u64 = [8192u64, 128, 1280, 10]
        .iter()
        .map(|&n| 4 * n.div_ceil(320) + n.div_ceil(5))
        .sum();
    assert_eq!(acc[1].1, 24 + tern);
    assert!(f32_bytes > 18 * acc[1].1, "{f32_bytes} vs {}", acc[1].1);
    assert!(f32_bytes > 9 * acc[2].1, "{f32_bytes} vs {}", acc[2].1);
}

#[test]
fn a_killed_rank_stops_the_job_and_resume_gives_the_same_weights() {
    let dir = tmp("kill");
    let ck = dir.join("ck");
    let common = [
        "--mode",
        "vsa",
        "--trainer",
        "best",
        "--steps",
        "60",
        "--checkpoint-every",
        "10",
        "--checkpoint-dir",
        ck.to_str().unwrap(),
    ];
    let mut a = common.to_vec();
    a.extend(["--kill-rank", "1", "--kill-step", "25"]);
    // A hang is what this guards against: a generous bound (the run itself takes seconds),
    // so that a loaded machine does not fail it.
    let o = mpirun(2, &a, Duration::from_secs(600));
    let t = text(&o);
    // mpirun reports a rank killed by SIGKILL through its own exit status, 128 + 9 (OpenMPI
    // 4.1), or is itself ended by that signal; not the exit code 2 of a rank that returned an
    // error. Its wording is not relied on.
    use std::os::unix::process::ExitStatusExt;
    assert!(
        o.status.code() == Some(128 + 9) || o.status.signal() == Some(9),
        "the job must end by the rank's SIGKILL, got {}:\n{t}",
        o.status
    );
    assert!(t.contains("killing myself"), "{t}");
    assert_eq!(
        std::fs::read_to_string(ck.join("LATEST")).unwrap().trim(),
        "20"
    );

    let resumed = dir.join("resumed.json");
    let mut a = common.to_vec();
    a.extend(["--resume", "--out", resumed.to_str().unwrap()]);
    ok(mpirun(2, &a, Duration::from_secs(300)));
    let straight = dir.join("straight.json");
    // The same run without checkpoints: the first six arguments of `common`.
    let mut a = common[..6].to_vec();
    a.extend(["--out", straight.to_str().unwrap()]);
    ok(mpirun(2, &a, Duration::from_secs(300)));
    // A resume on another number of ranks is refused on every rank, not silently wrong.
    let mut a = common.to_vec();
    a.push("--resume");
    let o = mpirun(4, &a, Duration::from_secs(120));
    assert!(!o.status.success());
    assert!(
        text(&o).contains("was written by 2 ranks, this run has 4"),
        "{}",
        text(&o)
    );
    let (r, s) = (json(&resumed), json(&straight));
    assert_eq!(u(&r, "resumed_from"), 20);
    assert_eq!(u(&r, "weights_hash"), u(&s, "weights_hash"));
    assert_eq!(u(&r, "trainer_digest"), u(&s, "trainer_digest"));
    assert_eq!(
        u(&r, "backward_steps") + u(&r, "predicted_steps"),
        60,
        "the resumed run's counters continue from the checkpoint"
    );
}

#[test]
fn misconfigured_ranks_all_fail_with_the_same_typed_error() {
    for (mismatch, field) in [
        ("seed", "seed is 0 on rank 0 but 1 on rank 1"),
        ("mode", "mode is f32 on rank 0 but ternary on rank 1"),
        (
            "shape",
            "total gradient elements is 9610 on rank 0 but 9611 on rank 1",
        ),
    ] {
        let o = mpirun(
            2,
            &["--steps", "5", "--mismatch", mismatch],
            Duration::from_secs(120),
        );
        every_rank_failed_with(
            &o,
            2,
            &format!("configuration mismatch between ranks: {field}"),
        );
    }
}

/// Asserts that the job failed and that each of its `np` ranks printed `error` as its
/// gradient-exchange error.
fn every_rank_failed_with(o: &Output, np: usize, error: &str) {
    let t = text(o);
    assert!(!o.status.success(), "the job should fail:\n{t}");
    for rank in 0..np {
        let line = format!("rank {rank}: error: gradient exchange: {error}");
        assert!(t.contains(&line), "missing {line:?} in\n{t}");
    }
}

#[test]
fn an_oversize_message_stops_every_rank_together() {
    // Rank 1's transport takes at most 1000 bytes (MPI's own limit is 2^31 - 1: an f32
    // frame of about 512M parameters). The 72-byte handshake fits; the first 38,464-byte
    // gradient frame does not, and both ranks learn it from the gathered lengths: both
    // report the same error and exit, neither waits.
    let o = mpirun(
        2,
        &[
            "--mode",
            "f32",
            "--trainer",
            "none",
            "--steps",
            "5",
            "--limit-rank",
            "1",
            "--limit-bytes",
            "1000",
        ],
        Duration::from_secs(300),
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    every_rank_failed_with(
        &o,
        2,
        "rank 0's message of 38464 bytes at offset 0 of the gathered buffer exceeds the transport's limit of 1000 bytes",
    );
}

#[test]
fn a_nan_on_one_rank_stops_every_rank_together() {
    let o = mpirun(
        4,
        &["--steps", "20", "--nan-rank", "2", "--nan-step", "5"],
        Duration::from_secs(120),
    );
    every_rank_failed_with(&o, 4, "rank 2 had a non-finite gradient or loss at step 5");
}
