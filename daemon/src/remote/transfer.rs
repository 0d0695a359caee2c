//! Push and pull: the archive stream into a multipart upload and back, with no temporary file
//! and bounded memory whatever the checkpoint's size.
//!
//! Push: a blocking thread writes the archive (`archive::export`: tar, zstd, manifest last),
//! through age when the remote encrypts, into a sink that hashes and counts the stored bytes and
//! hands 1 MiB chunks over a small channel; the async side cuts parts and uploads up to
//! `upload_concurrency` of them at once (it waits for a slot before it takes more). Memory:
//! (concurrency + 1) parts plus the channel. Any failure or a stop aborts the multipart upload
//! (asked again while the server is down), so no part is left behind; the record is written
//! only after the upload completes.
//!
//! Pull: the object's body stream is read on a blocking thread through a hashing reader, age's
//! decryptor when the copy is encrypted, and `archive::import` (every file's sha256 checked
//! against the manifest); the whole object's sha256 and size are then checked against the copy.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use ckptd_api::{Checkpoint, Compression, RemoteCheckpoint, RemoteCopy};
use futures_util::TryStreamExt;
use object_store::multipart::{MultipartStore, PartId};
use object_store::{MultipartId, ObjectStoreExt, PutPayloadMut};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::Remote;
use crate::archive::{self, Import, Imported, Manifest};
use crate::error::{Error, ErrorKind, Result};
use crate::stop::StopSignal;

/// Set when a transfer must stop; the blocking side checks it between chunks.
pub type StopFlag = Arc<AtomicBool>;

const CHUNK: usize = 1 << 20;

/// What a push produced.
#[derive(Debug, Clone)]
pub struct Pushed {
    pub copy: RemoteCopy,
    pub secs: f64,
}

/// `Write` that hashes and counts the bytes, then sends them on in chunks of `chunk` bytes.
pub(super) struct Sink {
    tx: mpsc::Sender<Bytes>,
    buf: Vec<u8>,
    hash: Sha256,
    bytes: u64,
    chunk: usize,
}

impl Sink {
    pub(super) fn new(tx: mpsc::Sender<Bytes>, chunk: usize) -> Sink {
        Sink {
            tx,
            buf: Vec::with_capacity(chunk),
            hash: Sha256::new(),
            bytes: 0,
            chunk,
        }
    }

    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(
            &mut self.buf,
            Vec::with_capacity(self.chunk),
        ));
        self.tx
            .blocking_send(chunk)
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the upload stopped"))
    }
}

impl Write for Sink {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.hash.update(data);
        self.bytes += data.len() as u64;
        self.buf.extend_from_slice(data);
        if self.buf.len() >= self.chunk {
            self.send()?;
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

/// `Read` that hashes and counts what passes, and fails once `stop` is set.
pub(super) struct Hashing<R> {
    inner: R,
    hash: Sha256,
    bytes: u64,
    stop: StopFlag,
    /// Where the count is shown too (a pull job's progress).
    progress: Option<super::Progress>,
}

impl<R> Hashing<R> {
    pub(super) fn new(inner: R, stop: StopFlag) -> Hashing<R> {
        Hashing {
            inner,
            hash: Sha256::new(),
            bytes: 0,
            stop,
            progress: None,
        }
    }

    /// The same, adding what it reads to `progress` as it goes.
    pub(super) fn counting(mut self, progress: super::Progress) -> Hashing<R> {
        self.progress = Some(progress);
        self
    }

    /// The sha256 (hex) and the count of what was read.
    pub(super) fn finish(self) -> (String, u64) {
        (format!("{:x}", self.hash.finalize()), self.bytes)
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.stop.load(Ordering::Relaxed) {
            return Err(io::Error::new(
                io::ErrorKind::Interrupted,
                "the pull was stopped",
            ));
        }
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        if let Some(p) = &self.progress {
            p.fetch_add(n as u64, Ordering::Relaxed);
        }
        Ok(n)
    }
}

/// Waits for `work`, a blocking pull that checks `flag` between reads, unless `stop` fires
/// first: then the flag is set, the work is waited for (it fails at its next read), and the
/// stop is the error.
pub(super) async fn pulled<T: Send + 'static>(
    work: tokio::task::JoinHandle<Result<T>>,
    flag: &StopFlag,
    stop: &mut StopSignal,
) -> Result<T> {
    tokio::pin!(work);
    let joined = tokio::select! {
        j = &mut work => j,
        _ = stop.changed() => {
            flag.store(true, Ordering::Relaxed);
            let _ = work.await;
            return Err(stopped(*stop.borrow(), "pull"));
        }
    };
    joined.map_err(|e| Error::internal(format!("the pull task failed: {e}")))?
}

pub(super) fn stopped(reason: Option<crate::stop::StopReason>, what: &str) -> Error {
    match reason {
        Some(crate::stop::StopReason::TimedOut(d)) => Error::new(
            ErrorKind::Timeout,
            format!(
                "the {what} ran longer than {} s and was stopped",
                d.as_secs()
            ),
        )
        .with_hint("raise job_timeout_secs in the config for very large checkpoints or slow links"),
        _ => Error::new(ErrorKind::Cancelled, format!("the {what} was cancelled")),
    }
}

impl Remote {
    /// Refuses at once a copy this host cannot decrypt.
    pub fn can_pull(&self, copy: &RemoteCopy) -> Result<()> {
        if copy.encrypted && self.identities.is_empty() {
            return Err(Error::forbidden(format!(
                "checkpoint object {} in remote {} is encrypted, and this host has no age identity \
                 for the remote",
                copy.key, self.name
            ))
            .with_hint(format!(
                "set age_identity_file in [remotes.{}] to the identity whose public key the \
                 pushing host encrypts to",
                self.name
            )));
        }
        Ok(())
    }

    /// The part size for an archive of about `estimate` bytes: the configured one, grown so that
    /// 10,000 parts hold it.
    pub fn part_size_for(&self, estimate: u64) -> u64 {
        let needed = estimate.div_ceil(super::MAX_PARTS - 100);
        self.part_size.max(needed).min(super::MAX_PART)
    }

    /// Pushes the images in `dir` (checkpoint `cp`, whose `manifest` the archive carries): the
    /// archive is streamed into a multipart upload, then the record that lists it is written.
    /// On any failure, or when `stop` fires, the upload is aborted and nothing is left.
    /// `started` gets the upload's key and id as soon as the server gave them: a daemon killed
    /// mid-push aborts the upload at its next start (`abort`).
    pub async fn push(
        &self,
        dir: PathBuf,
        manifest: Manifest,
        cp: &Checkpoint,
        options: &super::PushOptions,
        mut stop: StopSignal,
        started_upload: tokio::sync::oneshot::Sender<(String, String)>,
    ) -> Result<Pushed> {
        let store = match &self.backend {
            super::Backend::Bucket(s) => s.clone(),
            super::Backend::Registry(r) => {
                return r.push(self, dir, manifest, cp, options, stop).await
            }
        };
        let started = std::time::Instant::now();
        let key = self.archive_key(cp.id);
        let upload = store
            .create_multipart(&key)
            .await
            .map_err(|e| self.failed("start the upload", e))?;
        let _ = started_upload.send((key.to_string(), upload.clone()));
        // Compressed images are at most a little larger than the images (incompressible pages).
        let estimate = cp.size_bytes + cp.size_bytes / 50 + (1 << 20);
        let part_size = self.part_size_for(estimate) as usize;
        let (tx, mut rx) = mpsc::channel::<Bytes>(2);
        let recipients = self.recipients.clone();
        let producer = tokio::task::spawn_blocking(move || -> io::Result<(String, u64)> {
            let mut sink = Sink::new(tx, CHUNK);
            if recipients.is_empty() {
                archive::export(&dir, manifest, Compression::Zstd, &mut sink)?;
            } else {
                let enc = age::Encryptor::with_recipients(
                    recipients.iter().map(|r| r as &dyn age::Recipient),
                )
                .map_err(io::Error::other)?;
                let mut w = enc.wrap_output(&mut sink)?;
                archive::export(&dir, manifest, Compression::Zstd, &mut w)?;
                w.finish()?;
            }
            sink.flush()?;
            Ok((format!("{:x}", sink.hash.finalize()), sink.bytes))
        });
        // Parts are cut from the stream and uploaded, at most `concurrency` at once.
        let mut uploading: tokio::task::JoinSet<Result<(usize, PartId)>> =
            tokio::task::JoinSet::new();
        let mut done: Vec<Option<PartId>> = Vec::new();
        let fed: Result<()> = async {
            let mut part = PutPayloadMut::new();
            let mut ended = false;
            while !ended {
                tokio::select! {
                    chunk = rx.recv() => match chunk {
                        Some(c) => {
                            options.progress.fetch_add(c.len() as u64, Ordering::Relaxed);
                            part.push(c)
                        }
                        None => ended = true,
                    },
                    _ = stop.changed() => return Err(stopped(*stop.borrow(), "push")),
                }
                if part.content_length() >= part_size || (ended && part.content_length() > 0) {
                    while uploading.len() >= self.concurrency {
                        let (i, id) = joined(uploading.join_next().await)?;
                        done[i] = Some(id);
                    }
                    let idx = done.len();
                    done.push(None);
                    let payload = std::mem::take(&mut part).freeze();
                    let (store, key, upload, remote) =
                        (store.clone(), key.clone(), upload.clone(), self.clone());
                    uploading.spawn(async move {
                        store
                            .put_part(&key, &upload, idx, payload)
                            .await
                            .map(|p| (idx, p))
                            .map_err(|e| remote.failed("upload a part", e))
                    });
                }
            }
            while let Some(r) = uploading.join_next().await {
                let (i, id) = joined(Some(r))?;
                done[i] = Some(id);
            }
            Ok(())
        }
        .await;
        uploading.abort_all();
        // The producer ends once the channel closes (on a failure it gets BrokenPipe).
        drop(rx);
        let produced = producer
            .await
            .map_err(|e| Error::internal(format!("the archive task failed: {e}")));
        let outcome = match (fed, produced) {
            (Err(e), _) => Err(e),
            (Ok(()), Err(e)) => Err(e),
            (Ok(()), Ok(Err(e))) => Err(Error::internal(format!(
                "cannot read the checkpoint's images for the push: {e}"
            ))),
            (Ok(()), Ok(Ok(done))) => Ok(done),
        };
        let completed = match outcome {
            Ok(hashed) => {
                let parts: Vec<PartId> = done.into_iter().flatten().collect();
                store
                    .complete_multipart(&key, &upload, parts)
                    .await
                    .map_err(|e| self.failed("complete the upload", e))
                    .map(|_| hashed)
            }
            Err(e) => Err(e),
        };
        let (sha256, size) = match completed {
            Ok(hashed) => hashed,
            Err(e) => {
                self.abort_upload(key.clone(), upload);
                return Err(e);
            }
        };
        let copy = RemoteCopy {
            remote: self.name.clone(),
            key: key.to_string(),
            size_bytes: size,
            sha256,
            pushed_at: crate::catalog::now(),
            encrypted: self.encrypts(),
        };
        let mut listed = cp.clone();
        listed.locations = vec![ckptd_api::Location::Remote(copy.clone())];
        let entry = RemoteCheckpoint {
            checkpoint: listed,
            object: copy.clone(),
            pushed_from: crate::sys::hostname(),
        };
        if let Err(e) = self.write_record(&entry).await {
            // An archive without its record is invisible to listing: remove it.
            let _ = store.delete(&key).await;
            return Err(e);
        }
        Ok(Pushed {
            copy,
            secs: started.elapsed().as_secs_f64(),
        })
    }

    /// Streams `copy` into `staging` (an existing empty private directory) and verifies it:
    /// every file's sha256 against the archive's manifest, the whole object's against the copy.
    /// At most `limit` bytes are written.
    pub async fn pull(
        &self,
        copy: &RemoteCopy,
        staging: &Path,
        (limit, progress): (u64, super::Progress),
        mut stop: StopSignal,
    ) -> Result<Import> {
        self.can_pull(copy)?;
        let store = match &self.backend {
            super::Backend::Bucket(s) => s,
            super::Backend::Registry(r) => {
                return r.pull(self, copy, staging, (limit, progress), stop).await
            }
        };
        let body = store
            .get(&Remote::object(copy))
            .await
            .map_err(|e| self.failed(&format!("read {}", copy.key), e))?
            .into_stream()
            .map_err(io::Error::other);
        let reader = tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(body));
        let flag: StopFlag = Arc::default();
        let identities = self.identities.clone();
        let encrypted = copy.encrypted;
        let staging = staging.to_owned();
        let f = flag.clone();
        let work = tokio::task::spawn_blocking(move || -> Result<(Imported, String, u64)> {
            let mut r = Hashing::new(reader, f).counting(progress);
            let imported = if encrypted {
                let d = age::Decryptor::new_buffered(io::BufReader::new(&mut r))
                    .map_err(|e| damaged(&format!("it is not an age file: {e}")))?;
                let dec = d
                    .decrypt(identities.iter().map(|i| i as &dyn age::Identity))
                    .map_err(|e| match e {
                        age::DecryptError::NoMatchingKeys => Error::forbidden(
                            "none of this host's age identities can decrypt the checkpoint: it \
                             was encrypted to other recipients",
                        )
                        .with_hint("use the identity whose public key is in the pushing host's age_recipients"),
                        e => damaged(&format!("it cannot be decrypted: {e}")),
                    })?;
                archive::import(dec, &staging, limit)?
            } else {
                archive::import(&mut r, &staging, limit)?
            };
            // The rest (zstd's and age's trailers): the object's hash covers every byte.
            io::copy(&mut r, &mut io::sink()).map_err(|e| damaged(&e.to_string()))?;
            let (hash, bytes) = r.finish();
            Ok((imported, hash, bytes))
        });
        let (imported, sha256, size) = pulled(work, &flag, &mut stop)
            .await
            .map_err(|e| {
                if e.kind == ErrorKind::InvalidRequest {
                    // archive::import's words are for uploads; this is the bucket's object.
                    let mut e = e;
                    e.kind = ErrorKind::RemoteFailed;
                    e.message = format!("the object {} in remote {} is refused: {}", copy.key, self.name, e.message);
                    e.with_hint("the object is damaged or was altered; push the checkpoint again from a host that has it")
                } else {
                    e
                }
            })?;
        if sha256 != copy.sha256 || size != copy.size_bytes {
            return Err(damaged(&format!(
                "the object is {size} bytes with sha256 {sha256}; it was pushed as {} bytes with \
                 sha256 {}",
                copy.size_bytes, copy.sha256
            )));
        }
        Ok(Import::Ckptd(Box::new(imported)))
    }
}

/// A finished part upload, or why it failed.
fn joined(
    r: Option<std::result::Result<Result<(usize, PartId)>, tokio::task::JoinError>>,
) -> Result<(usize, PartId)> {
    match r {
        Some(Ok(r)) => r,
        Some(Err(e)) => Err(Error::internal(format!("a part upload task failed: {e}"))),
        None => Err(Error::internal("no part upload was running")),
    }
}

impl Remote {
    /// Aborts a multipart upload that will not complete, so that no part stays in the bucket.
    /// A server that is down (the reason the push failed, often) is asked again for about two
    /// minutes; then the bucket's lifecycle rule for incomplete uploads has to remove them.
    /// Aborts the multipart upload `id` of `key` (one a previous run of the daemon left), in
    /// the background, asking again while the server does not answer.
    pub fn abort(&self, key: &str, id: &str) {
        self.abort_upload(object_store::path::Path::from(key), id.to_owned());
    }

    fn abort_upload(&self, key: object_store::path::Path, upload: MultipartId) {
        let Ok(store) = self.bucket().cloned() else {
            // A registry's push leaves no upload: blobs no manifest names are the registry's
            // garbage collection's.
            return;
        };
        let this = self.clone();
        tokio::spawn(async move {
            let mut wait = std::time::Duration::from_millis(500);
            for attempt in 1..=12 {
                match store.abort_multipart(&key, &upload).await {
                    Ok(()) => {
                        tracing::info!(remote = %this.name, key = %key, attempt, "aborted the multipart upload of a failed push");
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(remote = %this.name, key = %key, attempt, error = %e, "cannot abort the multipart upload of a failed push yet");
                    }
                }
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(std::time::Duration::from_secs(15));
            }
            tracing::error!(remote = %this.name, key = %key, "gave up aborting a multipart upload; the bucket's lifecycle rule for incomplete uploads must remove its parts");
        });
    }
}

fn damaged(why: &str) -> Error {
    Error::new(
        ErrorKind::RemoteFailed,
        format!("the checkpoint object is damaged: {why}"),
    )
    .with_hint("push the checkpoint again from a host that has it")
}
