//! Counter-based generation: vector k does not depend on order or thread.

use vsa_core::{BinaryVector, RealVector, TernaryVector};

#[test]
fn generation_is_independent_of_order_and_thread() {
    const N: u64 = 32;
    const D: usize = 1000;
    let sequential: Vec<(BinaryVector, TernaryVector)> = (0..N)
        .map(|k| {
            (
                BinaryVector::random(D, 11, k).unwrap(),
                TernaryVector::random(D, 11, k).unwrap(),
            )
        })
        .collect();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..4u64)
            .map(|t| {
                s.spawn(move || {
                    // Each thread walks the keys in its own order (reversed, strided).
                    (0..N)
                        .map(|i| (i * (2 * t + 1) + 5 * t) % N)
                        .rev()
                        .map(|k| {
                            // Generate some unrelated vectors in between.
                            let _ = RealVector::random(77, 3, k + 1000).unwrap();
                            (
                                k,
                                BinaryVector::random(D, 11, k).unwrap(),
                                TernaryVector::random(D, 11, k).unwrap(),
                            )
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for h in handles {
            for (k, b, t) in h.join().unwrap() {
                assert_eq!(b, sequential[k as usize].0);
                assert_eq!(t, sequential[k as usize].1);
            }
        }
    });
}

#[test]
fn shorter_vectors_are_prefixes() {
    // Generation reads the stream in order, so dimension 100 is a prefix of dimension 1000.
    let a = BinaryVector::random(100, 1, 2).unwrap().to_bipolar();
    let b = BinaryVector::random(1000, 1, 2).unwrap().to_bipolar();
    assert_eq!(a[..], b[..100]);
    let a = TernaryVector::random(100, 1, 2).unwrap().to_trits();
    let b = TernaryVector::random(1000, 1, 2).unwrap().to_trits();
    assert_eq!(a[..], b[..100]);
}
