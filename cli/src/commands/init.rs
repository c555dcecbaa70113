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
