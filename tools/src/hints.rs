//! What a CLI user can do about a runtime error: the runtime says what went wrong, the CLI adds
//! the command that helps (the HTTP API adds routes instead, in `serve/api_error.rs`).

use golemw_runtime::Error;

/// The command that helps with `err`, if one does.
pub fn for_cli(err: &Error) -> Option<String> {
    Some(match err {
        Error::DataDirLocked { pid, .. } => {
            format!("stop process {pid} or pass another --data-dir")
        }
        Error::UnknownComponent(_) => "`golemw component list` shows the known ones".into(),
        Error::ComponentExists(name) => {
            format!("`golemw component update {name} FILE` adds a version")
        }
        Error::UnknownWorker(id) => format!(
            "`golemw worker list {}` shows the component's workers",
            id.component_id
        ),
        Error::WorkerSuspended { promise, .. } => format!(
            "`golemw worker complete-promise {} {} DATA` completes it",
            promise.worker, promise.oplog_idx
        ),
        Error::WorkerInterrupted { worker } | Error::Interrupted { worker } => {
            format!("`golemw worker resume {worker}` lets it run again")
        }
        Error::UnknownPromise(promise) => format!(
            "`golemw worker oplog {}` shows the index of each create-promise entry",
            promise.worker
        ),
        _ => return None,
    })
}
