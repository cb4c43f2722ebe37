//! End-to-end checks of VSA gradient compression on the digits MLP: reconstruction quality of
//! real gradients against the √ρ bound, and training with compressed gradients.

use candle_core::Device;
use vsa_optim_bench::compress_runs::{GradientPath, quality, task_gradients, train_digits};
use vsa_optim_bench::tasks::DigitsTask;
use vsa_optim_rs::compress::{BundleQuantization as Q, Reconstruction as R};

/// The exact run learned (over 85% held-out accuracy) and the compressed one (`what`)
/// stays within `points` percentage points of it.
fn assert_learned_and_within(exact: f64, compressed: f64, points: f64, what: &str) {
    assert!(exact > 85.0, "exact {exact}");
    assert!(
        compressed > exact - points,
        "{what} {compressed} vs exact {exact}"
    );
}

#[test]
fn digits_gradients_reach_the_sqrt_rho_bound() {
    let task = DigitsTask::new(Some(64), 1, &Device::Cpu).unwrap();
    let grads = task_gradients(&task, 0, 20).unwrap();
    assert_eq!(grads.iter().map(|g| g.values.len()).sum::<usize>(), 9610);
    let configs: Vec<_> = [0.5, 0.25, 0.1, 0.01]
        .into_iter()
        .flat_map(|r| [(r, R::Projection, Q::F32), (r, R::NormMatched, Q::F32)])
        .collect();
    // Mean over 16 compressor seeds. E[cos²] = m/n exactly for any fixed gradient (the
    // expectation is over the keys); E[cos] falls short of √(m/n) only by the Jensen gap,
    // which is small once m ≥ MIN_SLOTS = 8. The smallest tensor here (l1.bias, 128
    // elements, 13 slots at ρ = 0.1) has a per-seed relative sd of cos ≈ √(2/13)/2 ≈ 0.2, so
    // the 16-seed mean has sd ≈ 0.05·√ρ: the 0.9·√ρ floor sits > 2σ below the measured
    // ≈ 1.0·√ρ (docs/compression.md §6); l2.bias (10 elements) gets 8 slots, cos ≈ 0.9.
    let rows = quality(&grads, &configs, 16).unwrap();
    for r in &rows {
        // The goal of the issue: cosine ≥ 0.9 · √ρ for every tensor and ratio.
        assert!(
            r.cosine >= 0.9 * r.ratio.sqrt(),
            "{} ρ={} {:?}: cos {:.3} < 0.9·√ρ",
            r.param,
            r.ratio,
            r.reconstruction,
            r.cosine
        );
        match r.reconstruction {
            // Orthogonal projection: norm ratio equals cosine exactly (per seed).
            R::Projection => assert!((r.norm_ratio - r.cosine).abs() < 1e-4),
            // Norm-matched: exactly the true norm.
            _ => assert!((r.norm_ratio - 1.0).abs() < 1e-4),
        }
        if r.param == "all" {
            // Bytes: 36 header + 8 sizes per tensor + 4 per slot (+ 4 per norm).
            let norms = if r.reconstruction == R::NormMatched {
                16
            } else {
                0
            };
            assert_eq!(r.set_bytes, 36 + 4 * 8 + 4 * r.slots + norms);
            if r.ratio == 0.1 {
                assert!(r.set_compression > 9.5, "{}", r.set_compression);
            }
        }
    }
}

#[test]
fn training_with_error_feedback_matches_uncompressed() {
    // 300 steps (batch 64, AdamW lr 1e-3), seed 0. Uncompressed reaches ≈ 95% on the 297
    // held-out digits; with 10× compression and error feedback the tolerance is 4 points
    // (one seed; the 3-seed table in docs/compression.md shows the gap is smaller). Without
    // error feedback, the optimizer sees only √ρ of each gradient's direction per step.
    let steps = 300;
    let base = train_digits(GradientPath::Uncompressed, steps, 1e-3, 0).unwrap();
    let ef = train_digits(
        GradientPath::Compressed {
            ratio: 0.1,
            error_feedback: true,
            quantization: Q::F32,
        },
        steps,
        1e-3,
        0,
    )
    .unwrap();
    assert_learned_and_within(base.test_accuracy, ef.test_accuracy, 4.0, "EF");
    assert_eq!(base.bytes_per_step, 4 * 9610);
    let ratio = base.bytes_per_step as f64 / ef.bytes_per_step as f64;
    assert!(ratio > 9.0 && ratio <= 10.0, "{ratio}");
    assert!(ef.compressor_bytes >= 4 * 9610);
}

#[test]
fn codecs_train_through_bytes_and_report_divergence() {
    use vsa_optim_bench::compress_runs::{Codec, train_digits_codec};
    use vsa_optim_rs::grad_sketch::{CompressorConfig, Method};
    // 300 steps, seed 0, lr 4e-3 (the grid's best for top-k + EF at 600 steps,
    // docs/benchmarks.md). Exact reaches ≈ 90%; top-k at 5% with error feedback (≈ 10× fewer
    // bytes, indices included) must stay within 3 points; the heavy-hitter count sketch with
    // error feedback on its estimates diverges (its decode is not a contraction), and the run
    // says so instead of failing.
    let exact = train_digits_codec(Codec::Exact, 300, 4e-3, 0).unwrap();
    let method = |m| {
        Codec::Method(CompressorConfig {
            method: m,
            seed: 0,
            error_feedback: true,
            dense_warmup_steps: 0,
        })
    };
    let topk = train_digits_codec(method(Method::TopK { k_fraction: 0.05 }), 300, 4e-3, 0).unwrap();
    assert!(!exact.diverged && !topk.diverged);
    assert_learned_and_within(exact.test_accuracy, topk.test_accuracy, 3.0, "top-k");
    let fewer = 38_440.0 / topk.mean_bytes;
    assert!(fewer > 9.0 && fewer < 11.0, "{fewer}");
    let cs = Method::CountSketch {
        rows: 3,
        ratio: 0.1,
        k_fraction: 0.01,
    };
    let hh = train_digits_codec(method(cs), 300, 4e-3, 0).unwrap();
    assert!(
        hh.diverged,
        "heavy-hitter EF stayed finite: {}",
        hh.test_accuracy
    );
}
