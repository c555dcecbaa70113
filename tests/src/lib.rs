//! Helpers shared by the end-to-end tests: run the `pgctl` binary as a user would, and check
//! results independently (the docker CLI against the lab's engines).
//!
//! Every test that needs Docker or the lab is `#[ignore = "needs the lab: ..."]`, so a plain
//! `cargo test` lists it as ignored (never as passed); `ansible-free-scripts/test.sh` runs
//! them with `--include-ignored` and PGCTL_E2E=1. Each such test calls [`require_e2e`] first.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// Whether the end-to-end tests may run here (`ansible-free-scripts/test.sh` sets PGCTL_E2E=1
/// after installing what they need).
pub fn e2e_enabled() -> bool {
    std::env::var("PGCTL_E2E").as_deref() == Ok("1")
}

/// First call of every end-to-end test. The tests are `#[ignore]`d, so reaching this means one
/// was asked for explicitly (`--ignored`, `--include-ignored`); without PGCTL_E2E=1 the test
/// fails here: it must never count as passed without having run.
pub fn require_e2e(test: &str) {
    assert!(
        e2e_enabled(),
        "{test}: this end-to-end test was run without PGCTL_E2E=1. It needs root, Docker and the lab: \
         run ansible-free-scripts/test.sh (which installs what is missing and sets PGCTL_E2E=1)"
    );
}

/// Appends a line to target/e2e/report.txt, which test.sh prints after the run (cargo hides
/// a passing test's output): measurements and skipped tests.
pub fn report(line: &str) {
    use std::io::Write;
    eprintln!("{line}");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/e2e");
    let _ = std::fs::create_dir_all(&dir);
    if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("report.txt")) {
        let _ = writeln!(f, "{line}");
    }
}

/// Reports a test as skipped, with the reason.
pub fn skipped(test: &str, why: &str) {
    report(&format!("SKIPPED {test}: {why}"));
}

/// The pgctl binary under test: PGCTL_BIN, else the one cargo built next to this test binary
/// (`target/debug/deps/NAME-HASH` -> `target/debug/pgctl`, whatever CARGO_TARGET_DIR is).
pub fn pgctl_bin() -> PathBuf {
    if let Ok(p) = std::env::var("PGCTL_BIN") {
        return p.into();
    }
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("pgctl")))
        .filter(|p| p.is_file());
    beside.unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/pgctl"))
}

/// pgctl's documented exit codes.
pub mod bench;
mod lab;
pub mod legacy;

pub use lab::Lab;

/// PGCTL_FLOW_SCALE: a pgbench scale (68 is ~1 GB) the grow and migrate tests add to their
/// source before each flow, so their MEASURED lines time the flows on that much data. Unset in
/// the test command (the flows then move only the tests' own rows).
pub fn flow_scale() -> Option<String> {
    std::env::var("PGCTL_FLOW_SCALE").ok().filter(|s| !s.is_empty() && s != "0")
}

pub mod exit {
    pub const OK: i32 = 0;
    /// The operation was attempted and failed.
    pub const FAILED: i32 = 1;
    /// Bad configuration (hosts.toml, secrets.toml) or usage (also clap's usage errors).
    pub const CONFIG: i32 = 2;
    /// A host or S3 could not be reached.
    pub const UNREACHABLE: i32 = 3;
    /// Refused as unsafe: a safety pin (`remove` without `--i-am-aware`), a pre-flight
    /// refusal, not confirmed.
    pub const REFUSED: i32 = 4;

    pub fn meaning(code: i32) -> &'static str {
        match code {
            OK => "ok",
            FAILED => "operation failed",
            CONFIG => "bad configuration or usage",
            UNREACHABLE => "a host or S3 unreachable",
            REFUSED => "refused as unsafe",
            _ => "undocumented",
        }
    }
}

/// What a client writing one row at a time saw ([`Lab::writing_during`]).
#[derive(Debug, Default)]
pub struct Writes {
    /// Ids whose commit returned success.
    pub acked: Vec<i64>,
    /// The longest time between two acknowledged writes.
    pub longest_gap: Duration,
}

/// One place a client can send SQL to (a member, a standalone server); `Err` when it refuses.
pub type SqlTarget<'a> = Box<dyn Fn(&str) -> Result<String> + Sync + 'a>;

/// Runs `work` while a client inserts one row at a time into `table` (which must exist where
/// the writes land) through the first of `targets` that accepts it: on a failure the client moves
/// on to the next target. The client goes on for 3 s after `work`, so a gap at its end counts.
pub fn write_during<T>(targets: &[SqlTarget<'_>], table: &str, work: impl FnOnce() -> Result<T>) -> Result<(T, Writes)> {
    use std::sync::atomic::{AtomicBool, Ordering};
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let writer = scope.spawn(|| {
            let mut writes = Writes::default();
            let (mut current, mut next, mut last) = (0, 1, Instant::now());
            while !stop.load(Ordering::Relaxed) {
                // Generous: a commit waiting for its synchronous standby must not be
                // cancelled into a local-only success.
                let sql = format!("SET statement_timeout = '60s'; INSERT INTO {table}(id) VALUES ({next})");
                if targets[current](&sql).is_ok() {
                    writes.acked.push(next);
                    writes.longest_gap = writes.longest_gap.max(last.elapsed());
                    last = Instant::now();
                } else {
                    current = (current + 1) % targets.len();
                    std::thread::sleep(Duration::from_millis(200));
                }
                next += 1;
            }
            writes
        });
        let result = work();
        std::thread::sleep(Duration::from_secs(3));
        stop.store(true, Ordering::Relaxed);
        let writes = writer.join().expect("the writing client panicked");
        result.map(|r| (r, writes))
    })
}

/// Result of one pgctl run.
pub struct Run {
    pub ok: bool,
    /// The exit code; None when pgctl was killed by a signal.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> Result<serde_json::Value> {
        serde_json::from_str(&self.stdout).with_context(|| format!("stdout is not JSON:\n{}\nstderr:\n{}", self.stdout, self.stderr))
    }

    /// Asserts that pgctl exited with `code` (see [`exit`]); `what` says which run it was.
    #[track_caller]
    pub fn assert_code(&self, code: i32, what: &str) {
        assert_eq!(
            self.code,
            Some(code),
            "{what}: exit code {:?}, expected {code} ({}); stderr:\n{}",
            self.code,
            exit::meaning(code),
            self.stderr
        );
    }

    /// The error document a failing run prints on stderr with `--output json`,
    /// `{"error": {"kind": "...", "message": "..."}}`: (kind, message), both non-empty. Other
    /// lines (progress) may come before it.
    pub fn error_json(&self) -> Result<(String, String)> {
        let starts = std::iter::once(0).chain(self.stderr.match_indices("\n{").map(|(i, _)| i + 1));
        let doc = starts
            .filter_map(|i| {
                serde_json::Deserializer::from_str(&self.stderr[i..])
                    .into_iter::<serde_json::Value>()
                    .next()?
                    .ok()
            })
            .filter(|v| v.get("error").is_some())
            .last()
            .with_context(|| format!("no {{\"error\": ...}} JSON document on stderr:\n{}", self.stderr))?;
        let field = |name: &str| -> Result<String> {
            doc["error"][name]
                .as_str()
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .with_context(|| format!("error.{name} missing or empty in {doc}"))
        };
        Ok((field("kind")?, field("message")?))
    }
}

fn finish(what: &str, out: Output) -> Run {
    let run = Run {
        ok: out.status.success(),
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    eprintln!("$ {what}  (exit {:?})\n{}{}", run.code, indent(&run.stdout), indent(&run.stderr));
    run
}

fn indent(s: &str) -> String {
    s.lines().map(|l| format!("    {l}\n")).collect()
}

/// Runs `pgctl ARGS` in `dir`; returns its outcome whatever the exit code.
pub fn pgctl(dir: &Path, args: &[&str]) -> Run {
    pgctl_env(dir, &[], args)
}

/// `pgctl` with environment variables set (an EDITOR, for instance).
pub fn pgctl_env(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Run {
    let out = Command::new(pgctl_bin())
        .args(args)
        .envs(env.iter().copied())
        .current_dir(dir)
        .output()
        .expect("running pgctl");
    finish(&format!("pgctl {}", args.join(" ")), out)
}

/// `pgctl` reading `input` on its stdin (a password, for instance).
pub fn pgctl_stdin(dir: &Path, input: &str, args: &[&str]) -> Run {
    use std::io::Write;
    let mut child = Command::new(pgctl_bin())
        .args(args)
        .current_dir(dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("running pgctl");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("writing pgctl's stdin");
    let out = child.wait_with_output().expect("running pgctl");
    finish(&format!("pgctl {}", args.join(" ")), out)
}

/// Runs `pgctl ARGS` and fails the test unless it succeeds.
pub fn pgctl_ok(dir: &Path, args: &[&str]) -> Result<Run> {
    let run = pgctl(dir, args);
    if !run.ok {
        bail!("pgctl {} failed:\n{}", args.join(" "), run.stderr);
    }
    Ok(run)
}

/// `docker ARGS` on a lab host's engine; its stdout.
pub fn docker_on(lab_dir: &Path, host: &str, address: &str, args: &[&str]) -> Result<String> {
    let out = docker_command(lab_dir, host, address).args(args).output()?;
    if !out.status.success() {
        bail!("docker {} on {host}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The docker CLI pointed at a lab host's engine with the lab's client certificate.
fn docker_command(lab_dir: &Path, host: &str, address: &str) -> Command {
    let certs = lab_dir.join("certs").join(host);
    let mut docker = Command::new("docker");
    docker
        .arg("--tlsverify")
        .arg("-H")
        .arg(format!("tcp://{address}:2376"))
        .arg("--tlscacert")
        .arg(certs.join("ca.pem"))
        .arg("--tlscert")
        .arg(certs.join("cert.pem"))
        .arg("--tlskey")
        .arg(certs.join("key.pem"));
    docker
}

/// `docker exec` arguments that run `sql` with psql as postgres in a host's Patroni container.
fn psql_exec(sql: &str) -> [&str; 16] {
    [
        "exec",
        "-u",
        "postgres",
        "-e",
        "PGPASSFILE=/etc/pgctl/pgpass",
        "-e",
        "PGCONNECT_TIMEOUT=3",
        "patroni",
        "psql",
        "-h",
        "/var/run/postgresql",
        "-U",
        "postgres",
        "-XAtq",
        "-c",
        sql,
    ]
}

/// `docker ARGS` on the local engine; its stdout.
pub fn docker_local(args: &[&str]) -> Result<String> {
    let out = Command::new("docker").args(args).output()?;
    if !out.status.success() {
        bail!("docker {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// `pgctl image build` arguments for the offline Debian image every e2e test uses.
pub const BUILD_DEBIAN: &[&str] = &[
    "image",
    "build",
    "--source",
    "debian",
    "--base",
    "pgctl/debian:bookworm",
    "--without",
    "timescaledb,walg,consul",
];

/// The directory of supplied binaries (WAL-G, Consul, with SHA256SUMS) that `pgctl lab up`
/// chooses its stack by and the lab's image is built with (build-go-tools.sh writes it).
pub fn artifacts_dir() -> PathBuf {
    std::env::var_os("PGCTL_ARTIFACTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/pgctl/artifacts"))
}

/// The DCS and backup engine a hosts.toml names.
pub fn stack_of(hosts_toml: &Path) -> Result<(String, String)> {
    let v: toml::Value = toml::from_str(&std::fs::read_to_string(hosts_toml)?)?;
    let get = |key: &str| {
        v["cluster"]
            .get(key)
            .and_then(toml::Value::as_str)
            .map(str::to_string)
            .with_context(|| format!("{}: no cluster.{key}", hosts_toml.display()))
    };
    Ok((get("dcs")?, get("backup_engine")?))
}

/// `pgctl image build` arguments for the offline Debian image of the stack `hosts_toml`
/// names: WAL-G and Consul from [`artifacts_dir`] when it uses them, TimescaleDB left out.
pub fn build_args(hosts_toml: &Path) -> Result<Vec<String>> {
    let (dcs, engine) = stack_of(hosts_toml)?;
    let mut without = vec!["timescaledb"];
    if engine != "walg" {
        without.push("walg");
    }
    if dcs != "consul" {
        without.push("consul");
    }
    if dcs != "etcd" {
        without.push("etcd");
    }
    let mut args: Vec<String> = BUILD_DEBIAN[..6].iter().map(|s| s.to_string()).collect();
    if !without.contains(&"walg") || !without.contains(&"consul") {
        args.extend(["--artifacts".into(), artifacts_dir().to_str().unwrap().to_string()]);
    }
    args.extend(["--without".into(), without.join(",")]);
    Ok(args)
}

/// A scratch directory under target/e2e, emptied first.
pub fn workdir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/e2e").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.canonicalize().unwrap()
}

/// (name, address) of every host in a hosts.toml, database and application hosts; an error
/// when there is none, or one lacks its name or address (a loop over no hosts would assert
/// nothing).
pub fn hosts_of(hosts_toml: &Path) -> Result<Vec<(String, String)>> {
    hosts_with(hosts_toml, |_| true)
}

/// (name, address) of the hosts of a hosts.toml whose roles `keep` accepts.
pub fn hosts_with(hosts_toml: &Path, keep: impl Fn(&[&str]) -> bool) -> Result<Vec<(String, String)>> {
    let v: toml::Value = toml::from_str(&std::fs::read_to_string(hosts_toml)?)?;
    let hosts = v
        .get("host")
        .and_then(toml::Value::as_array)
        .with_context(|| format!("{}: no [[host]]", hosts_toml.display()))?
        .iter()
        .filter(|h| {
            let roles: Vec<&str> = h
                .get("roles")
                .and_then(toml::Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(toml::Value::as_str)
                .collect();
            keep(&roles)
        })
        .map(|h| {
            let get = |key: &str| {
                h.get(key)
                    .and_then(toml::Value::as_str)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
            };
            Ok((
                get("name").with_context(|| format!("{}: a [[host]] without name", hosts_toml.display()))?,
                get("address").with_context(|| format!("{}: a [[host]] without address", hosts_toml.display()))?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    anyhow::ensure!(!hosts.is_empty(), "{}: no [[host]]", hosts_toml.display());
    Ok(hosts)
}

/// `text` with every `(from, to)` replaced; an error when a `from` does not occur, so an edit
/// of a configuration file can never silently do nothing.
pub fn edited(text: &str, edits: &[(&str, &str)]) -> Result<String> {
    let mut out = text.to_string();
    for (from, to) in edits {
        anyhow::ensure!(out.contains(from), "`{from}` not found in:\n{out}");
        out = out.replace(from, to);
    }
    Ok(out)
}

/// The "time per phase" lines of a restore's output, on one line.
pub fn restore_phases(stdout: &str) -> String {
    stdout
        .lines()
        .skip_while(|l| !l.starts_with("time per phase"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join("; ")
}

/// An LSN (`16/B374D848`) as a number, to compare WAL positions.
pub fn lsn(text: &str) -> u64 {
    let (hi, lo) = text.trim().split_once('/').unwrap_or(("0", "0"));
    (u64::from_str_radix(hi, 16).unwrap_or(0) << 32) | u64::from_str_radix(lo, 16).unwrap_or(0)
}
