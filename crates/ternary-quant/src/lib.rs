//! `ternary-quant`: placeholder, filled by its issue.
