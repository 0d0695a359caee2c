//! Podman's REST API (libpod, `/v4.0.0/libpod/...`) as ckptd uses it, on Podman's Unix socket,
//! with Podman's answers turned into ckptd's errors. Each call is one HTTP/1.1 connection: the
//! calls are few (a checkpoint or a restore makes three or four), and a streamed body (the
//! checkpoint archive, either way) holds its connection for the transfer.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{combinators::BoxBody, BodyExt, Empty, StreamBody};
use hyper::body::{Frame, Incoming};
use serde::Deserialize;

use crate::error::{Error, ErrorKind, Result};

/// The API version ckptd speaks (Podman 4.0 and later answer it).
const PREFIX: &str = "/v4.0.0/libpod";

/// A Podman container as the engine needs it (`GET /libpod/containers/{id}/json`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Container {
    pub id: String,
    pub name: String,
    pub state: State,
    /// The container's own directory (`userdata`): its bundle, its checkpoint/ directory.
    pub static_dir: PathBuf,
    #[serde(default)]
    pub config: Config,
    /// When Podman made it.
    #[serde(default)]
    pub created: Option<chrono::DateTime<chrono::Utc>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct State {
    /// Podman's word for its state (`running`, `exited`, `paused`, `created`, ...).
    pub status: String,
    pub running: bool,
    pub paused: bool,
    pub pid: i32,
    #[serde(default)]
    pub checkpointed: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Config {
    #[serde(default)]
    pub tty: bool,
}

/// What a restore answers (`printStats=true`).
#[derive(Debug, Clone, Deserialize)]
pub struct RestoreReport {
    #[serde(rename = "Id")]
    pub id: String,
}

/// What ckptd reads of Podman's description of itself (`GET /libpod/info`): whether the
/// service is rootless, its storage, its version.
#[derive(Debug, Clone, Deserialize)]
pub struct Info {
    pub host: InfoHost,
    pub store: InfoStore,
    pub version: InfoVersion,
}

#[derive(Debug, Clone, Deserialize)]
pub struct InfoHost {
    pub security: InfoSecurity,
}

#[derive(Debug, Clone, Deserialize)]
pub struct InfoSecurity {
    pub rootless: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InfoStore {
    pub graph_root: PathBuf,
    pub run_root: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
pub struct InfoVersion {
    #[serde(rename = "Version")]
    pub version: String,
}

/// Query flags of a checkpoint or a restore.
pub type Flags<'a> = &'a [(&'a str, bool)];

pub struct PodmanApi {
    socket: PathBuf,
}

type Body = BoxBody<Bytes, std::io::Error>;

impl PodmanApi {
    pub fn new(socket: PathBuf) -> PodmanApi {
        PodmanApi { socket }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    fn unreachable(&self, why: &str) -> Error {
        Error::unavailable(format!(
            "cannot reach Podman at {}: {why}",
            self.socket.display()
        ))
        .with_hint(
            "start Podman's API (systemctl start podman.socket, or podman system service \
             --time=0 unix://PATH), or point ckptd at its socket (podman_socket in the configuration, \
             --podman-socket or CKPTD_PODMAN_SOCKET)",
        )
    }

    /// Sends one request; the answer's body is the caller's to read.
    async fn send(
        &self,
        method: hyper::Method,
        path: &str,
        body: Body,
    ) -> Result<hyper::Response<Incoming>> {
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => {
                    self.unreachable("no socket there (is Podman's API service running?)")
                }
                _ => self.unreachable(&e.to_string()),
            })?;
        let req = hyper::Request::builder()
            .method(method)
            .uri(format!("{PREFIX}{path}"))
            .header("host", "podman")
            .body(body)
            .map_err(|e| Error::internal(format!("a request to Podman cannot be built: {e}")))?;
        // The connection's task ends with the answer's body.
        ckptd_api::http::exchange(stream, req)
            .await
            .map(|(resp, _conn)| resp)
            .map_err(|e| self.unreachable(&format!("the request failed: {e}")))
    }

    /// The answer's body whole, or Podman's error.
    async fn call(&self, method: hyper::Method, path: &str, body: Body) -> Result<Bytes> {
        let resp = self.send(method, path, body).await?;
        let status = resp.status();
        let bytes = read_all(resp.into_body()).await?;
        if status.is_success() {
            Ok(bytes)
        } else {
            Err(answered(status.as_u16(), &bytes))
        }
    }

    async fn json<T: serde::de::DeserializeOwned>(
        &self,
        method: hyper::Method,
        path: &str,
        body: Body,
    ) -> Result<T> {
        let bytes = self.call(method, path, body).await?;
        serde_json::from_slice(&bytes).map_err(|e| {
            Error::internal(format!(
                "Podman's answer to {path} is not what ckptd reads: {e}"
            ))
        })
    }

    /// Podman's version (`GET /libpod/version`).
    pub async fn version(&self) -> Result<String> {
        #[derive(Deserialize)]
        struct Version {
            #[serde(rename = "Version")]
            version: String,
        }
        let v: Version = self.json(hyper::Method::GET, "/version", empty()).await?;
        Ok(v.version)
    }

    /// Podman's description of itself.
    pub async fn info(&self) -> Result<Info> {
        self.json(hyper::Method::GET, "/info", empty()).await
    }

    /// The container, or `target_unavailable` naming it when Podman knows none by that name.
    pub async fn inspect(&self, id: &str) -> Result<Container> {
        self.json(
            hyper::Method::GET,
            &format!("/containers/{id}/json"),
            empty(),
        )
        .await
        .map_err(|e| match e.kind {
            ErrorKind::TargetUnavailable => {
                Error::target_unavailable(format!("Podman has no container {id:?}"))
                    .with_hint("podman ps -a lists the containers")
            }
            _ => e,
        })
    }

    /// Removes the container, running or not (`podman rm -f`).
    pub async fn remove(&self, id: &str) -> Result<()> {
        let path = format!("/containers/{id}?force=true");
        self.call(hyper::Method::DELETE, &path, empty())
            .await
            .map(|_| ())
    }

    /// Podman's checkpoint of a running container, exported: the answer's body is the archive
    /// (an uncompressed tar in Podman's layout).
    pub async fn checkpoint(&self, id: &str, flags: Flags<'_>) -> Result<Incoming> {
        let path = format!("/containers/{id}/checkpoint?export=true{}", query(flags));
        let resp = self.send(hyper::Method::POST, &path, empty()).await?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp.into_body());
        }
        let bytes = read_all(resp.into_body()).await?;
        Err(answered(status.as_u16(), &bytes))
    }

    /// Restores a checkpointed container in place from the images in its own checkpoint/
    /// directory.
    pub async fn restore(&self, id: &str, flags: Flags<'_>) -> Result<RestoreReport> {
        let path = format!("/containers/{id}/restore?keep=false{}", query(flags));
        self.json(hyper::Method::POST, &path, empty()).await
    }

    /// Creates container `name` from a checkpoint archive in Podman's layout and restores it.
    pub async fn import(
        &self,
        name: &str,
        flags: Flags<'_>,
        mut archive: tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>,
    ) -> Result<RestoreReport> {
        let path = format!(
            "/containers/import/restore?import=true&name={name}{}",
            query(flags)
        );
        let frames = futures_util::stream::poll_fn(move |cx| archive.poll_recv(cx))
            .map(|r| r.map(Frame::data));
        let body = BoxBody::new(StreamBody::new(frames));
        self.json(hyper::Method::POST, &path, body).await
    }
}

fn empty() -> Body {
    Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed()
}

async fn read_all(body: Incoming) -> Result<Bytes> {
    body.collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|e| Error::unavailable(format!("Podman's answer was cut off: {e}")))
}

/// `&k=v` for each flag (names and values are ckptd's own: `true`, `false`).
fn query(flags: Flags<'_>) -> String {
    flags.iter().map(|(k, v)| format!("&{k}={v}")).collect()
}

/// An error Podman answered with (`{"cause","message","response"}`), in ckptd's terms.
fn answered(status: u16, body: &[u8]) -> Error {
    #[derive(Deserialize)]
    struct Message {
        message: String,
    }
    let message = serde_json::from_slice::<Message>(body)
        .map(|m| m.message)
        .unwrap_or_else(|_| String::from_utf8_lossy(body).trim().to_owned());
    let kind = match status {
        404 => ErrorKind::TargetUnavailable,
        409 => ErrorKind::Conflict,
        400 => ErrorKind::InvalidRequest,
        _ => ErrorKind::CriuFailed,
    };
    Error::new(kind, format!("Podman: {message}")).with("podman_status", status)
}
