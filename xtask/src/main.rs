//! `cargo xtask`: project automation.
//!
//! - `cargo xtask demo [ARGS]`: the main job. Builds in release mode and runs the demo binary
//!   (real training, side by side; `cargo xtask demo --help` lists its flags).
//! - `cargo xtask bench [--quick] [--no-peers]`: runs every criterion benchmark (with the memcpy
//!   references and, unless `--no-peers`, the peer groups), runs the demo comparison over 3
//!   seeds (1 with `--quick`), and regenerates `docs/benchmarks.md` and `docs/img/`.
//!   `--report-only` regenerates the documents from the results already under `target/`
//!   (`target/criterion/`, `target/bench-demo/report.md` and its SVGs).
//! - `cargo xtask bench --peers [ARGS]`: only the side-by-side with vsa-optim-rs 0.1.1 (the
//!   excluded `peers/` workspace, see `peers/README.md`; ARGS go to its binary, e.g.
//!   `--reps 7`); writes that section of `docs/benchmarks.md`.
//! - `cargo xtask bench --blocks [ARGS]`: only the per-block skipping table (char-LM with 4
//!   blocks: per-block and whole-model prediction, DropBP controls, the LR-tuned and the
//!   compute-matched plain run; `blocks_report --steps 150 --seeds 3 --retime 2 --write`, about an hour
//!   on 2 cores; ARGS replace the defaults); writes that section of `docs/benchmarks.md`.
//! - `cargo xtask bench --ternary [ARGS]`: only the ternary accumulation frontier
//!   (`ternary_report --write docs/benchmarks.md` in release: the quick-start case, real-gradient
//!   errors and the 600-step digits column; with `--long` the 2400-step digits and char-LM
//!   columns instead; ARGS such as `--rows`, `--seeds`, `--lrs`, `--parts` pass through;
//!   `--long --parts chargrads` writes the real-gradient table on char-LM gradients).
//! - `cargo xtask bench --demo-large [ARGS]`: the demo's large-batch regime with its
//!   accumulator rows (demo ARGS, default `--workload all --seeds 3`), into the `demo-large`
//!   section of `docs/benchmarks.md`.
//! - `cargo xtask mpi [--quick]`: data-parallel runs under `mpirun` (1, 2 and 4 ranks; f32,
//!   ternary and vsa, and at 2 and 4 ranks f32 and bf16 gathered, summed and over
//!   `MPI_Allreduce`, random-k, count sketch and top-k + EF; digits MLP and char-LM), checked
//!   against the single-process reference where the bits must match; writes the "Data-parallel training" section of `docs/benchmarks.md`. Needs
//!   OpenMPI (`apt-get install -y --no-install-recommends libopenmpi-dev openmpi-bin
//!   libclang-dev clang`).
//! - `cargo xtask mpi --rate-limited [RATE]`: the char-LM on 4 ranks over a loopback shaped
//!   to RATE (default `100mbit`) in a private network namespace, every codec side by side,
//!   time to a target loss; writes the "Rate-limited link" section of `docs/benchmarks.md`
//!   (needs root or unprivileged user namespaces, `tc`; not part of CI).

mod gpu;
mod mpi;
mod peers;
mod rate;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(root());
    c
}

fn run(mut c: Command) -> Result<(), String> {
    let shown = format!("{c:?}");
    let status = c.status().map_err(|e| format!("{shown}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{shown} failed with {status}"))
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("demo") => demo(&args[1..]),
        Some("bench") => bench(&args[1..]),
        Some("mpi") => mpi::mpi(&args[1..]),
        Some("gpu") => gpu::gpu(&root(), cargo),
        Some("gpu-check") => gpu::gpu_check(&root(), cargo()),
        Some("-h" | "--help" | "help") | None => {
            println!(
                "usage: cargo xtask <demo [ARGS] | bench [--quick] [--no-peers] [--report-only] | bench --peers [ARGS] | bench --blocks [ARGS] | bench --ternary [ARGS] | bench --demo-large [ARGS] | mpi [--quick] | mpi --rate-limited [RATE]>\n\n\
                 demo   real training runs side by side (see `cargo xtask demo --help`)\n\
                 bench  criterion kernels + demo over seeds; regenerates docs/benchmarks.md\n\
                 bench --peers  side by side with vsa-optim-rs 0.1.1; its section of docs/benchmarks.md\n\
                 bench --blocks per-block skipping of backward work (char-LM); its section of docs/benchmarks.md\n\
                 bench --ternary the ternary accumulation frontier (`--long`: its long columns); its sections of docs/benchmarks.md\n\
                 bench --demo-large the demo's large-batch regime with its accumulator rows (default `--workload all --seeds 3`); its section of docs/benchmarks.md\n\
                 mpi    data-parallel runs under mpirun; regenerates that section of docs/benchmarks.md"
            );
            Ok(())
        }
        Some(other) => Err(format!(
            "unknown task `{other}`; expected `demo`, `bench` or `mpi` (try `cargo xtask --help`)"
        )),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

fn demo_command(args: &[String]) -> Command {
    let mut c = cargo();
    c.args([
        "run",
        "--release",
        "--quiet",
        "-p",
        "vsa-optim-bench",
        "--bin",
        "demo",
        "--",
    ]);
    c.args(args);
    c
}

fn demo(args: &[String]) -> Result<(), String> {
    run(demo_command(args))
}

const DEMO_LARGE_BEGIN: &str = "<!-- demo-large:begin (cargo xtask bench --demo-large) -->";
const DEMO_LARGE_END: &str = "<!-- demo-large:end -->";

/// `cargo xtask bench --demo-large [DEMO ARGS]`: the demo's large-batch regime (which carries
/// the accumulator rows: exact f32 and the ternary accumulator at 1 and 2 trits over the
/// regime's micro-batches), written into its own section of `docs/benchmarks.md`, so that it
/// can be refreshed without the hours of the full `cargo xtask bench`. The demo flags default
/// to `--workload all --seeds 3`; `--regime`, `--out` and `--no-progress` are set here.
fn demo_large(args: &[String]) -> Result<(), String> {
    if let Some(bad) = args
        .iter()
        .find(|a| matches!(a.as_str(), "--regime" | "--out" | "--no-progress"))
    {
        return Err(format!("bench --demo-large sets {bad} itself"));
    }
    let mut demo_args: Vec<String> = args.to_vec();
    if !args.iter().any(|a| a == "--workload") {
        demo_args.extend(["--workload".into(), "all".into()]);
    }
    if !args.iter().any(|a| a == "--seeds") {
        demo_args.extend(["--seeds".into(), "3".into()]);
    }
    let out = root().join("target").join("demo-large");
    let _ = std::fs::remove_file(out.join("report.md"));
    let load_before = rate::load_average();
    let started = std::time::Instant::now();
    let mut c = demo_command(&demo_args);
    c.args(["--regime", "large", "--no-progress", "--out"]);
    c.arg(&out);
    run(c)?;
    let report = std::fs::read_to_string(out.join("report.md"))
        .map_err(|e| format!("reading the demo report: {e}"))?;
    let md = format!(
        "{DEMO_LARGE_BEGIN}\n## Demo, large-batch regime, with the accumulator rows\n\n\
         Regenerated by `cargo xtask bench --demo-large{shown}` (the demo with \
         `--regime large{flags}`) on {date}; {secs:.0} s; 1-minute load average {load_before} \
         at the start and {load_after} at the end on this {cores}-core machine (timings from a \
         loaded machine are indicative; losses and accuracies are seeded and do not depend on \
         load). The rows \"accumulated ×k\" train with the accumulator named (same seed, steps, \
         data and base learning rate as the baseline row). This section supersedes the \
         large-batch tables of the Training section above where the two differ in date.\n\n\
         {report}\n{DEMO_LARGE_END}",
        shown = if args.is_empty() {
            String::new()
        } else {
            format!(" {}", args.join(" "))
        },
        flags = demo_args.iter().fold(String::new(), |acc, a| acc + " " + a),
        date = sh("date -u '+%Y-%m-%d %H:%M UTC'"),
        secs = started.elapsed().as_secs_f64(),
        load_after = rate::load_average(),
        cores = sh("nproc"),
    );
    let path = root().join("docs").join("benchmarks.md");
    let doc = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    std::fs::write(
        &path,
        replace_section(&doc, DEMO_LARGE_BEGIN, DEMO_LARGE_END, &md),
    )
    .map_err(|e| e.to_string())?;
    println!("wrote the demo-large section of {}", path.display());
    Ok(())
}

/// `cargo run --release -p vsa-optim-bench --example NAME --`, ready for the example's flags.
fn report_example(name: &str) -> Command {
    let mut c = cargo();
    c.args([
        "run",
        "--release",
        "-p",
        "vsa-optim-bench",
        "--example",
        name,
        "--",
    ]);
    c
}

fn bench(args: &[String]) -> Result<(), String> {
    if args.first().is_some_and(|a| a == "--peers") {
        return peers::peers(&root(), cargo(), &args[1..]);
    }
    if args.first().is_some_and(|a| a == "--blocks") {
        let mut c = report_example("blocks_report");
        if args.len() > 1 {
            c.args(&args[1..]);
        } else {
            c.args(["--steps", "150", "--seeds", "3", "--retime", "2"]);
        }
        c.arg("--write");
        return run(c);
    }
    if args.first().is_some_and(|a| a == "--demo-large") {
        return demo_large(&args[1..]);
    }
    if args.first().is_some_and(|a| a == "--ternary") {
        let mut c = report_example("ternary_report");
        c.args(&args[1..]);
        c.args(["--write", "docs/benchmarks.md"]);
        return run(c);
    }
    let mut quick = false;
    let mut peers = true;
    let mut report_only = false;
    for a in args {
        match a.as_str() {
            "--quick" => quick = true,
            "--no-peers" => peers = false,
            "--report-only" => report_only = true,
            "--peers" | "--blocks" | "--ternary" | "--demo-large" => {
                return Err(format!(
                    "{a} runs alone and first: cargo xtask bench {a} [ARGS]"
                ));
            }
            other => {
                return Err(format!(
                    "unknown bench flag `{other}` (expected --quick, --no-peers, --report-only)"
                ));
            }
        }
    }
    let crit_dir = root().join("target").join("criterion");
    let demo_out = root().join("target").join("bench-demo");
    if report_only {
        return write_report(&crit_dir, &demo_out, " --report-only");
    }
    let _ = std::fs::remove_dir_all(&crit_dir);
    let mut c = cargo();
    c.args(["bench", "-p", "vsa-optim-bench", "--bench", "bench_main"]);
    if peers {
        c.args(["--features", "peers"]);
    }
    c.arg("--");
    if quick {
        c.args([
            "--warm-up-time",
            "0.5",
            "--measurement-time",
            "1.5",
            "--sample-size",
            "10",
        ]);
    } else {
        c.args(["--warm-up-time", "1", "--measurement-time", "3"]);
    }
    run(c)?;

    let seeds = if quick { "1" } else { "3" };
    let mut d = demo_command(&[
        "--workload".into(),
        "all".into(),
        "--seeds".into(),
        seeds.into(),
        "--out".into(),
        demo_out.display().to_string(),
        "--no-progress".into(),
    ]);
    if quick {
        d.arg("--quick");
    }
    run(d)?;
    write_report(&crit_dir, &demo_out, if quick { " --quick" } else { "" })
}

/// Assembles `docs/benchmarks.md` and `docs/img/` from criterion's results and the demo's
/// report (`--report-only` does just this, from the results already on disk).
fn write_report(crit_dir: &Path, demo_out: &Path, flags: &str) -> Result<(), String> {
    let kernels = kernel_table(crit_dir)?;
    let training = std::fs::read_to_string(demo_out.join("report.md"))
        .map_err(|e| format!("reading the demo report: {e}"))?;
    let img = root().join("docs").join("img");
    std::fs::create_dir_all(&img).map_err(|e| e.to_string())?;
    for entry in std::fs::read_dir(demo_out).map_err(|e| e.to_string())? {
        let p = entry.map_err(|e| e.to_string())?.path();
        if p.extension().is_some_and(|x| x == "svg") && p.to_string_lossy().contains("seed0") {
            let name = p.file_name().expect("a file").to_owned();
            std::fs::copy(&p, img.join(name)).map_err(|e| e.to_string())?;
        }
    }
    let doc = format!(
        "# Measured results\n\n\
         Regenerated by `cargo xtask bench{q}` — do not edit by hand.\n\n\
         - Date: {date}\n- Machine: {cpu}, {cores} cores visible (shared, noisy)\n\
         - Command: `cargo xtask bench{q}`\n\n\
         ## Kernels, as a fraction of memcpy of the same bytes in the same run\n\n\
         `ratio` = memcpy time ÷ kernel time for the same number of input bytes: 1.0 means the \
         kernel streams its input as fast as memcpy copies it.\n\n{kernels}\n\
         ## Training\n\n\
         Wall-clock seconds exclude evaluation. The target is the baseline's final held-out \
         loss; *sustained* is the time from which the loss stays at or below it. The \
         compute-matched baseline is the prefix of the LR-grid run with the trainer's number \
         of backward passes (identical to a shorter run: constant LR, same data order).\n\n\
         {training}\n\nCurves (seed 0): `docs/img/`.\n{mpi}",
        q = flags,
        date = sh("date -u '+%Y-%m-%d %H:%M UTC'"),
        cpu = sh("lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -1"),
        cores = sh("nproc"),
        mpi = current_generated_sections(),
    );
    let path = root().join("docs").join("benchmarks.md");
    std::fs::write(&path, doc).map_err(|e| e.to_string())?;
    println!("wrote {}", path.display());
    Ok(())
}

fn sh(cmd: &str) -> String {
    Command::new("sh")
        .args(["-c", cmd])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// Reads criterion's `new/estimates.json` files and tabulates each benchmark against the
/// memcpy reference of the same group and parameter.
fn kernel_table(dir: &Path) -> Result<String, String> {
    // group -> (function, parameter) -> mean ns
    let mut groups: BTreeMap<String, BTreeMap<(String, String), f64>> = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                if p.file_name().is_some_and(|n| n == "new") {
                    if let Some(v) = read_estimate(&p) {
                        let rel: Vec<String> = p
                            .parent()
                            .and_then(|q| q.strip_prefix(dir).ok())
                            .map(|r| r.iter().map(|s| s.to_string_lossy().into_owned()).collect())
                            .unwrap_or_default();
                        if rel.len() >= 2 && rel[0] != "report" {
                            let group = rel[0].clone();
                            let func = rel[1].clone();
                            let param = rel[2..].join("/");
                            groups.entry(group).or_default().insert((func, param), v);
                        }
                    }
                } else {
                    stack.push(p);
                }
            }
        }
    }
    if groups.is_empty() {
        return Err(format!("no criterion results under {}", dir.display()));
    }
    let mut s = String::from(
        "| group | benchmark | input | mean time | ratio to memcpy |\n|---|---|---|---|---|\n",
    );
    for (g, benches) in &groups {
        for ((f, p), ns) in benches {
            if f.contains("memcpy") {
                continue;
            }
            let reference = benches
                .iter()
                .find(|((f2, p2), _)| f2.contains("memcpy") && p2 == p)
                .map(|(_, v)| *v);
            let ratio = reference.map_or_else(|| "—".to_string(), |r| format!("{:.2}", r / ns));
            s.push_str(&format!(
                "| {g} | {f} | {p} | {} | {ratio} |\n",
                fmt_ns(*ns)
            ));
        }
    }
    Ok(s)
}

fn read_estimate(new_dir: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(new_dir.join("estimates.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v.get("mean")?.get("point_estimate")?.as_f64()
}

fn fmt_ns(ns: f64) -> String {
    if ns >= 1e9 {
        format!("{:.2} s", ns / 1e9)
    } else if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

/// `doc` with the section from `begin` to `end` (markers included) replaced by `md`, which
/// carries both markers; `md` is appended when the section is absent or malformed.
pub(crate) fn replace_section(doc: &str, begin: &str, end: &str, md: &str) -> String {
    match (doc.find(begin), doc.find(end)) {
        (Some(a), Some(b)) if b > a => format!("{}{}{}", &doc[..a], md, &doc[b + end.len()..]),
        _ => format!("{}\n\n{}\n", doc.trim_end(), md),
    }
}

const MPI_BEGIN: &str = "<!-- mpi:begin (cargo xtask mpi) -->";
const MPI_END: &str = "<!-- mpi:end -->";

/// The generated sections currently in `docs/benchmarks.md` that other commands own (the
/// data-parallel section of `cargo xtask mpi`, the ternary frontier and the compression
/// methods of their report examples, …): every `<!-- NAME:begin … -->` … `<!-- NAME:end -->`
/// block, with its markers, in document order. `bench` rewrites the rest of the file and
/// keeps these; empty when there are none.
fn current_generated_sections() -> String {
    let doc =
        std::fs::read_to_string(root().join("docs").join("benchmarks.md")).unwrap_or_default();
    preserved_sections(&doc)
}

/// Every marked section of `doc` (see [`current_generated_sections`]), each on its own lines.
fn preserved_sections(doc: &str) -> String {
    let mut out = String::new();
    let mut rest = doc;
    while let Some(a) = rest.find("<!-- ") {
        let after = &rest[a + 5..];
        let Some(colon) = after.find(':') else { break };
        let name = &after[..colon];
        let is_begin = after[colon..].starts_with(":begin");
        let end_marker = format!("<!-- {name}:end -->");
        match (is_begin, rest[a..].find(&end_marker)) {
            (true, Some(b)) if !name.contains(char::is_whitespace) => {
                let end = a + b + end_marker.len();
                out.push('\n');
                out.push_str(&rest[a..end]);
                out.push('\n');
                rest = &rest[end..];
            }
            _ => rest = &rest[a + 5..],
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{preserved_sections, replace_section};

    #[test]
    fn replace_section_replaces_in_place_or_appends() {
        let (b, e) = ("<!-- s:begin (x) -->", "<!-- s:end -->");
        let md = format!("{b}\nnew\n{e}");
        let doc = format!("# M\nA\n{b}\nold\n{e}\nB\n");
        assert_eq!(
            replace_section(&doc, b, e, &md),
            format!("# M\nA\n{b}\nnew\n{e}\nB\n")
        );
        assert_eq!(
            replace_section("# M\nA\n", b, e, &md),
            format!("# M\nA\n\n{md}\n")
        );
        // An end marker before the begin marker is not a section: append, keep the rest.
        let odd = format!("# M\n{e}\n{b}\n");
        assert_eq!(
            replace_section(&odd, b, e, &md),
            format!("# M\n{e}\n{b}\n\n{md}\n")
        );
    }

    #[test]
    fn bench_keeps_every_marked_section_in_order() {
        let doc = "# Measured\nkernels\n<!-- a:begin (cmd a) -->\nA1\n<!-- a:end -->\ntext\n\
                   <!-- img: not a section -->\n<!-- b:begin -->\nB\n<!-- b:end -->\n<!-- c:begin -->\nunclosed\n";
        assert_eq!(
            preserved_sections(doc),
            "\n<!-- a:begin (cmd a) -->\nA1\n<!-- a:end -->\n\n<!-- b:begin -->\nB\n<!-- b:end -->\n"
        );
        assert_eq!(preserved_sections("no markers"), "");
    }
}
