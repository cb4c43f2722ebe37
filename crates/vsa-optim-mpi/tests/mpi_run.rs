//! The summed exchange under real `mpirun` on 2 and 4 ranks (feature `mpi`): launches the
//! `mpi_sum` example, which checks on every rank that the summed mode (`MPI_Alltoallv` then
//! `MPI_Allgatherv`) gives the same bits as the gathered mode and as all-gather-then-sum
//! (f32, count sketch, random-k, bf16), that the native `MPI_Allreduce` mode agrees within
//! rounding, that bf16 over `MPI_Allreduce` (a user-defined operation) is within its derived
//! bound of the f32 mean, the same bits on every rank and in a second run, and that the
//! handshake refuses a rank with another reduction (f32 and bf16); and that the momentum
//! codec gives every rank the single-process AdamW direction. `.ci/run` runs
//! it inside `unshare -n` with only loopback up.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `target/<profile>/examples/mpi_sum`, next to this test binary's `deps` folder (cargo
/// builds the examples of the package before its tests).
fn example() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let p = dir.join("examples").join("mpi_sum");
    assert!(
        p.exists(),
        "{} not built (cargo test --features mpi builds it)",
        p.display()
    );
    p
}

fn mpirun(np: usize) -> String {
    let mut child = Command::new("mpirun")
        .args([
            "--allow-run-as-root",
            "--oversubscribe",
            "--bind-to",
            "none",
        ])
        .args(["-np", &np.to_string()])
        .arg(example())
        .env("RUST_BACKTRACE", "0")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mpirun (is OpenMPI installed? see .ci/run)");
    let t0 = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if t0.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            panic!("mpirun -np {np} hung");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let o = child.wait_with_output().expect("output");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "mpirun -np {np} failed:\n{text}");
    text
}

#[test]
fn summed_mode_gives_the_gathered_bits_on_2_and_4_mpi_ranks() {
    for np in [2, 4] {
        let text = mpirun(np);
        // case -> the hash every rank printed
        let mut seen: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for line in text.lines() {
            let w: Vec<&str> = line.split_whitespace().collect();
            match w.as_slice() {
                ["MATCH", case, h] => seen
                    .entry((*case).to_string())
                    .or_default()
                    .push((*h).into()),
                ["ALLREDUCE", h, _] => seen
                    .entry("allreduce".into())
                    .or_default()
                    .push((*h).into()),
                ["BF16ALLREDUCE", h, ratio, _, _] => {
                    let ratio: f64 = ratio.parse().expect("a ratio");
                    assert!(
                        ratio <= 1.0,
                        "np={np}: bf16 all-reduce beyond the bound: {line}"
                    );
                    seen.entry("bf16-allreduce".into())
                        .or_default()
                        .push((*h).into());
                }
                ["REFUSED", ..] => seen.entry("refused".into()).or_default().push(line.into()),
                ["REFUSED-BF16", ..] => seen
                    .entry("refused-bf16".into())
                    .or_default()
                    .push(line.into()),
                ["MISMATCH", ..] | ["NOT", ..] => panic!("np={np}: {line}\n{text}"),
                _ => {}
            }
        }
        let cases = [
            "f32-gather",
            "f32-sum",
            "count-sketch-sum",
            "random-k-sum",
            "bf16-sum",
            "allreduce",
            "bf16-allreduce",
            "bf16-allreduce-rerun",
            "momentum-gather",
            "refused",
            "refused-bf16",
        ];
        for case in cases {
            let v = seen
                .get(case)
                .unwrap_or_else(|| panic!("np={np}: no {case}:\n{text}"));
            assert_eq!(v.len(), np, "np={np} {case}: one line per rank\n{text}");
            assert!(
                v.iter().all(|h| h == &v[0]),
                "np={np} {case}: ranks differ: {v:?}"
            );
        }
        assert_eq!(seen["f32-sum"][0], seen["f32-gather"][0]);
        if np == 2 {
            assert_eq!(seen["bf16-allreduce-one-pair"].len(), np, "{text}");
        }
        assert_eq!(
            seen["refused"][0],
            "REFUSED reduction (gather, sum or allreduce)"
        );
        assert_eq!(
            seen["refused-bf16"][0],
            "REFUSED-BF16 reduction (gather, sum or allreduce)"
        );
    }
}
