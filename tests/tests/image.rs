//! The database image's build-time checks, through the pgctl binary on the local engine (no
//! lab): a component whose check fails fails `pgctl image build` and leaves no image with the
//! requested tag; a good image ships the newest PostgreSQL 15 Debian offers (bookworm-security
//! included), with it and its extensions' versions in the manifest.
//!
//! Both build with the same base and arguments as the other e2e tests (BUILD_DEBIAN), so the
//! package layers come from the build cache.

use anyhow::{Context, Result};
use pgctl_tests::*;
use std::sync::Mutex;

const IMAGE: &str = "pgctl/postgres:test-image";
const BROKEN: &str = "pgctl/postgres:test-broken-walg";

/// One build at a time (cargo runs a file's tests in parallel; the base is shared).
static SERIAL: Mutex<()> = Mutex::new(());

/// A wal-g that prints a version and then fails: what the old check (`first_version wal-g
/// --version | head`, whose status was head's) accepted.
const BROKEN_WALG: &str =
    "#!/bin/sh\necho 'wal-g version v3.0.5 (deliberately broken test fixture)'\necho 'wal-g: simulated failure' >&2\nexit 1\n";

#[test]
#[ignore = "needs Docker: run ansible-free-scripts/test.sh (PGCTL_E2E=1)"]
fn failing_component_check_fails_the_build() -> Result<()> {
    require_e2e("failing_component_check_fails_the_build");
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let work = workdir("pgctl-e2e-image-broken");
    pgctl_ok(&work, &["image", "base"])?;
    // An image left with this tag by an earlier run would make the last assertion meaningless.
    let _ = docker_local(&["image", "rm", "-f", BROKEN]);

    let artifacts = work.join("artifacts");
    std::fs::create_dir_all(&artifacts)?;
    std::fs::write(artifacts.join("wal-g"), BROKEN_WALG)?;
    use sha2::Digest;
    let digest = sha2::Sha256::digest(BROKEN_WALG.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::write(artifacts.join("SHA256SUMS"), format!("{hex}  wal-g\n"))?;

    let started = std::time::Instant::now();
    let run = pgctl(
        &work,
        &[
            &BUILD_DEBIAN[..6],
            &["--artifacts", artifacts.to_str().unwrap()],
            &["--without", "timescaledb,consul", "--tag", BROKEN],
        ]
        .concat(),
    );
    report(&format!(
        "image: build with a broken wal-g failed after {:.0}s",
        started.elapsed().as_secs_f64()
    ));
    assert!(!run.ok, "a wal-g that fails its --version must fail the build");
    assert!(
        run.stderr
            .contains("pgctl image check: wal-g: `wal-g --version` exited with status 1"),
        "the error names wal-g and its exit status: {}",
        run.stderr
    );
    assert_eq!(
        docker_local(&["images", "-q", BROKEN])?,
        "",
        "no image may carry the tag of a failed build"
    );
    Ok(())
}

#[test]
#[ignore = "needs Docker: run ansible-free-scripts/test.sh (PGCTL_E2E=1)"]
fn image_ships_the_newest_postgresql_and_records_it() -> Result<()> {
    require_e2e("image_ships_the_newest_postgresql_and_records_it");
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let work = workdir("pgctl-e2e-image");
    pgctl_ok(&work, &["image", "base"])?;
    let run = pgctl_ok(&work, &[BUILD_DEBIAN, &["--tag", IMAGE, "--output", "json"]].concat())?;
    let built = run.json()?;
    report(&format!(
        "image: {IMAGE} built in {:.0}s, {:.0} MB",
        built["seconds"].as_f64().unwrap_or_default(),
        built["size_bytes"].as_f64().unwrap_or_default() / 1e6
    ));
    let manifest = &built["manifest"];
    let field = |k: &str| manifest[k].as_str().unwrap_or_default().to_string();

    // The extensions were created in a throwaway cluster during the build: versions recorded.
    for ext in ["postgis", "postgis-raster", "postgis-topology", "amcheck"] {
        assert!(!field(ext).is_empty(), "{ext} has no version in the manifest: {manifest}");
    }
    assert_eq!(field("timescaledb"), "", "left out explicitly: {manifest}");

    // Independently of the build: what apt offers today, from all the suites the image knows.
    let output = docker_local(&[
        "run",
        "--rm",
        "--entrypoint",
        "/bin/sh",
        IMAGE,
        "-c",
        "apt-get update -qq >/dev/null && apt-cache policy postgresql-15 && echo '/tmp:' && ls -A /tmp",
    ])?;
    let (policy, tmp) = output.split_once("\n/tmp:").context("no /tmp listing")?;
    assert_eq!(tmp.trim(), "", "the build's check left files in /tmp");
    let candidate = policy
        .lines()
        .find_map(|l| l.trim().strip_prefix("Candidate:"))
        .map(str::trim)
        .with_context(|| format!("no candidate in:\n{policy}"))?;
    assert!(
        policy.contains("bookworm-security"),
        "the image's apt sources include bookworm-security:\n{policy}"
    );
    assert_eq!(
        field("postgres-package"),
        candidate,
        "the image has the newest postgresql-15 apt offers:\n{policy}"
    );
    let upstream = candidate.split('-').next().unwrap_or_default();
    assert_eq!(field("postgres"), upstream, "{manifest}");
    report(&format!(
        "image: PostgreSQL {} ({candidate}), the newest apt offers",
        field("postgres")
    ));

    // `pgctl image list` shows it.
    let listed = pgctl_ok(&work, &["image", "list", "--output", "json"])?.json()?;
    let id = built["id"].as_str().unwrap();
    let entry = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == id)
        .with_context(|| format!("image list lacks {id}: {listed}"))?;
    assert_eq!(entry["manifest"]["postgres"], manifest["postgres"], "{entry}");
    Ok(())
}
