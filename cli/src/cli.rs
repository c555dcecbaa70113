//! Command-line surface. Handlers parse options and call the capability modules.

use crate::config::{self, init};
use crate::image::{self, Component, Source};
use crate::{cluster, docker, lab, restore};
use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use comfy_table::Table;
use std::path::{Path, PathBuf};

#[derive(Parser)]
#[command(
    name = "pgctl",
    version,
    about = "Highly available PostgreSQL (Patroni + etcd/Consul + WAL-G/pgBackRest to S3) on plain Docker hosts"
)]
#[command(long_about = "Highly available PostgreSQL on plain Docker hosts.\n\n\
Start with `pgctl init` (writes hosts.toml and secrets.toml to edit) and `pgctl check`.\n\
Build the image with `pgctl image build`, deliver it with `pgctl image push`.\n\
To try everything on one machine: `pgctl lab up` makes simulated hosts and a ready hosts.toml.")]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    /// More log output (or set PGCTL_LOG=pgctl=debug)
    #[arg(short, long, global = true)]
    pub verbose: bool,
}

#[derive(Args, Clone)]
struct HostsArgs {
    /// The cluster's hosts file
    #[arg(long, default_value = "hosts.toml", env = "PGCTL_HOSTS")]
    hosts: PathBuf,
    /// Secrets file [default: secrets.toml next to the hosts file]
    #[arg(long, env = "PGCTL_SECRETS")]
    secrets: Option<PathBuf>,
}

impl HostsArgs {
    fn load(&self) -> Result<config::Config> {
        let cfg = config::load(&self.hosts, self.secrets.as_deref())?;
        for w in &cfg.warnings {
            eprintln!("{w}");
        }
        Ok(cfg)
    }
}

#[derive(Subcommand)]
enum Command {
    /// Write a commented hosts.toml and a secrets.toml (0600) with fresh random secrets
    Init {
        #[arg(long, default_value = "hosts.toml")]
        hosts: PathBuf,
        #[arg(long, default_value = "secrets.toml")]
        secrets: PathBuf,
        /// Cluster name (Patroni scope)
        #[arg(long, default_value = "main")]
        name: String,
        /// Replace existing files
        #[arg(long)]
        force: bool,
    },
    /// Validate hosts.toml and secrets.toml without touching any host
    Check {
        #[command(flatten)]
        hosts: HostsArgs,
    },
    /// Converge every host to hosts.toml: DCS, then Patroni; waits until the cluster is healthy. Safe to re-run
    #[command(long_about = "Converge every host to hosts.toml.\n\n\
Pre-flight on all hosts first (engines reachable, image present — delivered if missing —, ports free, no foreign containers, no stale DCS state); \
then the DCS (etcd or Consul), then one Patroni container per `patroni` host (host networking, data on a named volume, configuration and secrets uploaded as 0600 files); \
then waits for one leader and every replica streaming. A second run with nothing changed recreates nothing.")]
    Up {
        #[command(flatten)]
        hosts: HostsArgs,
        /// Converge only these hosts (repeatable); e.g. a node just added to hosts.toml
        #[arg(long)]
        limit: Vec<String>,
        /// How long to wait for the cluster to become healthy, in seconds
        #[arg(long, default_value_t = 300)]
        timeout: u64,
        #[arg(long)]
        json: bool,
    },
    /// Members, roles, timelines, lag, streaming, DCS health and image per host
    Status {
        #[command(flatten)]
        hosts: HostsArgs,
        #[arg(long)]
        json: bool,
    },
    /// Planned switchover of the leader role to another member
    Switchover {
        #[command(flatten)]
        hosts: HostsArgs,
        /// The member to become leader [default: Patroni picks a healthy replica]
        #[arg(long)]
        to: Option<String>,
        /// Schedule it (ISO 8601 with time zone, e.g. 2026-05-17T03:00+03:00)
        #[arg(long)]
        at: Option<String>,
        #[command(flatten)]
        confirm: Confirm,
    },
    /// Manual failover to a member (also when there is no healthy leader)
    Failover {
        #[command(flatten)]
        hosts: HostsArgs,
        #[arg(long)]
        to: String,
        #[command(flatten)]
        confirm: Confirm,
    },
    /// Rebuild a replica's data from the leader (for a member that no longer starts)
    Reinit {
        #[command(flatten)]
        hosts: HostsArgs,
        member: String,
        #[command(flatten)]
        confirm: Confirm,
    },
    /// Restart PostgreSQL on one member or all, through Patroni
    Restart {
        #[command(flatten)]
        hosts: HostsArgs,
        member: Option<String>,
        #[command(flatten)]
        confirm: Confirm,
    },
    /// Maintenance mode: stop automatic failover
    Pause {
        #[command(flatten)]
        hosts: HostsArgs,
    },
    /// Leave maintenance mode
    Resume {
        #[command(flatten)]
        hosts: HostsArgs,
    },
    /// Stop the cluster's containers (replicas first, then the leader, then the DCS); keep all data
    Down {
        #[command(flatten)]
        hosts: HostsArgs,
        #[command(flatten)]
        confirm: Confirm,
    },
    /// Remove the cluster's containers and its DCS scope; data volumes only with --volumes
    Remove {
        #[command(flatten)]
        hosts: HostsArgs,
        /// Required: this destroys the cluster
        #[arg(long)]
        i_am_aware: bool,
        /// Also delete the data volumes (all data is lost)
        #[arg(long)]
        volumes: bool,
        /// Do not ask to type the cluster name
        #[arg(long)]
        yes: bool,
    },
    /// Backups to S3: take one now, list what the repository holds
    #[command(subcommand)]
    Backup(BackupCommand),
    /// Prove a backup restores: fetch it into a throwaway volume (read-only S3 key, archiving off), pg_dumpall and amcheck
    #[command(long_about = "Prove a backup restores.\n\n\
The backup is fetched into a throwaway container and volume on one host with the read-only S3 key and archiving off, \
so it can never write into the archive. PostgreSQL recovers it (to the end of the backup, or with --latest through all archived WAL) \
and is promoted; then `pg_dumpall > /dev/null` reads every row and amcheck checks every B-tree index of every database \
(the Compose README's section 5.4). The container and volume are removed afterwards. Exits non-zero on any failure.")]
    VerifyBackup {
        #[command(flatten)]
        hosts: HostsArgs,
        /// The backup to verify [default: the newest]
        #[arg(long)]
        backup: Option<String>,
        /// The host to verify on [default: a member that is not the leader]
        #[arg(long)]
        on: Option<String>,
        /// Replay all archived WAL after the backup, not only to its end
        #[arg(long)]
        latest: bool,
        #[arg(long)]
        json: bool,
    },
    /// Point-in-time restore of the whole cluster from its backups (in place; the old data is kept for --rollback)
    #[command(long_about = "Point-in-time restore of the whole cluster from its backups.\n\n\
Pre-flight first, before anything stops: the repository is read with the read-only key, a base backup before the target must exist \
and the target must lie in the restorable window (both are printed), every host must answer and have the image, and each must have \
room for a second copy of the data. The plan is printed and must be confirmed (--yes in scripts).\n\n\
Then: the current WAL segment is archived, Patroni stops on the replicas and then the leader, the backup is fetched into a NEW data \
volume generation on the leader's host (the old volumes are never touched), PostgreSQL replays WAL to the target and is promoted onto a \
new timeline, the DCS scope is cleared, the restored member starts alone and leads, and the other members are rebuilt from it. \
The cluster then archives its new timeline to its own prefix. Progress is shown throughout, and the time of each phase at the end.\n\n\
`pgctl restore --rollback` deletes the restored generation and puts the previous data back.\n\n\
Examples:\n  pgctl restore --target-time '2026-05-17 10:00:00+03'\n  pgctl restore                      (to the latest archived WAL)\n  pgctl restore --rollback")]
    Restore {
        #[command(flatten)]
        hosts: HostsArgs,
        /// Recover to this time; a time zone is required (e.g. '2026-05-17 10:00:00+03', '... UTC')
        #[arg(long)]
        target_time: Option<String>,
        /// Recover to this WAL position (e.g. 0/3000060)
        #[arg(long)]
        target_lsn: Option<String>,
        /// Recover to this restore point (pg_create_restore_point)
        #[arg(long)]
        target_name: Option<String>,
        /// Timeline to follow: latest or a number
        #[arg(long, default_value = "latest")]
        target_timeline: String,
        /// The base backup to start from [default: the newest one that ends before the target]
        #[arg(long)]
        backup: Option<String>,
        /// Delete the old data volumes once the cluster is stopped (when there is no room for two copies; no rollback then)
        #[arg(long)]
        no_keep_old: bool,
        /// Undo the last restore: delete the restored data and put the previous data back
        #[arg(long, conflicts_with_all = ["target_time", "target_lsn", "target_name", "backup", "no_keep_old", "into"])]
        rollback: bool,
        /// Clone: restore this cluster's backups into the cluster of another hosts.toml (read with the read-only key; the clone archives into its own prefix)
        #[arg(long, value_name = "HOSTS_TOML")]
        into: Option<PathBuf>,
        #[command(flatten)]
        confirm: Confirm,
        #[arg(long)]
        json: bool,
    },
    /// Configuration files pgctl renders for the hosts
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Build, deliver and list the database image
    #[command(subcommand)]
    Image(ImageCommand),
    /// Simulated hosts on this machine (nested Docker engines + S3) for trying pgctl and testing it
    #[command(subcommand)]
    Lab(LabCommand),
}

#[derive(Args)]
struct Confirm {
    /// Do not ask for confirmation (for scripts and CI)
    #[arg(long, short = 'y')]
    yes: bool,
    /// How long to wait for the result, in seconds
    #[arg(long, default_value_t = 180)]
    timeout: u64,
}

impl Confirm {
    fn ask(&self, question: &str) -> Result<()> {
        if self.yes {
            return Ok(());
        }
        ask(question, "y")
    }
    fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.timeout)
    }
}

/// Asks on the terminal; `expected` is what the user must type. Refuses without a terminal.
fn ask(question: &str, expected: &str) -> Result<()> {
    use std::io::{BufRead, IsTerminal, Write};
    if !std::io::stdin().is_terminal() {
        bail!("{question}: no terminal to confirm on; pass --yes to confirm in scripts");
    }
    eprint!("{question} [type {expected} to confirm]: ");
    std::io::stderr().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    if line.trim() != expected {
        bail!("not confirmed; nothing was changed");
    }
    Ok(())
}

#[derive(Subcommand)]
enum BackupCommand {
    /// A full backup on the current leader, now
    Now {
        #[command(flatten)]
        hosts: HostsArgs,
        /// Switch to a new WAL segment first (pg_switch_wal), so the newest WAL is archived
        #[arg(long)]
        switch_wal: bool,
    },
    /// Keep the newest N full backups (and the WAL they need); --dry-run shows what would go
    Retain {
        #[command(flatten)]
        hosts: HostsArgs,
        #[arg(long)]
        keep_full: u32,
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        confirm: Confirm,
    },
    /// Backups in the repository (read from S3 with the read-only key; no running cluster needed)
    List {
        #[command(flatten)]
        hosts: HostsArgs,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print a file exactly as `up` uploads it to HOST (it contains secrets: mind where it goes)
    Render {
        #[command(flatten)]
        hosts: HostsArgs,
        host: String,
        /// patroni.yml, etcd.yml or consul.json
        #[arg(long, default_value = "patroni.yml")]
        file: String,
    },
}

#[derive(Subcommand)]
enum ImageCommand {
    /// Build the image (PostgreSQL, PostGIS, TimescaleDB, Patroni, WAL-G, pgBackRest) on the local engine
    #[command(long_about = "Build the database image on the local Docker engine.\n\n\
Sources: `pgdg` (default; PGDG apt for PostgreSQL 13-17, TimescaleDB from Timescale's apt repo, WAL-G release with a pinned sha256, Consul from HashiCorp's apt repo) or `debian` (Debian bookworm only: PostgreSQL 15; TimescaleDB, WAL-G and Consul only from --artifacts).\n\
A component that cannot be had must be left out explicitly with --without; the build checks that every included component runs, and records versions in labels and /etc/pgctl/manifest.json.\n\n\
Example (offline, this machine):  pgctl image build --source debian --base pgctl/debian:bookworm --without timescaledb,walg,consul")]
    Build(BuildArgs),
    /// Deliver the cluster's image to every host (stream engine-to-engine, or registry pull)
    Push {
        #[command(flatten)]
        hosts: HostsArgs,
        /// Image to deliver [default: cluster.image from hosts.toml]
        #[arg(long)]
        image: Option<String>,
        /// Only these hosts (repeatable)
        #[arg(long)]
        limit: Vec<String>,
        /// Instead of delivering to hosts: tag the image as REF and push it to REF's registry
        /// (credentials from PGCTL_REGISTRY_USER / PGCTL_REGISTRY_PASSWORD)
        #[arg(long, value_name = "REF")]
        registry: Option<String>,
        /// Print a JSON summary on stdout
        #[arg(long)]
        json: bool,
    },
    /// List pgctl images on the local engine with their component versions
    List {
        #[arg(long)]
        json: bool,
    },
    /// Make a Debian base image locally with mmdebstrap/debootstrap (no registry needed; root)
    Base {
        #[arg(long, default_value = image::base::DEFAULT_BASE_TAG)]
        tag: String,
        #[arg(long, default_value = "bookworm")]
        suite: String,
        #[arg(long, default_value = image::base::DEFAULT_MIRROR)]
        mirror: String,
        /// Make it again even if the engine has it
        #[arg(long)]
        force: bool,
    },
}

#[derive(Args)]
struct BuildArgs {
    /// Where packages come from
    #[arg(long, value_enum, default_value_t = Source::Pgdg)]
    source: Source,
    /// PostgreSQL major version
    #[arg(long, default_value_t = 15)]
    pg_major: u32,
    /// Base image (must be Debian bookworm). Without a registry, make one: `pgctl image base`
    #[arg(long, default_value = "debian:bookworm-slim")]
    base: String,
    /// Tag for the result [default: cluster.image from --hosts if it exists, else pgctl/postgres:<major>]
    #[arg(long)]
    tag: Option<String>,
    /// hosts.toml to take the tag from
    #[arg(long, default_value = "hosts.toml")]
    hosts: PathBuf,
    /// Directory of pre-downloaded components (wal-g, timescaledb*.deb, consul) with SHA256SUMS
    #[arg(long)]
    artifacts: Option<PathBuf>,
    /// Leave optional components out, explicitly (comma-separated)
    #[arg(long, value_enum, value_delimiter = ',')]
    without: Vec<Component>,
    /// Extra CA certificate trusted during the build (TLS-intercepting proxies)
    #[arg(long)]
    ca_cert: Option<PathBuf>,
    /// HTTP(S) proxy used during the build (not kept in the image)
    #[arg(long)]
    http_proxy: Option<String>,
    /// WAL-G release to download (source pgdg)
    #[arg(long, default_value = "v3.0.5")]
    walg_version: String,
    /// sha256 of that WAL-G release tarball, from a source you trust (required to download it)
    #[arg(long, env = "PGCTL_WALG_SHA256")]
    walg_sha256: Option<String>,
    /// Do not use the build cache
    #[arg(long)]
    no_cache: bool,
    /// Print the whole build log, not only the steps
    #[arg(long)]
    log: bool,
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum LabCommand {
    /// Make (or complete) the lab: base image, N hosts with their own engines, S3, hosts.toml
    Up {
        #[command(flatten)]
        lab: LabArgs,
        /// Number of simulated hosts
        #[arg(long, default_value_t = 3)]
        hosts: usize,
        /// The lab network (a /24); hosts get .11, .12, ..., S3 gets .10
        #[arg(long, default_value = "172.30.77.0/24")]
        subnet: String,
        /// Garage S3 server binary (`cargo install garage`; ansible-free-scripts/build-garage.sh)
        #[arg(long, env = "PGCTL_GARAGE_BIN", default_value = "/var/cache/pgctl/garage-2.5.0/bin/garage")]
        garage: PathBuf,
        /// Base image for the lab's images (made locally with mmdebstrap if missing)
        #[arg(long, default_value = image::base::DEFAULT_BASE_TAG)]
        base: String,
        #[arg(long, default_value = image::base::DEFAULT_MIRROR)]
        mirror: String,
    },
    /// Remove every container, volume and network of the lab, and its directory
    Down {
        #[command(flatten)]
        lab: LabArgs,
        /// Also remove the lab's own images (simulated host, S3)
        #[arg(long)]
        images: bool,
    },
    /// Show the lab's hosts, whether their engines answer, and whether S3 answers
    Status {
        #[command(flatten)]
        lab: LabArgs,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
struct LabArgs {
    /// Lab name (label value and network name)
    #[arg(long, default_value = "pgctl-lab")]
    name: String,
    /// Directory for the lab's CA, certificates, hosts.toml and secrets.toml
    #[arg(long, default_value = "lab")]
    dir: PathBuf,
}

pub async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Init {
            hosts,
            secrets,
            name,
            force,
        } => cmd_init(&hosts, &secrets, &name, force),
        Command::Check { hosts } => cmd_check(&hosts),
        Command::Up {
            hosts,
            limit,
            timeout,
            json,
        } => {
            let cfg = hosts.load()?;
            let opts = cluster::up::UpOptions {
                limit,
                ..cluster::up::UpOptions::new(std::time::Duration::from_secs(timeout), cluster::up::MAX_LAG)
            };
            let status = cluster::up::up(&cfg, &opts).await?.context("up converges Patroni")?;
            print_status(&status, json)
        }
        Command::Status { hosts, json } => {
            let (cfg, engines) = connect(&hosts).await?;
            print_status(&cluster::status::fetch(&cfg, &engines).await?, json)
        }
        Command::Switchover { hosts, to, at, confirm } => {
            let (cfg, engines) = connect(&hosts).await?;
            confirm.ask(&format!(
                "switch the leader of `{}` over{}",
                cfg.hosts.cluster.name,
                to.as_deref().map(|t| format!(" to {t}")).unwrap_or_default()
            ))?;
            print_status(
                &cluster::ops::switchover(&cfg, &engines, to.as_deref(), at.as_deref(), confirm.timeout()).await?,
                false,
            )
        }
        Command::Failover { hosts, to, confirm } => {
            let (cfg, engines) = connect(&hosts).await?;
            confirm.ask(&format!("fail `{}` over to {to}", cfg.hosts.cluster.name))?;
            print_status(&cluster::ops::failover(&cfg, &engines, &to, confirm.timeout()).await?, false)
        }
        Command::Reinit { hosts, member, confirm } => {
            let (cfg, engines) = connect(&hosts).await?;
            confirm.ask(&format!("delete {member}'s data and copy it again from the leader"))?;
            print_status(&cluster::ops::reinit(&cfg, &engines, &member, confirm.timeout()).await?, false)
        }
        Command::Restart { hosts, member, confirm } => {
            let (cfg, engines) = connect(&hosts).await?;
            confirm.ask(&format!("restart PostgreSQL on {}", member.as_deref().unwrap_or("every member")))?;
            print_status(
                &cluster::ops::restart(&cfg, &engines, member.as_deref(), confirm.timeout()).await?,
                false,
            )
        }
        command @ (Command::Pause { .. } | Command::Resume { .. }) => {
            let (paused, hosts) = match command {
                Command::Pause { hosts } => (true, hosts),
                Command::Resume { hosts } => (false, hosts),
                _ => unreachable!("matched above"),
            };
            let (cfg, engines) = connect(&hosts).await?;
            print_status(
                &cluster::ops::set_pause(&cfg, &engines, paused, std::time::Duration::from_secs(60)).await?,
                false,
            )
        }
        Command::Down { hosts, confirm } => {
            let cfg = hosts.load()?;
            let engines = docker::connect_all(&cfg).await?;
            confirm.ask(&format!(
                "stop every container of `{}` (data is kept; `pgctl up` starts it again)",
                cfg.hosts.cluster.name
            ))?;
            for line in cluster::teardown::down(&cfg, &engines).await? {
                println!("{line}");
            }
            Ok(())
        }
        Command::Remove {
            hosts,
            i_am_aware,
            volumes,
            yes,
        } => {
            let cfg = hosts.load()?;
            let scope = cfg.hosts.cluster.name.clone();
            if !i_am_aware {
                bail!("`pgctl remove` destroys cluster `{scope}` (containers and its DCS scope{}); it only runs with --i-am-aware. To only stop it, use `pgctl down`", if volumes { ", and with --volumes ALL ITS DATA" } else { "; data volumes are kept" });
            }
            if !yes {
                ask(
                    &format!("remove cluster `{scope}`{}", if volumes { " AND DELETE ALL ITS DATA" } else { "" }),
                    &scope,
                )?;
            }
            let engines = docker::connect_all(&cfg).await?;
            for line in cluster::teardown::remove(&cfg, &engines, volumes).await? {
                println!("{line}");
            }
            Ok(())
        }
        Command::Backup(BackupCommand::Now { hosts, switch_wal }) => {
            let (cfg, engines) = connect(&hosts).await?;
            let output = crate::backup::backup_now(&cfg, &engines, switch_wal).await?;
            eprint!("{output}");
            println!("backup of `{}` done", cfg.hosts.cluster.name);
            Ok(())
        }
        Command::Backup(BackupCommand::Retain {
            hosts,
            keep_full,
            dry_run,
            confirm,
        }) => {
            let (cfg, engines) = connect(&hosts).await?;
            if !dry_run {
                confirm.ask(&format!(
                    "delete all but the newest {keep_full} full backup(s) of `{}`",
                    cfg.hosts.cluster.name
                ))?;
            }
            eprint!("{}", crate::backup::retain(&cfg, &engines, keep_full, dry_run).await?);
            Ok(())
        }
        Command::Backup(BackupCommand::List { hosts, json }) => {
            let cfg = hosts.load()?;
            let listing = crate::backup::list::list(&cfg).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&listing)?);
                return Ok(());
            }
            let fmt = |t: i64| {
                time::OffsetDateTime::from_unix_timestamp(t)
                    .ok()
                    .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
                    .unwrap_or_default()
            };
            let mut table = Table::new();
            table.set_header(["backup", "type", "started", "finished", "size MB", "WAL start"]);
            for b in &listing.backups {
                table.add_row([
                    b.name.clone(),
                    b.kind.clone(),
                    fmt(b.start),
                    fmt(b.stop),
                    format!("{:.1}", b.size_bytes as f64 / 1e6),
                    b.wal_start.clone(),
                ]);
            }
            println!("{table}");
            println!(
                "earliest restorable point: {}",
                listing
                    .earliest_restorable
                    .map(fmt)
                    .unwrap_or_else(|| "none (no backup yet)".into())
            );
            println!(
                "latest restorable point: about {} (newest archived WAL {})",
                listing.latest_restorable.map(fmt).unwrap_or_else(|| "unknown".into()),
                listing.wal_max.as_deref().unwrap_or("unknown")
            );
            Ok(())
        }
        Command::VerifyBackup {
            hosts,
            backup,
            on,
            latest,
            json,
        } => cmd_verify_backup(&hosts, backup.as_deref(), on.as_deref(), latest, json).await,
        Command::Restore {
            hosts,
            target_time,
            target_lsn,
            target_name,
            target_timeline,
            backup,
            no_keep_old,
            rollback,
            into,
            confirm,
            json,
        } => {
            if rollback {
                return cmd_rollback(&hosts, &confirm, json).await;
            }
            let target = restore::target::Target::from_flags(target_time.as_deref(), target_lsn.as_deref(), target_name.as_deref())?;
            if target_timeline != "latest" && target_timeline.parse::<u32>().is_err() {
                bail!("--target-timeline {target_timeline}: expected `latest` or a timeline number");
            }
            let opts = restore::RestoreOptions {
                target,
                timeline: target_timeline,
                backup,
                keep_old: !no_keep_old,
                timeout: confirm.timeout().max(std::time::Duration::from_secs(600)),
            };
            cmd_restore(&hosts, into.as_deref(), &opts, &confirm, json).await
        }
        Command::Config(ConfigCommand::Render { hosts, host, file }) => {
            let cfg = hosts.load()?;
            let h = cfg
                .host(&host)
                .with_context(|| format!("no host `{host}` in {}", cfg.hosts_path.display()))?;
            let text = match file.as_str() {
                "patroni.yml" => cluster::spec::patroni_yml(&cfg, h)?,
                "etcd.yml" => cluster::spec::etcd_yml(&cfg, h)?,
                "consul.json" => cluster::spec::consul_json(&cfg, h)?,
                other => bail!("--file {other}: allowed are patroni.yml, etcd.yml, consul.json"),
            };
            print!("{text}");
            Ok(())
        }
        Command::Image(cmd) => match cmd {
            ImageCommand::Build(args) => cmd_image_build(args, cli.verbose).await,
            ImageCommand::Push {
                hosts,
                image,
                limit,
                registry,
                json,
            } => cmd_image_push(&hosts, image, &limit, registry, json).await,
            ImageCommand::List { json } => cmd_image_list(json).await,
            ImageCommand::Base { tag, suite, mirror, force } => {
                let id = image::base::ensure_base(&docker::local().await?, &tag, &suite, &mirror, force).await?;
                println!("{tag} {id}");
                Ok(())
            }
        },
        Command::Lab(cmd) => match cmd {
            LabCommand::Up {
                lab: l,
                hosts,
                subnet,
                garage,
                base,
                mirror,
            } => {
                lab::up(&lab::LabSpec {
                    name: l.name,
                    dir: l.dir,
                    hosts,
                    subnet,
                    garage,
                    base,
                    mirror,
                })
                .await
            }
            LabCommand::Down { lab: l, images } => {
                let removed = lab::down(&l.name, &l.dir, images).await?;
                println!("removed {} object(s) of lab `{}`", removed.len(), l.name);
                for r in removed {
                    println!("  {r}");
                }
                Ok(())
            }
            LabCommand::Status { lab: l, json } => cmd_lab_status(&l, json).await,
        },
    }
}

fn cmd_init(hosts: &Path, secrets: &Path, name: &str, force: bool) -> Result<()> {
    if !crate::config::validate_name(name) {
        bail!("--name `{name}` is not DNS-safe: use lowercase letters, digits and '-'");
    }
    init::write_files(
        hosts,
        secrets,
        &init::HostsTemplate::example(name),
        &init::SecretsTemplate::generate(),
        force,
    )?;
    println!("wrote {} and {} (0600)", hosts.display(), secrets.display());
    println!(
        "next: edit the hosts and S3 settings, fill in the S3 keys, then run `pgctl check --hosts {}`",
        hosts.display()
    );
    Ok(())
}

fn cmd_check(args: &HostsArgs) -> Result<()> {
    let cfg = args.load()?;
    println!(
        "{} + {}: OK — cluster `{}`, PostgreSQL {}, {} host(s), dcs {:?}, backups {}",
        cfg.hosts_path.display(),
        cfg.secrets_path.display(),
        cfg.hosts.cluster.name,
        cfg.hosts.cluster.postgres_major,
        cfg.hosts.hosts.len(),
        cfg.hosts.cluster.dcs,
        if cfg.hosts.backup.is_some() {
            format!("{:?}", cfg.hosts.cluster.backup_engine)
        } else {
            "off".into()
        }
    );
    Ok(())
}

async fn cmd_image_build(a: BuildArgs, verbose: bool) -> Result<()> {
    let tag = match a.tag {
        Some(t) => t,
        None if a.hosts.exists() => config::load(&a.hosts, None)?.hosts.cluster.image,
        None => format!("pgctl/postgres:{}", a.pg_major),
    };
    let plan = image::plan(image::BuildRequest {
        source: a.source,
        pg_major: a.pg_major,
        base: a.base.clone(),
        tag,
        artifacts: a.artifacts,
        without: a.without.into_iter().collect(),
        ca_cert: a.ca_cert,
        http_proxy: a.http_proxy,
        no_cache: a.no_cache,
        walg_version: a.walg_version,
        walg_sha256: a.walg_sha256,
    })?;
    let local = docker::local().await?;
    if docker::image_id(&local.docker, &a.base).await?.is_none() && a.base.starts_with("pgctl/") {
        bail!(
            "base image {} is not in the local engine: make it with `pgctl image base --tag {}`",
            a.base,
            a.base
        );
    }
    let built = image::build::build_postgres(&local, &plan, verbose || a.log).await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&built)?);
    } else {
        println!(
            "built {} ({}) — {:.0} MB in {:.0}s",
            built.tag,
            short_id(&built.id),
            built.size_bytes as f64 / 1e6,
            built.seconds
        );
        for (k, v) in built.manifest.iter().filter(|(_, v)| !v.is_empty()) {
            println!("  {k:<12} {v}");
        }
    }
    Ok(())
}

async fn cmd_image_push(args: &HostsArgs, image: Option<String>, limit: &[String], registry: Option<String>, json: bool) -> Result<()> {
    if let Some(target) = registry {
        let image = match image {
            Some(i) => i,
            None => config::load(&args.hosts, args.secrets.as_deref())?.hosts.cluster.image,
        };
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        return image::push::publish(&image, &target, env("PGCTL_REGISTRY_USER"), env("PGCTL_REGISTRY_PASSWORD")).await;
    }
    let cfg = args.load()?;
    for name in limit {
        if cfg.host(name).is_none() {
            bail!("--limit {name}: no such host in {}", cfg.hosts_path.display());
        }
    }
    let hosts: Vec<_> = cfg
        .hosts
        .hosts
        .iter()
        .filter(|h| limit.is_empty() || limit.contains(&h.name))
        .collect();
    let image = image.unwrap_or_else(|| cfg.hosts.cluster.image.clone());
    let outcomes = image::push::push(&cfg, &image, &hosts).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&outcomes)?);
    } else {
        let mut table = Table::new();
        table.set_header(["host", "result", "MB", "seconds", "error"]);
        for o in &outcomes {
            table.add_row([
                o.host.clone(),
                o.result.clone(),
                format!("{:.1}", o.bytes as f64 / 1e6),
                format!("{:.1}", o.seconds),
                o.error.clone().unwrap_or_default(),
            ]);
        }
        println!("{table}");
    }
    let failed: Vec<_> = outcomes.iter().filter(|o| o.result == "failed").map(|o| o.host.as_str()).collect();
    if !failed.is_empty() {
        bail!(
            "image {image} was not delivered to {} of {} host(s): {}",
            failed.len(),
            outcomes.len(),
            failed.join(", ")
        );
    }
    Ok(())
}

async fn cmd_image_list(json: bool) -> Result<()> {
    let images = image::list::list(&docker::local().await?).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&images)?);
        return Ok(());
    }
    let mut table = Table::new();
    table.set_header([
        "image",
        "id",
        "MB",
        "postgres",
        "postgis",
        "timescaledb",
        "patroni",
        "pgbackrest",
        "wal-g",
        "etcd",
        "consul",
    ]);
    for i in images {
        let m = |k: &str| i.manifest.get(k).cloned().unwrap_or_else(|| "-".into());
        table.add_row([
            i.tags.join(" "),
            short_id(&i.id).into(),
            format!("{:.0}", i.size_bytes as f64 / 1e6),
            m("postgres"),
            m("postgis"),
            m("timescaledb"),
            m("patroni"),
            m("pgbackrest"),
            m("walg"),
            m("etcd"),
            m("consul"),
        ]);
    }
    println!("{table}");
    Ok(())
}

async fn cmd_lab_status(l: &LabArgs, json: bool) -> Result<()> {
    let status = lab::status(&l.name, &l.dir).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
        return Ok(());
    }
    if status.hosts.is_empty() {
        println!("lab `{}` has no hosts (run `pgctl lab up`)", status.name);
    }
    let mut table = Table::new();
    table.set_header(["host", "container", "state", "address", "engine"]);
    for h in &status.hosts {
        table.add_row([&h.name, &h.container, &h.state, &h.address, &h.engine]);
    }
    println!("{table}\nS3: {}", status.s3);
    Ok(())
}

/// Loads the configuration and connects to every host that answers; unreachable hosts are
/// reported and left out (status and recovery must work when a host is lost).
async fn cmd_verify_backup(hosts: &HostsArgs, backup: Option<&str>, on: Option<&str>, latest: bool, json: bool) -> Result<()> {
    let (cfg, engines) = connect(hosts).await?;
    let v = crate::backup::verify::verify(&cfg, &engines, backup, on, latest).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!(
        "backup {} verified on {} in {:.0}s: recovered to {} (timeline {}), every row readable, {} B-tree indexes intact",
        v.backup, v.host, v.seconds, v.recovered.lsn, v.recovered.timeline, v.recovered.indexes_checked
    );
    print_phases(&v.recovered.phases);
    Ok(())
}

async fn cmd_restore(hosts: &HostsArgs, into: Option<&Path>, opts: &restore::RestoreOptions, confirm: &Confirm, json: bool) -> Result<()> {
    let source = hosts.load()?;
    // A clone's hosts.toml has its own secrets.toml beside it.
    let cfg = match into {
        Some(path) => config::load(path, None)?,
        None => hosts.load()?,
    };
    let engines = docker::connect_all(&cfg).await?;
    let plan = restore::plan(&source, &cfg, &engines, opts).await?;
    eprint!("{}", plan.describe(&cfg, opts.keep_old));
    if !confirm.yes {
        ask("restore now", &cfg.hosts.cluster.name)?;
    }
    let report = restore::execute(&source, &cfg, &engines, plan, opts).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    print_status(&report.status, false)?;
    println!(
        "restored to {} from backup {}: last transaction replayed {}; the cluster runs on timeline {}",
        report.plan.target,
        report.plan.backup.name,
        report.recovered.last_replayed.as_deref().unwrap_or("none"),
        leader_timeline(&report.status)
    );
    print_phases(&report.phases);
    if opts.keep_old {
        println!("the previous data is kept; `pgctl restore --rollback` puts it back");
    }
    Ok(())
}

async fn cmd_rollback(hosts: &HostsArgs, confirm: &Confirm, json: bool) -> Result<()> {
    let cfg = hosts.load()?;
    let engines = docker::connect_all(&cfg).await?;
    let plan = restore::rollback::plan(&cfg, &engines).await?;
    eprint!("{}", plan.describe(&cfg));
    if !confirm.yes {
        ask("roll back now", &cfg.hosts.cluster.name)?;
    }
    let timeout = confirm.timeout().max(std::time::Duration::from_secs(600));
    let report = restore::rollback::execute(&cfg, &engines, plan, timeout).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    print_status(&report.status, false)?;
    println!(
        "rolled back: the previous data runs again, on timeline {}",
        leader_timeline(&report.status)
    );
    print_phases(&report.phases);
    Ok(())
}

fn print_phases(phases: &[(String, f64)]) {
    println!("time per phase:");
    for (name, secs) in phases {
        println!("  {name:<48} {secs:>7.1} s");
    }
}

fn leader_timeline(status: &cluster::status::ClusterStatus) -> String {
    status
        .members
        .iter()
        .find(|m| m.role == "leader")
        .and_then(|m| m.timeline)
        .map(|t| t.to_string())
        .unwrap_or_else(|| "unknown".into())
}

async fn connect(hosts: &HostsArgs) -> Result<(config::Config, Vec<docker::Engine>)> {
    let cfg = hosts.load()?;
    let (engines, unreachable) = docker::connect::connect_available(&cfg).await;
    for u in &unreachable {
        eprintln!("warning: host {} ({}) is unreachable: {}", u.host, u.endpoint, u.cause);
    }
    if engines.is_empty() {
        bail!("no host of {} is reachable", cfg.hosts_path.display());
    }
    Ok((cfg, engines))
}

fn print_status(status: &cluster::status::ClusterStatus, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(status)?);
    } else {
        println!("{}", cluster::status::render_table(status));
    }
    Ok(())
}

fn short_id(id: &str) -> &str {
    let id = id.trim_start_matches("sha256:");
    &id[..id.len().min(12)]
}
