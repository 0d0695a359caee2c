//! One HTTP/1.1 request on a connection of its own: how ckptd's client reaches the daemon (Unix
//! socket, or a daemon's TCP listener) and how the daemon reaches Docker and Podman.
//!
//! A connection per request, on purpose, rather than hyper-util's pooled client: a streamed
//! answer (an export, the event stream) holds its connection until the reader drops it, a
//! daemon that restarted is never met through a pooled connection it closed, and the daemon's
//! own per-peer connection limits count what a client really holds. With pooling switched off,
//! hyper-util's client would add nothing over `http1::handshake`.

use hyper::body::{Body, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::task::JoinHandle;

/// Sends `req` on a new HTTP/1.1 connection over `stream`. Returns the answer and the task that
/// drives the connection: it ends by itself once the answer's body is read or dropped; abort
/// it to close the connection sooner.
pub async fn exchange<S, B>(
    stream: S,
    req: Request<B>,
) -> hyper::Result<(Response<Incoming>, JoinHandle<hyper::Result<()>>)>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let conn = tokio::spawn(conn);
    match sender.send_request(req).await {
        Ok(resp) => Ok((resp, conn)),
        Err(e) => {
            conn.abort();
            Err(e)
        }
    }
}
