//! The HTTP API's routes. Every handler turns its request into a job on the shared executor
//! ([`Jobs`]); the job's error becomes an [`ApiError`].

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use golemw_runtime::history::UpdateMode;
use golemw_runtime::promises::{PromiseId, PROMISE_PAYLOAD_BYTES_MAX};
use golemw_runtime::worker::RevertTarget;
use golemw_runtime::{Deferred, Error, Executor, Invoked, WorkerId};
use serde::Deserialize;
use serde_json::{json, Value};

use super::api_error::ApiError;
use super::jobs::Jobs;
use crate::views::{self, WorkerDetails};

/// Largest component upload accepted.
const COMPONENT_BYTES_MAX: usize = 512 << 20;
/// The header that makes an invocation run at most once per key.
const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";

type Reply = Result<(StatusCode, Json<Value>), ApiError>;

/// Every route of the API (documented in README.md, "HTTP API").
pub fn router(executor: Jobs) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/v1/metrics/io", get(io_metrics))
        .route("/v1/components", get(list_components))
        .route(
            "/v1/components/{component}",
            get(get_component)
                .post(add_component)
                .put(update_component)
                .layer(DefaultBodyLimit::max(COMPONENT_BYTES_MAX)),
        )
        .route(
            "/v1/components/{component}/workers",
            get(list_workers).post(create_worker),
        )
        .route(
            "/v1/components/{component}/workers/{worker}",
            get(get_worker).delete(delete_worker),
        )
        .route(
            "/v1/components/{component}/workers/{worker}/invoke-and-await",
            post(invoke),
        )
        .route(
            "/v1/components/{component}/workers/{worker}/invoke",
            post(enqueue),
        )
        .route(
            "/v1/components/{component}/workers/{worker}/invocations/{key}",
            get(invocation_status),
        )
        .route(
            "/v1/components/{component}/workers/{worker}/oplog",
            get(oplog),
        )
        .route(
            "/v1/components/{component}/workers/{worker}/promises/{oplog_idx}/complete",
            // One byte over the runtime's limit, so that its error (not axum's) says why.
            post(complete_promise).layer(DefaultBodyLimit::max(PROMISE_PAYLOAD_BYTES_MAX + 1)),
        )
        .route(
            "/v1/components/{component}/workers/{worker}/interrupt",
            post(interrupt),
        )
        .route(
            "/v1/components/{component}/workers/{worker}/resume",
            post(resume),
        )
        .route(
            "/v1/components/{component}/workers/{worker}/update",
            post(update),
        )
        .route(
            "/v1/components/{component}/workers/{worker}/revert",
            post(revert),
        )
        .route(
            "/v1/components/{component}/workers/{worker}/fork",
            post(fork),
        )
        .fallback(|uri: axum::http::Uri| async move {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "no-route",
                format!("no route {uri}; `golemw serve --help` lists the routes"),
            )
        })
        .with_state(executor)
}

/// Whether the server is up (no token needed).
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses((status = 200, description = "`{\"status\": \"ok\"}`", body = Object))
)]
pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

fn ok(value: Value) -> Reply {
    Ok((StatusCode::OK, Json(value)))
}

fn to_json<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).expect("JSON serialisation of our own types")
}

/// A JSON body, or an error that says what is wrong with it (400, or 415 without a JSON
/// content type, 413 when too large).
fn body<T>(payload: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    payload.map(|Json(value)| value).map_err(|rejection| {
        // axum answers valid JSON of the wrong shape with 422; here 422 means the guest
        // trapped, so a malformed request is a 400 like any other.
        let status = match rejection.status() {
            StatusCode::UNPROCESSABLE_ENTITY => StatusCode::BAD_REQUEST,
            status => status,
        };
        ApiError::new(
            status,
            super::api_error::kind_of_status(status),
            rejection.body_text(),
        )
    })
}

/// Storage and executor counters: commits, syncs, writes grouped into them, instances loaded
/// and evicted, timers pending.
#[utoipa::path(
    get,
    path = "/v1/metrics/io",
    tag = "operations",
    responses((status = 200, description = "Storage and executor counters", body = Object))
)]
async fn io_metrics(State(executor): State<Jobs>) -> Reply {
    let ex = executor.executor();
    let io = ex.storage().io_counts();
    let (loaded, evicted) = ex.active_counts();
    ok(json!({
        "commits": io.commits,
        "syncs": io.syncs,
        "grouped_writes": io.grouped_writes,
        "active_workers": loaded,
        "active_memory_bytes": ex.active_memory_bytes(),
        "evicted_workers": evicted,
        "pending_timers": ex.pending_timers(),
    }))
}

#[utoipa::path(
    get,
    path = "/v1/components",
    tag = "components",
    responses((status = 200, description = "The latest version of every component", body = Object))
)]
async fn list_components(State(executor): State<Jobs>) -> Reply {
    let list = executor.run(|ex| ex.components().list()).await??;
    ok(to_json(&list))
}

#[utoipa::path(
    get,
    path = "/v1/components/{component}",
    tag = "components",
    params(super::openapi::ComponentPath),
    responses((status = 200, description = "The latest version of the component", body = Object), (status = 404, description = "Unknown component or worker", body = super::openapi::ErrorBody))
)]
async fn get_component(State(executor): State<Jobs>, Path(component): Path<String>) -> Reply {
    let record = executor
        .run(move |ex| ex.components().latest(&component))
        .await??;
    ok(to_json(&record))
}

/// `POST /v1/components/{name}`, the wasm file as the body: adds a component.
#[utoipa::path(
    post,
    path = "/v1/components/{component}",
    tag = "components",
    params(("component" = String, Path, description = "The name of the new component")), request_body(content = Vec<u8>, content_type = "application/wasm", description = "The wasm file"),
    responses((status = 201, description = "Added", body = Object), (status = 409, description = "A component of that name exists", body = super::openapi::ErrorBody), (status = 400, description = "A malformed request", body = super::openapi::ErrorBody))
)]
async fn add_component(
    State(executor): State<Jobs>,
    Path(name): Path<String>,
    wasm: Bytes,
) -> Reply {
    let record = executor
        .run(move |ex| ex.components().add(&name, &wasm))
        .await??;
    Ok((StatusCode::CREATED, Json(to_json(&record))))
}

/// `PUT /v1/components/{component}`, the wasm file as the body: adds a version.
#[utoipa::path(
    put,
    path = "/v1/components/{component}",
    tag = "components",
    params(super::openapi::ComponentPath), request_body(content = Vec<u8>, content_type = "application/wasm", description = "The wasm file of the new version"),
    responses((status = 200, description = "The new version", body = Object), (status = 404, description = "Unknown component or worker", body = super::openapi::ErrorBody), (status = 400, description = "A malformed request", body = super::openapi::ErrorBody))
)]
async fn update_component(
    State(executor): State<Jobs>,
    Path(component): Path<String>,
    wasm: Bytes,
) -> Reply {
    let record = executor
        .run(move |ex| ex.components().update(&component, &wasm))
        .await??;
    ok(to_json(&record))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    /// A `golemw worker list --filter` expression.
    filter: Option<String>,
}

#[utoipa::path(
    get,
    path = "/v1/components/{component}/workers",
    tag = "workers",
    params(super::openapi::ComponentPath, ListQuery),
    responses((status = 200, description = "The workers of the component, by name", body = Object), (status = 404, description = "Unknown component or worker", body = super::openapi::ErrorBody), (status = 400, description = "An invalid filter", body = super::openapi::ErrorBody))
)]
async fn list_workers(
    State(executor): State<Jobs>,
    Path(component): Path<String>,
    Query(query): Query<ListQuery>,
) -> Reply {
    let filter = query
        .filter
        .as_deref()
        .map(crate::filter_expr::parse)
        .transpose()
        .map_err(|err| ApiError::new(StatusCode::BAD_REQUEST, "invalid-filter", err.to_string()))?;
    let workers = executor
        .run(move |ex| {
            let id = ex.components().resolve_id(&component)?;
            let mut workers = ex.list_workers(&id)?;
            if let Some(filter) = &filter {
                workers.retain(|w| filter.matches(w));
            }
            Ok::<_, Error>(workers)
        })
        .await??;
    ok(to_json(&workers))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct NewWorker {
    name: String,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
}

#[utoipa::path(
    post,
    path = "/v1/components/{component}/workers",
    tag = "workers",
    params(super::openapi::ComponentPath), request_body = NewWorker,
    responses((status = 201, description = "Created", body = Object), (status = 409, description = "The worker exists", body = super::openapi::ErrorBody), (status = 404, description = "Unknown component or worker", body = super::openapi::ErrorBody), (status = 400, description = "A malformed request", body = super::openapi::ErrorBody))
)]
async fn create_worker(
    State(executor): State<Jobs>,
    Path(component): Path<String>,
    payload: Result<Json<NewWorker>, JsonRejection>,
) -> Reply {
    let new = body(payload)?;
    let record = executor
        .run(move |ex| {
            let id = ex.worker_id(&component, &new.name)?;
            ex.create_worker(&id, new.args, new.env.into_iter().collect())
        })
        .await??;
    Ok((StatusCode::CREATED, Json(to_json(&record))))
}

/// Runs `job` on the executor for the worker the path's `(component, worker)` names.
async fn on_worker<T: Send + 'static>(
    executor: &Jobs,
    (component, worker): (String, String),
    job: impl FnOnce(&Executor, WorkerId) -> Result<T, Error> + Send + 'static,
) -> Result<T, ApiError> {
    let outcome = executor
        .run(move |ex| {
            let id = ex.worker_id(&component, &worker)?;
            job(ex, id)
        })
        .await?;
    Ok(outcome?)
}

#[utoipa::path(
    get,
    path = "/v1/components/{component}/workers/{worker}",
    tag = "workers",
    params(super::openapi::WorkerPath),
    responses((status = 200, description = "Metadata, as `worker get --json`", body = Object), (status = 404, description = "Unknown component or worker", body = super::openapi::ErrorBody))
)]
async fn get_worker(State(executor): State<Jobs>, Path(path): Path<(String, String)>) -> Reply {
    let details = on_worker(&executor, path, |ex, id| {
        WorkerDetails::read(ex, &id).map(|details| details.to_json())
    })
    .await?;
    ok(details)
}

#[utoipa::path(
    delete,
    path = "/v1/components/{component}/workers/{worker}",
    tag = "workers",
    params(super::openapi::WorkerPath),
    responses((status = 200, description = "Deleted, with its oplog", body = Object), (status = 404, description = "Unknown component or worker", body = super::openapi::ErrorBody))
)]
async fn delete_worker(State(executor): State<Jobs>, Path(path): Path<(String, String)>) -> Reply {
    let deleted = on_worker(&executor, path, |ex, id| {
        ex.delete_worker(&id).map(|()| id.to_string())
    })
    .await?;
    ok(json!({ "deleted": deleted }))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct Invocation {
    /// `ns:pkg/iface.{func}`, or `func` if unambiguous.
    function: String,
    /// Parameters as WAVE values.
    #[serde(default)]
    params: Vec<String>,
}

/// Invokes a function and waits for its result (creating the worker if needed). An
/// invocation that awaits a promise not yet complete answers 202 with the promise; completing
/// it resumes the worker, and the same request with the same `Idempotency-Key` then returns the
/// result.
#[utoipa::path(
    post,
    path = "/v1/components/{component}/workers/{worker}/invoke-and-await",
    tag = "invocations",
    params(super::openapi::WorkerPath, ("idempotency-key" = Option<String>, Header, description = "Runs the invocation at most once per key")), request_body = Invocation,
    responses((status = 200, description = "Completed: `{status, result, from_idempotency_key}`", body = Object), (status = 202, description = "Suspended: awaits a promise", body = Object), (status = 422, description = "The guest trapped or exited", body = super::openapi::ErrorBody), (status = 409, description = "The state of the worker does not allow it", body = super::openapi::ErrorBody), (status = 404, description = "Unknown component or worker", body = super::openapi::ErrorBody), (status = 400, description = "A malformed request", body = super::openapi::ErrorBody))
)]
async fn invoke(
    State(executor): State<Jobs>,
    Path(path): Path<(String, String)>,
    headers: HeaderMap,
    payload: Result<Json<Invocation>, JsonRejection>,
) -> Reply {
    let invocation = body(payload)?;
    let key = idempotency_key(&headers)?;
    let (component, worker) = path;
    let id = executor.executor().worker_id(&component, &worker)?;
    // The outcome itself, not flattened: a retry and a suspension are answered below.
    let mut outcome = executor
        .in_turn(&id, move |ex, turn| {
            ex.invoke_in(
                turn,
                &invocation.function,
                &invocation.params,
                key.as_deref(),
            )
        })
        .await?;
    // The invocation trapped and will be retried: wait out the backoff here, so the executor
    // runs other requests meanwhile, then let it go on (and again, while it traps and the
    // worker's retry policy allows).
    while let Ok(Invoked::Deferred(Deferred::RetryScheduled {
        worker,
        function,
        idempotency_key,
        delay,
        ..
    })) = outcome
    {
        tokio::time::sleep(delay).await;
        outcome = executor
            .run(move |ex| ex.continue_retry(&worker, &function, &idempotency_key))
            .await?;
    }
    let outcome = match outcome {
        // Asleep (its own sleep, or queued behind another invocation's): the worker holds no
        // thread meanwhile, and neither does this request.
        Ok(Invoked::Deferred(
            Deferred::Sleeping {
                idempotency_key, ..
            }
            | Deferred::Queued {
                idempotency_key, ..
            },
        )) => executor
            .executor()
            .await_invocation(&id, &idempotency_key)
            .await
            .map(|result| {
                Invoked::Completed(golemw_runtime::InvocationOutcome {
                    result,
                    from_idempotency_key: false,
                })
            }),
        other => other,
    };
    match outcome? {
        Invoked::Completed(outcome) => ok(json!({
            "status": "completed",
            "result": outcome.result,
            "from_idempotency_key": outcome.from_idempotency_key,
        })),
        Invoked::Deferred(Deferred::Suspended {
            worker,
            promise,
            idempotency_key,
        }) => Ok((
            StatusCode::ACCEPTED,
            Json(json!({
                "status": "suspended",
                "worker": worker.to_string(),
                "idempotency_key": idempotency_key,
                "promise": { "worker": promise.worker.to_string(), "oplog_idx": promise.oplog_idx },
            })),
        )),
        // Waited for above; a retry's next delay is waited for in the loop.
        Invoked::Deferred(other) => Err(ApiError::from(other.refusal())),
    }
}

/// The `Idempotency-Key` header, if given.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    match headers.get(IDEMPOTENCY_KEY_HEADER) {
        Some(value) => Ok(Some(
            value
                .to_str()
                .map_err(|_| ApiError::bad_request("the Idempotency-Key header is not text"))?
                .to_string(),
        )),
        None => Ok(None),
    }
}

/// Queues an invocation (Golem's `invoke`): 202 with its idempotency key once it is durably
/// queued for the worker (created if needed); it runs after those queued before it.
#[utoipa::path(
    post,
    path = "/v1/components/{component}/workers/{worker}/invoke",
    tag = "invocations",
    params(super::openapi::WorkerPath, ("idempotency-key" = Option<String>, Header, description = "Queues the invocation at most once per key")), request_body = Invocation,
    responses((status = 202, description = "Durably queued: `{status, worker, idempotency_key}`", body = Object), (status = 429, description = "The queue of the worker is full", body = super::openapi::ErrorBody), (status = 404, description = "Unknown component or worker", body = super::openapi::ErrorBody), (status = 400, description = "A malformed request", body = super::openapi::ErrorBody))
)]
async fn enqueue(
    State(executor): State<Jobs>,
    Path(path): Path<(String, String)>,
    headers: HeaderMap,
    payload: Result<Json<Invocation>, JsonRejection>,
) -> Reply {
    let invocation = body(payload)?;
    let key = idempotency_key(&headers)?;
    let (worker, key) = on_worker(&executor, path, move |ex, id| {
        let key = ex.enqueue(
            &id,
            &invocation.function,
            &invocation.params,
            key.as_deref(),
        )?;
        Ok((id, key))
    })
    .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "status": "queued", "worker": worker.to_string(), "idempotency_key": key })),
    ))
}

/// Where an invocation is: pending (queued), running, suspended, or completed with its result.
#[utoipa::path(
    get,
    path = "/v1/components/{component}/workers/{worker}/invocations/{key}",
    tag = "invocations",
    params(("component" = String, Path, description = "The name or UUID of the component"), ("worker" = String, Path, description = "The name of the worker"), ("key" = String, Path, description = "The idempotency key of the invocation")),
    responses((status = 200, description = "`pending`, `running`, `suspended` or `completed`", body = Object), (status = 404, description = "Unknown component or worker", body = super::openapi::ErrorBody))
)]
async fn invocation_status(
    State(executor): State<Jobs>,
    Path((component, worker, key)): Path<(String, String, String)>,
) -> Reply {
    let status = on_worker(&executor, (component, worker), move |ex, id| {
        ex.invocation_status(&id, &key)?
            .ok_or(Error::UnknownInvocation {
                worker: id,
                idempotency_key: key,
            })
    })
    .await?;
    ok(to_json(&status))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct OplogQuery {
    /// First index to show (the first entry is 1).
    #[serde(default = "first_index")]
    from: u64,
    /// How many entries to show.
    #[serde(default = "default_count")]
    count: usize,
}

fn first_index() -> u64 {
    1
}

fn default_count() -> usize {
    100
}

#[utoipa::path(
    get,
    path = "/v1/components/{component}/workers/{worker}/oplog",
    tag = "workers",
    params(super::openapi::WorkerPath, OplogQuery),
    responses((status = 200, description = "Oplog entries, as `worker oplog --json`", body = Object), (status = 404, description = "Unknown component or worker", body = super::openapi::ErrorBody))
)]
async fn oplog(
    State(executor): State<Jobs>,
    Path(path): Path<(String, String)>,
    Query(query): Query<OplogQuery>,
) -> Reply {
    let rows = on_worker(&executor, path, move |ex, id| {
        let rows = views::oplog_rows(ex, &id, query.from, query.count)?;
        Ok(rows.iter().map(views::OplogRow::to_json).collect())
    })
    .await?;
    ok(Value::Array(rows))
}

/// `POST .../promises/{oplog_idx}/complete`, the payload as the body.
#[utoipa::path(
    post,
    path = "/v1/components/{component}/workers/{worker}/promises/{oplog_idx}/complete",
    tag = "promises",
    params(("component" = String, Path, description = "The name or UUID of the component"), ("worker" = String, Path, description = "The name of the worker"), ("oplog_idx" = u64, Path, description = "The promise: the oplog index that created it")), request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The payload"),
    responses((status = 200, description = "Completed (or already complete)", body = Object), (status = 404, description = "Unknown component or worker", body = super::openapi::ErrorBody), (status = 409, description = "The state of the worker does not allow it", body = super::openapi::ErrorBody))
)]
async fn complete_promise(
    State(executor): State<Jobs>,
    Path((component, worker, oplog_idx)): Path<(String, String, u64)>,
    data: Bytes,
) -> Reply {
    let completion = on_worker(&executor, (component, worker), move |ex, worker| {
        ex.complete_promise(&PromiseId { worker, oplog_idx }, &data)
    })
    .await?;
    ok(to_json(&completion))
}

/// Marks a worker interrupted: nothing runs it until `resume`.
#[utoipa::path(
    post,
    path = "/v1/components/{component}/workers/{worker}/interrupt",
    tag = "workers",
    params(super::openapi::WorkerPath),
    responses((status = 200, description = "Interrupted", body = Object), (status = 404, description = "Unknown component or worker", body = super::openapi::ErrorBody), (status = 409, description = "The state of the worker does not allow it", body = super::openapi::ErrorBody))
)]
async fn interrupt(State(executor): State<Jobs>, Path(path): Path<(String, String)>) -> Reply {
    let (id, previous) = on_worker(&executor, path, |ex, id| {
        ex.interrupt_worker(&id).map(|previous| (id, previous))
    })
    .await?;
    ok(json!({ "worker": id.to_string(), "status": "interrupted", "previous": previous }))
}

/// Lets an interrupted worker run again; an invocation it left in flight finishes now.
#[utoipa::path(
    post,
    path = "/v1/components/{component}/workers/{worker}/resume",
    tag = "workers",
    params(super::openapi::WorkerPath),
    responses((status = 200, description = "Running again", body = Object), (status = 404, description = "Unknown component or worker", body = super::openapi::ErrorBody), (status = 409, description = "The state of the worker does not allow it", body = super::openapi::ErrorBody))
)]
async fn resume(State(executor): State<Jobs>, Path(path): Path<(String, String)>) -> Reply {
    let (id, status) = on_worker(&executor, path, |ex, id| {
        ex.resume_worker(&id).map(|status| (id, status))
    })
    .await?;
    ok(json!({ "worker": id.to_string(), "status": status }))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct Update {
    /// The component version to move to.
    version: u64,
    /// `automatic` (the default) or `snapshot-based`.
    #[serde(default = "automatic")]
    #[schema(value_type = String)]
    mode: UpdateMode,
}

fn automatic() -> UpdateMode {
    UpdateMode::Automatic
}

/// Moves a worker to another version of its component (as `golemw worker update`).
#[utoipa::path(
    post,
    path = "/v1/components/{component}/workers/{worker}/update",
    tag = "workers",
    params(super::openapi::WorkerPath), request_body = Update,
    responses((status = 200, description = "The record of the worker after the update", body = Object), (status = 404, description = "Unknown component or worker", body = super::openapi::ErrorBody), (status = 409, description = "The state of the worker does not allow it", body = super::openapi::ErrorBody))
)]
async fn update(
    State(executor): State<Jobs>,
    Path(path): Path<(String, String)>,
    payload: Result<Json<Update>, JsonRejection>,
) -> Reply {
    let update = body(payload)?;
    let record = on_worker(&executor, path, move |ex, id| {
        ex.update_worker(&id, update.version, update.mode)
    })
    .await?;
    ok(to_json(&record))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct Revert {
    to_oplog_index: Option<u64>,
    last_invocations: Option<u64>,
}

/// Goes back in a worker's history (as `golemw worker revert`): body `{"to_oplog_index": N}`
/// or `{"last_invocations": N}`.
#[utoipa::path(
    post,
    path = "/v1/components/{component}/workers/{worker}/revert",
    tag = "workers",
    params(super::openapi::WorkerPath), request_body = Revert,
    responses((status = 200, description = "The region deleted and how the worker was recovered", body = Object), (status = 404, description = "Unknown component or worker", body = super::openapi::ErrorBody), (status = 400, description = "A malformed request", body = super::openapi::ErrorBody))
)]
async fn revert(
    State(executor): State<Jobs>,
    Path(path): Path<(String, String)>,
    payload: Result<Json<Revert>, JsonRejection>,
) -> Reply {
    let target = match body(payload)? {
        Revert {
            to_oplog_index: Some(index),
            last_invocations: None,
        } => RevertTarget::OplogIndex(index),
        Revert {
            to_oplog_index: None,
            last_invocations: Some(count),
        } => RevertTarget::LastInvocations(count),
        _ => {
            return Err(ApiError::bad_request(
                "give exactly one of to_oplog_index and last_invocations",
            ))
        }
    };
    let reverted = on_worker(&executor, path, move |ex, id| {
        let recovery = ex.revert_worker(&id, target)?;
        views::reverted(ex, &id, &recovery)
    })
    .await?;
    ok(reverted)
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct ForkRequest {
    /// The new worker's name (in the same component).
    target: String,
    /// The last oplog index of the source's history the fork gets (default: all of it).
    oplog_index: Option<u64>,
}

/// Forks a worker (as `golemw worker fork`): body `{"target": NAME, "oplog_index": N}`
/// (`oplog_index` optional); 201 with what was made.
#[utoipa::path(
    post,
    path = "/v1/components/{component}/workers/{worker}/fork",
    tag = "workers",
    params(super::openapi::WorkerPath), request_body = ForkRequest,
    responses((status = 201, description = "The new worker, the snapshots it shares and what was copied", body = Object), (status = 404, description = "Unknown component or worker", body = super::openapi::ErrorBody), (status = 400, description = "A malformed request", body = super::openapi::ErrorBody))
)]
async fn fork(
    State(executor): State<Jobs>,
    Path(path): Path<(String, String)>,
    payload: Result<Json<ForkRequest>, JsonRejection>,
) -> Reply {
    let request = body(payload)?;
    let fork = on_worker(&executor, path, move |ex, id| {
        ex.fork_worker(&id, &request.target, request.oplog_index)
    })
    .await?;
    Ok((StatusCode::CREATED, Json(to_json(&fork))))
}
