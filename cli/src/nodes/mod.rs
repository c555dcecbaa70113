//! Growing and shrinking a running cluster: `node add` joins a host of hosts.toml as a replica
//! built from the leader or from a backup in S3 (`source` decides), `node remove` takes a
//! member out (leader moved first on request) while the rest keeps serving.

mod add;
mod remove;
pub mod replica;
pub mod source;

pub use add::{add, AddOptions};
pub use remove::{remove, RemoveOptions};

use crate::member::slot_name;
