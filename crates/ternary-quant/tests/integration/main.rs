//! Integration tests, compiled as one binary.
mod common;
mod golden;
mod roundtrip;
mod stats;
