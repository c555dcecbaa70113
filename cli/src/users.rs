//! `pgctl user create | alter | drop | list`: application roles on the leader, without a psql
//! session. Passwords are read from a file or stdin, turned into a SCRAM-SHA-256 verifier here
//! (the plaintext never leaves this process), and the SQL carrying the verifier travels as a
//! 0600 file with statement logging off for that session. The cluster's own roles (postgres,
//! replicator, rewinder) and PostgreSQL's pg_* roles are not managed here.

use crate::config::{Config, Secret};
use crate::docker::Engine;
use crate::{error, member};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// Roles pgctl keeps in step with secrets.toml itself.
const CLUSTER_ROLES: [&str; 3] = ["postgres", "replicator", "rewinder"];

/// What `create` or `alter` sets; `None` leaves an attribute as it is (alter) or at
/// PostgreSQL's default (create).
#[derive(Debug, Default)]
pub struct RoleSpec {
    pub name: String,
    pub password: Option<Secret>,
    pub login: Option<bool>,
    pub createdb: Option<bool>,
    pub replication: Option<bool>,
    pub member_of: Vec<String>,
    pub not_member_of: Vec<String>,
    pub connection_limit: Option<i32>,
    /// A database this role owns: created if missing, else its owner changed.
    pub owns_database: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct RoleInfo {
    pub name: String,
    pub login: bool,
    pub createdb: bool,
    pub replication: bool,
    pub superuser: bool,
    pub connection_limit: i32,
    /// `scram-sha-256`, `md5` (the cluster refuses it at login) or `none`.
    pub password: String,
    pub member_of: Vec<String>,
    pub owns_databases: Vec<String>,
    /// One of the cluster's own roles (its password is secrets.toml's).
    #[serde(default)]
    pub cluster_role: bool,
}

/// A role name pgctl accepts: letters, digits, `_`, `-` and `.`, not starting with a digit
/// (it is always double-quoted in SQL).
fn check_name(what: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
        && !name.starts_with(|c: char| c.is_ascii_digit());
    if !ok {
        return Err(error::usage(format!(
            "{what} `{name}`: use letters, digits, `_`, `-` and `.` (at most 63, not starting with a digit)"
        )));
    }
    Ok(())
}

fn check_managed(name: &str) -> Result<()> {
    check_name("role", name)?;
    if CLUSTER_ROLES.contains(&name) || name.starts_with("pg_") {
        return Err(error::refused(format!(
            "role `{name}` is the cluster's own (its password comes from secrets.toml) or PostgreSQL's: not managed by `pgctl user`; nothing was changed"
        )));
    }
    Ok(())
}

fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// The session settings that keep a statement with a verifier out of the server log.
const QUIET: &str = "SET log_statement = 'none';\nSET log_min_error_statement = 'panic';\nSET log_min_duration_statement = -1;\n";

/// `WITH ...` attributes of `spec` (password as a fresh SCRAM verifier).
fn attributes(spec: &RoleSpec) -> Result<String> {
    let mut out = Vec::new();
    let flag = |on: Option<bool>, yes: &str, no: &str| on.map(|b| if b { yes.to_string() } else { no.to_string() });
    out.extend(flag(spec.login, "LOGIN", "NOLOGIN"));
    out.extend(flag(spec.createdb, "CREATEDB", "NOCREATEDB"));
    out.extend(flag(spec.replication, "REPLICATION", "NOREPLICATION"));
    if let Some(n) = spec.connection_limit {
        out.push(format!("CONNECTION LIMIT {n}"));
    }
    if let Some(p) = &spec.password {
        let verifier = crate::roles::scram_verifier(p.expose(), &rand::random::<[u8; 16]>(), 4096)?;
        out.push(format!("PASSWORD {}", literal(&verifier)));
    }
    Ok(out.join(" "))
}

async fn exists(leader: &Engine, name: &str) -> Result<bool> {
    let n = member::psql(leader, &format!("SELECT count(*) FROM pg_roles WHERE rolname = {}", literal(name))).await?;
    Ok(n.trim() == "1")
}

fn check_spec(spec: &RoleSpec) -> Result<()> {
    check_managed(&spec.name)?;
    for g in spec.member_of.iter().chain(&spec.not_member_of) {
        check_name("--member-of", g)?;
    }
    if let Some(db) = &spec.owns_database {
        check_name("--owns-database", db)?;
    }
    Ok(())
}

/// Creates the role on the leader; refused when it exists (use `alter`).
pub async fn create(cfg: &Config, leader: &Engine, spec: &RoleSpec) -> Result<RoleInfo> {
    check_spec(spec)?;
    if exists(leader, &spec.name).await? {
        return Err(error::refused(format!(
            "role `{}` exists: change it with `pgctl user alter`; nothing was changed",
            spec.name
        )));
    }
    let mut with = attributes(spec)?;
    if spec.login.is_none() {
        with = format!("LOGIN {with}");
    }
    let sql = format!(
        "{QUIET}BEGIN;\nCREATE ROLE {} WITH {with};\n{}COMMIT;\n",
        ident(&spec.name),
        memberships(spec)
    ) + &database_part(spec);
    member::psql_file(cfg, leader, "postgres", &sql, &format!("creating role {}", spec.name)).await?;
    show(leader, &spec.name).await
}

fn memberships(spec: &RoleSpec) -> String {
    let role = ident(&spec.name);
    let grants: String = spec.member_of.iter().map(|g| format!("GRANT {} TO {role};\n", ident(g))).collect();
    let revokes: String = spec
        .not_member_of
        .iter()
        .map(|g| format!("REVOKE {} FROM {role};\n", ident(g)))
        .collect();
    grants + &revokes
}

/// Ownership of `spec.owns_database`: created if missing, else handed over. CREATE DATABASE
/// cannot run in a transaction block: psql's \gexec runs it as a statement of its own.
fn database_part(spec: &RoleSpec) -> String {
    let Some(db) = &spec.owns_database else { return String::new() };
    format!(
        "SELECT format('CREATE DATABASE %I OWNER %I', {db}, {name}) WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = {db})\n\\gexec\nALTER DATABASE {dbi} OWNER TO {role};\n",
        db = literal(db),
        name = literal(&spec.name),
        dbi = ident(db),
        role = ident(&spec.name),
    )
}

/// Changes an existing role; refused when it does not exist.
pub async fn alter(cfg: &Config, leader: &Engine, spec: &RoleSpec) -> Result<RoleInfo> {
    check_spec(spec)?;
    if !exists(leader, &spec.name).await? {
        return Err(error::refused(format!(
            "role `{}` does not exist: create it with `pgctl user create`; nothing was changed",
            spec.name
        )));
    }
    let with = attributes(spec)?;
    let alter = if with.is_empty() {
        String::new()
    } else {
        format!("ALTER ROLE {} WITH {with};\n", ident(&spec.name))
    };
    let sql = format!("{QUIET}BEGIN;\n{alter}{}COMMIT;\n", memberships(spec)) + &database_part(spec);
    member::psql_file(cfg, leader, "postgres", &sql, &format!("changing role {}", spec.name)).await?;
    show(leader, &spec.name).await
}

#[derive(Debug, Serialize)]
pub struct Dropped {
    pub name: String,
    /// Databases where its objects went to `reassigned_to`.
    pub reassigned_in: Vec<String>,
    pub reassigned_to: Option<String>,
}

/// Drops a role. One that owns objects or holds privileges (in any database) is refused
/// unless `reassign_to` is given: then its objects go to that role and its privileges are
/// revoked, database by database, first.
pub async fn drop(leader: &Engine, name: &str, reassign_to: Option<&str>) -> Result<Dropped> {
    check_managed(name)?;
    if let Some(to) = reassign_to {
        check_name("--reassign-to", to)?;
        if !exists(leader, to).await? {
            return Err(error::usage(format!("--reassign-to {to}: no such role; nothing was changed")));
        }
    }
    if !exists(leader, name).await? {
        return Err(error::refused(format!("role `{name}` does not exist; nothing was changed")));
    }
    // pg_shdepend is shared: one query sees every database's dependencies on the role.
    let depends = format!(
        "SELECT db || ':' || n FROM (SELECT coalesce(d.datname, '') AS db, count(*) AS n FROM pg_shdepend s \
         LEFT JOIN pg_database d ON d.oid = s.dbid WHERE s.refobjid = (SELECT oid FROM pg_roles WHERE rolname = {}) \
         AND s.deptype IN ('o', 'a', 'i') GROUP BY 1) x ORDER BY 1",
        literal(name)
    );
    let owned: Vec<(String, String)> = member::psql(leader, &depends)
        .await?
        .lines()
        .filter_map(|l| l.rsplit_once(':').map(|(d, n)| (d.to_string(), n.to_string())))
        .collect();
    let databases: Vec<String> = member::psql(
        leader,
        &format!(
            "SELECT datname FROM pg_database WHERE datdba = (SELECT oid FROM pg_roles WHERE rolname = {}) ORDER BY 1",
            literal(name)
        ),
    )
    .await?
    .lines()
    .map(str::to_string)
    .filter(|l| !l.is_empty())
    .collect();
    let mut reassigned_in = Vec::new();
    if !owned.is_empty() || !databases.is_empty() {
        let Some(to) = reassign_to else {
            let mut what: Vec<String> = owned
                .iter()
                .filter(|(d, _)| !d.is_empty())
                .map(|(d, n)| format!("{n} object(s) or privilege(s) in database {d}"))
                .collect();
            what.extend(databases.iter().map(|d| format!("database {d}")));
            return Err(error::refused(format!(
                "role `{name}` owns or holds {}: give them to another role with --reassign-to ROLE; nothing was changed",
                what.join(", ")
            )));
        };
        // Shared objects (databases) have no database of their own: REASSIGN anywhere takes them.
        let mut targets: Vec<String> = owned.iter().map(|(d, _)| d.clone()).filter(|d| !d.is_empty()).collect();
        if targets.is_empty() {
            targets.push("postgres".into());
        }
        for db in &targets {
            let sql = format!(
                "REASSIGN OWNED BY {} TO {};\nDROP OWNED BY {};\n",
                ident(name),
                ident(to),
                ident(name)
            );
            member::psql_in(leader, db, &sql)
                .await
                .with_context(|| format!("database {db}: giving the objects of {name} to {to}"))?;
            reassigned_in.push(db.clone());
        }
    }
    member::psql(leader, &format!("DROP ROLE {}", ident(name))).await?;
    Ok(Dropped {
        name: name.into(),
        reassigned_in,
        reassigned_to: reassign_to.map(str::to_string),
    })
}

const LIST_SQL: &str = "SELECT coalesce(json_agg(r ORDER BY r.name), '[]') FROM (SELECT a.rolname AS name, a.rolcanlogin AS login, \
    a.rolcreatedb AS createdb, a.rolreplication AS replication, a.rolsuper AS superuser, a.rolconnlimit AS connection_limit, \
    CASE WHEN a.rolpassword IS NULL THEN 'none' WHEN a.rolpassword LIKE 'SCRAM-SHA-256$%' THEN 'scram-sha-256' \
    WHEN a.rolpassword LIKE 'md5%' THEN 'md5' ELSE 'other' END AS password, \
    ARRAY(SELECT g.rolname FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid WHERE m.member = a.oid ORDER BY 1) AS member_of, \
    ARRAY(SELECT datname FROM pg_database WHERE datdba = a.oid ORDER BY 1) AS owns_databases \
    FROM pg_authid a WHERE a.rolname NOT LIKE 'pg\\_%' FILTER_ROLE) r";

async fn query(leader: &Engine, filter: &str) -> Result<Vec<RoleInfo>> {
    let sql = LIST_SQL.replace("FILTER_ROLE", filter);
    let mut roles: Vec<RoleInfo> = serde_json::from_str(member::psql(leader, &sql).await?.trim()).context("reading the roles")?;
    for r in &mut roles {
        r.cluster_role = CLUSTER_ROLES.contains(&r.name.as_str());
    }
    Ok(roles)
}

/// Every role but PostgreSQL's own pg_* roles.
pub async fn list(leader: &Engine) -> Result<Vec<RoleInfo>> {
    query(leader, "").await
}

async fn show(leader: &Engine, name: &str) -> Result<RoleInfo> {
    query(leader, &format!("AND a.rolname = {}", literal(name)))
        .await?
        .pop()
        .with_context(|| format!("role {name} not found after the change"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_and_quoted() {
        assert!(check_name("role", "app_rw").is_ok());
        assert!(check_name("role", "app-ro.v2").is_ok());
        for bad in ["", "1app", "a b", "x\"y", "a;drop"] {
            assert!(check_name("role", bad).is_err(), "{bad}");
        }
        assert!(check_managed("postgres").is_err());
        assert!(check_managed("pg_monitor").is_err());
        assert_eq!(ident("app"), "\"app\"");
        assert_eq!(literal("it's"), "'it''s'");
    }

    #[test]
    fn the_password_becomes_a_verifier() {
        let spec = RoleSpec {
            name: "app".into(),
            password: Some(Secret("correct horse".into())),
            login: Some(true),
            connection_limit: Some(20),
            ..Default::default()
        };
        let with = attributes(&spec).unwrap();
        assert!(
            with.starts_with("LOGIN CONNECTION LIMIT 20 PASSWORD 'SCRAM-SHA-256$4096:"),
            "{with}"
        );
        assert!(!with.contains("correct horse"));
    }

    #[test]
    fn database_ownership_creates_or_moves() {
        let spec = RoleSpec {
            name: "app".into(),
            owns_database: Some("appdb".into()),
            ..Default::default()
        };
        let sql = database_part(&spec);
        assert!(
            sql.contains("CREATE DATABASE %I OWNER %I', 'appdb', 'app'") && sql.contains("\\gexec"),
            "{sql}"
        );
        assert!(sql.contains("ALTER DATABASE \"appdb\" OWNER TO \"app\";"), "{sql}");
    }
}
