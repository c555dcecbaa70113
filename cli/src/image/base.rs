//! A Debian base image made on this machine (no registry): mmdebstrap (or debootstrap) writes
//! a root filesystem tar that is streamed into the engine's image import.

use crate::docker::Engine;
use anyhow::{bail, Context, Result};
use bollard::query_parameters::CreateImageOptions;
use futures_util::{StreamExt, TryStreamExt};
use std::process::Stdio;
use tokio::process::Command;
use tokio_util::io::ReaderStream;

pub const DEFAULT_BASE_TAG: &str = "pgctl/debian:bookworm";
pub const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";

/// True when running as root (mmdebstrap/debootstrap need it to make device nodes and chown).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

fn have(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
}

/// Makes `tag` from Debian `suite` unless the engine already has it (or `force`).
pub async fn ensure_base(engine: &Engine, tag: &str, suite: &str, mirror: &str, force: bool) -> Result<String> {
    if !force {
        if let Some(id) = crate::docker::image_id(&engine.docker, tag).await? {
            return Ok(id);
        }
    }
    if !is_root() {
        bail!("making the base image {tag} needs root (mmdebstrap/debootstrap create device nodes and set ownership); run as root, or pass --base with an image your engine already has");
    }
    crate::output::step(format!("making base image {tag} from Debian {suite} ({mirror})..."));
    let started = std::time::Instant::now();
    let (mut child, cleanup) = if have("mmdebstrap") {
        let child = Command::new("mmdebstrap")
            .args(["--variant=minbase", "--include=ca-certificates", "--quiet", suite, "-", mirror])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting mmdebstrap")?;
        (child, None)
    } else if have("debootstrap") {
        // debootstrap cannot write a tar to stdout: bootstrap into a directory, then tar it.
        let dir = std::env::temp_dir().join(format!("pgctl-base-{}", std::process::id()));
        let status = Command::new("debootstrap")
            .args(["--variant=minbase", "--include=ca-certificates", suite])
            .arg(&dir)
            .arg(mirror)
            .status()
            .await?;
        if !status.success() {
            bail!("debootstrap failed ({status})");
        }
        let child = Command::new("tar")
            .arg("-C")
            .arg(&dir)
            .args(["-c", "."])
            .stdout(Stdio::piped())
            .spawn()?;
        (child, Some(dir))
    } else {
        bail!("neither mmdebstrap nor debootstrap is installed: apt-get install mmdebstrap (ansible-free-scripts/install-deps.sh does it)");
    };
    let stdout = child.stdout.take().context("no stdout from the bootstrap tool")?;
    let (repo, tag_part) = tag.rsplit_once(':').unwrap_or((tag, "latest"));
    let options = CreateImageOptions {
        from_src: Some("-".into()),
        repo: Some(repo.into()),
        tag: Some(tag_part.into()),
        changes: vec!["CMD [\"/bin/bash\"]".into()],
        ..Default::default()
    };
    let body = ReaderStream::new(stdout).map_err(std::io::Error::other);
    let mut import = engine
        .docker
        .create_image(Some(options), Some(bollard::body_try_stream(body)), None);
    let mut import_error = None;
    while let Some(msg) = import.next().await {
        if let Err(e) = msg {
            import_error = Some(e);
        }
    }
    let status = child.wait().await?;
    if let Some(dir) = cleanup {
        let _ = std::fs::remove_dir_all(dir);
    }
    // The bootstrap tool's failure comes first: a partial root filesystem must not be tagged.
    if !status.success() {
        let _ = engine
            .docker
            .remove_image(tag, None::<bollard::query_parameters::RemoveImageOptions>, None)
            .await;
        bail!("making base image {tag}: the bootstrap tool failed ({status}); see its output above");
    }
    if let Some(e) = import_error {
        bail!("importing base image {tag}: {}", crate::docker::connect::describe(&e));
    }
    let id = crate::docker::image_id(&engine.docker, tag)
        .await?
        .context("base image missing after import")?;
    crate::output::step(format!("base image {tag} made in {:.0}s", started.elapsed().as_secs_f64()));
    Ok(id)
}
