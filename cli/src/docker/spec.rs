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
    /// Reloaded in place when it changes (see `live`).
    pub live: bool,
}

impl File {
    pub fn new(path: &str, contents: String, postgres_owned: bool) -> File {
        File {
            path: path.into(),
            contents,
            postgres_owned,
            hashed: None,
            live: false,
        }
    }

    /// A file the running program re-reads on a signal (the container's `reload_signal`): not
    /// in the hash, so a change is uploaded and reloaded instead of recreating the container.
    pub fn live(mut self) -> File {
        self.hashed = Some(String::new());
        self.live = true;
        self
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

/// A named volume and where it is mounted.
#[derive(Debug, Clone)]
pub struct Mount {
    pub volume: String,
    pub target: &'static str,
}

/// A container pgctl runs on a host.
#[derive(Debug, Clone)]
pub struct ContainerSpec {
    /// Container name, also its role label: `patroni`, `etcd`, `consul`, `haproxy`, ...
    pub name: &'static str,
    pub cmd: Vec<String>,
    /// The container's state; `None` for one that keeps none (a proxy).
    pub volume: Option<Mount>,
    pub files: Vec<File>,
    /// Linux capabilities beyond Docker's default set (vip-manager adds addresses).
    pub cap_add: Vec<&'static str>,
    /// The signal that makes the program re-read its `live` files.
    pub reload_signal: Option<&'static str>,
    /// The image to run when not the cluster's (the monitoring image).
    pub image: Option<String>,
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
        let mount = Mount { volume, target: mount };
        ContainerSpec::build(name, cmd, Some(mount), files, image_id, extra_hosts, &[], None)
    }

    /// A container without a volume (its state is its configuration): the proxies.
    pub fn stateless(
        name: &'static str,
        cmd: &[&str],
        files: Vec<File>,
        image_id: &str,
        cap_add: &[&'static str],
        reload_signal: Option<&'static str>,
    ) -> ContainerSpec {
        ContainerSpec::build(name, cmd, None, files, image_id, &[], cap_add, reload_signal)
    }

    /// The same container from image `tag` (its content already in the hash's image id).
    pub fn running(mut self, tag: &str) -> ContainerSpec {
        self.image = Some(tag.to_string());
        self
    }

    /// The program re-reads its `live` files on `signal`.
    pub fn reloaded_by(mut self, signal: &'static str) -> ContainerSpec {
        self.reload_signal = Some(signal);
        self
    }

    /// The same container with `extra_hosts` entries (hashed).
    pub fn with_extra_hosts(mut self, extra_hosts: &[String]) -> ContainerSpec {
        let mut h = Sha256::new();
        h.update(self.hash.as_bytes());
        h.update(extra_hosts.join("\0").as_bytes());
        self.hash = hex::encode(h.finalize())[..16].to_string();
        self.extra_hosts = extra_hosts.to_vec();
        self
    }

    #[allow(clippy::too_many_arguments)]
    fn build(
        name: &'static str,
        cmd: &[&str],
        volume: Option<Mount>,
        files: Vec<File>,
        image_id: &str,
        extra_hosts: &[String],
        cap_add: &[&'static str],
        reload_signal: Option<&'static str>,
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
        if let Some(m) = &volume {
            h.update(m.volume.as_bytes());
            h.update(m.target.as_bytes());
        }
        for cap in cap_add {
            h.update(cap.as_bytes());
            h.update([0]);
        }
        for f in &files {
            h.update(f.path.as_bytes());
            h.update(f.hashed.as_ref().unwrap_or(&f.contents).as_bytes());
        }
        ContainerSpec {
            name,
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            volume,
            files,
            cap_add: cap_add.to_vec(),
            reload_signal,
            image: None,
            extra_hosts: extra_hosts.to_vec(),
            hash: hex::encode(h.finalize())[..16].to_string(),
        }
    }
}
