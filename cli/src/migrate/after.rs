//! What a migration from an older major does once the data runs in the cluster: extensions
//! updated to the new image's versions, planner statistics rebuilt, indexes whose collation
//! may have changed with the C library found, and roles whose MD5 password hash the cluster
//! (SCRAM only) will refuse named.

use crate::docker::{self, Engine};
use crate::layout::PATRONI;
use crate::{member, output};
use anyhow::{Context, Result};
use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct ExtensionUpdate {
    pub database: String,
    pub name: String,
    pub from: String,
    pub to: String,
}

/// Every extension whose installed version is older than the new image's default: PostGIS
/// through postgis_extensions_upgrade() (it updates its companions too), others by ALTER
/// EXTENSION ... UPDATE.
pub async fn update_extensions(leader: &Engine) -> Result<Vec<ExtensionUpdate>> {
    let stale = "SELECT e.extname || '|' || e.extversion || '|' || a.default_version FROM pg_extension e \
                 JOIN pg_available_extensions a ON a.name = e.extname WHERE e.extversion <> a.default_version ORDER BY e.extname = 'postgis' DESC, 1";
    let mut out = Vec::new();
    let databases = member::psql(leader, "SELECT datname FROM pg_database WHERE datallowconn ORDER BY 1").await?;
    for db in databases.lines().map(str::trim).filter(|d| !d.is_empty()) {
        let rows = member::psql_in(leader, db, stale).await?;
        for row in rows.lines() {
            let f: Vec<&str> = row.split('|').collect();
            let [name, from, to] = f[..] else { continue };
            let sql = if name == "postgis" {
                "SELECT postgis_extensions_upgrade()".to_string()
            } else if name.starts_with("postgis") {
                continue; // postgis_extensions_upgrade() takes the companions along
            } else {
                format!("ALTER EXTENSION \"{name}\" UPDATE")
            };
            member::psql_in(leader, db, &sql)
                .await
                .with_context(|| format!("database {db}: updating extension {name} from {from} to {to}"))?;
            output::step(format!("{}: database {db}: {name} {from} -> {to}", leader.host));
            out.push(ExtensionUpdate {
                database: db.into(),
                name: name.into(),
                from: from.into(),
                to: to.into(),
            });
        }
    }
    // postgis_extensions_upgrade() updated the companions: record where they ended.
    for u in out.iter_mut().filter(|u| u.name == "postgis") {
        u.to = member::psql_in(leader, &u.database, "SELECT extversion FROM pg_extension WHERE extname = 'postgis'")
            .await?
            .trim()
            .to_string();
    }
    Ok(out)
}

/// `db:index` of every user index with a key column under a glibc collation (not C/POSIX).
pub async fn collation_indexes(leader: &Engine) -> Result<Vec<String>> {
    let sql = "SELECT DISTINCT current_database() || ':' || i.indexrelid::regclass::text FROM pg_index i \
               CROSS JOIN LATERAL unnest(i.indcollation::oid[]) AS c(coll) \
               JOIN pg_class ic ON ic.oid = i.indexrelid JOIN pg_namespace n ON n.oid = ic.relnamespace \
               LEFT JOIN pg_collation pc ON pc.oid = c.coll \
               WHERE c.coll <> 0 AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast') \
               AND coalesce(pc.collname, '') NOT IN ('C', 'POSIX', 'ucs_basic') \
               AND NOT (c.coll = 100 AND (SELECT datcollate FROM pg_database WHERE datname = current_database()) IN ('C', 'POSIX'))";
    let mut out = Vec::new();
    let databases = member::psql(leader, "SELECT datname FROM pg_database WHERE datallowconn ORDER BY 1").await?;
    for db in databases.lines().map(str::trim).filter(|d| !d.is_empty()) {
        out.extend(member::psql_in(leader, db, sql).await?.lines().map(str::to_string));
    }
    Ok(out)
}

/// Roles that cannot log in to the cluster (SCRAM only) until their password is set again:
/// their hash is MD5. Said as a warning with the remedy.
pub async fn md5_roles(leader: &Engine) -> Result<Vec<String>> {
    let roles: Vec<String> = member::psql(leader, "SELECT rolname FROM pg_authid WHERE rolpassword LIKE 'md5%' ORDER BY 1")
        .await?
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    if !roles.is_empty() {
        output::warn(format!(
            "roles {} have MD5 password hashes (the default before PostgreSQL 14); the cluster accepts SCRAM-SHA-256 only, \
             so they cannot log in until their password is set again: ALTER ROLE <name> PASSWORD '...' (stored as SCRAM)",
            roles.join(", ")
        ));
    }
    Ok(roles)
}

/// vacuumdb --all --analyze-in-stages on the leader: planner statistics are not carried over.
pub async fn analyze_in_stages(leader: &Engine) -> Result<()> {
    let vacuum = [
        "vacuumdb",
        "-h",
        crate::layout::PG_SOCKET_DIR,
        "-U",
        "postgres",
        "--all",
        "--analyze-in-stages",
    ];
    docker::exec(&leader.docker, PATRONI, &vacuum, Some("postgres"))
        .await?
        .ok(&format!("{}: vacuumdb --analyze-in-stages", leader.host))?;
    Ok(())
}
