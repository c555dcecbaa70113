//! Templates (minijinja) compiled into the binary, so `pgctl` is one self-contained file.
//! Sources live in `compose-templates/` and `images/` at the top of the repository.

use anyhow::{Context, Result};
use minijinja::Environment;
use serde::Serialize;

/// Every template pgctl renders, by name.
const TEMPLATES: &[(&str, &str)] = &[
    ("init/hosts.toml.j2", include_str!("../../compose-templates/init/hosts.toml.j2")),
    ("init/secrets.toml.j2", include_str!("../../compose-templates/init/secrets.toml.j2")),
    ("patroni.yml.j2", include_str!("../../compose-templates/patroni.yml.j2")),
    ("etcd.yml.j2", include_str!("../../compose-templates/etcd.yml.j2")),
    ("consul.json.j2", include_str!("../../compose-templates/consul.json.j2")),
    ("pgbackrest.conf.j2", include_str!("../../compose-templates/pgbackrest.conf.j2")),
    ("walg.json.j2", include_str!("../../compose-templates/walg.json.j2")),
    ("crontab.j2", include_str!("../../compose-templates/crontab.j2")),
    (
        "docker-compose.yml.j2",
        include_str!("../../compose-templates/docker-compose.yml.j2"),
    ),
    ("haproxy.cfg.j2", include_str!("../../compose-templates/haproxy.cfg.j2")),
    ("pgbouncer.ini.j2", include_str!("../../compose-templates/pgbouncer.ini.j2")),
    ("vip-manager.yml.j2", include_str!("../../compose-templates/vip-manager.yml.j2")),
    (
        "monitoring/prometheus.yml.j2",
        include_str!("../../compose-templates/monitoring/prometheus.yml.j2"),
    ),
    (
        "monitoring/alert-rules.yml.j2",
        include_str!("../../compose-templates/monitoring/alert-rules.yml.j2"),
    ),
    (
        "monitoring/alertmanager.yml.j2",
        include_str!("../../compose-templates/monitoring/alertmanager.yml.j2"),
    ),
    (
        "monitoring/exporter-queries.yml.j2",
        include_str!("../../compose-templates/monitoring/exporter-queries.yml.j2"),
    ),
    ("monitoring/Dockerfile.j2", include_str!("../../images/monitoring/Dockerfile.j2")),
    ("postgres/Dockerfile.j2", include_str!("../../images/postgres/Dockerfile.j2")),
    (
        "postgres/Dockerfile.labels.j2",
        include_str!("../../images/postgres/Dockerfile.labels.j2"),
    ),
    ("lab-host/Dockerfile.j2", include_str!("../../images/lab-host/Dockerfile.j2")),
    ("upgrade/Dockerfile.j2", include_str!("../../images/upgrade/Dockerfile.j2")),
    ("lab-s3/Dockerfile.j2", include_str!("../../images/lab-s3/Dockerfile.j2")),
    ("lab-s3/garage.toml.j2", include_str!("../../images/lab-s3/garage.toml.j2")),
    ("lab-s3/nginx.conf.j2", include_str!("../../images/lab-s3/nginx.conf.j2")),
];

/// Scripts pgctl runs in containers (uploaded or passed to an interpreter, never baked into
/// Rust strings), by name.
const SCRIPTS: &[(&str, &str)] = &[
    ("recover.sh", include_str!("../../compose-templates/scripts/recover.sh")),
    ("upgrade.sh", include_str!("../../compose-templates/scripts/upgrade.sh")),
    ("patroni-api.py", include_str!("../../compose-templates/scripts/patroni-api.py")),
    ("patroni-wait.py", include_str!("../../compose-templates/scripts/patroni-wait.py")),
    ("port-check.py", include_str!("../../compose-templates/scripts/port-check.py")),
    (
        "wake-for-standby.py",
        include_str!("../../compose-templates/scripts/wake-for-standby.py"),
    ),
    ("consul-acl.py", include_str!("../../compose-templates/scripts/consul-acl.py")),
    (
        "backup-exporter.py",
        include_str!("../../compose-templates/scripts/backup-exporter.py"),
    ),
    ("vip-follow.py", include_str!("../../compose-templates/scripts/vip-follow.py")),
    (
        "replica-from-backup.sh",
        include_str!("../../compose-templates/scripts/replica-from-backup.sh"),
    ),
];

/// The script `name` from compose-templates/scripts.
pub fn script(name: &str) -> &'static str {
    SCRIPTS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, s)| *s)
        .unwrap_or_else(|| panic!("no embedded script {name}"))
}

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    // Rendering TOML/YAML/shell: an undefined variable is a bug, not an empty string.
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    env.set_keep_trailing_newline(true);
    // No implicit escaping by file extension (minijinja would JSON-quote every value in .yml
    // and .json templates): templates quote explicitly with `tojson` where a value needs it.
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    for (name, src) in TEMPLATES {
        env.add_template(name, src).expect("embedded templates are valid");
    }
    env
}

/// Renders the named template with `ctx`.
pub fn render(name: &str, ctx: impl Serialize) -> Result<String> {
    let env = environment();
    let tmpl = env.get_template(name).with_context(|| format!("no template {name}"))?;
    tmpl.render(ctx).with_context(|| format!("rendering template {name}"))
}

/// Compares `actual` with the golden file `name` (cli/src/cluster/golden); with UPDATE_GOLDEN
/// set, rewrites it first (then review the diff).
#[cfg(test)]
pub fn golden(name: &str, actual: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/cluster/golden")
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
    }
    let expected =
        std::fs::read_to_string(&path).unwrap_or_else(|_| panic!("missing golden file {}; run with UPDATE_GOLDEN=1", path.display()));
    assert_eq!(actual, expected, "{name} differs from its golden file");
}

#[cfg(test)]
mod tests {
    #[test]
    fn all_templates_parse() {
        // `environment()` panics on a template syntax error.
        let env = super::environment();
        assert_eq!(env.templates().count(), super::TEMPLATES.len());
    }
}
