//! Bad input returns typed errors and never panics or mutates.

use vsa_core::{
    BinaryVector, BundleAccumulator, Error, ItemMemory, RandomProjection, RealVector, TernaryVector,
};

#[test]
fn zero_dimension_is_an_error() {
    assert!(matches!(
        BinaryVector::random(0, 1, 1),
        Err(Error::ZeroDimension { .. })
    ));
    assert!(matches!(
        TernaryVector::random(0, 1, 1),
        Err(Error::ZeroDimension { .. })
    ));
    assert!(matches!(
        RealVector::random(0, 1, 1),
        Err(Error::ZeroDimension { .. })
    ));
    assert!(matches!(
        TernaryVector::from_trits(&[]),
        Err(Error::ZeroDimension { .. })
    ));
    assert!(matches!(
        BinaryVector::from_bipolar(&[]),
        Err(Error::ZeroDimension { .. })
    ));
    assert!(matches!(
        RealVector::from_vec(vec![]),
        Err(Error::ZeroDimension { .. })
    ));
    assert!(matches!(
        BundleAccumulator::new(0),
        Err(Error::ZeroDimension { .. })
    ));
    assert_eq!(
        RandomProjection::new(10, 0, 1),
        Err(Error::ZeroDimension { what: "output_len" })
    );
    assert_eq!(
        RandomProjection::new(0, 10, 1),
        Err(Error::ZeroDimension { what: "input_len" })
    );
}

#[test]
fn mismatched_dimensions_are_errors_and_leave_outputs_alone() {
    let a = BinaryVector::random(100, 1, 1).unwrap();
    let b = BinaryVector::random(101, 1, 2).unwrap();
    let err = Error::DimensionMismatch {
        what: "other",
        expected: 100,
        actual: 101,
    };
    assert_eq!(a.bind(&b), Err(err.clone()));
    assert_eq!(a.hamming(&b), Err(err.clone()));
    assert_eq!(a.dot(&b), Err(err.clone()));
    assert!(a.cosine(&b).is_err());
    let mut out = a.clone();
    assert!(BinaryVector::bundle_into(&[&a, &b], &mut out).is_err());
    assert_eq!(out, a);
    let mut short = BinaryVector::ones(5).unwrap();
    assert!(a.permute_into(3, &mut short).is_err());
    assert!(a.bind_into(&a, &mut short).is_err());
    assert_eq!(short, BinaryVector::ones(5).unwrap());

    let t = TernaryVector::random(100, 1, 1).unwrap();
    let u = TernaryVector::random(99, 1, 1).unwrap();
    assert!(t.bind(&u).is_err());
    assert!(t.bundle2(&u).is_err());
    assert!(TernaryVector::bundle(&[&t, &u]).is_err());
    assert!(t.dot(&u).is_err());
    assert!(t.hamming(&u).is_err());

    let x = RealVector::random(100, 1, 1).unwrap();
    assert!(x.bind(&b).is_err());
    assert!(x.dot(&RealVector::zeros(3).unwrap()).is_err());
    assert!(x.mul(&RealVector::zeros(3).unwrap()).is_err());

    let mut acc = BundleAccumulator::new(100).unwrap();
    assert!(acc.add_binary(&b).is_err());
    assert!(acc.add_ternary(&u).is_err());
    assert_eq!(acc.count(), 0);
    assert!(acc.sums().iter().all(|&s| s == 0));

    let p = RandomProjection::new(50, 8, 3).unwrap();
    let mut y = [1.0f32; 8];
    assert!(p.encode_into(&[0.0; 49], &mut y).is_err());
    assert_eq!(y, [1.0; 8]);
    let mut x = [1.0f32; 50];
    assert!(p.transpose_into(&[0.0; 7], &mut x).is_err());
    assert!(p.reconstruct_into(&[0.0; 8], &mut x[..49]).is_err());
    assert_eq!(x, [1.0; 50]);
}

#[test]
fn empty_inputs_are_errors() {
    assert_eq!(
        BinaryVector::bundle(&[]),
        Err(Error::EmptyInput { what: "vs" })
    );
    assert_eq!(
        TernaryVector::bundle(&[]),
        Err(Error::EmptyInput { what: "vs" })
    );
    assert_eq!(
        RealVector::bundle(&[]),
        Err(Error::EmptyInput { what: "vs" })
    );
}

#[test]
fn codebook_errors() {
    assert_eq!(
        ItemMemory::<BinaryVector>::new(vec![]),
        Err(Error::EmptyCodebook)
    );
    let mixed = vec![
        BinaryVector::random(64, 1, 1).unwrap(),
        BinaryVector::random(64, 1, 2).unwrap(),
        BinaryVector::random(65, 1, 3).unwrap(),
    ];
    assert_eq!(
        ItemMemory::new(mixed),
        Err(Error::MixedCodebook {
            index: 2,
            expected: 64,
            actual: 65
        })
    );
    let mut mem = ItemMemory::new(vec![TernaryVector::random(64, 1, 1).unwrap()]).unwrap();
    assert!(mem.push(TernaryVector::random(63, 1, 1).unwrap()).is_err());
    assert_eq!(mem.len(), 1);
    assert!(
        mem.nearest(&TernaryVector::random(63, 1, 1).unwrap())
            .is_err()
    );
}

#[test]
fn malformed_planes_and_values_are_errors() {
    // Wrong word counts.
    assert!(matches!(
        TernaryVector::from_planes(65, vec![0], vec![0, 0]),
        Err(Error::DimensionMismatch {
            what: "plus",
            expected: 2,
            actual: 1
        })
    ));
    assert!(matches!(
        TernaryVector::from_planes(65, vec![0, 0], vec![0]),
        Err(Error::DimensionMismatch { what: "minus", .. })
    ));
    // Overlap.
    assert!(matches!(
        TernaryVector::from_planes(10, vec![0b100], vec![0b110]),
        Err(Error::BadPlanes { word: 0, .. })
    ));
    // Padding.
    assert!(matches!(
        TernaryVector::from_planes(10, vec![1 << 10], vec![0]),
        Err(Error::BadPlanes { word: 0, .. })
    ));
    assert!(matches!(
        TernaryVector::from_planes(70, vec![0, 0], vec![0, 1 << 6]),
        Err(Error::BadPlanes { word: 1, .. })
    ));
    assert!(TernaryVector::from_planes(70, vec![0, 1 << 5], vec![0, 0]).is_ok());
    assert!(matches!(
        BinaryVector::from_words(3, vec![0b1000]),
        Err(Error::BadPlanes { .. })
    ));
    assert!(BinaryVector::from_words(3, vec![0, 0]).is_err());
    assert_eq!(
        TernaryVector::from_trits(&[0, 1, 2]),
        Err(Error::InvalidValue {
            what: "trits",
            index: 2,
            value: 2,
            expected: "-1, 0 or +1"
        })
    );
    assert!(matches!(
        BinaryVector::from_bipolar(&[1, 0]),
        Err(Error::InvalidValue { index: 1, .. })
    ));
}

#[test]
fn error_messages_name_parameter_expected_and_actual() {
    let e = Error::DimensionMismatch {
        what: "other",
        expected: 3,
        actual: 4,
    };
    assert_eq!(
        e.to_string(),
        "dimension mismatch for other: expected 3, got 4"
    );
}

#[test]
fn item_memory_cleans_up_noisy_queries() {
    let items: Vec<BinaryVector> = (0..20)
        .map(|k| BinaryVector::random(2048, 9, k).unwrap())
        .collect();
    let mem = ItemMemory::new(items.clone()).unwrap();
    // Flip 30% of the bits of item 13 by bundling it with two random vectors... simpler: XOR
    // with a sparse noise vector (every third word flipped = ~33% of bits differ).
    let noise: Vec<u64> = (0..32)
        .map(|w| if w % 3 == 0 { u64::MAX } else { 0 })
        .collect();
    let noisy = items[13]
        .bind(&BinaryVector::from_words(2048, noise).unwrap())
        .unwrap();
    let (i, c) = mem.nearest(&noisy).unwrap();
    assert_eq!(i, 13);
    assert!((c - (1.0 - 2.0 * 11.0 / 32.0)).abs() < 1e-12);
    // Ties go to the lowest index.
    let dup = ItemMemory::new(vec![items[0].clone(), items[0].clone()]).unwrap();
    assert_eq!(dup.nearest(&items[0]).unwrap(), (0, 1.0));
}
