//! Training runs with ternary accumulation (filled by issue 3).
