//! The Docker Engine API as ckptd uses it, through `bollard` on Docker's Unix socket (one pooled
//! client, not a connection per call), with Docker's answers turned into ckptd's errors. One call
//! is raw: starting a container from a checkpoint (`POST /containers/{id}/start?checkpoint=`),
//! which bollard's start options do not offer.

use std::path::{Path, PathBuf};

use bollard::models::{ContainerCreateBody, ContainerInspectResponse};
use bollard::query_parameters::{
    CreateContainerOptions, KillContainerOptions, RemoveContainerOptions,
};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;

use crate::error::{Error, ErrorKind, Result};

/// A Docker container as the engine needs it, read from `GET /containers/{id}/json`.
#[derive(Debug, Clone)]
pub struct Container {
    /// Docker's full id.
    pub id: String,
    /// Without Docker's leading `/`.
    pub name: String,
    pub running: bool,
    pub paused: bool,
    pub pid: i32,
    /// Docker's word for its state (`created`, `exited`, ...).
    pub status: String,
    pub tty: bool,
    /// The container's labels (`Config.Labels`).
    pub labels: std::collections::HashMap<String, String>,
}

impl From<ContainerInspectResponse> for Container {
    fn from(c: ContainerInspectResponse) -> Self {
        let state = c.state.unwrap_or_default();
        Container {
            id: c.id.unwrap_or_default(),
            name: c
                .name
                .unwrap_or_default()
                .trim_start_matches('/')
                .to_owned(),
            running: state.running.unwrap_or(false),
            paused: state.paused.unwrap_or(false),
            pid: state.pid.unwrap_or(0) as i32,
            status: state
                .status
                .map(|s| s.to_string())
                .unwrap_or_else(|| "unknown".into()),
            tty: c.config.as_ref().and_then(|c| c.tty).unwrap_or(false),
            labels: c.config.and_then(|c| c.labels).unwrap_or_default(),
        }
    }
}

/// What `GET /info` says that matters here.
pub struct DockerInfo {
    pub experimental: bool,
    pub root_dir: PathBuf,
    pub version: Option<String>,
}

pub struct DockerApi {
    socket: PathBuf,
    /// Made at the first call that finds Docker's socket (dockerd may start after ckptd).
    client: tokio::sync::OnceCell<bollard::Docker>,
}

/// How long one Docker call may take (a start from a checkpoint runs CRIU's whole restore).
const TIMEOUT_SECS: u64 = 600;

impl DockerApi {
    pub fn new(socket: PathBuf) -> DockerApi {
        DockerApi {
            socket,
            client: tokio::sync::OnceCell::new(),
        }
    }

    /// The pooled client; bollard refuses to make one while the socket is missing, so a failure
    /// is retried at the next call.
    async fn client(&self) -> Result<&bollard::Docker> {
        self.client
            .get_or_try_init(|| async {
                bollard::Docker::connect_with_unix(
                    &self.socket.display().to_string(),
                    TIMEOUT_SECS,
                    bollard::API_DEFAULT_VERSION,
                )
            })
            .await
            .map_err(|e| self.error(e))
    }

    fn unreachable(&self, why: &str) -> Error {
        Error::unavailable(format!(
            "cannot reach Docker at {}: {why}",
            self.socket.display()
        ))
        .with_hint("start dockerd, or point ckptd at its socket (docker_socket in the configuration, --docker-socket or CKPTD_DOCKER_SOCKET)")
    }

    /// Docker's answer as ckptd's error: its message, its status mapped to ours; a Docker that
    /// cannot be reached is `unavailable` with the fix.
    fn error(&self, e: bollard::errors::Error) -> Error {
        match e {
            bollard::errors::Error::DockerResponseServerError {
                status_code,
                message,
            } => answered(status_code, &message),
            bollard::errors::Error::SocketNotFoundError(_) => {
                self.unreachable("no socket there (is dockerd running?)")
            }
            other => self.unreachable(&connect_cause(&other)),
        }
    }

    /// The API socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    pub async fn info(&self) -> Result<DockerInfo> {
        let i = self
            .client()
            .await?
            .info()
            .await
            .map_err(|e| self.error(e))?;
        Ok(DockerInfo {
            version: i.server_version.clone(),
            experimental: i.experimental_build.unwrap_or(false),
            root_dir: PathBuf::from(
                i.docker_root_dir
                    .unwrap_or_else(|| "/var/lib/docker".into()),
            ),
        })
    }

    /// The container, or `target_unavailable` naming it when Docker knows none by that name.
    pub async fn inspect(&self, id: &str) -> Result<Container> {
        Ok(self.inspect_raw(id).await?.into())
    }

    /// The full id of the container `id` names (an id, a unique prefix of one, or a name), from
    /// Docker's list, which reads its snapshot of the containers: an inspect waits while the
    /// container is locked, as it is for the whole of its start from a checkpoint.
    pub async fn full_id(&self, id: &str) -> Result<Option<String>> {
        let options = bollard::query_parameters::ListContainersOptions {
            all: true,
            ..Default::default()
        };
        let list = self
            .client()
            .await?
            .list_containers(Some(options))
            .await
            .map_err(|e| self.error(e))?;
        let ids = || list.iter().filter_map(|c| c.id.as_deref());
        let named = |c: &&bollard::models::ContainerSummary| {
            c.names
                .iter()
                .flatten()
                .any(|n| n.strip_prefix('/') == Some(id))
        };
        let exact = ids().find(|c| *c == id);
        let by_name = list.iter().find(named).and_then(|c| c.id.as_deref());
        let prefixed: Vec<&str> = ids().filter(|c| c.starts_with(id)).collect();
        let unique_prefix = (prefixed.len() == 1).then(|| prefixed[0]);
        Ok(exact.or(by_name).or(unique_prefix).map(str::to_owned))
    }

    /// Docker's whole inspect answer.
    pub async fn inspect_raw(&self, id: &str) -> Result<ContainerInspectResponse> {
        self.client()
            .await?
            .inspect_container(id, None)
            .await
            .map_err(|e| match self.error(e) {
                e if e.kind == ErrorKind::TargetUnavailable => {
                    Error::target_unavailable(format!("Docker has no container {id:?}"))
                        .with_hint("docker ps -a lists the containers")
                }
                e => e,
            })
    }

    pub async fn pause(&self, id: &str) -> Result<()> {
        let r = self.client().await?.pause_container(id).await;
        r.map_err(|e| self.error(e))
    }

    pub async fn unpause(&self, id: &str) -> Result<()> {
        let r = self.client().await?.unpause_container(id).await;
        r.map_err(|e| self.error(e))
    }

    /// SIGKILL through Docker, which records the exit (`docker ps -a`: Exited (137)).
    pub async fn kill(&self, id: &str) -> Result<()> {
        let r = self
            .client()
            .await?
            .kill_container(id, None::<KillContainerOptions>)
            .await;
        r.map_err(|e| self.error(e))
    }

    pub async fn create(&self, name: &str, body: ContainerCreateBody) -> Result<()> {
        let options = CreateContainerOptions {
            name: Some(name.to_owned()),
            ..Default::default()
        };
        let r = self
            .client()
            .await?
            .create_container(Some(options), body)
            .await;
        r.map(|_| ()).map_err(|e| self.error(e))
    }

    /// Removes the container (`docker rm -f`).
    pub async fn remove(&self, id: &str) -> Result<()> {
        let options = RemoveContainerOptions {
            force: true,
            ..Default::default()
        };
        let r = self
            .client()
            .await?
            .remove_container(id, Some(options))
            .await;
        r.map_err(|e| self.error(e))
    }

    /// Docker's own checkpoint of a running container into `<dir>/<checkpoint_id>`, leaving it
    /// running (or paused) as it is.
    pub async fn checkpoint(&self, id: &str, checkpoint_id: &str, dir: &Path) -> Result<()> {
        let options = bollard::container::CreateCheckpointOptions {
            checkpoint_id: checkpoint_id.to_owned(),
            checkpoint_dir: Some(dir.display().to_string()),
            exit: false,
        };
        let r = self.client().await?.create_checkpoint(id, options).await;
        r.map_err(|e| self.error(e))
    }

    /// `POST /containers/{id}/start?checkpoint={name}`: starts a created container from a
    /// checkpoint in its own checkpoints directory. Raw, as bollard's start takes no checkpoint.
    pub async fn start_from_checkpoint(&self, id: &str, checkpoint: &str) -> Result<()> {
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .map_err(|e| self.unreachable(&e.to_string()))?;
        let req = hyper::Request::post(format!("/containers/{id}/start?checkpoint={checkpoint}"))
            .header("host", "docker")
            .body(Empty::<Bytes>::new())
            .map_err(|e| Error::internal(format!("a request to Docker cannot be built: {e}")))?;
        let (resp, conn) = ckptd_api::http::exchange(stream, req)
            .await
            .map_err(|e| self.unreachable(&e.to_string()))?;
        let result = async {
            let status = resp.status();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| self.unreachable(&e.to_string()))?
                .to_bytes();
            if status.is_success() {
                return Ok(());
            }
            #[derive(serde::Deserialize)]
            struct Message {
                message: String,
            }
            let message = serde_json::from_slice::<Message>(&body)
                .map(|m| m.message)
                .unwrap_or_else(|_| String::from_utf8_lossy(&body).into_owned());
            Err(answered(status.as_u16(), &message))
        }
        .await;
        conn.abort();
        result
    }
}

/// An error Docker answered with, in ckptd's terms.
fn answered(status: u16, message: &str) -> Error {
    let kind = match status {
        404 => ErrorKind::TargetUnavailable,
        409 => ErrorKind::Conflict,
        400 => ErrorKind::InvalidRequest,
        _ => ErrorKind::CriuFailed,
    };
    Error::new(kind, format!("Docker: {message}")).with("docker_status", status)
}

/// The innermost cause of a failed connection (bollard wraps hyper, which wraps the socket's
/// error): "No such file or directory", not a chain of wrappers.
fn connect_cause(e: &bollard::errors::Error) -> String {
    let mut cause: &dyn std::error::Error = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}
