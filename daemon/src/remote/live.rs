//! The wire of a live migration between two daemons. The source opens one TCP connection to the
//! destination's authenticated listener (`POST /v1/migrations/incoming` with the destination's
//! bearer token, upgraded to `ckptd-live/1`); everything then travels on it as frames: the
//! handshake, the non-memory images, the memory pages CRIU's page server and `criu lazy-pages`
//! exchange, and each side's word on the outcome. CRIU's own page-server protocol is plain,
//! unauthenticated TCP: here it never leaves a socketpair between CRIU and its daemon, so no
//! port is opened for it on either host and pages cross the network only on this connection.
//!
//! A frame is a kind byte, a big-endian u32 length and that many bytes (at most `MAX_FRAME`).

use std::io;
use std::time::Duration;

use bytes::Bytes;
use ckptd_api::{Checkpoint, ErrorInfo};
use http_body_util::BodyExt;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use uuid::Uuid;

use crate::error::{Error, ErrorKind, Result};

/// The `Upgrade` protocol name.
pub const PROTOCOL: &str = "ckptd-live/1";
/// The destination's route.
pub const INCOMING_PATH: &str = "/v1/migrations/incoming";
/// Largest frame body.
pub const MAX_FRAME: usize = 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// Source: `Hello`.
    Hello = 1,
    /// Destination: `Accept`.
    Accept = 2,
    /// Either side: an `ErrorInfo`; the sender has ended its side (the destination's tree is
    /// gone, or never ran).
    Failed = 3,
    /// Source: `FileHeader`, then `Data` frames with its bytes.
    File = 4,
    Data = 5,
    /// Source: every image is sent.
    FilesEnd = 6,
    /// Destination: `Running`: the tree runs (its memory still arriving).
    Running = 7,
    /// Either side: page-server bytes.
    Pages = 8,
    /// Destination: `Whole`: every page is in, the tree runs whole; the source may end its copy.
    Whole = 9,
    /// Source: give up (a cancel): the destination ends its tree and answers `Failed`.
    Abort = 10,
}

impl Kind {
    fn of(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Hello,
            2 => Kind::Accept,
            3 => Kind::Failed,
            4 => Kind::File,
            5 => Kind::Data,
            6 => Kind::FilesEnd,
            7 => Kind::Running,
            8 => Kind::Pages,
            9 => Kind::Whole,
            10 => Kind::Abort,
            _ => return None,
        })
    }
}

#[derive(Debug)]
pub struct Frame {
    pub kind: Kind,
    pub body: Bytes,
}

impl Frame {
    pub fn json<T: for<'de> Deserialize<'de>>(&self) -> Result<T> {
        serde_json::from_slice(&self.body).map_err(|e| {
            Error::new(
                ErrorKind::Unavailable,
                format!(
                    "the other daemon sent a malformed {:?} frame: {e}",
                    self.kind
                ),
            )
        })
    }
}

/// What the source says first.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Hello {
    pub source_job: Uuid,
    /// The source's checkpoint row: name, target, options, labels, owner, CRIU version.
    pub checkpoint: Checkpoint,
    /// `uname -m` of the source: CRIU images do not cross architectures.
    pub arch: String,
    /// The source's host name, as its jobs report the peer.
    #[serde(default)]
    pub host: String,
    /// A container: what the destination restores it as, when not the same id and bundle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub into: Option<ckptd_api::Target>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Accept {
    pub job: Uuid,
    pub checkpoint: Uuid,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileHeader {
    pub name: String,
    pub size: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Running {
    pub pid: i32,
}

/// Reads one frame; None at a clean end of the stream between frames.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> io::Result<Option<Frame>> {
    let mut head = [0u8; 5];
    match r.read_exact(&mut head[..1]).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    r.read_exact(&mut head[1..]).await?;
    let kind = Kind::of(head[0]).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unknown frame kind {}", head[0]),
        )
    })?;
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a frame of {len} bytes (at most {MAX_FRAME})"),
        ));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await?;
    Ok(Some(Frame {
        kind,
        body: body.into(),
    }))
}

pub async fn write_frame<W: AsyncWrite + Unpin>(
    w: &mut W,
    kind: Kind,
    body: &[u8],
) -> io::Result<()> {
    debug_assert!(body.len() <= MAX_FRAME);
    let mut head = [0u8; 5];
    head[0] = kind as u8;
    head[1..].copy_from_slice(&(body.len() as u32).to_be_bytes());
    w.write_all(&head).await?;
    w.write_all(body).await
}

pub fn json_body<T: Serialize>(v: &T) -> Bytes {
    serde_json::to_vec(v).expect("serializes").into()
}

/// The failure the other side sent, as an error of this side.
pub fn peer_error(info: &ErrorInfo, peer: &str) -> Error {
    let mut e = Error::new(
        ErrorKind::Unavailable,
        format!("the daemon at {peer} ended its side: {}", info.message),
    );
    e.details.insert(
        "peer_error".into(),
        serde_json::to_value(info).unwrap_or_default(),
    );
    e
}

/// The upgraded connection to the destination.
pub type Link = hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>;

/// Opens the link to the daemon at `addr` (`host:port`) with its bearer `token`.
pub async fn connect(addr: &str, token: &str, timeout: Duration) -> Result<Link> {
    let unreachable = |why: String| {
        Error::new(
            ErrorKind::Unavailable,
            format!("cannot reach the destination daemon at {addr}: {why}"),
        )
        .with_hint("check the address (its tcp_listen) and that it runs and is reachable from here")
    };
    let tcp = tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| unreachable(format!("no connection within {} s", timeout.as_secs())))?
        .map_err(|e| unreachable(e.to_string()))?;
    let _ = tcp.set_nodelay(true);
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .map_err(|e| unreachable(e.to_string()))?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    let req = hyper::Request::post(INCOMING_PATH)
        .header(hyper::header::HOST, addr)
        .header(hyper::header::AUTHORIZATION, format!("Bearer {token}"))
        .header(hyper::header::CONNECTION, "upgrade")
        .header(hyper::header::UPGRADE, PROTOCOL)
        .body(http_body_util::Empty::<Bytes>::new())
        .expect("a valid request");
    let resp = tokio::time::timeout(timeout, sender.send_request(req))
        .await
        .map_err(|_| unreachable(format!("no answer within {} s", timeout.as_secs())))?
        .map_err(|e| unreachable(e.to_string()))?;
    if resp.status() != hyper::StatusCode::SWITCHING_PROTOCOLS {
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let message = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned());
        let kind = if status == hyper::StatusCode::UNAUTHORIZED
            || status == hyper::StatusCode::FORBIDDEN
        {
            ErrorKind::Forbidden
        } else {
            ErrorKind::Unavailable
        };
        let mut e = Error::new(
            kind,
            format!("the destination daemon at {addr} refused the migration ({status}): {message}"),
        );
        if kind == ErrorKind::Forbidden {
            e = e.with_hint("give the destination's token (the contents of its tcp_token_file)");
        }
        return Err(e);
    }
    let upgraded = hyper::upgrade::on(resp)
        .await
        .map_err(|e| unreachable(format!("the upgrade to {PROTOCOL} failed: {e}")))?;
    Ok(hyper_util::rt::TokioIo::new(upgraded))
}

/// A psi record of CRIU's page-server protocol is 24 bytes; the destination's `criu
/// lazy-pages` sends only those (requests), so counting them counts the pages it asked for.
pub const PSI_BYTES: u64 = 24;

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_oversize_is_refused() {
        let (mut a, mut b) = tokio::io::duplex(4 * MAX_FRAME);
        write_frame(&mut a, Kind::Running, b"{\"pid\":7}")
            .await
            .unwrap();
        write_frame(&mut a, Kind::Pages, &[1, 2, 3]).await.unwrap();
        let f = read_frame(&mut b).await.unwrap().unwrap();
        assert_eq!(f.kind, Kind::Running);
        assert_eq!(f.json::<Running>().unwrap().pid, 7);
        let f = read_frame(&mut b).await.unwrap().unwrap();
        assert_eq!((f.kind, &f.body[..]), (Kind::Pages, &[1u8, 2, 3][..]));
        // A length above the limit is refused before anything is allocated.
        a.write_all(&[8, 0xff, 0xff, 0xff, 0xff]).await.unwrap();
        assert!(read_frame(&mut b).await.is_err());
        drop(a);
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(&[42, 0, 0, 0, 0]).await.unwrap();
        assert!(read_frame(&mut b).await.is_err(), "unknown kind");
        drop(a);
        assert!(read_frame(&mut b).await.unwrap().is_none(), "clean end");
    }
}
