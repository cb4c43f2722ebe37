//! Workloads and helpers shared by the benchmarks, the demo and the end-to-end tests.
