//! vsa-core kernels.
use criterion::Criterion;

/// Registers the vsa-core benchmark groups.
pub fn benches(_c: &mut Criterion) {}
