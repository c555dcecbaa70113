//! Day-2 upgrades of a running cluster: a new image rolled through it (`rolling`).

pub mod major;
pub mod rolling;
