//! `cargo xtask demo`: real training runs with a printed comparison table.
fn main() {}
