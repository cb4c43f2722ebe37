//! The inputs both crates see: seeded Gaussian vectors and the digits data set.

use std::io::Read;
use std::path::PathBuf;

use ours::vsa_core::rng::chacha_stream;
use rand_core::RngCore;

use crate::Result;

/// `n` values from N(0, std²), from the counter-based stream `(seed, stream)` (Box–Muller on
/// 24-bit uniforms).
pub fn gaussian(seed: u64, stream: u64, n: usize, std: f32) -> Vec<f32> {
    let mut rng = chacha_stream(seed, stream);
    let scale = f64::from(1u32 << 24);
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let u1 = (f64::from(rng.next_u32() >> 8) + 0.5) / scale;
        let u2 = f64::from(rng.next_u32() >> 8) / scale;
        let r = (-2.0 * u1.ln()).sqrt();
        let theta = std::f64::consts::TAU * u2;
        out.push((r * theta.cos()) as f32 * std);
        if out.len() < n {
            out.push((r * theta.sin()) as f32 * std);
        }
    }
    out
}

/// The digits set of `data/digits.csv.gz` (the same file and split as the bench crate): 1797
/// rows of 64 pixels scaled to `[0, 1]`, a label `0..10`; the first 1500 rows train.
pub struct Digits {
    /// Row-major features, `rows × 64`.
    pub features: Vec<f32>,
    /// Labels.
    pub labels: Vec<u8>,
}

impl Digits {
    /// Rows in the training split (the first 1500 in file order).
    pub const TRAIN_ROWS: usize = 1500;
    /// Pixels per row.
    pub const FEATURES: usize = 64;

    /// Loads `data/digits.csv.gz` from the repository root.
    pub fn load() -> Result<Self> {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join("data")
            .join("digits.csv.gz");
        let file =
            std::fs::File::open(&path).map_err(|e| format!("reading {}: {e}", path.display()))?;
        let mut text = String::new();
        flate2::read::GzDecoder::new(file).read_to_string(&mut text)?;
        let mut features = Vec::new();
        let mut labels = Vec::new();
        for (i, line) in text.lines().filter(|l| !l.trim().is_empty()).enumerate() {
            let vals: Vec<&str> = line.split(',').collect();
            if vals.len() != Self::FEATURES + 1 {
                return Err(format!("digits row {i}: {} fields, expected 65", vals.len()).into());
            }
            for v in &vals[..Self::FEATURES] {
                features.push(v.trim().parse::<f32>()? / 16.0);
            }
            let y: u8 = vals[Self::FEATURES].trim().parse()?;
            if y > 9 {
                return Err(format!("digits row {i}: label {y}").into());
            }
            labels.push(y);
        }
        if labels.len() <= Self::TRAIN_ROWS {
            return Err(format!("digits: {} rows, expected more than 1500", labels.len()).into());
        }
        Ok(Self { features, labels })
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.labels.len()
    }
}
