//! Every name and path pgctl puts on a host, in one place: containers, volumes, labels,
//! in-container paths and ports. Other modules ask here instead of spelling them again, so a
//! rename is one edit and `status`, `down` and `remove` always find what `up` made.

// ---- containers (also their role label) ----
pub const PATRONI: &str = "patroni";
pub const ETCD: &str = "etcd";
pub const CONSUL: &str = "consul";
pub const HAPROXY: &str = "haproxy";
pub const PGBOUNCER: &str = "pgbouncer";
pub const VIP_MANAGER: &str = "vip-manager";
/// The containers through which applications reach the cluster (no state of their own).
pub const PROXIES: [&str; 3] = [HAPROXY, PGBOUNCER, VIP_MANAGER];
pub const POSTGRES_EXPORTER: &str = "postgres-exporter";
pub const BACKUP_EXPORTER: &str = "backup-exporter";
pub const PROMETHEUS: &str = "prometheus";
pub const ALERTMANAGER: &str = "alertmanager";
/// Monitoring: the exporter on each member, the rest on `monitoring` hosts.
pub const MONITORING: [&str; 4] = [POSTGRES_EXPORTER, BACKUP_EXPORTER, PROMETHEUS, ALERTMANAGER];

/// The DCS member's container, as opposed to Patroni, the proxies and monitoring.
pub fn is_dcs(container: &str) -> bool {
    container == ETCD || container == CONSUL
}

// ---- labels ----
pub const LABEL_CLUSTER: &str = "io.pgctl.cluster";
pub const LABEL_ROLE: &str = "io.pgctl.role";
pub const LABEL_CONFIG_HASH: &str = "io.pgctl.config-hash";
/// On a restored data volume: the member that led before the restore.
pub const LABEL_PREVIOUS_LEADER: &str = "io.pgctl.previous-leader";
/// On containers and volumes that exist only for one operation (verification, port checks).
pub const LABEL_THROWAWAY: &str = "io.pgctl.throwaway";
/// On everything the lab makes.
pub const LABEL_LAB: &str = "io.pgctl.lab";
/// Images built by pgctl; the manifest's keys follow under `io.pgctl.manifest.`.
pub const LABEL_IMAGE: &str = "io.pgctl.image";
pub const LABEL_MANIFEST_PREFIX: &str = "io.pgctl.manifest.";

// ---- volumes ----
/// The data volume of generation `generation` (1 is the first; a restore makes the next).
pub fn data_volume(scope: &str, generation: u32) -> String {
    if generation <= 1 {
        format!("{scope}-pgdata")
    } else {
        format!("{scope}-pgdata-g{generation}")
    }
}

/// The generation a data volume name stands for, if it is one of `scope`'s.
pub fn data_volume_generation(scope: &str, name: &str) -> Option<u32> {
    let rest = name.strip_prefix(scope)?.strip_prefix("-pgdata")?;
    if rest.is_empty() {
        return Some(1);
    }
    rest.strip_prefix("-g")?.parse().ok().filter(|g| *g > 1)
}

pub fn dcs_volume(scope: &str, container: &str) -> String {
    format!("{scope}-{container}")
}

/// The throwaway volume `verify-backup` recovers into.
pub fn verify_volume(scope: &str) -> String {
    format!("pgctl-verify-{scope}")
}

// ---- paths inside the database image ----
pub const PATRONI_CONFIG: &str = "/etc/pgctl/patroni.yml";
pub const ETCD_CONFIG: &str = "/etc/pgctl/etcd.yml";
pub const CONSUL_CONFIG: &str = "/etc/pgctl/consul.json";
/// On Consul servers only: the management token pgctl's own `consul` calls use, and the ACL
/// setup `up` applies (scope and token secret ids), both root-only.
pub const CONSUL_MANAGEMENT_TOKEN: &str = "/etc/pgctl/consul-management.token";
pub const CONSUL_ACL: &str = "/etc/pgctl/consul-acl.json";
pub const PGPASS: &str = "/etc/pgctl/pgpass";
pub const PGBACKREST_CONFIG: &str = "/etc/pgctl/pgbackrest.conf";
pub const WALG_CONFIG: &str = "/etc/pgctl/walg.json";
pub const S3_CA: &str = "/etc/pgctl/s3-ca.pem";
pub const CRONTAB: &str = "/etc/pgctl/crontab";
pub const HAPROXY_CONFIG: &str = "/etc/pgctl/haproxy.cfg";
pub const PGBOUNCER_CONFIG: &str = "/etc/pgctl/pgbouncer.ini";
/// PgBouncer's own login only (the others are looked up in the database).
pub const PGBOUNCER_AUTH_FILE: &str = "/etc/pgctl/pgbouncer-auth.txt";
pub const PGBOUNCER_TLS: [&str; 3] = [
    "/etc/pgctl/pgbouncer-tls/server.crt",
    "/etc/pgctl/pgbouncer-tls/server.key",
    "/etc/pgctl/pgbouncer-tls/ca.crt",
];
pub const VIP_MANAGER_CONFIG: &str = "/etc/pgctl/vip-manager.yml";
/// The virtual-IP follower for Consul clusters and its settings.
pub const VIP_FOLLOW_SCRIPT: &str = "/etc/pgctl/vip-follow.py";
pub const VIP_FOLLOW_CONFIG: &str = "/etc/pgctl/vip-follow.json";
pub const PROMETHEUS_CONFIG: &str = "/etc/pgctl/prometheus.yml";
pub const ALERT_RULES: &str = "/etc/pgctl/alert-rules.yml";
pub const ALERTMANAGER_CONFIG: &str = "/etc/pgctl/alertmanager.yml";
pub const EXPORTER_QUERIES: &str = "/etc/pgctl/exporter-queries.yml";
pub const MONITORING_PASSWORD_FILE: &str = "/etc/pgctl/monitoring-password";
pub const CONSUL_METRICS_TOKEN: &str = "/etc/pgctl/consul-metrics.token";
pub const BACKUP_EXPORTER_SCRIPT: &str = "/etc/pgctl/backup-exporter.py";
pub const PROMETHEUS_DATA: &str = "/var/lib/prometheus";
pub const IMAGE_MANIFEST: &str = "/etc/pgctl/manifest.json";
/// The recovery script pgctl uploads into its throwaway recovery containers.
pub const RECOVER_SCRIPT: &str = "/usr/local/lib/pgctl/recover.sh";
/// SQL a restore runs after promotion: the cluster's own roles as secrets.toml has them.
pub const CLUSTER_ROLES_SQL: &str = "/etc/pgctl/cluster-roles.sql";
/// The data volume's mount point and the data directory inside it.
pub const DATA_MOUNT: &str = "/var/lib/postgresql/data";
pub const PGDATA: &str = "/var/lib/postgresql/data/pgdata";
pub const ETCD_DATA: &str = "/var/lib/etcd";
pub const CONSUL_DATA: &str = "/var/lib/consul";
pub const PG_SOCKET_DIR: &str = "/var/run/postgresql";
/// Outcomes of scheduled backups (JSON lines), on the data volume so they outlive containers.
pub const SCHEDULED_BACKUPS: &str = "/var/lib/postgresql/data/pgctl-backups.jsonl";
/// The data volume's size and used bytes (`df`), written every minute by the members' cron
/// and read by monitoring through `pgctl.data_volume_usage()`.
pub const VOLUME_USAGE: &str = "/var/lib/postgresql/data/pgctl-volume-usage";
/// Present in a data volume while a restore fills it: such a volume is never started.
pub const INCOMPLETE_MARKER: &str = "/var/lib/postgresql/data/pgctl-restore-incomplete";
/// Patroni's replica method that builds a replica from a backup in S3 (uploaded, 0600).
pub const REPLICA_SCRIPT: &str = "/etc/pgctl/replica-from-backup.sh";
/// A restore's replica: the backup fetched beside the data directory while the leader recovers
/// and starts (recover.sh prefetch), moved into place by Patroni's replica method.
pub const PREFETCHED_COPY: &str = "/var/lib/postgresql/data/pgctl-prefetch";
/// A replica's copy still being fetched (recover.sh prefetch removes it once the copy is whole).
pub const PREFETCH_MARKER: &str = "/var/lib/postgresql/data/pgctl-prefetch-incomplete";
/// The restored timeline's history, handed by pgctl to a copy being fetched (recover.sh prefetch
/// moves it into the copy's pg_wal).
pub const DELIVERED_HISTORY: &str = "/var/lib/postgresql/data/pgctl-prefetch-history";
/// Left on a new member's data volume by `node add`: the fetch command the script runs once.
pub const REPLICA_REQUEST: &str = "/var/lib/postgresql/data/pgctl-replica-request";
/// Written by the script: how the replica was made (JSON).
pub const REPLICA_RESULT: &str = "/var/lib/postgresql/data/pgctl-replica-result";

// ---- ports (host networking) ----
pub const POSTGRES_PORT: u16 = 5432;
pub const PATRONI_API_PORT: u16 = 8008;
pub const ETCD_PORTS: [u16; 2] = [2379, 2380];
/// Consul: server RPC, LAN and WAN gossip, HTTP API, DNS.
pub const CONSUL_PORTS: [u16; 5] = [8300, 8301, 8302, 8500, 8600];
pub const POSTGRES_EXPORTER_PORT: u16 = 9187;
pub const BACKUP_EXPORTER_PORT: u16 = 9188;
pub const PROMETHEUS_PORT: u16 = 9090;
pub const ALERTMANAGER_PORT: u16 = 9093;
/// HAProxy: the leader, replicas, the synchronous standby, asynchronous replicas.
pub const HAPROXY_PORTS: [u16; 4] = [5000, 5001, 5002, 5003];

/// Ports a container listens on with host networking.
pub fn ports(container: &str) -> &'static [u16] {
    match container {
        ETCD => &ETCD_PORTS,
        CONSUL => &CONSUL_PORTS,
        _ => &[POSTGRES_PORT, PATRONI_API_PORT],
    }
}

/// Patroni's REST API as seen from inside the host.
pub fn patroni_url(path: &str) -> String {
    format!("http://127.0.0.1:{PATRONI_API_PORT}{path}")
}

// ---- PostgreSQL ----
/// One WAL segment (PostgreSQL's default, which pgctl's images keep).
pub const WAL_SEGMENT_BYTES: u64 = 16 * 1024 * 1024;
/// Replication lag under which a replica counts as caught up: one WAL segment.
pub const MAX_LAG_BYTES: u64 = WAL_SEGMENT_BYTES;
