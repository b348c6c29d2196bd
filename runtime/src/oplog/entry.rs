//! What an oplog holds: one entry per thing a worker did that replay must reproduce or check.
//!
//! Modelled on Golem's oplog. Host calls name their function by a small enum (one byte encoded)
//! rather than a string: a worker making a million clock calls pays for it a million times.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::history::UpdateMode;
use crate::ids::{ComponentVersion, OplogIndex};

/// Which stream a guest wrote to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LogStream {
    Stdout,
    Stderr,
}

/// A host function whose result replay must return from the oplog instead of running again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HostFunction {
    /// `wasi_snapshot_preview1.clock_time_get`
    ClockTimeGet,
    /// `wasi_snapshot_preview1.random_get`
    RandomGet,
    /// `wasi_snapshot_preview1.poll_oneoff` (sleeps)
    PollOneoff,
    /// `golem:api/host.generate-idempotency-key`
    GenerateIdempotencyKey,
    /// `golem:api/host.get-self-metadata`
    GetSelfMetadata,
    /// `golem:api/host.get-worker-metadata`
    GetWorkerMetadata,
    /// Any other golem:api / golem:rpc function, by its import name.
    Golem(String),
    /// A sleep long enough to suspend the worker durably: the request is the sleep asked for
    /// (ns), the response its due time (ms since the epoch). Recorded before the worker is
    /// suspended, so the worker brought back at the due time sleeps only what is left.
    SleepUntil,
}

impl fmt::Display for HostFunction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostFunction::ClockTimeGet => f.write_str("wasi:clock_time_get"),
            HostFunction::RandomGet => f.write_str("wasi:random_get"),
            HostFunction::PollOneoff => f.write_str("wasi:poll_oneoff"),
            HostFunction::GenerateIdempotencyKey => {
                f.write_str("golem:api/host.generate-idempotency-key")
            }
            HostFunction::GetSelfMetadata => f.write_str("golem:api/host.get-self-metadata"),
            HostFunction::GetWorkerMetadata => f.write_str("golem:api/host.get-worker-metadata"),
            HostFunction::Golem(name) => f.write_str(name),
            HostFunction::SleepUntil => f.write_str("golemw:sleep-until"),
        }
    }
}

/// A recorded request or response of a host call.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum HostValue {
    Unit,
    U64(u64),
    /// A WASI errno together with a value (e.g. a clock reading), for calls that can fail.
    Errno(u16, u64),
    Bytes(Vec<u8>),
    /// A WAVE-encoded value of a golem:api call.
    Wave(String),
}

impl fmt::Display for HostValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostValue::Unit => f.write_str("()"),
            HostValue::U64(v) => write!(f, "{v}"),
            HostValue::Errno(0, v) => write!(f, "{v}"),
            HostValue::Errno(errno, v) => write!(f, "errno {errno} ({v})"),
            HostValue::Bytes(bytes) if bytes.len() <= 32 => {
                f.write_str("0x")?;
                bytes.iter().try_for_each(|b| write!(f, "{b:02x}"))
            }
            HostValue::Bytes(bytes) => write!(f, "<{} bytes>", bytes.len()),
            HostValue::Wave(text) => f.write_str(text),
        }
    }
}

/// One entry of a worker's oplog.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum OplogEntry {
    /// The worker was created: everything its start depends on.
    Create {
        timestamp_ms: u64,
        component_version: ComponentVersion,
        args: Vec<String>,
        env: Vec<(String, String)>,
    },
    /// A host call ran live; replay returns `response` instead of running it.
    ImportedFunctionInvoked {
        function: HostFunction,
        request: HostValue,
        response: HostValue,
    },
    /// An export was invoked with these (WAVE-encoded) params.
    ExportedFunctionInvoked {
        timestamp_ms: u64,
        function: String,
        params: Vec<String>,
        idempotency_key: String,
    },
    /// The export returned this (WAVE-encoded) result; `None` for functions without one.
    ExportedFunctionCompleted {
        timestamp_ms: u64,
        result: Option<String>,
    },
    /// Bytes the guest wrote to stdout or stderr; printed live, never again on replay.
    Log { stream: LogStream, bytes: Vec<u8> },
    /// A marker with no effect; `get-oplog-index` writes one so its result is stable.
    NoOp,
    /// The invocation trapped; the worker failed with this message.
    Error { timestamp_ms: u64, message: String },
    /// The guest called `set-oplog-index(start - 1)`: entries `start..=end` are deleted and
    /// replay skips them forever after.
    Jump {
        timestamp_ms: u64,
        start: OplogIndex,
        end: OplogIndex,
    },
    /// `golemw worker revert` deleted entries `start..=end`, as a jump does.
    Revert {
        timestamp_ms: u64,
        start: OplogIndex,
        end: OplogIndex,
    },
    /// A snapshot-based update began here: a fresh instance of `target_version` was created and
    /// its `load` export given `payload` (what the old version's `save` returned). When the
    /// update succeeds this entry is where the worker's history starts.
    SnapshotUpdateStarted {
        timestamp_ms: u64,
        target_version: ComponentVersion,
        payload: Vec<u8>,
    },
    /// The worker now runs `target_version`.
    UpdateSucceeded {
        timestamp_ms: u64,
        target_version: ComponentVersion,
        mode: UpdateMode,
    },
    /// An update to `target_version` failed; the worker stays on the version it ran.
    UpdateFailed {
        timestamp_ms: u64,
        target_version: ComponentVersion,
        mode: UpdateMode,
        reason: String,
    },
    /// The worker called `proc_exit`; it cannot be invoked again.
    Exited { timestamp_ms: u64, code: u32 },
    /// `mark-begin-operation`: an atomic region starts here (its index is the region's id).
    BeginAtomicRegion,
    /// `mark-end-operation(begin)`: the region that started at `begin` is complete.
    EndAtomicRegion { begin: OplogIndex },
    /// Idempotence mode off: a remote side effect is about to run (committed before it runs).
    BeginRemoteWrite,
    /// The remote side effect that began at `begin` has run and its result is recorded.
    EndRemoteWrite { begin: OplogIndex },
    /// Entries `start..=end` were discarded, as a jump deletes them: a failed attempt before a
    /// retry, an atomic region left open by a crash, or an invocation whose remote side effect
    /// may or may not have happened (the worker then fails).
    Discarded {
        timestamp_ms: u64,
        start: OplogIndex,
        end: OplogIndex,
        reason: DiscardReason,
    },
}

/// Why a region of history was discarded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DiscardReason {
    /// The invocation trapped; retry `attempt` (1, 2, ...) runs after `delay_ms`.
    Retry { attempt: u64, delay_ms: u64 },
    /// The worker stopped inside an atomic region; the region runs again.
    OpenAtomicRegion,
    /// The worker stopped between the start and the end of a remote side effect with
    /// idempotence off; the invocation is abandoned and the worker failed.
    UnfinishedRemoteWrite,
}

impl fmt::Display for DiscardReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DiscardReason::Retry { attempt, delay_ms } => {
                write!(f, "failed attempt, retry {attempt} after {delay_ms} ms")
            }
            DiscardReason::OpenAtomicRegion => f.write_str("atomic region interrupted, runs again"),
            DiscardReason::UnfinishedRemoteWrite => {
                f.write_str("remote side effect interrupted with idempotence off")
            }
        }
    }
}

impl OplogEntry {
    /// The entry's kind in kebab case, as `worker oplog` shows it.
    pub fn kind(&self) -> &'static str {
        match self {
            OplogEntry::Create { .. } => "create",
            OplogEntry::ImportedFunctionInvoked { .. } => "imported-function-invoked",
            OplogEntry::ExportedFunctionInvoked { .. } => "exported-function-invoked",
            OplogEntry::ExportedFunctionCompleted { .. } => "exported-function-completed",
            OplogEntry::Log { .. } => "log",
            OplogEntry::NoOp => "no-op",
            OplogEntry::Error { .. } => "error",
            OplogEntry::Jump { .. } => "jump",
            OplogEntry::Revert { .. } => "revert",
            OplogEntry::SnapshotUpdateStarted { .. } => "snapshot-update-started",
            OplogEntry::UpdateSucceeded { .. } => "update-succeeded",
            OplogEntry::UpdateFailed { .. } => "update-failed",
            OplogEntry::Exited { .. } => "exited",
            OplogEntry::BeginAtomicRegion => "begin-atomic-region",
            OplogEntry::EndAtomicRegion { .. } => "end-atomic-region",
            OplogEntry::BeginRemoteWrite => "begin-remote-write",
            OplogEntry::EndRemoteWrite { .. } => "end-remote-write",
            OplogEntry::Discarded { .. } => "discarded",
        }
    }
}

impl fmt::Display for OplogEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OplogEntry::Create {
                component_version,
                args,
                env,
                ..
            } => write!(
                f,
                "create version={component_version} args={args:?} env={env:?}"
            ),
            OplogEntry::ImportedFunctionInvoked {
                function,
                request,
                response,
            } => write!(f, "{function}({request}) -> {response}"),
            OplogEntry::ExportedFunctionInvoked {
                function,
                params,
                idempotency_key,
                ..
            } => write!(
                f,
                "invoke {function}({}) key={idempotency_key}",
                params.join(", ")
            ),
            OplogEntry::ExportedFunctionCompleted { result, .. } => match result {
                Some(result) => write!(f, "completed -> {result}"),
                None => f.write_str("completed"),
            },
            OplogEntry::Log { stream, bytes } => {
                write!(f, "{stream:?}: {:?}", String::from_utf8_lossy(bytes))
            }
            OplogEntry::NoOp => f.write_str("no-op"),
            OplogEntry::Error { message, .. } => write!(f, "error: {message}"),
            OplogEntry::Jump { start, end, .. } => write!(
                f,
                "set-oplog-index({}): entries {start}..={end} deleted",
                start - 1
            ),
            OplogEntry::Revert { start, end, .. } => {
                write!(
                    f,
                    "revert to {}: entries {start}..={end} deleted",
                    start - 1
                )
            }
            OplogEntry::SnapshotUpdateStarted {
                target_version,
                payload,
                ..
            } => write!(
                f,
                "snapshot-based update to version {target_version} started ({} byte snapshot)",
                payload.len()
            ),
            OplogEntry::UpdateSucceeded {
                target_version,
                mode,
                ..
            } => write!(f, "{mode} update to version {target_version} succeeded"),
            OplogEntry::UpdateFailed {
                target_version,
                mode,
                reason,
                ..
            } => write!(
                f,
                "{mode} update to version {target_version} failed: {reason}"
            ),
            OplogEntry::Exited { code, .. } => write!(f, "exited with code {code}"),
            OplogEntry::BeginAtomicRegion => f.write_str("mark-begin-operation"),
            OplogEntry::EndAtomicRegion { begin } => write!(f, "mark-end-operation({begin})"),
            OplogEntry::BeginRemoteWrite => f.write_str("remote side effect begins"),
            OplogEntry::EndRemoteWrite { begin } => {
                write!(f, "remote side effect begun at {begin} ended")
            }
            OplogEntry::Discarded {
                start, end, reason, ..
            } => write!(f, "entries {start}..={end} discarded: {reason}"),
        }
    }
}

impl OplogEntry {
    /// Entries that mark history without being part of what the guest did: replay passes over
    /// them wherever they appear.
    pub fn is_marker(&self) -> bool {
        matches!(
            self,
            OplogEntry::Jump { .. }
                | OplogEntry::Revert { .. }
                | OplogEntry::UpdateSucceeded { .. }
                | OplogEntry::UpdateFailed { .. }
                | OplogEntry::Discarded { .. }
        )
    }
}

/// Milliseconds since the Unix epoch, for entry timestamps.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
