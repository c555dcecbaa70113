//! The cluster: converge it (`up`), observe it (`status`), operate it (switchover, failover,
//! reinit, restart, pause, resume) and take it down (`down`, `remove`). Everything goes
//! through the hosts' Docker engines; Patroni and PostgreSQL are reached by exec (`member`).

pub mod extensions;
pub(crate) mod host_plan;
mod newcomers;
pub mod ops;
pub mod spec;
pub mod status;
pub mod teardown;
pub mod up;
pub mod volumes;
mod wait;
