//! Integration tests of `vsa-optim-mpi`, compiled as one binary (see the modules).

mod codec;
mod common;
mod exchange;
mod summed;
mod transport;
