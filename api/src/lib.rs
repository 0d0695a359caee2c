//! Wire types of the ckptd v1 API and a small client that speaks it over the daemon's Unix socket.
//!
//! The types here are the contract described in `openapi.yaml`: every field that goes over the
//! wire is declared once, here, and shared by the daemon, the `ckpt` CLI and the end-to-end tests.

mod advice;
mod client;
pub mod http;
pub mod query;
pub mod terminal;
mod types;

pub use advice::{retry_text, Advice, Caller, CriuOption};

pub use client::{Client, ClientError, Remote, Response};
pub use hyper::{Method, StatusCode};
pub use query::{ArchiveFormat, Compression};
pub use types::*;
