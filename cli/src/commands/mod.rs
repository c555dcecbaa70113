//! The command line. One file per command group: each holds its clap arguments and a short
//! `run` that calls the capability modules and hands the result to the printer (`output`).
//! Options every command shares are declared once, in `Global`.

mod backup;
mod check;
mod cluster;
mod completions;
mod compose;
mod config;
mod image;
mod init;
mod lab;
mod migrate;
mod node;
mod restore;
mod upgrade;
mod user;
mod verify;
mod views;

use crate::error::Kind;
use crate::output::{self, Format};
use crate::{docker, error};
use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

const ABOUT: &str = "Highly available PostgreSQL (Patroni + etcd/Consul + WAL-G/pgBackRest to S3) on plain Docker hosts";

#[derive(Parser)]
#[command(name = "pgctl", version, about = ABOUT, after_help = error::EXIT_CODES)]
#[command(long_about = "Highly available PostgreSQL on plain Docker hosts.\n\n\
Start with `pgctl init` (writes hosts.toml and secrets.toml to edit) and `pgctl check`.\n\
Build the image with `pgctl image build`, deliver it with `pgctl image push`, then `pgctl up`.\n\
To try everything on one machine: `pgctl lab up` makes simulated hosts and a ready hosts.toml.\n\n\
Results go to stdout (`--output json` gives one JSON document; errors then come as JSON on stderr: \
{\"error\": {\"kind\", \"code\", \"message\"}}); progress and warnings go to stderr.")]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    pub global: Global,
}

/// Options of every command.
#[derive(Args, Clone)]
pub struct Global {
    /// The cluster's hosts file
    #[arg(long, global = true, default_value = "hosts.toml", env = "PGCTL_HOSTS")]
    pub hosts: PathBuf,
    /// Secrets file [default: secrets.toml next to the hosts file]
    #[arg(long, global = true, env = "PGCTL_SECRETS")]
    pub secrets: Option<PathBuf>,
    /// Result format on stdout
    #[arg(long, global = true, value_enum, default_value_t = Format::Text)]
    pub output: Format,
    /// Do not ask for confirmation (scripts and CI); safety pins such as --i-am-aware still apply
    #[arg(long, short = 'y', global = true)]
    pub yes: bool,
    /// More log output (or set PGCTL_LOG=pgctl=debug)
    #[arg(long, short = 'v', global = true)]
    pub verbose: bool,
    /// Same as --output json (kept for scripts written before --output)
    #[arg(long, global = true, hide = true)]
    pub json: bool,
}

impl Global {
    /// The result format: --output, or json when the old --json flag is given.
    pub fn format(&self) -> Format {
        if self.json {
            Format::Json
        } else {
            self.output
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Write a commented hosts.toml and a secrets.toml (0600) with fresh random secrets
    Init(init::InitArgs),
    /// Validate hosts.toml and secrets.toml (--online: also reach the hosts and S3)
    Check(check::CheckArgs),
    #[command(flatten)]
    Cluster(cluster::ClusterCommand),
    /// Grow and shrink the running cluster: add a host as a replica (from the leader or a backup), remove one
    #[command(subcommand)]
    Node(node::NodeCommand),
    /// Bring a standalone PostgreSQL into the cluster: from its backups in S3, by streaming, or from its data volume (pg_upgrade)
    #[command(subcommand)]
    Migrate(migrate::MigrateCommand),
    /// Backups to S3: take one now, list what the repository holds, apply retention
    #[command(subcommand)]
    Backup(backup::BackupCommand),
    #[command(long_about = verify::LONG_ABOUT)]
    /// Prove a backup restores: fetch it into a throwaway volume (read-only S3 key, archiving off), pg_dumpall and amcheck
    VerifyBackup(verify::VerifyArgs),
    #[command(long_about = restore::LONG_ABOUT)]
    /// Point-in-time restore of the whole cluster from its backups (in place; the old data is kept for --rollback)
    Restore(restore::RestoreArgs),
    /// Application roles on the leader: create, alter, drop, list (passwords from a file or stdin, stored as SCRAM)
    #[command(subcommand)]
    User(user::UserCommand),
    #[command(long_about = upgrade::LONG_ABOUT)]
    /// Roll a new image through the running cluster: replicas first, one switchover, the old leader last
    Upgrade(upgrade::UpgradeArgs),
    /// Configuration files pgctl renders for the hosts
    #[command(subcommand)]
    Config(config::ConfigCommand),
    /// docker-compose files for teams that keep their deployment in git
    #[command(subcommand)]
    Compose(compose::ComposeCommand),
    /// Build, deliver and list the database image
    #[command(subcommand)]
    Image(image::ImageCommand),
    /// Simulated hosts on this machine (nested Docker engines + S3) for trying pgctl and testing it
    #[command(subcommand)]
    Lab(lab::LabCommand),
    /// Print a shell completion script (bash, zsh, fish, ...)
    Completions(completions::CompletionsArgs),
    /// Print the manual page (roff) on stdout: `pgctl man | man -l -`
    Man,
}

/// What a command handler gets besides its own arguments.
pub struct Ctx {
    pub global: Global,
}

impl Ctx {
    /// Loads and validates hosts.toml and secrets.toml; prints their warnings.
    pub fn load(&self) -> Result<crate::config::Config> {
        let cfg = crate::config::load(&self.global.hosts, self.global.secrets.as_deref())?;
        for w in &cfg.warnings {
            output::step(w);
        }
        Ok(cfg)
    }

    /// Loads the configuration and connects to every host that answers: unreachable hosts are
    /// reported and left out (status and recovery must work when a host is lost).
    pub async fn connect_available(&self) -> Result<(crate::config::Config, Vec<docker::Engine>)> {
        let cfg = self.load()?;
        let (engines, unreachable) = docker::connect::connect_available(&cfg).await;
        for u in &unreachable {
            output::warn(format!("host {} ({}) is unreachable: {}", u.host, u.endpoint, u.cause));
        }
        if engines.is_empty() {
            return Err(error::tagged(
                Kind::Unreachable,
                format!("no host of {} is reachable", cfg.hosts_path.display()),
            ));
        }
        Ok((cfg, engines))
    }

    /// Loads the configuration and connects to every host, or changes nothing.
    pub async fn connect_all(&self) -> Result<(crate::config::Config, Vec<docker::Engine>)> {
        let cfg = self.load()?;
        let engines = docker::connect_all(&cfg).await?;
        Ok((cfg, engines))
    }

    /// Asks a yes/no question unless --yes.
    pub fn confirm(&self, question: &str) -> Result<()> {
        if self.global.yes {
            return Ok(());
        }
        output::confirm(question, "y")
    }

    /// Asks the user to type `expected` (the cluster name, for destructive work) unless --yes.
    pub fn confirm_typed(&self, question: &str, expected: &str) -> Result<()> {
        if self.global.yes {
            return Ok(());
        }
        output::confirm(question, expected)
    }
}

/// How long to wait for an operation's result.
#[derive(Args, Clone, Copy)]
pub struct Wait {
    /// How long to wait for the result, in seconds
    #[arg(long, default_value_t = 180)]
    pub timeout: u64,
}

impl Wait {
    pub fn duration(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.timeout)
    }
}

pub async fn run(cli: Cli) -> Result<()> {
    let ctx = Ctx { global: cli.global };
    match cli.command {
        Command::Init(a) => init::run(a, &ctx),
        Command::Check(a) => check::run(a, &ctx).await,
        Command::Cluster(c) => cluster::run(c, &ctx).await,
        Command::Node(c) => node::run(c, &ctx).await,
        Command::Migrate(c) => migrate::run(c, &ctx).await,
        Command::Backup(c) => backup::run(c, &ctx).await,
        Command::VerifyBackup(a) => verify::run(a, &ctx).await,
        Command::Restore(a) => restore::run(a, &ctx).await,
        Command::Upgrade(a) => upgrade::run(a, &ctx).await,
        Command::User(c) => user::run(c, &ctx).await,
        Command::Compose(c) => compose::run(c, &ctx).await,
        Command::Config(c) => config::run(c, &ctx).await,
        Command::Image(c) => image::run(c, &ctx).await,
        Command::Lab(c) => lab::run(c, &ctx).await,
        Command::Completions(a) => completions::completions(a),
        Command::Man => completions::man(),
    }
}
