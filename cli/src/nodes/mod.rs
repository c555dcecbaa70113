//! Growing and shrinking a running cluster: `node add` joins a host of hosts.toml as a replica
//! built from the leader or from a backup in S3 (`source` decides), `node remove` takes a
//! member out (leader moved first on request) while the rest keeps serving.

mod add;
mod remove;
pub mod source;

pub use add::{add, AddOptions};
pub use remove::{remove, RemoveOptions};

/// Patroni's replication slot name for a member (its `slot_name_from_member_name`).
fn slot_name(member: &str) -> String {
    let s: String = member
        .to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' })
        .collect();
    s.chars().take(63).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn slot_names_follow_patroni() {
        assert_eq!(super::slot_name("host4"), "host4");
        assert_eq!(super::slot_name("DB-4.lan"), "db_4_lan");
    }
}
