//! `pgctl config`: the files `up` uploads (render), and Patroni's dynamic configuration in the
//! DCS (show, set, edit, diff).

use super::Ctx;
use crate::cluster::spec::{self, ImageFacts};
use crate::settings::{self, validate, Key};
use crate::{docker, error, image, output};
use anyhow::{Context, Result};
use clap::Subcommand;
use std::collections::BTreeMap;

const WHERE_SETTINGS_LIVE: &str = "Patroni's timing (ttl, loop_wait, retry_timeout, maximum_lag_on_failover, synchronous_mode, \
synchronous_mode_strict) and PostgreSQL parameters live in the DCS once the cluster runs; hosts.toml ([cluster.patroni], \
[cluster.postgresql_parameters]) is what `up` bootstraps a new cluster with. `config set` and `config edit` change both, \
`config diff` shows where they disagree. Archiving, restore_command, ports, sockets and pg_hba are pgctl's own: each member's \
patroni.yml, rendered from hosts.toml by `up`.";

#[derive(Subcommand)]
pub enum ConfigCommand {
    /// Print a file exactly as `up` uploads it to HOST (it contains secrets: mind where it goes)
    Render {
        host: String,
        /// patroni.yml, etcd.yml or consul.json
        #[arg(long, default_value = "patroni.yml")]
        file: String,
    },
    /// The dynamic configuration the cluster runs with, and members waiting for a restart
    #[command(long_about = WHERE_SETTINGS_LIVE)]
    Show,
    /// Change settings: validated, shown as a diff, confirmed, sent to the DCS and written into hosts.toml
    #[command(long_about = concat!("Change Patroni settings or PostgreSQL parameters of the running cluster.\n\n\
Each KEY=VALUE is checked before anything is sent: Patroni's timing keys and their types, PostgreSQL parameters against the \
leader's pg_settings (name, type, range, units such as 256MB or 5min), parameters pgctl sets itself refused, and \
loop_wait + 2 * retry_timeout <= ttl on the result. `KEY=` removes a parameter (back to PostgreSQL's default). The diff is \
printed and must be confirmed (--yes in scripts); then Patroni's PATCH /config applies it on every member and hosts.toml \
gets the same values (the previous file kept as hosts.toml.before-config). Parameters that need a restart show as pending \
in `pgctl status` and `pgctl config show` until `pgctl restart --pending`.\n\n\
Examples:\n  pgctl config set work_mem=16MB\n  pgctl config set max_connections=300 shared_buffers=2GB && pgctl restart --pending\n  \
pgctl config set ttl=40 retry_timeout=15"))]
    Set {
        /// KEY=VALUE: ttl, loop_wait, retry_timeout, maximum_lag_on_failover, synchronous_mode, synchronous_mode_strict, or a PostgreSQL parameter (postgresql.parameters.NAME or just NAME)
        #[arg(required = true, value_name = "KEY=VALUE")]
        assignments: Vec<String>,
    },
    /// Edit the dynamic configuration in $EDITOR (as TOML), then validate, diff, confirm and apply like `set`
    Edit,
    /// Where hosts.toml and the running cluster's dynamic configuration disagree
    Diff,
}

pub async fn run(command: ConfigCommand, ctx: &Ctx) -> Result<()> {
    let (host, file) = match command {
        ConfigCommand::Render { host, file } => (host, file),
        ConfigCommand::Show => return show(ctx).await,
        ConfigCommand::Set { assignments } => {
            let wanted = assignments
                .iter()
                .map(|a| validate::parse_assignment(a))
                .collect::<Result<Vec<_>, _>>()
                .map_err(error::usage)?;
            return change(ctx, wanted).await;
        }
        ConfigCommand::Edit => return edit(ctx).await,
        ConfigCommand::Diff => return diff(ctx).await,
    };
    let cfg = ctx.load()?;
    let h = cfg
        .host(&host)
        .ok_or_else(|| error::usage(format!("no host `{host}` in {}", cfg.hosts_path.display())))?;
    let facts = local_image_facts(&cfg.hosts.cluster.image).await;
    let text = spec::render_file(&cfg, h, &facts, &file)?
        .ok_or_else(|| error::usage(format!("--file {file}: allowed are {}", spec::RENDERABLE.join(", "))))?;
    output::raw(&text)
}

/// What the image holds, from the local engine's copy; without one, rendered as for an image
/// with no optional components (and said so).
async fn local_image_facts(image: &str) -> ImageFacts {
    let local = match docker::local().await {
        Ok(l) => l,
        Err(_) => return facts_unknown(image),
    };
    match (docker::image_id(&local.docker, image).await, image::manifest(&local, image).await) {
        (Ok(Some(id)), Ok(manifest)) => ImageFacts::from_manifest(&id, &manifest),
        _ => facts_unknown(image),
    }
}

fn facts_unknown(image: &str) -> ImageFacts {
    output::warn(format!(
        "image {image} is not in the local engine: rendered as for an image without TimescaleDB"
    ));
    ImageFacts::default()
}

async fn show(ctx: &Ctx) -> Result<()> {
    let (cfg, engines) = ctx.connect_available().await?;
    let leader = settings::leader(&cfg, &engines).await?;
    let live = settings::live(leader).await?;
    let differences = settings::differences(&cfg, &live);
    let pending = settings::pending(&cfg, &engines).await?;
    let shown = serde_json::json!({ "dynamic_configuration": live, "differs_from_hosts_toml": differences, "pending_restart": pending });
    output::result(&shown, |_| {
        let (patroni, parameters) = settings::flatten(&live);
        let differs: Vec<&str> = differences
            .iter()
            .map(|d| d.key.trim_start_matches("postgresql.parameters."))
            .collect();
        let rows = |m: &BTreeMap<String, String>| {
            m.iter()
                .map(|(k, v)| {
                    vec![
                        k.clone(),
                        v.clone(),
                        if differs.contains(&k.as_str()) {
                            "differs from hosts.toml".into()
                        } else {
                            String::new()
                        },
                    ]
                })
                .collect::<Vec<_>>()
        };
        let mut text = format!(
            "Patroni (DCS):\n{}\nPostgreSQL parameters (DCS):\n{}",
            output::table(&["KEY", "VALUE", ""], rows(&patroni)),
            output::table(&["PARAMETER", "VALUE", ""], rows(&parameters))
        );
        for p in &pending {
            text.push_str(&format!("\npending restart: {} ({})", p.member, p.parameters.join(", ")));
        }
        if !pending.is_empty() {
            text.push_str("\n  `pgctl restart --pending` restarts only those members, replicas first");
        }
        text
    })
}

async fn diff(ctx: &Ctx) -> Result<()> {
    let (cfg, engines) = ctx.connect_available().await?;
    let leader = settings::leader(&cfg, &engines).await?;
    let differences = settings::differences(&cfg, &settings::live(leader).await?);
    output::result(&differences, |d| {
        if d.is_empty() {
            return format!("{} and the cluster agree", cfg.hosts_path.display());
        }
        let rows = d.iter().map(|x| {
            vec![
                x.key.clone(),
                x.hosts_toml.clone().unwrap_or_else(|| "(unset)".into()),
                x.cluster.clone().unwrap_or_else(|| "(unset)".into()),
            ]
        });
        format!(
            "{}\n`pgctl config set KEY=VALUE` changes both; hosts.toml is what `up` bootstraps a new cluster with",
            output::table(&["KEY", "HOSTS.TOML", "CLUSTER (DCS)"], rows)
        )
    })
}

/// Validates `wanted`, shows the diff, asks, applies.
async fn change(ctx: &Ctx, wanted: Vec<(Key, Option<String>)>) -> Result<()> {
    let (cfg, engines) = ctx.connect_all().await?;
    let leader = settings::leader(&cfg, &engines).await?;
    let live = settings::live(leader).await?;
    let known: BTreeMap<String, validate::Setting> =
        serde_json::from_str(crate::member::psql(leader, validate::SETTINGS_SQL).await?.trim())
            .context("reading pg_settings on the leader")?;
    let changes = validate::check(&wanted, &settings::flatten(&live), &known)
        .map_err(|problems| error::usage(format!("the change is refused; nothing was changed:\n  {}", problems.join("\n  "))))?;
    if changes.is_empty() {
        return output::result(&changes, |_| "the cluster already runs with these values: nothing to change".into());
    }
    let rows = changes.iter().map(|c| {
        vec![
            c.key.to_string(),
            c.from.clone().unwrap_or_else(|| "(unset)".into()),
            c.value.clone().unwrap_or_else(|| "(removed)".into()),
            if c.needs_restart { "restart".into() } else { "reload".into() },
        ]
    });
    output::step(format!(
        "change the dynamic configuration of cluster `{}`:\n{}",
        cfg.hosts.cluster.name,
        output::table(&["KEY", "NOW", "NEW", "APPLIES ON"], rows)
    ));
    ctx.confirm("apply these changes to every member and hosts.toml")?;
    let applied = settings::apply(&cfg, leader, &changes).await?;
    output::result(&applied, |a| {
        let restart = if a.need_restart.is_empty() {
            String::new()
        } else {
            format!(
                "\n{} take(s) effect after a restart: members show pending_restart until `pgctl restart --pending`",
                a.need_restart.join(", ")
            )
        };
        format!(
            "{} change(s) applied; {} updated{restart}",
            a.changes.len(),
            cfg.hosts_path.display()
        )
    })
}

/// $EDITOR on the dynamic configuration as TOML; what changed goes through `change`.
async fn edit(ctx: &Ctx) -> Result<()> {
    let (cfg, engines) = ctx.connect_available().await?;
    let leader = settings::leader(&cfg, &engines).await?;
    let (patroni, parameters) = settings::flatten(&settings::live(leader).await?);
    let dir = std::env::temp_dir().join(format!("pgctl-config-edit-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let file = dir.join(format!("{}.toml", cfg.hosts.cluster.name));
    std::fs::write(&file, settings::edit::document(&cfg.hosts.cluster.name, &patroni, &parameters))?;
    let editor = std::env::var("VISUAL")
        .or_else(|_| std::env::var("EDITOR"))
        .unwrap_or_else(|_| "vi".into());
    let status = std::process::Command::new("sh")
        .args(["-c", &format!("{editor} \"$1\""), "sh"])
        .arg(&file)
        .status()
        .with_context(|| format!("running the editor `{editor}`"))?;
    let edited = std::fs::read_to_string(&file);
    let _ = std::fs::remove_dir_all(&dir);
    if !status.success() {
        return Err(error::refused(format!(
            "the editor `{editor}` exited with {status}; nothing was changed"
        )));
    }
    let wanted = settings::edit::changes(&patroni, &parameters, &edited?)
        .map_err(|e| error::usage(format!("the edited file: {e:#}; nothing was changed")))?;
    if wanted.is_empty() {
        return output::result(&wanted.len(), |_| "nothing was changed in the editor".into());
    }
    change(ctx, wanted).await
}
