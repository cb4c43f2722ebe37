//! Training runs with compressed gradients (filled by issue 6).
