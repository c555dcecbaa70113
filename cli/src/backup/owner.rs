//! pgctl's own record of which database system the cluster's S3 prefix belongs to
//! (`pgctl-owner.json`), written once the cluster runs. It answers the prefix guard where the
//! engine cannot yet: WAL-G names a system only once a backup exists, so a prefix holding a
//! wiped cluster's WAL but no backup would otherwise look free.

use crate::config::Config;
use crate::docker::Engine;
use crate::s3::{Access, Bucket};
use crate::{member, output};
use anyhow::{Context, Result};

const KEY: &str = "pgctl-owner.json";

/// The system identifier recorded in the prefix, if any.
pub async fn recorded(cfg: &Config) -> Result<Option<String>> {
    let bucket = Bucket::connect(cfg, Access::ReadWrite)?;
    let Some(data) = bucket.get(KEY).await? else { return Ok(None) };
    let v: serde_json::Value = serde_json::from_slice(&data).with_context(|| format!("{}: {KEY} is not pgctl's JSON", bucket.place))?;
    Ok(v["system_identifier"].as_str().map(str::to_string))
}

/// Records the running `leader`'s system identifier, unless the prefix already names one.
pub async fn record(cfg: &Config, leader: &Engine) -> Result<()> {
    let id = member::psql(leader, "SELECT system_identifier FROM pg_control_system()").await?;
    let id = id.trim();
    match recorded(cfg).await? {
        Some(known) if known == id => Ok(()),
        Some(known) => {
            output::warn(format!(
                "the S3 prefix records system {known}, but the running cluster is system {id}: left as it is"
            ));
            Ok(())
        }
        None => {
            let bucket = Bucket::connect(cfg, Access::ReadWrite)?;
            let body = serde_json::json!({
                "system_identifier": id,
                "cluster": cfg.hosts.cluster.name,
                "written_by": format!("pgctl {}", env!("CARGO_PKG_VERSION")),
            });
            if !bucket.try_put(KEY, body.to_string().as_bytes()).await? {
                anyhow::bail!("{}: the read-write key may not write {KEY}", bucket.place);
            }
            Ok(())
        }
    }
}
