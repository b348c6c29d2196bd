//! The WASI 0.2 interfaces a component's main module imports directly (Rust's `wasm32-wasip2`
//! standard library does, for its environment, exit, stdio, clocks and randomness), as
//! canonical-ABI imports through the durability gate, with the choices preview 1 makes:
//!
//! - clocks and randomness are recorded (the same `clock_time_get` and `random_get` entries as
//!   preview 1), the monotonic clock never goes backwards;
//! - stdout and stderr writes are `log` entries, printed live and silent on replay; stdin is
//!   empty (closed);
//! - the environment, arguments and exit are functions of the worker (its `create` entry), so
//!   nothing is recorded for them; `exit` ends the invocation as preview 1's `proc_exit` does;
//! - pollables of streams are ready at once, those of the monotonic clock when it passes their
//!   instant (see `host::rpc`, which owns the pollable table shared with RPC futures).
//!
//! Versions: interfaces are matched on `0.2` whatever their patch version
//! (`crate::component::interface_key`), as wit-component links them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use wasm_wave::value::Value;
use wasm_wave::wasm::WasmValue;

use super::{Failure, HostState};
use crate::abi::{parse_wave, wave_string};
use crate::component::ImportedFunction;
use crate::error::{Error, Result};
use crate::oplog::{HostFunction, HostValue, LogStream};

/// The functions provided, by interface (version-less key).
pub const PROVIDED: super::Provided = super::Provided(&[
    (
        "wasi:io/error@0.2",
        &["[resource-drop]error", "[method]error.to-debug-string"],
    ),
    (
        "wasi:io/streams@0.2",
        &[
            "[resource-drop]input-stream",
            "[resource-drop]output-stream",
            "[method]input-stream.read",
            "[method]input-stream.blocking-read",
            "[method]input-stream.skip",
            "[method]input-stream.blocking-skip",
            "[method]input-stream.subscribe",
            "[method]output-stream.check-write",
            "[method]output-stream.write",
            "[method]output-stream.blocking-write-and-flush",
            "[method]output-stream.flush",
            "[method]output-stream.blocking-flush",
            "[method]output-stream.subscribe",
            "[method]output-stream.write-zeroes",
            "[method]output-stream.blocking-write-zeroes-and-flush",
        ],
    ),
    (
        "wasi:cli/environment@0.2",
        &["get-environment", "get-arguments", "initial-cwd"],
    ),
    ("wasi:cli/exit@0.2", &["exit"]),
    ("wasi:cli/stdin@0.2", &["get-stdin"]),
    ("wasi:cli/stdout@0.2", &["get-stdout"]),
    ("wasi:cli/stderr@0.2", &["get-stderr"]),
    (
        "wasi:cli/terminal-input@0.2",
        &["[resource-drop]terminal-input"],
    ),
    (
        "wasi:cli/terminal-output@0.2",
        &["[resource-drop]terminal-output"],
    ),
    ("wasi:cli/terminal-stdin@0.2", &["get-terminal-stdin"]),
    ("wasi:cli/terminal-stdout@0.2", &["get-terminal-stdout"]),
    ("wasi:cli/terminal-stderr@0.2", &["get-terminal-stderr"]),
    ("wasi:clocks/wall-clock@0.2", &["now", "resolution"]),
    (
        "wasi:clocks/monotonic-clock@0.2",
        &[
            "now",
            "resolution",
            "subscribe-instant",
            "subscribe-duration",
        ],
    ),
    (
        "wasi:random/random@0.2",
        &["get-random-bytes", "get-random-u64"],
    ),
    (
        "wasi:random/insecure@0.2",
        &["get-insecure-random-bytes", "get-insecure-random-u64"],
    ),
    ("wasi:random/insecure-seed@0.2", &["insecure-seed"]),
]);

/// Randomness one call may ask for at most (bounds the recorded entry), as in preview 1.
const RANDOM_BYTES_MAX: u64 = 1 << 20;
/// What `check-write` allows: writes are recorded as they come, so any size would do; this
/// keeps a guest's buffers and each entry moderate (output is bounded per invocation anyway).
const WRITE_BUDGET: u64 = 64 << 10;

/// A stream handle's end.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum Stream {
    Stdin,
    Stdout,
    Stderr,
    /// The body of a `wasi:blobstore` value: writes go to its outgoing value (this handle).
    BlobBody(u32),
}

/// WASI 0.2 resources of one worker instance (part of a snapshot's host state: a guest keeps
/// its stdout handle in a static).
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct Handles {
    last: u32,
    streams: BTreeMap<u32, Stream>,
}

impl Handles {
    fn open(&mut self, stream: Stream) -> u32 {
        self.last += 1;
        self.streams.insert(self.last, stream);
        self.last
    }

    /// An output stream whose writes go to the `wasi:blobstore` outgoing value `value`.
    pub fn open_blob_body(&mut self, value: u32) -> u32 {
        self.open(Stream::BlobBody(value))
    }

    /// Forgets a resource the guest dropped.
    pub fn drop_handle(&mut self, name: &str, handle: u32) -> std::result::Result<(), String> {
        match name {
            "[resource-drop]input-stream" | "[resource-drop]output-stream" => {
                match self.streams.remove(&handle) {
                    Some(_) => Ok(()),
                    None => Err(format!("{name}: unknown handle {handle}")),
                }
            }
            // Errors and terminals are never handed out: nothing to forget.
            _ => Ok(()),
        }
    }
}

/// One call of a WASI 0.2 function (drops excepted).
pub(super) fn call(
    state: &mut HostState,
    func: &ImportedFunction,
    params: Vec<Value>,
) -> std::result::Result<Option<Value>, Failure> {
    let typed = |text: &str| -> std::result::Result<Option<Value>, Failure> {
        let ty = func
            .abi
            .result_type()
            .ok_or_else(|| Error::Engine(format!("{} has no result type", func.name)))?;
        Ok(Some(parse_wave(ty, text)?))
    };
    let handle = || params.first().map(|v| v.unwrap_u32()).unwrap_or_default();
    let stream_of = |state: &HostState, handle: u32| {
        state
            .wasi2
            .streams
            .get(&handle)
            .copied()
            .ok_or_else(|| Failure::Trap(format!("{}: unknown handle {handle}", func.name)))
    };
    match (func.module.as_str(), func.name.as_str()) {
        ("wasi:cli/environment@0.2", "get-environment") => {
            let pairs: Vec<String> = state
                .context
                .record
                .env
                .iter()
                .map(|(k, v)| format!("({}, {})", wave_string(k), wave_string(v)))
                .collect();
            typed(&format!("[{}]", pairs.join(", ")))
        }
        ("wasi:cli/environment@0.2", "get-arguments") => {
            // As preview 1 gives them: the worker's name first.
            let args: Vec<String> = std::iter::once(state.context.program_name())
                .chain(state.context.record.args.iter().map(String::as_str))
                .map(wave_string)
                .collect();
            typed(&format!("[{}]", args.join(", ")))
        }
        ("wasi:cli/environment@0.2", "initial-cwd") => typed("none"),
        ("wasi:cli/exit@0.2", "exit") => {
            let ok = params.first().is_some_and(|v| v.unwrap_result().is_ok());
            Err(Failure::Exit(if ok { 0 } else { 1 }))
        }
        ("wasi:cli/stdin@0.2", _) => typed(&state.wasi2.open(Stream::Stdin).to_string()),
        ("wasi:cli/stdout@0.2", _) => typed(&state.wasi2.open(Stream::Stdout).to_string()),
        ("wasi:cli/stderr@0.2", _) => typed(&state.wasi2.open(Stream::Stderr).to_string()),
        // Not a terminal: nothing to report.
        (
            "wasi:cli/terminal-stdin@0.2"
            | "wasi:cli/terminal-stdout@0.2"
            | "wasi:cli/terminal-stderr@0.2",
            _,
        ) => typed("none"),
        ("wasi:io/error@0.2", "[method]error.to-debug-string") => typed("\"\""),
        ("wasi:io/streams@0.2", _) if super::http::owns(handle()) => {
            super::http::stream_call(state, func, params)
        }
        ("wasi:io/streams@0.2", name) => {
            let stream = stream_of(state, handle())?;
            match (stream, name) {
                (
                    Stream::Stdin,
                    "[method]input-stream.read"
                    | "[method]input-stream.blocking-read"
                    | "[method]input-stream.skip"
                    | "[method]input-stream.blocking-skip",
                ) => typed("err(closed)"),
                (_, "[method]input-stream.subscribe" | "[method]output-stream.subscribe") => {
                    typed(&state.rpc.ready_pollable().to_string())
                }
                (Stream::Stdin, _) => Err(Failure::Trap(format!(
                    "{name}: handle {} is an input stream",
                    handle()
                ))),
                (_, name) if name.starts_with("[method]input-stream.") => Err(Failure::Trap(
                    format!("{name}: handle {} is an output stream", handle()),
                )),
                (_, "[method]output-stream.check-write") => typed(&format!("ok({WRITE_BUDGET})")),
                (
                    out,
                    "[method]output-stream.write"
                    | "[method]output-stream.blocking-write-and-flush",
                ) => {
                    let bytes: Vec<u8> = params
                        .get(1)
                        .map(|list| list.unwrap_list().map(|b| b.unwrap_u8()).collect())
                        .unwrap_or_default();
                    if bytes.len() as u64 > WRITE_BUDGET {
                        return Err(Failure::Trap(format!(
                            "{name}: {} bytes written, more than check-write allowed ({WRITE_BUDGET})",
                            bytes.len()
                        )));
                    }
                    write(state, out, &bytes)?;
                    typed("ok")
                }
                (
                    out,
                    "[method]output-stream.write-zeroes"
                    | "[method]output-stream.blocking-write-zeroes-and-flush",
                ) => {
                    let len = params.get(1).map(|v| v.unwrap_u64()).unwrap_or_default();
                    let len = len.min(WRITE_BUDGET) as usize;
                    write(state, out, &vec![0; len])?;
                    typed("ok")
                }
                (_, "[method]output-stream.flush" | "[method]output-stream.blocking-flush") => {
                    typed("ok")
                }
                (_, other) => Err(Failure::Fatal(Error::Engine(format!(
                    "wasi:io/streams.{other} is not implemented by this golemw"
                )))),
            }
        }
        ("wasi:clocks/wall-clock@0.2", "now") => {
            let ns = clock(state, CLOCK_REALTIME)?;
            typed(&format!(
                "{{seconds: {}, nanoseconds: {}}}",
                ns / 1_000_000_000,
                ns % 1_000_000_000
            ))
        }
        ("wasi:clocks/wall-clock@0.2", "resolution") => typed("{seconds: 0, nanoseconds: 1}"),
        ("wasi:clocks/monotonic-clock@0.2", "now") => {
            typed(&clock(state, CLOCK_MONOTONIC)?.to_string())
        }
        ("wasi:clocks/monotonic-clock@0.2", "resolution") => typed("1"),
        ("wasi:clocks/monotonic-clock@0.2", "subscribe-instant" | "subscribe-duration") => {
            let value = params.first().map(|v| v.unwrap_u64()).unwrap_or_default();
            let deadline = match func.name.as_str() {
                "subscribe-instant" => value,
                _ => clock(state, CLOCK_MONOTONIC)?.saturating_add(value),
            };
            typed(&state.rpc.timer_pollable(deadline).to_string())
        }
        (
            "wasi:random/random@0.2" | "wasi:random/insecure@0.2",
            "get-random-bytes" | "get-insecure-random-bytes",
        ) => {
            let len = params.first().map(|v| v.unwrap_u64()).unwrap_or_default();
            if len > RANDOM_BYTES_MAX {
                return Err(Failure::Trap(format!(
                    "{}: {len} bytes asked for; at most {RANDOM_BYTES_MAX} per call",
                    func.name
                )));
            }
            let bytes = random(state, len)?;
            let list: Vec<String> = bytes.iter().map(u8::to_string).collect();
            typed(&format!("[{}]", list.join(", ")))
        }
        (
            "wasi:random/random@0.2" | "wasi:random/insecure@0.2",
            "get-random-u64" | "get-insecure-random-u64",
        ) => {
            let bytes = random(state, 8)?;
            let value = u64::from_le_bytes(bytes.try_into().unwrap_or_default());
            typed(&value.to_string())
        }
        ("wasi:random/insecure-seed@0.2", "insecure-seed") => {
            let bytes = random(state, 16)?;
            let low = u64::from_le_bytes(bytes[..8].try_into().unwrap_or_default());
            let high = u64::from_le_bytes(bytes[8..].try_into().unwrap_or_default());
            typed(&format!("({low}, {high})"))
        }
        (module, name) => Err(Failure::Fatal(Error::Engine(format!(
            "{module}.{name} is not implemented by this golemw"
        )))),
    }
}

const CLOCK_REALTIME: u64 = 0;
const CLOCK_MONOTONIC: u64 = 1;

/// A clock reading through the gate (the entry preview 1's `clock_time_get` writes); the
/// monotonic clock never goes backwards, even across a restart.
fn clock(state: &mut HostState, clock: u64) -> Result<u64> {
    let response = state.gate.host_call(
        HostFunction::ClockTimeGet,
        HostValue::U64(clock),
        || match clock {
            CLOCK_REALTIME => HostValue::Errno(0, super::wasi::realtime_ns()),
            _ => HostValue::Errno(0, super::wasi::monotonic_ns()),
        },
    )?;
    let HostValue::Errno(0, mut value) = response else {
        return Err(Error::Corrupt {
            what: "recorded result of a clock".into(),
            detail: format!("unexpected shape: {response}"),
        });
    };
    if clock == CLOCK_MONOTONIC {
        value = value.max(state.last_monotonic_ns);
        state.last_monotonic_ns = value;
    }
    Ok(value)
}

/// Random bytes through the gate (the entry preview 1's `random_get` writes).
fn random(state: &mut HostState, len: u64) -> Result<Vec<u8>> {
    let response = state
        .gate
        .host_call(HostFunction::RandomGet, HostValue::U64(len), || {
            let mut bytes = vec![0u8; len as usize];
            getrandom::fill(&mut bytes).expect("the OS random source failed");
            HostValue::Bytes(bytes)
        })?;
    match response {
        HostValue::Bytes(bytes) if bytes.len() as u64 == len => Ok(bytes),
        other => Err(Error::Corrupt {
            what: "recorded result of random bytes".into(),
            detail: format!("unexpected shape: {other}"),
        }),
    }
}

/// Guest output to stdout or stderr: a `log` entry, printed live (as preview 1's `fd_write`).
fn write(state: &mut HostState, stream: Stream, bytes: &[u8]) -> Result<()> {
    let stream = match stream {
        Stream::BlobBody(value) => {
            // The guest's own data, kept with the value: nothing to record.
            return state
                .blobstore
                .write_body(value, bytes)
                .map_err(|message| Error::Trap {
                    function: "wasi:io/streams.[method]output-stream.write".into(),
                    message,
                });
        }
        Stream::Stderr => LogStream::Stderr,
        _ => LogStream::Stdout,
    };
    state.gate.log(stream, bytes)
}
