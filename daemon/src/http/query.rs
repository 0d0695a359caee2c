//! Query strings, parsed strictly into the api crate's query structs (the client writes the same
//! structs): an unknown parameter or a malformed value is a 400 that names it, never silently
//! ignored. Limits the structs cannot say are checked here.

use axum::http::Uri;
use ckptd_api::query::{
    self, ArchiveQuery, CheckpointQuery, ImportQuery, JobQuery, JobWaitQuery, WaitQuery,
    DEFAULT_LIMIT, MAX_LIMIT, MAX_WAIT_SECS,
};

use crate::catalog::{CheckpointFilter, JobFilter};
use crate::error::{Error, Result};

fn parse<T: serde::de::DeserializeOwned>(uri: &Uri) -> Result<T> {
    query::parse(uri.query().unwrap_or_default()).map_err(|e| Error::invalid(e.0))
}

fn limit(n: Option<u32>) -> Result<u32> {
    match n {
        None => Ok(DEFAULT_LIMIT),
        Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        Some(n) => Err(Error::invalid(format!(
            "limit must be between 1 and {MAX_LIMIT}, got {n}"
        ))),
    }
}

/// `?since=` of the event stream.
pub fn events(uri: &Uri) -> Result<query::EventQuery> {
    parse(uri)
}

/// `?wait=true` on POST routes.
pub fn wait_flag(uri: &Uri) -> Result<bool> {
    parse::<WaitQuery>(uri).map(|q| q.wait)
}

/// `?compression=zstd|gzip|none&format=ckptd|podman` of the archive route (zstd, ckptd when
/// left out).
pub fn archive(uri: &Uri) -> Result<ArchiveQuery> {
    parse::<ArchiveQuery>(uri)
}

/// `?remote=NAME&keep_local=&wait=` of the push route.
pub fn push(uri: &Uri) -> Result<query::PushQuery> {
    parse(uri)
}

/// `?remote_copies=true` of a checkpoint's delete.
pub fn delete(uri: &Uri) -> Result<query::DeleteQuery> {
    parse(uri)
}

/// `?name=` of the import route.
pub fn import_name(uri: &Uri) -> Result<Option<String>> {
    parse::<ImportQuery>(uri).map(|q| q.name)
}

/// `?wait=SECONDS` of `GET /v1/jobs/{id}`.
pub fn wait_seconds(uri: &Uri) -> Result<Option<u64>> {
    let q: JobWaitQuery = parse(uri)?;
    match q.wait {
        Some(s) if s > MAX_WAIT_SECS => Err(Error::invalid(format!(
            "wait is at most {MAX_WAIT_SECS} seconds, got {s}"
        ))),
        w => Ok(w),
    }
}

pub fn checkpoint_filter(uri: &Uri) -> Result<CheckpointFilter> {
    let q: CheckpointQuery = parse(uri)?;
    let labels = q
        .labels
        .iter()
        .map(|l| {
            l.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .ok_or_else(|| Error::invalid(format!("label={l:?} must be key=value")))
        })
        .collect::<Result<_>>()?;
    Ok(CheckpointFilter {
        pid: q.pid,
        container: q.container,
        status: q.status,
        labels,
        owner: None,
        limit: limit(q.limit)?,
        after: q.after,
    })
}

pub fn job_filter(uri: &Uri) -> Result<JobFilter> {
    let q: JobQuery = parse(uri)?;
    Ok(JobFilter {
        state: q.state,
        kind: q.kind,
        limit: limit(q.limit)?,
        after: q.after,
        ..Default::default()
    })
}
