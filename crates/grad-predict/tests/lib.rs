//! Integration tests of `grad-predict`, compiled as one binary.

mod common;
mod degenerate;
mod errors;
mod linear;
mod precision;
mod reference;
mod residual;
mod streaming_window;
