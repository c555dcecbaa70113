//! Build contexts assembled in memory: rendered templates plus files, as a gzipped tar.

use super::BuildPlan;
use crate::docker::{tar_files, FileSpec};
use crate::render::render;
use anyhow::{Context, Result};
use flate2::write::GzEncoder;
use std::io::Write;

const ENTRYPOINT: &[u8] = include_bytes!("../../../images/postgres/entrypoint.sh");
const HEALTHCHECK: &[u8] = include_bytes!("../../../images/postgres/healthcheck.sh");
const CHECK_AND_MANIFEST: &[u8] = include_bytes!("../../../images/postgres/check-and-manifest.sh");
const APT_SOURCES: &[u8] = include_bytes!("../../../images/postgres/apt-sources.sh");
const SCHEDULED_BACKUP: &[u8] = include_bytes!("../../../images/postgres/scheduled-backup.sh");
const PG_ISREADY_WAIT: &[u8] = include_bytes!("../../../images/postgres/pg_isready-wait.sh");

/// A file for a build context, owned by root.
pub fn file(path: &str, contents: impl Into<Vec<u8>>, mode: u32) -> FileSpec {
    FileSpec::root(path, contents, mode)
}

/// Gzipped tar of `files`, the body of a `POST /build`.
pub fn gzip_tar(files: &[FileSpec]) -> Result<Vec<u8>> {
    let tar = tar_files(files)?;
    let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar)?;
    Ok(gz.finish()?)
}

/// The database image's Dockerfile for this plan.
pub fn dockerfile(plan: &BuildPlan) -> Result<String> {
    let r = &plan.request;
    let origin = |o: &Option<super::Origin>| match o {
        Some(super::Origin::Apt) => "apt",
        Some(super::Origin::Download) => "download",
        Some(super::Origin::Artifacts) => "artifacts",
        None => "",
    };
    render(
        "postgres/Dockerfile.j2",
        minijinja::context! {
            base => r.base,
            security_mirror => super::base::DEFAULT_SECURITY_MIRROR,
            source => r.source,
            pg_major => r.pg_major,
            suite => r.suite,
            ca_cert => r.ca_cert.is_some(),
            timescaledb => origin(&plan.timescaledb),
            walg => origin(&plan.walg),
            consul => origin(&plan.consul),
            etcd => plan.etcd,
            walg_url => super::walg_url(&r.walg_version),
            walg_sha256 => r.walg_sha256.clone().unwrap_or_default(),
            components => plan.components(),
        },
    )
}

/// The whole context for the database image.
pub fn postgres_context(plan: &BuildPlan) -> Result<Vec<u8>> {
    let mut files = vec![
        file("Dockerfile", dockerfile(plan)?, 0o644),
        file("pgctl/entrypoint.sh", ENTRYPOINT, 0o755),
        file("pgctl/healthcheck.sh", HEALTHCHECK, 0o755),
        file("pgctl/check-and-manifest.sh", CHECK_AND_MANIFEST, 0o755),
        file("pgctl/apt-sources.sh", APT_SOURCES, 0o755),
        file("pgctl/scheduled-backup.sh", SCHEDULED_BACKUP, 0o755),
        file("pgctl/pg_isready-wait.sh", PG_ISREADY_WAIT, 0o755),
    ];
    if let Some(ca) = &plan.request.ca_cert {
        let pem = std::fs::read(ca).with_context(|| format!("reading --ca-cert {}", ca.display()))?;
        files.push(file("pgctl/build-ca.crt", pem, 0o644));
    }
    for path in &plan.artifact_files {
        let name = path.file_name().and_then(|n| n.to_str()).context("artifact name")?;
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        // WAL-G's release tarball: its binary goes into the context as `wal-g`, so the
        // Dockerfile copies it straight to its place (one layer, not a copy plus an install).
        let (name, bytes) = match name.starts_with("wal-g") && name.ends_with(".tar.gz") {
            true => ("wal-g", walg_from_tarball(&bytes).with_context(|| format!("{}", path.display()))?),
            false => (name, bytes),
        };
        files.push(file(&format!("pgctl/artifacts/{name}"), bytes, 0o755));
    }
    gzip_tar(&files)
}

/// The `wal-g-pg-*` binary inside a WAL-G release tarball.
fn walg_from_tarball(gz: &[u8]) -> Result<Vec<u8>> {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(gz));
    for entry in archive.entries()? {
        let mut entry = entry?;
        let name = entry.path()?.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        if entry.header().entry_type().is_file() && name.starts_with("wal-g") {
            let mut out = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut out)?;
            return Ok(out);
        }
    }
    anyhow::bail!("no wal-g binary in the tarball")
}

#[cfg(test)]
mod tests {
    use super::super::{plan, BuildRequest, Component, Source};

    fn rendered(source: Source, without: &[Component]) -> String {
        let p = plan(BuildRequest {
            suite: "bookworm".into(),
            source,
            pg_major: 15,
            base: "pgctl/debian:bookworm".into(),
            tag: "t".into(),
            artifacts: None,
            without: without.iter().copied().collect(),
            ca_cert: None,
            http_proxy: None,
            no_cache: false,
            walg_version: "v3.0.5".into(),
            walg_sha256: Some("ab".repeat(32)),
        })
        .unwrap();
        super::dockerfile(&p).unwrap()
    }

    #[test]
    fn updates_and_security_before_any_apt_get() {
        let all = [Component::Timescaledb, Component::Walg, Component::Consul];
        for d in [rendered(Source::Debian, &all), rendered(Source::Pgdg, &[])] {
            let sources = d
                .find("RUN /opt/pgctl/apt-sources.sh http://deb.debian.org/debian-security")
                .unwrap();
            assert!(sources < d.find("apt-get update").unwrap(), "{d}");
            assert!(d.contains("apt-get upgrade -y"), "{d}");
            // Scripts come after the package layers, so changing one keeps those cached.
            assert!(d.find("COPY pgctl/entrypoint.sh").unwrap() > d.find("postgresql-15-postgis-3").unwrap());
            assert!(!d.contains("COPY pgctl/ "), "{d}");
        }
    }
}
