//! One Patroni member, reached through its host's engine (exec in the Patroni container), so
//! everything here works when only the Docker endpoint is reachable: SQL as the superuser,
//! Patroni's REST API, commands as postgres, and finding the leader.

use crate::config::Config;
use crate::docker::{exec_env, Engine, ExecOutput};
use crate::layout::{self, PATRONI};
use anyhow::{bail, Context, Result};

/// Runs SQL as the postgres superuser in `engine`'s Patroni container; returns unaligned rows.
pub async fn psql(engine: &Engine, sql: &str) -> Result<String> {
    psql_in(engine, "postgres", sql).await
}

/// `psql` in database `db`.
pub async fn psql_in(engine: &Engine, db: &str, sql: &str) -> Result<String> {
    let env = [&format!("PGPASSFILE={}", layout::PGPASS) as &str, "PGCONNECT_TIMEOUT=5"];
    let cmd = [
        "psql",
        "-h",
        layout::PG_SOCKET_DIR,
        "-U",
        "postgres",
        "-d",
        db,
        "-XAtq",
        "-v",
        "ON_ERROR_STOP=1",
        "-c",
        sql,
    ];
    exec_env(&engine.docker, PATRONI, &cmd, Some("postgres"), &env)
        .await?
        .ok(&format!("psql on {}", engine.host))
}

/// Runs the SQL script `sql` as the postgres superuser in database `db` of `engine`'s member.
/// The script travels as a 0600 file (removed afterwards), never on a command line: use it for
/// anything carrying a password verifier.
pub async fn psql_file(cfg: &Config, engine: &Engine, db: &str, sql: &str, what: &str) -> Result<String> {
    const FILE: &str = "/tmp/pgctl-script.sql";
    let image = &cfg.hosts.cluster.image;
    let owner = crate::image::postgres_owner(&crate::image::manifest(engine, image).await?, image)?;
    let file = crate::docker::FileSpec {
        path: FILE.into(),
        contents: sql.as_bytes().to_vec(),
        mode: 0o600,
        uid: owner.0,
        gid: owner.1,
    };
    crate::docker::upload(&engine.docker, PATRONI, &[file]).await?;
    let script = format!(
        "psql -h {} -U postgres -d \"$1\" -XAtq -v ON_ERROR_STOP=1 -f {FILE}; rc=$?; rm -f {FILE}; exit $rc",
        layout::PG_SOCKET_DIR
    );
    crate::docker::exec(&engine.docker, PATRONI, &["sh", "-c", &script, "sh", db], Some("postgres"))
        .await?
        .ok(&format!("{}: {what}", engine.host))
}

/// Runs `cmd` as postgres in `engine`'s Patroni container (the backup engine, for instance).
pub async fn as_postgres(engine: &Engine, cmd: &[String]) -> Result<ExecOutput> {
    let cmd: Vec<&str> = cmd.iter().map(String::as_str).collect();
    let env = [&format!("PGPASSFILE={}", layout::PGPASS) as &str];
    exec_env(&engine.docker, PATRONI, &cmd, Some("postgres"), &env).await
}

/// A GET on Patroni's REST API from inside the host.
pub async fn patroni_get(engine: &Engine, path: &str) -> Result<serde_json::Value> {
    let url = layout::patroni_url(path);
    let out = exec_env(&engine.docker, PATRONI, &["curl", "-s", "--max-time", "5", &url], None, &[]).await?;
    let body = out.ok(&format!("GET {path} on {}", engine.host))?;
    Ok(serde_json::from_str(&body)?)
}

/// Any call on Patroni's REST API (with its basic auth, read inside the container); returns
/// (HTTP status, body).
pub async fn patroni_api(engine: &Engine, method: &str, path: &str, body: &serde_json::Value) -> Result<(u16, String)> {
    let body = if body.is_null() { String::new() } else { body.to_string() };
    let script = crate::render::script("patroni-api.py");
    let out = exec_env(
        &engine.docker,
        PATRONI,
        &["python3", "-c", script, method, path, &body],
        Some("postgres"),
        &[],
    )
    .await?;
    let text = out.ok(&format!("{method} {path} on {}", engine.host))?;
    let (code, rest) = text.split_once('\n').unwrap_or((&text, ""));
    Ok((code.trim().parse().context("HTTP status from Patroni")?, rest.trim().to_string()))
}

/// Patroni's replication slot name for a member (its `slot_name_from_member_name`).
pub fn slot_name(member: &str) -> String {
    let s: String = member
        .to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' })
        .collect();
    s.chars().take(63).collect()
}

/// Creates the physical replication slots Patroni would create for these members on the leader
/// at its next HA loop, so new replicas stream at once instead of retrying every
/// `wal_retrieve_retry_interval` until then. Patroni treats them as its members' slots once
/// they register (or drops them as unknown first: they are made again while `up` waits). They
/// reserve no WAL until a replica first uses them, so one whose member never comes holds none.
pub async fn create_slots(leader: &Engine, members: &[&str]) -> Result<()> {
    if members.is_empty() {
        return Ok(());
    }
    let names: Vec<String> = members.iter().map(|m| format!("'{}'", slot_name(m))).collect();
    let sql = format!(
        "SELECT count(pg_create_physical_replication_slot(name, false)) FROM unnest(ARRAY[{}]) AS name WHERE name NOT IN (SELECT slot_name FROM pg_replication_slots)",
        names.join(",")
    );
    psql(leader, &sql)
        .await
        .with_context(|| format!("{}: creating the replicas' replication slots", leader.host))?;
    Ok(())
}

/// Wakes a replica's startup process from its wait between two attempts to get WAL
/// (`wal_retrieve_retry_interval`, 5 s): a configuration reload signals it, and it retries
/// streaming at once (after its slot appeared, or at a timeline switch).
pub async fn wake_recovery(replica: &Engine) -> Result<()> {
    psql(replica, "SELECT pg_reload_conf()").await.map(drop)
}

/// Wakes this member's Patroni HA loop now instead of at its next `loop_wait`: a PATCH of
/// the dynamic configuration that changes nothing (it removes a key that is not there:
/// Patroni writes nothing to the DCS when the patch is a no-op, but wakes its loop after any
/// PATCH). The leader then picks or releases its synchronous standby, or creates replicas'
/// slots, at once.
pub async fn wake_ha_loop(engine: &Engine) -> Result<()> {
    let nothing = serde_json::json!({ "pgctl_wakeup": null });
    let (code, body) = patroni_api(engine, "PATCH", "/config", &nothing).await?;
    anyhow::ensure!(code == 200, "{}: PATCH /config answered {code}: {body}", engine.host);
    Ok(())
}

/// Watches from inside `leader`'s container and wakes its HA loop as soon as a replica can be
/// its synchronous standby, until one is recorded or `limit` passes (see
/// compose-templates/scripts/wake-for-standby.py); returns what ended the watch.
pub async fn wake_for_standby(leader: &Engine, limit: std::time::Duration) -> Result<String> {
    let script = crate::render::script("wake-for-standby.py");
    let secs = limit.as_secs().max(1).to_string();
    let out = exec_env(&leader.docker, PATRONI, &["python3", "-c", script, &secs], Some("postgres"), &[]).await?;
    Ok(out
        .ok(&format!("watching for a synchronous standby on {}", leader.host))?
        .trim()
        .to_string())
}

/// Patroni's role names for the member that holds the leader lock (3.x says "leader", older
/// releases "master", a standby cluster "standby_leader").
pub fn is_leader_role(role: &str) -> bool {
    matches!(role, "leader" | "master" | "primary" | "standby_leader")
}

/// The engine of the host whose member leads, as Patroni reports it. A member that answers
/// but sees no leader (mid-failover, or cut off from the DCS) does not end the search.
pub async fn leader<'a>(cfg: &Config, engines: &'a [Engine]) -> Result<&'a Engine> {
    leader_and_cluster(cfg, engines).await.map(|(e, _)| e)
}

/// As `leader`, with the `/cluster` view it was read from.
pub async fn leader_and_cluster<'a>(cfg: &Config, engines: &'a [Engine]) -> Result<(&'a Engine, serde_json::Value)> {
    let mut errors = Vec::new();
    for e in engines {
        let cluster = match patroni_get(e, "/cluster").await {
            Ok(c) => c,
            Err(err) => {
                errors.push(format!("{}: {err:#}", e.host));
                continue;
            }
        };
        let leader = cluster["members"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| is_leader_role(m["role"].as_str().unwrap_or_default()));
        let Some(leader) = leader else {
            errors.push(format!("{}: its Patroni sees no leader", e.host));
            continue;
        };
        // Members are named after their hosts; the address is the fallback.
        let name = leader["name"].as_str().unwrap_or_default();
        let address = leader["host"].as_str().unwrap_or_default();
        let host = cfg
            .host(name)
            .or_else(|| cfg.hosts.hosts.iter().find(|h| h.address == address))
            .map(|h| h.name.as_str())
            .unwrap_or(name);
        let engine = engines
            .iter()
            .find(|e| e.host == host)
            .with_context(|| format!("the leader {name} runs on host {host}, which is not reachable"))?;
        return Ok((engine, cluster));
    }
    bail!("the cluster has no leader that a member can see: {}", errors.join("; "))
}

#[cfg(test)]
mod tests {
    #[test]
    fn slot_names_follow_patroni() {
        assert_eq!(super::slot_name("host4"), "host4");
        assert_eq!(super::slot_name("DB-4.lan"), "db_4_lan");
    }
}
