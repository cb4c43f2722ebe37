//! The compact wire (`Method::TopKPacked`, `Method::RandomKPacked`): round trips, planted
//! heavy hitters, error-feedback bookkeeping with lossy values, the bytes per kept
//! coordinate, a golden hash, and bad input refused with the state unchanged.

use grad_sketch::test_support::{fnv, gauss, grads, method_config as cfg, shapes};
use grad_sketch::{Compressor, Error, Message, Method, PackedValues, Part, ValueCoding};

fn packed(k_fraction: f64, values: ValueCoding) -> Method {
    Method::TopKPacked { k_fraction, values }
}

/// `n` elements of small noise with 20 planted spikes of magnitude 10 and alternating sign.
fn planted(n: usize) -> (Vec<f32>, Vec<usize>) {
    let mut x: Vec<f32> = gauss(n, 5).into_iter().map(|v| 0.02 * v).collect();
    let mut at: Vec<usize> = (0..20).map(|i| (i * 7919 + 13) % n).collect();
    for (t, &j) in at.iter().enumerate() {
        x[j] = if t % 2 == 0 { 10.0 } else { -10.0 };
    }
    at.sort_unstable();
    (x, at)
}

#[test]
fn packed_top_k_recovers_planted_heavy_hitters_with_every_coding() {
    let n = 10_000;
    let (x, want) = planted(n);
    let shapes = vec![("g".to_string(), vec![n])];
    for coding in [ValueCoding::F32, ValueCoding::Bf16, ValueCoding::Sign] {
        let mut c = Compressor::new(&shapes, cfg(packed(0.002, coding), true)).unwrap();
        let msg = c.compress(&[&x[..]]).unwrap();
        let Part::PackedSparse { indices, values } = &msg.parts[0] else {
            panic!("a packed sparse part")
        };
        let got: Vec<usize> = indices.iter().map(|&j| j as usize).collect();
        assert_eq!(got, want, "{coding:?}");
        // ±10 is exact in bf16, and the mean magnitude of the spikes is 10.
        for (i, &j) in indices.iter().enumerate() {
            assert_eq!(values.get(i), x[j as usize], "{coding:?}");
        }
        let bytes = msg.to_bytes().unwrap();
        assert_eq!(bytes.len(), msg.byte_len());
        let back = Message::from_bytes(&bytes).unwrap();
        assert_eq!(back, msg);
        let d = c.decompress(&back).unwrap().remove(0);
        for j in 0..n {
            let expect = if want.contains(&j) { x[j] } else { 0.0 };
            assert_eq!(d[j], expect);
        }
    }
}

#[test]
fn sign_values_leave_their_error_in_the_residual() {
    // Kept values 3, −1, 2 (and noise elsewhere): sent as ±2 (their mean magnitude); the
    // residual holds v − d exactly at the kept indices and v elsewhere.
    let mut x = vec![0.01f32; 100];
    x[7] = 3.0;
    x[40] = -1.0;
    x[93] = 2.0;
    let shapes = vec![("g".to_string(), vec![100])];
    let mut c = Compressor::new(&shapes, cfg(packed(0.03, ValueCoding::Sign), true)).unwrap();
    let msg = c.compress(&[&x[..]]).unwrap();
    let d = c.decompress(&msg).unwrap().remove(0);
    assert_eq!((d[7], d[40], d[93]), (2.0, -2.0, 2.0));
    let r = c.residual("g").unwrap();
    assert_eq!((r[7], r[40], r[93]), (1.0, 1.0, 0.0));
    assert_eq!(r[0], 0.01);
    // The next call compresses g + e: 7 → 4, 93 → 2, and 40 → −1 + 1 = 0 (its
    // over-sent magnitude is paid back), so the third place goes to the 0.02s, lowest
    // index first.
    let msg = c.compress(&[&x[..]]).unwrap();
    let Part::PackedSparse { indices, .. } = &msg.parts[0] else {
        panic!("a packed sparse part")
    };
    assert_eq!(indices, &[0, 7, 93]);
}

#[test]
fn packed_bytes_per_kept_coordinate_follow_the_derivation() {
    // One parameter of n = 100 000, k = 1000 (p = 1%): Rice-coded indices take at most
    // log₂(1/p) + 3 ≈ 9.64 bits each, a sign 1 bit: ≤ 1.33 bytes per kept coordinate
    // against the 8 of plain top-k, plus the header (36), the part's 11 bytes and a 4-byte
    // scale.
    let n = 100_000;
    let x = gauss(n, 3);
    let shapes = vec![("g".to_string(), vec![n])];
    let plain = Compressor::new(&shapes, cfg(Method::TopK { k_fraction: 0.01 }, true))
        .unwrap()
        .compress(&[&x[..]])
        .unwrap()
        .byte_len();
    assert_eq!(plain, 36 + 1 + 4 + 8 * 1000);
    let sign = Compressor::new(&shapes, cfg(packed(0.01, ValueCoding::Sign), true))
        .unwrap()
        .compress(&[&x[..]])
        .unwrap()
        .byte_len();
    let bound = 36.0 + 11.0 + 4.0 + 1000.0 * ((100.0f64).log2() + 3.0 + 1.0) / 8.0;
    assert!((sign as f64) <= bound, "{sign} > {bound}");
    assert!(plain > 6 * sign, "{plain} vs {sign}");
    let bf16 = Compressor::new(&shapes, cfg(packed(0.01, ValueCoding::Bf16), true))
        .unwrap()
        .compress(&[&x[..]])
        .unwrap()
        .byte_len();
    assert_eq!(bf16 - sign, 2 * 1000 - (4 + 1000 / 8));
    // Random-k with sign values sends no indices: ⌈kept/8⌉ bytes plus the scale.
    let mut rk = Compressor::new(
        &shapes,
        cfg(
            Method::RandomKPacked {
                ratio: 0.1,
                values: ValueCoding::Sign,
            },
            true,
        ),
    )
    .unwrap();
    let m = rk.compress(&[&x[..]]).unwrap();
    let Part::PackedValues(v) = &m.parts[0] else {
        panic!("a packed values part")
    };
    assert_eq!(m.byte_len(), 36 + 1 + 4 + 1 + 4 + v.len().div_ceil(8));
}

#[test]
fn packed_messages_are_pinned_by_a_golden_hash() {
    // The bytes of the second call (with a residual) on the shared test gradients; a change
    // of the wire, the selection or the coding moves this hash.
    let mut hashes = Vec::new();
    for method in grad_sketch::test_support::packed_methods() {
        let mut c = Compressor::new(&shapes(), cfg(method, true)).unwrap();
        c.compress(&grads(1)).unwrap();
        hashes.push(fnv(&c.compress(&grads(2)).unwrap().to_bytes().unwrap()));
    }
    assert_eq!(hashes, GOLDEN);
}

const GOLDEN: [u64; 4] = [
    11815269699421650174,
    14143913535958282196,
    11934069471892971118,
    6857985592177109565,
];

#[test]
fn bad_packed_input_is_refused_and_changes_nothing() {
    let mut c = Compressor::new(&shapes(), cfg(packed(0.05, ValueCoding::Sign), true)).unwrap();
    c.compress(&grads(1)).unwrap();
    let msg = c.compress(&grads(2)).unwrap();
    let residual = |c: &Compressor| c.residual("layer.weight").unwrap().to_vec();
    let (step, before) = (c.step(), residual(&c));
    // A message with another value coding is refused by the decoder.
    let mut other = msg.clone();
    if let Part::PackedSparse { values, .. } = &mut other.parts[1] {
        *values = PackedValues::encode(ValueCoding::Bf16, &vec![1.0; values.len()]);
    }
    let mut out = vec![vec![7f32; 50], vec![7f32; 2000], vec![7f32; 231]];
    assert!(matches!(
        c.decompress_into(&other, &mut out),
        Err(Error::InvalidCompressed { .. })
    ));
    assert!(out.iter().flatten().all(|&x| x == 7.0));
    // An index past the parameter's end.
    let mut far = msg.clone();
    if let Part::PackedSparse { indices, .. } = &mut far.parts[0] {
        *indices.last_mut().unwrap() = 50;
    }
    assert!(matches!(
        c.decompress(&far),
        Err(Error::InvalidCompressed { .. })
    ));
    // Unsorted indices cannot be written.
    let mut swapped = msg.clone();
    if let Part::PackedSparse { indices, .. } = &mut swapped.parts[1] {
        indices.swap(0, 1);
    }
    assert!(swapped.to_bytes().is_err());
    // Tampered bytes: an unknown coding, a non-canonical Rice parameter, a cut stream.
    let bytes = msg.to_bytes().unwrap();
    let part0 = 36; // kind byte of the first part
    assert_eq!(bytes[part0], 4);
    let mut b = bytes.clone();
    b[part0 + 5] = 9;
    assert!(Message::from_bytes(&b).is_err());
    let mut b = bytes.clone();
    b[part0 + 6] = b[part0 + 6].wrapping_add(1);
    assert!(Message::from_bytes(&b).is_err());
    for cut in [part0 + 3, part0 + 12, bytes.len() - 1] {
        assert!(Message::from_bytes(&bytes[..cut]).is_err());
    }
    // A non-finite scale.
    let mut nan = msg.clone();
    if let Part::PackedSparse {
        values: PackedValues::Sign { scale, .. },
        ..
    } = &mut nan.parts[2]
    {
        *scale = f32::NAN;
    }
    assert!(c.decompress(&nan).is_err());
    // A gradient that overflows bf16 is a typed error, and nothing changes.
    let mut b16 = Compressor::new(&shapes(), cfg(packed(0.05, ValueCoding::Bf16), true)).unwrap();
    let mut g = grads(3);
    g[1][0] = f32::MAX;
    let res0 = b16.residual("layer.weight").unwrap().to_vec();
    assert!(matches!(
        b16.compress(&g),
        Err(Error::NonFiniteGradient { .. })
    ));
    assert_eq!(b16.step(), 0);
    assert_eq!(b16.residual("layer.weight").unwrap(), &res0[..]);
    assert_eq!((c.step(), residual(&c)), (step, before));
}
