//! Monitoring (role `monitoring`): Prometheus and Alertmanager on the monitoring hosts,
//! postgres_exporter on every member, and a backup exporter that lists the backups in S3 (with
//! the read-only key) so the backup-age alert fires even with every database host down.
//! Prometheus and Alertmanager come from a monitoring image built on each monitoring host from
//! the cluster's image (images/monitoring/), so the image every host receives stays without
//! them. Rules and targets are rendered from hosts.toml; a changed member list is reloaded
//! (SIGHUP), not recreated. `pgctl status` shows the alerts Alertmanager holds.

pub mod alerts;
mod image;

pub use image::{ensure_images, image_tag};

use crate::config::{Config, HostConfig, Role};
use crate::docker::spec::{ContainerSpec, File};
use crate::docker::Engine;
use crate::layout::{self, *};
use crate::member;
use crate::render::render;
use anyhow::{Context, Result};
use serde::Serialize;

/// Whether the cluster is monitored (a host has role `monitoring`).
pub fn enabled(cfg: &Config) -> bool {
    cfg.hosts.hosts.iter().any(|h| h.has_role(Role::Monitoring))
}

/// Ports a monitoring container listens on (host networking), for `up`'s pre-flight.
pub fn ports(container: &str) -> Vec<u16> {
    match container {
        POSTGRES_EXPORTER => vec![POSTGRES_EXPORTER_PORT],
        BACKUP_EXPORTER => vec![BACKUP_EXPORTER_PORT],
        PROMETHEUS => vec![PROMETHEUS_PORT],
        ALERTMANAGER => vec![ALERTMANAGER_PORT],
        _ => vec![],
    }
}

#[derive(Serialize)]
struct Member<'a> {
    name: &'a str,
    address: &'a str,
}

fn members(cfg: &Config) -> Vec<Member<'_>> {
    cfg.hosts
        .hosts
        .iter()
        .filter(|h| h.has_role(Role::Patroni))
        .map(|h| Member {
            name: &h.name,
            address: &h.address,
        })
        .collect()
}

/// Whether `host` runs a Consul agent Prometheus can scrape on 127.0.0.1.
fn scrapes_consul(cfg: &Config, host: &HostConfig) -> bool {
    cfg.hosts.cluster.dcs == crate::config::Dcs::Consul && (host.has_role(Role::ConsulServer) || host.has_role(Role::ConsulClient))
}

pub fn prometheus_yml(cfg: &Config, host: &HostConfig) -> Result<String> {
    render(
        "monitoring/prometheus.yml.j2",
        minijinja::context! {
            host => host.name,
            cluster => cfg.hosts.cluster.name,
            interval => cfg.hosts.monitoring.scrape_interval,
            alertmanager_port => ALERTMANAGER_PORT,
            rules_file => ALERT_RULES,
            members => members(cfg),
            patroni_port => PATRONI_API_PORT,
            exporter_port => POSTGRES_EXPORTER_PORT,
            backup_exporter_port => BACKUP_EXPORTER_PORT,
            consul_token_file => scrapes_consul(cfg, host).then_some(CONSUL_METRICS_TOKEN),
        },
    )
}

pub fn alert_rules(cfg: &Config) -> Result<String> {
    let m = &cfg.hosts.monitoring;
    render(
        "monitoring/alert-rules.yml.j2",
        minijinja::context! {
            cluster => cfg.hosts.cluster.name,
            member_down_after => m.member_down_after,
            archive_alert_after => m.archive_alert_after,
            backup_max_age_hours => m.backup_max_age_hours,
            backup_max_age_seconds => u64::from(m.backup_max_age_hours) * 3600,
        },
    )
}

fn alertmanager_yml(cfg: &Config, host: &HostConfig) -> Result<String> {
    render(
        "monitoring/alertmanager.yml.j2",
        minijinja::context! {
            host => host.name,
            cluster => cfg.hosts.cluster.name,
            webhook_url => cfg.hosts.monitoring.webhook_url,
        },
    )
}

/// Every monitoring container `host` runs: postgres_exporter on a member; Prometheus,
/// Alertmanager and the backup exporter on a monitoring host. `image_id` is the cluster's.
pub fn containers(cfg: &Config, host: &HostConfig, image_id: &str) -> Result<Vec<ContainerSpec>> {
    if !enabled(cfg) {
        return Ok(vec![]);
    }
    let mut out = Vec::new();
    if host.has_role(Role::Patroni) {
        out.push(postgres_exporter(cfg, image_id)?);
    }
    if host.has_role(Role::Monitoring) {
        if let Some(spec) = backup_exporter(cfg, image_id)? {
            out.push(spec);
        }
        let tag = image_tag(cfg, image_id);
        let mut prometheus_files = vec![
            File::new(PROMETHEUS_CONFIG, prometheus_yml(cfg, host)?, false).live(),
            File::new(ALERT_RULES, alert_rules(cfg)?, false).live(),
        ];
        if scrapes_consul(cfg, host) {
            let token = cfg
                .secrets
                .consul_patroni_token
                .as_ref()
                .map(|t| t.expose().to_string())
                .unwrap_or_default();
            prometheus_files.push(File::new(CONSUL_METRICS_TOKEN, token, false));
        }
        let config_arg = format!("--config.file={PROMETHEUS_CONFIG}");
        let data_arg = format!("--storage.tsdb.path={PROMETHEUS_DATA}");
        let listen = format!("--web.listen-address=:{PROMETHEUS_PORT}");
        out.push(
            ContainerSpec::new(
                PROMETHEUS,
                &["prometheus", &config_arg, &data_arg, &listen, "--storage.tsdb.retention.time=15d"],
                layout::dcs_volume(&cfg.hosts.cluster.name, PROMETHEUS),
                PROMETHEUS_DATA,
                prometheus_files,
                &tag,
                &[],
            )
            .reloaded_by("SIGHUP")
            .running(&tag),
        );
        let config_arg = format!("--config.file={ALERTMANAGER_CONFIG}");
        // Loopback only: Alertmanager has no authentication, and its API silences alerts.
        // Prometheus (same host network) and `pgctl status` (exec) reach it there.
        let listen = format!("--web.listen-address=127.0.0.1:{ALERTMANAGER_PORT}");
        out.push(
            ContainerSpec::stateless(
                ALERTMANAGER,
                // No peers: one Alertmanager per monitoring host, each with its own Prometheus.
                &[
                    "prometheus-alertmanager",
                    &config_arg,
                    &listen,
                    "--storage.path=/tmp/alertmanager",
                    "--cluster.listen-address=",
                ],
                vec![File::new(ALERTMANAGER_CONFIG, alertmanager_yml(cfg, host)?, false).live()],
                &tag,
                &[],
                Some("SIGHUP"),
            )
            .running(&tag),
        );
    }
    Ok(out)
}

/// postgres_exporter as `pgctl_monitor` (pg_monitor only) over loopback, with pgctl's queries.
/// The DSN names the password file; the password is never in the environment or command line.
/// Plain text on loopback only (its driver, lib/pq, has no `prefer`; pg_hba allows scram there).
fn postgres_exporter(cfg: &Config, image_id: &str) -> Result<ContainerSpec> {
    let password = cfg.secrets.monitoring_password.as_ref().with_context(|| {
        format!(
            "{}: monitoring_password is missing (a host has role monitoring)",
            cfg.secrets_path.display()
        )
    })?;
    let pass_file = format!("DATA_SOURCE_PASS_FILE={MONITORING_PASSWORD_FILE}");
    let listen = format!("--web.listen-address=:{POSTGRES_EXPORTER_PORT}");
    let queries = format!("--extend.query-path={EXPORTER_QUERIES}");
    Ok(ContainerSpec::stateless(
        POSTGRES_EXPORTER,
        &[
            "setpriv",
            "--reuid=postgres",
            "--regid=postgres",
            "--init-groups",
            "env",
            "DATA_SOURCE_URI=127.0.0.1:5432/postgres?sslmode=disable",
            "DATA_SOURCE_USER=pgctl_monitor",
            &pass_file,
            "prometheus-postgres-exporter",
            &listen,
            &queries,
        ],
        vec![
            File::new(MONITORING_PASSWORD_FILE, password.expose().to_string(), true),
            File::new(
                EXPORTER_QUERIES,
                render("monitoring/exporter-queries.yml.j2", minijinja::context! {})?,
                true,
            ),
        ],
        image_id,
        &[],
        None,
    ))
}

/// The backup exporter, with the engine's read-only configuration; none without [backup].
fn backup_exporter(cfg: &Config, image_id: &str) -> Result<Option<ContainerSpec>> {
    if cfg.hosts.backup.is_none() {
        return Ok(None);
    }
    let engine = match cfg.hosts.cluster.backup_engine {
        crate::config::BackupEngine::Walg => "walg",
        crate::config::BackupEngine::Pgbackrest => "pgbackrest",
    };
    let port = BACKUP_EXPORTER_PORT.to_string();
    let list = crate::backup::engine(cfg).list_backups(cfg);
    let mut cmd = vec![
        "setpriv",
        "--reuid=postgres",
        "--regid=postgres",
        "--init-groups",
        "python3",
        BACKUP_EXPORTER_SCRIPT,
        &port,
        engine,
        "--",
    ];
    cmd.extend(list.iter().map(String::as_str));
    let mut files = vec![File::new(
        BACKUP_EXPORTER_SCRIPT,
        crate::render::script("backup-exporter.py").into(),
        true,
    )];
    files.extend(crate::backup::files(cfg, crate::backup::Access::ReadOnly)?);
    Ok(Some(
        ContainerSpec::stateless(BACKUP_EXPORTER, &cmd, files, image_id, &[], None).with_extra_hosts(&crate::backup::extra_hosts(cfg)),
    ))
}

/// On the leader: the `pgctl_monitor` role (pg_monitor, secrets.toml's password as a SCRAM
/// verifier) and `pgctl.data_volume_usage()`, which reads what the members' cron writes (a
/// SECURITY DEFINER function: pg_monitor cannot read files). Idempotent.
pub async fn ensure_database_objects(cfg: &Config, leader: &Engine) -> Result<Option<String>> {
    if !enabled(cfg) {
        return Ok(None);
    }
    let verifier = crate::roles::verifier(cfg, &cfg.secrets.monitoring_password, "monitoring_password")?;
    let sql = format!(
        "SET log_statement = 'none';
SET log_min_error_statement = 'panic';
DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'pgctl_monitor') THEN CREATE ROLE pgctl_monitor; END IF;
END $$;
ALTER ROLE pgctl_monitor WITH LOGIN NOSUPERUSER NOREPLICATION PASSWORD '{verifier}';
GRANT pg_monitor TO pgctl_monitor;
CREATE SCHEMA IF NOT EXISTS pgctl AUTHORIZATION postgres;
CREATE OR REPLACE FUNCTION pgctl.data_volume_usage(OUT size_bytes bigint, OUT used_bytes bigint)
  LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog AS
$$ SELECT split_part(u, ' ', 1)::bigint, split_part(u, ' ', 2)::bigint
   FROM (SELECT regexp_replace(btrim(pg_read_file('{usage}', 0, 200, true), E' \\n'), ' +', ' ', 'g') AS u) f
   WHERE u <> '' $$;
REVOKE ALL ON FUNCTION pgctl.data_volume_usage() FROM PUBLIC;
GRANT USAGE ON SCHEMA pgctl TO pgctl_monitor;
GRANT EXECUTE ON FUNCTION pgctl.data_volume_usage() TO pgctl_monitor;
",
        usage = VOLUME_USAGE
    );
    member::psql_file(cfg, leader, "postgres", &sql, "creating the monitoring role").await?;
    Ok(Some("monitoring: role pgctl_monitor and pgctl.data_volume_usage() in place".into()))
}

#[cfg(test)]
mod tests {
    //! Rendered monitoring files (golden) and what they must say.
    use super::*;
    use crate::render::golden;

    fn cfg() -> Config {
        // The four hosts of the spec tests, with the [backup] section of the backup tests.
        let with_backup = crate::backup::tests::config("walg");
        let mut cfg = crate::cluster::spec::tests::config("consul");
        cfg.hosts.backup = with_backup.hosts.backup;
        cfg.secrets.s3 = with_backup.secrets.s3;
        cfg.hosts.hosts[3].roles.push(Role::Monitoring);
        cfg.secrets.monitoring_password = Some(crate::config::Secret("mon-pw".into()));
        cfg
    }

    #[test]
    fn prometheus_scrapes_every_member_and_the_backups() {
        let cfg = cfg();
        let app1 = cfg.host("app1").unwrap();
        let yml = prometheus_yml(&cfg, app1).unwrap();
        golden("prometheus-app1.yml", &yml);
        let v: serde_json::Value = serde_saphyr::from_str(&yml).unwrap();
        let jobs: Vec<&str> = v["scrape_configs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["job_name"].as_str().unwrap())
            .collect();
        assert_eq!(jobs[..3], ["patroni", "postgres", "backups"]);
        assert_eq!(v["scrape_configs"][0]["static_configs"][1]["targets"][0], "10.0.0.2:8008");
        assert_eq!(v["scrape_configs"][1]["static_configs"][2]["labels"]["member"], "pg3");
        let rules = alert_rules(&cfg).unwrap();
        golden("alert-rules.yml", &rules);
        let r: serde_json::Value = serde_saphyr::from_str(&rules).unwrap();
        let names: Vec<&str> = r["groups"][0]["rules"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["alert"].as_str().unwrap())
            .collect();
        for wanted in [
            "PostgresNoLeader",
            "PostgresMemberDown",
            "PostgresReplicaLag",
            "PostgresReplicaLagCritical",
            "PostgresArchivingFailing",
            "PostgresBackupTooOld",
            "PostgresDCSUnreachable",
            "PostgresPendingRestart",
            "PostgresDataVolumeFull",
        ] {
            assert!(names.contains(&wanted), "{wanted} in {names:?}");
        }
        assert!(rules.contains("> 93600"), "26 h from backup_max_age_hours");
        assert!(
            rules.contains("{{ $labels.member }}"),
            "Prometheus' own templating survives rendering"
        );
    }

    #[test]
    fn containers_per_role() {
        let cfg = cfg();
        let names = |host: &str| -> Vec<&'static str> {
            containers(&cfg, cfg.host(host).unwrap(), "sha256:abc")
                .unwrap()
                .iter()
                .map(|s| s.name)
                .collect()
        };
        assert_eq!(names("pg1"), [POSTGRES_EXPORTER]);
        assert_eq!(names("app1"), [BACKUP_EXPORTER, PROMETHEUS, ALERTMANAGER]);
        let app1 = containers(&cfg, cfg.host("app1").unwrap(), "sha256:abc").unwrap();
        let prometheus = &app1[1];
        assert_eq!(prometheus.image.as_deref(), Some(image_tag(&cfg, "sha256:abc").as_str()));
        assert_eq!(prometheus.reload_signal, Some("SIGHUP"));
        // The backup exporter reads S3 with the read-only key.
        let exporter = &app1[0];
        let walg = exporter.files.iter().find(|f| f.path.ends_with("walg.json")).unwrap();
        let readonly = cfg.secrets.s3.readonly_access_key_id.as_ref().unwrap().expose();
        assert!(walg.contents.contains(readonly));
        // The exporter's password is a file, never in its command line.
        let pg1 = containers(&cfg, cfg.host("pg1").unwrap(), "sha256:abc").unwrap();
        assert!(pg1[0].cmd.iter().all(|a| !a.contains("mon-pw")), "{:?}", pg1[0].cmd);
        let mut without = cfg.clone();
        without.hosts.hosts[3].roles.retain(|r| *r != Role::Monitoring);
        assert!(containers(&without, without.host("pg1").unwrap(), "x").unwrap().is_empty());
    }
}
