//! A fixed workload for profilers: `steps` accumulator steps over `n` elements of the
//! accumulate bench's input, at `trits` trits per element with the default scales.
//!
//! ```text
//! cargo build --profile bench -p ternary-quant --example step_profile
//! valgrind --tool=cachegrind --cache-sim=no target/release/examples/step_profile 1048576 10 1
//! ```
//!
//! Instructions per element of one step = (Ir with `steps = 10` − Ir with `steps = 0`) /
//! (10·n): the second run counts the set-up alone. Prints the time per step (meaningless
//! under valgrind) and a hash of the packed state, so that two builds can be checked for
//! identical output.
use ternary_quant::{AccumulatorConfig, PackedAccumulator};

fn arg(i: usize, default: usize) -> usize {
    std::env::args()
        .nth(i)
        .map_or(default, |s| s.parse().expect("a non-negative integer"))
}

fn main() {
    let (n, steps, trits) = (arg(1, 1 << 20), arg(2, 10), arg(3, 1));
    // The accumulate bench's input: a sine with per-64-element magnitudes over 8 octaves.
    let x: Vec<f32> = (0..n)
        .map(|i| (i as f32 * 0.618).sin() * 2f32.powi((i / 64 % 8) as i32 - 4))
        .collect();
    let cfg = AccumulatorConfig {
        accumulation_steps: usize::MAX,
        trits_per_element: u8::try_from(trits).expect("1, 2, 3 or 5"),
        ..AccumulatorConfig::default()
    };
    let mut acc = PackedAccumulator::new(n, cfg).expect("a valid configuration");
    let t = std::time::Instant::now();
    for _ in 0..steps {
        acc.accumulate(&x)
            .expect("finite input of the right length");
    }
    let per_step = t.elapsed().as_secs_f64() / steps.max(1) as f64;
    let h = acc
        .state()
        .trits
        .iter()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
    println!(
        "n {n}, {steps} steps, {trits} trits: {:.3} ms per step, state hash {h:#018x}",
        per_step * 1e3
    );
}
