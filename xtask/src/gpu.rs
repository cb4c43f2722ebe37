//! `cargo xtask gpu` and `cargo xtask gpu-check`: the CUDA path.
//!
//! * `gpu` (on a machine with a CUDA device and toolkit): runs the trainer's equivalence
//!   tests with the history on the GPU (`VSA_TEST_DEVICE=cuda`, feature `cuda`), then the
//!   trainer-overhead criterion group on the GPU (`VSA_BENCH_DEVICE=cuda`), and writes the
//!   results, naming the device (`nvidia-smi`), into `docs/benchmarks.md` between the
//!   `gpu:begin`/`gpu:end` markers (kept by `cargo xtask bench`).
//! * `gpu-check` (any machine with `nvcc`, no GPU needed): builds the facade's library with
//!   `--features cuda`, which compiles candle's CUDA kernels with nvcc and our code against
//!   candle's CUDA backend; runs and links nothing (linking tests needs cuBLAS, cuRAND, NVRTC
//!   and the driver stub). Verified with PyPI's wheels `nvidia-cuda-nvcc`, `nvidia-cuda-crt`,
//!   `nvidia-nvvm`, `nvidia-cuda-runtime`, `nvidia-cuda-cccl` (CUDA 13.5) unpacked into one
//!   tree, with `PATH=<tree>/nvidia/cu13/bin:$PATH`, `CUDA_ROOT=<tree>/nvidia/cu13`,
//!   `NVCC_APPEND_FLAGS=-I<tree>/nvidia/cu13/include/cccl`, `CUDA_COMPUTE_CAP=90` and
//!   `CUDARC_CUDA_VERSION=13040` (cudarc 0.19 knows CUDA up to 13.4).

use std::path::Path;
use std::process::Command;

const GPU_BEGIN: &str = "<!-- gpu:begin (cargo xtask gpu) -->";
const GPU_END: &str = "<!-- gpu:end -->";

fn output(c: &mut Command) -> Result<String, String> {
    let out = c.output().map_err(|e| format!("{c:?}: {e}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(format!("{c:?} failed ({}):\n{text}", out.status))
    }
}

/// The CUDA device's name and driver, or an error when there is none.
fn device_name() -> Result<String, String> {
    let mut c = Command::new("nvidia-smi");
    c.args([
        "--query-gpu=name,memory.total,driver_version",
        "--format=csv,noheader",
    ]);
    let name = output(&mut c).map_err(|e| format!("no CUDA device found (nvidia-smi): {e}"))?;
    let first = name.lines().next().unwrap_or("").trim().to_string();
    if first.is_empty() {
        return Err("nvidia-smi lists no GPU".into());
    }
    Ok(first)
}

/// `cargo xtask gpu-check`: compile-only check of the CUDA build (see the module docs for
/// the environment).
pub fn gpu_check(root: &Path, mut cargo: Command) -> Result<(), String> {
    cargo
        .current_dir(root)
        .args(["build", "-p", "vsa-optim-rs", "--features", "cuda", "--lib"]);
    let text = output(&mut cargo)?;
    println!("{}", text.lines().last().unwrap_or(""));
    println!("gpu-check: vsa-optim-rs and candle's CUDA kernels compile with --features cuda");
    Ok(())
}

/// `cargo xtask gpu`: equivalence tests and the overhead bench on the GPU, results into
/// `docs/benchmarks.md`.
pub fn gpu(root: &Path, cargo: impl Fn() -> Command) -> Result<(), String> {
    let device = device_name()?;
    println!("GPU: {device}");
    let mut test = cargo();
    test.current_dir(root).env("VSA_TEST_DEVICE", "cuda").args([
        "test",
        "--release",
        "-p",
        "vsa-optim-rs",
        "--features",
        "cuda",
        "--test",
        "trainer",
        "equivalence",
    ]);
    let tests = output(&mut test)?;
    let summary = tests
        .lines()
        .filter(|l| l.starts_with("test result") || l.starts_with("test equivalence"))
        .collect::<Vec<_>>()
        .join("\n");
    println!("{summary}");
    let mut bench = cargo();
    bench
        .current_dir(root)
        .env("VSA_BENCH_DEVICE", "cuda")
        .args([
            "bench",
            "-p",
            "vsa-optim-bench",
            "--features",
            "cuda",
            "--bench",
            "bench_main",
            "--",
            "trainer_overhead",
            "--noplot",
        ]);
    let bench_out = output(&mut bench)?;
    let times: Vec<&str> = bench_out
        .lines()
        .filter(|l| l.contains("time:") || l.starts_with("trainer_overhead"))
        .collect();
    let md = format!(
        "{GPU_BEGIN}\n### GPU: {device}\n\nCommand: `cargo xtask gpu`. Equivalence tests with the \
         history on the GPU:\n\n```text\n{summary}\n```\n\nTrainer overhead per call on the GPU \
         (criterion, `trainer_overhead` group):\n\n```text\n{}\n```\n{GPU_END}",
        times.join("\n")
    );
    let path = root.join("docs/benchmarks.md");
    let doc = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let new = crate::replace_section(&doc, GPU_BEGIN, GPU_END, &md);
    std::fs::write(&path, new).map_err(|e| format!("{}: {e}", path.display()))?;
    println!("wrote the GPU section of {}", path.display());
    Ok(())
}
