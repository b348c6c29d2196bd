//! Errors of the HTTP API: a status code and a JSON body `{"error": message, "kind": kind}`,
//! plus `"hint"`, the route that helps, where one does.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use golemw_runtime::Error;

/// An error answered to an HTTP client.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    /// A stable, kebab-case name of what went wrong, for scripts.
    pub kind: &'static str,
    pub message: String,
    /// What the client can do about it, naming routes of this API.
    pub hint: Option<String>,
    /// The code the guest passed to `proc_exit`, when that ended the invocation.
    pub exit_code: Option<u32>,
}

impl ApiError {
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            kind,
            message: message.into(),
            hint: None,
            exit_code: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad-request", message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
}

impl From<Error> for ApiError {
    fn from(err: Error) -> Self {
        use StatusCode as S;
        let (status, kind) = match &err {
            Error::UnknownComponent(_) => (S::NOT_FOUND, "unknown-component"),
            Error::UnknownComponentVersion { .. } => (S::NOT_FOUND, "unknown-component-version"),
            Error::UnknownWorker(_) => (S::NOT_FOUND, "unknown-worker"),
            Error::UnknownPromise(_) => (S::NOT_FOUND, "unknown-promise"),
            Error::ComponentExists(_) => (S::CONFLICT, "component-exists"),
            Error::WorkerExists(_) => (S::CONFLICT, "worker-exists"),
            Error::InvalidComponent(_) => (S::BAD_REQUEST, "invalid-component"),
            Error::InvalidWorkerName(_) => (S::BAD_REQUEST, "invalid-worker-name"),
            Error::UnknownFunction(_) => (S::BAD_REQUEST, "unknown-function"),
            Error::InvalidArguments(_) => (S::BAD_REQUEST, "invalid-arguments"),
            Error::InvalidRevert { .. } => (S::BAD_REQUEST, "invalid-revert"),
            Error::InvalidFork { .. } => (S::BAD_REQUEST, "invalid-fork"),
            Error::WorkerFailed { .. } => (S::CONFLICT, "worker-failed"),
            Error::WorkerExited { .. } => (S::CONFLICT, "worker-exited"),
            Error::WorkerSuspended { .. } => (S::CONFLICT, "worker-suspended"),
            Error::WorkerInterrupted { .. } => (S::CONFLICT, "worker-interrupted"),
            // The invocation was stopped by `interrupt` (Golem's "Interrupted via the Golem API").
            Error::Interrupted { .. } => (S::CONFLICT, "interrupted"),
            Error::QueueFull { .. } => (S::TOO_MANY_REQUESTS, "queue-full"),
            Error::UnknownInvocation { .. } => (S::NOT_FOUND, "unknown-invocation"),
            Error::DeferredFailed { .. } => (S::UNPROCESSABLE_ENTITY, "trap"),
            Error::StorageFull { .. } | Error::StorageLimit { .. } => {
                (S::INSUFFICIENT_STORAGE, "storage-full")
            }
            // Another invocation of the worker is not over (it waits to retry, or sleeps):
            // try again later.
            Error::WorkerBusy { .. } => (S::SERVICE_UNAVAILABLE, "worker-busy"),
            Error::InvalidStatus { .. } => (S::CONFLICT, "invalid-status"),
            Error::PromiseDeleted(_) => (S::CONFLICT, "promise-deleted"),
            Error::UpdateFailed { .. } => (S::CONFLICT, "update-failed"),
            Error::InvocationUndone { .. } => (S::CONFLICT, "invocation-undone"),
            // The guest failed, not the server: the request was fine, its function was not.
            Error::Trap { .. } => (S::UNPROCESSABLE_ENTITY, "trap"),
            // The guest ended itself with a non-zero code; the body carries it.
            Error::GuestExited { .. } => (S::UNPROCESSABLE_ENTITY, "exited"),
            Error::IdempotencyKeyReused { .. } => {
                (S::UNPROCESSABLE_ENTITY, "idempotency-key-reused")
            }
            // Turned into a trap by the worker; never reaches a caller as such.
            Error::DeadlineExceeded { .. } => (S::UNPROCESSABLE_ENTITY, "trap"),
            Error::Divergence { .. } => (S::INTERNAL_SERVER_ERROR, "divergence"),
            Error::Corrupt { .. } => (S::INTERNAL_SERVER_ERROR, "corrupt-storage"),
            Error::MapFull => (S::INSUFFICIENT_STORAGE, "storage-full"),
            Error::Storage(_) => (S::INTERNAL_SERVER_ERROR, "storage"),
            Error::Io { .. } => (S::INTERNAL_SERVER_ERROR, "io"),
            Error::Engine(_) => (S::INTERNAL_SERVER_ERROR, "engine"),
            // A value the guest handed back that does not fit its declared type.
            Error::Abi(_) => (S::INTERNAL_SERVER_ERROR, "abi"),
            // Never reaches a caller: the data directory is held before serving starts.
            Error::DataDirLocked { .. } => (S::INTERNAL_SERVER_ERROR, "internal"),
        };
        let mut api = ApiError::new(status, kind, err.to_string());
        api.hint = hint(&err);
        if let Error::GuestExited { code, .. } = err {
            api.exit_code = Some(code);
        }
        api
    }
}

/// The route that helps with `err`, if one does.
fn hint(err: &Error) -> Option<String> {
    Some(match err {
        Error::UnknownComponent(_) => "GET /v1/components lists the known components".into(),
        Error::ComponentExists(name) => {
            format!("PUT /v1/components/{name} with the wasm adds a version")
        }
        Error::UnknownWorker(id) => format!(
            "GET /v1/components/{}/workers lists the component's workers",
            id.component_id
        ),
        Error::WorkerSuspended { promise, .. } => format!(
            "POST /v1/components/{}/workers/{}/promises/{}/complete completes the promise",
            promise.worker.component_id, promise.worker.worker_name, promise.oplog_idx
        ),
        Error::WorkerInterrupted { worker } | Error::Interrupted { worker } => format!(
            "POST /v1/components/{}/workers/{}/resume lets it run again",
            worker.component_id, worker.worker_name
        ),
        _ => return None,
    })
}

/// The `kind` of an error answered with `status` by axum itself (a rejected path, query or
/// body, an unknown method), before any handler of ours ran.
pub fn kind_of_status(status: StatusCode) -> &'static str {
    match status {
        StatusCode::NOT_FOUND => "no-route",
        StatusCode::METHOD_NOT_ALLOWED => "method-not-allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "payload-too-large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported-media-type",
        s if s.is_server_error() => "internal",
        _ => "bad-request",
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(status = %self.status, kind = self.kind, message = %self.message, "request failed");
        }
        let mut body = serde_json::json!({ "error": self.message, "kind": self.kind });
        if let Some(hint) = self.hint {
            body["hint"] = serde_json::Value::String(hint);
        }
        if let Some(code) = self.exit_code {
            body["exit_code"] = code.into();
        }
        (self.status, Json(body)).into_response()
    }
}
