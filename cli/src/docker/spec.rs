//! What a container pgctl runs is: image, command, data volume, configuration files, and a
//! hash of all of it. `up` compares the hash with the running container's label to decide
//! whether to keep or recreate it.

use sha2::{Digest, Sha256};

/// One file uploaded into a container before it starts.
#[derive(Debug, Clone)]
pub struct File {
    pub path: String,
    pub contents: String,
    /// Owned by postgres (else root); always 0600: these files hold secrets.
    pub postgres_owned: bool,
    /// What the container's hash covers of this file, when not all of it (a part that only
    /// acts once, like Patroni's `bootstrap`, must not recreate running containers).
    pub hashed: Option<String>,
}

impl File {
    pub fn new(path: &str, contents: String, postgres_owned: bool) -> File {
        File {
            path: path.into(),
            contents,
            postgres_owned,
            hashed: None,
        }
    }

    /// The same file, with only `part` of it in the container's hash.
    pub fn hashing_only(mut self, part: String) -> File {
        self.hashed = Some(part);
        self
    }

    /// The file ready to upload into a container whose postgres user is `owner` (uid, gid).
    pub fn upload(&self, owner: (u64, u64)) -> super::FileSpec {
        let (uid, gid) = if self.postgres_owned { owner } else { (0, 0) };
        super::FileSpec {
            path: self.path.clone(),
            contents: self.contents.clone().into_bytes(),
            mode: 0o600,
            uid,
            gid,
        }
    }
}

/// A container pgctl runs on a host.
#[derive(Debug, Clone)]
pub struct ContainerSpec {
    /// Container name, also its role label: `patroni`, `etcd` or `consul`.
    pub name: &'static str,
    pub cmd: Vec<String>,
    pub volume: String,
    pub mount: &'static str,
    pub files: Vec<File>,
    /// `name:address` entries for the container's /etc/hosts (an S3 endpoint without DNS).
    pub extra_hosts: Vec<String>,
    /// Hash of image, command, files, mounts and host entries: a different hash means recreate.
    pub hash: String,
}

impl ContainerSpec {
    pub fn new(
        name: &'static str,
        cmd: &[&str],
        volume: String,
        mount: &'static str,
        files: Vec<File>,
        image_id: &str,
        extra_hosts: &[String],
    ) -> ContainerSpec {
        let mut h = Sha256::new();
        h.update(image_id.as_bytes());
        for entry in extra_hosts {
            h.update(entry.as_bytes());
            h.update([0]);
        }
        for part in cmd {
            h.update(part.as_bytes());
            h.update([0]);
        }
        h.update(volume.as_bytes());
        h.update(mount.as_bytes());
        for f in &files {
            h.update(f.path.as_bytes());
            h.update(f.hashed.as_ref().unwrap_or(&f.contents).as_bytes());
        }
        ContainerSpec {
            name,
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            volume,
            mount,
            files,
            extra_hosts: extra_hosts.to_vec(),
            hash: hex::encode(h.finalize())[..16].to_string(),
        }
    }
}
