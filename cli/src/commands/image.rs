//! `pgctl image build|push|list|base`.

use super::views::short_id;
use super::Ctx;
use crate::image::{self, Component, Source};
use crate::output::{self, size};
use crate::{config, docker, error};
use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum ImageCommand {
    /// Build the image (PostgreSQL, PostGIS, TimescaleDB, Patroni, WAL-G, pgBackRest) on the local engine
    #[command(long_about = "Build the database image on the local Docker engine.\n\n\
Sources: `pgdg` (default; PGDG apt for PostgreSQL 13-17, TimescaleDB from Timescale's apt repo, WAL-G release with a pinned sha256, Consul from HashiCorp's apt repo) or `debian` (Debian's own packages: --suite bullseye has PostgreSQL 13, bookworm 15, trixie 17; TimescaleDB, WAL-G and Consul only from --artifacts).\n\
A component that cannot be had must be left out explicitly with --without; the build checks that every included component runs, and records versions in labels and /etc/pgctl/manifest.json.\n\n\
Examples (offline, this machine):\n  pgctl image build --source debian --base pgctl/debian:bookworm --without timescaledb,walg,consul\n  \
pgctl image build --source debian --suite bullseye --tag pgctl/postgres:13-debian --without timescaledb,walg,consul   (base pgctl/debian:bullseye, made with mmdebstrap if missing)")]
    Build(BuildArgs),
    /// Deliver the cluster's image to every host (stream engine-to-engine, or registry pull)
    Push {
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
    },
    /// List pgctl images on the local engine with their component versions
    List {
        /// Also each image's layers with their size and the build step that made them
        #[arg(long)]
        layers: bool,
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
pub struct BuildArgs {
    /// Where packages come from
    #[arg(long, value_enum, default_value_t = Source::Pgdg)]
    source: Source,
    /// Debian suite of the base image: bullseye, bookworm or trixie (with --source debian it decides the PostgreSQL major)
    #[arg(long, default_value = "bookworm")]
    suite: String,
    /// PostgreSQL major version [default: 15; with --source debian the suite's]
    #[arg(long)]
    pg_major: Option<u32>,
    /// Base image of that suite [default: debian:<suite>-slim; with --suite other than bookworm, pgctl/debian:<suite>, made locally if missing]
    #[arg(long)]
    base: Option<String>,
    /// Tag for the result [default: cluster.image from --hosts if that file exists, else pgctl/postgres:<major>]
    #[arg(long)]
    tag: Option<String>,
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
}

pub async fn run(command: ImageCommand, ctx: &Ctx) -> Result<()> {
    match command {
        ImageCommand::Build(a) => build(a, ctx).await,
        ImageCommand::Push { image, limit, registry } => push(ctx, image, &limit, registry).await,
        ImageCommand::List { layers } => {
            let images = image::list::list(&docker::local().await?, layers).await?;
            output::result(&images, |images| list_text(images))
        }
        ImageCommand::Base { tag, suite, mirror, force } => {
            let id = image::base::ensure_base(&docker::local().await?, &tag, &suite, &mirror, force).await?;
            output::result(&serde_json::json!({"tag": tag, "id": id}), |_| format!("{tag} {id}"))
        }
    }
}

async fn build(a: BuildArgs, ctx: &Ctx) -> Result<()> {
    let pg_major = match (a.pg_major, a.source) {
        (Some(m), _) => m,
        (None, Source::Debian) => image::debian_major(&a.suite).unwrap_or(15),
        (None, Source::Pgdg) => 15,
    };
    let base = match (&a.base, a.suite.as_str()) {
        (Some(b), _) => b.clone(),
        (None, "bookworm") => "debian:bookworm-slim".into(),
        (None, suite) => format!("pgctl/debian:{suite}"),
    };
    let hosts = &ctx.global.hosts;
    let tag = match a.tag {
        Some(t) => t,
        None if hosts.exists() => config::load(hosts, ctx.global.secrets.as_deref())?.hosts.cluster.image,
        None => format!("pgctl/postgres:{pg_major}"),
    };
    let plan = image::plan(image::BuildRequest {
        source: a.source,
        suite: a.suite.clone(),
        pg_major,
        base: base.clone(),
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
    if a.base.is_none() && a.suite != "bookworm" {
        // No registry needed: the suite's base is made here (mmdebstrap), once.
        image::base::ensure_base(&local, &base, &a.suite, image::base::DEFAULT_MIRROR, false).await?;
    } else if docker::image_id(&local.docker, &base).await?.is_none() && base.starts_with("pgctl/") {
        return Err(error::usage(format!(
            "base image {base} is not in the local engine: make it with `pgctl image base --tag {base} --suite {}`",
            a.suite
        )));
    }
    let built = image::build::build_postgres(&local, &plan, ctx.global.verbose || a.log).await?;
    output::result(&built, |b| {
        let mut text = format!(
            "built {} ({}) — {} in {}",
            b.tag,
            short_id(&b.id),
            size(b.size_bytes.max(0) as u64),
            output::seconds(b.seconds)
        );
        for (k, v) in b.manifest.iter().filter(|(_, v)| !v.is_empty()) {
            text.push_str(&format!("\n  {k:<12} {v}"));
        }
        text
    })
}

async fn push(ctx: &Ctx, image: Option<String>, limit: &[String], registry: Option<String>) -> Result<()> {
    if let Some(target) = registry {
        let image = match image {
            Some(i) => i,
            None => ctx.load()?.hosts.cluster.image,
        };
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        image::push::publish(&image, &target, env("PGCTL_REGISTRY_USER"), env("PGCTL_REGISTRY_PASSWORD")).await?;
        return output::result(&serde_json::json!({"pushed": target}), |_| format!("pushed {target}"));
    }
    let cfg = ctx.load()?;
    for name in limit {
        if cfg.host(name).is_none() {
            return Err(error::usage(format!(
                "--limit {name}: no such host in {}",
                cfg.hosts_path.display()
            )));
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
    output::result(&outcomes, |outcomes| {
        let rows = outcomes.iter().map(|o| {
            vec![
                o.host.clone(),
                o.result.clone(),
                size(o.bytes),
                output::seconds(o.seconds),
                o.error.clone().unwrap_or_default(),
            ]
        });
        output::table(&["host", "result", "sent", "time", "error"], rows)
    })?;
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

fn list_text(images: &[image::list::ImageInfo]) -> String {
    const COMPONENTS: [&str; 8] = [
        "postgres",
        "postgis",
        "timescaledb",
        "patroni",
        "pgbackrest",
        "walg",
        "etcd",
        "consul",
    ];
    let rows = images.iter().map(|i| {
        let mut row = vec![i.tags.join(" "), short_id(&i.id).to_string(), size(i.size_bytes.max(0) as u64)];
        row.extend(COMPONENTS.iter().map(|k| i.manifest.get(*k).cloned().unwrap_or_else(|| "-".into())));
        row
    });
    let mut header = vec!["image", "id", "size"];
    header.extend([
        "postgres",
        "postgis",
        "timescaledb",
        "patroni",
        "pgbackrest",
        "wal-g",
        "etcd",
        "consul",
    ]);
    let mut out = output::table(&header, rows);
    for i in images.iter().filter(|i| !i.layers.is_empty()) {
        out.push_str(&format!("\nlayers of {} ({}):\n", i.tags.join(" "), short_id(&i.id)));
        for l in &i.layers {
            let step: String = l.step.chars().take(100).collect();
            out.push_str(&format!("  {:>9}  {step}\n", size(l.size_bytes.max(0) as u64)));
        }
    }
    out
}
