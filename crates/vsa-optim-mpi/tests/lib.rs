//! Integration tests of `vsa-optim-mpi`, compiled as one binary (see the modules).

mod codec;
mod common;
mod exchange;
#[cfg(feature = "mpi")]
mod mpi_run;
mod summed;
mod transport;
