//! Query strings, parsed strictly: an unknown parameter or a malformed value is a 400 that names
//! it, never silently ignored.

use axum::extract::Query;
use axum::http::Uri;
use ckptd_api::{CheckpointStatus, JobKind, JobState};

use crate::catalog::{CheckpointFilter, JobFilter, DEFAULT_LIMIT, MAX_LIMIT};
use crate::error::{Error, Result};

fn pairs(uri: &Uri) -> Result<Vec<(String, String)>> {
    Query::<Vec<(String, String)>>::try_from_uri(uri)
        .map(|q| q.0)
        .map_err(|e| Error::invalid(format!("malformed query string: {e}")))
}

fn unknown(key: &str, known: &str) -> Error {
    Error::invalid(format!(
        "unknown query parameter {key:?}; this route takes: {known}"
    ))
}

fn parse<T: std::str::FromStr>(key: &str, v: &str, what: &str) -> Result<T> {
    v.parse()
        .map_err(|_| Error::invalid(format!("query parameter {key}={v:?} is not {what}")))
}

fn limit(v: &str) -> Result<u32> {
    let n: u32 = parse("limit", v, "a number")?;
    if n == 0 || n > MAX_LIMIT {
        return Err(Error::invalid(format!(
            "limit must be between 1 and {MAX_LIMIT}, got {n}"
        )));
    }
    Ok(n)
}

fn cursor(v: &str) -> Result<i64> {
    parse("after", v, "a cursor from a previous page's \"next\"")
}

fn boolean(key: &str, v: &str) -> Result<bool> {
    match v {
        "true" | "1" | "" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(Error::invalid(format!(
            "query parameter {key}={v:?} is not true or false"
        ))),
    }
}

/// `?wait=true` on POST routes.
pub fn wait_flag(uri: &Uri) -> Result<bool> {
    let mut wait = false;
    for (k, v) in pairs(uri)? {
        match k.as_str() {
            "wait" => wait = boolean(&k, &v)?,
            _ => return Err(unknown(&k, "wait")),
        }
    }
    Ok(wait)
}

/// `?compression=zstd|gzip|none` of the archive route (zstd when left out).
pub fn compression(uri: &Uri) -> Result<crate::portability::archive::Compression> {
    let mut c = crate::portability::archive::Compression::Zstd;
    for (k, v) in pairs(uri)? {
        match k.as_str() {
            "compression" => {
                c = crate::portability::archive::Compression::parse(&v).ok_or_else(|| {
                    Error::invalid(format!("compression={v:?} is not one of zstd, gzip, none"))
                })?
            }
            _ => return Err(unknown(&k, "compression")),
        }
    }
    Ok(c)
}

/// `?name=` of the import route.
pub fn import_name(uri: &Uri) -> Result<Option<String>> {
    let mut name = None;
    for (k, v) in pairs(uri)? {
        match k.as_str() {
            "name" => name = Some(v),
            _ => return Err(unknown(&k, "name")),
        }
    }
    Ok(name)
}

/// Longest long-poll accepted by `GET /v1/jobs/{id}?wait=SECONDS`.
pub const MAX_WAIT_SECS: u64 = 600;

pub fn wait_seconds(uri: &Uri) -> Result<Option<u64>> {
    let mut wait = None;
    for (k, v) in pairs(uri)? {
        match k.as_str() {
            "wait" => {
                let s: u64 = parse(&k, &v, "a number of seconds")?;
                if s > MAX_WAIT_SECS {
                    return Err(Error::invalid(format!(
                        "wait is at most {MAX_WAIT_SECS} seconds, got {s}"
                    )));
                }
                wait = Some(s);
            }
            _ => return Err(unknown(&k, "wait")),
        }
    }
    Ok(wait)
}

pub fn checkpoint_filter(uri: &Uri) -> Result<CheckpointFilter> {
    let mut f = CheckpointFilter {
        limit: DEFAULT_LIMIT,
        ..Default::default()
    };
    for (k, v) in pairs(uri)? {
        match k.as_str() {
            "pid" => f.pid = Some(parse(&k, &v, "a pid")?),
            "container" => f.container = Some(v),
            "status" => {
                f.status = Some(CheckpointStatus::parse(&v).ok_or_else(|| {
                    Error::invalid(format!(
                        "status={v:?} is not one of pending, running, ready, failed"
                    ))
                })?)
            }
            "label" => {
                let (lk, lv) = v
                    .split_once('=')
                    .ok_or_else(|| Error::invalid(format!("label={v:?} must be key=value")))?;
                f.labels.push((lk.to_owned(), lv.to_owned()));
            }
            "limit" => f.limit = limit(&v)?,
            "after" => f.after = Some(cursor(&v)?),
            _ => return Err(unknown(&k, "pid, container, status, label, limit, after")),
        }
    }
    Ok(f)
}

pub fn job_filter(uri: &Uri) -> Result<JobFilter> {
    let mut f = JobFilter {
        limit: DEFAULT_LIMIT,
        ..Default::default()
    };
    for (k, v) in pairs(uri)? {
        match k.as_str() {
            "state" => {
                f.state = Some(JobState::parse(&v).ok_or_else(|| {
                    Error::invalid(format!(
                        "state={v:?} is not one of queued, running, succeeded, failed, cancelled"
                    ))
                })?)
            }
            "kind" => {
                f.kind = Some(JobKind::parse(&v).ok_or_else(|| {
                    Error::invalid(format!("kind={v:?} is not one of checkpoint, restore"))
                })?)
            }
            "limit" => f.limit = limit(&v)?,
            "after" => f.after = Some(cursor(&v)?),
            _ => return Err(unknown(&k, "state, kind, limit, after")),
        }
    }
    Ok(f)
}
