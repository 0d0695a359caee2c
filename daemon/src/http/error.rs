//! The one place where errors become HTTP answers, and where the framework's own rejections
//! (bad JSON, body too large, unknown route) are turned into the API's error body.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use ckptd_api::ErrorBody;
use serde::de::DeserializeOwned;

use crate::error::{Error, ErrorKind};

pub fn status(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::InvalidRequest => StatusCode::BAD_REQUEST,
        ErrorKind::Forbidden => StatusCode::FORBIDDEN,
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::Conflict | ErrorKind::Cancelled => StatusCode::CONFLICT,
        ErrorKind::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorKind::TargetUnavailable => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorKind::QueueFull => StatusCode::TOO_MANY_REQUESTS,
        ErrorKind::CriuFailed | ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::InsufficientStorage => StatusCode::INSUFFICIENT_STORAGE,
        ErrorKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
        ErrorKind::Unauthorized => StatusCode::UNAUTHORIZED,
        ErrorKind::RemoteFailed => StatusCode::BAD_GATEWAY,
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = status(self.kind);
        if self.kind == ErrorKind::Internal {
            tracing::error!(message = %self.message, "internal error");
        }
        let info = self.to_info();
        let mut r = (
            status,
            Json(ErrorBody {
                error: info.clone(),
            }),
        )
            .into_response();
        // For the router's `request.refused` event.
        r.extensions_mut().insert(info);
        r
    }
}

/// A JSON body. Unlike `axum::Json` it does not insist on a Content-Type (plain `curl -d` sends
/// a form type), treats an empty body as `{}` where the type allows it, and answers every
/// rejection with the API's error body.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|rej| {
            if rej.status() == StatusCode::PAYLOAD_TOO_LARGE {
                Error::new(
                    ErrorKind::PayloadTooLarge,
                    format!(
                        "the request body is larger than the limit of {} bytes",
                        super::BODY_LIMIT
                    ),
                )
            } else {
                Error::invalid(format!("cannot read the request body: {rej}"))
            }
        })?;
        let body: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &bytes
        };
        serde_json::from_slice(body).map(ApiJson).map_err(|e| {
            Error::invalid(format!("invalid JSON body: {e}"))
                .with_hint("see openapi.yaml for the fields each route accepts")
        })
    }
}

pub async fn no_route() -> Error {
    Error::not_found("no such route").with_hint("the API lives under /v1; see openapi.yaml")
}

pub async fn method_not_allowed() -> Response {
    let mut r = Error::invalid("method not allowed on this route")
        .with_hint("see openapi.yaml for the methods each route takes")
        .into_response();
    *r.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    r
}
