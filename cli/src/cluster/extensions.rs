//! The extensions hosts.toml asks for (`[cluster.extensions]`, per database), created on the
//! leader after `up` converged: `CREATE DATABASE` for a database that does not exist yet, then
//! `CREATE EXTENSION IF NOT EXISTS`, so a re-run changes nothing.

use super::spec::ImageFacts;
use crate::config::Config;
use crate::docker::Engine;
use crate::{member, output};
use anyhow::{Context, Result};

/// Refuses, before anything changes, extensions the image cannot provide.
pub fn check_image(cfg: &Config, image: &ImageFacts) -> Result<()> {
    for (db, extensions) in &cfg.hosts.cluster.extensions {
        if extensions.iter().any(|e| e == "timescaledb") && !image.timescaledb {
            return Err(crate::error::refused(format!(
                "cluster.extensions.{db} lists timescaledb, but image {} was built without it: rebuild the image with TimescaleDB (`pgctl image build --artifacts DIR` with a timescaledb .deb, or source pgdg), or drop it from {}",
                cfg.hosts.cluster.image,
                cfg.hosts_path.display()
            )));
        }
    }
    Ok(())
}

/// Creates what is missing; returns one line per database for the user.
pub async fn ensure(cfg: &Config, leader: &Engine) -> Result<Vec<String>> {
    let mut done = Vec::new();
    for (db, extensions) in &cfg.hosts.cluster.extensions {
        // Names are checked as plain identifiers when hosts.toml is loaded; quoted all the same.
        let exists = member::psql(leader, &format!("SELECT 1 FROM pg_database WHERE datname = '{db}'")).await?;
        if exists.trim().is_empty() {
            member::psql(leader, &format!("CREATE DATABASE \"{db}\"")).await?;
            output::step(format!("{}: created database {db}", leader.host));
        }
        for e in extensions {
            member::psql_in(leader, db, &format!("CREATE EXTENSION IF NOT EXISTS \"{e}\" CASCADE"))
                .await
                .with_context(|| format!("creating extension {e} in database {db} (cluster.extensions in hosts.toml)"))?;
        }
        let versions = member::psql_in(
            leader,
            db,
            "SELECT string_agg(extname || ' ' || extversion, ', ' ORDER BY extname) FROM pg_extension WHERE extname <> 'plpgsql'",
        )
        .await?;
        done.push(format!("database {db}: {}", versions.trim()));
    }
    Ok(done)
}
