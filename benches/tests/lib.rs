//! End-to-end tests of the workloads on real data, compiled as one binary (see the modules).
//! The multi-rank MPI tests are a separate binary (`tests/mpi.rs`, feature `mpi`).

mod compress;
mod e2e;
mod ternary;
