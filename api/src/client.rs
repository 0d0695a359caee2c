//! A minimal HTTP/1.1 client over the daemon's Unix socket: one connection per request, which
//! keeps it simple and is cheap on a local socket.

use std::path::{Path, PathBuf};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;
use tokio::task::JoinHandle;

use crate::query::{
    with_query, ArchiveQuery, CheckpointQuery, ImportQuery, JobQuery, JobWaitQuery, WaitQuery,
};
use crate::{
    AdoptRequest, Checkpoint, CheckpointAndJob, CreateCheckpoint, CreateSchedule, ErrorBody,
    ErrorInfo, Event, Health, Info, Job, JobEnvelope, List, ProcessTree, RestoreRequest,
    RetentionPlan, Schedule, UpdateSchedule,
};

/// A daemon's TCP listener (`tcp_listen`), reached with its bearer token: where `migrate` sends
/// an archive.
#[derive(Debug, Clone)]
pub struct Remote {
    /// `host:port`.
    pub addr: String,
    pub token: String,
}

/// Reads a whole answer into a `Response`.
async fn collect(resp: hyper::Response<hyper::body::Incoming>) -> Result<Response, ClientError> {
    let status = resp.status();
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let content_type = header("content-type");
    let location = header("location");
    let body = resp.into_body().collect().await?.to_bytes();
    Ok(Response {
        status,
        content_type,
        location,
        body,
    })
}

impl Remote {
    /// Sends one request with `body` over a new TCP connection.
    pub async fn request<B>(
        &self,
        method: Method,
        path: &str,
        body: B,
    ) -> Result<Response, ClientError>
    where
        B: hyper::body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let stream = tokio::net::TcpStream::connect(&self.addr)
            .await
            .map_err(|source| ClientError::ConnectPeer {
                addr: self.addr.clone(),
                source,
            })?;
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", &self.addr)
            .header("authorization", format!("Bearer {}", self.token))
            .body(body)
            .map_err(|e| ClientError::Io(format!("cannot build the request: {e}")))?;
        let (resp, conn) = crate::http::exchange(stream, req).await?;
        let resp = collect(resp).await;
        conn.abort();
        resp
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to ckptd at {}: {source} ({})", path.display(), connect_advice(source))]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Another daemon's TCP listener (`migrate --to`) could not be reached.
    #[error("cannot reach the ckptd at {addr}: {source} (is ckptd running on that host with its TCP listener on (tcp_listen), at this address and port, and can this host reach it?)")]
    ConnectPeer {
        addr: String,
        source: std::io::Error,
    },
    #[error("HTTP exchange with ckptd failed: {0}")]
    Http(#[from] hyper::Error),
    #[error("ckptd answered {status}: {error}")]
    Api {
        status: StatusCode,
        error: ErrorInfo,
    },
    #[error("{0}")]
    Io(String),
    #[error("ckptd answered {status} with a body that is not what the API promises: {body}")]
    Decode { status: StatusCode, body: String },
}

impl ClientError {
    /// The daemon's structured error, when the daemon answered with one.
    pub fn api_error(&self) -> Option<(StatusCode, &ErrorInfo)> {
        match self {
            ClientError::Api { status, error } => Some((*status, error)),
            _ => None,
        }
    }
}

/// One path segment of a URL, percent-encoded: a reference a user typed (with a space, a `/`,
/// a `?`) stays one segment and names exactly what was typed.
fn seg(s: &str) -> percent_encoding::PercentEncode<'_> {
    const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(s, SEGMENT)
}

/// What to try when the daemon's socket cannot be reached, by why.
fn connect_advice(e: &std::io::Error) -> &'static str {
    match e.kind() {
        std::io::ErrorKind::PermissionDenied => {
            "you may not use this socket: run as root, or ask for membership of the group the \
             daemon gives it (socket_group)"
        }
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
            "is ckptd running? start it with `systemctl start ckptd.socket` (or run `ckptd` as \
             root); or point --socket / CKPTD_SOCKET at its socket"
        }
        _ => "check that ckptd is running and that --socket / CKPTD_SOCKET names its socket",
    }
}

/// A raw answer: status, content type and body bytes.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: StatusCode,
    pub content_type: Option<String>,
    pub location: Option<String>,
    pub body: Bytes,
}

impl Response {
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, ClientError> {
        serde_json::from_slice(&self.body).map_err(|_| ClientError::Decode {
            status: self.status,
            body: String::from_utf8_lossy(&self.body).into_owned(),
        })
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    /// The JSON body on success; the daemon's error body as `ClientError::Api` otherwise.
    pub fn into_result<T: DeserializeOwned>(self) -> Result<T, ClientError> {
        if self.status.is_success() {
            self.json()
        } else {
            Err(self.api_err())
        }
    }
    fn api_err(&self) -> ClientError {
        match serde_json::from_slice::<ErrorBody>(&self.body) {
            Ok(b) => ClientError::Api {
                status: self.status,
                error: b.error,
            },
            Err(_) => ClientError::Decode {
                status: self.status,
                body: self.text(),
            },
        }
    }
}

#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
}

impl Client {
    pub fn new(socket: impl AsRef<Path>) -> Self {
        Self {
            socket: socket.as_ref().to_owned(),
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Sends `req` to the daemon on a connection of its own (`http::exchange`): the answer
    /// and the task driving the connection.
    async fn send<B>(
        &self,
        req: Request<B>,
    ) -> Result<
        (
            hyper::Response<hyper::body::Incoming>,
            JoinHandle<hyper::Result<()>>,
        ),
        ClientError,
    >
    where
        B: hyper::body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        Ok(crate::http::exchange(self.connect().await?, req).await?)
    }

    async fn connect(&self) -> Result<UnixStream, ClientError> {
        UnixStream::connect(&self.socket)
            .await
            .map_err(|source| ClientError::Connect {
                path: self.socket.clone(),
                source,
            })
    }

    /// `POST /v1/terminals/{pid}/attach`: the terminal ckptd holds for a restored process, as
    /// one byte stream (the `terminal` module's protocol).
    pub async fn attach_terminal(
        &self,
        pid: i32,
    ) -> Result<hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>, ClientError> {
        let stream = self.connect().await?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        let req = Request::post(format!("/v1/terminals/{pid}/attach"))
            .header("host", "ckptd")
            .header("connection", "upgrade")
            .header("upgrade", crate::terminal::PROTOCOL)
            .body(http_body_util::Empty::<Bytes>::new())
            .map_err(|e| ClientError::Io(format!("cannot build the request: {e}")))?;
        let resp = sender.send_request(req).await?;
        if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            return Err(collect(resp).await?.api_err());
        }
        let up = hyper::upgrade::on(resp).await?;
        Ok(hyper_util::rt::TokioIo::new(up))
    }

    /// Sends one request with an optional raw body and returns the raw answer.
    pub async fn request(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Response, ClientError> {
        let mut req = Request::builder()
            .method(method)
            .uri(path_and_query)
            .header("host", "ckptd");
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| ClientError::Io(format!("cannot build the request: {e}")))?;
        let (resp, conn) = self.send(req).await?;
        let resp = collect(resp).await;
        conn.abort();
        resp
    }

    pub async fn get(&self, path: &str) -> Result<Response, ClientError> {
        self.request(Method::GET, path, None).await
    }

    pub async fn send_json<B: Serialize>(
        &self,
        method: Method,
        path: &str,
        body: &B,
    ) -> Result<Response, ClientError> {
        let bytes = serde_json::to_vec(body).expect("request types serialize");
        self.request(method, path, Some(bytes)).await
    }

    pub async fn health(&self) -> Result<Health, ClientError> {
        self.get("/v1/health").await?.into_result()
    }

    pub async fn info(&self) -> Result<Info, ClientError> {
        self.get("/v1/info").await?.into_result()
    }

    /// `POST /v1/checkpoints`; with `wait`, answers when the job has ended.
    pub async fn create_checkpoint(
        &self,
        req: &CreateCheckpoint,
        wait: bool,
    ) -> Result<CheckpointAndJob, ClientError> {
        let path = with_query("/v1/checkpoints", &WaitQuery { wait });
        self.send_json(Method::POST, &path, req)
            .await?
            .into_result()
    }

    /// `GET /v1/checkpoints`: one page, filtered.
    pub async fn list_checkpoints(
        &self,
        query: &CheckpointQuery,
    ) -> Result<List<Checkpoint>, ClientError> {
        self.get(&with_query("/v1/checkpoints", query))
            .await?
            .into_result()
    }

    pub async fn checkpoint(&self, reference: &str) -> Result<Checkpoint, ClientError> {
        self.get(&format!("/v1/checkpoints/{}", seg(reference)))
            .await?
            .into_result()
    }

    /// `GET /v1/checkpoints/{ref}/processes`: the tree its images hold.
    pub async fn checkpoint_processes(&self, reference: &str) -> Result<ProcessTree, ClientError> {
        self.get(&format!("/v1/checkpoints/{}/processes", seg(reference)))
            .await?
            .into_result()
    }

    pub async fn delete_checkpoint(&self, reference: &str) -> Result<(), ClientError> {
        self.delete(&format!("/v1/checkpoints/{}", seg(reference)))
            .await
    }

    async fn delete(&self, path: &str) -> Result<(), ClientError> {
        let resp = self.request(Method::DELETE, path, None).await?;
        if resp.status.is_success() {
            Ok(())
        } else {
            Err(resp.api_err())
        }
    }

    pub async fn restore(
        &self,
        reference: &str,
        req: &RestoreRequest,
        wait: bool,
    ) -> Result<Job, ClientError> {
        let path = with_query(
            &format!("/v1/checkpoints/{}/restore", seg(reference)),
            &WaitQuery { wait },
        );
        let env: JobEnvelope = self
            .send_json(Method::POST, &path, req)
            .await?
            .into_result()?;
        Ok(env.job)
    }

    /// `POST /v1/migrations`: moves a running process to another daemon, live.
    pub async fn migrate_live(
        &self,
        req: &crate::CreateMigration,
        wait: bool,
    ) -> Result<Job, ClientError> {
        let path = with_query("/v1/migrations", &WaitQuery { wait });
        let env: JobEnvelope = self
            .send_json(Method::POST, &path, req)
            .await?
            .into_result()?;
        Ok(env.job)
    }

    /// `DELETE /v1/checkpoints/{ref}?forget=true`: the record only, nothing on disk touched.
    pub async fn forget_checkpoint(&self, reference: &str) -> Result<(), ClientError> {
        self.delete(&with_query(
            &format!("/v1/checkpoints/{}", seg(reference)),
            &crate::query::DeleteQuery {
                forget: true,
                ..Default::default()
            },
        ))
        .await
    }

    /// `DELETE /v1/checkpoints/{ref}?remote_copies=true`: the checkpoint and its remote copies.
    pub async fn delete_checkpoint_everywhere(&self, reference: &str) -> Result<(), ClientError> {
        self.delete(&with_query(
            &format!("/v1/checkpoints/{}", seg(reference)),
            &crate::query::DeleteQuery {
                remote_copies: true,
                ..Default::default()
            },
        ))
        .await
    }

    /// `POST /v1/checkpoints/{ref}/push?remote=[&tag=]`: `tag` names a registry's image.
    pub async fn push(
        &self,
        reference: &str,
        remote: &str,
        tag: Option<&str>,
        keep_local: bool,
        wait: bool,
    ) -> Result<Job, ClientError> {
        self.push_with(
            reference,
            &crate::query::PushQuery {
                remote: remote.to_owned(),
                tag: tag.map(str::to_owned),
                format: None,
                keep_local,
                wait,
            },
        )
        .await
    }

    /// `POST /v1/checkpoints/{ref}/push` with every parameter.
    pub async fn push_with(
        &self,
        reference: &str,
        query: &crate::query::PushQuery,
    ) -> Result<Job, ClientError> {
        let path = with_query(&format!("/v1/checkpoints/{}/push", seg(reference)), query);
        let env: JobEnvelope = self
            .request(Method::POST, &path, None)
            .await?
            .into_result()?;
        Ok(env.job)
    }

    /// `GET /v1/remotes`.
    pub async fn remotes(&self) -> Result<List<crate::RemoteInfo>, ClientError> {
        self.get("/v1/remotes").await?.into_result()
    }

    /// `GET /v1/remotes/{name}/checkpoints`.
    /// `GET /v1/remotes/{name}/checkpoints/{ref}`.
    pub async fn remote_checkpoint(
        &self,
        remote: &str,
        reference: &str,
    ) -> Result<crate::RemoteCheckpoint, ClientError> {
        self.get(&format!(
            "/v1/remotes/{}/checkpoints/{}",
            seg(remote),
            seg(reference)
        ))
        .await?
        .into_result()
    }

    pub async fn remote_checkpoints(
        &self,
        remote: &str,
    ) -> Result<List<crate::RemoteCheckpoint>, ClientError> {
        self.get(&format!("/v1/remotes/{}/checkpoints", seg(remote)))
            .await?
            .into_result()
    }

    /// `POST /v1/remotes/{name}/checkpoints/{ref}`: a pull.
    pub async fn pull(
        &self,
        remote: &str,
        reference: &str,
        req: &crate::PullRequest,
        wait: bool,
    ) -> Result<CheckpointAndJob, ClientError> {
        let path = with_query(
            &format!("/v1/remotes/{}/checkpoints/{}", seg(remote), seg(reference)),
            &WaitQuery { wait },
        );
        self.send_json(Method::POST, &path, req)
            .await?
            .into_result()
    }

    /// `POST /v1/remotes/{name}/checkpoints/{ref}/restore`: pull and restore, one job.
    pub async fn restore_from_remote(
        &self,
        remote: &str,
        reference: &str,
        req: &RestoreRequest,
        wait: bool,
    ) -> Result<Job, ClientError> {
        let path = with_query(
            &format!(
                "/v1/remotes/{}/checkpoints/{}/restore",
                seg(remote),
                seg(reference)
            ),
            &WaitQuery { wait },
        );
        let env: JobEnvelope = self
            .send_json(Method::POST, &path, req)
            .await?
            .into_result()?;
        Ok(env.job)
    }

    /// `DELETE /v1/remotes/{name}/checkpoints/{ref}`.
    pub async fn delete_remote_checkpoint(
        &self,
        remote: &str,
        reference: &str,
    ) -> Result<(), ClientError> {
        self.delete(&format!(
            "/v1/remotes/{}/checkpoints/{}",
            seg(remote),
            seg(reference)
        ))
        .await
    }

    pub async fn checkpoint_log(&self, reference: &str) -> Result<String, ClientError> {
        let resp = self
            .get(&format!("/v1/checkpoints/{}/log", seg(reference)))
            .await?;
        if resp.status.is_success() {
            Ok(resp.text())
        } else {
            Err(resp.api_err())
        }
    }

    /// `GET /v1/jobs`: one page, filtered.
    pub async fn jobs(&self, query: &JobQuery) -> Result<List<Job>, ClientError> {
        self.get(&with_query("/v1/jobs", query))
            .await?
            .into_result()
    }

    /// `GET /v1/jobs/{id}`, long-polling up to `wait` until the job ends.
    pub async fn job(&self, id: &str, wait: Option<Duration>) -> Result<Job, ClientError> {
        let q = JobWaitQuery {
            wait: wait.map(|w| w.as_secs().max(1)),
        };
        self.get(&with_query(&format!("/v1/jobs/{}", seg(id)), &q))
            .await?
            .into_result()
    }

    pub async fn cancel_job(&self, id: &str) -> Result<Job, ClientError> {
        let env: JobEnvelope = self
            .request(Method::POST, &format!("/v1/jobs/{}/cancel", seg(id)), None)
            .await?
            .into_result()?;
        Ok(env.job)
    }

    pub async fn create_schedule(&self, req: &CreateSchedule) -> Result<Schedule, ClientError> {
        self.send_json(Method::POST, "/v1/schedules", req)
            .await?
            .into_result()
    }

    pub async fn schedules(&self) -> Result<List<Schedule>, ClientError> {
        self.get("/v1/schedules").await?.into_result()
    }

    pub async fn schedule(&self, reference: &str) -> Result<Schedule, ClientError> {
        self.get(&format!("/v1/schedules/{}", seg(reference)))
            .await?
            .into_result()
    }

    pub async fn update_schedule(
        &self,
        reference: &str,
        req: &UpdateSchedule,
    ) -> Result<Schedule, ClientError> {
        self.send_json(
            Method::PATCH,
            &format!("/v1/schedules/{}", seg(reference)),
            req,
        )
        .await?
        .into_result()
    }

    pub async fn delete_schedule(&self, reference: &str) -> Result<(), ClientError> {
        self.delete(&format!("/v1/schedules/{}", seg(reference)))
            .await
    }

    /// `POST /v1/schedules/{ref}/run`; with `wait`, answers when the job has ended.
    pub async fn run_schedule(
        &self,
        reference: &str,
        wait: bool,
    ) -> Result<CheckpointAndJob, ClientError> {
        let path = with_query(
            &format!("/v1/schedules/{}/run", seg(reference)),
            &WaitQuery { wait },
        );
        self.request(Method::POST, &path, None).await?.into_result()
    }

    pub async fn retention_plan(&self, reference: &str) -> Result<RetentionPlan, ClientError> {
        self.get(&format!("/v1/schedules/{}/retention", seg(reference)))
            .await?
            .into_result()
    }

    /// Follows `GET /v1/events` until `on_event` returns false or the daemon ends the stream.
    pub async fn events(
        &self,
        mut on_event: impl FnMut(Event, &str) -> bool,
    ) -> Result<(), ClientError> {
        use futures_util::StreamExt;
        let mut stream = self.event_stream().await?;
        while let Some(next) = stream.next().await {
            let (ev, raw) = next?;
            if !on_event(ev, &raw) {
                break;
            }
        }
        Ok(())
    }

    /// `GET /v1/events` as a stream of events (each with its raw JSON), for callers that do
    /// asynchronous work per event. Dropping the stream closes the connection.
    pub async fn event_stream(
        &self,
    ) -> Result<
        impl futures_util::Stream<Item = Result<(Event, String), ClientError>> + Unpin,
        ClientError,
    > {
        self.event_stream_since(None).await
    }

    /// The event stream after the events the daemon holds from `since` on (`?since=`: an RFC
    /// 3339 time, or how long ago, `10m`).
    pub async fn event_stream_since(
        &self,
        since: Option<&str>,
    ) -> Result<
        impl futures_util::Stream<Item = Result<(Event, String), ClientError>> + Unpin,
        ClientError,
    > {
        use eventsource_stream::Eventsource;
        use futures_util::StreamExt;
        let q = crate::query::EventQuery {
            since: since.map(str::to_owned),
        };
        let req = Request::builder()
            .uri(crate::query::with_query("/v1/events", &q))
            .header("host", "ckptd")
            .body(Full::new(Bytes::new()))
            .map_err(|e| ClientError::Io(format!("cannot build the request: {e}")))?;
        let (resp, conn) = self.send(req).await?;
        let status = resp.status();
        if !status.is_success() {
            let r = collect(resp).await?;
            conn.abort();
            return Err(r.api_err());
        }
        // The connection's task ends when the body is dropped with the stream.
        drop(conn);
        let stream = resp
            .into_body()
            .into_data_stream()
            .eventsource()
            .map(move |next| {
                let sse = next.map_err(|e| ClientError::Io(format!("reading /v1/events: {e}")))?;
                match serde_json::from_str::<Event>(&sse.data) {
                    Ok(ev) => Ok((ev, sse.data)),
                    Err(_) => Err(ClientError::Decode {
                        status,
                        body: sse.data,
                    }),
                }
            });
        Ok(Box::pin(stream))
    }

    /// Opens `GET /v1/checkpoints/{ref}/archive`: the streaming body on success.
    async fn open_archive(
        &self,
        reference: &str,
        query: ArchiveQuery,
    ) -> Result<(hyper::body::Incoming, JoinHandle<hyper::Result<()>>), ClientError> {
        let req = Request::builder()
            .uri(with_query(
                &format!("/v1/checkpoints/{}/archive", seg(reference)),
                &query,
            ))
            .header("host", "ckptd")
            .body(Full::new(Bytes::new()))
            .map_err(|e| ClientError::Io(format!("cannot build the request: {e}")))?;
        let (resp, conn) = self.send(req).await?;
        if !resp.status().is_success() {
            let r = collect(resp).await?;
            conn.abort();
            return Err(r.api_err());
        }
        Ok((resp.into_body(), conn))
    }

    /// Streams a checkpoint's archive (`query`: its compression and layout) into `out`;
    /// returns the bytes written.
    pub async fn export(
        &self,
        reference: &str,
        query: ArchiveQuery,
        out: &mut (impl tokio::io::AsyncWrite + Unpin),
    ) -> Result<u64, ClientError> {
        let (mut body, conn) = self.open_archive(reference, query).await?;
        let mut n = 0u64;
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame?.into_data() {
                out.write_all(&data)
                    .await
                    .map_err(|e| ClientError::Io(format!("writing the archive: {e}")))?;
                n += data.len() as u64;
            }
        }
        out.flush()
            .await
            .map_err(|e| ClientError::Io(format!("writing the archive: {e}")))?;
        conn.abort();
        Ok(n)
    }

    /// Uploads an archive from `input` to `POST /v1/checkpoints/import`.
    pub async fn import(
        &self,
        input: impl tokio::io::AsyncRead + Send + 'static,
        name: Option<&str>,
    ) -> Result<Checkpoint, ClientError> {
        let body = reader_body(input);
        let req = Request::builder()
            .method(Method::POST)
            .uri(import_path(name))
            .header("host", "ckptd")
            .header("content-type", "application/octet-stream")
            .body(body)
            .map_err(|e| ClientError::Io(format!("cannot build the request: {e}")))?;
        let (resp, conn) = self.send(req).await?;
        let resp = collect(resp).await;
        conn.abort();
        resp?.into_result()
    }

    pub async fn adopt(&self, req: &AdoptRequest) -> Result<Checkpoint, ClientError> {
        self.send_json(Method::POST, "/v1/checkpoints/adopt", req)
            .await?
            .into_result()
    }

    /// Moves a checkpoint to another daemon: this daemon's archive (zstd) streamed straight into
    /// `to`'s import, nothing stored in between. Returns the checkpoint as `to` catalogued it.
    pub async fn migrate(
        &self,
        reference: &str,
        to: &Remote,
        name: Option<&str>,
    ) -> Result<Checkpoint, ClientError> {
        let (body, conn) = self
            .open_archive(reference, ArchiveQuery::default())
            .await?;
        let resp = to.request(Method::POST, &import_path(name), body).await;
        conn.abort();
        resp?.into_result()
    }
}

fn import_path(name: Option<&str>) -> String {
    with_query(
        "/v1/checkpoints/import",
        &ImportQuery {
            name: name.map(str::to_owned),
        },
    )
}

/// A request body read from `input` in 256 KiB chunks.
fn reader_body(
    input: impl tokio::io::AsyncRead + Send + 'static,
) -> http_body_util::StreamBody<
    impl futures_util::Stream<Item = Result<hyper::body::Frame<Bytes>, std::io::Error>> + Send,
> {
    use futures_util::StreamExt;
    http_body_util::StreamBody::new(
        tokio_util::io::ReaderStream::with_capacity(input, 256 * 1024)
            .map(|r| r.map(hyper::body::Frame::data)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: u16, body: &str) -> Response {
        Response {
            status: StatusCode::from_u16(status).unwrap(),
            content_type: Some("application/json".into()),
            location: None,
            body: Bytes::from(body.to_owned()),
        }
    }

    #[test]
    fn an_error_body_becomes_the_daemons_error() {
        let r = response(
            404,
            r#"{"error":{"code":"not_found","message":"no checkpoint","details":{"hint":"h","advice":{"kind":"list_checkpoints"}}}}"#,
        );
        let e = r.into_result::<Checkpoint>().unwrap_err();
        let (status, info) = e.api_error().unwrap();
        assert_eq!(status.as_u16(), 404);
        assert_eq!(info.code, "not_found");
        assert_eq!(info.hint(), Some("h"));
        assert_eq!(info.advice(), Some(crate::Advice::ListCheckpoints));
    }

    #[test]
    fn a_body_that_is_not_the_contract_is_a_decode_error_with_the_body() {
        let e = response(502, "<html>bad gateway</html>")
            .into_result::<Checkpoint>()
            .unwrap_err();
        assert!(matches!(&e, ClientError::Decode { body, .. } if body.contains("bad gateway")));
        let e = response(200, "{}").into_result::<Checkpoint>().unwrap_err();
        assert!(matches!(e, ClientError::Decode { .. }), "{e}");
    }

    #[tokio::test]
    async fn a_missing_socket_says_how_to_start_ckptd() {
        let e = Client::new("/nonexistent/ckptd.sock")
            .health()
            .await
            .unwrap_err();
        let text = e.to_string();
        assert!(
            text.starts_with("cannot connect to ckptd at /nonexistent/ckptd.sock"),
            "{text}"
        );
        assert!(text.contains("is ckptd running?"), "{text}");
        assert!(!text.contains("sudo"), "{text}");
    }

    #[test]
    fn a_permission_error_names_the_socket_group() {
        let e = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        assert!(connect_advice(&e).contains("socket_group"));
    }
}
