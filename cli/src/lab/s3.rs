//! The lab's S3 server: Garage configuration, one-time setup (layout, bucket, a read-write
//! and a read-only key), and an HTTPS probe used by `lab status`.

use crate::docker::{exec, Engine};
use anyhow::{bail, Context, Result};
use rand::RngCore;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const BUCKET: &str = "pgctl-backups";
pub const REGION: &str = "garage";
/// The name in the S3 server's certificate, mapped to its address in the lab's hosts.toml.
pub const HOST_NAME: &str = "s3.lab";
const MARKER: &str = "/var/lib/garage/.pgctl-initialized";

fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut b);
    hex::encode(b)
}

/// A Garage access key: ID `GK` + 24 hex digits, secret 64 hex digits.
pub fn new_key() -> (String, String) {
    (format!("GK{}", random_hex(12)), random_hex(32))
}

pub fn rpc_secret() -> String {
    random_hex(32)
}

async fn garage(engine: &Engine, container: &str, args: &[&str]) -> Result<String> {
    let mut cmd = vec!["garage", "-c", "/etc/garage.toml"];
    cmd.extend_from_slice(args);
    exec(&engine.docker, container, &cmd, None)
        .await?
        .ok(&format!("garage {}", args.join(" ")))
}

/// Lays out the single node and creates the bucket and keys, once per data volume.
pub async fn setup(engine: &Engine, container: &str, rw: (&str, &str), ro: (&str, &str)) -> Result<()> {
    let mut ready = false;
    for _ in 0..60 {
        if garage(engine, container, &["status"]).await.is_ok() {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    if !ready {
        bail!(
            "Garage in {container} did not become ready within 60s:\n{}",
            crate::docker::tail_logs(&engine.docker, container, 30).await
        );
    }
    if exec(&engine.docker, container, &["test", "-f", MARKER], None).await?.success() {
        return Ok(());
    }
    let node = garage(engine, container, &["node", "id", "-q"]).await?;
    let node = node.trim().split('@').next().unwrap_or_default().to_string();
    garage(engine, container, &["layout", "assign", "-z", "lab", "-c", "10GB", &node]).await?;
    garage(engine, container, &["layout", "apply", "--version", "1"]).await?;
    garage(engine, container, &["bucket", "create", BUCKET]).await?;
    garage(engine, container, &["key", "import", "--yes", "-n", "pgctl-rw", rw.0, rw.1]).await?;
    garage(engine, container, &["key", "import", "--yes", "-n", "pgctl-ro", ro.0, ro.1]).await?;
    garage(
        engine,
        container,
        &["bucket", "allow", "--read", "--write", "--owner", BUCKET, "--key", "pgctl-rw"],
    )
    .await?;
    garage(engine, container, &["bucket", "allow", "--read", BUCKET, "--key", "pgctl-ro"]).await?;
    exec(&engine.docker, container, &["touch", MARKER], None)
        .await?
        .ok("marking Garage initialized")?;
    Ok(())
}

/// Opens HTTPS to `host:port` trusting only `ca_pem`, sends an anonymous request and returns
/// the HTTP status line (an S3 server answers 403 to an unsigned request for a bucket).
pub async fn probe(host: &str, port: u16, ca_pem: &str) -> Result<String> {
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
        roots.add(cert?)?;
    }
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = tokio_rustls::rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let work = async {
        let tcp = tokio::net::TcpStream::connect((host, port))
            .await
            .with_context(|| format!("connecting to {host}:{port}"))?;
        let name = tokio_rustls::rustls::pki_types::ServerName::try_from(host.to_string())?;
        let mut tls = connector.connect(name, tcp).await.context("TLS handshake")?;
        let request = format!("GET /{BUCKET} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        tls.write_all(request.as_bytes()).await?;
        let mut buf = vec![0u8; 512];
        let n = tls.read(&mut buf).await?;
        let text = String::from_utf8_lossy(&buf[..n]);
        Ok::<_, anyhow::Error>(text.lines().next().unwrap_or_default().to_string())
    };
    tokio::time::timeout(Duration::from_secs(10), work)
        .await
        .context("no answer within 10s")?
}
