//! `pgctl init`: commented starting files for a new cluster.

use super::Ctx;
use crate::config::{self, init};
use crate::{error, output};
use anyhow::Result;
use clap::Args;

#[derive(Args)]
pub struct InitArgs {
    /// Cluster name (Patroni scope)
    #[arg(long, default_value = "main")]
    name: String,
    /// Replace existing files
    #[arg(long)]
    force: bool,
    /// Only add a fresh PostgreSQL CA (postgres_ca_cert, postgres_ca_key) to an existing secrets.toml, for `tls = true`
    #[arg(long, conflicts_with = "force")]
    add_tls_ca: bool,
    /// Only write the Docker engine certificates of this [[host]] (its server certificate, pgctl's client certificate,
    /// the engines' CA made once) under certs/ next to hosts.toml, for ansible-free-scripts/prepare-host.sh
    #[arg(long, value_name = "HOST", conflicts_with_all = ["force", "add_tls_ca"])]
    host_certs: Option<String>,
}

pub fn run(a: InitArgs, ctx: &Ctx) -> Result<()> {
    if !config::validate_name(&a.name) {
        return Err(error::usage(format!(
            "--name `{}` is not DNS-safe: use lowercase letters, digits and '-'",
            a.name
        )));
    }
    let hosts = &ctx.global.hosts;
    let secrets = ctx.global.secrets.clone().unwrap_or_else(|| config::default_secrets_path(hosts));
    if a.add_tls_ca {
        return add_tls_ca(&secrets);
    }
    if let Some(host) = &a.host_certs {
        return host_certs(hosts, host);
    }
    init::write_files(
        hosts,
        &secrets,
        &init::HostsTemplate::example(&a.name),
        &init::SecretsTemplate::generate(),
        a.force,
    )?;
    let written = serde_json::json!({"hosts": hosts, "secrets": secrets});
    output::result(&written, |_| {
        format!(
            "wrote {} and {} (0600)\nnext: edit the hosts and S3 settings, fill in the S3 keys, then run `pgctl check --hosts {}`",
            hosts.display(),
            secrets.display(),
            hosts.display()
        )
    })
}

/// The Docker engine certificates of one host, next to hosts.toml.
fn host_certs(hosts_path: &std::path::Path, host: &str) -> Result<()> {
    let hosts = config::load_hosts(hosts_path)?;
    let base = hosts_path.parent().unwrap_or(std::path::Path::new("."));
    let w = config::host_certs::write(&hosts, base, host)?;
    let shown = serde_json::json!({"host": host, "tls_dir": w.client_dir, "server": w.server_dir, "new_ca": w.new_ca});
    output::result(&shown, |_| {
        format!(
            "wrote {host}'s engine certificates{}: pgctl's client in {} (set `tls_dir` of {host} to it in hosts.toml), the engine's in {}\nnext: copy {} and ansible-free-scripts/prepare-host.sh to {host} and run there as root:\n  prepare-host.sh --certs DIR   (installs Docker, mutual TLS on port 2376, the cluster's names in /etc/hosts)",
            if w.new_ca { " and a new engines' CA (certs/docker-ca*.pem)" } else { "" },
            w.client_dir.display(),
            w.server_dir.display(),
            w.server_dir.display()
        )
    })
}

/// A fresh CA into an existing secrets.toml (kept 0600); refused when it has one.
fn add_tls_ca(secrets: &std::path::Path) -> Result<()> {
    let text = std::fs::read_to_string(secrets).map_err(|e| error::usage(format!("{}: {e}", secrets.display())))?;
    let parsed = init::with_tls_ca(&text).map_err(|e| error::usage(format!("{}: {e}", secrets.display())))?;
    let Some(with_ca) = parsed else {
        return Err(error::refused(format!(
            "{} already has postgres_ca_cert / postgres_ca_key; nothing was changed",
            secrets.display()
        )));
    };
    init::write_file(secrets, &with_ca, 0o600)?;
    config::load_secrets(secrets)?;
    output::result(&serde_json::json!({ "secrets": secrets }), |_| {
        format!(
            "added a PostgreSQL CA to {}; set `tls = true` in [cluster] of hosts.toml and run `pgctl up`",
            secrets.display()
        )
    })
}
