//! The REST API: routes requests to the domain (`Service`, the catalog) and nothing else. It never
//! runs SQL or spawns CRIU; errors become answers in `error.rs` only.

pub mod error;
mod handlers;
mod query;
pub mod serve;

use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::handler::Handler;
use axum::http::Method;
use axum::routing::{on, MethodFilter};
use axum::Router;

use crate::criu::CriuProbe;
use crate::service::Service;

/// The router for the TCP listener: every request must carry `Authorization: Bearer <token>`;
/// the admin token's holder acts as root (the listener is for trusted networks only), the
/// metrics token's may GET /metrics and nothing else.
pub fn tcp_router(state: AppState, tokens: std::sync::Arc<crate::auth::Tokens>) -> Router {
    use crate::auth::Grant;
    use axum::extract::{ConnectInfo, Request};
    use axum::middleware::{self, Next};
    use axum::response::IntoResponse;
    router(state).layer(middleware::from_fn(move |mut req: Request, next: Next| {
        let tokens = tokens.clone();
        async move {
            let given = req
                .headers()
                .get(axum::http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok());
            let metrics_read =
                req.method() == axum::http::Method::GET && req.uri().path() == "/metrics";
            match tokens.grant(given) {
                Some(Grant::Admin) => {}
                Some(Grant::Metrics) if metrics_read => {}
                Some(Grant::Metrics) => {
                    return crate::error::Error::new(
                        crate::error::ErrorKind::Forbidden,
                        "the metrics token reads GET /metrics and nothing else",
                    )
                    .with_hint("use the token from the daemon's tcp_token_file for the rest of the API")
                    .into_response();
                }
                None => {
                    let mut refused = crate::error::Error::new(
                        crate::error::ErrorKind::Unauthorized,
                        "this TCP listener needs \"Authorization: Bearer <token>\" with the daemon's token",
                    )
                    .with_hint("use the token from the daemon's tcp_token_file (or metrics_token_file for GET /metrics), or the Unix socket")
                    .into_response();
                    // An unauthenticated connection is not kept open for another try.
                    refused.headers_mut().insert(
                        axum::http::header::CONNECTION,
                        axum::http::HeaderValue::from_static("close"),
                    );
                    return refused;
                }
            }
            req.extensions_mut().insert(ConnectInfo(crate::auth::Caller::ROOT));
            next.run(req).await
        }
    }))
}

/// Largest request body accepted (413 above).
pub const BODY_LIMIT: usize = 1024 * 1024;

/// What `/v1/info` reports besides live numbers.
pub struct DaemonInfo {
    pub criu: CriuProbe,
    pub state_dir: PathBuf,
    pub checkpoints_dir: PathBuf,
    pub workers: usize,
    pub queue_capacity: usize,
    /// Directories in the checkpoints root that no catalog row knows (found at start).
    pub unknown_dirs: Vec<String>,
}

/// Serialized answers of `GET /v1/checkpoints`, each valid while the catalog's checkpoint version
/// is the one it was read at. Dashboards poll the same few lists; a hit is a copy of bytes, not
/// a query, 100 row decodes and a serialization (measured in BENCHMARKS.md).
/// A miss is filled once: concurrent requests for the same list wait for the first one's query
/// instead of each running it (after every write, 64 dashboard clients would otherwise run 64
/// identical queries at once).
#[derive(Default)]
pub struct ListCache {
    entries: std::sync::Mutex<std::collections::HashMap<String, (u64, bytes::Bytes)>>,
    /// Fills of keys that hash alike take turns (striped: bounded, and distinct lists rarely share).
    fills: [tokio::sync::Mutex<()>; 16],
}

/// Distinct lists kept; past that the cache starts over (cheap, and bounded).
const LIST_CACHE_ENTRIES: usize = 256;

impl ListCache {
    /// The list under `key` as of the catalog's current `version()`, from the cache or made by
    /// `fill` (read the version before querying: a write during the query makes it stale at once).
    pub async fn get_or_fill<F, Fut>(
        &self,
        key: String,
        version: impl Fn() -> u64,
        fill: F,
    ) -> crate::error::Result<bytes::Bytes>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = crate::error::Result<bytes::Bytes>>,
    {
        if let Some(b) = self.get(&key, version()) {
            return Ok(b);
        }
        let stripe = {
            use std::hash::{Hash, Hasher};
            let mut h = std::hash::DefaultHasher::new();
            key.hash(&mut h);
            (h.finish() % self.fills.len() as u64) as usize
        };
        let _turn = self.fills[stripe].lock().await;
        let v = version();
        if let Some(b) = self.get(&key, v) {
            return Ok(b);
        }
        let b = fill().await?;
        self.put(key, v, b.clone());
        Ok(b)
    }

    pub fn get(&self, key: &str, version: u64) -> Option<bytes::Bytes> {
        let entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        entries
            .get(key)
            .filter(|(v, _)| *v == version)
            .map(|(_, b)| b.clone())
    }

    pub fn put(&self, key: String, version: u64, body: bytes::Bytes) {
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if entries.len() >= LIST_CACHE_ENTRIES && !entries.contains_key(&key) {
            entries.clear();
        }
        entries.insert(key, (version, body));
    }
}

#[derive(Clone)]
pub struct AppState {
    pub service: Service,
    pub portability: crate::portability::Portability,
    pub lists: Arc<ListCache>,
    pub schedules: crate::schedules::Schedules,
    pub info: Arc<DaemonInfo>,
}

/// Builds the router and the list of (method, path) it serves; the list is checked against
/// openapi.yaml by a test.
struct Routes {
    router: Router<AppState>,
    table: Vec<(Method, &'static str)>,
}

impl Routes {
    fn add<H, T>(mut self, method: Method, path: &'static str, handler: H) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        let filter = MethodFilter::try_from(method.clone()).expect("standard method");
        self.router = self.router.route(path, on(filter, handler));
        self.table.push((method, path));
        self
    }

    /// A route whose body is a stream with its own limit (an archive upload), not the 1 MiB of
    /// JSON bodies.
    fn add_stream<H, T>(mut self, method: Method, path: &'static str, handler: H) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        let filter = MethodFilter::try_from(method.clone()).expect("standard method");
        self.router = self
            .router
            .route(path, on(filter, handler).layer(DefaultBodyLimit::disable()));
        self.table.push((method, path));
        self
    }
}

fn routes() -> Routes {
    use handlers::*;
    Routes {
        router: Router::new(),
        table: Vec::new(),
    }
    .add(Method::GET, "/v1/health", health)
    .add(Method::GET, "/v1/info", info)
    .add(Method::POST, "/v1/checkpoints", create_checkpoint)
    .add(Method::GET, "/v1/checkpoints", list_checkpoints)
    .add(Method::GET, "/v1/checkpoints/{ref}", get_checkpoint)
    .add(Method::DELETE, "/v1/checkpoints/{ref}", delete_checkpoint)
    .add(
        Method::POST,
        "/v1/checkpoints/{ref}/restore",
        restore_checkpoint,
    )
    .add(Method::GET, "/v1/checkpoints/{ref}/log", checkpoint_log)
    .add(
        Method::GET,
        "/v1/checkpoints/{ref}/processes",
        checkpoint_processes,
    )
    .add(Method::POST, "/v1/checkpoints/{ref}/push", push_checkpoint)
    .add(Method::GET, "/v1/remotes", list_remotes)
    .add(
        Method::GET,
        "/v1/remotes/{name}/checkpoints",
        list_remote_checkpoints,
    )
    .add(
        Method::GET,
        "/v1/remotes/{name}/checkpoints/{ref}",
        get_remote_checkpoint,
    )
    .add(
        Method::POST,
        "/v1/remotes/{name}/checkpoints/{ref}",
        pull_checkpoint,
    )
    .add(
        Method::DELETE,
        "/v1/remotes/{name}/checkpoints/{ref}",
        delete_remote_checkpoint,
    )
    .add(
        Method::POST,
        "/v1/remotes/{name}/checkpoints/{ref}/restore",
        restore_remote_checkpoint,
    )
    .add(
        Method::GET,
        "/v1/checkpoints/{ref}/archive",
        export_checkpoint,
    )
    .add_stream(Method::POST, "/v1/checkpoints/import", import_checkpoint)
    .add(Method::POST, "/v1/checkpoints/adopt", adopt_checkpoint)
    .add(Method::POST, "/v1/schedules", create_schedule)
    .add(Method::GET, "/v1/schedules", list_schedules)
    .add(Method::GET, "/v1/schedules/{ref}", get_schedule)
    .add(Method::PATCH, "/v1/schedules/{ref}", update_schedule)
    .add(Method::DELETE, "/v1/schedules/{ref}", delete_schedule)
    .add(Method::POST, "/v1/schedules/{ref}/run", run_schedule)
    .add(
        Method::GET,
        "/v1/schedules/{ref}/retention",
        schedule_retention,
    )
    .add(Method::POST, "/v1/migrations", create_migration)
    .add(Method::POST, "/v1/migrations/incoming", incoming_migration)
    .add(Method::POST, "/v1/terminals/{pid}/attach", attach_terminal)
    .add(Method::GET, "/v1/jobs", list_jobs)
    .add(Method::GET, "/v1/jobs/{id}", get_job)
    .add(Method::POST, "/v1/jobs/{id}/cancel", cancel_job)
    .add(Method::GET, "/v1/events", events)
    .add(Method::GET, "/metrics", metrics)
}

/// Every (method, path) the API serves.
pub fn route_table() -> Vec<(Method, &'static str)> {
    routes().table
}

pub fn router(state: AppState) -> Router {
    let service = state.service.clone();
    routes()
        .router
        .fallback(error::no_route)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn(
            move |req: axum::extract::Request, next: axum::middleware::Next| {
                let service = service.clone();
                async move {
                    // The route's template (`/v1/checkpoints/{ref}`), never the path itself:
                    // a bounded label.
                    let route = req
                        .extensions()
                        .get::<axum::extract::MatchedPath>()
                        .map_or("unmatched", |m| m.as_str())
                        .to_owned();
                    let method = req.method().clone();
                    let path = req.uri().path().to_owned();
                    let uid = req
                        .extensions()
                        .get::<axum::extract::ConnectInfo<crate::auth::Caller>>()
                        .map_or(0, |c| c.0.uid);
                    let resp = next.run(req).await;
                    // A request for a change that was refused is an event: dashboards and
                    // `ckpt events` see what callers tried and why it did not happen.
                    let change = !matches!(method, Method::GET | Method::HEAD | Method::OPTIONS);
                    if let Some(info) = resp
                        .extensions()
                        .get::<ckptd_api::ErrorInfo>()
                        .filter(|_| change)
                    {
                        service.events().refusal(ckptd_api::Refusal {
                            method: method.to_string(),
                            path,
                            status: resp.status().as_u16(),
                            uid,
                            error: info.clone(),
                        });
                    }
                    let class = match resp.status().as_u16() {
                        100..=199 => "1xx",
                        200..=299 => "2xx",
                        300..=399 => "3xx",
                        400..=499 => "4xx",
                        _ => "5xx",
                    };
                    service.count_request(&route, class);
                    resp
                }
            },
        ))
        .with_state(state)
}

#[cfg(test)]
mod tests;
