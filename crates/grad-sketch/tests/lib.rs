//! Integration tests of `grad-sketch`, compiled as one binary.

mod methods;
mod packed;
mod sketch_bytes;
mod sketch_quality;
mod state;
