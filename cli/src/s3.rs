//! pgctl's own S3 client (aws-sdk-s3): the cluster's backup prefix read and probed from the
//! control node, without any database host or container. The endpoint, region, path style and
//! CA come from hosts.toml; the key (read-write or read-only) from secrets.toml. Checksums are
//! only computed where S3 requires them (S3-compatible stores reject the newer defaults).

use crate::config::{BackupConfig, Config};
use crate::error::{self, Kind};
use anyhow::{Context, Result};
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode, TlsContext, TrustStore};
use aws_smithy_runtime_api::client::dns::{DnsFuture, ResolveDns, ResolveDnsError};
use std::net::IpAddr;
use std::time::Duration;

/// Which S3 key is used: read-write for the cluster, read-only for anything that must never
/// write into the cluster's archive (listing, verification, clones).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    ReadWrite,
    ReadOnly,
}

/// The cluster's prefix in its bucket, reached with one key.
pub struct Bucket {
    client: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
    /// `s3://bucket/prefix at https://endpoint`, for messages.
    pub place: String,
    pub access: Access,
}

/// An object under the prefix.
#[derive(Debug, Clone)]
pub struct Object {
    /// The key relative to the cluster's prefix (`basebackups_005/...`).
    pub key: String,
    /// Unix seconds.
    pub modified: i64,
}

/// Resolves the endpoint's host to `backup.s3_address` (an endpoint without DNS, like the
/// lab's); every other name through the system resolver.
#[derive(Debug, Clone)]
struct PinnedResolver {
    host: String,
    address: Option<IpAddr>,
}

impl ResolveDns for PinnedResolver {
    fn resolve_dns<'a>(&'a self, name: &'a str) -> DnsFuture<'a> {
        if let Some(ip) = self.address.filter(|_| name == self.host) {
            return DnsFuture::ready(Ok(vec![ip]));
        }
        DnsFuture::new(async move {
            let found = tokio::net::lookup_host((name, 0)).await.map_err(ResolveDnsError::new)?;
            Ok(found.map(|a| a.ip()).collect())
        })
    }
}

impl Bucket {
    /// A client for the cluster's prefix with the key `access` selects (the read-only one
    /// falls back to the read-write key, with a warning, when secrets.toml has none).
    pub fn connect(cfg: &Config, access: Access) -> Result<Bucket> {
        let b = cfg
            .hosts
            .backup
            .as_ref()
            .ok_or_else(|| error::usage(format!("{} has no [backup] section", cfg.hosts_path.display())))?;
        let (id, secret, access) = key(cfg, access)?;
        let host = url_host(&b.s3_endpoint).with_context(|| {
            format!(
                "{}: backup.s3_endpoint `{}` is not an https:// URL",
                cfg.hosts_path.display(),
                b.s3_endpoint
            )
        })?;
        let address = match &b.s3_address {
            Some(a) => Some(a.parse::<IpAddr>().map_err(|_| {
                error::usage(format!(
                    "{}: backup.s3_address `{a}` is not an IP address",
                    cfg.hosts_path.display()
                ))
            })?),
            None => None,
        };
        let mut trust = TrustStore::default();
        if let Some(ca) = &b.s3_ca_file {
            let path = crate::config::resolve(cfg.base_dir(), ca);
            let pem = std::fs::read(&path).with_context(|| format!("reading backup.s3_ca_file {}", path.display()))?;
            trust = TrustStore::empty().with_native_roots(false).with_pem_certificate(pem);
        }
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
            .tls_context(TlsContext::builder().with_trust_store(trust).build()?)
            .build_with_resolver(PinnedResolver { host, address });
        let timeouts = aws_sdk_s3::config::timeout::TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(10))
            .operation_timeout(Duration::from_secs(120))
            .build();
        let conf = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .endpoint_url(&b.s3_endpoint)
            .region(Region::new(b.s3_region.clone()))
            .force_path_style(b.s3_path_style)
            .credentials_provider(Credentials::new(id, secret, None, None, "pgctl secrets.toml"))
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .timeout_config(timeouts)
            .http_client(http)
            .build();
        Ok(Bucket {
            client: aws_sdk_s3::Client::from_conf(conf),
            bucket: b.s3_bucket.clone(),
            prefix: b.s3_prefix.trim_matches('/').to_string(),
            place: place(b),
            access,
        })
    }

    fn full_key(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.prefix)
        }
    }

    /// Every object whose key (relative to the prefix) starts with `under`, all pages.
    pub async fn list(&self, under: &str) -> Result<Vec<Object>> {
        let mut out = Vec::new();
        let strip = self.full_key("");
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(self.full_key(under))
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.failure("listing", under, e))?;
            for o in page.contents() {
                let key = o.key().unwrap_or_default();
                out.push(Object {
                    key: key.strip_prefix(&strip).unwrap_or(key).to_string(),
                    modified: o.last_modified().map(|t| t.secs()).unwrap_or_default(),
                });
            }
        }
        Ok(out)
    }

    /// One listing request under the prefix (a single key): proves the key may list it.
    pub async fn can_list(&self) -> Result<()> {
        self.client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(self.full_key(""))
            .max_keys(1)
            .send()
            .await
            .map_err(|e| self.failure("listing", "", e))?;
        Ok(())
    }

    /// The object `key` (relative to the prefix); `None` when there is none.
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let sent = self.client.get_object().bucket(&self.bucket).key(self.full_key(key)).send().await;
        let out = match sent {
            Ok(out) => out,
            Err(e) if status(&e) == Some(404) => return Ok(None),
            Err(e) => return Err(self.failure("reading", key, e)),
        };
        let body = out
            .body
            .collect()
            .await
            .with_context(|| format!("reading {key} from {}", self.place))?;
        Ok(Some(body.into_bytes().to_vec()))
    }

    /// Writes `key`: `Ok(false)` when S3 refuses this key the write (403), which is what a
    /// read-only key must get.
    pub async fn try_put(&self, key: &str, body: &[u8]) -> Result<bool> {
        let sent = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .body(body.to_vec().into())
            .send()
            .await;
        match sent {
            Ok(_) => Ok(true),
            Err(e) if status(&e) == Some(403) => Ok(false),
            Err(e) => Err(self.failure("writing", key, e)),
        }
    }

    pub async fn delete(&self, key: &str) -> Result<()> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .send()
            .await
            .map_err(|e| self.failure("deleting", key, e))?;
        Ok(())
    }

    /// A clear error: where, what was done with which key, and what S3 (or the network) said.
    /// No HTTP answer at all is `unreachable`; S3 refusing the key, bucket or prefix
    /// (401/403/404) is configuration.
    fn failure<E, R>(&self, doing: &str, key: &str, e: aws_sdk_s3::error::SdkError<E, R>) -> anyhow::Error
    where
        E: std::error::Error + aws_sdk_s3::error::ProvideErrorMetadata + Send + Sync + 'static,
        R: std::fmt::Debug + HttpStatus,
    {
        let key_name = match self.access {
            Access::ReadWrite => "read-write key (s3.access_key_id)",
            Access::ReadOnly => "read-only key (s3.readonly_access_key_id)",
        };
        let said = match e.as_service_error() {
            Some(se) => format!("{}: {}", se.code().unwrap_or("error"), se.message().unwrap_or_default()),
            None => aws_sdk_s3::error::DisplayErrorContext(&e).to_string(),
        };
        let what = if key.is_empty() {
            "the prefix".to_string()
        } else {
            format!("`{key}`")
        };
        let message = format!(
            "the backup repository {} is not usable: {doing} {what} with the {key_name}: {said}",
            self.place
        );
        match status(&e) {
            None => error::tagged(Kind::Unreachable, message),
            Some(401 | 403 | 404) => error::tagged(Kind::Config, message),
            Some(_) => anyhow::anyhow!(message),
        }
    }
}

/// The HTTP status of a response, where there was one.
pub trait HttpStatus {
    fn http_status(&self) -> u16;
}

impl HttpStatus for aws_smithy_runtime_api::http::Response {
    fn http_status(&self) -> u16 {
        self.status().as_u16()
    }
}

fn status<E, R: HttpStatus>(e: &aws_sdk_s3::error::SdkError<E, R>) -> Option<u16> {
    e.raw_response().map(HttpStatus::http_status)
}

fn key(cfg: &Config, access: Access) -> Result<(String, String, Access)> {
    let s = &cfg.secrets.s3;
    let get = |v: &Option<crate::config::Secret>| v.as_ref().map(|s| s.expose().to_string()).filter(|s| !s.is_empty());
    if access == Access::ReadOnly {
        if let (Some(id), Some(secret)) = (get(&s.readonly_access_key_id), get(&s.readonly_secret_access_key)) {
            return Ok((id, secret, Access::ReadOnly));
        }
        crate::output::warn("no read-only S3 key in secrets; reading with the read-write key");
    }
    match (get(&s.access_key_id), get(&s.secret_access_key)) {
        (Some(id), Some(secret)) => Ok((id, secret, Access::ReadWrite)),
        _ => Err(error::usage(format!(
            "{}: s3.access_key_id and s3.secret_access_key are needed to reach the backup repository",
            cfg.secrets_path.display()
        ))),
    }
}

/// The host of an `https://host[:port][/...]` URL.
fn url_host(url: &str) -> Option<String> {
    let rest = url.strip_prefix("https://")?;
    let authority = rest.split('/').next()?;
    let host = authority.rsplit_once(':').map(|(h, _)| h).unwrap_or(authority);
    (!host.is_empty()).then(|| host.to_string())
}

fn place(b: &BackupConfig) -> String {
    format!("s3://{}/{} at {}", b.s3_bucket, b.s3_prefix.trim_matches('/'), b.s3_endpoint)
}

/// The probe object `preflight` writes with the read-only key (and removes if it could).
const PROBE: &str = "pgctl-read-only-probe";

/// Before anything changes: the read-write key can list the cluster's prefix, the read-only
/// key can list it too and cannot write into it (a "read-only" key that can write would let a
/// clone or a verification damage the archive). `Ok(summary)`; `Err` names the key at fault.
pub async fn preflight(cfg: &Config) -> Result<String> {
    let rw = Bucket::connect(cfg, Access::ReadWrite)?;
    rw.can_list().await?;
    let ro = Bucket::connect(cfg, Access::ReadOnly)?;
    if ro.access == Access::ReadWrite {
        return Ok(format!("S3: {} reachable; no read-only key to check", rw.place));
    }
    ro.can_list().await?;
    if ro.try_put(PROBE, b"pgctl: a read-only key must not be able to write this").await? {
        rw.delete(PROBE).await?;
        return Err(error::refused(format!(
            "S3: the read-only key (s3.readonly_access_key_id in {}) can write into {}: it is not read-only. Nothing was changed. Give that key read permission only on the bucket",
            cfg.secrets_path.display(),
            rw.place
        )));
    }
    Ok(format!("S3: {} reachable; the read-only key reads and cannot write", rw.place))
}

#[cfg(test)]
mod tests {
    #[test]
    fn endpoint_hosts() {
        assert_eq!(super::url_host("https://s3.lab").as_deref(), Some("s3.lab"));
        assert_eq!(super::url_host("https://s3.example.com:9443/x").as_deref(), Some("s3.example.com"));
        assert_eq!(super::url_host("http://s3.lab"), None);
    }
}
