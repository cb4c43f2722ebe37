//! Integration tests of `vsa-core`, compiled as one binary (see the modules).

mod common;
mod determinism;
mod errors;
mod golden;
mod laws_binary;
mod laws_real;
mod laws_ternary;
mod projection;
#[cfg(feature = "serde")]
mod serde_round_trip;
mod statistics;
