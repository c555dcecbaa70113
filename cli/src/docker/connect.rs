//! Connecting to each host's Docker Engine: `unix://`, `tcp://` with mutual TLS, `ssh://`.
//! Multi-host commands connect to every host concurrently first and report all unreachable
//! hosts at once, before anything is changed anywhere.

use crate::config::{Config, HostConfig};
use bollard::{Docker, API_DEFAULT_VERSION};
use futures_util::future::join_all;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Request timeout for ordinary API calls (bollard's timeout covers a whole request).
pub const API_TIMEOUT_SECS: u64 = 300;
/// Receiving an image can take long: bollard counts until response headers arrive.
pub const TRANSFER_TIMEOUT_SECS: u64 = 4 * 3600;
/// How long a host may take to answer the first ping.
const PING_TIMEOUT: Duration = Duration::from_secs(8);

/// A connected engine of one host.
#[derive(Clone)]
pub struct Engine {
    pub host: String,
    pub endpoint: String,
    pub docker: Docker,
    pub version: String,
    pub api_version: String,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Engine({} at {})", self.host, self.endpoint)
    }
}

/// Why one host could not be reached.
#[derive(Debug, Clone)]
pub struct Unreachable {
    pub host: String,
    pub endpoint: String,
    pub cause: String,
}

#[derive(Debug, thiserror::Error)]
#[error("{}", render_unreachable(.0))]
pub struct UnreachableHosts(pub Vec<Unreachable>);

fn render_unreachable(list: &[Unreachable]) -> String {
    let mut s = format!("{} host(s) unreachable; nothing was changed on any host:", list.len());
    for u in list {
        s.push_str(&format!("\n  {} ({}): {}", u.host, u.endpoint, u.cause));
    }
    s
}

/// Where a host's TLS material is.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub fn tls_files(host: &HostConfig, base: &Path) -> Option<TlsFiles> {
    let r = |p: &Path| crate::config::resolve(base, p);
    if let Some(dir) = &host.tls_dir {
        let d = r(dir);
        return Some(TlsFiles {
            ca: d.join("ca.pem"),
            cert: d.join("cert.pem"),
            key: d.join("key.pem"),
        });
    }
    match (&host.tls_ca, &host.tls_cert, &host.tls_key) {
        (Some(ca), Some(cert), Some(key)) => Some(TlsFiles {
            ca: r(ca),
            cert: r(cert),
            key: r(key),
        }),
        _ => None,
    }
}

/// Builds a client for one endpoint (no network traffic yet).
pub fn client(endpoint: &str, tls: Option<&TlsFiles>, timeout_secs: u64) -> Result<Docker, String> {
    let result = match endpoint.split_once("://") {
        Some(("unix", _)) => Docker::connect_with_unix(endpoint, timeout_secs, API_DEFAULT_VERSION),
        Some(("tcp", _)) => match tls {
            Some(t) => Docker::connect_with_ssl(endpoint, &t.key, &t.cert, &t.ca, timeout_secs, API_DEFAULT_VERSION),
            None => Docker::connect_with_http(endpoint, timeout_secs, API_DEFAULT_VERSION),
        },
        Some(("ssh", _)) => Docker::connect_with_ssh(endpoint, timeout_secs, API_DEFAULT_VERSION, None),
        _ => return Err(format!("unsupported endpoint `{endpoint}` (use unix://, tcp:// or ssh://)")),
    };
    result.map_err(|e| describe(&e))
}

/// Connects, pings and negotiates the API version (the lab's engines speak API 1.41).
pub async fn connect(host: &HostConfig, base: &Path) -> Result<Engine, Unreachable> {
    let fail = |cause: String| Unreachable {
        host: host.name.clone(),
        endpoint: host.endpoint.clone(),
        cause,
    };
    let tls = tls_files(host, base);
    let docker = client(&host.endpoint, tls.as_ref(), API_TIMEOUT_SECS).map_err(fail)?;
    open(docker, &host.name, &host.endpoint).await.map_err(fail)
}

/// Pings an engine and negotiates its API version.
pub async fn open(docker: Docker, host: &str, endpoint: &str) -> Result<Engine, String> {
    let negotiated = tokio::time::timeout(PING_TIMEOUT, async {
        let docker = docker.negotiate_version().await.map_err(|e| describe(&e))?;
        let v = docker.version().await.map_err(|e| describe(&e))?;
        Ok::<_, String>((docker, v))
    })
    .await
    .map_err(|_| format!("no answer within {}s (host down, firewall, or wrong port?)", PING_TIMEOUT.as_secs()))??;
    let (docker, v) = negotiated;
    Ok(Engine {
        host: host.to_string(),
        endpoint: endpoint.to_string(),
        docker,
        version: v.version.unwrap_or_default(),
        api_version: v.api_version.unwrap_or_default(),
    })
}

/// The engine on this machine (`DOCKER_HOST` or the local socket), for builds and the lab.
pub async fn local() -> anyhow::Result<Engine> {
    let endpoint = std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into());
    let docker = client(&endpoint, None, API_TIMEOUT_SECS).map_err(|e| anyhow::anyhow!("local Docker engine at {endpoint}: {e}"))?;
    open(docker, "local", &endpoint).await.map_err(|e| {
        crate::error::tagged(
            crate::error::Kind::Unreachable,
            format!("local Docker engine at {endpoint} is not reachable: {e}\n  Start it (e.g. `systemctl start docker`, or `ansible-free-scripts/install-deps.sh`)"),
        )
    })
}

/// Connects to all hosts concurrently; `Err` lists every unreachable host. For commands that
/// change things: nothing may change anywhere unless every host answers.
pub async fn connect_all(config: &Config) -> Result<Vec<Engine>, UnreachableHosts> {
    let (engines, unreachable) = connect_available(config).await;
    if !unreachable.is_empty() {
        return Err(UnreachableHosts(unreachable));
    }
    Ok(engines)
}

/// Connects to all hosts concurrently and returns those that answer and those that do not:
/// for status and recovery, which must work precisely when a host is lost.
pub async fn connect_available(config: &Config) -> (Vec<Engine>, Vec<Unreachable>) {
    let base = config.base_dir();
    let results = join_all(config.hosts.hosts.iter().map(|h| connect(h, base))).await;
    let mut engines = Vec::new();
    let mut unreachable = Vec::new();
    for r in results {
        match r {
            Ok(e) => engines.push(e),
            Err(u) => unreachable.push(u),
        }
    }
    (engines, unreachable)
}

/// A one-line cause from an error chain, with a hint for the failures people actually hit.
pub fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut src = e.source();
    while let Some(s) = src {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        src = s.source();
    }
    let chain = parts.join(": ");
    let lower = chain.to_lowercase();
    let hint = if lower.contains("certificate") && (lower.contains("unknown") || lower.contains("bad") || lower.contains("required"))
        || lower.contains("alert")
    {
        " — TLS refused: the engine and pgctl do not trust each other's certificates (is the client certificate signed by the CA the engine was started with, and the engine's by tls_ca?)"
    } else if lower.contains("connection refused") {
        " — nothing listens there (engine stopped, or wrong port)"
    } else if lower.contains("no such file") || lower.contains("socket") && lower.contains("not found") {
        " — no Docker socket there (is the engine installed and running?)"
    } else if lower.contains("timed out") || lower.contains("timeout") {
        " — no answer (host down or filtered)"
    } else {
        ""
    };
    format!("{chain}{hint}")
}
