//! `GET .../oplog/search?q=TEXT&from=N`: the first oplog entry at or after `N` whose text (its
//! kind and what `worker oplog` prints of it) contains `TEXT`, ignoring case. What the console's
//! "find" uses to search a whole oplog, 10^6 entries or more, page by page.
//!
//! One request reads at most [`ENTRIES_SCANNED_MAX`] entries, so that no request holds a thread
//! for long; one that finds nothing in them says where it stopped, and the client asks again
//! from there.

use axum::extract::{Path, Query, State};
use axum::routing::get;
use axum::{Json, Router};
use golemw_runtime::oplog::store::BlockRead;
use serde::Deserialize;
use serde_json::{json, Value};

use super::api_error::ApiError;
use super::jobs::Jobs;

/// Entries one request reads at most: about 100 ms of decoding and matching on this machine.
const ENTRIES_SCANNED_MAX: usize = 200_000;

/// Entries read per cursor walk: a few oplog blocks, so that memory stays small.
const ENTRIES_PER_READ: usize = 4096;

/// The longest text searched for, in bytes.
const QUERY_BYTES_MAX: usize = 256;

/// The search route.
pub fn router(jobs: Jobs) -> Router {
    Router::new()
        .route(
            "/v1/components/{component}/workers/{worker}/oplog/search",
            get(search),
        )
        .with_state(jobs)
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SearchQuery {
    /// The text to find (case ignored; 1 to 256 bytes).
    q: String,
    /// The first index to look at (default 1).
    from: Option<u64>,
}

/// Finds the next entry whose text contains `q`.
#[utoipa::path(
    get,
    path = "/v1/components/{component}/workers/{worker}/oplog/search",
    tag = "workers",
    params(super::openapi::WorkerPath, SearchQuery),
    responses(
        (status = 200, description = "`{found: INDEX or null, scanned_to: INDEX, oplog_len}`: \
            with no match up to `scanned_to` and `scanned_to < oplog_len`, search again from \
            `scanned_to + 1`", body = Object),
        (status = 400, description = "An empty or too long query", body = super::openapi::ErrorBody),
        (status = 404, description = "Unknown component or worker", body = super::openapi::ErrorBody),
    )
)]
pub async fn search(
    State(jobs): State<Jobs>,
    Path((component, worker)): Path<(String, String)>,
    Query(query): Query<SearchQuery>,
) -> Result<Json<Value>, ApiError> {
    if query.q.is_empty() || query.q.len() > QUERY_BYTES_MAX {
        return Err(ApiError::bad_request(format!(
            "q must be 1 to {QUERY_BYTES_MAX} bytes"
        )));
    }
    let needle = query.q.to_lowercase();
    let from = query.from.unwrap_or(1).max(1);
    let answer = jobs
        .run(move |ex| {
            let id = ex.worker_id(&component, &worker)?;
            let end = ex.oplog_len(&id)?;
            let last = end.min(from.saturating_add(ENTRIES_SCANNED_MAX as u64 - 1));
            let mut next = from;
            let mut text = String::new();
            while next <= last {
                let mut read_to = next - 1;
                for block in ex.oplog(&id, next, ENTRIES_PER_READ)? {
                    let BlockRead::Entries(entries) = block else {
                        continue;
                    };
                    for (index, entry) in entries {
                        if index < next || index > last {
                            continue;
                        }
                        read_to = read_to.max(index);
                        text.clear();
                        use std::fmt::Write as _;
                        let _ = write!(text, "{} {entry}", entry.kind());
                        if text.to_lowercase().contains(&needle) {
                            return Ok(json!({
                                "found": index, "scanned_to": index, "oplog_len": end,
                            }));
                        }
                    }
                }
                // A corrupt stretch yields no entries: step over what was asked for.
                next = match read_to >= next {
                    true => read_to + 1,
                    false => next + ENTRIES_PER_READ as u64,
                };
            }
            Ok::<_, golemw_runtime::Error>(json!({
                "found": null, "scanned_to": last, "oplog_len": end,
            }))
        })
        .await??;
    Ok(Json(answer))
}
