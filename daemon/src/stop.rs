//! How a running job is told to stop (a cancel, or its timeout), shared by the service that sends
//! it and the engines and CRIU runs that obey it.

use crate::error::Error;

/// Why a running job is asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    Cancelled,
    TimedOut(std::time::Duration),
}

impl StopReason {
    pub fn error(self) -> Error {
        match self {
            StopReason::Cancelled => Error::new(
                crate::error::ErrorKind::Cancelled,
                "the job was cancelled while it ran; CRIU was stopped and the target left running",
            ),
            StopReason::TimedOut(d) => Error::new(
                crate::error::ErrorKind::Timeout,
                format!(
                    "the job ran longer than {} s and was stopped; the target was left running",
                    d.as_secs()
                ),
            )
            .with_hint("raise job_timeout_secs in the config for very large targets or slow disks"),
        }
    }
}

/// Tells a running job's engine to stop: set once, by a cancel or the job's timeout.
pub type StopSignal = tokio::sync::watch::Receiver<Option<StopReason>>;

/// A signal that never fires (for work that cannot be stopped, and for tests).
pub fn never_stop() -> StopSignal {
    let (tx, rx) = tokio::sync::watch::channel(None);
    std::mem::forget(tx);
    rx
}
