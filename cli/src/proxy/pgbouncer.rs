//! PgBouncer on hosts with role `pgbouncer`, in front of the same host's HAProxy port 5000.
//! Why there and not on each database host: the pool follows the leader without being
//! reconfigured, and across a switchover clients keep their PgBouncer connection (only a
//! transaction in flight fails) while HAProxy cuts and PgBouncer reopens the server side.
//!
//! No password list: PgBouncer logs in as its own user `pgbouncer` (the only entry of its auth
//! file) and looks every other user up with `pgbouncer.get_auth()`, a SECURITY DEFINER function
//! `up` keeps in every database. Superusers and replication roles are never looked up, so they
//! cannot log in through it. Clients connect with TLS (a certificate from the cluster's CA).

use crate::config::{Config, HostConfig, Role};
use crate::docker::spec::{ContainerSpec, File};
use crate::docker::Engine;
use crate::layout::{PGBOUNCER, PGBOUNCER_AUTH_FILE, PGBOUNCER_CONFIG, PGBOUNCER_TLS};
use crate::member;
use crate::render::render;
use anyhow::{Context, Result};

/// pgbouncer.ini for `host`.
pub fn config(cfg: &Config, host: &HostConfig) -> Result<String> {
    let a = &cfg.hosts.access;
    render(
        "pgbouncer.ini.j2",
        minijinja::context! {
            host => host.name,
            cluster => cfg.hosts.cluster.name,
            port => a.pgbouncer_port,
            pool_mode => a.pgbouncer_pool_mode,
            pool_size => a.pgbouncer_pool_size,
            max_client_conn => a.pgbouncer_max_client_conn,
            auth_file => PGBOUNCER_AUTH_FILE,
            tls_cert => PGBOUNCER_TLS[0],
            tls_key => PGBOUNCER_TLS[1],
            tls_ca => PGBOUNCER_TLS[2],
            // With tls the members accept application logins over TLS only.
            server_tls => if cfg.hosts.cluster.tls { "verify-ca" } else { "prefer" },
        },
    )
}

/// The names PgBouncer's certificate carries: the host's address and name.
fn names(host: &HostConfig) -> Vec<String> {
    vec![host.address.clone(), host.name.clone(), "localhost".into(), "127.0.0.1".into()]
}

pub fn container(cfg: &Config, host: &HostConfig, image_id: &str) -> Result<Option<ContainerSpec>> {
    if !host.has_role(Role::Pgbouncer) {
        return Ok(None);
    }
    let password = cfg.secrets.pgbouncer_password.as_ref().with_context(|| {
        format!(
            "{}: pgbouncer_password is missing (role pgbouncer on {})",
            cfg.secrets_path.display(),
            host.name
        )
    })?;
    let ca = crate::tls::ca_from_secrets(cfg, &format!("role pgbouncer on {}", host.name))?;
    let mut files = vec![
        File::new(PGBOUNCER_CONFIG, config(cfg, host)?, true),
        File::new(
            PGBOUNCER_AUTH_FILE,
            format!("\"pgbouncer\" \"{}\"\n", password.expose().replace('"', "\"\"")),
            true,
        ),
    ];
    files.extend(crate::tls::issued_files(&ca, &host.name, &names(host), PGBOUNCER_TLS)?);
    // PgBouncer refuses to run as root.
    Ok(Some(ContainerSpec::stateless(
        PGBOUNCER,
        &[
            "setpriv",
            "--reuid=postgres",
            "--regid=postgres",
            "--init-groups",
            "pgbouncer",
            PGBOUNCER_CONFIG,
        ],
        files,
        image_id,
        &[],
        None,
    )))
}

/// The lookup function's body: a user's SCRAM verifier, never a superuser's or a replication
/// role's.
const GET_AUTH: &str = "CREATE SCHEMA IF NOT EXISTS pgbouncer AUTHORIZATION postgres;
CREATE OR REPLACE FUNCTION pgbouncer.get_auth(p_usename text)
  RETURNS TABLE(usename name, passwd text)
  LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog AS
$$ SELECT usename, passwd FROM pg_catalog.pg_shadow
   WHERE usename = p_usename AND NOT usesuper AND NOT userepl $$;
REVOKE ALL ON FUNCTION pgbouncer.get_auth(text) FROM PUBLIC;
GRANT USAGE ON SCHEMA pgbouncer TO pgbouncer;
GRANT EXECUTE ON FUNCTION pgbouncer.get_auth(text) TO pgbouncer;
";

/// On the leader: the `pgbouncer` role with secrets.toml's password (as a SCRAM verifier) and
/// the lookup function in every database that takes connections (template1 too, so new
/// databases have it). Idempotent; returns a line for the user.
pub async fn ensure_database_objects(cfg: &Config, leader: &Engine) -> Result<Option<String>> {
    if !cfg.hosts.hosts.iter().any(|h| h.has_role(Role::Pgbouncer)) {
        return Ok(None);
    }
    let verifier = crate::roles::verifier(cfg, &cfg.secrets.pgbouncer_password, "pgbouncer_password")?;
    let role = format!(
        "SET log_statement = 'none';
SET log_min_error_statement = 'panic';
DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'pgbouncer') THEN CREATE ROLE pgbouncer; END IF;
END $$;
ALTER ROLE pgbouncer WITH LOGIN NOSUPERUSER NOREPLICATION PASSWORD '{verifier}';
"
    );
    member::psql_file(cfg, leader, "postgres", &role, "creating PgBouncer's role").await?;
    let databases = member::psql(leader, "SELECT datname FROM pg_database WHERE datallowconn ORDER BY 1").await?;
    let databases: Vec<&str> = databases.lines().map(str::trim).filter(|d| !d.is_empty()).collect();
    for db in &databases {
        member::psql_file(cfg, leader, db, GET_AUTH, &format!("PgBouncer's lookup function in database {db}")).await?;
    }
    Ok(Some(format!(
        "PgBouncer: role pgbouncer and pgbouncer.get_auth() in {} database(s)",
        databases.len()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pools_through_haproxy_with_tls_and_no_password_list() {
        let mut cfg = crate::cluster::spec::tests::config("consul");
        cfg.hosts.hosts[3].roles.extend([Role::Haproxy, Role::Pgbouncer]);
        let ca = crate::pki::Ca::generate("test CA").unwrap();
        cfg.secrets.postgres_ca_cert = Some(crate::config::Secret(ca.cert_pem));
        cfg.secrets.postgres_ca_key = Some(crate::config::Secret(ca.key_pem));
        cfg.secrets.pgbouncer_password = Some(crate::config::Secret("pw\"x".into()));
        let app1 = cfg.host("app1").unwrap();
        let spec = container(&cfg, app1, "sha256:abc").unwrap().unwrap();
        let ini = &spec.files[0].contents;
        crate::render::golden("pgbouncer-app1.ini", ini);
        assert!(ini.contains("* = host=127.0.0.1 port=5000"));
        assert!(ini.contains("pool_mode = transaction"));
        assert!(ini.contains("client_tls_sslmode = require"));
        let auth = &spec.files[1].contents;
        assert_eq!(auth, "\"pgbouncer\" \"pw\"\"x\"\n", "only PgBouncer's own login, quotes doubled");
        assert!(spec.files.iter().all(|f| f.postgres_owned));
        let again = container(&cfg, app1, "sha256:abc").unwrap().unwrap();
        assert_eq!(spec.hash, again.hash, "a fresh certificate, the same hash");
        // Without the CA: a clear error naming the host and the fix.
        cfg.secrets.postgres_ca_key = None;
        let err = format!("{:#}", container(&cfg, cfg.host("app1").unwrap(), "x").unwrap_err());
        assert!(err.contains("role pgbouncer on app1") && err.contains("--add-tls-ca"), "{err}");
    }
}
