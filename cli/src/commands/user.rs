//! `pgctl user create | alter | drop | list`: application roles without a psql session.

use super::Ctx;
use crate::config::Secret;
use crate::users::{self, RoleSpec};
use crate::{error, output};
use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use std::io::Read;
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum UserCommand {
    /// Create a role on the leader (LOGIN unless --no-login); the password from a file or stdin
    #[command(long_about = "Create a role on the leader.\n\n\
The password is read from --password-file or from stdin (--password-stdin), never from the command line or the \
environment; pgctl stores it as a SCRAM-SHA-256 verifier computed on this machine, and the statement travels as a 0600 \
file with statement logging off. A role without a password cannot log in over the network (pg_hba: scram-sha-256).\n\n\
Examples:\n  pgctl user create app --password-file app.pw --owns-database app\n  \
printf '%s' \"$APP_PASSWORD\" | pgctl user create app_ro --password-stdin --member-of pg_read_all_data --connection-limit 50")]
    Create(RoleArgs),
    /// Change a role: password, attributes, memberships, connection limit, database ownership
    Alter(RoleArgs),
    /// Drop a role; one that owns objects or holds privileges needs --reassign-to
    #[command(long_about = "Drop a role.\n\n\
Refused while the role owns objects, holds privileges or owns a database, in any database (pgctl names them), unless \
--reassign-to ROLE: then, database by database, REASSIGN OWNED BY it TO that role and DROP OWNED BY it (its privileges \
go) before DROP ROLE.\n\nExamples:\n  pgctl user drop old_app\n  pgctl user drop old_app --reassign-to app")]
    Drop {
        name: String,
        /// Give its objects and databases to this role first
        #[arg(long, value_name = "ROLE")]
        reassign_to: Option<String>,
    },
    /// Roles with their attributes, memberships, password kind and owned databases
    List,
}

#[derive(Args)]
pub struct RoleArgs {
    /// The role's name (letters, digits, `_`, `-`, `.`)
    name: String,
    /// Read the password from this file (one line; trailing newline ignored)
    #[arg(long, value_name = "FILE", conflicts_with = "password_stdin")]
    password_file: Option<PathBuf>,
    /// Read the password from stdin (one line)
    #[arg(long)]
    password_stdin: bool,
    /// The role can log in [default for create]
    #[arg(long, overrides_with = "no_login")]
    login: bool,
    /// The role cannot log in (a group role)
    #[arg(long, overrides_with = "login")]
    no_login: bool,
    /// The role can create databases
    #[arg(long, overrides_with = "no_createdb")]
    createdb: bool,
    /// The role cannot create databases
    #[arg(long, overrides_with = "createdb")]
    no_createdb: bool,
    /// The role can open replication connections
    #[arg(long, overrides_with = "no_replication")]
    replication: bool,
    /// The role cannot open replication connections
    #[arg(long, overrides_with = "replication")]
    no_replication: bool,
    /// Grant membership in this role (repeatable)
    #[arg(long, value_name = "ROLE")]
    member_of: Vec<String>,
    /// Revoke membership in this role (repeatable; alter)
    #[arg(long, value_name = "ROLE")]
    not_member_of: Vec<String>,
    /// At most this many connections (-1: no limit)
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    connection_limit: Option<i32>,
    /// This database belongs to the role (created if missing)
    #[arg(long, value_name = "DB")]
    owns_database: Option<String>,
}

fn flag(on: bool, off: bool) -> Option<bool> {
    match (on, off) {
        (true, _) => Some(true),
        (_, true) => Some(false),
        _ => None,
    }
}

fn read_password(args: &RoleArgs) -> Result<Option<Secret>> {
    let text = match (&args.password_file, args.password_stdin) {
        (Some(f), _) => std::fs::read_to_string(f).with_context(|| format!("--password-file {}", f.display()))?,
        (None, true) => {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s).context("reading the password from stdin")?;
            s
        }
        (None, false) => return Ok(None),
    };
    let password = text.lines().next().unwrap_or_default().to_string();
    if password.is_empty() {
        return Err(error::usage("the password is empty; nothing was changed"));
    }
    Ok(Some(Secret(password)))
}

fn spec(args: &RoleArgs) -> Result<RoleSpec> {
    Ok(RoleSpec {
        name: args.name.clone(),
        password: read_password(args)?,
        login: flag(args.login, args.no_login),
        createdb: flag(args.createdb, args.no_createdb),
        replication: flag(args.replication, args.no_replication),
        member_of: args.member_of.clone(),
        not_member_of: args.not_member_of.clone(),
        connection_limit: args.connection_limit,
        owns_database: args.owns_database.clone(),
    })
}

fn role_line(r: &users::RoleInfo) -> String {
    let mut attrs = vec![if r.login { "login" } else { "nologin" }.to_string()];
    for (on, name) in [(r.superuser, "superuser"), (r.createdb, "createdb"), (r.replication, "replication")] {
        if on {
            attrs.push(name.into());
        }
    }
    if r.connection_limit >= 0 {
        attrs.push(format!("connection limit {}", r.connection_limit));
    }
    format!("{}: {}, password {}", r.name, attrs.join(", "), r.password)
}

pub async fn run(command: UserCommand, ctx: &Ctx) -> Result<()> {
    let (cfg, engines) = ctx.connect_available().await?;
    let leader = crate::member::leader(&cfg, &engines).await?;
    match command {
        UserCommand::Create(args) => {
            let role = users::create(&cfg, leader, &spec(&args)?).await?;
            if role.password == "none" && role.login {
                output::warn(format!("{} has no password: it cannot log in over the network", role.name));
            }
            output::result(&role, |r| format!("created {}", role_line(r)))
        }
        UserCommand::Alter(args) => {
            let role = users::alter(&cfg, leader, &spec(&args)?).await?;
            output::result(&role, |r| format!("changed {}", role_line(r)))
        }
        UserCommand::Drop { name, reassign_to } => {
            ctx.confirm(&format!(
                "drop role {name}{}",
                reassign_to
                    .as_ref()
                    .map(|t| format!(" (its objects go to {t})"))
                    .unwrap_or_default()
            ))?;
            let dropped = users::drop(leader, &name, reassign_to.as_deref()).await?;
            output::result(&dropped, |d| {
                if d.reassigned_in.is_empty() {
                    format!("dropped {}", d.name)
                } else {
                    format!(
                        "dropped {} (its objects in {} went to {})",
                        d.name,
                        d.reassigned_in.join(", "),
                        d.reassigned_to.clone().unwrap_or_default()
                    )
                }
            })
        }
        UserCommand::List => {
            let roles = users::list(leader).await?;
            output::result(&roles, |rs| {
                let rows = rs.iter().map(|r| {
                    vec![
                        r.name.clone(),
                        role_line(r).split_once(": ").map(|x| x.1.to_string()).unwrap_or_default(),
                        r.member_of.join(", "),
                        r.owns_databases.join(", "),
                        if r.cluster_role {
                            "cluster role (secrets.toml)".into()
                        } else {
                            String::new()
                        },
                    ]
                });
                output::table(&["ROLE", "ATTRIBUTES", "MEMBER OF", "OWNS", ""], rows)
            })
        }
    }
}
