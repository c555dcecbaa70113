//! The cluster: converge it (`up`), observe it (`status`), operate it (switchover, failover,
//! reinit, restart, pause, resume) and take it down (`down`, `remove`). Everything goes
//! through the hosts' Docker engines; Patroni and PostgreSQL are reached by exec.

pub mod ops;
pub mod spec;
pub mod status;
pub mod teardown;
pub mod up;
pub mod volumes;

use crate::docker::{exec_env, Engine};
use anyhow::Result;

pub const LABEL_CLUSTER: &str = "io.pgctl.cluster";
pub const LABEL_ROLE: &str = "io.pgctl.role";
pub const LABEL_CONFIG_HASH: &str = "io.pgctl.config-hash";

/// Runs SQL as the postgres superuser in `engine`'s Patroni container; returns unaligned rows.
pub async fn psql(engine: &Engine, sql: &str) -> Result<String> {
    let env = [&format!("PGPASSFILE={}", spec::PGPASS) as &str, "PGCONNECT_TIMEOUT=5"];
    let cmd = [
        "psql",
        "-h",
        "/var/run/postgresql",
        "-U",
        "postgres",
        "-d",
        "postgres",
        "-XAtq",
        "-v",
        "ON_ERROR_STOP=1",
        "-c",
        sql,
    ];
    exec_env(&engine.docker, spec::PATRONI, &cmd, Some("postgres"), &env)
        .await?
        .ok(&format!("psql on {}", engine.host))
}

/// A GET on Patroni's REST API from inside the host (works when only the engine is reachable).
pub async fn patroni_get(engine: &Engine, path: &str) -> Result<serde_json::Value> {
    let url = format!("http://127.0.0.1:8008{path}");
    let out = exec_env(&engine.docker, spec::PATRONI, &["curl", "-s", "--max-time", "5", &url], None, &[]).await?;
    let body = out.ok(&format!("GET {path} on {}", engine.host))?;
    Ok(serde_json::from_str(&body)?)
}
