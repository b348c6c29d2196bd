//! A worker's snapshots over HTTP, as `golemw snapshot list` and `snapshot diff` show them: the
//! list with sizes, and the map of a snapshot's memory, page by page, against another (what the
//! console draws as a heatmap).

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use golemw_runtime::snapshots;
use golemw_snapshot::PageRef;
use serde::Deserialize;
use serde_json::{json, Value};

use super::api_error::ApiError;
use super::jobs::Jobs;

/// The snapshot routes.
pub fn router(jobs: Jobs) -> Router {
    Router::new()
        .route(
            "/v1/components/{component}/workers/{worker}/snapshots",
            get(list),
        )
        .route(
            "/v1/components/{component}/workers/{worker}/snapshots/diff",
            get(diff),
        )
        .with_state(jobs)
}

/// Runs `job` for the worker the path names; its errors as the API's.
async fn on_worker<T: Send + 'static>(
    jobs: &Jobs,
    (component, worker): (String, String),
    job: impl FnOnce(&golemw_runtime::Executor, golemw_runtime::WorkerId) -> Result<T, ApiError>
        + Send
        + 'static,
) -> Result<T, ApiError> {
    jobs.run(move |ex| {
        let id = ex.worker_id(&component, &worker)?;
        job(ex, id)
    })
    .await?
}

/// The worker's snapshots, oldest first, as `snapshot list --json`.
#[utoipa::path(
    get,
    path = "/v1/components/{component}/workers/{worker}/snapshots",
    tag = "snapshots",
    params(super::openapi::WorkerPath),
    responses(
        (status = 200, description = "`{snapshots: [{index, memory_bytes, pages_total, \
            pages_stored, pages_new, bytes_new, capture_us, age_s, ...}], stored_page_bytes}`",
            body = Object),
        (status = 404, description = "Unknown component or worker", body = super::openapi::ErrorBody),
    )
)]
pub async fn list(
    State(jobs): State<Jobs>,
    Path(path): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let list = on_worker(&jobs, path, |ex, id| {
        Ok(crate::views::snapshot_list(ex, &id)?)
    })
    .await?;
    Ok(Json(list))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DiffQuery {
    /// The oplog index of the earlier snapshot.
    from: u64,
    /// The oplog index of the later snapshot.
    to: u64,
}

/// The pages of snapshot `to`'s memory, each against snapshot `from`: which changed (as
/// `snapshot diff`), and which are all zero.
#[utoipa::path(
    get,
    path = "/v1/components/{component}/workers/{worker}/snapshots/diff",
    tag = "snapshots",
    params(super::openapi::WorkerPath, DiffQuery),
    responses(
        (status = 200, description = "`{from, to, pages_total, changed: [[start, end]...], \
            changed_pages, zero: [[start, end]...]}`: page ranges, end excluded, 64 KiB pages",
            body = Object),
        (status = 404, description = "Unknown component, worker or snapshot", body = super::openapi::ErrorBody),
    )
)]
pub async fn diff(
    State(jobs): State<Jobs>,
    Path(path): Path<(String, String)>,
    Query(query): Query<DiffQuery>,
) -> Result<Json<Value>, ApiError> {
    let answer = on_worker(&jobs, path, move |ex, id| {
        let uid = ex.worker_record(&id)?.uid;
        let list = snapshots::list(ex.storage(), &uid)?;
        let manifest = |index: u64| {
            let stored = list.iter().find(|s| s.index == index).ok_or_else(|| {
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    "unknown-snapshot",
                    format!(
                        "no snapshot at oplog index {index}; there are snapshots at {:?}",
                        list.iter().map(|s| s.index).collect::<Vec<_>>()
                    ),
                )
            })?;
            stored.manifest.as_ref().map_err(|e| {
                ApiError::internal(format!("the snapshot at {index} is unusable: {e}"))
            })
        };
        let (a, b) = (manifest(query.from)?, manifest(query.to)?);
        let changed = golemw_snapshot::diff(a, b);
        let changed_pages: u64 = changed.iter().map(|r| u64::from(r.end - r.start)).sum();
        Ok(json!({
            "from": query.from,
            "to": query.to,
            "pages_total": b.pages.len(),
            "changed": changed.iter().map(|r| [r.start, r.end]).collect::<Vec<_>>(),
            "changed_pages": changed_pages,
            "zero": zero_ranges(&b.pages),
        }))
    })
    .await?;
    Ok(Json(answer))
}

/// The runs of all-zero pages, as `[start, end)` ranges.
fn zero_ranges(pages: &[PageRef]) -> Vec<[usize; 2]> {
    let mut ranges: Vec<[usize; 2]> = Vec::new();
    for (i, page) in pages.iter().enumerate() {
        if !matches!(page, PageRef::Zero) {
            continue;
        }
        match ranges.last_mut() {
            Some(last) if last[1] == i => last[1] = i + 1,
            _ => ranges.push([i, i + 1]),
        }
    }
    ranges
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_pages_are_grouped_into_ranges() {
        let stored = PageRef::Stored {
            hash: golemw_snapshot::PageHash([7; 32]),
            fingerprint: 0,
        };
        let pages = [
            PageRef::Zero,
            PageRef::Zero,
            stored,
            PageRef::Zero,
            stored,
            PageRef::Zero,
        ];
        assert_eq!(zero_ranges(&pages), vec![[0, 2], [3, 4], [5, 6]]);
        assert_eq!(zero_ranges(&[]), Vec::<[usize; 2]>::new());
    }
}
