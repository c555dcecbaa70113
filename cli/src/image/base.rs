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
/// Debian's security archive (`<suite>-security`), reachable over plain http like the mirror.
pub const DEFAULT_SECURITY_MIRROR: &str = "http://deb.debian.org/debian-security";

/// Version of the recipe a base is made with, recorded as a label on the base: a base made by
/// an older recipe is made again instead of being reused. 2: `<suite>-updates` and
/// `<suite>-security` in its apt sources (recipe 1, unlabelled, had only `<suite>`).
pub const BASE_RECIPE: &str = "2";
pub const LABEL_BASE_RECIPE: &str = "io.pgctl.base.recipe";
pub const LABEL_BASE_SUITE: &str = "io.pgctl.base.suite";

/// The security archive for `mirror`: `.../debian` -> `.../debian-security` (Debian's own
/// layout, also a local mirror's or apt-cacher's usual one), else Debian's.
pub fn security_mirror(mirror: &str) -> String {
    match mirror.trim_end_matches('/').strip_suffix("/debian") {
        Some(root) => format!("{root}/debian-security"),
        None => DEFAULT_SECURITY_MIRROR.to_string(),
    }
}

/// The apt sources of a base made from `suite`: the suite, its point-release updates and its
/// security fixes (unstable/experimental have neither).
pub fn apt_sources(suite: &str, mirror: &str) -> Vec<String> {
    let mut lines = vec![format!("deb {mirror} {suite} main")];
    if !matches!(suite, "sid" | "unstable" | "experimental" | "rc-buggy") {
        lines.push(format!("deb {mirror} {suite}-updates main"));
        lines.push(format!("deb {} {suite}-security main", security_mirror(mirror)));
    }
    lines
}

/// The base recipe and suite recorded on `tag` (recipe "1": made before recipes were labelled).
async fn recipe_of(engine: &Engine, tag: &str) -> Result<(String, Option<String>)> {
    let info = engine
        .docker
        .inspect_image(tag)
        .await
        .with_context(|| format!("inspecting base image {tag}"))?;
    let labels = info.config.and_then(|c| c.labels).unwrap_or_default();
    let recipe = labels.get(LABEL_BASE_RECIPE).cloned().unwrap_or_else(|| "1".into());
    Ok((recipe, labels.get(LABEL_BASE_SUITE).cloned()))
}

/// A warning when `tag` is a base pgctl made with an older recipe (the image build adds the
/// missing apt suites and upgrades the base's packages itself, but the base should be remade).
pub async fn warn_if_stale(engine: &Engine, tag: &str) {
    if !tag.starts_with("pgctl/") {
        return;
    }
    if let Ok((recipe, _)) = recipe_of(engine, tag).await {
        if recipe != BASE_RECIPE {
            crate::output::warn(format!(
                "base image {tag} was made by an older pgctl (base recipe {recipe}, now {BASE_RECIPE}: no -updates/-security apt sources); make it again with `pgctl image base --force --tag {tag}`"
            ));
        }
    }
}

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

/// Makes `tag` from Debian `suite` unless the engine already has it, made by this recipe from
/// this suite (or `force`): a base made by an older recipe is made again, not reused.
pub async fn ensure_base(engine: &Engine, tag: &str, suite: &str, mirror: &str, force: bool) -> Result<String> {
    if !force {
        if let Some(id) = crate::docker::image_id(&engine.docker, tag).await? {
            let (recipe, made_from) = recipe_of(engine, tag).await?;
            if recipe == BASE_RECIPE && made_from.as_deref() == Some(suite) {
                return Ok(id);
            }
            let from = made_from.map(|s| format!(" from Debian {s}")).unwrap_or_default();
            crate::output::step(format!(
                "base image {tag} was made by base recipe {recipe}{from}; now recipe {BASE_RECIPE} from {suite} (with {suite}-updates and {suite}-security): making it again"
            ));
        }
    }
    if !is_root() {
        bail!("making the base image {tag} needs root (mmdebstrap/debootstrap create device nodes and set ownership); run as root, or pass --base with an image your engine already has");
    }
    let sources = apt_sources(suite, mirror);
    crate::output::step(format!("making base image {tag} from Debian {suite} ({})...", sources.join("; ")));
    let started = std::time::Instant::now();
    let (mut child, cleanup) = if have("mmdebstrap") {
        let child = Command::new("mmdebstrap")
            .args(["--variant=minbase", "--include=ca-certificates", "--quiet", suite, "-"])
            .args(&sources)
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
        let list = dir.join("etc/apt/sources.list");
        std::fs::write(&list, sources.join("\n") + "\n").with_context(|| format!("writing {}", list.display()))?;
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
        changes: vec![
            "CMD [\"/bin/bash\"]".into(),
            format!("LABEL {LABEL_BASE_RECIPE}={BASE_RECIPE} {LABEL_BASE_SUITE}={suite}"),
        ],
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_include_updates_and_security() {
        assert_eq!(
            apt_sources("bookworm", DEFAULT_MIRROR),
            [
                "deb http://deb.debian.org/debian bookworm main",
                "deb http://deb.debian.org/debian bookworm-updates main",
                "deb http://deb.debian.org/debian-security bookworm-security main",
            ]
        );
        assert_eq!(
            apt_sources("trixie", "http://mirror.local:3142/debian/")[2],
            "deb http://mirror.local:3142/debian-security trixie-security main"
        );
        assert_eq!(security_mirror("http://ftp.example.org/pub/linux"), DEFAULT_SECURITY_MIRROR);
        assert_eq!(apt_sources("sid", DEFAULT_MIRROR).len(), 1);
    }
}
