//! Which DCS and backup engine a lab's hosts.toml names.

use std::path::Path;

/// The DCS and backup engine the lab's hosts.toml names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stack {
    pub dcs: String,
    pub backup_engine: String,
}

impl Stack {
    /// The mission's stack, Consul + WAL-G, for each part `artifacts` (an `image build
    /// --artifacts` directory, as ansible-free-scripts/build-go-tools.sh writes) supplies;
    /// etcd / pgBackRest (Debian packages) for a part it does not. `dcs`/`engine` choose.
    pub fn choose(dcs: Option<&str>, engine: Option<&str>, artifacts: &Path) -> Stack {
        let has = |patterns| crate::image::artifacts_provide(artifacts, patterns);
        let dcs = dcs
            .map(str::to_string)
            .unwrap_or_else(|| if has(crate::image::CONSUL_ARTIFACTS) { "consul" } else { "etcd" }.into());
        let backup_engine = engine
            .map(str::to_string)
            .unwrap_or_else(|| if has(crate::image::WALG_ARTIFACTS) { "walg" } else { "pgbackrest" }.into());
        Stack { dcs, backup_engine }
    }

    /// The `image build --without` list an image for this stack needs (TimescaleDB cannot be
    /// had here; a part the stack does not use is left out).
    pub fn without(&self) -> String {
        let mut without = vec!["timescaledb"];
        if self.backup_engine != "walg" {
            without.push("walg");
        }
        if self.dcs != "consul" {
            without.push("consul");
        }
        if self.dcs != "etcd" {
            without.push("etcd");
        }
        without.join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    /// A fresh artifacts directory holding `files` (each containing its own name) and their sums.
    fn artifacts(test: &str, files: &[&str]) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("pgctl-stack-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut sums = String::new();
        for name in files {
            std::fs::write(dir.join(name), name.as_bytes()).unwrap();
            sums += &format!("{}  {name}\n", hex::encode(Sha256::digest(name.as_bytes())));
        }
        std::fs::write(dir.join("SHA256SUMS"), sums).unwrap();
        dir
    }

    #[test]
    fn mission_stack_when_the_binaries_are_supplied() {
        let dir = artifacts("mission", &["wal-g", "consul"]);
        let stack = Stack::choose(None, None, &dir);
        assert_eq!((stack.dcs.as_str(), stack.backup_engine.as_str()), ("consul", "walg"));
        assert_eq!(stack.without(), "timescaledb,etcd", "a Consul cluster's image has no etcd");
    }

    #[test]
    fn debian_stack_for_what_is_missing_or_unverified() {
        let dir = artifacts("missing", &["wal-g"]);
        std::fs::write(dir.join("consul"), b"not listed in SHA256SUMS").unwrap();
        let stack = Stack::choose(None, None, &dir);
        assert_eq!((stack.dcs.as_str(), stack.backup_engine.as_str()), ("etcd", "walg"));
        assert_eq!(stack.without(), "timescaledb,consul");
        let none = Stack::choose(None, None, Path::new("/nonexistent/pgctl-artifacts"));
        assert_eq!(none.without(), "timescaledb,walg,consul");
    }

    #[test]
    fn explicit_choice_wins() {
        let dir = artifacts("explicit", &["wal-g", "consul"]);
        let stack = Stack::choose(Some("etcd"), Some("pgbackrest"), &dir);
        assert_eq!((stack.dcs.as_str(), stack.backup_engine.as_str()), ("etcd", "pgbackrest"));
    }
}
