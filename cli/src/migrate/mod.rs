//! `pgctl migrate`: bring a PostgreSQL from outside into the cluster. `from_backup`: a
//! standalone server's WAL-G or pgBackRest archive in S3 becomes the cluster's data (the
//! restore machinery, reading another prefix with the read-only key).

pub mod from_backup;

pub use from_backup::{from_backup, plan_from_backup, FromBackup};
