//! `GET /metrics`: the server's state for Prometheus, in its text format (OpenMetrics).
//!
//! Three sources: invocations answered by this server, with their latency, by outcome (a
//! middleware sees every invocation route's answer); the runtime's own counters and histograms
//! (group commits, snapshots, restores: `golemw_runtime::metrics`); and what is read at each
//! scrape (commits and fsyncs, workers in memory and evicted, suspended workers and queued
//! invocations, counted from their tables in O(1)).

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use golemw_runtime::Executor;
use lmdb::Transaction as _;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use super::api_error::ApiError;
use super::jobs::Jobs;

/// The content type of Prometheus' text format as prometheus-client writes it.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Invocation latencies from 1 ms to about 4 min: 18 buckets, each twice the last (a
/// request's deadline is 60 s by default; a durable sleep or a retry backoff can make an
/// answered invocation take longer).
const LATENCY_BUCKETS: u16 = 18;

/// The labels of an answered invocation.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InvocationLabels {
    /// `invoke-and-await` (answered with the result) or `invoke` (answered once queued).
    pub route: &'static str,
    /// `completed`, `suspended` (202: awaits a promise), `queued` (202 from `invoke`), `failed`
    /// (422: the guest trapped or exited), `refused` (another 4xx: a bad request, a worker in
    /// the wrong state) or `error` (5xx).
    pub outcome: &'static str,
}

type LatencyFamily = Family<InvocationLabels, Histogram, fn() -> Histogram>;

/// What `/metrics` shows; shared by the route and the middleware that counts invocations.
#[derive(Debug)]
pub struct ServeMetrics {
    registry: Registry,
    invocation_seconds: LatencyFamily,
}

impl ServeMetrics {
    pub fn new(executor: Arc<Executor>) -> Arc<Self> {
        let mut registry = Registry::with_prefix("golemw");
        let invocation_seconds: LatencyFamily = Family::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, LATENCY_BUCKETS))
        });
        registry.register(
            "invocation_seconds",
            "Invocations answered by this server and the time to answer them, by route and \
             outcome",
            invocation_seconds.clone(),
        );
        golemw_runtime::metrics::get().register(&mut registry);
        registry.register_collector(Box::new(ExecutorState(executor)));
        Arc::new(ServeMetrics {
            registry,
            invocation_seconds,
        })
    }

    /// The text of a scrape.
    fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// `GET /metrics`.
pub fn router(jobs: Jobs, metrics: Arc<ServeMetrics>) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .with_state((jobs, metrics))
}

/// Prometheus' text format of every metric.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses((status = 200, description = "Prometheus' text format (OpenMetrics 1.0)",
               content_type = "application/openmetrics-text", body = String))
)]
pub async fn scrape(
    State((jobs, metrics)): State<(Jobs, Arc<ServeMetrics>)>,
) -> Result<Response, ApiError> {
    // The collector reads storage: on a blocking thread, like every other read.
    let text = jobs
        .run(move |_| metrics.encode())
        .await?
        .map_err(|_| ApiError::internal("encoding the metrics failed"))?;
    Ok(([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response())
}

/// Times every invocation request and counts it by route and outcome (from its status).
pub async fn count_invocations(
    State(metrics): State<Arc<ServeMetrics>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(route) = invocation_route(request.method(), request.uri().path()) else {
        return next.run(request).await;
    };
    let started = Instant::now();
    let response = next.run(request).await;
    let outcome = match response.status() {
        StatusCode::OK => "completed",
        StatusCode::ACCEPTED if route == "invoke" => "queued",
        StatusCode::ACCEPTED => "suspended",
        StatusCode::UNPROCESSABLE_ENTITY => "failed",
        status if status.is_client_error() => "refused",
        _ => "error",
    };
    metrics
        .invocation_seconds
        .get_or_create(&InvocationLabels { route, outcome })
        .observe(started.elapsed().as_secs_f64());
    response
}

/// The invocation route a request is for, if it is one:
/// `POST /v1/components/{c}/workers/{w}/invoke-and-await` or `.../invoke`.
fn invocation_route(method: &Method, path: &str) -> Option<&'static str> {
    if method != Method::POST {
        return None;
    }
    match path.split('/').collect::<Vec<_>>()[..] {
        ["", "v1", "components", _, "workers", _, "invoke-and-await"] => Some("invoke-and-await"),
        ["", "v1", "components", _, "workers", _, "invoke"] => Some("invoke"),
        _ => None,
    }
}

/// What is read from the executor and storage at each scrape.
struct ExecutorState(Arc<Executor>);

impl std::fmt::Debug for ExecutorState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ExecutorState")
    }
}

/// Entries in each table that counts workers in one state: (workers, awaiting a promise,
/// sleeping durably, queued invocations). O(1) each: LMDB keeps the count.
fn table_counts(executor: &Executor) -> Result<[u64; 4], lmdb::Error> {
    let storage = executor.storage();
    let tables = storage.tables();
    let txn = storage.env().begin_ro_txn()?;
    let mut counts = [0u64; 4];
    for (count, db) in counts.iter_mut().zip([
        tables.workers,
        tables.suspensions,
        tables.sleeps,
        tables.queue,
    ]) {
        *count = txn.stat(db)?.entries() as u64;
    }
    Ok(counts)
}

impl Collector for ExecutorState {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let executor = &self.0;
        let io = executor.storage().io_counts();
        let (loaded, evicted) = executor.active_counts();
        let counters = [
            (
                "commits",
                "LMDB write transactions committed (each fsyncs its data pages)",
                io.commits,
            ),
            (
                "fsyncs",
                "fsyncs of LMDB's meta page, where durability was promised (one per group \
                 commit)",
                io.syncs,
            ),
            (
                "grouped_writes",
                "Writes committed through group commit (over group_commit_batch_writes_count, \
                 the mean batch)",
                io.grouped_writes,
            ),
            (
                "evicted_workers",
                "Workers dropped from memory to stay within --max-active-workers or \
                 --max-active-memory-mib",
                evicted,
            ),
        ];
        for (name, help, value) in counters {
            let counter = ConstCounter::new(value);
            counter.encode(encoder.encode_descriptor(
                name,
                help,
                None,
                counter.metric_type(),
            )?)?;
        }
        let mut gauges = vec![
            ("active_workers", "Workers in memory", loaded),
            (
                "active_memory_bytes",
                "Linear memory of the workers in memory",
                executor.active_memory_bytes(),
            ),
            (
                "pending_timers",
                "Timers not yet due (sleeping workers, scheduled retries)",
                executor.pending_timers() as u64,
            ),
        ];
        match table_counts(executor) {
            Ok([workers, awaiting, sleeping, queued]) => gauges.extend([
                ("workers", "Workers stored", workers),
                (
                    "suspended_workers",
                    "Workers suspended: awaiting a promise or sleeping durably",
                    awaiting + sleeping,
                ),
                (
                    "sleeping_workers",
                    "Workers suspended by a durable sleep",
                    sleeping,
                ),
                (
                    "queued_invocations",
                    "Invocations queued (POST .../invoke) and not yet run",
                    queued,
                ),
            ]),
            Err(err) => tracing::warn!(%err, "metrics: reading the tables' counts failed"),
        }
        for (name, help, value) in gauges {
            let gauge = ConstGauge::new(value);
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_invocation_routes_are_timed_as_invocations() {
        let post = Method::POST;
        let path = "/v1/components/c/workers/w/invoke-and-await";
        assert_eq!(invocation_route(&post, path), Some("invoke-and-await"));
        let path = "/v1/components/c/workers/invoke/invoke";
        assert_eq!(invocation_route(&post, path), Some("invoke"));
        for path in [
            "/v1/components/invoke",
            "/v1/components/c/workers/invoke",
            "/v1/components/c/workers/w/invoke/x",
            "/invoke",
        ] {
            assert_eq!(invocation_route(&post, path), None, "{path}");
        }
        let path = "/v1/components/c/workers/w/invoke";
        assert_eq!(invocation_route(&Method::GET, path), None);
    }
}
