//! The recovery script pgctl runs in the database image, without a lab. verify-backup's checks
//! against real PostgreSQL: it must fail when an index of the data it verifies is damaged (a
//! page overwritten; data checksums on), and pass when the same data is intact. A check that
//! cannot fail proves nothing; this is the failing case the lab cannot stage from a backup.
//! And a restore's replica copy: it takes the restored timeline's history handed to it while it
//! waits, and is left without its replica request when none comes in time.

use anyhow::Result;
use pgctl_tests::*;

const IMAGE: &str = "pgctl/postgres:15-debian";

/// Stands in for the backup fetch: a small cluster with a primary key, optionally with one page
/// of that index overwritten with random bytes.
fn fetch_script(damage: bool) -> String {
    let mut s = String::from(
        r#"set -e
B=/usr/lib/postgresql/15/bin
D=/var/lib/postgresql/data/pgdata
rmdir $D
$B/initdb -k -D $D -U postgres >/dev/null
$B/pg_ctl -D $D -o "-c listen_addresses= -c unix_socket_directories=/tmp" -w start >/dev/null
$B/psql -h /tmp -U postgres -qc "CREATE TABLE t(id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 10000)"
f=$($B/psql -h /tmp -U postgres -XAtc "SELECT pg_relation_filepath('t_pkey')")
$B/pg_ctl -D $D -w stop >/dev/null
"#,
    );
    if damage {
        s.push_str("dd if=/dev/urandom of=$D/$f bs=8192 seek=1 count=1 conv=notrunc 2>/dev/null\n");
    }
    s
}

/// Runs the recovery script in verify mode over that data; (exit code, stdout, stderr).
fn verify(work: &std::path::Path, damage: bool) -> Result<(i32, String, String)> {
    let fetch = work.join(if damage { "fetch-damaged.sh" } else { "fetch.sh" });
    std::fs::write(&fetch, fetch_script(damage))?;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../compose-templates/scripts/recover.sh");
    let out = std::process::Command::new("docker")
        .args(["run", "--rm", "--entrypoint", "/bin/sh"])
        .args(["-v", &format!("{}:/recover.sh:ro", script.canonicalize()?.display())])
        .args(["-v", &format!("{}:/fetch.sh:ro", fetch.display())])
        .args([IMAGE, "/recover.sh", "verify", "/usr/lib/postgresql/15/bin", "sh", "/fetch.sh"])
        .output()?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

#[test]
#[ignore = "needs Docker and root: run ansible-free-scripts/test.sh (PGCTL_E2E=1)"]
fn verification_fails_on_a_damaged_index() -> Result<()> {
    require_e2e("verification_fails_on_a_damaged_index");
    let work = workdir("pgctl-e2e-amcheck");
    pgctl_ok(&work, &["image", "base"])?;
    pgctl_ok(&work, &[BUILD_DEBIAN, &["--tag", IMAGE]].concat())?;

    let (code, _, stderr) = verify(&work, false)?;
    assert_eq!(code, 0, "intact data verifies: {stderr}");
    let summary: serde_json::Value = serde_json::from_str(summary_of(&stderr))?;
    assert!(summary["indexes_checked"].as_u64().unwrap() > 300, "{summary}");

    let (code, _, stderr) = verify(&work, true)?;
    assert_ne!(code, 0, "a damaged index must fail the verification: {stderr}");
    assert!(
        stderr.contains("amcheck FAILED in database postgres") && stderr.contains("invalid page"),
        "{stderr}"
    );
    a_copy_takes_the_history_handed_to_it(&work)
}

/// The script's summary line.
fn summary_of(stderr: &str) -> &str {
    stderr
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("pgctl: summary "))
        .unwrap_or_default()
}

const DATA: &str = "/var/lib/postgresql/data";
/// Stands in for a replica's fetch: a data directory with a pg_wal.
const COPY_FETCH: &str = "set -e\nD=/var/lib/postgresql/data/pgdata\necho 15 >$D/PG_VERSION\nmkdir $D/pg_wal\n";
const COPY_REQUEST: &str =
    "sh\n-c\nrmdir /var/lib/postgresql/data/pgdata && mv /var/lib/postgresql/data/pgctl-prefetch /var/lib/postgresql/data/pgdata";
const HISTORY: &str = "1\t0/3000060\tno recovery target specified\n";

/// `docker run` arguments for recover.sh prefetch over `data` (a directory of this machine),
/// waiting at most `answer_within` seconds for the history.
fn prefetch_args(work: &std::path::Path, data: &std::path::Path, answer_within: u32) -> Result<Vec<String>> {
    let fetch = work.join("copy-fetch.sh");
    std::fs::write(&fetch, COPY_FETCH)?;
    std::fs::create_dir_all(data)?;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../compose-templates/scripts/recover.sh");
    Ok([
        "--entrypoint",
        "/bin/sh",
        "-v",
        &format!("{}:/recover.sh:ro", script.canonicalize()?.display()),
        "-v",
        &format!("{}:/fetch.sh:ro", fetch.display()),
        "-v",
        &format!("{}:{DATA}", data.display()),
        "-e",
        &format!("ANSWER_WITHIN={answer_within}"),
        "-e",
        &format!("COPY_REQUEST={COPY_REQUEST}"),
        IMAGE,
        "/recover.sh",
        "prefetch",
        "/usr/lib/postgresql/15/bin",
        "sh",
        "/fetch.sh",
    ]
    .map(String::from)
    .to_vec())
}

fn docker(args: &[&str]) -> Result<std::process::Output> {
    Ok(std::process::Command::new("docker").args(args).output()?)
}

/// A restore's replica copy, fetched: handed the history while it waits, it moves it into the
/// copy's pg_wal and leaves the request for Patroni's replica method; with none in time, the
/// copy is left whole, without history or request (pgctl adds both later), and never marked.
fn a_copy_takes_the_history_handed_to_it(work: &std::path::Path) -> Result<()> {
    let data = work.join("copy-unanswered");
    let mut args = vec!["run".to_string(), "--rm".to_string()];
    args.extend(prefetch_args(work, &data, 1)?);
    let out = docker(&args.iter().map(String::as_str).collect::<Vec<_>>())?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(summary_of(&stderr), r#"{"taken": false}"#, "{stderr}");
    assert!(data.join("pgctl-prefetch/PG_VERSION").exists(), "the copy is kept: {stderr}");
    for gone in ["pgdata", "pgctl-replica-request", "pgctl-prefetch-incomplete"] {
        assert!(!data.join(gone).exists(), "{gone} is left: {stderr}");
    }

    let data = work.join("copy-answered");
    let name = "pgctl-test-prefetch";
    let _ = docker(&["rm", "-f", name]);
    let mut args = vec!["run".to_string(), "-d".to_string(), "--name".to_string(), name.to_string()];
    args.extend(prefetch_args(work, &data, 60)?);
    let run = docker(&args.iter().map(String::as_str).collect::<Vec<_>>())?;
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !String::from_utf8_lossy(&docker(&["logs", name])?.stderr).contains("pgctl: phase await") {
        assert!(std::time::Instant::now() < deadline, "the copy never waited for its history");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(data.join("pgctl-prefetch-incomplete").exists(), "a waiting copy stays marked");
    // As pgctl hands it over (nodes::replica::deliver_history): written aside, renamed at once.
    let deliver =
        format!("set -e; d={DATA}/pgctl-prefetch-history; mkdir -m 0700 $d.tmp; printf '%s' \"$1\" >$d.tmp/00000002.history; mv $d.tmp $d");
    let handed = docker(&["exec", "-u", "postgres", name, "sh", "-c", &deliver, "sh", HISTORY])?;
    assert!(handed.status.success(), "{}", String::from_utf8_lossy(&handed.stderr));
    let waited = docker(&["wait", name])?;
    let logs = docker(&["logs", name])?;
    let _ = docker(&["rm", "-f", name]);
    let stderr = String::from_utf8_lossy(&logs.stderr);
    assert_eq!(String::from_utf8_lossy(&waited.stdout).trim(), "0", "{stderr}");
    assert_eq!(summary_of(&stderr), r#"{"taken": true}"#, "{stderr}");
    assert_eq!(
        std::fs::read_to_string(data.join("pgctl-prefetch/pg_wal/00000002.history"))?,
        HISTORY
    );
    assert_eq!(
        std::fs::read_to_string(data.join("pgctl-replica-request"))?,
        format!("{COPY_REQUEST}\n")
    );
    for gone in ["pgdata", "pgctl-prefetch-history", "pgctl-prefetch-incomplete"] {
        assert!(!data.join(gone).exists(), "{gone} is left: {stderr}");
    }
    Ok(())
}
