//! Integration tests of `vsa-optim-mpi`, compiled as one binary (see the modules).

mod codec;
#[macro_use]
mod common;
mod exchange;
mod momentum;
#[cfg(feature = "mpi")]
mod mpi_run;
mod summed;
mod transport;
