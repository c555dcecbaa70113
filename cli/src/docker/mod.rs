//! Everything pgctl does to a Docker Engine: connect, ensure networks/volumes/containers,
//! upload files, exec with exit codes, and move images between engines.

pub mod connect;
pub mod save_stream;
pub mod spec;
pub mod transfer;

pub use connect::{connect_all, local, Engine};

use anyhow::{bail, Context, Result};
use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{
    CreateContainerOptions, ListContainersOptions, ListNetworksOptions, ListVolumesOptions, RemoveContainerOptions, RemoveVolumeOptions,
    UploadToContainerOptions,
};
use bollard::Docker;
use futures_util::StreamExt;
use std::collections::HashMap;

/// A file to put into a container (Docker archive upload, before the container starts).
pub struct FileSpec {
    pub path: String,
    pub contents: Vec<u8>,
    pub mode: u32,
    /// Numeric owner (e.g. postgres' uid in the image).
    pub uid: u64,
    pub gid: u64,
}

impl FileSpec {
    /// A file owned by root.
    pub fn root(path: &str, contents: impl Into<Vec<u8>>, mode: u32) -> FileSpec {
        FileSpec {
            path: path.into(),
            contents: contents.into(),
            mode,
            uid: 0,
            gid: 0,
        }
    }
}

/// An in-memory tar of `files` (paths relative to the extraction root).
pub fn tar_files(files: &[FileSpec]) -> Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    for f in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(f.contents.len() as u64);
        header.set_mode(f.mode);
        header.set_uid(f.uid);
        header.set_gid(f.gid);
        header.set_mtime(0);
        header.set_entry_type(tar::EntryType::Regular);
        builder.append_data(&mut header, f.path.trim_start_matches('/'), f.contents.as_slice())?;
    }
    Ok(builder.into_inner()?)
}

/// Uploads files into a (created, possibly not yet started) container, relative to `/`.
pub async fn upload(docker: &Docker, container: &str, files: &[FileSpec]) -> Result<()> {
    let tar = tar_files(files)?;
    let options = UploadToContainerOptions {
        path: "/".into(),
        ..Default::default()
    };
    docker
        .upload_to_container(container, Some(options), bollard::body_full(tar.into()))
        .await
        .with_context(|| format!("uploading files into container {container}"))
}

/// Output of a command run in a container.
#[derive(Debug, Clone)]
pub struct ExecOutput {
    pub exit_code: i64,
    pub stdout: String,
    pub stderr: String,
}

impl ExecOutput {
    pub fn success(&self) -> bool {
        self.exit_code == 0
    }

    /// `Ok(stdout)` on exit 0, else an error carrying the command's stderr.
    pub fn ok(self, what: &str) -> Result<String> {
        if self.success() {
            Ok(self.stdout)
        } else {
            bail!(
                "{what} failed (exit {}): {}",
                self.exit_code,
                self.stderr.trim().lines().last().unwrap_or(self.stdout.trim())
            )
        }
    }
}

/// Runs `cmd` in a running container and collects its output. The exit code is read with
/// inspect after the output stream ends (it is not known before).
pub async fn exec(docker: &Docker, container: &str, cmd: &[&str], user: Option<&str>) -> Result<ExecOutput> {
    exec_env(docker, container, cmd, user, &[]).await
}

/// `exec` with extra environment variables (`KEY=value`; never secrets themselves).
pub async fn exec_env(docker: &Docker, container: &str, cmd: &[&str], user: Option<&str>, env: &[&str]) -> Result<ExecOutput> {
    let config = bollard::models::ExecConfig {
        cmd: Some(cmd.iter().map(|s| s.to_string()).collect()),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        user: user.map(str::to_string),
        env: (!env.is_empty()).then(|| env.iter().map(|s| s.to_string()).collect()),
        ..Default::default()
    };
    let created = docker
        .create_exec(container, config)
        .await
        .with_context(|| format!("exec in {container}"))?;
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    if let bollard::exec::StartExecResults::Attached { mut output, .. } = docker.start_exec(&created.id, None).await? {
        while let Some(chunk) = output.next().await {
            match chunk? {
                bollard::container::LogOutput::StdErr { message } => stderr.extend_from_slice(&message),
                other => stdout.extend_from_slice(&other.into_bytes()),
            }
        }
    }
    let inspect = docker.inspect_exec(&created.id).await?;
    Ok(ExecOutput {
        exit_code: inspect.exit_code.unwrap_or(-1),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    })
}

/// A throwaway container: what runs in it and how (entrypoint bypassed).
pub struct Throwaway<'a> {
    pub image: &'a str,
    pub cmd: &'a [&'a str],
    pub host_config: bollard::models::HostConfig,
    pub user: Option<&'a str>,
    pub env: Vec<String>,
    /// Uploaded before it starts.
    pub files: &'a [FileSpec],
    /// A fixed name makes a leftover from an interrupted run visible, and it is replaced.
    pub name: Option<String>,
}

impl Throwaway<'_> {
    async fn create(&self, docker: &Docker) -> Result<String> {
        if let Some(name) = &self.name {
            remove_container(docker, name).await?;
        }
        let body = ContainerCreateBody {
            image: Some(self.image.into()),
            entrypoint: Some(vec![]),
            cmd: Some(self.cmd.iter().map(|s| s.to_string()).collect()),
            user: self.user.map(str::to_string),
            env: (!self.env.is_empty()).then(|| self.env.clone()),
            host_config: Some(self.host_config.clone()),
            labels: Some(HashMap::from([(crate::layout::LABEL_THROWAWAY.to_string(), "true".to_string())])),
            ..Default::default()
        };
        let options = self.name.as_ref().map(|name| CreateContainerOptions {
            name: Some(name.clone()),
            ..Default::default()
        });
        let created = docker
            .create_container(options, body)
            .await
            .context("creating a throwaway container")?;
        if !self.files.is_empty() {
            upload(docker, &created.id, self.files).await?;
        }
        docker.start_container(&created.id, None).await?;
        Ok(created.id)
    }

    /// Runs to the end; returns both streams whole.
    pub async fn run(&self, docker: &Docker) -> Result<ExecOutput> {
        let id = self.create(docker).await?;
        let result = async {
            let exit_code = wait_exit(docker, &id).await?;
            let stdout = collect_logs(docker, &id, logs_options(true, false, false)).await;
            let stderr = collect_logs(docker, &id, logs_options(false, true, false)).await;
            Ok::<_, anyhow::Error>(ExecOutput { exit_code, stdout, stderr })
        }
        .await;
        remove_container(docker, &id).await?;
        result
    }

    /// Runs to the end, handing each stderr line to `on_line` as it comes (progress of long
    /// work); stdout is returned whole.
    pub async fn run_streamed(&self, docker: &Docker, mut on_line: impl FnMut(&str)) -> Result<ExecOutput> {
        let id = self.create(docker).await?;
        let result = async {
            let mut stream = docker.logs(&id, Some(logs_options(true, true, true)));
            let (mut stdout, mut stderr, mut partial) = (String::new(), String::new(), String::new());
            while let Some(chunk) = stream.next().await {
                match chunk? {
                    bollard::container::LogOutput::StdOut { message } => stdout.push_str(&String::from_utf8_lossy(&message)),
                    other => {
                        partial.push_str(&String::from_utf8_lossy(&other.into_bytes()));
                        while let Some(end) = partial.find('\n') {
                            let line: String = partial.drain(..=end).collect();
                            on_line(line.trim_end());
                            stderr.push_str(&line);
                        }
                    }
                }
            }
            if !partial.is_empty() {
                on_line(&partial);
                stderr.push_str(&partial);
            }
            let exit_code = wait_exit(docker, &id).await?;
            Ok::<_, anyhow::Error>(ExecOutput { exit_code, stdout, stderr })
        }
        .await;
        remove_container(docker, &id).await?;
        result
    }
}

/// Runs `cmd` once in a throwaway container of `image` (entrypoint bypassed, `files` uploaded
/// first) and returns its output and exit code; for checks on a host (free ports, what a
/// volume holds) and for reading backups without a running cluster.
pub async fn run_once(
    docker: &Docker,
    image: &str,
    cmd: &[&str],
    host_config: bollard::models::HostConfig,
    user: Option<&str>,
    files: &[FileSpec],
) -> Result<ExecOutput> {
    Throwaway {
        image,
        cmd,
        host_config,
        user,
        env: vec![],
        files,
        name: None,
    }
    .run(docker)
    .await
}

async fn wait_exit(docker: &Docker, id: &str) -> Result<i64> {
    let mut wait = docker.wait_container(id, None::<bollard::query_parameters::WaitContainerOptions>);
    let mut exit_code = 0;
    while let Some(r) = wait.next().await {
        match r {
            Ok(w) => exit_code = w.status_code,
            // bollard reports a non-zero exit as an error carrying the code.
            Err(bollard::errors::Error::DockerContainerWaitError { code, .. }) => exit_code = code,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(exit_code)
}

/// Removes container `name` once it has exited, in the background: for a throwaway container
/// whose work is done and which only exits. A pgctl that ends first leaves it exited.
pub fn remove_when_exited(docker: &Docker, name: &str) {
    let (docker, name) = (docker.clone(), name.to_string());
    tokio::spawn(async move {
        let exited = tokio::time::timeout(std::time::Duration::from_secs(60), wait_exit(&docker, &name)).await;
        if let Err(e) = remove_container(&docker, &name).await {
            tracing::debug!("removing {name} after it exited ({exited:?}): {e:#}");
        }
    });
}

fn logs_options(stdout: bool, stderr: bool, follow: bool) -> bollard::query_parameters::LogsOptions {
    bollard::query_parameters::LogsOptions {
        stdout,
        stderr,
        follow,
        ..Default::default()
    }
}

async fn collect_logs(docker: &Docker, id: &str, options: bollard::query_parameters::LogsOptions) -> String {
    let mut stream = docker.logs(id, Some(options));
    let mut out = String::new();
    while let Some(Ok(chunk)) = stream.next().await {
        out.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
    }
    out
}

/// The last `lines` lines a container wrote (stdout and stderr).
pub async fn logs_tail(docker: &Docker, container: &str, lines: usize) -> Result<String> {
    let mut options = logs_options(true, true, false);
    options.tail = lines.to_string();
    Ok(collect_logs(docker, container, options).await.trim_end().to_string())
}

/// The ID of an image by name or ID, or `None` when the engine does not have it.
pub async fn image_id(docker: &Docker, image: &str) -> Result<Option<String>> {
    match docker.inspect_image(image).await {
        Ok(info) => Ok(info.id),
        Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => Ok(None),
        Err(e) => Err(e).with_context(|| format!("inspecting image {image}")),
    }
}

pub fn is_not_found(e: &bollard::errors::Error) -> bool {
    matches!(e, bollard::errors::Error::DockerResponseServerError { status_code: 404, .. })
}

fn label_filter(label: &str) -> HashMap<String, Vec<String>> {
    HashMap::from([("label".to_string(), vec![label.to_string()])])
}

/// Names of containers carrying `label` (`key` or `key=value`), running or not.
pub async fn containers_with_label(docker: &Docker, label: &str) -> Result<Vec<bollard::models::ContainerSummary>> {
    let options = ListContainersOptions {
        all: true,
        filters: Some(label_filter(label)),
        ..Default::default()
    };
    Ok(docker.list_containers(Some(options)).await?)
}

/// Names of running containers that mount volume `volume`.
pub async fn running_users_of_volume(docker: &Docker, volume: &str) -> Result<Vec<String>> {
    let options = ListContainersOptions {
        all: false,
        filters: Some(HashMap::from([("volume".to_string(), vec![volume.to_string()])])),
        ..Default::default()
    };
    let found = docker.list_containers(Some(options)).await?;
    Ok(found
        .iter()
        .flat_map(|c| c.names.iter().flatten().map(|n| n.trim_start_matches('/').to_string()))
        .collect())
}

/// Creates a container unless one of that name exists; returns whether it was created.
pub async fn create_container(docker: &Docker, name: &str, body: ContainerCreateBody) -> Result<bool> {
    match docker.inspect_container(name, None).await {
        Ok(_) => return Ok(false),
        Err(e) if is_not_found(&e) => {}
        Err(e) => return Err(e).with_context(|| format!("inspecting container {name}")),
    }
    let options = CreateContainerOptions {
        name: Some(name.to_string()),
        ..Default::default()
    };
    docker
        .create_container(Some(options), body)
        .await
        .with_context(|| format!("creating container {name}"))?;
    Ok(true)
}

/// Stops `name` cleanly (PostgreSQL gets 60 s for its shutdown checkpoint), then removes it;
/// a container that is not there is fine.
pub async fn stop_and_remove(docker: &Docker, name: &str) -> Result<()> {
    let options = bollard::query_parameters::StopContainerOptions {
        t: Some(60),
        ..Default::default()
    };
    docker.stop_container(name, Some(options)).await.ok();
    remove_container(docker, name).await
}

/// Sends `signal` (e.g. SIGHUP) to the container's main process.
pub async fn signal(docker: &Docker, name: &str, signal: &str) -> Result<()> {
    let options = bollard::query_parameters::KillContainerOptions { signal: signal.into() };
    docker
        .kill_container(name, Some(options))
        .await
        .with_context(|| format!("sending {signal} to container {name}"))
}

pub async fn remove_container(docker: &Docker, name: &str) -> Result<()> {
    let options = RemoveContainerOptions {
        force: true,
        v: false,
        ..Default::default()
    };
    match docker.remove_container(name, Some(options)).await {
        Ok(()) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing container {name}")),
    }
}

/// A listed container's name, without Docker's leading slash.
pub fn container_name(c: &bollard::models::ContainerSummary) -> String {
    c.names
        .as_ref()
        .and_then(|n| n.first())
        .map(|n| n.trim_start_matches('/').to_string())
        .unwrap_or_default()
}

/// Removes every container, volume and network carrying `label`; returns what was removed.
pub async fn remove_labeled(docker: &Docker, label: &str) -> Result<Vec<String>> {
    let mut removed = Vec::new();
    for c in containers_with_label(docker, label).await? {
        let name = container_name(&c);
        remove_container(docker, c.id.as_deref().unwrap_or(&name)).await?;
        removed.push(format!("container {name}"));
    }
    let volumes = docker
        .list_volumes(Some(ListVolumesOptions {
            filters: Some(label_filter(label)),
        }))
        .await?;
    for v in volumes.volumes.unwrap_or_default() {
        docker
            .remove_volume(&v.name, Some(RemoveVolumeOptions { force: true }))
            .await
            .with_context(|| format!("removing volume {}", v.name))?;
        removed.push(format!("volume {}", v.name));
    }
    let networks = docker
        .list_networks(Some(ListNetworksOptions {
            filters: Some(label_filter(label)),
        }))
        .await?;
    for n in networks {
        let name = n.name.unwrap_or_default();
        docker
            .remove_network(&name)
            .await
            .with_context(|| format!("removing network {name}"))?;
        removed.push(format!("network {name}"));
    }
    Ok(removed)
}

/// Creates a labeled volume if missing.
pub async fn ensure_volume(docker: &Docker, name: &str, labels: HashMap<String, String>) -> Result<()> {
    match docker.inspect_volume(name).await {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => {
            let req = bollard::models::VolumeCreateRequest {
                name: Some(name.into()),
                labels: Some(labels),
                ..Default::default()
            };
            docker.create_volume(req).await.with_context(|| format!("creating volume {name}"))?;
            Ok(())
        }
        Err(e) => Err(e).with_context(|| format!("inspecting volume {name}")),
    }
}

/// Streams a container's logs (both streams) to stderr until it stops; used for failures.
pub async fn tail_logs(docker: &Docker, container: &str, lines: usize) -> String {
    let options = bollard::query_parameters::LogsOptions {
        stdout: true,
        stderr: true,
        tail: lines.to_string(),
        ..Default::default()
    };
    let mut stream = docker.logs(container, Some(options));
    let mut out = String::new();
    while let Some(Ok(chunk)) = stream.next().await {
        out.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
    }
    out
}
