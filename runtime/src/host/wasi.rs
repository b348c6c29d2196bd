//! WASI preview 1. wasmer-wasix provides the implementation; the calls whose results are not a
//! pure function of guest state (clocks, randomness, sleeps, stdout/stderr) are replaced here by
//! versions that go through the durability gate. Args and environment need no gate: they are
//! fixed at worker creation and recorded in its `create` entry.

use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use wasmer::{Function, FunctionEnv, FunctionEnvMut, Imports, RuntimeError, Store};

use super::{abort, HostState, WASI_MODULE};

use crate::gate::Mode;
use crate::oplog::{HostFunction, HostValue, LogStream};

/// Every function of `wasi_snapshot_preview1`; a module importing anything else from that
/// module is refused at upload.
pub const PREVIEW1_FUNCTIONS: &[&str] = &[
    "args_get",
    "args_sizes_get",
    "environ_get",
    "environ_sizes_get",
    "clock_res_get",
    "clock_time_get",
    "fd_advise",
    "fd_allocate",
    "fd_close",
    "fd_datasync",
    "fd_fdstat_get",
    "fd_fdstat_set_flags",
    "fd_fdstat_set_rights",
    "fd_filestat_get",
    "fd_filestat_set_size",
    "fd_filestat_set_times",
    "fd_pread",
    "fd_prestat_get",
    "fd_prestat_dir_name",
    "fd_pwrite",
    "fd_read",
    "fd_readdir",
    "fd_renumber",
    "fd_seek",
    "fd_sync",
    "fd_tell",
    "fd_write",
    "path_create_directory",
    "path_filestat_get",
    "path_filestat_set_times",
    "path_link",
    "path_open",
    "path_readlink",
    "path_remove_directory",
    "path_rename",
    "path_symlink",
    "path_unlink_file",
    "poll_oneoff",
    "proc_exit",
    "proc_raise",
    "sched_yield",
    "random_get",
    "sock_accept",
    "sock_recv",
    "sock_send",
    "sock_shutdown",
];

const ERRNO_SUCCESS: i32 = 0;
const ERRNO_FAULT: i32 = 21;
const ERRNO_INVAL: i32 = 28;
const ERRNO_NOTSUP: i32 = 58;

/// WASI clock ids.
const CLOCK_REALTIME: i32 = 0;
const CLOCK_MONOTONIC: i32 = 1;

/// Size of a WASI `subscription` and of an `event` in bytes (preview 1 ABI).
const SUBSCRIPTION_BYTES: u32 = 48;
const EVENT_BYTES: u32 = 32;
/// A guest asking for more subscriptions than this in one poll is refused (bounds the host
/// allocation); Rust's std uses one.
const POLL_SUBSCRIPTIONS_MAX: u32 = 1024;
/// The longest sleep one `poll_oneoff` performs; longer ones are cut (the guest loops).
const SLEEP_MAX: Duration = Duration::from_secs(24 * 3600);

/// Replaces the gated WASI functions in `imports` with their durable versions.
pub fn override_imports(store: &mut Store, env: &FunctionEnv<HostState>, imports: &mut Imports) {
    let fd_write = imports
        .get_export(WASI_MODULE, "fd_write")
        .and_then(|e| match e {
            wasmer::Extern::Function(f) => Some(f),
            _ => None,
        });
    env.as_mut(store).wasi_fd_write = fd_write;
    let define =
        |imports: &mut Imports, name: &str, func: Function| imports.define(WASI_MODULE, name, func);
    define(
        imports,
        "clock_time_get",
        Function::new_typed_with_env(store, env, clock_time_get),
    );
    define(
        imports,
        "random_get",
        Function::new_typed_with_env(store, env, random_get),
    );
    define(
        imports,
        "poll_oneoff",
        Function::new_typed_with_env(store, env, poll_oneoff),
    );
    define(
        imports,
        "fd_write",
        Function::new_typed_with_env(store, env, fd_write_gated),
    );
}

pub(super) fn realtime_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// A monotonic clock that is comparable across processes: the wall clock at process start plus
/// the monotonic time elapsed since.
pub(super) fn monotonic_ns() -> u64 {
    static BASE: OnceLock<(Instant, u64)> = OnceLock::new();
    let (instant, wall) = BASE.get_or_init(|| (Instant::now(), realtime_ns()));
    wall + instant.elapsed().as_nanos() as u64
}

fn clock_time_get(
    mut ctx: FunctionEnvMut<HostState>,
    clock_id: i32,
    _precision: i64,
    out: i32,
) -> Result<i32, RuntimeError> {
    let (state, store) = ctx.data_and_store_mut();
    let live = || match clock_id {
        CLOCK_REALTIME => HostValue::Errno(0, realtime_ns()),
        CLOCK_MONOTONIC => HostValue::Errno(0, monotonic_ns()),
        // Process and thread CPU time: the monotonic clock is an honest upper bound.
        2 | 3 => HostValue::Errno(0, monotonic_ns()),
        _ => HostValue::Errno(ERRNO_INVAL as u16, 0),
    };
    let response = state
        .gate
        .host_call(
            HostFunction::ClockTimeGet,
            HostValue::U64(clock_id as u64),
            live,
        )
        .map_err(|e| abort(&mut state.gate, e))?;
    let HostValue::Errno(errno, mut value) = response else {
        return Err(abort(
            &mut state.gate,
            recorded_shape_error("clock_time_get", &response),
        ));
    };
    if errno != 0 {
        return Ok(i32::from(errno));
    }
    if clock_id == CLOCK_MONOTONIC {
        value = value.max(state.last_monotonic_ns);
        state.last_monotonic_ns = value;
    }
    let memory = state
        .memory
        .as_ref()
        .expect("memory is set after instantiation");
    match memory
        .view(&store)
        .write(out as u32 as u64, &value.to_le_bytes())
    {
        Ok(()) => Ok(ERRNO_SUCCESS),
        Err(_) => Ok(ERRNO_FAULT),
    }
}

fn random_get(mut ctx: FunctionEnvMut<HostState>, buf: i32, len: i32) -> Result<i32, RuntimeError> {
    /// One call may ask for at most this much randomness (bounds the recorded entry).
    const RANDOM_BYTES_MAX: u32 = 1 << 20;
    let len = len as u32;
    if len > RANDOM_BYTES_MAX {
        return Ok(ERRNO_INVAL);
    }
    let (state, store) = ctx.data_and_store_mut();
    let response = state
        .gate
        .host_call(
            HostFunction::RandomGet,
            HostValue::U64(u64::from(len)),
            || {
                let mut bytes = vec![0u8; len as usize];
                getrandom::fill(&mut bytes).expect("the OS random source failed");
                HostValue::Bytes(bytes)
            },
        )
        .map_err(|e| abort(&mut state.gate, e))?;
    let HostValue::Bytes(bytes) = response else {
        return Err(abort(
            &mut state.gate,
            recorded_shape_error("random_get", &response),
        ));
    };
    let memory = state
        .memory
        .as_ref()
        .expect("memory is set after instantiation");
    match memory.view(&store).write(buf as u32 as u64, &bytes) {
        Ok(()) => Ok(ERRNO_SUCCESS),
        Err(_) => Ok(ERRNO_FAULT),
    }
}

/// Sleeps: clock subscriptions only (what `std::thread::sleep` uses). Live, the host sleeps
/// until the earliest clock fires and records the events; on replay the events are written back
/// without sleeping.
fn poll_oneoff(
    mut ctx: FunctionEnvMut<HostState>,
    subs_ptr: i32,
    events_ptr: i32,
    nsubs: i32,
    nevents_ptr: i32,
) -> Result<i32, RuntimeError> {
    let nsubs = nsubs as u32;
    if nsubs == 0 || nsubs > POLL_SUBSCRIPTIONS_MAX {
        return Ok(ERRNO_INVAL);
    }
    let (state, store) = ctx.data_and_store_mut();
    let memory = state
        .memory
        .clone()
        .expect("memory is set after instantiation");
    let mut subs = vec![0u8; (nsubs * SUBSCRIPTION_BYTES) as usize];
    if memory
        .view(&store)
        .read(subs_ptr as u32 as u64, &mut subs)
        .is_err()
    {
        return Ok(ERRNO_FAULT);
    }
    // Parse: userdata u64 @0, tag u8 @8, clock id u32 @16, timeout u64 @24, flags u16 @40.
    let mut earliest: Option<(u64, Duration)> = None;
    for sub in subs.chunks_exact(SUBSCRIPTION_BYTES as usize) {
        let userdata = u64::from_le_bytes(sub[0..8].try_into().unwrap());
        if sub[8] != 0 {
            // fd readiness is not supported for durable workers: it has no replayable result.
            return Ok(ERRNO_NOTSUP);
        }
        let timeout = u64::from_le_bytes(sub[24..32].try_into().unwrap());
        let absolute = u16::from_le_bytes(sub[40..42].try_into().unwrap()) & 1 == 1;
        let wait = if absolute {
            let clock_id = u32::from_le_bytes(sub[16..20].try_into().unwrap());
            let now = if clock_id == CLOCK_MONOTONIC as u32 {
                monotonic_ns()
            } else {
                realtime_ns()
            };
            Duration::from_nanos(timeout.saturating_sub(now))
        } else {
            Duration::from_nanos(timeout)
        };
        if earliest.is_none_or(|(_, w)| wait < w) {
            earliest = Some((userdata, wait));
        }
    }
    let (userdata, wait) = earliest.expect("nsubs >= 1");
    // A long sleep suspends the worker durably (in a server): its due time is recorded, the
    // guest unwound, and the worker brought back at that time; the replay that brings it back
    // finds the due time here and sleeps only what is left.
    let durable_min = state.durable_sleep_min;
    let long = |wait: Duration| durable_min.is_some_and(|min| crate::sleeps::suspends(wait, min));
    let sleep_until = HostFunction::SleepUntil;
    let request = HostValue::U64(wait.as_nanos() as u64);
    let due_ms = if state
        .gate
        .replaying(&sleep_until)
        .map_err(|e| abort(&mut state.gate, e))?
        || (state.gate.mode() == Mode::Live && long(wait) && !state.gate.persist_nothing())
    {
        let due = || HostValue::U64(crate::oplog::now_ms() + wait.as_millis() as u64);
        match state
            .gate
            .host_call(sleep_until, request.clone(), due)
            .map_err(|e| abort(&mut state.gate, e))?
        {
            HostValue::U64(due_ms) => Some(due_ms),
            other => {
                return Err(abort(
                    &mut state.gate,
                    recorded_shape_error("golemw:sleep-until", &other),
                ))
            }
        }
    } else {
        None
    };
    let mut live_wait = wait;
    if let (Some(due_ms), Mode::Live) = (due_ms, state.gate.mode()) {
        let left = Duration::from_millis(due_ms.saturating_sub(crate::oplog::now_ms()));
        if long(left) {
            return Err(super::unwind(
                &mut state.gate,
                crate::outcome::Unwind::Sleep { until_ms: due_ms },
            ));
        }
        live_wait = left;
    }
    let response = state
        .gate
        .host_call(HostFunction::PollOneoff, request, || {
            std::thread::sleep(live_wait.min(SLEEP_MAX));
            HostValue::U64(userdata)
        })
        .map_err(|e| abort(&mut state.gate, e))?;
    let HostValue::U64(fired) = response else {
        return Err(abort(
            &mut state.gate,
            recorded_shape_error("poll_oneoff", &response),
        ));
    };
    // One clock event: userdata, error 0, type clock (0).
    let mut event = [0u8; EVENT_BYTES as usize];
    event[0..8].copy_from_slice(&fired.to_le_bytes());
    let view = memory.view(&store);
    if view.write(events_ptr as u32 as u64, &event).is_err()
        || view
            .write(nevents_ptr as u32 as u64, &1u32.to_le_bytes())
            .is_err()
    {
        return Ok(ERRNO_FAULT);
    }
    Ok(ERRNO_SUCCESS)
}

/// Writes to stdout and stderr become log entries (printed live, silent on replay); other
/// descriptors go to wasmer-wasix.
fn fd_write_gated(
    mut ctx: FunctionEnvMut<HostState>,
    fd: i32,
    iovs: i32,
    iovs_len: i32,
    nwritten: i32,
) -> Result<i32, RuntimeError> {
    /// Bounds the iovec array a guest can make the host walk in one call.
    const IOVECS_MAX: u32 = 1024;
    /// Bytes taken from the guest per call to stdout or stderr (the rest is a partial write).
    const FD_WRITE_BYTES_MAX: usize = 1 << 20;
    let stream = match fd {
        1 => LogStream::Stdout,
        2 => LogStream::Stderr,
        _ => {
            let (state, mut store) = ctx.data_and_store_mut();
            let inner = state
                .wasi_fd_write
                .clone()
                .expect("wasix provides fd_write");
            let args = [fd, iovs, iovs_len, nwritten].map(wasmer::Value::I32);
            let result = inner.call(&mut store, &args)?;
            return Ok(result.first().and_then(|v| v.i32()).unwrap_or(ERRNO_INVAL));
        }
    };
    let (state, store) = ctx.data_and_store_mut();
    let memory = state
        .memory
        .clone()
        .expect("memory is set after instantiation");
    let view = memory.view(&store);
    let iovs_len = iovs_len as u32;
    if iovs_len > IOVECS_MAX {
        return Ok(ERRNO_INVAL);
    }
    let mut raw = vec![0u8; (iovs_len * 8) as usize];
    if view.read(iovs as u32 as u64, &mut raw).is_err() {
        return Ok(ERRNO_FAULT);
    }
    // At most FD_WRITE_BYTES_MAX per call: a partial write, which WASI allows and every
    // guest's `write_all` continues. Bounds the host's copy of what a guest asks to write
    // (an iovec may claim 4 GiB), and so the size of one oplog entry.
    let memory_bytes = view.data_size();
    let mut bytes = Vec::new();
    for iov in raw.chunks_exact(8) {
        let ptr = u64::from(u32::from_le_bytes(iov[0..4].try_into().unwrap()));
        let len = u64::from(u32::from_le_bytes(iov[4..8].try_into().unwrap()));
        if ptr + len > memory_bytes {
            return Ok(ERRNO_FAULT);
        }
        let take = len.min((FD_WRITE_BYTES_MAX - bytes.len()) as u64) as usize;
        let start = bytes.len();
        bytes.resize(start + take, 0);
        if view.read(ptr, &mut bytes[start..]).is_err() {
            return Ok(ERRNO_FAULT);
        }
        if bytes.len() == FD_WRITE_BYTES_MAX {
            break;
        }
    }
    state
        .gate
        .log(stream, &bytes)
        .map_err(|e| abort(&mut state.gate, e))?;
    match view.write(nwritten as u32 as u64, &(bytes.len() as u32).to_le_bytes()) {
        Ok(()) => Ok(ERRNO_SUCCESS),
        Err(_) => Ok(ERRNO_FAULT),
    }
}

fn recorded_shape_error(function: &str, response: &HostValue) -> crate::error::Error {
    crate::error::Error::Corrupt {
        what: format!("recorded result of {function}"),
        detail: format!("unexpected shape: {response}"),
    }
}
