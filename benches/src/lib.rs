//! Workloads and helpers shared by the benchmarks, the demo and the end-to-end tests.
//!
//! - [`data`]: the shipped data sets (digits, Shakespeare).
//! - [`models`]: the digits MLP and the character transformer.
//! - [`tasks`]: model + data order + evaluation behind one trait.
//! - [`harness`]: one measured training run per method.
//! - [`compare`]: the side-by-side comparison table.
//! - [`blocks`]: per-block skipping of backward work on the char-LM (per-block prediction,
//!   DropBP-style controls).
//! - [`plot`]: loss curves as SVG.
//! - [`compress_runs`], [`ternary_runs`]: training with compressed or ternary-accumulated gradients.
//! - `distributed` (feature `distributed`): data-parallel training over MPI ranks (or the
//!   single-process reference).
//! - [`workloads`]: the demo's workload sizes and trainer configs.

#![deny(missing_docs)]

pub mod blocks;
pub mod compare;
pub mod compress_runs;
pub mod data;
#[cfg(feature = "distributed")]
pub mod distributed;
pub mod harness;
pub mod models;
pub mod plot;
pub mod tasks;
pub mod ternary_runs;
pub mod workloads;
