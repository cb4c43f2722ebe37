//! Integration tests of `vsa-optim-mpi`, compiled as one binary (see the modules).

mod codec;
mod exchange;
mod transport;
