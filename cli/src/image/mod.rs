//! The database image: what goes into it (plan), how its context is assembled, building it
//! through the Docker API, making a base locally, listing, and delivering it to hosts.

pub mod base;
pub mod build;
pub mod context;
pub mod list;
pub mod push;

use anyhow::{bail, Context, Result};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

pub use crate::layout::{LABEL_IMAGE, LABEL_MANIFEST_PREFIX};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// PGDG apt (PostgreSQL 13-17), Timescale's apt repo, WAL-G release binary, HashiCorp apt.
    Pgdg,
    /// Debian's own packages (bullseye: PostgreSQL 13, bookworm: 15, trixie: 17);
    /// TimescaleDB/WAL-G/Consul only from --artifacts.
    Debian,
}

/// Optional components; everything else (PostgreSQL, PostGIS, Patroni, pgBackRest, amcheck,
/// tini, cron, the access and exporter packages) is always in the image. etcd comes from
/// Debian whatever the source; an image for a Consul cluster can leave it out (38 MB).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Component {
    Timescaledb,
    Walg,
    Consul,
    Etcd,
}

impl Component {
    pub fn name(self) -> &'static str {
        match self {
            Component::Timescaledb => "timescaledb",
            Component::Walg => "walg",
            Component::Consul => "consul",
            Component::Etcd => "etcd",
        }
    }
}

/// What the user asked `pgctl image build` for.
#[derive(Debug, Clone)]
pub struct BuildRequest {
    pub source: Source,
    /// The Debian suite of the base image (and of Timescale's apt repository).
    pub suite: String,
    pub pg_major: u32,
    pub base: String,
    pub tag: String,
    pub artifacts: Option<PathBuf>,
    pub without: BTreeSet<Component>,
    pub ca_cert: Option<PathBuf>,
    pub http_proxy: Option<String>,
    pub no_cache: bool,
    pub walg_version: String,
    pub walg_sha256: Option<String>,
}

/// Where one optional component comes from (`None`: not in the image, by request).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    Apt,
    Download,
    Artifacts,
}

/// The decided build: which components, from where, and which artifact files (verified).
#[derive(Debug, Clone)]
pub struct BuildPlan {
    pub request: BuildRequest,
    pub timescaledb: Option<Origin>,
    pub walg: Option<Origin>,
    pub consul: Option<Origin>,
    /// etcd server and client (Debian's packages) unless left out.
    pub etcd: bool,
    pub artifact_files: Vec<PathBuf>,
}

impl BuildPlan {
    /// Space-separated names of the optional components included (recorded in the manifest).
    pub fn components(&self) -> String {
        [
            (Component::Timescaledb, &self.timescaledb),
            (Component::Walg, &self.walg),
            (Component::Consul, &self.consul),
        ]
        .iter()
        .filter(|(_, o)| o.is_some())
        .map(|(c, _)| c.name())
        .chain(self.etcd.then_some(Component::Etcd.name()))
        .collect::<Vec<_>>()
        .join(" ")
    }
}

/// The image's manifest (component versions, postgres uid/gid), from its labels.
pub async fn manifest(engine: &crate::docker::Engine, image: &str) -> Result<HashMap<String, String>> {
    let info = engine.docker.inspect_image(image).await?;
    let labels = info.config.and_then(|c| c.labels).unwrap_or_default();
    Ok(labels
        .into_iter()
        .filter_map(|(k, v)| k.strip_prefix(LABEL_MANIFEST_PREFIX).map(|k| (k.to_string(), v)))
        .collect())
}

/// Why `image` (its manifest) cannot run the cluster's DCS, if it cannot: built without Consul,
/// or without etcd.
pub fn missing_dcs(cfg: &crate::config::Config, manifest: &HashMap<String, String>, image: &str) -> Option<String> {
    let (key, name, dcs, how) = match cfg.hosts.cluster.dcs {
        crate::config::Dcs::Consul => ("consul", "Consul", "consul", "source pgdg, or --artifacts with a consul binary"),
        crate::config::Dcs::Etcd => ("etcd", "etcd", "etcd", "leave `etcd` out of --without"),
    };
    manifest.get(key).is_none_or(String::is_empty).then(|| {
        format!("image {image} was built without {name} and the cluster's DCS is {name} (dcs = \"{dcs}\"): rebuild it with {name} ({how})")
    })
}

/// uid/gid of postgres in the image (recorded in its manifest at build time).
pub fn postgres_owner(manifest: &HashMap<String, String>, image: &str) -> Result<(u64, u64)> {
    let get = |k: &str| manifest.get(k).and_then(|v| v.parse().ok());
    match (get("postgres-uid"), get("postgres-gid")) {
        (Some(u), Some(g)) => Ok((u, g)),
        _ => bail!("image {image} has no postgres uid/gid in its manifest: rebuild it with this pgctl (`pgctl image build`)"),
    }
}

pub fn walg_url(version: &str) -> String {
    format!("https://github.com/wal-g/wal-g/releases/download/{version}/wal-g-pg-ubuntu-20.04-amd64.tar.gz")
}

/// Decides every component's origin, and verifies artifact checksums, before any build starts.
pub fn plan(req: BuildRequest) -> Result<BuildPlan> {
    if !(13..=17).contains(&req.pg_major) {
        bail!("PostgreSQL {} is not supported; allowed: 13-17", req.pg_major);
    }
    if req.source == Source::Debian {
        match debian_major(&req.suite) {
            Some(major) if major == req.pg_major => {}
            Some(major) => bail!(
                "--source debian --suite {} has PostgreSQL {major} only; use --pg-major {major}, another suite ({}), or --source pgdg",
                req.suite,
                suites_text()
            ),
            None => bail!("--suite {}: pgctl knows {}", req.suite, suites_text()),
        }
    }
    if let Some(ca) = &req.ca_cert {
        if !ca.is_file() {
            bail!("--ca-cert {}: no such file", ca.display());
        }
    }
    let artifacts = match &req.artifacts {
        Some(dir) => Some(Artifacts::open(dir)?),
        None => None,
    };
    let mut files = Vec::new();
    let mut origin = |c: Component, patterns: &[&str], online: Origin| -> Result<Option<Origin>> {
        if req.without.contains(&c) {
            return Ok(None);
        }
        if let Some(a) = &artifacts {
            let found = a.matching(patterns, req.pg_major)?;
            if !found.is_empty() {
                files.extend(found);
                return Ok(Some(Origin::Artifacts));
            }
        }
        if req.source == Source::Pgdg {
            return Ok(Some(online));
        }
        let dir_hint = req
            .artifacts
            .as_ref()
            .map(|d| format!(" (none found in {})", d.display()))
            .unwrap_or_default();
        bail!(
            "{} is not available from Debian {}{dir_hint}: supply it with --artifacts DIR ({}, listed in DIR/SHA256SUMS), or build without it: --without {}",
            c.name(),
            req.suite,
            patterns.join(" or "),
            c.name()
        )
    };
    let timescaledb = origin(Component::Timescaledb, &["timescaledb*{pg}*.deb"], Origin::Apt)?;
    let walg = origin(Component::Walg, WALG_ARTIFACTS, Origin::Download)?;
    let consul = origin(Component::Consul, CONSUL_ARTIFACTS, Origin::Apt)?;
    if walg == Some(Origin::Download) && req.walg_sha256.as_deref().is_none_or(str::is_empty) {
        bail!(
            "WAL-G {} would be downloaded from GitHub, but its sha256 is not pinned: pass --walg-sha256 HEX (from a release you verified), supply it with --artifacts DIR, or --without walg",
            req.walg_version
        );
    }
    let etcd = !req.without.contains(&Component::Etcd);
    Ok(BuildPlan {
        request: req,
        timescaledb,
        walg,
        consul,
        etcd,
        artifact_files: files,
    })
}

/// Debian suites and the PostgreSQL major each ships (with PostGIS, Patroni, pgBackRest, etcd).
pub const DEBIAN_SUITES: [(&str, u32); 3] = [("bullseye", 13), ("bookworm", 15), ("trixie", 17)];

/// The PostgreSQL major Debian `suite` ships.
pub fn debian_major(suite: &str) -> Option<u32> {
    DEBIAN_SUITES.iter().find(|(s, _)| *s == suite).map(|(_, m)| *m)
}

fn suites_text() -> String {
    DEBIAN_SUITES
        .iter()
        .map(|(s, m)| format!("{s} (PostgreSQL {m})"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// File names in an --artifacts directory that supply WAL-G and Consul.
pub const WALG_ARTIFACTS: &[&str] = &["wal-g", "wal-g*.tar.gz"];
pub const CONSUL_ARTIFACTS: &[&str] = &["consul"];

/// Whether `dir` (an --artifacts directory) supplies a verified file matching `patterns`.
pub fn artifacts_provide(dir: &Path, patterns: &[&str]) -> bool {
    Artifacts::open(dir)
        .and_then(|a| a.matching(patterns, 15))
        .is_ok_and(|found| !found.is_empty())
}

/// A directory of pre-downloaded files with a `SHA256SUMS` list (sha256sum's format).
struct Artifacts {
    dir: PathBuf,
    sums: Vec<(String, String)>,
}

impl Artifacts {
    fn open(dir: &Path) -> Result<Self> {
        let list = dir.join("SHA256SUMS");
        let text = std::fs::read_to_string(&list).with_context(|| {
            format!(
                "--artifacts {}: cannot read {} (write it with `sha256sum * > SHA256SUMS`)",
                dir.display(),
                list.display()
            )
        })?;
        let sums = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let (hash, name) = l
                    .split_once(char::is_whitespace)
                    .with_context(|| format!("{}: malformed line `{l}`", list.display()))?;
                Ok((hash.to_lowercase(), name.trim().trim_start_matches('*').to_string()))
            })
            .collect::<Result<_>>()?;
        Ok(Artifacts {
            dir: dir.to_path_buf(),
            sums,
        })
    }

    /// Files matching any pattern (`*` wildcard, `{pg}` = major), each verified against SHA256SUMS.
    fn matching(&self, patterns: &[&str], pg_major: u32) -> Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        let mut names: Vec<String> = std::fs::read_dir(&self.dir)?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect();
        names.sort();
        for name in names {
            if !patterns
                .iter()
                .any(|p| glob_match(&p.replace("{pg}", &pg_major.to_string()), &name))
            {
                continue;
            }
            let path = self.dir.join(&name);
            let Some((expected, _)) = self.sums.iter().find(|(_, n)| *n == name) else {
                bail!("{}: not listed in SHA256SUMS; refusing an unverified artifact", path.display());
            };
            let actual = hex::encode(Sha256::digest(std::fs::read(&path)?));
            if &actual != expected {
                bail!("{}: sha256 {actual} does not match SHA256SUMS ({expected})", path.display());
            }
            out.push(path);
        }
        Ok(out)
    }
}

/// `*` matches any run of characters; everything else literally.
fn glob_match(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first) || !name.ends_with(last) || name.len() < first.len() + last.len() {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(source: Source) -> BuildRequest {
        BuildRequest {
            source,
            suite: "bookworm".into(),
            pg_major: 15,
            base: "debian:bookworm-slim".into(),
            tag: "t".into(),
            artifacts: None,
            without: BTreeSet::new(),
            ca_cert: None,
            http_proxy: None,
            no_cache: false,
            walg_version: "v3.0.5".into(),
            walg_sha256: Some("ab".repeat(32)),
        }
    }

    #[test]
    fn glob() {
        assert!(glob_match(
            "timescaledb*15*.deb",
            "timescaledb-2-postgresql-15_2.14.2~debian12_amd64.deb"
        ));
        assert!(!glob_match(
            "timescaledb*16*.deb",
            "timescaledb-2-postgresql-15_2.14.2~debian12_amd64.deb"
        ));
        assert!(glob_match("consul", "consul"));
        assert!(!glob_match("consul", "consul.zip"));
    }

    #[test]
    fn debian_source_demands_explicit_without() {
        let err = plan(req(Source::Debian)).unwrap_err().to_string();
        assert!(err.contains("--without timescaledb"), "{err}");
        let mut r = req(Source::Debian);
        r.without = [Component::Timescaledb, Component::Walg, Component::Consul].into();
        let p = plan(r.clone()).unwrap();
        assert_eq!(p.components(), "etcd");
        assert!(super::context::dockerfile(&p).unwrap().contains("etcd-server"));
        r.without.insert(Component::Etcd);
        let p = plan(r).unwrap();
        assert_eq!(p.components(), "");
        assert!(!super::context::dockerfile(&p).unwrap().contains("etcd-server"));
    }

    #[test]
    fn pgdg_needs_pinned_walg() {
        let mut r = req(Source::Pgdg);
        r.walg_sha256 = None;
        assert!(plan(r).unwrap_err().to_string().contains("--walg-sha256"));
        let p = plan(req(Source::Pgdg)).unwrap();
        assert_eq!(p.components(), "timescaledb walg consul etcd");
    }

    #[test]
    fn artifacts_are_verified() {
        let dir = std::env::temp_dir().join(format!("pgctl-artifacts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("consul"), b"binary").unwrap();
        let good = hex::encode(Sha256::digest(b"binary"));
        std::fs::write(dir.join("SHA256SUMS"), format!("{good}  consul\n")).unwrap();
        let mut r = req(Source::Debian);
        r.artifacts = Some(dir.clone());
        r.without = [Component::Timescaledb, Component::Walg].into();
        let p = plan(r.clone()).unwrap();
        assert_eq!(p.consul, Some(Origin::Artifacts));
        std::fs::write(dir.join("consul"), b"tampered").unwrap();
        let err = plan(r).unwrap_err().to_string();
        assert!(err.contains("does not match SHA256SUMS"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
