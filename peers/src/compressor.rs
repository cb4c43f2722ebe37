//! The compressors side by side on the same gradient: cosine, bytes, time, peak memory.

use std::collections::HashMap;
use std::fmt::Write;
use std::time::Instant;

use crate::inputs::gaussian;
use crate::{ALLOC, Result, cosine, fmt_bytes, median};

/// Gradient sizes (one tensor each).
const SIZES: [usize; 3] = [1 << 14, 1 << 16, 1 << 20];
/// The largest peak the 0.1.1 compressor may be asked for here: this machine has 24 GiB,
/// shared with builds.
const SEED_PEAK_BUDGET: usize = 12 << 30;
/// Seed of the gradients.
const SEED: u64 = 34;

/// One measured configuration at one size.
struct Row {
    crate_name: &'static str,
    config: String,
    bytes: usize,
    cosine: f64,
    first_ms: Vec<f64>,
    again_ms: Vec<f64>,
    decompress_ms: Vec<f64>,
    peak: usize,
}

/// Decodes the message a `compress` call returned, with the compressor that made it.
type Decode<C> = Box<dyn Fn(&mut C) -> Result<Vec<f32>>>;

/// What [`measure`] found.
struct Measured {
    bytes: usize,
    out: Vec<f32>,
    /// First compress, second compress, decompress (ms per rep).
    times: [Vec<f64>; 3],
    peak: usize,
}

impl Measured {
    /// The table row of this measurement of `g`'s round trip.
    fn row(self, crate_name: &'static str, config: String, g: &[f32]) -> Row {
        let [first_ms, again_ms, decompress_ms] = self.times;
        Row {
            crate_name,
            config,
            bytes: self.bytes,
            cosine: cosine(g, &self.out),
            first_ms,
            again_ms,
            decompress_ms,
            peak: self.peak,
        }
    }
}

/// The 0.1.1 hypervector dimension for `n` elements (its `VSAGradientCompressor::new`).
fn seed_dim(n: usize) -> usize {
    seed::vsa::VSAGradientCompressor::new(n, seed::VSAConfig::default()).compressed_dim()
}

/// The bytes of 0.1.1's dense projection matrix for one tensor of `n` elements
/// (`n × dim` f32, built on the first call and cached).
fn seed_projection_bytes(n: usize) -> usize {
    n * seed_dim(n) * 4
}

/// Runs `reps` fresh compressors: per rep, a first `compress`, a second one (0.1.1 caches its
/// projection matrix after the first), and a `decompress`; the peak is the most live heap
/// above the level before the compressor was built, over the whole rep.
fn measure<C>(
    reps: usize,
    make: impl Fn() -> Result<C>,
    mut compress: impl FnMut(&mut C) -> Result<(usize, Decode<C>)>,
) -> Result<Measured> {
    let (mut first, mut again, mut dec) = (Vec::new(), Vec::new(), Vec::new());
    let (mut peak, mut bytes, mut out) = (0usize, 0usize, Vec::new());
    for _ in 0..reps {
        ALLOC.reset_peak_usage();
        let before = ALLOC.current_usage();
        let mut c = make()?;
        let t0 = Instant::now();
        let (b, _) = compress(&mut c)?;
        first.push(t0.elapsed().as_secs_f64() * 1e3);
        let t0 = Instant::now();
        let (b2, decode) = compress(&mut c)?;
        again.push(t0.elapsed().as_secs_f64() * 1e3);
        if b2 != b {
            return Err("two compressions of one gradient gave different sizes".into());
        }
        let t0 = Instant::now();
        out = decode(&mut c)?;
        dec.push(t0.elapsed().as_secs_f64() * 1e3);
        drop(c);
        peak = peak.max(ALLOC.peak_usage().saturating_sub(before));
        bytes = b;
    }
    Ok(Measured {
        bytes,
        out,
        times: [first, again, dec],
        peak,
    })
}

fn seed_row(g: &[f32], reps: usize) -> Result<Row> {
    let n = g.len();
    let tensor = seed_candle::Tensor::from_vec(g.to_vec(), n, &seed_candle::Device::Cpu)?;
    let grads: HashMap<String, seed_candle::Tensor> = [("g".to_string(), tensor)].into();
    let measured = measure(
        reps,
        || {
            Ok(seed::vsa::VSAGradientCompressor::new(
                n,
                seed::VSAConfig::default(),
            ))
        },
        |c| {
            let (bundle, meta) = c.compress(&grads)?;
            // The bundle's two bit planes plus one f32 scale per tensor (shapes and key
            // indices are known to both sides).
            let bytes =
                4 * (bundle.plus_plane().len() + bundle.minus_plane().len()) + 4 * meta.len();
            let decode: Decode<seed::vsa::VSAGradientCompressor> = Box::new(move |c| {
                let back = c.decompress(&bundle, &meta)?;
                let t = back.get("g").ok_or("0.1.1 decompressed no `g`")?;
                Ok(t.flatten_all()?.to_vec1::<f32>()?)
            });
            Ok((bytes, decode))
        },
    )?;
    let config = format!("default (D = {} trits)", seed_dim(n));
    Ok(measured.row("vsa-optim-rs 0.1.1", config, g))
}

fn ours_row(g: &[f32], reps: usize, config: ours::VSAConfig, label: String) -> Result<Row> {
    let n = g.len();
    let shapes = vec![("g".to_string(), vec![n])];
    let tensor = ours_candle::Tensor::from_vec(g.to_vec(), n, &ours_candle::Device::Cpu)?;
    let grads: HashMap<String, ours_candle::Tensor> = [("g".to_string(), tensor)].into();
    let measured = measure(
        reps,
        || {
            Ok(ours::VSAGradientCompressor::new(
                &shapes,
                config,
                &ours_candle::Device::Cpu,
            )?)
        },
        |c| {
            let compressed = c.compress(&grads)?;
            let bytes = compressed.to_bytes()?.len();
            let decode: Decode<ours::VSAGradientCompressor> = Box::new(move |c| {
                let back = c.decompress(&compressed)?;
                let t = back.get("g").ok_or("ours decompressed no `g`")?;
                Ok(t.flatten_all()?.to_vec1::<f32>()?)
            });
            Ok((bytes, decode))
        },
    )?;
    Ok(measured.row("ours", label, g))
}

/// The "Compressor" part of the section.
pub fn section(reps: usize) -> Result<String> {
    let mut s = String::new();
    writeln!(
        s,
        "### Compressor: quality, bytes, time and peak memory\n\n\
         One gradient tensor of `n` seeded N(0, 1) values, the same for both crates; \
         `compress` then `decompress` through each crate's candle API (`HashMap<String, \
         Tensor>`). *Bytes*: ours, the serialized message (`CompressedGradients::to_bytes`); \
         0.1.1, the packed bundle's two bit planes plus one f32 scale (it has no wire format; \
         shapes and key indices are assumed known). *Cosine* between the decompressed and the \
         original gradient. Times in ms, medians of {reps} fresh compressors: *first* is the \
         first `compress` (0.1.1 then builds and caches its dense `n × D` projection matrix), \
         *again* a second `compress` of the same gradient. *Peak*: the most live heap above \
         the level before the compressor was built, over build, both compressions and the \
         decompression, counted by a global allocator. Ours is shown with its defaults and \
         with ternary bundles at 0.1.1's number of trits (ρ = D / n, 2 bits per slot), the \
         same payload bits.\n\n\
         | n | crate | config | bytes | f32 bytes ÷ bytes | cosine | compress ms (first) | compress ms (again) | decompress ms | peak heap |\n\
         |---|---|---|---|---|---|---|---|---|---|"
    )?;
    let mut skipped = Vec::new();
    for n in SIZES {
        let g = gaussian(SEED, n as u64, n, 1.0);
        let mut rows = Vec::new();
        let proj = seed_projection_bytes(n);
        if proj <= SEED_PEAK_BUDGET {
            eprintln!("peers: compressor n = {n}, vsa-optim-rs 0.1.1");
            rows.push(seed_row(&g, reps)?);
        } else {
            skipped.push(format!(
                "vsa-optim-rs 0.1.1 at n = {n}: skipped, its projection matrix alone would be \
                 n × D × 4 = {n} × {} × 4 bytes = {} (more than the {} this run allows on a \
                 24 GiB machine)",
                seed_dim(n),
                fmt_bytes(proj),
                fmt_bytes(SEED_PEAK_BUDGET)
            ));
        }
        eprintln!("peers: compressor n = {n}, ours");
        rows.push(ours_row(
            &g,
            reps,
            ours::VSAConfig::default(),
            "default (ρ = 0.1, f32 bundles)".into(),
        )?);
        let rho = seed_dim(n) as f64 / n as f64;
        if rho <= 1.0 {
            let config = ours::VSAConfig::builder()
                .compression_ratio(rho)
                .quantization(ours::BundleQuantization::Ternary)
                .build();
            rows.push(ours_row(
                &g,
                reps,
                config,
                format!("ternary bundles, ρ = {rho:.4}"),
            )?);
        }
        for r in rows {
            writeln!(
                s,
                "| {n} | {} | {} | {} | {:.1} | {:.4} | {:.2} | {:.2} | {:.2} | {} |",
                r.crate_name,
                r.config,
                r.bytes,
                (4 * n) as f64 / r.bytes as f64,
                r.cosine,
                median(&r.first_ms),
                median(&r.again_ms),
                median(&r.decompress_ms),
                fmt_bytes(r.peak)
            )?;
        }
    }
    for line in skipped {
        writeln!(s, "\n{line}.")?;
    }
    Ok(s)
}
