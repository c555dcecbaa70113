//! What should run on each host: containers (DCS member, Patroni) with their configuration
//! files, volumes and a hash of everything that defines them. Pure: rendering only, so it is
//! covered by golden tests; `up` compares these hashes with the running containers' labels.

use crate::config::{Config, HostConfig, Role};
use crate::dcs;
use crate::docker::spec::{ContainerSpec, File};
use crate::layout::{DATA_MOUNT, PATRONI, PATRONI_CONFIG, PGPASS};
use crate::render::render;
use anyhow::Result;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

/// What the cluster's image holds that changes the configuration, from its manifest.
#[derive(Debug, Clone, Default)]
pub struct ImageFacts {
    pub id: String,
    /// The image has TimescaleDB: it must be preloaded.
    pub timescaledb: bool,
    /// The image's bin_dir for Patroni (images/postgres/pg_isready-wait.sh); images built
    /// before it have none.
    pub patroni_bin_dir: Option<String>,
}

impl ImageFacts {
    pub fn from_manifest(id: &str, manifest: &HashMap<String, String>) -> ImageFacts {
        ImageFacts {
            id: id.to_string(),
            timescaledb: manifest.get("timescaledb").is_some_and(|v| !v.is_empty()),
            patroni_bin_dir: manifest.get("patroni-bin-dir").filter(|v| !v.is_empty()).cloned(),
        }
    }
}

/// Patroni's PostgreSQL parameters: pgctl's defaults, then hosts.toml's overrides.
pub fn postgresql_parameters(cfg: &Config) -> BTreeMap<String, toml::Value> {
    let mut p: BTreeMap<String, toml::Value> = [
        ("wal_level", toml::Value::from("replica")),
        ("hot_standby", toml::Value::from("on")),
        ("wal_log_hints", toml::Value::from("on")),
        ("max_wal_senders", toml::Value::from(10)),
        ("max_replication_slots", toml::Value::from(10)),
        ("max_connections", toml::Value::from(200)),
        ("wal_keep_size", toml::Value::from("256MB")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    for (k, v) in &cfg.hosts.cluster.postgresql_parameters {
        p.insert(k.clone(), v.clone());
    }
    p
}

/// Parameters in each member's own patroni.yml (they win over the DCS's): what the image
/// needs to start at all. TimescaleDB must be preloaded, so it joins whatever
/// shared_preload_libraries hosts.toml sets; its telemetry is off.
pub fn local_parameters(cfg: &Config, image: &ImageFacts) -> BTreeMap<String, toml::Value> {
    let mut p = BTreeMap::new();
    if image.timescaledb {
        let configured = cfg
            .hosts
            .cluster
            .postgresql_parameters
            .get("shared_preload_libraries")
            .and_then(|v| v.as_str())
            .unwrap_or_default();
        let mut libraries: Vec<&str> = vec!["timescaledb"];
        libraries.extend(
            configured
                .split(',')
                .map(str::trim)
                .filter(|l| !l.is_empty() && *l != "timescaledb"),
        );
        p.insert("shared_preload_libraries".into(), toml::Value::from(libraries.join(",")));
        p.insert("timescaledb.telemetry_level".into(), toml::Value::from("off"));
    }
    p.extend(crate::tls::parameters(cfg));
    p
}

#[derive(Serialize)]
struct Member<'a> {
    name: &'a str,
    address: &'a str,
}

fn secrets_ctx(cfg: &Config) -> BTreeMap<&'static str, String> {
    let s = &cfg.secrets;
    let get = |v: &Option<crate::config::Secret>| v.as_ref().map(|s| s.expose().to_string()).unwrap_or_default();
    BTreeMap::from([
        ("superuser_password", get(&s.superuser_password)),
        ("replication_password", get(&s.replication_password)),
        ("rewind_password", get(&s.rewind_password)),
        ("rest_api_password", get(&s.rest_api_password)),
        ("consul_patroni_token", get(&s.consul_patroni_token)),
    ])
}

pub fn patroni_yml(cfg: &Config, host: &HostConfig, image: &ImageFacts) -> Result<String> {
    let c = &cfg.hosts.cluster;
    let standby_archive = crate::backup::elsewhere::standby_archive(cfg)?;
    // Debian's directory of this major's programs, or the image's own for Patroni (it is this
    // major's when it ends so).
    let debian_bin_dir = format!("/usr/lib/postgresql/{}/bin", c.postgres_major);
    let bin_dir = image
        .patroni_bin_dir
        .as_deref()
        .filter(|d| d.ends_with(&format!("/{}/bin", c.postgres_major)))
        .unwrap_or(&debian_bin_dir);
    render(
        "patroni.yml.j2",
        minijinja::context! {
            cluster => minijinja::context! { name => c.name, postgres_major => c.postgres_major },
            member => Member { name: &host.name, address: &host.address },
            bin_dir => bin_dir,
            dcs => dcs::store(cfg).container(),
            etcd_hosts => dcs::addresses_with(cfg, Role::Etcd),
            timing => c.patroni,
            parameters => postgresql_parameters(cfg),
            local_parameters => local_parameters(cfg, image),
            pg_hba => crate::tls::pg_hba(cfg),
            secrets => secrets_ctx(cfg),
            archive => crate::backup::archive_parameters(cfg),
            restore_command => restore_command(cfg, standby_archive.as_ref())?,
            replica_script => cfg.hosts.backup.is_some().then_some(crate::layout::REPLICA_SCRIPT),
            standby => cfg.hosts.standby,
            standby_restore_command => standby_archive.as_ref().map(crate::backup::elsewhere::standby_restore_command).transpose()?,
            standby_fetch_request => crate::backup::elsewhere::FETCH_REQUEST,
        },
    )
}

/// The members' restore_command: the cluster's own archive, then (a disaster-recovery standby)
/// the primary's, where everything before the promotion lies.
fn restore_command(cfg: &Config, standby_archive: Option<&Config>) -> Result<Option<String>> {
    let own = crate::backup::restore_command(cfg);
    Ok(match (own, standby_archive) {
        (Some(own), Some(primary)) => Some(format!("{own} || {}", crate::backup::elsewhere::standby_restore_command(primary)?)),
        (own, _) => own,
    })
}

/// patroni.yml, hashed without its `bootstrap` section: Patroni reads that only when it
/// initializes the cluster, so a change there (a migration's `standby_cluster`, new initial
/// parameters) never needs the running members recreated.
fn patroni_file(yml: String) -> File {
    let mut in_bootstrap = false;
    let rest: Vec<&str> = yml
        .lines()
        .filter(|line| {
            if !line.starts_with([' ', '#']) && !line.is_empty() {
                in_bootstrap = line.starts_with("bootstrap:");
            }
            !in_bootstrap
        })
        .collect();
    File::new(PATRONI_CONFIG, yml.clone(), true).hashing_only(rest.join("\n"))
}

/// Files `pgctl config render --file` shows.
pub const RENDERABLE: [&str; 3] = ["patroni.yml", "etcd.yml", "consul.json"];

/// The file `name` as `up` uploads it to `host`; `None` for a name that is not a file pgctl
/// renders (the error names the allowed ones).
pub fn render_file(cfg: &Config, host: &HostConfig, image: &ImageFacts, name: &str) -> Result<Option<String>> {
    let store = dcs::store(cfg);
    Ok(match name {
        "patroni.yml" => Some(patroni_yml(cfg, host, image)?),
        n if n == store.config_name() => Some(
            store
                .config_file(cfg, host)?
                .ok_or_else(|| crate::error::usage(format!("host {} runs no {}", host.name, store.container())))?,
        ),
        "etcd.yml" | "consul.json" => {
            return Err(crate::error::usage(format!(
                "--file {name}: this cluster's DCS is {} (dcs in hosts.toml)",
                store.container()
            )))
        }
        _ => None,
    })
}

/// Every container `host` should run, in start order (DCS before Patroni); Patroni mounts
/// `data_volume` (the host's current generation, see `volumes`).
pub fn containers(cfg: &Config, host: &HostConfig, image: &ImageFacts, data_volume: &str) -> Result<Vec<ContainerSpec>> {
    let image_id = image.id.as_str();
    let mut out: Vec<ContainerSpec> = dcs::store(cfg).container_spec(cfg, host, image_id)?.into_iter().collect();
    if host.has_role(Role::Patroni) {
        let superuser = cfg
            .secrets
            .superuser_password
            .as_ref()
            .map(|s| s.expose().to_string())
            .unwrap_or_default();
        let files = [
            vec![
                patroni_file(patroni_yml(cfg, host, image)?),
                // For pgctl's own psql calls through exec (scram-sha-256 everywhere, no trust).
                File::new(PGPASS, format!("*:*:*:postgres:{}\n", pgpass_escape(&superuser)), true),
            ],
            // The backup engine's configuration: the cluster archives with the read-write key.
            crate::backup::files(cfg, crate::backup::Access::ReadWrite)?,
            vec![crontab(cfg)?],
            crate::backup::replica_script(cfg).into_iter().collect(),
            // A disaster-recovery standby: the primary's archive, read-only.
            crate::backup::elsewhere::standby_files(cfg)?,
            // With tls: the member's server certificate, its key and the CA.
            crate::tls::files(cfg, host)?,
        ]
        .concat();
        out.push(ContainerSpec::new(
            PATRONI,
            &["patroni", PATRONI_CONFIG],
            data_volume.to_string(),
            DATA_MOUNT,
            files,
            image_id,
            // Only Patroni's container talks to S3 (archive_command, backups).
            &crate::backup::extra_hosts(cfg),
        ));
    }
    out.extend(crate::proxy::containers(cfg, host, image_id)?);
    out.extend(crate::monitor::containers(cfg, host, image_id)?);
    Ok(out)
}

/// Root's crontab in every Patroni container: the scheduled full backup (with a [backup]
/// section) and, every minute, the data volume's size and use for monitoring.
fn crontab(cfg: &Config) -> Result<File> {
    let (schedule, job) = crate::backup::scheduled_backup(cfg).unzip();
    let contents = render(
        "crontab.j2",
        minijinja::context! { schedule, job, usage_file => crate::layout::VOLUME_USAGE, data => DATA_MOUNT },
    )?;
    Ok(File::new(crate::layout::CRONTAB, contents, false))
}

pub fn pgpass_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace(':', "\\:")
}

#[cfg(test)]
pub(crate) mod tests {
    //! Golden files of every rendered configuration, for both DCS choices. Regenerate with
    //! `UPDATE_GOLDEN=1 cargo test -p pgctl golden` and review the diff.
    use super::*;
    use crate::layout::{CONSUL, ETCD};
    use crate::render::golden;

    fn facts(id: &str) -> ImageFacts {
        ImageFacts {
            id: id.into(),
            timescaledb: false,
            patroni_bin_dir: None,
        }
    }

    fn dcs_file(cfg: &Config, host: &str) -> String {
        crate::dcs::store(cfg).config_file(cfg, cfg.host(host).unwrap()).unwrap().unwrap()
    }

    const HOSTS: &str = r#"
[cluster]
name = "main"
postgres_major = 16
image = "pgctl/postgres:16"
dcs = "DCS"
[cluster.patroni]
ttl = 20
loop_wait = 5
retry_timeout = 5
synchronous_mode = true
synchronous_mode_strict = true
[cluster.postgresql_parameters]
shared_buffers = "1GB"
max_connections = 300
[[host]]
name = "pg1"
endpoint = "unix:///var/run/docker.sock"
address = "10.0.0.1"
roles = ["ROLE", "patroni"]
[[host]]
name = "pg2"
endpoint = "ssh://admin@pg2"
address = "10.0.0.2"
roles = ["ROLE", "patroni"]
[[host]]
name = "pg3"
endpoint = "ssh://admin@pg3"
address = "10.0.0.3"
roles = ["ROLE", "patroni"]
[[host]]
name = "app1"
endpoint = "ssh://admin@app1"
address = "10.0.0.9"
roles = ["CLIENT"]
"#;

    pub(crate) fn config(dcs: &str) -> Config {
        let (role, client) = if dcs == "consul" {
            ("consul-server", "consul-client")
        } else {
            ("etcd", "patroni")
        };
        let text = HOSTS.replace("DCS", dcs).replace("ROLE", role).replace("CLIENT", client);
        let hosts: crate::config::HostsFile = toml::from_str(&text).unwrap();
        let secret = |s: &str| Some(crate::config::Secret(s.into()));
        let secrets = crate::config::SecretsFile {
            superuser_password: secret("super:secret"),
            replication_password: secret("repl-secret"),
            rewind_password: secret("rewind-secret"),
            rest_api_password: secret("api \"quoted\" secret"),
            consul_gossip_key: secret("VGhpcyBpcyAzMiBieXRlcyBsb25nIGtleSBmb3IgdGU="),
            consul_management_token: secret("0f1e2d3c-4b5a-4697-8877-665544332211"),
            consul_agent_token: secret("1a2b3c4d-5e6f-4a1b-9c2d-3e4f5a6b7c8d"),
            consul_patroni_token: secret("9e8d7c6b-5a49-4382-a716-151413121110"),
            ..Default::default()
        };
        Config {
            hosts_path: "hosts.toml".into(),
            secrets_path: "secrets.toml".into(),
            hosts,
            secrets,
            warnings: vec![],
        }
    }

    #[test]
    fn golden_configs() {
        for dcs in ["etcd", "consul"] {
            let cfg = config(dcs);
            let pg1 = cfg.host("pg1").unwrap();
            let patroni = patroni_yml(&cfg, pg1, &ImageFacts::default()).unwrap();
            golden(&format!("patroni-{dcs}.yml"), &patroni);
            // It is YAML, and secrets with quotes or colons survive quoting.
            let v: serde_json::Value = serde_saphyr::from_str(&patroni).unwrap();
            assert_eq!(v["restapi"]["authentication"]["password"], "api \"quoted\" secret");
            assert_eq!(v["postgresql"]["authentication"]["superuser"]["password"], "super:secret");
            assert_eq!(v["bootstrap"]["dcs"]["synchronous_mode_strict"], true);
            assert_eq!(v["bootstrap"]["dcs"]["postgresql"]["parameters"]["shared_buffers"], "1GB");
            assert_eq!(v["bootstrap"]["dcs"]["postgresql"]["parameters"]["max_connections"], 300);
            let hba = v["postgresql"]["pg_hba"].as_array().unwrap();
            // scram everywhere; peer only for the OS user postgres over the local socket.
            assert!(
                hba.iter()
                    .all(|l| l.as_str().unwrap().ends_with("scram-sha-256") || l == "local all postgres peer"),
                "scram only: {hba:?}"
            );
        }
        let etcd = config("etcd");
        golden("etcd-pg1.yml", &dcs_file(&etcd, "pg1"));
        let consul = config("consul");
        let server = dcs_file(&consul, "pg1");
        let client = dcs_file(&consul, "app1");
        golden("consul-server-pg1.json", &server);
        golden("consul-client-app1.json", &client);
        let server: serde_json::Value = serde_json::from_str(&server).unwrap();
        let client: serde_json::Value = serde_json::from_str(&client).unwrap();
        assert_eq!(server["server"], true);
        assert_eq!(server["bootstrap_expect"], 3);
        assert_eq!(client["server"], false);
        assert_eq!(client["retry_join"], serde_json::json!(["10.0.0.1", "10.0.0.2", "10.0.0.3"]));
    }

    #[test]
    fn containers_per_role_and_stable_hash() {
        let cfg = config("etcd");
        let specs = containers(&cfg, cfg.host("pg1").unwrap(), &facts("sha256:abc"), "main-pgdata").unwrap();
        assert_eq!(specs.iter().map(|s| s.name).collect::<Vec<_>>(), vec![ETCD, PATRONI]);
        let again = containers(&cfg, cfg.host("pg1").unwrap(), &facts("sha256:abc"), "main-pgdata").unwrap();
        assert_eq!(specs[1].hash, again[1].hash, "same input, same hash");
        let other_image = containers(&cfg, cfg.host("pg1").unwrap(), &facts("sha256:def"), "main-pgdata").unwrap();
        assert_ne!(specs[1].hash, other_image[1].hash, "a new image recreates");
        let restored = containers(&cfg, cfg.host("pg1").unwrap(), &facts("sha256:abc"), "main-pgdata-g2").unwrap();
        assert_eq!(restored[1].volume.as_ref().unwrap().volume, "main-pgdata-g2");
        assert_ne!(specs[1].hash, restored[1].hash, "a new data volume generation recreates");
        // A standby source lives under `bootstrap`: rendered, yet running members stay.
        let mut standby = cfg.clone();
        standby.hosts.standby = Some(crate::config::StandbyConfig {
            host: Some("10.0.0.9".into()),
            port: 5433,
            primary_slot_name: Some("pgctl_migration".into()),
            archive: None,
            archive_engine: None,
            archive_stanza: None,
        });
        let as_standby = containers(&standby, standby.host("pg1").unwrap(), &facts("sha256:abc"), "main-pgdata").unwrap();
        let yml = &as_standby[1].files[0].contents;
        assert!(
            yml.contains("standby_cluster:\n      host: \"10.0.0.9\"\n      port: 5433\n      primary_slot_name: \"pgctl_migration\""),
            "{yml}"
        );
        assert_eq!(specs[1].hash, as_standby[1].hash, "bootstrap-only changes keep running members");
        let consul = config("consul");
        let app = containers(&consul, consul.host("app1").unwrap(), &facts("sha256:abc"), "main-pgdata").unwrap();
        assert_eq!(
            app.iter().map(|s| s.name).collect::<Vec<_>>(),
            vec![CONSUL],
            "a client host runs only the agent"
        );
        assert!(
            specs[1].files.iter().all(|f| f.postgres_owned || f.path == crate::layout::CRONTAB),
            "Patroni's files belong to postgres (root's crontab aside)"
        );
        let crontab = specs[1].files.iter().find(|f| f.path == crate::layout::CRONTAB).unwrap();
        assert!(
            crontab.contents.contains("df -B1 --output=size,used /var/lib/postgresql/data")
                && !crontab.contents.contains("scheduled-backup"),
            "without [backup]: only the volume probe\n{}",
            crontab.contents
        );
    }

    #[test]
    fn patroni_archives_with_the_backup_engine() {
        let pgbackrest = crate::backup::tests::config("pgbackrest");
        let walg = crate::backup::tests::config("walg");
        // Patroni archives with the engine (leader only: archive_mode=on) and restores with it.
        let yml = crate::cluster::spec::patroni_yml(&pgbackrest, pgbackrest.host("pg1").unwrap(), &ImageFacts::default()).unwrap();
        golden("patroni-pgbackrest.yml", &yml);
        let v: serde_json::Value = serde_saphyr::from_str(&yml).unwrap();
        assert_eq!(v["postgresql"]["parameters"]["archive_mode"], "on");
        assert_eq!(
            v["postgresql"]["parameters"]["archive_command"],
            "pgbackrest --config=/etc/pgctl/pgbackrest.conf --stanza=main archive-push %p"
        );
        assert!(v["postgresql"]["recovery_conf"]["restore_command"]
            .as_str()
            .unwrap()
            .contains("archive-get %f \"%p\""));
        let walg_yml = crate::cluster::spec::patroni_yml(&walg, walg.host("pg1").unwrap(), &ImageFacts::default()).unwrap();
        assert!(walg_yml.contains("wal-g --config /etc/pgctl/walg.json wal-push %p"));
    }

    #[test]
    fn disaster_recovery_standby_reads_the_primarys_archive() {
        for engine in ["walg", "pgbackrest"] {
            let mut cfg = crate::backup::tests::config(engine);
            cfg.hosts.standby = Some(crate::config::StandbyConfig {
                host: Some("10.1.0.11".into()),
                port: 5432,
                primary_slot_name: None,
                archive: Some("s3://backups/primary-region/main".into()),
                archive_engine: None,
                archive_stanza: Some("main".into()),
            });
            let pg1 = cfg.host("pg1").unwrap();
            let yml = patroni_yml(&cfg, pg1, &ImageFacts::default()).unwrap();
            let v: serde_json::Value = serde_saphyr::from_str(&yml).unwrap();
            let sc = &v["bootstrap"]["dcs"]["standby_cluster"];
            let restore = sc["restore_command"].as_str().unwrap();
            assert!(
                restore.contains("/etc/pgctl/primary-"),
                "{engine}: reads the primary's archive: {restore}"
            );
            assert_eq!(
                sc["create_replica_methods"],
                serde_json::json!(["pgctl_primary_backup", "basebackup"])
            );
            assert!(v["postgresql"]["pgctl_primary_backup"]["command"]
                .as_str()
                .unwrap()
                .ends_with(crate::backup::elsewhere::FETCH_REQUEST));
            // The cluster's own archiving stays on its own prefix with the read-write key.
            let own = v["postgresql"]["parameters"]["archive_command"].as_str().unwrap();
            assert!(!own.contains("primary-"), "{own}");
            let files = containers(&cfg, pg1, &ImageFacts::default(), "main-pgdata")
                .unwrap()
                .pop()
                .unwrap()
                .files;
            let primary = files
                .iter()
                .find(|f| f.path.contains("/primary-") && f.path != crate::backup::elsewhere::FETCH_REQUEST)
                .unwrap();
            assert!(primary.contents.contains("primary-region/main"), "{engine}: {}", primary.contents);
            let own_conf = files
                .iter()
                .find(|f| !f.path.contains("primary") && f.path.ends_with(if engine == "walg" { "walg.json" } else { ".conf" }))
                .unwrap();
            assert!(!own_conf.contents.contains("primary-region"));
            let readonly = cfg.secrets.s3.readonly_access_key_id.as_ref().unwrap().expose();
            assert!(
                primary.contents.contains(readonly),
                "{engine}: the primary's archive is read with the read-only key"
            );
            let fetch = files.iter().find(|f| f.path == crate::backup::elsewhere::FETCH_REQUEST).unwrap();
            assert!(fetch.contents.contains("/etc/pgctl/primary-"), "{}", fetch.contents);
        }
    }

    #[test]
    fn timescaledb_is_preloaded_when_the_image_has_it() {
        let mut cfg = config("etcd");
        cfg.hosts
            .cluster
            .postgresql_parameters
            .insert("shared_preload_libraries".into(), toml::Value::from("pg_stat_statements"));
        let pg1 = cfg.host("pg1").unwrap();
        let with: HashMap<String, String> = [("timescaledb".to_string(), "2.17.2".to_string())].into();
        let yml = patroni_yml(&cfg, pg1, &ImageFacts::from_manifest("sha256:abc", &with)).unwrap();
        golden("patroni-timescaledb.yml", &yml);
        let v: serde_json::Value = serde_saphyr::from_str(&yml).unwrap();
        assert_eq!(
            v["postgresql"]["parameters"]["shared_preload_libraries"], "timescaledb,pg_stat_statements",
            "TimescaleDB first, the configured libraries kept"
        );
        assert_eq!(v["postgresql"]["parameters"]["timescaledb.telemetry_level"], "off");
        // Without TimescaleDB in the image nothing is preloaded locally.
        let without = ImageFacts::from_manifest("sha256:abc", &[("timescaledb".to_string(), String::new())].into());
        let yml = patroni_yml(&cfg, pg1, &without).unwrap();
        let v: serde_json::Value = serde_saphyr::from_str(&yml).unwrap();
        assert!(v["postgresql"]["parameters"]["shared_preload_libraries"].is_null(), "{yml}");
        assert!(!yml.contains("timescaledb"), "{yml}");
    }

    #[test]
    fn patroni_runs_the_images_own_bin_dir_when_it_is_this_majors() {
        let cfg = config("etcd");
        let pg1 = cfg.host("pg1").unwrap();
        let major = cfg.hosts.cluster.postgres_major;
        let bin_dir = |dir: &str| {
            let image = ImageFacts::from_manifest("sha256:abc", &[("patroni-bin-dir".to_string(), dir.to_string())].into());
            let v: serde_json::Value = serde_saphyr::from_str(&patroni_yml(&cfg, pg1, &image).unwrap()).unwrap();
            v["postgresql"]["bin_dir"].as_str().unwrap().to_string()
        };
        let own = format!("/usr/lib/pgctl/postgresql/{major}/bin");
        assert_eq!(bin_dir(&own), own);
        let debian = format!("/usr/lib/postgresql/{major}/bin");
        assert_eq!(bin_dir(""), debian, "an image built before it has none");
        assert_eq!(bin_dir("/usr/lib/pgctl/postgresql/13/bin"), debian, "another major's is not used");
    }
}
