//! `GET .../workers/{worker}/connect`: a worker's output as it happens, as server-sent events
//! (Golem's `connect`, which streams over a WebSocket).
//!
//! What a guest writes to stdout and stderr becomes `log` entries of its oplog (`host/wasi.rs`).
//! A stream sends each write as the guest makes it, mid-invocation, through the executor's
//! output tap (`golemw_runtime::output_tap`, `"live": true`), and follows the committed oplog
//! too: every [`POLL_INTERVAL`] it reads the entries committed since the last look and sends
//! the `log` entries it has not sent live (`"live": false`): output from before the stream
//! (`?from=N`), and any a slow client fell too far behind to receive live. A live write may
//! belong to an attempt that is then rolled back (a failed commit, a retry); the entry that
//! replaces it comes with the same index. A slow client slows no worker: the tap drops what a
//! follower cannot take, and the oplog still has it.
//!
//! Events: `stdout` and `stderr` with data `{"index": N, "text": "...", "live": bool}` (the
//! bytes as UTF-8, invalid sequences replaced), and `error` with `{"error", "kind"}` before the
//! stream ends when the worker goes away. Streams at once are bounded by
//! `--max-connect-streams`; past it the answer is 503 `too-many-streams`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use golemw_runtime::oplog::entry::{LogStream, OplogEntry};
use golemw_runtime::oplog::store::BlockRead;
use golemw_runtime::output_tap::LiveOutput;
use golemw_runtime::{Executor, WorkerId};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::{broadcast, mpsc, watch, OwnedSemaphorePermit, Semaphore};

use super::api_error::ApiError;
use super::jobs::Jobs;

/// How often a stream looks for new entries: output shows up within this of its commit. One
/// look costs one read transaction (the oplog's length) when nothing is new.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Entries read per look at most; a stream behind by more catches up over several looks.
const ENTRIES_PER_POLL_MAX: usize = 256;

/// Output sent per look at most (bytes; one `log` entry, at most 1 MiB, may pass it): bounds
/// what a look holds in memory and sends at once.
const OUTPUT_BYTES_PER_POLL_MAX: usize = 4 << 20;

/// Live writes remembered (so as not to send them again once committed) per stream at most.
const SENT_LIVE_REMEMBERED_MAX: usize = 65_536;

/// Events buffered for a slow client; past them the stream stops reading until it catches up.
const EVENTS_BUFFERED_MAX: usize = 64;

/// Default of `--max-connect-streams`: each stream costs a task and a read every 100 ms; 64
/// of them cost 640 small reads a second, well under a core.
pub const DEFAULT_MAX_STREAMS: usize = 64;

/// What every stream shares: the bound on their number, and the signal that the server stops.
#[derive(Clone)]
pub struct Streams {
    jobs: Jobs,
    permits: Arc<Semaphore>,
    max: usize,
    stopping: watch::Receiver<bool>,
}

/// Ends every stream when dropped or told to: the server stops, and graceful shutdown waits
/// for responses in flight, which a stream's never finishes by itself.
pub struct StopStreams(watch::Sender<bool>);

impl StopStreams {
    pub fn stop(&self) {
        let _ = self.0.send(true);
    }
}

impl Streams {
    pub fn new(jobs: Jobs, max: usize) -> (Self, StopStreams) {
        let (stop, stopping) = watch::channel(false);
        let max = max.max(1);
        let streams = Streams {
            jobs,
            permits: Arc::new(Semaphore::new(max)),
            max,
            stopping,
        };
        (streams, StopStreams(stop))
    }
}

/// The connect route.
pub fn router(streams: Streams) -> Router {
    Router::new()
        .route(
            "/v1/components/{component}/workers/{worker}/connect",
            get(connect),
        )
        .with_state(streams)
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ConnectQuery {
    /// The first oplog index to send output from (default: the end, so only new output).
    from: Option<u64>,
}

/// Follows a worker's output: `stdout` and `stderr` events as the guest writes them.
#[utoipa::path(
    get,
    path = "/v1/components/{component}/workers/{worker}/connect",
    tag = "workers",
    params(super::openapi::WorkerPath, ConnectQuery),
    responses(
        (status = 200, description = "Server-sent events: `stdout` and `stderr` with \
            `{\"index\", \"text\", \"live\"}`, `error` before the stream ends", content_type = "text/event-stream", body = String),
        (status = 404, description = "Unknown component or worker", body = super::openapi::ErrorBody),
        (status = 503, description = "--max-connect-streams streams are open", body = super::openapi::ErrorBody),
    )
)]
pub async fn connect(
    State(streams): State<Streams>,
    Path((component, worker)): Path<(String, String)>,
    Query(query): Query<ConnectQuery>,
) -> Result<Response, ApiError> {
    let permit = Arc::clone(&streams.permits)
        .try_acquire_owned()
        .map_err(|_| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "too-many-streams",
                format!(
                    "{} output streams are open, the most this server allows \
                     (--max-connect-streams); close one or try again later",
                    streams.max
                ),
            )
        })?;
    // An unknown worker is answered before the stream starts. Following live starts before the
    // committed end is read: a write is either after that end or sent live, or both.
    let (id, end, live) = streams
        .jobs
        .run(move |ex| {
            let id = ex.worker_id(&component, &worker)?;
            let live = ex.output_tap().subscribe(&id);
            let end = ex.oplog_len(&id)?;
            Ok::<_, golemw_runtime::Error>((id, end, live))
        })
        .await??;
    let next = query.from.unwrap_or(end + 1).max(1);
    let (events, receiver) = mpsc::channel(EVENTS_BUFFERED_MAX);
    tokio::spawn(follow(streams.clone(), id, next, live, events, permit));
    let stream = tokio_stream::wrappers::ReceiverStream::new(receiver);
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// One output event.
fn output_event(index: u64, stream: LogStream, text: &str, live: bool) -> Event {
    let name = match stream {
        LogStream::Stdout => "stdout",
        LogStream::Stderr => "stderr",
    };
    let data = json!({ "index": index, "text": text, "live": live }).to_string();
    Event::default().event(name).data(data)
}

/// Sends the worker's output from index `next` on, live as it is written and from the oplog as
/// it is committed, until the client goes, the worker does, or the server stops. Holds its
/// stream's permit until then.
async fn follow(
    streams: Streams,
    id: WorkerId,
    mut next: u64,
    mut live: broadcast::Receiver<LiveOutput>,
    events: mpsc::Sender<Result<Event, Infallible>>,
    _permit: OwnedSemaphorePermit,
) {
    let mut stopping = streams.stopping.clone();
    // Indexes sent live and not yet passed by the committed cursor: those entries went out.
    let mut sent_live = std::collections::BTreeSet::new();
    loop {
        let read = {
            let id = id.clone();
            streams.jobs.run(move |ex| read_output(ex, &id, next)).await
        };
        let batch = match read {
            Ok(Ok(batch)) => batch,
            Ok(Err(err)) => {
                let err = ApiError::from(err);
                let data = json!({ "error": err.message, "kind": err.kind });
                let _ = events
                    .send(Ok(Event::default().event("error").data(data.to_string())))
                    .await;
                return;
            }
            Err(_) => return,
        };
        next = batch.next;
        for (index, stream, text) in batch.output {
            if sent_live.contains(&index) {
                continue;
            }
            if events
                .send(Ok(output_event(index, stream, &text, false)))
                .await
                .is_err()
            {
                return;
            }
        }
        sent_live = sent_live.split_off(&next);
        if batch.more {
            continue;
        }
        let received = tokio::select! {
            _ = tokio::time::sleep(POLL_INTERVAL) => None,
            received = live.recv() => Some(received),
            _ = events.closed() => return,
            _ = stopping.wait_for(|stop| *stop) => return,
        };
        match received {
            None => {}
            Some(Ok(output)) => {
                sent_live.insert(output.index);
                if sent_live.len() > SENT_LIVE_REMEMBERED_MAX {
                    // An invocation writing without end: forget the oldest half; those entries
                    // may come again once committed (same index), never go missing.
                    let middle = *sent_live
                        .iter()
                        .nth(SENT_LIVE_REMEMBERED_MAX / 2)
                        .unwrap_or(&0);
                    sent_live = sent_live.split_off(&middle);
                }
                let text = String::from_utf8_lossy(&output.bytes);
                let event = output_event(output.index, output.stream, &text, true);
                if events.send(Ok(event)).await.is_err() {
                    return;
                }
            }
            // Fell behind the tap: what was missed comes from the oplog once committed.
            Some(Err(broadcast::error::RecvError::Lagged(_))) => {}
            // The executor is gone; the server is stopping.
            Some(Err(broadcast::error::RecvError::Closed)) => return,
        }
    }
}

/// The output found in one look.
struct OutputBatch {
    /// `(index, stream, text)` of each `log` entry read.
    output: Vec<(u64, LogStream, String)>,
    /// The index to look from next time.
    next: u64,
    /// Whether more entries were committed than this look read.
    more: bool,
}

/// The `log` entries from `from` on, at most [`ENTRIES_PER_POLL_MAX`] entries' worth.
fn read_output(
    executor: &Executor,
    id: &WorkerId,
    from: u64,
) -> Result<OutputBatch, golemw_runtime::Error> {
    let end = executor.oplog_len(id)?;
    let mut batch = OutputBatch {
        output: Vec::new(),
        next: from,
        more: false,
    };
    if end < from {
        return Ok(batch);
    }
    let mut last = end.min(from + ENTRIES_PER_POLL_MAX as u64 - 1);
    let mut sent = 0usize;
    'blocks: for block in executor.oplog(id, from, ENTRIES_PER_POLL_MAX)? {
        let BlockRead::Entries(entries) = block else {
            // A corrupt block: `worker oplog` says what is wrong; the stream skips it.
            continue;
        };
        for (index, entry) in entries {
            if index < from || index > last {
                continue;
            }
            if let OplogEntry::Log { stream, bytes } = entry {
                sent += bytes.len();
                batch
                    .output
                    .push((index, stream, String::from_utf8_lossy(&bytes).into_owned()));
                if sent >= OUTPUT_BYTES_PER_POLL_MAX {
                    last = index;
                    break 'blocks;
                }
            }
        }
    }
    batch.next = last + 1;
    batch.more = last < end;
    Ok(batch)
}
