//! Integration tests, compiled as one binary.
mod accstats;
mod common;
mod dither;
mod golden;
mod roundtrip;
mod stats;
