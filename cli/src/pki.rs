//! A certificate authority (rcgen). The lab's signs each simulated host's Docker Engine server
//! certificate, pgctl's client certificate and the S3 endpoint's certificate; a cluster's
//! (secrets.toml `postgres_ca_cert`/`postgres_ca_key`) signs each member's PostgreSQL server
//! certificate.

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};

pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pub cert_pem: String,
    pub key_pem: String,
}

/// A certificate and its private key, PEM encoded.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

fn name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "pgctl");
    dn.push(DnType::CommonName, common_name);
    dn
}

impl Ca {
    pub fn generate(common_name: &str) -> Result<Ca> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = name(common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        let key_pem = key.serialize_pem();
        Ok(Ca {
            issuer: Issuer::new(params, key),
            cert_pem: cert.pem(),
            key_pem,
        })
    }

    pub fn load(cert_pem: &str, key_pem: &str) -> Result<Ca> {
        let key = KeyPair::from_pem(key_pem).context("parsing the CA key")?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key).context("parsing the CA certificate")?;
        Ok(Ca {
            issuer,
            cert_pem: cert_pem.into(),
            key_pem: key_pem.into(),
        })
    }

    /// Short SHA-256 fingerprint of the CA certificate (PEM text).
    pub fn fingerprint(&self) -> String {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(self.cert_pem.as_bytes()))[..16].to_string()
    }

    /// A leaf certificate for `sans` (DNS names or IP addresses), valid for rcgen's default
    /// (practically forever: the lab's).
    pub fn issue(&self, common_name: &str, sans: &[String], server: bool, client: bool) -> Result<Issued> {
        self.issue_valid(common_name, sans, server, client, None)
    }

    /// A leaf certificate valid from an hour ago for `days` days.
    pub fn issue_for_days(&self, common_name: &str, sans: &[String], days: i64) -> Result<Issued> {
        self.issue_valid(common_name, sans, true, false, Some(days))
    }

    fn issue_valid(&self, common_name: &str, sans: &[String], server: bool, client: bool, days: Option<i64>) -> Result<Issued> {
        let mut params = CertificateParams::new(sans.to_vec())?;
        if let Some(days) = days {
            let now = time::OffsetDateTime::now_utc();
            params.not_before = now - time::Duration::hours(1);
            params.not_after = now + time::Duration::days(days);
        }
        params.distinguished_name = name(common_name);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = [
            (server, ExtendedKeyUsagePurpose::ServerAuth),
            (client, ExtendedKeyUsagePurpose::ClientAuth),
        ]
        .into_iter()
        .filter_map(|(on, p)| on.then_some(p))
        .collect();
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Leaf certificates verify against the CA, also after the CA is reloaded from PEM.
    #[test]
    fn issued_certificates_verify_with_openssl() {
        let dir = std::env::temp_dir().join(format!("pgctl-pki-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for round in 0..20 {
            let ca = Ca::generate("test CA").unwrap();
            let reloaded = Ca::load(&ca.cert_pem, &ca.key_pem).unwrap();
            for (i, issuer) in [&ca, &reloaded].iter().enumerate() {
                let leaf = issuer.issue("host", &["10.1.2.3".into(), "host".into()], true, false).unwrap();
                std::fs::write(dir.join("ca.pem"), &ca.cert_pem).unwrap();
                std::fs::write(dir.join("leaf.pem"), &leaf.cert_pem).unwrap();
                let out = std::process::Command::new("openssl")
                    .arg("verify")
                    .arg("-CAfile")
                    .arg(dir.join("ca.pem"))
                    .arg(dir.join("leaf.pem"))
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "round {round} issuer {i}: {}",
                    String::from_utf8_lossy(&out.stdout)
                );
            }
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// The same check with rustls/webpki, which pgctl (through bollard) uses as a client.
    #[test]
    fn issued_certificates_verify_with_rustls() {
        use tokio_rustls::rustls;
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        for round in 0..200 {
            let ca = Ca::generate("test CA").unwrap();
            let leaf = ca.issue("host", &["10.1.2.3".into()], true, false).unwrap();
            let mut roots = rustls::RootCertStore::empty();
            roots
                .add(rustls_pemfile::certs(&mut ca.cert_pem.as_bytes()).next().unwrap().unwrap())
                .unwrap();
            let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(std::sync::Arc::new(roots), provider.clone())
                .build()
                .unwrap();
            let end = rustls_pemfile::certs(&mut leaf.cert_pem.as_bytes()).next().unwrap().unwrap();
            let name = rustls::pki_types::ServerName::try_from("10.1.2.3").unwrap();
            let r = rustls::client::danger::ServerCertVerifier::verify_server_cert(
                &*verifier,
                &end,
                &[],
                &name,
                &[],
                rustls::pki_types::UnixTime::now(),
            );
            assert!(r.is_ok(), "round {round}: {r:?}");
        }
    }
}
