use std::time::Duration;

use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use ckptd_api::{
    CheckpointAndJob, CreateCheckpoint, CreateSchedule, CriuInfo, Health, Info, Job, JobEnvelope,
    JobState, List, RestoreRequest, RetentionPlan, Schedule, StorageInfo, UpdateSchedule,
};

use super::error::ApiJson;
use super::{query, AppState};
use crate::auth::Caller;
use crate::error::{Error, Result};

/// How long `?wait=true` on a POST waits for its job (a dump of many GiB can take minutes).
const POST_WAIT: Duration = Duration::from_secs(3600);

pub async fn health() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
    })
}

pub async fn info(State(s): State<AppState>) -> Json<Info> {
    let i = &s.info;
    let runtimes = s.service.runtimes().await;
    let used_bytes = s.service.used_bytes().await.unwrap_or(0);
    Json(Info {
        version: env!("CARGO_PKG_VERSION").into(),
        kernel: crate::sys::kernel_release(),
        criu: CriuInfo {
            path: i.criu.path.as_ref().map(|p| p.display().to_string()),
            version: i.criu.version.clone(),
            check_ok: i.criu.check_ok,
            check_output: i.criu.check_output.clone(),
            features: i.criu.features.clone(),
            kernel_probe_cached: i.criu.kernel_probe_cached,
        },
        runtimes,
        storage: StorageInfo {
            state_dir: i.state_dir.display().to_string(),
            checkpoints_dir: i.checkpoints_dir.display().to_string(),
            free_bytes: crate::sys::free_bytes(&i.checkpoints_dir).unwrap_or(0),
            used_bytes,
            unknown_dirs: i.unknown_dirs.clone(),
        },
        workers: i.workers,
        queue_capacity: i.queue_capacity,
    })
}

/// A finished job's error as an answer: the job's status code and error body, naming the job.
fn job_error(job: &Job) -> Response {
    let mut err = job.error.as_ref().map(Error::from_info).unwrap_or_else(|| {
        Error::internal(format!("job ended {} without an error", job.state.as_str()))
    });
    err = err
        .with("job_id", job.id.to_string())
        .with("checkpoint_id", job.checkpoint_id.to_string());
    err.into_response()
}

/// How a `?wait=true` request's job ended.
enum Waited {
    Succeeded(Box<Job>),
    /// The job's error status and body.
    Failed(Response),
    /// Still going when the wait ran out; answered like an asynchronous request.
    NotYet,
}

async fn wait_for(s: &AppState, caller: &Caller, job: &Job) -> Result<Waited> {
    let job = s
        .service
        .wait(caller, &job.id.to_string(), POST_WAIT)
        .await?;
    Ok(match job.state {
        JobState::Succeeded => Waited::Succeeded(Box::new(job)),
        st if st.is_finished() => Waited::Failed(job_error(&job)),
        _ => Waited::NotYet,
    })
}

pub async fn create_checkpoint(
    State(s): State<AppState>,
    ConnectInfo(caller): ConnectInfo<Caller>,
    uri: Uri,
    ApiJson(body): ApiJson<CreateCheckpoint>,
) -> Result<Response> {
    let wait = query::wait_flag(&uri)?;
    let (checkpoint, job) = s.service.submit_checkpoint(&caller, body).await?;
    checkpoint_answer(&s, &caller, checkpoint, job, wait).await
}

/// The answer to a request that queued a checkpoint: 202 with the job's location, or with
/// `?wait=true` 201 once it is ready (the job's error when it fails).
async fn checkpoint_answer(
    s: &AppState,
    caller: &Caller,
    checkpoint: ckptd_api::Checkpoint,
    job: Job,
    wait: bool,
) -> Result<Response> {
    let location = format!("/v1/jobs/{}", job.id);
    if wait {
        match wait_for(s, caller, &job).await? {
            Waited::Failed(answer) => return Ok(answer),
            Waited::NotYet => {}
            Waited::Succeeded(job) => {
                let checkpoint = s
                    .service
                    .checkpoint(caller, &checkpoint.id.to_string())
                    .await?;
                let body = Json(CheckpointAndJob {
                    checkpoint,
                    job: *job,
                });
                return Ok((StatusCode::CREATED, body).into_response());
            }
        }
    }
    let checkpoint = s
        .service
        .checkpoint(caller, &checkpoint.id.to_string())
        .await?;
    let job = s.service.job(caller, &job.id.to_string()).await?;
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        Json(CheckpointAndJob { checkpoint, job }),
    )
        .into_response())
}

pub async fn list_checkpoints(
    State(s): State<AppState>,
    ConnectInfo(caller): ConnectInfo<Caller>,
    uri: Uri,
) -> Result<Response> {
    let filter = query::checkpoint_filter(&uri)?;
    let key = format!("{:?}|{filter:?}", caller.owner_filter());
    let body = s
        .lists
        .get_or_fill(
            key,
            || s.service.checkpoints_version(),
            || async {
                let list = s.service.list_checkpoints(&caller, filter).await?;
                serde_json::to_vec(&list)
                    .map(bytes::Bytes::from)
                    .map_err(|e| Error::internal(format!("cannot serialize the list: {e}")))
            },
        )
        .await?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

pub async fn get_checkpoint(
    State(s): State<AppState>,
    ConnectInfo(caller): ConnectInfo<Caller>,
    Path(reference): Path<String>,
) -> Result<Json<ckptd_api::Checkpoint>> {
    Ok(Json(s.service.checkpoint(&caller, &reference).await?))
}

pub async fn delete_checkpoint(
    State(s): State<AppState>,
    ConnectInfo(caller): ConnectInfo<Caller>,
    Path(reference): Path<String>,
    uri: Uri,
) -> Result<StatusCode> {
    let q = query::delete(&uri)?;
    if q.remote_copies {
        let cp = s.service.checkpoint(&caller, &reference).await?;
        s.service.delete_everywhere(&caller, &cp, q.forget).await?;
    } else {
        s.service
            .delete_checkpoint(&caller, &reference, q.forget)
            .await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// A job queued on an existing checkpoint: 202 with its location, or with `?wait=true` 200 once
/// it succeeded (the job's error when it fails).
async fn job_answer(s: &AppState, caller: &Caller, job: Job, wait: bool) -> Result<Response> {
    let location = format!("/v1/jobs/{}", job.id);
    if wait {
        match wait_for(s, caller, &job).await? {
            Waited::Failed(answer) => return Ok(answer),
            Waited::NotYet => {}
            Waited::Succeeded(job) => {
                return Ok((StatusCode::OK, Json(JobEnvelope { job: *job })).into_response())
            }
        }
    }
    let job = s.service.job(caller, &job.id.to_string()).await?;
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        Json(JobEnvelope { job }),
    )
        .into_response())
}

pub async fn push_checkpoint(
    State(s): State<AppState>,
    ConnectInfo(caller): ConnectInfo<Caller>,
    Path(reference): Path<String>,
    uri: Uri,
) -> Result<Response> {
    let q = query::push(&uri)?;
    let job = s
        .service
        .submit_push(
            &caller,
            &reference,
            &q.remote,
            (q.tag, q.format),
            q.keep_local,
        )
        .await?;
    job_answer(&s, &caller, job, q.wait).await
}

pub async fn list_remotes(State(s): State<AppState>) -> Json<List<ckptd_api::RemoteInfo>> {
    let infos = futures_util::future::join_all(s.service.remotes().all().map(|r| r.info())).await;
    Json(List {
        items: infos,
        next: None,
    })
}

pub async fn list_remote_checkpoints(
    State(s): State<AppState>,
    ConnectInfo(caller): ConnectInfo<Caller>,
    Path(remote): Path<String>,
) -> Result<Json<List<ckptd_api::RemoteCheckpoint>>> {
    let items = s.service.remote_checkpoints(&caller, &remote).await?;
    Ok(Json(List { items, next: None }))
}

pub async fn get_remote_checkpoint(
    State(s): State<AppState>,
    ConnectInfo(caller): ConnectInfo<Caller>,
    Path((remote, reference)): Path<(String, String)>,
) -> Result<Json<ckptd_api::RemoteCheckpoint>> {
    Ok(Json(
        s.service
            .remote_checkpoint(&caller, &remote, &reference)
            .await?,
    ))
}

pub async fn pull_checkpoint(
    State(s): State<AppState>,
    ConnectInfo(caller): ConnectInfo<Caller>,
    Path((remote, reference)): Path<(String, String)>,
    uri: Uri,
    ApiJson(body): ApiJson<ckptd_api::PullRequest>,
) -> Result<Response> {
    let wait = query::wait_flag(&uri)?;
    let (checkpoint, job) = s
        .service
        .submit_pull(&caller, &remote, &reference, body)
        .await?;
    checkpoint_answer(&s, &caller, checkpoint, job, wait).await
}

pub async fn delete_remote_checkpoint(
    State(s): State<AppState>,
    ConnectInfo(caller): ConnectInfo<Caller>,
    Path((remote, reference)): Path<(String, String)>,
) -> Result<StatusCode> {
    s.service
        .delete_remote_checkpoint(&caller, &remote, &reference)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn restore_remote_checkpoint(
    State(s): State<AppState>,
    ConnectInfo(caller): ConnectInfo<Caller>,
    Path((remote, reference)): Path<(String, String)>,
    uri: Uri,
    ApiJson(body): ApiJson<RestoreRequest>,
) -> Result<Response> {
    let wait = query::wait_flag(&uri)?;
    let job = s
        .service
        .submit_remote_restore(&caller, &remote, &reference, body)
        .await?;
    job_answer(&s, &caller, job, wait).await
}

pub async fn restore_checkpoint(
    State(s): State<AppState>,
    ConnectInfo(caller): ConnectInfo<Caller>,
    Path(reference): Path<String>,
    uri: Uri,
    ApiJson(body): ApiJson<RestoreRequest>,
) -> Result<Response> {
    let wait = query::wait_flag(&uri)?;
    let job = s.service.submit_restore(&caller, &reference, body).await?;
    job_answer(&s, &caller, job, wait).await
}

/// `POST /v1/migrations`: move a running process to another daemon, live.
pub async fn create_migration(
    State(s): State<AppState>,
    ConnectInfo(caller): ConnectInfo<Caller>,
    uri: Uri,
    ApiJson(body): ApiJson<ckptd_api::CreateMigration>,
) -> Result<Response> {
    let wait = query::wait_flag(&uri)?;
    let (_checkpoint, job) = s.service.submit_migration(&caller, body).await?;
    job_answer(&s, &caller, job, wait).await
}

/// `POST /v1/migrations/incoming`: the destination's side of a live migration, for the source
/// daemon (root: the TCP listener's token). The connection is upgraded to `ckptd-live/1`.
pub async fn incoming_migration(
    State(s): State<AppState>,
    ConnectInfo(caller): ConnectInfo<Caller>,
    mut req: axum::extract::Request,
) -> Result<Response> {
    use crate::remote::live;
    if !caller.is_admin() {
        return Err(crate::auth::forbidden(
            "only another daemon, with this daemon's TCP token, sends a live migration here",
        ));
    }
    let asks = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case(live::PROTOCOL));
    if !asks {
        return Err(crate::error::Error::invalid(format!(
            "this route is a daemon's: it needs \"Connection: upgrade\" and \"Upgrade: {}\"; \
             to migrate a process, POST /v1/migrations on the source daemon",
            live::PROTOCOL
        )));
    }
    let Some(on) = req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>() else {
        return Err(crate::error::Error::invalid(
            "this connection cannot be upgraded (HTTP/1.1 only)",
        ));
    };
    let service = s.service.clone();
    tokio::spawn(async move {
        match on.await {
            Ok(up) => {
                service
                    .receive_migration(hyper_util::rt::TokioIo::new(up), "the source daemon".into())
                    .await
            }
            Err(e) => tracing::warn!(error = %e, "a live migration's upgrade failed"),
        }
    });
    Ok((
        StatusCode::SWITCHING_PROTOCOLS,
        [
            (header::CONNECTION, "upgrade"),
            (header::UPGRADE, live::PROTOCOL),
        ],
    )
        .into_response())
}

/// `POST /v1/terminals/{pid}/attach`: the caller's connection joined to the terminal ckptd holds
/// for a restored process (root, or the process's own user), upgraded to `ckptd-tty/1`.
pub async fn attach_terminal(
    State(s): State<AppState>,
    ConnectInfo(caller): ConnectInfo<Caller>,
    Path(pid): Path<String>,
    mut req: axum::extract::Request,
) -> Result<Response> {
    use ckptd_api::terminal::PROTOCOL;
    let pid: i32 = pid
        .parse()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| Error::invalid(format!("{pid:?} is not a pid")))?;
    let socket = s.service.terminal(&caller, pid)?;
    let asks = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case(PROTOCOL));
    if !asks {
        return Err(Error::invalid(format!(
            "attaching needs \"Connection: upgrade\" and \"Upgrade: {PROTOCOL}\"; from a \
             terminal: ckpt attach {pid}"
        )));
    }
    let Some(on) = req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>() else {
        return Err(Error::invalid(
            "this connection cannot be upgraded (HTTP/1.1 only)",
        ));
    };
    let mut holder = tokio::net::UnixStream::connect(&socket)
        .await
        .map_err(|e| {
            Error::unavailable(format!("the terminal of pid {pid} does not answer: {e}"))
        })?;
    tokio::spawn(async move {
        match on.await {
            Ok(up) => {
                let mut client = hyper_util::rt::TokioIo::new(up);
                let _ = tokio::io::copy_bidirectional(&mut client, &mut holder).await;
            }
            Err(e) => tracing::warn!(error = %e, "a terminal attach's upgrade failed"),
        }
    });
    Ok((
        StatusCode::SWITCHING_PROTOCOLS,
        [(header::CONNECTION, "upgrade"), (header::UPGRADE, PROTOCOL)],
    )
        .into_response())
}

pub async fn checkpoint_log(
    State(s): State<AppState>,
    ConnectInfo(caller): ConnectInfo<Caller>,
    Path(reference): Path<String>,
) -> Result<Response> {
    let text = s.service.logs(&caller, &reference).await?;
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response())
}

/// The process tree a checkpoint holds (pid, parent, command), from its images.
pub async fn checkpoint_processes(
    State(s): State<AppState>,
    ConnectInfo(caller): ConnectInfo<Caller>,
    Path(reference): Path<String>,
) -> Result<Response> {
    Ok(Json(s.service.processes(&caller, &reference).await?).into_response())
}

/// Streams a ready checkpoint as a tar archive (zstd by default): ckptd's own layout with its
/// manifest last, or Podman's.
pub async fn export_checkpoint(
    State(s): State<AppState>,
    ConnectInfo(caller): ConnectInfo<Caller>,
    Path(reference): Path<String>,
    uri: Uri,
) -> Result<Response> {
    let q = query::archive(&uri)?;
    let compression = q.compression;
    let (cp, rx) = s.portability.export(&caller, &reference, q).await?;
    let body = axum::body::Body::from_stream(tokio_stream_of(rx));
    let disposition = format!(
        "attachment; filename=\"{}.{}\"",
        cp.name,
        compression.extension()
    );
    Ok((
        [
            (header::CONTENT_TYPE, compression.content_type().to_owned()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        body,
    )
        .into_response())
}

/// The chunks an exporter sends, as a body stream.
fn tokio_stream_of(
    mut rx: tokio::sync::mpsc::Receiver<std::io::Result<bytes::Bytes>>,
) -> impl futures_util::Stream<Item = std::io::Result<bytes::Bytes>> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// Imports an archive (the raw body; zstd, gzip or plain tar) as a new ready checkpoint.
pub async fn import_checkpoint(
    State(s): State<AppState>,
    ConnectInfo(caller): ConnectInfo<Caller>,
    uri: Uri,
    headers: axum::http::HeaderMap,
    body: axum::body::Body,
) -> Result<Response> {
    use futures_util::TryStreamExt;
    let name = query::import_name(&uri)?;
    // `Expect: 100-continue` (curl's, for a large body): the client sends the body once the
    // server reads it. One refused before it is read (a name taken) is answered without it.
    let waits_to_send = headers
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let upload = Upload::new(body);
    let reader = tokio_util::io::StreamReader::new(
        upload
            .clone()
            .map_err(|e| std::io::Error::other(format!("reading the upload: {e}"))),
    );
    let imported = s.portability.import(&caller, reader, name).await;
    if upload.started() || !waits_to_send {
        upload.drain().await;
    }
    let cp = imported?;
    Ok(created(format!("/v1/checkpoints/{}", cp.id), cp))
}

/// An upload's body, shared so that what the import left unread can be read after it. A
/// request refused part way (an archive over the import limit, a name taken) is answered once
/// its body is in: answered before, the connection closes under a client still writing, which
/// meets a closed socket (EPIPE, or SIGPIPE) and may never read the answer (`ckpt import` of
/// an archive over the limit was killed by SIGPIPE, under load, 1 time in 40).
#[derive(Clone)]
struct Upload(std::sync::Arc<std::sync::Mutex<(axum::body::BodyDataStream, bool)>>);

/// How long an upload's rest is read for before the answer goes anyway (and the connection
/// closes under the client).
const DRAIN_FOR: Duration = Duration::from_secs(10);

impl Upload {
    fn new(body: axum::body::Body) -> Upload {
        let body = (body.into_data_stream(), false);
        Upload(std::sync::Arc::new(std::sync::Mutex::new(body)))
    }

    /// Whether the body was read from.
    fn started(&self) -> bool {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .1
    }

    /// Reads and drops what is left of the body, for at most `DRAIN_FOR`.
    async fn drain(mut self) {
        use futures_util::StreamExt;
        let rest = async { while let Some(Ok(_)) = self.next().await {} };
        if tokio::time::timeout(DRAIN_FOR, rest).await.is_err() {
            tracing::info!(
                "an upload's rest was still coming after {DRAIN_FOR:?}; answered without it"
            );
        }
    }
}

impl futures_util::Stream for Upload {
    type Item = std::result::Result<bytes::Bytes, axum::Error>;

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        let mut body = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        body.1 = true;
        std::pin::Pin::new(&mut body.0).poll_next(cx)
    }
}

/// Catalogues an existing image directory.
pub async fn adopt_checkpoint(
    State(s): State<AppState>,
    ConnectInfo(caller): ConnectInfo<Caller>,
    ApiJson(body): ApiJson<ckptd_api::AdoptRequest>,
) -> Result<Response> {
    let cp = s.portability.adopt(&caller, body).await?;
    Ok(created(format!("/v1/checkpoints/{}", cp.id), cp))
}

/// 201 with the new resource's Location and its JSON.
fn created<T: serde::Serialize>(location: String, body: T) -> Response {
    (
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(body),
    )
        .into_response()
}

pub async fn list_jobs(
    State(s): State<AppState>,
    ConnectInfo(caller): ConnectInfo<Caller>,
    uri: Uri,
) -> Result<Json<List<Job>>> {
    let filter = query::job_filter(&uri)?;
    Ok(Json(s.service.list_jobs(&caller, filter).await?))
}

pub async fn get_job(
    State(s): State<AppState>,
    ConnectInfo(caller): ConnectInfo<Caller>,
    Path(id): Path<String>,
    uri: Uri,
) -> Result<Json<Job>> {
    let job = match query::wait_seconds(&uri)? {
        Some(secs) => {
            s.service
                .wait(&caller, &id, Duration::from_secs(secs))
                .await?
        }
        None => s.service.job(&caller, &id).await?,
    };
    Ok(Json(job))
}

pub async fn cancel_job(
    State(s): State<AppState>,
    ConnectInfo(caller): ConnectInfo<Caller>,
    Path(id): Path<String>,
) -> Result<Response> {
    let job = s.service.cancel(&caller, &id).await?;
    Ok((StatusCode::ACCEPTED, Json(JobEnvelope { job })).into_response())
}

pub async fn create_schedule(
    State(s): State<AppState>,
    ConnectInfo(caller): ConnectInfo<Caller>,
    ApiJson(body): ApiJson<CreateSchedule>,
) -> Result<Response> {
    let schedule = s.schedules.create(&caller, body).await?;
    Ok(created(format!("/v1/schedules/{}", schedule.id), schedule))
}

pub async fn list_schedules(
    State(s): State<AppState>,
    ConnectInfo(caller): ConnectInfo<Caller>,
) -> Result<Json<List<Schedule>>> {
    Ok(Json(s.schedules.list(&caller).await?))
}

pub async fn get_schedule(
    State(s): State<AppState>,
    ConnectInfo(caller): ConnectInfo<Caller>,
    Path(reference): Path<String>,
) -> Result<Json<Schedule>> {
    Ok(Json(s.schedules.get(&caller, &reference).await?))
}

pub async fn update_schedule(
    State(s): State<AppState>,
    ConnectInfo(caller): ConnectInfo<Caller>,
    Path(reference): Path<String>,
    ApiJson(body): ApiJson<UpdateSchedule>,
) -> Result<Json<Schedule>> {
    Ok(Json(s.schedules.update(&caller, &reference, body).await?))
}

pub async fn delete_schedule(
    State(s): State<AppState>,
    ConnectInfo(caller): ConnectInfo<Caller>,
    Path(reference): Path<String>,
) -> Result<StatusCode> {
    s.schedules.delete(&caller, &reference).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Runs a schedule now; answered as `POST /v1/checkpoints` is.
pub async fn run_schedule(
    State(s): State<AppState>,
    ConnectInfo(caller): ConnectInfo<Caller>,
    Path(reference): Path<String>,
    uri: Uri,
) -> Result<Response> {
    let wait = query::wait_flag(&uri)?;
    let (checkpoint, job) = s.schedules.run_now(&caller, &reference).await?;
    checkpoint_answer(&s, &caller, checkpoint, job, wait).await
}

pub async fn schedule_retention(
    State(s): State<AppState>,
    ConnectInfo(caller): ConnectInfo<Caller>,
    Path(reference): Path<String>,
) -> Result<Json<RetentionPlan>> {
    Ok(Json(s.schedules.retention_plan(&caller, &reference).await?))
}

/// Prometheus metrics (text exposition format 0.0.4). Counts only; any caller who can connect.
pub async fn metrics(
    State(s): State<AppState>,
    ConnectInfo(caller): ConnectInfo<Caller>,
) -> Result<Response> {
    let schedules = s.schedules.gauges(&caller).await?;
    let text = s
        .service
        .metrics_text(&caller, s.info.workers, schedules)
        .await?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

/// Server-sent events: each `data:` line one JSON event the caller may see. A consumer that
/// falls more than `telemetry::EVENT_BUFFER` events behind is disconnected (it never slows a
/// worker); keep-alive comments every 15 s; the stream ends when the daemon stops.
pub async fn events(
    State(s): State<AppState>,
    ConnectInfo(caller): ConnectInfo<Caller>,
    uri: Uri,
    headers: axum::http::HeaderMap,
) -> Result<
    axum::response::sse::Sse<
        impl futures_util::Stream<
            Item = std::result::Result<axum::response::sse::Event, std::convert::Infallible>,
        >,
    >,
> {
    use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
    use tokio::sync::broadcast::error::RecvError;
    // A client that reconnects says the last event it saw; it gets every held one after it.
    let after = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let since = query::events(&uri)?
        .since
        .as_deref()
        .map(since_time)
        .transpose()?;
    let sub = match (after, since) {
        (None, Some(t)) => s.service.events().subscribe_since(t),
        _ => s.service.events().subscribe_after(after),
    };
    let visible = move |ev: &ckptd_api::Event| {
        let owner = ev
            .job
            .as_ref()
            .map(|j| j.owner_uid)
            .or(ev.checkpoint.as_ref().map(|c| c.owner_uid))
            .or(ev.schedule.as_ref().map(|s| s.owner_uid))
            .or(ev.refusal.as_ref().map(|r| r.uid))
            .unwrap_or(0);
        caller.can_see(owner)
    };
    let sse = |ev: &ckptd_api::Event| {
        let data = serde_json::to_string(ev).expect("events serialize");
        SseEvent::default().id(ev.id.to_string()).data(data)
    };
    let backlog: Vec<_> = sub
        .backlog
        .iter()
        .filter(|e| visible(e))
        .map(|e| Ok(sse(e)))
        .collect();
    let missed = (sub.missed > 0).then(|| {
        Ok(SseEvent::default().comment(format!(
            "{} events after the given Last-Event-ID are no longer held",
            sub.missed
        )))
    });
    let stopping = s.service.stopping();
    // Counted in ckptd_event_stream_clients while the stream lives.
    let client = s.service.event_client();
    let stream = futures_util::stream::unfold(
        (sub.live, stopping, client),
        move |(mut rx, mut stopping, client)| async move {
            loop {
                let next = tokio::select! {
                    r = rx.recv() => r,
                    _ = stopping.wait_for(|s| *s) => return None,
                };
                match next {
                    Ok(ev) => {
                        if !visible(&ev) {
                            continue;
                        }
                        return Some((Ok(sse(&ev)), (rx, stopping, client)));
                    }
                    Err(RecvError::Lagged(n)) => {
                        tracing::warn!(
                            missed = n,
                            "an event consumer fell behind and was disconnected"
                        );
                        return None;
                    }
                    Err(RecvError::Closed) => return None,
                }
            }
        },
    );
    // A first comment tells the client it is subscribed: every event from here on reaches it.
    let hello = futures_util::stream::once(async { Ok(SseEvent::default().comment("connected")) });
    let first = futures_util::stream::iter(missed.into_iter().chain(backlog));
    let all = futures_util::StreamExt::chain(hello, futures_util::StreamExt::chain(first, stream));
    Ok(Sse::new(all).keep_alive(
        KeepAlive::new()
            .interval(Duration::from_secs(15))
            .text("keep-alive"),
    ))
}

/// `?since=`: an RFC 3339 time, or how long ago (`90s`, `10m`, `2h`, `1d`).
fn since_time(s: &str) -> Result<chrono::DateTime<chrono::Utc>> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&chrono::Utc));
    }
    let ago = crate::service::validate::duration("since", s).map_err(|_| {
        Error::invalid(format!(
            "since: {s:?} is neither an RFC 3339 time (2026-12-05T14:00:00Z) nor a duration \
             (90s, 10m, 2h, 1d)"
        ))
    })?;
    Ok(crate::catalog::now() - ago)
}
