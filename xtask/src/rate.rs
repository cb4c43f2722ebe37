//! `cargo xtask mpi --rate-limited [RATE]`: the char-LM on 4 ranks over a rate-limited
//! loopback, every codec side by side, time to a target loss.
//!
//! Each run starts its own network namespace (`unshare -n`, or `unshare -rn` when not
//! root), brings `lo` up with a 1500-byte MTU (a tbf whose burst is smaller than one
//! 64 KiB loopback packet drops that packet forever), shapes it with `tc qdisc add dev lo
//! root tbf rate RATE burst 64kb latency 50ms`, and runs `mpirun` with OpenMPI forced onto
//! TCP over `lo` (`--mca btl tcp,self --mca btl_tcp_if_include lo`), so every byte crosses
//! the limited link. One f32 run without the limit (same TCP path) checks that the limit
//! bites. Not part of CI.

use std::path::Path;
use std::process::Command;

use crate::mpi::{f, mpi_train_exe, output_json};
use crate::{root, sh};

/// Begin marker of the generated section in `docs/benchmarks.md`.
pub const RATE_BEGIN: &str = "<!-- mpi-rate:begin (cargo xtask mpi --rate-limited) -->";
/// End marker of the generated section.
pub const RATE_END: &str = "<!-- mpi-rate:end -->";

/// Rank counts, one table each.
const RANKS: [usize; 2] = [4, 2];
/// Optimizer steps of every run (held-out loss every 4 steps).
const STEPS: usize = 20;
/// Repeats of every run (same seed: the losses repeat, the times vary).
const REPEATS: usize = 2;

/// One row of the table: a label and the `mpi_train` flags after the common ones.
struct Row {
    label: &'static str,
    flags: &'static [&'static str],
}

const ROWS: &[Row] = &[
    Row {
        label: "f32 gather",
        flags: &["--mode", "f32", "--reduction", "gather"],
    },
    Row {
        label: "f32 sum",
        flags: &["--mode", "f32", "--reduction", "sum"],
    },
    Row {
        label: "bf16 sum",
        flags: &["--mode", "bf16", "--reduction", "sum"],
    },
    Row {
        label: "random-k 10% sum",
        flags: &[
            "--mode",
            "compressed",
            "--method",
            "random-k",
            "--ratio",
            "0.1",
            "--reduction",
            "sum",
        ],
    },
    Row {
        label: "random-k 10% + EF sum",
        flags: &[
            "--mode",
            "compressed",
            "--method",
            "random-k",
            "--ratio",
            "0.1",
            "--error-feedback",
            "--reduction",
            "sum",
        ],
    },
    Row {
        label: "count-sketch 10% sum",
        flags: &[
            "--mode",
            "compressed",
            "--method",
            "count-sketch",
            "--ratio",
            "0.1",
            "--reduction",
            "sum",
        ],
    },
    Row {
        label: "top-k 10% + EF gather",
        flags: &[
            "--mode",
            "compressed",
            "--method",
            "top-k",
            "--ratio",
            "0.1",
            "--reduction",
            "gather",
        ],
    },
    Row {
        label: "ternary gather",
        flags: &["--mode", "ternary", "--reduction", "gather"],
    },
];

/// What one row measured over its repeats.
#[derive(Debug, Clone, PartialEq)]
pub struct Measured {
    /// Row label.
    pub label: String,
    /// Bytes one rank sent per step (frame bytes).
    pub bytes: f64,
    /// Exchange seconds of each repeat.
    pub exch: Vec<f64>,
    /// Training seconds of each repeat.
    pub secs: Vec<f64>,
    /// Held-out curve of each repeat: (training seconds, loss).
    pub curves: Vec<Vec<(f64, f64)>>,
}

/// Median of `v` (NaN when empty).
pub fn median(v: &[f64]) -> f64 {
    let mut s: Vec<f64> = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => 0.5 * (s[n / 2 - 1] + s[n / 2]),
    }
}

/// Training seconds until the held-out loss of `curve` first reaches `target` (None: never).
pub fn time_to(curve: &[(f64, f64)], target: f64) -> Option<f64> {
    curve.iter().find(|p| p.1 <= target).map(|p| p.0)
}

/// Final held-out loss of the first repeat (every repeat runs the same seed).
fn final_loss(m: &Measured) -> f64 {
    m.curves
        .first()
        .and_then(|c| c.last())
        .map_or(f64::NAN, |p| p.1)
}

/// Median and range of the times to `target` over the repeats ("never" when any repeat
/// never reached it), with the median for the speedups.
fn ttt(m: &Measured, target: f64) -> (String, Option<f64>) {
    let t: Option<Vec<f64>> = m.curves.iter().map(|c| time_to(c, target)).collect();
    match t {
        Some(t) if !t.is_empty() => {
            let (lo, hi) = range(&t);
            (
                format!("{:.1} ({lo:.1}–{hi:.1})", median(&t)),
                Some(median(&t)),
            )
        }
        _ => ("never".into(), None),
    }
}

fn range(v: &[f64]) -> (f64, f64) {
    v.iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| {
            (a.min(x), b.max(x))
        })
}

fn speedup(base: Option<f64>, t: Option<f64>) -> String {
    match (base, t) {
        (Some(b), Some(t)) if t > 0.0 => format!("{:.2}×", b / t),
        _ => "—".into(),
    }
}

/// The markdown table of `rows` (the first row is the f32 baseline, a row labelled
/// "bf16 sum" the bf16 one). Two targets: the f32 baseline's final loss, and the worst
/// final loss of all rows (a loss every run reaches).
pub fn table(rows: &[Measured]) -> String {
    let f32_target = rows.first().map_or(f64::NAN, final_loss);
    let common = rows
        .iter()
        .map(final_loss)
        .fold(f64::NEG_INFINITY, f64::max);
    let mut md = format!(
        "Target A = final held-out loss of f32 gather ({f32_target:.4}); target B = the worst \
         final loss of all rows ({common:.4}), which every run reaches. Times: median of \
         {REPEATS} repeats (range in brackets), training seconds on rank 0.\n\n\
         | codec | frame bytes / rank / step | exch s | train s | final loss | to A (s) | to B (s) | B: vs f32 | B: vs bf16 |\n\
         |---|---|---|---|---|---|---|---|---|\n"
    );
    let base = rows.first().map(|m| ttt(m, common).1).unwrap_or(None);
    let bf16 = rows
        .iter()
        .find(|m| m.label.starts_with("bf16"))
        .and_then(|m| ttt(m, common).1);
    for m in rows {
        let (el, eh) = range(&m.exch);
        let (sl, sh) = range(&m.secs);
        let (a, _) = ttt(m, f32_target);
        let (b, bt) = ttt(m, common);
        md.push_str(&format!(
            "| {} | {:.0} | {:.2} ({el:.2}–{eh:.2}) | {:.2} ({sl:.2}–{sh:.2}) | {:.4} | {a} | {b} | {} | {} |\n",
            m.label,
            m.bytes,
            median(&m.exch),
            median(&m.secs),
            final_loss(m),
            speedup(base, bt),
            speedup(bf16, bt),
        ));
    }
    md
}

/// The shell command one run executes in its namespace.
fn netns_script(rate: Option<&str>, mpirun: &str) -> String {
    let shape = rate.map_or(String::new(), |r| {
        format!("tc qdisc add dev lo root tbf rate {r} burst 64kb latency 50ms && ")
    });
    format!("ip link set lo up mtu 1500 && {shape}exec {mpirun}")
}

fn one_run(
    ranks: usize,
    rate: Option<&str>,
    flags: &[&str],
    out: &Path,
) -> Result<serde_json::Value, String> {
    let root_user = sh("id -u") == "0";
    let mut mpirun = String::from("mpirun");
    if root_user {
        mpirun.push_str(" --allow-run-as-root");
    }
    mpirun.push_str(&format!(
        " --oversubscribe --bind-to none -x RAYON_NUM_THREADS=1 --mca btl tcp,self \
         --mca btl_tcp_if_include lo --mca oob_tcp_if_include lo -np {ranks} {} \
         --workload charlm --trainer none --steps {STEPS} --seed 0 {}",
        mpi_train_exe().display(),
        flags.join(" ")
    ));
    let script = format!("{} --out {}", netns_script(rate, &mpirun), out.display());
    let mut c2 = Command::new("unshare");
    c2.arg(if root_user { "-n" } else { "-rn" });
    c2.args(["sh", "-c", &script]);
    c2.current_dir(root());
    output_json(c2, &script, out)
}

fn measured(label: &str, runs: &[serde_json::Value]) -> Measured {
    let curves = runs
        .iter()
        .map(|v| {
            v["curve"]
                .as_array()
                .map(|c| c.iter().map(|p| (f(p, "secs"), f(p, "loss"))).collect())
                .unwrap_or_default()
        })
        .collect();
    Measured {
        label: label.into(),
        bytes: runs.first().map_or(f64::NAN, |v| f(v, "frame_bytes")),
        exch: runs.iter().map(|v| f(v, "exchange_secs")).collect(),
        secs: runs.iter().map(|v| f(v, "secs")).collect(),
        curves,
    }
}

/// Runs every row at `rate` (a tc rate such as `100mbit`) and writes the section.
pub fn rate_limited(rate: &str) -> Result<(), String> {
    if sh("command -v unshare") == "unknown" || sh("command -v tc") == "unknown" {
        return Err("rate-limited runs need unshare (util-linux) and tc (iproute2)".into());
    }
    let out_dir = root().join("target").join("bench-mpi-rate");
    std::fs::create_dir_all(&out_dir).map_err(|e| e.to_string())?;
    let load_before = load_average();
    let mut tables = String::new();
    for ranks in RANKS {
        let mut rows = Vec::new();
        for (i, row) in ROWS.iter().enumerate() {
            let mut runs = Vec::new();
            for k in 0..REPEATS {
                println!("== rate {rate}, {ranks} ranks: {} (repeat {k})", row.label);
                let out = out_dir.join(format!("n{ranks}-row{i}-{k}.json"));
                runs.push(one_run(ranks, Some(rate), row.flags, &out)?);
            }
            rows.push(measured(row.label, &runs));
        }
        println!("== unlimited loopback, {ranks} ranks: f32 gather (does the limit bite?)");
        let out = out_dir.join(format!("n{ranks}-unlimited.json"));
        let free = one_run(ranks, None, ROWS[0].flags, &out)?;
        tables.push_str(&format!("### {ranks} ranks\n\n"));
        tables.push_str(&table(&rows));
        tables.push_str(&format!(
            "\nDoes the limit bite: f32 gather on the same TCP loopback without tbf spent {:.2} s \
             in the exchange ({:.2} s training), against {:.2} s at {rate}.\n\n",
            f(&free, "exchange_secs"),
            f(&free, "secs"),
            median(&rows[0].exch),
        ));
    }
    let mut md = format!(
        "{RATE_BEGIN}\n## Rate-limited link: char-LM, 4 and 2 ranks, {rate}\n\n\
         Regenerated by `cargo xtask mpi --rate-limited {rate}` — do not edit by hand. {date}; \
         {mpi}; {cpu}, {cores} cores; 1-minute load average {load_before} before the runs and \
         {load_after} after them (`/proc/loadavg`; above the core count, other work shared the \
         machine and times are noisy). Each run \
         has its own network namespace (`unshare -n`), `lo` with MTU 1500 shaped by `tc qdisc \
         add dev lo root tbf rate {rate} burst 64kb latency 50ms`, and OpenMPI forced onto TCP \
         over it (`--mca btl tcp,self --mca btl_tcp_if_include lo`): all ranks share \
         the one limited link. Char-LM, `--trainer none`, default lr (2e-3), {STEPS} steps, \
         seed 0, held-out loss every 4 steps; 4 ranks oversubscribe the 2 cores. \
         *exch s* covers encode, transport, decode and sum, including waits for the slowest \
         rank. *Frame bytes* is the message one rank contributes per step; a gathered frame goes to \
         every other rank, a summed one crosses the link about `2(N − 1)/N` times (see \
         `docs/distributed.md`). The speedups compare median times to target B.\n\n",
        date = sh("date -u '+%Y-%m-%d %H:%M UTC'"),
        mpi = sh("mpirun --version | head -1"),
        cpu = sh("lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -1"),
        cores = sh("nproc"),
        load_after = load_average(),
    );
    md.push_str(&tables);
    md.push_str(&format!(
        "Raw results: `target/bench-mpi-rate/*.json`.\n{RATE_END}"
    ));
    let path = root().join("docs").join("benchmarks.md");
    let doc = std::fs::read_to_string(&path).unwrap_or_else(|_| "# Measured results\n".into());
    std::fs::write(&path, replace_section(&doc, &md)).map_err(|e| e.to_string())?;
    println!("wrote {}", path.display());
    Ok(())
}

/// The 1-minute load average (first field of `/proc/loadavg`), or `unknown`.
pub(crate) fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "unknown".into())
}

/// `doc` with its rate-limited section replaced by `md` (appended when absent).
pub fn replace_section(doc: &str, md: &str) -> String {
    crate::replace_section(doc, RATE_BEGIN, RATE_END, md)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(label: &str, curve: Vec<(f64, f64)>) -> Measured {
        Measured {
            label: label.into(),
            bytes: 100.0,
            exch: vec![1.0, 3.0],
            secs: vec![2.0, 4.0],
            curves: vec![
                curve.clone(),
                curve.iter().map(|p| (p.0 * 2.0, p.1)).collect(),
            ],
        }
    }

    #[test]
    fn median_time_to_and_table() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0]), 2.5);
        assert!(median(&[]).is_nan());
        let c = [(1.0, 3.0), (2.0, 2.5), (3.0, 2.0)];
        assert_eq!(time_to(&c, 2.5), Some(2.0));
        assert_eq!(time_to(&c, 1.0), None);
        let rows = vec![
            m("f32 gather", vec![(1.0, 3.0), (4.0, 2.0)]),
            m("bf16 sum", vec![(1.0, 3.0), (2.0, 2.2)]),
            m("x", vec![(1.0, 2.4)]),
        ];
        let t = table(&rows);
        // Target A = 2.0: only f32 reaches it; target B = 2.4 (worst final).
        assert!(
            t.contains("target B = the worst final loss of all rows (2.4000)"),
            "{t}"
        );
        assert!(t.contains("| x | 100 | 2.00 (1.00–3.00) | 3.00 (2.00–4.00) | 2.4000 | never | 1.5 (1.0–2.0) | 4.00× | 2.00× |"), "{t}");
        assert!(t.contains("| f32 gather | 100 | 2.00 (1.00–3.00) | 3.00 (2.00–4.00) | 2.0000 | 6.0 (4.0–8.0) | 6.0 (4.0–8.0) | 1.00× | 0.50× |"), "{t}");
    }

    #[test]
    fn section_is_replaced_or_appended() {
        let md = format!("{RATE_BEGIN}\nnew\n{RATE_END}");
        let doc = format!("# M\nA\n{RATE_BEGIN}\nold\n{RATE_END}\nB\n");
        assert_eq!(replace_section(&doc, &md), format!("# M\nA\n{md}\nB\n"));
        assert_eq!(replace_section("# M\n", &md), format!("# M\n\n{md}\n"));
        assert!(netns_script(Some("100mbit"), "mpirun x").contains("tbf rate 100mbit"));
        assert!(!netns_script(None, "mpirun x").contains("tc "));
    }
}
