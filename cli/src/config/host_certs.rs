//! Certificates for a real host's Docker engine (`pgctl init --host-certs HOST`): a CA of this
//! cluster's engines next to hosts.toml (made once), the engine's server certificate for the
//! host's name and address, and the client certificate pgctl uses, in the layout hosts.toml's
//! `tls_dir` expects. `ansible-free-scripts/prepare-host.sh` installs the server side.
//!
//!   certs/docker-ca.pem, certs/docker-ca-key.pem (0600)     the engines' CA
//!   certs/HOST/{ca.pem,cert.pem,key.pem}                    pgctl's client (tls_dir)
//!   certs/HOST/server/{ca.pem,server-cert.pem,server-key.pem,hosts}   copy to the host

use super::init::write_file;
use super::model::HostsFile;
use crate::pki::Ca;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

pub struct Written {
    pub client_dir: PathBuf,
    pub server_dir: PathBuf,
    /// The CA was made now (not found next to hosts.toml).
    pub new_ca: bool,
}

/// Writes the files for `host` under `base/certs`; an existing CA is reused.
pub fn write(hosts: &HostsFile, base: &Path, host: &str) -> Result<Written> {
    let h = hosts
        .host(host)
        .ok_or_else(|| crate::error::usage(format!("--host-certs {host}: no such [[host]] in hosts.toml")))?;
    let certs = base.join("certs");
    let (ca_path, key_path) = (certs.join("docker-ca.pem"), certs.join("docker-ca-key.pem"));
    let new_ca = !ca_path.exists();
    let ca = if new_ca {
        let ca = Ca::generate(&format!("pgctl Docker CA of cluster {}", hosts.cluster.name))?;
        write_file(&key_path, &ca.key_pem, 0o600)?;
        write_file(&ca_path, &ca.cert_pem, 0o644)?;
        ca
    } else {
        let read = |p: &Path| std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()));
        Ca::load(&read(&ca_path)?, &read(&key_path)?).with_context(|| format!("{}", ca_path.display()))?
    };
    let client_dir = certs.join(host);
    let client = ca.issue("pgctl", &[], false, true)?;
    write_file(&client_dir.join("ca.pem"), &ca.cert_pem, 0o644)?;
    write_file(&client_dir.join("cert.pem"), &client.cert_pem, 0o644)?;
    write_file(&client_dir.join("key.pem"), &client.key_pem, 0o600)?;
    let server_dir = client_dir.join("server");
    let names = server_names(h);
    let server = ca.issue(&h.name, &names, true, false)?;
    write_file(&server_dir.join("ca.pem"), &ca.cert_pem, 0o644)?;
    write_file(&server_dir.join("server-cert.pem"), &server.cert_pem, 0o644)?;
    write_file(&server_dir.join("server-key.pem"), &server.key_pem, 0o600)?;
    write_file(&server_dir.join("hosts"), &etc_hosts(hosts), 0o644)?;
    Ok(Written {
        client_dir,
        server_dir,
        new_ca,
    })
}

/// The names the engine's server certificate holds: the host's name and address, loopback, and
/// the name pgctl dials (the endpoint's host, checked against the certificate).
fn server_names(h: &crate::config::HostConfig) -> Vec<String> {
    let mut names = vec![h.name.clone(), h.address.clone(), "localhost".into(), "127.0.0.1".into()];
    let rest = h.endpoint.split_once("://").map_or("", |(_, rest)| rest);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    let dialed = rest.rsplit_once(':').map_or(rest, |(host, _)| host).trim_matches(['[', ']']);
    if !dialed.is_empty() && !dialed.starts_with('/') && !names.iter().any(|n| n == dialed) {
        names.push(dialed.to_string());
    }
    names
}

/// `/etc/hosts` lines for every host of the cluster (and the S3 endpoint pinned to an address).
pub fn etc_hosts(hosts: &HostsFile) -> String {
    let mut out: String = hosts.hosts.iter().map(|h| format!("{} {}\n", h.address, h.name)).collect();
    if let Some(b) = &hosts.backup {
        if let Some(address) = &b.s3_address {
            let rest = b.s3_endpoint.split_once("://").map_or(b.s3_endpoint.as_str(), |(_, r)| r);
            let host = rest.split(['/', ':']).next().unwrap_or(rest);
            out.push_str(&format!("{address} {host}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn server_client_and_hosts_in_the_tls_dir_layout() {
        let hosts: super::HostsFile = toml::from_str(
            r#"
[cluster]
name = "main"
postgres_major = 15
image = "pgctl/postgres:15"
[backup]
s3_endpoint = "https://s3.internal:9443"
s3_bucket = "b"
s3_prefix = "main"
s3_address = "10.0.0.50"
[[host]]
name = "pg1"
endpoint = "tcp://10.0.0.1:2376"
address = "10.0.0.1"
roles = ["patroni"]
"#,
        )
        .unwrap();
        let dir = std::env::temp_dir().join(format!("pgctl-host-certs-{}", std::process::id()));
        let w = super::write(&hosts, &dir, "pg1").unwrap();
        assert!(w.new_ca);
        for f in ["ca.pem", "cert.pem", "key.pem"] {
            assert!(w.client_dir.join(f).exists(), "{f}");
        }
        let hosts_file = std::fs::read_to_string(w.server_dir.join("hosts")).unwrap();
        assert_eq!(hosts_file, "10.0.0.1 pg1\n10.0.0.50 s3.internal\n");
        let again = super::write(&hosts, &dir, "pg1").unwrap();
        assert!(!again.new_ca, "the CA is made once");
        assert!(super::write(&hosts, &dir, "pg9").is_err());
        let mut h = hosts.host("pg1").unwrap().clone();
        h.endpoint = "tcp://docker-pg1.example.com:2376".into();
        assert!(super::server_names(&h).contains(&"docker-pg1.example.com".to_string()));
        h.endpoint = "unix:///var/run/docker.sock".into();
        assert_eq!(super::server_names(&h).len(), 4);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
