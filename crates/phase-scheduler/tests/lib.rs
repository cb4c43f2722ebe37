//! Integration tests of `phase-scheduler`, compiled as one binary.

mod adaptation;
mod common;
mod config;
mod formula;
mod groups;
mod misuse;
mod resume;
mod transitions;
