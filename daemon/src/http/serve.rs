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
//! - a connection over a limit is closed at once, before any byte is read;
//! - on TCP, where anyone who can reach the port can connect, a connection that has not yet sent
//!   a request with a valid token waits in a pool of its own (`max_unauthenticated_connections`,
//!   at most `max_connections_per_peer` from one address, over which it is closed at once): when
//!   the pool is full, the oldest waiting connection is closed to make room, so half-sent headers
//!   from any number of addresses cannot keep a token holder at another address out: its
//!   connection sends its header at once and leaves the pool with its first request.
//!
//! A request in flight (a `?wait=true` checkpoint, an event stream, an export) is never cut.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
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
        None::<Arc<Gate<u32>>>,
    )
    .await
}

/// Serves `app` on the TCP listener. Its callers are nobody until the bearer token says
/// otherwise (`tcp_router`); until a connection's first request carries a valid token it waits
/// in the unauthenticated pool (`Waiting`), bounded, oldest closed first.
pub async fn tcp(
    listener: tokio::net::TcpListener,
    app: Router,
    limits: Limits,
    stop: watch::Receiver<bool>,
    tokens: Arc<crate::auth::Tokens>,
) {
    // Only the total bounds what passed the token (its holder acts as root); the pool bounds
    // the rest.
    let counter = Arc::new(Counter::<std::net::IpAddr> {
        limits,
        open: Default::default(),
    });
    let gate = Arc::new(Gate {
        tokens,
        waiting: Mutex::new(Waiting::default()),
        max: limits.unauthenticated,
        per_address: limits.per_peer.min(limits.unauthenticated),
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
        Some(gate),
    )
    .await
}

/// The TCP listener's unauthenticated pool, by peer address `K`.
struct Gate<K> {
    tokens: Arc<crate::auth::Tokens>,
    waiting: Mutex<Waiting<K>>,
    max: usize,
    per_address: usize,
}

/// Connections waiting for their first authenticated request, oldest first: an id, the peer's
/// address, and the sender that closes the connection when dropped... or sent to.
struct Waiting<K> {
    next: u64,
    queue: std::collections::VecDeque<(u64, K, tokio::sync::oneshot::Sender<()>)>,
}

impl<K> Default for Waiting<K> {
    fn default() -> Self {
        Waiting {
            next: 0,
            queue: Default::default(),
        }
    }
}

impl<K: Eq + std::fmt::Debug> Gate<K> {
    /// Puts a new connection from `addr` in the pool, closing the oldest waiting one when the
    /// pool is full; None (close the new one at once) when that address's share is full. Its id,
    /// and what tells it to close.
    fn admit(&self, addr: K) -> Option<(u64, tokio::sync::oneshot::Receiver<()>)> {
        let mut w = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        if w.queue.iter().filter(|(_, a, _)| *a == addr).count() >= self.per_address {
            return None;
        }
        let evict = (w.queue.len() >= self.max).then_some(0);
        if let Some((_, old, close)) = evict.and_then(|i| w.queue.remove(i)) {
            tracing::debug!(peer = ?old, "closing the oldest unauthenticated connection to make room");
            let _ = close.send(());
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        w.next += 1;
        let id = w.next;
        w.queue.push_back((id, addr, tx));
        Some((id, rx))
    }

    /// A request of connection `id` carried a valid token: it leaves the pool for good.
    fn passed(&self, id: u64, headers: &hyper::HeaderMap) {
        let auth = headers
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if self.tokens.grant(auth).is_some() {
            self.forget(id);
        }
    }

    /// Connection `id` left the pool (authenticated or closed). Its sender is dropped unsent.
    fn forget(&self, id: u64) {
        let mut w = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        w.queue.retain(|(i, _, _)| *i != id);
    }
}

async fn accept_loop<K, Io, A, F>(
    mut accept: A,
    counter: Arc<Counter<K>>,
    app: Router,
    mut stop: watch::Receiver<bool>,
    gate: Option<Arc<Gate<K>>>,
) where
    K: Eq + Hash + Clone + Send + Sync + std::fmt::Debug + 'static,
    Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    A: FnMut() -> F,
    F: std::future::Future<Output = std::io::Result<(Io, Caller, Option<K>)>>,
{
    // Each connection is told to finish when the accept loop ends (hyper-util's
    // GracefulShutdown does not take a connection that may be upgraded, as a live migration's
    // link is), and the loop's end waits for them.
    let connections = tokio_util::task::TaskTracker::new();
    let (finish, finishing) = watch::channel(false);
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
        // Behind the gate, a peer is limited by the pool until its token passes, then only by
        // the total.
        let waiting = match (&gate, &key) {
            (Some(g), Some(k)) => match g.admit(k.clone()) {
                Some(w) => Some((g.clone(), w)),
                None => {
                    drop(io);
                    continue;
                }
            },
            _ => None,
        };
        let counted = if gate.is_some() { None } else { key.clone() };
        let Some(slot) = counter.admit(counted) else {
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
        let (passed, close) = match waiting {
            Some((g, (id, close))) => (Some((g, id)), Some(close)),
            None => (None, None),
        };
        let forget = passed.clone();
        let svc = app
            .clone()
            .map_request(move |mut req: axum::extract::Request| {
                if let Some((g, id)) = &passed {
                    g.passed(*id, req.headers());
                }
                req.extensions_mut().insert(ConnectInfo(caller));
                req
            });
        let svc = TowerToHyperService::new(svc.map_request(
            |req: hyper::Request<hyper::body::Incoming>| req.map(axum::body::Body::new),
        ));
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout)
            .serve_connection(TokioIo::new(io), svc)
            // A live migration's link (`POST /v1/migrations/incoming`) and a terminal attach
            // (`POST /v1/terminals/{pid}/attach`) upgrade their connection.
            .with_upgrades();
        let mut finishing = finishing.clone();
        connections.spawn(async move {
            let mut conn = std::pin::pin!(conn);
            let _slot = slot;
            // Closed when the pool needs its place (a sender dropped unsent means it passed).
            let closed = async {
                let sent = match close {
                    Some(rx) => rx.await.is_ok(),
                    None => false,
                };
                if !sent {
                    std::future::pending::<()>().await;
                }
            };
            tokio::select! {
                ended = conn.as_mut() => {
                    if let Err(e) = ended {
                        tracing::trace!(error = %e, "connection ended");
                    }
                }
                () = closed => {}
                _ = async { let _ = finishing.wait_for(|f| *f).await; } => {
                    conn.as_mut().graceful_shutdown();
                    if let Err(e) = conn.await {
                        tracing::trace!(error = %e, "connection ended");
                    }
                }
            }
            if let Some((g, id)) = forget {
                g.forget(id);
            }
        });
    }
    // Connections finish their requests in flight; the caller bounds how long that may take.
    let _ = finish.send(true);
    connections.close();
    connections.wait().await;
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
                unauthenticated: 4,
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

    #[test]
    fn the_unauthenticated_pool_closes_its_oldest_and_lets_a_token_through() {
        let g = Gate::<u8> {
            tokens: Arc::new(crate::auth::Tokens::new("a".repeat(16), None)),
            waiting: Mutex::new(Waiting::default()),
            max: 3,
            per_address: 2,
        };
        let (_a1, mut a1_close) = g.admit(1).unwrap();
        let (_a2, _) = g.admit(1).unwrap();
        // Address 1's share is full: a third from it is closed at once.
        assert!(g.admit(1).is_none());
        let (_c1, _) = g.admit(3).unwrap();
        // The pool is full: the oldest of all goes.
        let (b1, mut b1_close) = g.admit(2).unwrap();
        assert_eq!(a1_close.try_recv(), Ok(()));
        let mut headers = hyper::HeaderMap::new();
        headers.insert(
            hyper::header::AUTHORIZATION,
            format!("Bearer {}", "a".repeat(16)).parse().unwrap(),
        );
        // A valid token leaves the pool: never closed to make room again.
        g.passed(b1, &headers);
        for i in 0..10 {
            assert!(g.admit(4 + i).is_some());
        }
        assert!(matches!(
            b1_close.try_recv(),
            Err(tokio::sync::oneshot::error::TryRecvError::Closed)
        ));
        assert_eq!(g.waiting.lock().unwrap().queue.len(), 3);
    }
}
