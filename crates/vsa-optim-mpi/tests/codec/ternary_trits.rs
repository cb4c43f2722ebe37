//! `TernaryCodec` with more than one trit per element (`set_trits_per_element`): the default
//! stays the single-trit codec byte for byte, bad counts are typed errors that change
//! nothing, the handshake refuses ranks with another count, and the round-trip error follows
//! the derivation and shrinks with the trit count, without bias.

use vsa_optim_mpi::{
    Collective, Error, ExchangeConfig, Gathered, GradientCodec, GradientExchange, TernaryCodec,
    TernaryPacking,
};

use super::{PACKINGS, ctx, encode, fixed_input, fnv1a, lens_of, roundtrip, stat_input, ternary};

/// Every supported count.
const TRITS: [u8; 4] = [1, 2, 3, 5];

fn trits(lens: &[usize], seed: u64, t: u8) -> TernaryCodec {
    ternary(lens, seed, TernaryPacking::Base3)
        .with_trits_per_element(t)
        .expect("supported count")
}

/// `L = (3^t − 1)/2`.
fn max_level(t: u8) -> f64 {
    f64::from((3i32.pow(u32::from(t)) - 1) / 2)
}

#[test]
fn one_trit_is_the_default_byte_for_byte() {
    let grads = fixed_input();
    let lens = lens_of(&grads);
    for packing in PACKINGS {
        let mut default = ternary(&lens, 42, packing);
        assert_eq!(default.trits_per_element(), 1);
        let mut one = ternary(&lens, 42, packing)
            .with_trits_per_element(1)
            .unwrap();
        assert_eq!(one.fingerprint(), default.fingerprint());
        assert_eq!(one.payload_bytes(), default.payload_bytes());
        for (step, rank) in [(7, 1), (0, 0), (123, 5)] {
            assert_eq!(
                encode(&mut one, ctx(step, rank), &grads),
                encode(&mut default, ctx(step, rank), &grads)
            );
        }
    }
    // The golden hash of `ternary_golden_payload_hash` (base 3), through the explicit option.
    let payload = encode(&mut trits(&lens, 42, 1), ctx(7, 1), &grads);
    assert_eq!(
        (payload.len(), fnv1a(&payload)),
        (4 * 3 + 140 + 4 + 13, 0x90cb_7f63_e107_608d)
    );
}

#[test]
fn sizes_follow_the_layout_at_every_count() {
    // Per parameter: ⌈n/320⌉ f32 scales, then ⌈t·n/5⌉ base-3 bytes.
    let grads = fixed_input();
    let lens = lens_of(&grads);
    for t in TRITS {
        let mut codec = trits(&lens, 1, t);
        let want: usize = lens
            .iter()
            .map(|&n| 4 * n.div_ceil(320) + (usize::from(t) * n).div_ceil(5))
            .sum();
        assert_eq!(codec.payload_bytes(), want, "t = {t}");
        assert_eq!(encode(&mut codec, ctx(0, 0), &grads).len(), want, "t = {t}");
    }
}

/// Everything observable about a codec: one payload, then its `Debug` form (all fields,
/// scratch buffers included, as the encode left them), fingerprint, payload size and count.
fn snapshot(codec: &mut TernaryCodec) -> (Vec<u8>, String, u64, usize, u8) {
    let payload = encode(codec, ctx(3, 2), &fixed_input());
    (
        payload,
        format!("{codec:?}"),
        codec.fingerprint(),
        codec.payload_bytes(),
        codec.trits_per_element(),
    )
}

#[test]
fn bad_counts_are_typed_errors_and_change_nothing() {
    let lens = lens_of(&fixed_input());
    for start in [1u8, 3] {
        let mut codec = trits(&lens, 5, start);
        let before = snapshot(&mut codec);
        for bad in [0u8, 4, 6, 7, 255] {
            match codec.set_trits_per_element(bad).unwrap_err() {
                Error::InvalidConfig {
                    parameter, actual, ..
                } => {
                    assert_eq!(parameter, "trits_per_element");
                    assert_eq!(actual, bad.to_string());
                }
                other => panic!("unexpected error {other:?}"),
            }
            assert_eq!(snapshot(&mut codec), before, "start {start}, bad {bad}");
        }
    }
    // Bitplanes carry single trits only.
    let mut planes = ternary(&lens, 5, TernaryPacking::Planes);
    let before = snapshot(&mut planes);
    for t in [2u8, 3, 5] {
        assert!(matches!(
            planes.set_trits_per_element(t),
            Err(Error::InvalidConfig {
                parameter: "packing",
                ..
            })
        ));
        assert_eq!(snapshot(&mut planes), before);
    }
    assert!(planes.set_trits_per_element(1).is_ok());
    assert!(
        ternary(&lens, 5, TernaryPacking::Planes)
            .with_trits_per_element(4)
            .is_err()
    );
}

#[test]
fn the_trit_count_is_part_of_the_fingerprint() {
    let lens = [10, 700];
    let fps: Vec<u64> = TRITS
        .iter()
        .map(|&t| trits(&lens, 1, t).fingerprint())
        .collect();
    for i in 0..fps.len() {
        for j in 0..i {
            assert_ne!(fps[i], fps[j], "t = {} and {}", TRITS[i], TRITS[j]);
        }
    }
    assert_eq!(fps[1], trits(&lens, 1, 2).fingerprint());
}

/// A two-rank world seen from `rank`: the other rank's part of the first all-gather is
/// `other` (or an echo of this rank's part); records what this rank sent.
struct Pair {
    rank: usize,
    other: Option<Vec<u8>>,
    sent: Vec<Vec<u8>>,
}

impl Collective for Pair {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        2
    }

    fn all_gather_bytes(&mut self, mine: &[u8], out: &mut Gathered) -> vsa_optim_mpi::Result<()> {
        let other = self.other.take().unwrap_or_else(|| mine.to_vec());
        let parts = if self.rank == 0 {
            [mine.to_vec(), other]
        } else {
            [other, mine.to_vec()]
        };
        out.clear();
        for p in &parts {
            out.push(p);
        }
        self.sent.push(mine.to_vec());
        Ok(())
    }

    fn collective_calls(&self) -> u64 {
        self.sent.len() as u64
    }
}

#[test]
fn the_handshake_refuses_a_rank_with_another_count() {
    let params = vec![("w".to_string(), vec![20, 35]), ("b".to_string(), vec![20])];
    let lens = [700, 20];
    let config = ExchangeConfig {
        seed: 9,
        user_fingerprint: 0,
    };
    // Rank 1 holds 2 trits; its handshake record is what rank 0 receives.
    let mut world1 = Pair {
        rank: 1,
        other: None,
        sent: Vec::new(),
    };
    let ex = GradientExchange::new(&mut world1, Box::new(trits(&lens, 9, 2)), &params, config);
    assert!(ex.is_ok());
    drop(ex);
    let record = world1.sent[0].clone();
    for (t, ok) in [(2u8, true), (1, false), (3, false), (5, false)] {
        let mut world0 = Pair {
            rank: 0,
            other: Some(record.clone()),
            sent: Vec::new(),
        };
        let r = GradientExchange::new(&mut world0, Box::new(trits(&lens, 9, t)), &params, config);
        match r {
            Ok(_) => assert!(ok, "t = {t} was accepted against 2"),
            Err(Error::ConfigMismatch { field, rank, .. }) => {
                assert!(!ok, "t = {t} was refused");
                assert_eq!(field, "codec configuration");
                assert_eq!(rank, 1);
            }
            Err(e) => panic!("t = {t}: unexpected error {e}"),
        }
    }
}

#[test]
fn multi_trit_is_deterministic_and_keyed_by_seed_step_rank() {
    let grads = fixed_input();
    let lens = lens_of(&grads);
    let mut hashes = Vec::new();
    for t in [2u8, 3, 5] {
        let mut codec = trits(&lens, 42, t);
        let base = encode(&mut codec, ctx(7, 1), &grads);
        assert_eq!(encode(&mut codec, ctx(7, 1), &grads), base);
        assert_eq!(encode(&mut trits(&lens, 42, t), ctx(7, 1), &grads), base);
        // Decoding is a function of the payload: every rank gets the same bits.
        let mut a = vec![vec![0f32; lens[0]], vec![0f32; lens[1]]];
        let mut b = vec![vec![1f32; lens[0]], vec![1f32; lens[1]]];
        codec.decode(ctx(7, 1), &base, &mut a).unwrap();
        trits(&lens, 0, t).decode(ctx(7, 1), &base, &mut b).unwrap();
        assert_eq!(a, b);
        let scales = 4 * lens[0].div_ceil(320);
        for other in [
            encode(&mut codec, ctx(7, 2), &grads),
            encode(&mut codec, ctx(8, 1), &grads),
            encode(&mut trits(&lens, 43, t), ctx(7, 1), &grads),
        ] {
            assert_eq!(other.len(), base.len());
            assert_eq!(other[..scales], base[..scales], "scales are deterministic");
            assert_ne!(other, base, "t = {t}: the key changes the rounding");
        }
        println!(
            "t = {t}: {} bytes, fnv1a {:#018x}",
            base.len(),
            fnv1a(&base)
        );
        hashes.push((base.len(), fnv1a(&base)));
    }
    // Golden values, obtained once by running this test with `--nocapture` and pasted: any
    // change to the stream, the rounding rule, the scales or the level packing changes them.
    assert_eq!(hashes, GOLDEN);
}

const GOLDEN: [(usize, u64); 3] = [
    (322, 0xa4b0_b49e_2ca9_d793),
    (475, 0xac3a_fd42_2068_7651),
    (780, 0xcd7a_9a9d_1beb_56d9),
];

/// `Σ_i u_b² f_i(1 − f_i)`: the derived expected squared error of one round trip of `x`
/// at `t` trits, with `u_b = s_b/L` the level unit of `x_i`'s block (`s_b = max|x|` over its
/// 320 elements) and `f_i` the fractional part of `|x_i|/u_b`.
fn derived_variance(x: &[f32], t: u8) -> (Vec<f64>, f64) {
    let l = max_level(t);
    let per: Vec<f64> = x
        .chunks(320)
        .flat_map(|b| {
            let s = b.iter().fold(0f64, |m, v| m.max(f64::from(v.abs())));
            b.iter().map(move |&v| {
                if s == 0.0 {
                    return 0.0;
                }
                let u = s / l;
                let r = f64::from(v.abs()) / u;
                let f = r - r.floor();
                u * u * f * (1.0 - f)
            })
        })
        .collect();
    let total = per.iter().sum();
    (per, total)
}

#[test]
fn round_trip_error_follows_the_derivation_and_shrinks_with_trits() {
    // Over T independent steps, the mean squared round-trip error estimates V_t (derived
    // above) with relative sd ≈ √(2/(T·k_eff)) < 2 % here (1000 elements, T = 200); we allow
    // ±15 %. V_t falls roughly like 1/L² (L = 1, 4, 13, 121), so each count must beat the
    // previous by at least 3×.
    const T: u64 = 200;
    let x = stat_input(1000, &[0.5, 3.0, 1e-3, 40.0], 5);
    let mut measured = Vec::new();
    for t in TRITS {
        let mut codec = trits(&[1000], 17, t);
        let (_, v) = derived_variance(&x, t);
        let mut e = 0f64;
        for step in 0..T {
            let d = roundtrip(&mut codec, ctx(step, 0), std::slice::from_ref(&x));
            // Every decode lies on its block's level grid s_b·j/L, |j| ≤ L.
            e += d[0]
                .iter()
                .zip(&x)
                .map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2))
                .sum::<f64>();
        }
        let e = e / T as f64;
        println!("t = {t}: mean squared error {e:.4e}, derived {v:.4e}");
        assert!(
            (0.85..1.15).contains(&(e / v)),
            "t = {t}: measured {e} vs derived {v}"
        );
        measured.push(e);
    }
    for w in measured.windows(2) {
        assert!(w[1] * 3.0 < w[0], "{measured:?}");
    }
}

#[test]
fn multi_trit_decodes_lie_on_the_level_grid() {
    let x = stat_input(700, &[0.5, 3.0, 1e-3], 8);
    for t in [2u8, 3, 5] {
        let l = max_level(t);
        let d = roundtrip(
            &mut trits(&[700], 3, t),
            ctx(1, 1),
            std::slice::from_ref(&x),
        );
        for (i, (&di, &xi)) in d[0].iter().zip(&x).enumerate() {
            let s = f64::from([0.5f32, 3.0, 1e-3][i / 320]);
            let j = f64::from(di) * l / s;
            assert!(
                (j - j.round()).abs() < 1e-3,
                "t = {t}, element {i}: level {j}"
            );
            assert!(j.abs() <= l + 1e-3);
            // Rounded to one of the two neighbouring levels of x.
            let r = f64::from(xi) * l / s;
            let (lo, hi) = ((r - 1e-4).floor(), (r + 1e-4).ceil());
            assert!((lo..=hi).contains(&j.round()), "t = {t}: {j} vs {r}");
        }
    }
}

#[test]
fn multi_trit_is_unbiased_over_steps() {
    // Per element, with u = s/L and |x|/u = m + f (m integer, 0 ≤ f < 1), the decode is
    // sign(x)·u·(m + 1) with probability f (rounded up to a multiple of 2⁻¹⁶: 16-bit draws)
    // and sign(x)·u·m otherwise, so E[d] = x (bias ≤ 2⁻¹⁶·u) and Var[d] = u²·f(1 − f).
    // Steps use independent streams: the mean over T steps has variance σ² = u²f(1−f)/T.
    // Every element must lie within 6σ (+ the bias bound); Σ (mean − x)²/σ², a χ² with k
    // degrees of freedom, within k ± 6√(2k); and the signed sum Σ sign(x)(mean − x)/σ, a sum
    // of k standard normals, within ±6√k (catches a shared shrinkage the bands miss).
    const T: u64 = 1500;
    let x = stat_input(700, &[0.5, 3.0, 1e-3], 11);
    for t in [2u8, 3, 5] {
        let (var, _) = derived_variance(&x, t);
        let l = max_level(t);
        let mut codec = trits(&[700], 9, t);
        let mut sum = vec![0f64; 700];
        for step in 0..T {
            let d = roundtrip(&mut codec, ctx(step, 3), std::slice::from_ref(&x));
            for (a, &v) in sum.iter_mut().zip(&d[0]) {
                *a += f64::from(v);
            }
        }
        let (mut chi2, mut k, mut zsum) = (0f64, 0usize, 0f64);
        for (i, ((&xi, &si), &vi)) in x.iter().zip(&sum).zip(&var).enumerate() {
            let s = f64::from([0.5f32, 3.0, 1e-3][i / 320]);
            let xi = f64::from(xi);
            let m = si / T as f64;
            let v = vi / T as f64;
            let bound = 6.0 * v.sqrt() + s / l * 2f64.powi(-16) + 1e-6 * s;
            assert!(
                (m - xi).abs() <= bound,
                "t = {t}, element {i}: mean {m} vs x {xi}, bound {bound}"
            );
            // Skip near-degenerate elements (f within 2⁻¹⁰ of a level), whose variance is
            // dominated by rounding of x·L/s in f32.
            if vi > (s / l).powi(2) * 1e-3 {
                chi2 += (m - xi).powi(2) / v;
                zsum += xi.signum() * (m - xi) / v.sqrt();
                k += 1;
            }
        }
        let k = k as f64;
        println!("t = {t}: chi2 {chi2:.1} (k = {k}), signed z-sum {zsum:.1}");
        assert!(k > 600.0, "t = {t}: only {k} non-degenerate elements");
        assert!(
            (chi2 - k).abs() <= 6.0 * (2.0 * k).sqrt(),
            "t = {t}: chi2 {chi2} with {k} dof"
        );
        assert!(zsum.abs() <= 6.0 * k.sqrt(), "t = {t}: signed z-sum {zsum}");
    }
}

#[test]
fn multi_trit_decode_errors_leave_out_untouched() {
    let grads = fixed_input();
    let lens = lens_of(&grads);
    for t in [2u8, 3, 5] {
        let mut codec = trits(&lens, 4, t);
        let good = encode(&mut codec, ctx(2, 4), &grads);
        let second = 4 * lens[0].div_ceil(320) + (usize::from(t) * lens[0]).div_ceil(5);
        let mut bad_scale = good.clone();
        // The second parameter's (first) scale: NaN.
        bad_scale[second..second + 4].copy_from_slice(&f32::NAN.to_le_bytes());
        let mut bad_byte = good.clone();
        // The last byte: 243 is not a base-3 byte.
        *bad_byte.last_mut().unwrap() = 243;
        let short = good[..good.len() - 1].to_vec();
        for p in [bad_scale, bad_byte, short] {
            let mut out: Vec<Vec<f32>> = lens.iter().map(|&n| vec![7.5f32; n]).collect();
            let err = codec.decode(ctx(2, 4), &p, &mut out).unwrap_err();
            assert!(matches!(err, Error::Decode { rank: 4, .. }), "{err:?}");
            assert!(out.iter().flatten().all(|&v| v == 7.5));
        }
    }
}
