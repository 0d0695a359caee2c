//! The accept loops: every connection is counted and bounded before HTTP reads a byte of it.
//!
//! axum's `serve` accepts without limit and never times out a connection that sends nothing, so a
//! socket-group member (or anyone who can reach the TCP listener) could hold the daemon's file
//! descriptors until `accept` fails for everyone. Here:
//! - at most `max` connections at once; a caller other than root gets at most `max - reserve`,
//!   so root's `ckpt` and health checks always find room;
//! - at most `per_peer` at once per uid (socket) or per address (TCP); root is not limited per peer;
//! - a connection must send a request's whole header within `header_timeout` of the moment the
//!   server starts waiting for it, the first one and each next one on a kept-alive connection
//!   (hyper's `header_read_timeout`), so an idle connection is closed;
//! - a connection over a limit is closed at once, before any byte is read.
//!
//! A request in flight (a `?wait=true` checkpoint, an event stream, an export) is never cut.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::sync::watch;
use tower::ServiceExt;

use crate::auth::Caller;
pub use crate::config::ConnectionLimits as Limits;

/// Counts open connections, in all and per peer; a slot is given back when its `Slot` drops.
struct Counter<K: Eq + Hash + Clone> {
    limits: Limits,
    open: Mutex<(usize, HashMap<K, usize>)>,
}

struct Slot<K: Eq + Hash + Clone> {
    counter: Arc<Counter<K>>,
    key: Option<K>,
}

impl<K: Eq + Hash + Clone> Counter<K> {
    /// A slot for a connection from `key` (None: root, limited only by `max`).
    fn admit(self: &Arc<Self>, key: Option<K>) -> Option<Slot<K>> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let cap = match key {
            None => self.limits.max,
            Some(_) => self.limits.max.saturating_sub(self.limits.reserve),
        };
        if open.0 >= cap {
            return None;
        }
        if let Some(k) = &key {
            let n = open.1.entry(k.clone()).or_default();
            if *n >= self.limits.per_peer {
                return None;
            }
            *n += 1;
        }
        open.0 += 1;
        Some(Slot {
            counter: self.clone(),
            key,
        })
    }
}

impl<K: Eq + Hash + Clone> Drop for Slot<K> {
    fn drop(&mut self) {
        let mut open = self.counter.open.lock().unwrap_or_else(|e| e.into_inner());
        open.0 -= 1;
        if let Some(k) = &self.key {
            if let Some(n) = open.1.get_mut(k) {
                *n -= 1;
                if *n == 0 {
                    open.1.remove(k);
                }
            }
        }
    }
}

/// Serves `app` on the API socket; each request carries its peer's `Caller` (SO_PEERCRED).
pub async fn unix(
    listener: tokio::net::UnixListener,
    app: Router,
    limits: Limits,
    stop: watch::Receiver<bool>,
) {
    let counter = Arc::new(Counter::<u32> {
        limits,
        open: Default::default(),
    });
    accept_loop(
        || async {
            let (io, _) = listener.accept().await?;
            let caller = match io.peer_cred() {
                Ok(c) => Caller {
                    uid: c.uid(),
                    gid: c.gid(),
                    pid: c.pid(),
                },
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the peer's credentials; treating it as nobody");
                    Caller::NOBODY
                }
            };
            let key = (!caller.is_admin()).then_some(caller.uid);
            Ok((io, caller, key))
        },
        counter,
        app,
        stop,
    )
    .await
}

/// Serves `app` on the TCP listener. Its callers are nobody until the bearer token says
/// otherwise (`tcp_router`); every address is limited per peer, the token is not known yet.
pub async fn tcp(
    listener: tokio::net::TcpListener,
    app: Router,
    limits: Limits,
    stop: watch::Receiver<bool>,
) {
    let counter = Arc::new(Counter::<std::net::IpAddr> {
        limits,
        open: Default::default(),
    });
    accept_loop(
        || async {
            let (io, addr) = listener.accept().await?;
            let _ = io.set_nodelay(true);
            Ok((io, Caller::NOBODY, Some(addr.ip())))
        },
        counter,
        app,
        stop,
    )
    .await
}

async fn accept_loop<K, Io, A, F>(
    mut accept: A,
    counter: Arc<Counter<K>>,
    app: Router,
    mut stop: watch::Receiver<bool>,
) where
    K: Eq + Hash + Clone + Send + Sync + std::fmt::Debug + 'static,
    Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    A: FnMut() -> F,
    F: std::future::Future<Output = std::io::Result<(Io, Caller, Option<K>)>>,
{
    let graceful = GracefulShutdown::new();
    let limits = counter.limits;
    let mut refused = 0u64;
    let mut last_told = std::time::Instant::now() - Duration::from_secs(1);
    loop {
        let accepted = tokio::select! {
            a = accept() => a,
            _ = stop.wait_for(|s| *s) => break,
        };
        let (io, caller, key) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and the like: the limits above should keep this from happening; back off
                // instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(slot) = counter.admit(key.clone()) else {
            drop(io);
            // A flood is told once a second, not once a connection: the log is no amplifier.
            refused += 1;
            if last_told.elapsed() >= Duration::from_secs(1) {
                tracing::warn!(
                    refused,
                    last_peer = ?key,
                    "closed connections over the limits (max_connections, max_connections_per_peer)"
                );
                refused = 0;
                last_told = std::time::Instant::now();
            }
            continue;
        };
        let svc = app
            .clone()
            .map_request(move |mut req: axum::extract::Request| {
                req.extensions_mut().insert(ConnectInfo(caller));
                req
            });
        let svc = TowerToHyperService::new(svc.map_request(
            |req: hyper::Request<hyper::body::Incoming>| req.map(axum::body::Body::new),
        ));
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout)
            .serve_connection(TokioIo::new(io), svc);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _slot = slot;
            if let Err(e) = conn.await {
                tracing::trace!(error = %e, "connection ended");
            }
        });
    }
    // Connections finish their requests in flight; the caller bounds how long that may take.
    graceful.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_in_all_per_peer_and_roots_reserve() {
        let c = Arc::new(Counter::<u32> {
            limits: Limits {
                max: 4,
                per_peer: 2,
                reserve: 1,
                header_timeout: Duration::from_secs(1),
            },
            open: Default::default(),
        });
        let a1 = c.admit(Some(1000)).unwrap();
        let _a2 = c.admit(Some(1000)).unwrap();
        assert!(c.admit(Some(1000)).is_none(), "per peer");
        let _b1 = c.admit(Some(1001)).unwrap();
        assert!(c.admit(Some(1002)).is_none(), "the reserve is root's");
        let r = c.admit(None).unwrap();
        assert!(c.admit(None).is_none(), "the total");
        drop(a1);
        drop(r);
        assert!(c.admit(Some(1000)).is_some(), "a slot comes back");
    }
}
