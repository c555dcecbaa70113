//! Table-driven tests: every kind of bad input `pgctl check` must catch, with file, line and key.

use super::*;
use std::os::unix::fs::PermissionsExt;

const VALID_HOSTS: &str = r#"[cluster]
name = "main"
postgres_major = 16
image = "pgctl/postgres:16"
dcs = "etcd"
backup_engine = "pgbackrest"

[cluster.patroni]
ttl = 30
loop_wait = 10
retry_timeout = 10

[backup]
s3_endpoint = "https://s3.example.com"
s3_bucket = "b"
s3_prefix = "main"
schedule = "20 5 * * *"

[[host]]
name = "pg1"
endpoint = "unix:///var/run/docker.sock"
address = "10.0.0.1"
roles = ["etcd", "patroni"]

[[host]]
name = "pg2"
endpoint = "tcp://10.0.0.2:2376"
address = "10.0.0.2"
roles = ["etcd", "patroni"]
tls_dir = "certs"

[[host]]
name = "pg3"
endpoint = "ssh://admin@pg3"
address = "10.0.0.3"
roles = ["etcd", "patroni"]
"#;

const VALID_SECRETS: &str = r#"superuser_password = "a"
replication_password = "b"
rewind_password = "c"
rest_api_password = "d"
consul_gossip_key = "VGhpcyBpcyAzMiBieXRlcyBsb25nIGtleSBmb3IgdGU="
backup_encryption_key = "0123456789abcdefghijklmnopqrstuv"
consul_management_token = "0f1e2d3c-4b5a-4697-8877-665544332211"
consul_agent_token = "1a2b3c4d-5e6f-4a1b-9c2d-3e4f5a6b7c8d"
consul_patroni_token = "9e8d7c6b-5a49-4382-a716-151413121110"
[s3]
access_key_id = "k"
secret_access_key = "s"
readonly_access_key_id = "rk"
readonly_secret_access_key = "rs"
"#;

struct Dir(std::path::PathBuf);
impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn setup(hosts: &str, secrets: &str, secrets_mode: u32) -> (Dir, Result<Config, ConfigError>) {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("pgctl-config-test-{}-{n}", std::process::id()));
    std::fs::create_dir_all(dir.join("certs")).unwrap();
    for f in ["ca.pem", "cert.pem", "key.pem"] {
        std::fs::write(dir.join("certs").join(f), "x").unwrap();
    }
    std::fs::write(dir.join("hosts.toml"), hosts).unwrap();
    std::fs::write(dir.join("secrets.toml"), secrets).unwrap();
    std::fs::set_permissions(dir.join("secrets.toml"), std::fs::Permissions::from_mode(secrets_mode)).unwrap();
    let result = load(&dir.join("hosts.toml"), None);
    (Dir(dir), result)
}

static ENV_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Serializes the tests (secret overrides are process-wide environment variables) and clears
/// the PGCTL_* overrides so the host environment cannot change outcomes.
fn clean_env() -> std::sync::MutexGuard<'static, ()> {
    let guard = ENV_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    for (var, _) in SECRET_ENV {
        std::env::remove_var(var);
    }
    guard
}

/// Sets the roles of the `index`-th host.
fn set_roles(text: &str, index: usize, roles: &str) -> String {
    let mut seen = 0;
    text.lines()
        .map(|l| {
            if l.starts_with("roles = ") {
                seen += 1;
                if seen == index + 1 {
                    return format!("roles = [{roles}]");
                }
            }
            l.to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

#[test]
fn valid_configuration_loads() {
    let _env = clean_env();
    let (_d, r) = setup(VALID_HOSTS, VALID_SECRETS, 0o600);
    let cfg = r.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.hosts.hosts.len(), 3);
    assert!(cfg.warnings.is_empty(), "{:?}", cfg.warnings);
}

#[test]
fn bad_inputs_are_named_with_file_line_and_key() {
    let _env = clean_env();
    // (case, edit of hosts.toml as (from, to), expected key, text on the expected line, message fragment)
    type Case<'a> = (&'a str, (&'a str, &'a str), &'a str, &'a str, &'a str);
    let cases: &[Case] = &[
        (
            "unknown key",
            ("retry_timeout = 10\n", "retry_timeout = 10\nretry_timout = 5\n"),
            "retry_timout",
            "retry_timout = 5",
            "unknown field",
        ),
        (
            "missing key",
            ("image = \"pgctl/postgres:16\"\n", ""),
            "",
            "[cluster]",
            "missing field `image`",
        ),
        (
            "duplicate host name",
            ("name = \"pg2\"", "name = \"pg1\"\n#dup"),
            "host[1].name",
            "name = \"pg1\"\n#dup",
            "duplicate host name `pg1`",
        ),
        (
            "duplicate address",
            ("address = \"10.0.0.2\"", "address = \"10.0.0.1\"\n#dup"),
            "host[1].address",
            "address = \"10.0.0.1\"\n#dup",
            "duplicate address 10.0.0.1",
        ),
        (
            "bad endpoint scheme",
            ("tcp://10.0.0.2:2376", "http://10.0.0.2:2376"),
            "host[1].endpoint",
            "http://10.0.0.2:2376",
            "allowed are unix://",
        ),
        (
            "plain tcp without TLS",
            ("tls_dir = \"certs\"\n", ""),
            "host[1].endpoint",
            "tcp://10.0.0.2:2376",
            "needs mutual TLS",
        ),
        (
            "unsupported major",
            ("postgres_major = 16", "postgres_major = 12"),
            "cluster.postgres_major",
            "postgres_major = 12",
            "allowed: 13, 14, 15, 16, 17",
        ),
        (
            "invalid cron",
            ("schedule = \"20 5 * * *\"", "schedule = \"61 5 * * *\""),
            "backup.schedule",
            "schedule = ",
            "minute field",
        ),
        (
            "timing rule",
            ("ttl = 30", "ttl = 25"),
            "cluster.patroni.ttl",
            "ttl = 25",
            "loop_wait + 2 * retry_timeout <= ttl",
        ),
        (
            "ttl minimum",
            (
                "ttl = 30\nloop_wait = 10\nretry_timeout = 10",
                "ttl = 15\nloop_wait = 5\nretry_timeout = 5",
            ),
            "cluster.patroni.ttl",
            "ttl = 15",
            "minimum of 20",
        ),
        (
            "unknown role",
            (
                "roles = [\"etcd\", \"patroni\"]\ntls_dir",
                "roles = [\"etcd\", \"postgres\"]\ntls_dir",
            ),
            "",
            "\"postgres\"]",
            "unknown variant `postgres`",
        ),
        (
            "missing tls file",
            ("tls_dir = \"certs\"", "tls_dir = \"nocerts\""),
            "host[1].tls_dir",
            "nocerts",
            "does not exist",
        ),
        (
            "ssh with port",
            ("ssh://admin@pg3", "ssh://admin@pg3:2222"),
            "host[2].endpoint",
            "pg3:2222",
            "~/.ssh/config",
        ),
        (
            "cluster name not DNS-safe",
            ("name = \"main\"", "name = \"Main_Cluster\""),
            "cluster.name",
            "Main_Cluster",
            "DNS-safe",
        ),
        (
            "http endpoint with pgbackrest",
            ("https://s3.example.com", "http://s3.example.com"),
            "backup.s3_endpoint",
            "http://s3",
            "only speaks HTTPS",
        ),
        ("no hosts", ("[[host]]", "[[hosts]]"), "", "[[hosts]]", "unknown field `hosts`"),
        (
            "standby with nothing to follow",
            ("[[host]]\nname = \"pg1\"", "[standby]\nport = 5432\n\n[[host]]\nname = \"pg1\""),
            "standby",
            "[standby]",
            "needs `host`",
        ),
        (
            "standby reading its own archive",
            (
                "[[host]]\nname = \"pg1\"",
                "[standby]\narchive = \"s3://b/main\"\n\n[[host]]\nname = \"pg1\"",
            ),
            "standby.archive",
            "archive = \"s3://b/main\"",
            "own backup.s3_prefix",
        ),
        (
            "standby archive not an s3 url",
            (
                "[[host]]\nname = \"pg1\"",
                "[standby]\narchive = \"backups/main\"\n\n[[host]]\nname = \"pg1\"",
            ),
            "standby.archive",
            "archive = \"backups/main\"",
            "expected s3://BUCKET/PREFIX",
        ),
    ];
    for (case, (from, to), key, line_text, fragment) in cases {
        assert!(VALID_HOSTS.contains(from), "{case}: edit does not apply");
        let edited = VALID_HOSTS.replacen(from, to, 1);
        let expected_line = edited[..edited.find(line_text).expect("marker in file")].matches('\n').count() + 1;
        let (_d, r) = setup(&edited, VALID_SECRETS, 0o600);
        let err = match r {
            Ok(_) => panic!("{case}: accepted"),
            Err(e) => e,
        };
        let p = err
            .0
            .iter()
            .find(|p| p.message.contains(fragment))
            .unwrap_or_else(|| panic!("{case}: no problem mentions `{fragment}`: {err}"));
        assert!(p.file.ends_with("hosts.toml"), "{case}: file {:?}", p.file);
        if !key.is_empty() {
            assert_eq!(&p.key, key, "{case}: key in {p}");
        }
        assert_eq!(p.line, Some(expected_line), "{case}: line in {p}");
        assert!(err.to_string().contains("nothing was changed"), "{case}");
    }
}

#[test]
fn dcs_member_counts() {
    let _env = clean_env();
    // Two etcd members: an error; one: a warning; none: an error.
    let two = set_roles(VALID_HOSTS, 2, "\"patroni\"");
    let (_d, r) = setup(&two, VALID_SECRETS, 0o600);
    let e = r.expect_err("two members must be refused").to_string();
    assert!(e.contains("even number"), "{e}");

    let one = set_roles(&two, 1, "\"patroni\"");
    let (_d, r) = setup(&one, VALID_SECRETS, 0o600);
    let cfg = r.unwrap_or_else(|e| panic!("one member is allowed: {e}"));
    assert!(
        cfg.warnings.iter().any(|w| w.message.contains("no fault tolerance")),
        "{:?}",
        cfg.warnings
    );

    let none = set_roles(&one, 0, "\"patroni\"");
    let (_d, r) = setup(&none, VALID_SECRETS, 0o600);
    assert!(r
        .expect_err("no members must be refused")
        .to_string()
        .contains("no host has role `etcd`"));

    // Consul: three servers fine, zero refused.
    let consul = VALID_HOSTS
        .replace("dcs = \"etcd\"", "dcs = \"consul\"")
        .replace("\"etcd\"", "\"consul-server\"");
    let (_d, r) = setup(&consul, VALID_SECRETS, 0o600);
    r.unwrap_or_else(|e| panic!("3 consul servers are fine: {e}"));
    let consul_none = VALID_HOSTS
        .replace("dcs = \"etcd\"", "dcs = \"consul\"")
        .replace("\"etcd\", ", "\"consul-client\", ");
    let (_d, r) = setup(&consul_none, VALID_SECRETS, 0o600);
    assert!(r
        .expect_err("zero consul servers")
        .to_string()
        .contains("no host has role `consul-server`"));
}

#[test]
fn secrets_problems() {
    let _env = clean_env();
    let (_d, r) = setup(VALID_HOSTS, VALID_SECRETS, 0o644);
    let e = r.expect_err("group/other-readable secrets must be refused").to_string();
    assert!(e.contains("readable by group or others") && e.contains("chmod 600"), "{e}");

    let (_d, r) = setup(VALID_HOSTS, &VALID_SECRETS.replace("replication_password = \"b\"\n", ""), 0o600);
    let err = r.expect_err("missing secret");
    let p = err.0.iter().find(|p| p.key == "replication_password").expect("names the key");
    assert!(p.file.ends_with("secrets.toml"));

    let (_d, r) = setup(VALID_HOSTS, &VALID_SECRETS.replace("rewind_password", "rewind_pasword"), 0o600);
    let err = r.expect_err("unknown secret key");
    assert!(
        err.0[0].message.contains("unknown field `rewind_pasword`") && err.0[0].line == Some(3),
        "{err}"
    );

    let consul = VALID_HOSTS
        .replace("dcs = \"etcd\"", "dcs = \"consul\"")
        .replace("\"etcd\"", "\"consul-server\"");
    let (_d, r) = setup(
        &consul,
        &VALID_SECRETS.replace("VGhpcyBpcyAzMiBieXRlcyBsb25nIGtleSBmb3IgdGU=", "c2hvcnQ="),
        0o600,
    );
    let err = r.expect_err("short gossip key");
    assert!(err.0.iter().any(|p| p.key == "consul_gossip_key" && p.line == Some(5)), "{err}");

    // Consul's ACL tokens: required with Consul (not with etcd), and UUIDs.
    let no_patroni_token = VALID_SECRETS.replace("consul_patroni_token = \"9e8d7c6b-5a49-4382-a716-151413121110\"\n", "");
    let (_d, r) = setup(&consul, &no_patroni_token, 0o600);
    let err = r.expect_err("missing Patroni token");
    assert!(
        err.0
            .iter()
            .any(|p| p.key == "consul_patroni_token" && p.message.contains("missing")),
        "{err}"
    );
    let (_d, r) = setup(VALID_HOSTS, &no_patroni_token, 0o600);
    r.unwrap_or_else(|e| panic!("etcd needs no Consul token: {e}"));
    let (_d, r) = setup(
        &consul,
        &VALID_SECRETS.replace("1a2b3c4d-5e6f-4a1b-9c2d-3e4f5a6b7c8d", "agent-token"),
        0o600,
    );
    let err = r.expect_err("a token that is no UUID");
    assert!(
        err.0.iter().any(|p| p.key == "consul_agent_token" && p.message.contains("UUID")),
        "{err}"
    );
}

#[test]
fn generated_consul_tokens_are_uuids() {
    let t = super::init::token_uuid();
    assert!(super::syntax::is_uuid(&t) && t.as_bytes()[14] == b'4', "{t}");
    assert_ne!(t, super::init::token_uuid());
}

#[test]
fn environment_supplies_secrets() {
    // Separate process state: only this test sets variables, and it removes them again.
    let _env = clean_env();
    let (_d, r) = setup(VALID_HOSTS, "", 0o600);
    assert!(r.is_err());
    let vars = [
        ("PGCTL_SUPERUSER_PASSWORD", "x"),
        ("PGCTL_REPLICATION_PASSWORD", "x"),
        ("PGCTL_REWIND_PASSWORD", "x"),
        ("PGCTL_REST_API_PASSWORD", "x"),
        ("PGCTL_S3_ACCESS_KEY_ID", "x"),
        ("PGCTL_S3_SECRET_ACCESS_KEY", "x"),
    ];
    for (k, v) in vars {
        std::env::set_var(k, v);
    }
    let (_d, r) = setup(VALID_HOSTS, "", 0o600);
    for (k, _) in vars {
        std::env::remove_var(k);
    }
    let cfg = r.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.secrets.replication_password.unwrap().expose(), "x");
    assert!(
        format!("{:?}", cfg.secrets.superuser_password).contains("***"),
        "secrets never print"
    );
}

#[test]
fn init_writes_valid_commented_files() {
    let _env = clean_env();
    let dir = std::env::temp_dir().join(format!("pgctl-init-test-{}", std::process::id()));
    let _guard = Dir(dir.clone());
    std::fs::create_dir_all(&dir).unwrap();
    let (h, s) = (dir.join("hosts.toml"), dir.join("secrets.toml"));
    init::write_files(
        &h,
        &s,
        &init::HostsTemplate::example("main"),
        &init::SecretsTemplate::generate(),
        false,
    )
    .unwrap();
    assert_eq!(std::fs::metadata(&s).unwrap().permissions().mode() & 0o777, 0o600);
    let hosts: HostsFile = parse(&h, &std::fs::read_to_string(&h).unwrap()).unwrap();
    assert_eq!(hosts.hosts.len(), 3);
    let secrets = load_secrets(&s).unwrap();
    let key = secrets.consul_gossip_key.unwrap();
    assert_eq!(
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, key.expose())
            .unwrap()
            .len(),
        32
    );
    assert!(secrets.superuser_password.unwrap().expose().len() >= 32);
    // TLS on, with a CA that loads and signs.
    assert!(hosts.cluster.tls);
    let ca = crate::pki::Ca::load(
        secrets.postgres_ca_cert.unwrap().expose(),
        secrets.postgres_ca_key.unwrap().expose(),
    )
    .unwrap();
    assert!(ca.issue_for_days("pg1", &["10.0.0.1".into()], 1).is_ok());
    // `init --add-tls-ca` adds one to a secrets.toml without, and refuses a second.
    let text = std::fs::read_to_string(&s).unwrap();
    let start = text.find("# The CA that signs").unwrap();
    let tail = "-----END PRIVATE KEY-----\n'''\n";
    let end = text.find(tail).unwrap() + tail.len();
    let without = format!("{}{}", &text[..start], &text[end..]);
    let with = init::with_tls_ca(&without).unwrap().expect("a CA is added");
    let reparsed: crate::config::SecretsFile = toml::from_str(&with).unwrap();
    assert!(reparsed.postgres_ca_cert.is_some() && reparsed.s3.access_key_id.is_some());
    assert!(init::with_tls_ca(&with).unwrap().is_none());
    // Never overwrites without --force.
    let again = init::write_files(
        &h,
        &s,
        &init::HostsTemplate::example("main"),
        &init::SecretsTemplate::generate(),
        false,
    );
    assert!(again.unwrap_err().to_string().contains("--force"));
    // Every key of the written hosts.toml is explained by a comment.
    let text = std::fs::read_to_string(&h).unwrap();
    assert!(text.lines().filter(|l| l.trim_start().starts_with('#')).count() > 30);
}

#[test]
fn networks_contain_addresses() {
    use super::syntax::in_network;
    assert!(in_network("10.0.0.3", "10.0.0.0/24"));
    assert!(in_network("10.0.0.3", "0.0.0.0/0"));
    assert!(in_network("10.0.0.3", "10.0.0.3/32"));
    assert!(!in_network("10.0.1.3", "10.0.0.0/24"));
    assert!(!in_network("10.0.0.3", "fd00::/8"));
    assert!(in_network("fd00::5", "fd00::/8"));
    assert!(!in_network("pg3.example.com", "0.0.0.0/0"));
}

#[test]
fn access_and_monitoring_rules() {
    let _env = clean_env();
    let networks = |nets: &str| {
        set_roles(VALID_HOSTS, 2, "\"etcd\", \"patroni\", \"haproxy\"").replace(
            "backup_engine = \"pgbackrest\"\n",
            &format!("backup_engine = \"pgbackrest\"\nclient_networks = [{nets}]\n"),
        )
    };
    // HAProxy's host must be a network pg_hba lets in.
    let (_d, r) = setup(&networks("\"10.20.0.0/16\""), VALID_SECRETS, 0o600);
    let err = r.expect_err("HAProxy outside client_networks");
    assert!(
        err.0
            .iter()
            .any(|p| p.key == "cluster.client_networks" && p.message.contains("10.0.0.3") && p.message.contains("pg3")),
        "{err}"
    );
    let (_d, r) = setup(&networks("\"10.20.0.0/16\", \"10.0.0.0/24\""), VALID_SECRETS, 0o600);
    r.unwrap_or_else(|e| panic!("HAProxy inside client_networks: {e}"));

    // The virtual IP is IPv4 (gratuitous ARP).
    let vip = |addr: &str| {
        set_roles(VALID_HOSTS, 0, "\"etcd\", \"patroni\", \"vip\"").replacen(
            "[[host]]",
            &format!("[access]\nvip = \"{addr}\"\nvip_interface = \"eth0\"\n\n[[host]]"),
            1,
        )
    };
    let (_d, r) = setup(&vip("fd00::10/64"), VALID_SECRETS, 0o600);
    let err = r.expect_err("IPv6 VIP");
    assert!(err.0.iter().any(|p| p.key == "access.vip" && p.message.contains("IPv4")), "{err}");
    let (_d, r) = setup(&vip("10.0.0.100/24"), VALID_SECRETS, 0o600);
    r.unwrap_or_else(|e| panic!("IPv4 VIP: {e}"));

    // Monitoring with backups reads the newest backup's age with the read-only S3 key.
    let monitoring = set_roles(VALID_HOSTS, 2, "\"etcd\", \"patroni\", \"monitoring\"");
    let secrets = format!("monitoring_password = \"m\"\n{VALID_SECRETS}");
    let (_d, r) = setup(&monitoring, &secrets, 0o600);
    r.unwrap_or_else(|e| panic!("monitoring with a read-only key: {e}"));
    let no_readonly = secrets
        .replace("readonly_access_key_id = \"rk\"\n", "")
        .replace("readonly_secret_access_key = \"rs\"\n", "");
    let (_d, r) = setup(&monitoring, &no_readonly, 0o600);
    let err = r.expect_err("monitoring without a read-only key");
    assert!(
        err.0
            .iter()
            .any(|p| p.key == "s3.readonly_access_key_id" && p.message.contains("monitoring")),
        "{err}"
    );
}
