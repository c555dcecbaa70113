//! verify-backup's checks against real PostgreSQL, without a lab: the recovery script pgctl runs
//! in the database image must fail when an index of the data it verifies is damaged (a page
//! overwritten; data checksums on), and pass when the same data is intact. A check that cannot
//! fail proves nothing; this is the failing case the lab cannot stage from a backup.

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

    let (code, stdout, stderr) = verify(&work, false)?;
    assert_eq!(code, 0, "intact data verifies: {stderr}");
    let summary: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or_default())?;
    assert!(summary["indexes_checked"].as_u64().unwrap() > 300, "{summary}");

    let (code, _, stderr) = verify(&work, true)?;
    assert_ne!(code, 0, "a damaged index must fail the verification: {stderr}");
    assert!(
        stderr.contains("amcheck FAILED in database postgres") && stderr.contains("invalid page"),
        "{stderr}"
    );
    Ok(())
}
