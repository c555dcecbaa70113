//! The cluster's own roles (superuser, replication, rewind), made to match secrets.toml on data
//! that did not come from this cluster's bootstrap: a migrated database, or a restore to a point
//! before a password was changed. Passwords go as SCRAM-SHA-256 verifiers computed here, so no
//! plaintext password reaches PostgreSQL, its log or a file.

use crate::config::{Config, Secret};
use anyhow::{bail, Context, Result};
use base64::Engine as _;
use sha2::{Digest, Sha256};

/// PostgreSQL's default `scram_iterations`.
const ITERATIONS: u32 = 4096;

/// SQL (run as the superuser over the unix socket) that creates or updates the three roles
/// Patroni uses, with the grants Patroni gives its rewind role at bootstrap.
pub fn cluster_roles_sql(cfg: &Config) -> Result<String> {
    let s = &cfg.secrets;
    let superuser = verifier(cfg, &s.superuser_password, "superuser_password")?;
    let replication = verifier(cfg, &s.replication_password, "replication_password")?;
    let rewind = verifier(cfg, &s.rewind_password, "rewind_password")?;
    Ok(format!(
        "SET log_statement = 'none';
SET log_min_error_statement = 'panic';
DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'replicator') THEN CREATE ROLE replicator; END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'rewinder') THEN CREATE ROLE rewinder; END IF;
END $$;
ALTER ROLE postgres WITH SUPERUSER LOGIN PASSWORD '{superuser}';
ALTER ROLE replicator WITH REPLICATION LOGIN PASSWORD '{replication}';
ALTER ROLE rewinder WITH LOGIN PASSWORD '{rewind}';
GRANT EXECUTE ON FUNCTION pg_catalog.pg_ls_dir(text, boolean, boolean) TO rewinder;
GRANT EXECUTE ON FUNCTION pg_catalog.pg_stat_file(text, boolean) TO rewinder;
GRANT EXECUTE ON FUNCTION pg_catalog.pg_read_binary_file(text) TO rewinder;
GRANT EXECUTE ON FUNCTION pg_catalog.pg_read_binary_file(text, bigint, bigint, boolean) TO rewinder;
"
    ))
}

/// A fresh SCRAM verifier (random salt) of the secret `key` of secrets.toml.
pub fn verifier(cfg: &Config, secret: &Option<Secret>, key: &str) -> Result<String> {
    let password = secret
        .as_ref()
        .with_context(|| format!("{}: {key} is missing", cfg.secrets_path.display()))?;
    scram_verifier(password.expose(), &rand::random::<[u8; 16]>(), ITERATIONS)
        .with_context(|| format!("{}: {key}", cfg.secrets_path.display()))
}

/// `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`, as PostgreSQL stores it
/// (RFC 5802/7677). PostgreSQL SASLprep-normalises non-ASCII passwords first; pgctl generates
/// ASCII ones and refuses others rather than store a verifier that would not match.
pub fn scram_verifier(password: &str, salt: &[u8], iterations: u32) -> Result<String> {
    if !password.is_ascii() {
        bail!("the password has non-ASCII characters: use an ASCII password (pgctl init generates one)");
    }
    let salted = pbkdf2_sha256(password.as_bytes(), salt, iterations);
    let client_key = hmac_sha256(&salted, b"Client Key");
    let stored_key = Sha256::digest(client_key);
    let server_key = hmac_sha256(&salted, b"Server Key");
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    Ok(format!(
        "SCRAM-SHA-256${iterations}:{}${}:{}",
        b64(salt),
        b64(&stored_key),
        b64(&server_key)
    ))
}

fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut block = [0u8; BLOCK];
    if key.len() > BLOCK {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.map(|b| b ^ byte);
    let inner = Sha256::new().chain_update(pad(0x36)).chain_update(message).finalize();
    Sha256::new().chain_update(pad(0x5c)).chain_update(inner).finalize().into()
}

/// PBKDF2-HMAC-SHA-256 with one 32-byte block (all SCRAM-SHA-256 needs).
fn pbkdf2_sha256(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut u = hmac_sha256(password, &[salt, &1u32.to_be_bytes()].concat());
    let mut out = u;
    for _ in 1..iterations {
        u = hmac_sha256(password, &u);
        out.iter_mut().zip(u).for_each(|(o, b)| *o ^= b);
    }
    out
}

#[cfg(test)]
mod tests {
    /// Expected: Python's `hashlib.pbkdf2_hmac('sha256', b'pencil', salt, 4096)`, then HMAC
    /// "Client Key" / "Server Key" and SHA-256 of the client key.
    #[test]
    fn scram_verifier_matches_the_reference() {
        use base64::Engine as _;
        let salt = base64::engine::general_purpose::STANDARD
            .decode("W22ZaJ0SNY7soEsUEjb6gQ==")
            .unwrap();
        let v = super::scram_verifier("pencil", &salt, 4096).unwrap();
        assert_eq!(v, EXPECTED);
        assert!(super::scram_verifier("pässword", &salt, 4096).is_err());
    }

    #[test]
    fn hmac_of_a_long_key_hashes_it_first() {
        // RFC 4231 test case 6 (131-byte key).
        let mac = super::hmac_sha256(&[0xaa; 131], b"Test Using Larger Than Block-Size Key - Hash Key First");
        assert_eq!(hex::encode(mac), "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
    }

    /// Also the verifier of RFC 7677's example (user "user", password "pencil").
    const EXPECTED: &str =
        "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=";
}
