//! With the `serde` feature, vectors round trip and invalid data is rejected on load.

use vsa_core::{BinaryVector, BundleAccumulator, RandomProjection, RealVector, TernaryVector};

#[test]
fn vectors_round_trip_through_json() {
    let b = BinaryVector::random(100, 1, 2).unwrap();
    let t = TernaryVector::random(100, 1, 2).unwrap();
    let r = RealVector::random(100, 1, 2).unwrap();
    let p = RandomProjection::new(1000, 10, 3).unwrap();
    let mut acc = BundleAccumulator::new(100).unwrap();
    acc.add_binary(&b).unwrap();
    let back: BinaryVector = serde_json::from_str(&serde_json::to_string(&b).unwrap()).unwrap();
    assert_eq!(back, b);
    let back: TernaryVector = serde_json::from_str(&serde_json::to_string(&t).unwrap()).unwrap();
    assert_eq!(back, t);
    let back: RealVector = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
    assert_eq!(back, r);
    let back: RandomProjection = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
    assert_eq!(back, p);
    let back: BundleAccumulator =
        serde_json::from_str(&serde_json::to_string(&acc).unwrap()).unwrap();
    assert_eq!(back, acc);
}

#[test]
fn invalid_data_is_rejected_on_load() {
    // Overlapping planes.
    assert!(serde_json::from_str::<TernaryVector>(r#"{"len":3,"plus":[1],"minus":[1]}"#).is_err());
    // Padding bits set.
    assert!(serde_json::from_str::<BinaryVector>(r#"{"len":3,"words":[8]}"#).is_err());
    // Zero dimensions.
    assert!(serde_json::from_str::<RealVector>(r#"{"data":[]}"#).is_err());
    assert!(
        serde_json::from_str::<RandomProjection>(r#"{"input_len":5,"output_len":0,"seed":1}"#)
            .is_err()
    );
    assert!(serde_json::from_str::<BundleAccumulator>(r#"{"sums":[],"count":0}"#).is_err());
}
