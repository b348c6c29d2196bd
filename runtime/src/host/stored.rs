//! Host calls over a store in the data directory's LMDB (`wasi:keyvalue`, `wasi:blobstore`):
//! how they pass the gate, and the small conversions they share.
//!
//! A read is recorded with what it returned, and replay returns that without reading the store
//! (which other workers may have changed). A write is recorded, and its store change is written
//! by the commit that writes its entry (at once, or with the worker's next commit: [`Commit`]):
//! after a crash the store holds the change exactly when the oplog holds the call.

use std::sync::{Arc, MutexGuard};

use serde::Serialize;
use wasm_wave::value::{Type, Value};
use wasm_wave::wasm::{WasmType, WasmValue};

use super::HostState;
use crate::abi::wave_string;
use crate::component::ImportedFunction;
use crate::error::{Error, Result};
use crate::oplog::{HostFunction, HostValue, OplogEntry};
use crate::storage::Storage;

/// What a live call does: its response, and the store change written with its entry.
pub(super) struct Live {
    pub response: HostValue,
    pub write: Option<Write>,
}

/// A store change, run inside the transaction that writes the call's entry (it may run more
/// than once, see `Gate::commit_with`: it must be idempotent, as puts and deletes are).
pub(super) type Write = crate::gate::DeferredWrite;

/// Takes the store's turn for a write whose outcome depends on what is stored (see
/// `crate::blobstore::write_lock`).
pub(super) type Turn = fn() -> MutexGuard<'static, ()>;

impl Live {
    /// A response and nothing to write.
    pub fn read(response: HostValue) -> Result<Live> {
        Ok(Live {
            response,
            write: None,
        })
    }

    /// A refusal the guest receives as its error (recorded as the WAVE string of `reason`).
    pub fn refused(reason: String) -> Result<Live> {
        Live::read(HostValue::Wave(wave_string(&reason)))
    }

    /// A response, and the change to write with it.
    pub fn write(
        response: HostValue,
        write: impl FnMut(&mut lmdb::RwTransaction<'_>) -> Result<()> + Send + 'static,
    ) -> Result<Live> {
        Ok(Live {
            response,
            write: Some(Box::new(write)),
        })
    }
}

/// When a live write reaches storage.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Commit {
    /// In a commit of its own, before the call returns (its outcome was decided under the
    /// store's turn and must be written before the turn is released).
    Now,
    /// With the next commit of the worker's oplog (`Gate::defer_write`): many writes share one
    /// commit and its fsync. The worker reads its own writes from its overlay meanwhile.
    WithOplog,
}

/// Runs a store call through the gate: replayed, the recorded response (the store is not
/// read); live, `live`'s response recorded and its change written in the same transaction as
/// the entry, as `commit` says (under `turn` from the decision to the commit, if given).
/// Unrecorded (persist-nothing), the change is made all the same, without an entry; in an
/// instance a snapshot is about to overwrite, not at all (its history made it).
pub(super) fn through_gate(
    state: &mut HostState,
    function: HostFunction,
    request: HostValue,
    commit: Commit,
    turn: Option<Turn>,
    live: impl FnOnce(&Arc<Storage>) -> Result<Live>,
) -> Result<HostValue> {
    let storage = Arc::clone(&state.context.storage);
    let gate = &mut state.gate;
    if let Some(err) = gate.stop_requested() {
        return Err(err);
    }
    if gate.discarding() || gate.persist_nothing() {
        let apply = !gate.discarding();
        let _turn = turn.map(|take| take());
        let (mut failed, mut change) = (None, None);
        // host_call runs `live` without recording, and notes that it did.
        let response = gate.host_call(function, request, || match live(&storage) {
            Ok(Live { response, write }) => {
                change = write;
                response
            }
            Err(err) => {
                failed = Some(err);
                HostValue::Unit
            }
        })?;
        if let Some(err) = failed {
            return Err(err);
        }
        if let (true, Some(mut write)) = (apply, change) {
            match (commit, gate.mode()) {
                // Live, in order with the recorded writes before it that wait for the commit.
                (Commit::WithOplog, crate::gate::Mode::Live) => gate.defer_write(write),
                // Replaying, nothing waits (and recovery alone may never commit).
                _ => storage.write(|txn| write(txn))?,
            }
        }
        return Ok(response);
    }
    if let Some(response) = gate.replayed_response(&function, &request)? {
        return Ok(response);
    }
    let _turn = turn.map(|take| take());
    let Live { response, write } = live(&storage)?;
    let entry = OplogEntry::ImportedFunctionInvoked {
        function,
        request,
        response: response.clone(),
    };
    // The change waits in the gate before the entry is appended: an append that fills a block
    // commits it, and the change must go with it. Not fsynced: a crash loses the entry and the
    // change together, or neither.
    if let Some(write) = write {
        gate.defer_write(write);
    }
    gate.append(entry)?;
    if commit == Commit::Now && gate.has_deferred_writes() {
        gate.commit_with(false, |_| Ok(()))?;
    }
    Ok(response)
}

/// A recorded request: the WAVE of its arguments.
pub(super) fn request(args: &[&str]) -> HostValue {
    HostValue::Wave(args.join(", "))
}

/// A value in a recorded request: its length and CRC32 (replay checks the guest wrote the
/// same; the bytes themselves are in the store, not the oplog).
pub(super) fn digest(value: &[u8]) -> String {
    format!(
        "<{} bytes, crc32 {:08x}>",
        value.len(),
        crc32fast::hash(value)
    )
}

/// The WAVE of a list of strings.
pub(super) fn wave_strings(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| wave_string(s)).collect();
    format!("[{}]", quoted.join(", "))
}

/// The text of a WAVE string (a recorded refusal).
pub(super) fn unquote(reason: &str) -> String {
    wasm_wave::from_str::<Value>(&Type::STRING, reason)
        .map(|v| v.unwrap_string().into_owned())
        .unwrap_or_else(|_| reason.to_string())
}

/// The bytes of a `list<u8>` param.
pub(super) fn bytes_of(value: &Value) -> Vec<u8> {
    value.unwrap_list().map(|b| b.unwrap_u8()).collect()
}

/// `ok(bytes)` of a `result<list<u8>, _>`, built without going through WAVE text (a value can
/// be megabytes).
pub(super) fn ok_bytes(ty: &Type, bytes: &[u8]) -> Result<Value> {
    let bad = |what: &str| Error::Engine(format!("building {ty}: {what}"));
    let (Some(ok), _) = ty.result_types().ok_or_else(|| bad("not a result"))? else {
        return Err(bad("no ok type"));
    };
    let list = Value::make_list(&ok, bytes.iter().map(|b| Value::make_u8(*b)))
        .map_err(|e| bad(&e.to_string()))?;
    Value::make_result(ty, Ok(Some(list))).map_err(|e| bad(&e.to_string()))
}

/// A recorded response of several parts.
pub(super) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    postcard::to_stdvec(value).expect("encoding into a Vec cannot fail")
}

/// See [`encode`].
pub(super) fn decode<T: serde::de::DeserializeOwned>(
    func: &ImportedFunction,
    bytes: &[u8],
) -> Result<T> {
    postcard::from_bytes(bytes).map_err(|e| Error::Corrupt {
        what: format!("recorded result of {}.{}", func.module, func.name),
        detail: e.to_string(),
    })
}

/// A recorded response of an unexpected shape.
pub(super) fn shape_error(func: &ImportedFunction, response: &HostValue) -> Error {
    Error::Corrupt {
        what: format!("recorded result of {}.{}", func.module, func.name),
        detail: format!("unexpected shape: {response}"),
    }
}
