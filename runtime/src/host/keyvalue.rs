//! `wasi:keyvalue@0.1.0` as Golem 1.0 provides it (`eventual`, `eventual-batch`, `types`,
//! `wasi-keyvalue-error`; WIT in `wit/deps/keyvalue`), over the store in [`crate::keyvalue`].
//!
//! What goes through the gate:
//!
//! - reads (`get`, `exists`, `get-many`, `keys`) are recorded with what they returned; replay
//!   returns the record and never reads the store (another worker may have changed it since);
//! - writes (`set`, `delete`, `set-many`, `delete-many`) are recorded, and the store change is
//!   written **in the transaction that writes their entry** (the worker's next commit, shared
//!   by many writes; meanwhile the worker reads them from `Handles::unwritten`): after a crash
//!   the store holds the change exactly when the oplog holds the call, so a write is never
//!   lost nor made twice (a Golem store is remote and can only be retried). Replay returns the
//!   recorded outcome without writing;
//! - opening a bucket, building and reading values and errors are functions of the guest's own
//!   calls: nothing is recorded, the handles they make are part of a snapshot's host state.
//!
//! A call the store refuses (a key, value, bucket name or batch past its limit, see
//! [`crate::keyvalue`]) returns the `error` resource whose `trace` says why; the refusal is
//! recorded like any outcome. Storage failing is not the guest's error: the worker fails.
//! What a write changed stays changed when the invocation that made it is retried, jumped
//! over or reverted, as with Golem's store.
//!
//! Async bodies (`outgoing-value-write-body-async`, `incoming-value-consume-async`) return an
//! error asking for the sync variants.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use wasm_wave::value::Value;
use wasm_wave::wasm::WasmValue;

use super::stored::{
    bytes_of, decode, digest, encode, ok_bytes, request, shape_error, through_gate, unquote,
    wave_strings, Commit, Live,
};
use super::{Failure, HostState};
use crate::abi::{parse_wave, wave_string};
use crate::component::ImportedFunction;
use crate::error::{Error, Result};
use crate::keyvalue as store;
use crate::oplog::{HostFunction, HostValue};

const TYPES: &str = "wasi:keyvalue/types@0.1.0";
const ERROR: &str = "wasi:keyvalue/wasi-keyvalue-error@0.1.0";
const EVENTUAL: &str = "wasi:keyvalue/eventual@0.1.0";
const BATCH: &str = "wasi:keyvalue/eventual-batch@0.1.0";

/// The functions provided, by interface.
pub const PROVIDED: super::Provided = super::Provided(&[
    (
        TYPES,
        &[
            "[static]bucket.open-bucket",
            "[resource-drop]bucket",
            "[static]outgoing-value.new-outgoing-value",
            "[method]outgoing-value.outgoing-value-write-body-async",
            "[method]outgoing-value.outgoing-value-write-body-sync",
            "[resource-drop]outgoing-value",
            "[method]incoming-value.incoming-value-consume-sync",
            "[method]incoming-value.incoming-value-consume-async",
            "[method]incoming-value.incoming-value-size",
            "[resource-drop]incoming-value",
        ],
    ),
    (ERROR, &["[method]error.trace", "[resource-drop]error"]),
    (EVENTUAL, &["get", "set", "delete", "exists"]),
    (BATCH, &["get-many", "keys", "set-many", "delete-many"]),
]);

/// The most resources a worker may hold open at once: a guest that never drops its values
/// would otherwise grow its host state (and every snapshot of it) without bound.
pub const OPEN_RESOURCES_MAX: usize = 4096;

/// One resource handed to the guest.
#[derive(Clone, Debug, Serialize, Deserialize)]
enum Resource {
    /// A bucket, by name (checked when opened).
    Bucket(String),
    /// A value being written by the guest.
    Outgoing(Vec<u8>),
    /// A value read from the store (drained by `incoming-value-consume-sync`).
    Incoming(Vec<u8>),
    /// Why a call failed.
    Error(String),
}

impl Resource {
    fn kind(&self) -> &'static str {
        match self {
            Resource::Bucket(_) => "bucket",
            Resource::Outgoing(_) => "outgoing-value",
            Resource::Incoming(_) => "incoming-value",
            Resource::Error(_) => "error",
        }
    }
}

/// The `wasi:keyvalue` resources of one worker instance (part of a snapshot's host state: a
/// guest may keep a bucket in a static). Handles are numbered in the order the guest made
/// them, so replay hands out the same numbers.
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct Handles {
    /// The last handle given out.
    last: u32,
    /// Open resources by handle.
    open: BTreeMap<u32, Resource>,
    /// This worker's writes that wait for its next commit, by bucket and key (`None`: deleted),
    /// so that it reads what it wrote. Empty whenever the gate has no deferred writes (a
    /// snapshot is taken after a commit: nothing to keep).
    #[serde(skip)]
    unwritten: BTreeMap<(String, String), Option<Vec<u8>>>,
    /// Bytes of the values in `unwritten`.
    #[serde(skip)]
    unwritten_bytes: usize,
}

/// Past this many bytes of values waiting for the next commit, the worker commits them (the
/// gate holds them, and `unwritten` a copy): 16 MiB, as a recorded response.
const UNWRITTEN_BYTES_MAX: usize = 16 << 20;

impl Handles {
    fn open(&mut self, resource: Resource) -> std::result::Result<u32, Failure> {
        if self.open.len() >= OPEN_RESOURCES_MAX {
            return Err(Failure::Trap(format!(
                "wasi:keyvalue: {OPEN_RESOURCES_MAX} resources are open; drop some first"
            )));
        }
        self.last += 1;
        let was_new = self.open.insert(self.last, resource).is_none();
        debug_assert!(was_new, "handles are never reused");
        Ok(self.last)
    }

    fn get(&mut self, handle: u32, kind: &str) -> std::result::Result<&mut Resource, Failure> {
        match self.open.get_mut(&handle) {
            Some(resource) if resource.kind() == kind => Ok(resource),
            Some(other) => Err(Failure::Trap(format!(
                "wasi:keyvalue: handle {handle} is a {}, not a {kind}",
                other.kind()
            ))),
            None => Err(Failure::Trap(format!(
                "wasi:keyvalue: unknown {kind} handle {handle}"
            ))),
        }
    }

    fn bucket(&mut self, handle: u32) -> std::result::Result<String, Failure> {
        match self.get(handle, "bucket")? {
            Resource::Bucket(name) => Ok(name.clone()),
            _ => unreachable!("get checked the kind"),
        }
    }

    fn outgoing(&mut self, handle: u32) -> std::result::Result<&mut Vec<u8>, Failure> {
        match self.get(handle, "outgoing-value")? {
            Resource::Outgoing(bytes) => Ok(bytes),
            _ => unreachable!("get checked the kind"),
        }
    }

    /// What this worker wrote to `key` of `bucket` and has not committed: `Some(None)` if it
    /// deleted it, `None` if it did not write it.
    fn unwritten(&self, bucket: &str, key: &str) -> Option<Option<Vec<u8>>> {
        self.unwritten
            .get(&(bucket.to_string(), key.to_string()))
            .cloned()
    }

    fn remember(&mut self, bucket: &str, key: &str, value: Option<Vec<u8>>) {
        self.unwritten_bytes += value.as_ref().map_or(0, Vec::len);
        self.unwritten
            .insert((bucket.to_string(), key.to_string()), value);
    }

    /// Forgets a resource the guest dropped.
    pub fn drop_handle(&mut self, name: &str, handle: u32) -> std::result::Result<(), String> {
        let kind = name.trim_start_matches("[resource-drop]");
        match self.open.get(&handle) {
            Some(resource) if resource.kind() == kind => {
                self.open.remove(&handle);
                Ok(())
            }
            _ => Err(format!("{name}: unknown {kind} handle {handle}")),
        }
    }
}

/// One call of a `wasi:keyvalue` function (drops excepted).
pub(super) fn call(
    state: &mut HostState,
    func: &ImportedFunction,
    params: Vec<Value>,
) -> std::result::Result<Option<Value>, Failure> {
    let result_type = func
        .abi
        .result_type()
        .ok_or_else(|| Error::Engine(format!("{} has no result type", func.name)))?
        .clone();
    let typed = |text: &str| -> std::result::Result<Option<Value>, Failure> {
        Ok(Some(parse_wave(&result_type, text)?))
    };
    let u32_at = |at: usize| params.get(at).map(|v| v.unwrap_u32()).unwrap_or_default();
    let string_at = |at: usize| {
        params
            .get(at)
            .map(|v| v.unwrap_string().into_owned())
            .unwrap_or_default()
    };
    let strings_at = |at: usize| -> Vec<String> {
        params
            .get(at)
            .map(|v| {
                v.unwrap_list()
                    .map(|s| s.unwrap_string().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let function = HostFunction::Golem(format!("{}.{}", func.module, func.name));
    if !state.gate.has_deferred_writes() {
        // Committed (or never made): the store has them now.
        state.keyvalue.unwritten.clear();
        state.keyvalue.unwritten_bytes = 0;
    }
    match (func.module.as_str(), func.name.as_str()) {
        (TYPES, "[static]bucket.open-bucket") => {
            // A function of the name: nothing to record. Buckets exist once written to.
            let name = string_at(0);
            match store::check_bucket(&name) {
                Ok(()) => {
                    let handle = state.keyvalue.open(Resource::Bucket(name))?;
                    typed(&format!("ok({handle})"))
                }
                Err(reason) => error(state, &reason, &typed),
            }
        }
        (TYPES, "[static]outgoing-value.new-outgoing-value") => {
            let handle = state.keyvalue.open(Resource::Outgoing(Vec::new()))?;
            typed(&handle.to_string())
        }
        (TYPES, "[method]outgoing-value.outgoing-value-write-body-sync") => {
            let body = state.keyvalue.outgoing(u32_at(0))?;
            let bytes = params.get(1).map(bytes_of).unwrap_or_default();
            match store::check_value(body.len() + bytes.len()) {
                Ok(()) => {
                    body.extend_from_slice(&bytes);
                    typed("ok")
                }
                Err(reason) => error(state, &reason, &typed),
            }
        }
        (
            TYPES,
            "[method]outgoing-value.outgoing-value-write-body-async"
            | "[method]incoming-value.incoming-value-consume-async",
        ) => {
            let kind = match func.name.contains("outgoing") {
                true => "outgoing-value",
                false => "incoming-value",
            };
            state.keyvalue.get(u32_at(0), kind)?;
            let reason = format!(
                "{}: streamed bodies are not supported by golemw; use the -sync variant",
                func.name
            );
            error(state, &reason, &typed)
        }
        (TYPES, "[method]incoming-value.incoming-value-consume-sync") => {
            let Resource::Incoming(body) = state.keyvalue.get(u32_at(0), "incoming-value")? else {
                unreachable!("get checked the kind")
            };
            let bytes = std::mem::take(body);
            Ok(Some(ok_bytes(&result_type, &bytes)?))
        }
        (TYPES, "[method]incoming-value.incoming-value-size") => {
            let Resource::Incoming(body) = state.keyvalue.get(u32_at(0), "incoming-value")? else {
                unreachable!("get checked the kind")
            };
            typed(&format!("ok({})", body.len()))
        }
        (ERROR, "[method]error.trace") => {
            let Resource::Error(trace) = state.keyvalue.get(u32_at(0), "error")? else {
                unreachable!("get checked the kind")
            };
            let trace = wave_string(trace);
            typed(&trace)
        }
        (EVENTUAL, "get") => {
            let (bucket, key) = (state.keyvalue.bucket(u32_at(0))?, string_at(1));
            let request = request(&[&wave_string(&bucket), &wave_string(&key)]);
            let unwritten = state.keyvalue.unwritten(&bucket, &key);
            let response = through_gate(
                state,
                function,
                request,
                Commit::WithOplog,
                None,
                |storage| {
                    if let Err(reason) = store::check_key(&key) {
                        return Live::refused(reason);
                    }
                    let value = match unwritten {
                        Some(value) => value,
                        None => store::get(storage, &bucket, &key)?,
                    };
                    Live::read(match value {
                        Some(value) => HostValue::Bytes(value),
                        None => HostValue::Unit,
                    })
                },
            )?;
            match response {
                HostValue::Bytes(value) => {
                    let handle = state.keyvalue.open(Resource::Incoming(value))?;
                    typed(&format!("ok(some({handle}))"))
                }
                HostValue::Unit => typed("ok(none)"),
                other => refusal(state, func, other, &typed),
            }
        }
        (EVENTUAL, "exists") => {
            let (bucket, key) = (state.keyvalue.bucket(u32_at(0))?, string_at(1));
            let request = request(&[&wave_string(&bucket), &wave_string(&key)]);
            let unwritten = state.keyvalue.unwritten(&bucket, &key);
            let response = through_gate(
                state,
                function,
                request,
                Commit::WithOplog,
                None,
                |storage| {
                    if let Err(reason) = store::check_key(&key) {
                        return Live::refused(reason);
                    }
                    let found = match unwritten {
                        Some(value) => value.is_some(),
                        None => store::exists(storage, &bucket, &key)?,
                    };
                    Live::read(HostValue::U64(u64::from(found)))
                },
            )?;
            match response {
                HostValue::U64(found) => typed(&format!("ok({})", found == 1)),
                other => refusal(state, func, other, &typed),
            }
        }
        (EVENTUAL, "set") => {
            let (bucket, key) = (state.keyvalue.bucket(u32_at(0))?, string_at(1));
            let value = state.keyvalue.outgoing(u32_at(2))?.clone();
            let request = request(&[&wave_string(&bucket), &wave_string(&key), &digest(&value)]);
            let written = vec![(bucket.clone(), key.clone(), Some(value.clone()))];
            let response = through_gate(
                state,
                function,
                request,
                Commit::WithOplog,
                None,
                move |storage| {
                    let storage = Arc::clone(storage);
                    if let Err(reason) = store::check_key(&key) {
                        return Live::refused(reason);
                    }
                    Live::write(HostValue::Unit, move |txn| {
                        store::put(txn, &storage, &bucket, &key, &value)
                    })
                },
            )?;
            wrote(state, &response, written)?;
            unit_or_refusal(state, func, response, &typed)
        }
        (EVENTUAL, "delete") => {
            let (bucket, key) = (state.keyvalue.bucket(u32_at(0))?, string_at(1));
            let request = request(&[&wave_string(&bucket), &wave_string(&key)]);
            let written = vec![(bucket.clone(), key.clone(), None)];
            let response = through_gate(
                state,
                function,
                request,
                Commit::WithOplog,
                None,
                move |storage| {
                    let storage = Arc::clone(storage);
                    if let Err(reason) = store::check_key(&key) {
                        return Live::refused(reason);
                    }
                    Live::write(HostValue::Unit, move |txn| {
                        store::delete(txn, &storage, &bucket, &key)
                    })
                },
            )?;
            wrote(state, &response, written)?;
            unit_or_refusal(state, func, response, &typed)
        }
        (BATCH, "get-many") => {
            let (bucket, keys) = (state.keyvalue.bucket(u32_at(0))?, strings_at(1));
            let request = request(&[&wave_string(&bucket), &wave_strings(&keys)]);
            let unwritten: Vec<_> = keys
                .iter()
                .map(|key| state.keyvalue.unwritten(&bucket, key))
                .collect();
            let response = through_gate(
                state,
                function,
                request,
                Commit::WithOplog,
                None,
                |storage| {
                    if let Err(reason) = check_keys(&keys) {
                        return Live::refused(reason);
                    }
                    let mut values = store::get_many(storage, &bucket, &keys)?;
                    for (value, unwritten) in values.iter_mut().zip(unwritten) {
                        if let Some(unwritten) = unwritten {
                            *value = unwritten;
                        }
                    }
                    let total: usize = values.iter().flatten().map(Vec::len).sum();
                    if total > store::RESPONSE_BYTES_MAX {
                        return Live::refused(format!(
                            "the values asked for are {total} bytes; one call returns at most {}",
                            store::RESPONSE_BYTES_MAX
                        ));
                    }
                    Live::read(HostValue::Bytes(encode(&values)))
                },
            )?;
            match response {
                HostValue::Bytes(bytes) => {
                    let values: Vec<Option<Vec<u8>>> = decode(func, &bytes)?;
                    let mut items = Vec::with_capacity(values.len());
                    for value in values {
                        items.push(match value {
                            Some(value) => {
                                format!("some({})", state.keyvalue.open(Resource::Incoming(value))?)
                            }
                            None => "none".into(),
                        });
                    }
                    typed(&format!("ok([{}])", items.join(", ")))
                }
                other => refusal(state, func, other, &typed),
            }
        }
        (BATCH, "keys") => {
            let bucket = state.keyvalue.bucket(u32_at(0))?;
            let request = request(&[&wave_string(&bucket)]);
            let unwritten: Vec<(String, bool)> = state
                .keyvalue
                .unwritten
                .iter()
                .filter(|((b, _), _)| *b == bucket)
                .map(|((_, key), value)| (key.clone(), value.is_some()))
                .collect();
            let response = through_gate(
                state,
                function,
                request,
                Commit::WithOplog,
                None,
                |storage| {
                    let keys = match store::keys(storage, &bucket)? {
                        Ok(keys) => keys,
                        Err(reason) => return Live::refused(reason),
                    };
                    let mut keys: std::collections::BTreeSet<String> = keys.into_iter().collect();
                    for (key, present) in unwritten {
                        match present {
                            true => keys.insert(key),
                            false => keys.remove(&key),
                        };
                    }
                    let keys: Vec<String> = keys.into_iter().collect();
                    Live::read(HostValue::Bytes(encode(&keys)))
                },
            )?;
            match response {
                HostValue::Bytes(bytes) => {
                    let keys: Vec<String> = decode(func, &bytes)?;
                    typed(&format!("ok({})", wave_strings(&keys)))
                }
                other => refusal(state, func, other, &typed),
            }
        }
        (BATCH, "set-many") => {
            let bucket = state.keyvalue.bucket(u32_at(0))?;
            let mut pairs = Vec::new();
            for pair in params.get(1).map(|v| v.unwrap_list()).into_iter().flatten() {
                let mut fields = pair.unwrap_tuple();
                let key = fields
                    .next()
                    .map(|k| k.unwrap_string().into_owned())
                    .unwrap_or_default();
                let handle = fields.next().map(|h| h.unwrap_u32()).unwrap_or_default();
                pairs.push((key, state.keyvalue.outgoing(handle)?.clone()));
            }
            let described: Vec<String> = pairs
                .iter()
                .map(|(key, value)| format!("({}, {})", wave_string(key), digest(value)))
                .collect();
            let request = request(&[
                &wave_string(&bucket),
                &format!("[{}]", described.join(", ")),
            ]);
            let written: Vec<_> = pairs
                .iter()
                .map(|(key, value)| (bucket.clone(), key.clone(), Some(value.clone())))
                .collect();
            let response = through_gate(
                state,
                function,
                request,
                Commit::WithOplog,
                None,
                move |storage| {
                    let storage = Arc::clone(storage);
                    let keys: Vec<String> = pairs.iter().map(|(k, _)| k.clone()).collect();
                    if let Err(reason) = check_keys(&keys) {
                        return Live::refused(reason);
                    }
                    Live::write(HostValue::Unit, move |txn| {
                        for (key, value) in &pairs {
                            store::put(txn, &storage, &bucket, key, value)?;
                        }
                        Ok(())
                    })
                },
            )?;
            wrote(state, &response, written)?;
            unit_or_refusal(state, func, response, &typed)
        }
        (BATCH, "delete-many") => {
            let (bucket, keys) = (state.keyvalue.bucket(u32_at(0))?, strings_at(1));
            let request = request(&[&wave_string(&bucket), &wave_strings(&keys)]);
            let written: Vec<_> = keys
                .iter()
                .map(|key| (bucket.clone(), key.clone(), None))
                .collect();
            let response = through_gate(
                state,
                function,
                request,
                Commit::WithOplog,
                None,
                move |storage| {
                    let storage = Arc::clone(storage);
                    if let Err(reason) = check_keys(&keys) {
                        return Live::refused(reason);
                    }
                    Live::write(HostValue::Unit, move |txn| {
                        for key in &keys {
                            store::delete(txn, &storage, &bucket, key)?;
                        }
                        Ok(())
                    })
                },
            )?;
            wrote(state, &response, written)?;
            unit_or_refusal(state, func, response, &typed)
        }
        (module, name) => Err(Failure::Fatal(Error::Engine(format!(
            "{module}.{name} is not implemented by this golemw"
        )))),
    }
}

/// After a write call: what it changed, if it waits for the next commit, is remembered so
/// that the worker reads it; past [`UNWRITTEN_BYTES_MAX`] the worker commits now.
fn wrote(
    state: &mut HostState,
    response: &HostValue,
    written: Vec<(String, String, Option<Vec<u8>>)>,
) -> Result<()> {
    if *response != HostValue::Unit || !state.gate.has_deferred_writes() {
        // Refused, replayed, or in an instance about to be overwritten: nothing waits.
        return Ok(());
    }
    for (bucket, key, value) in written {
        state.keyvalue.remember(&bucket, &key, value);
    }
    if state.keyvalue.unwritten_bytes > UNWRITTEN_BYTES_MAX {
        state.gate.commit_with(false, |_| Ok(()))?;
        debug_assert!(
            !state.gate.has_deferred_writes(),
            "a commit writes them all"
        );
        state.keyvalue.unwritten.clear();
        state.keyvalue.unwritten_bytes = 0;
    }
    Ok(())
}

/// A guest-facing refusal: a new `error` resource, returned as `err(handle)`.
fn error(
    state: &mut HostState,
    reason: &str,
    typed: &dyn Fn(&str) -> std::result::Result<Option<Value>, Failure>,
) -> std::result::Result<Option<Value>, Failure> {
    let handle = state.keyvalue.open(Resource::Error(reason.to_string()))?;
    typed(&format!("err({handle})"))
}

/// A recorded refusal (`Wave` of its reason) as the guest's error; any other shape is corrupt.
fn refusal(
    state: &mut HostState,
    func: &ImportedFunction,
    response: HostValue,
    typed: &dyn Fn(&str) -> std::result::Result<Option<Value>, Failure>,
) -> std::result::Result<Option<Value>, Failure> {
    match response {
        HostValue::Wave(reason) => {
            let reason = unquote(&reason);
            error(state, &reason, typed)
        }
        other => Err(Failure::Fatal(shape_error(func, &other))),
    }
}

fn unit_or_refusal(
    state: &mut HostState,
    func: &ImportedFunction,
    response: HostValue,
    typed: &dyn Fn(&str) -> std::result::Result<Option<Value>, Failure>,
) -> std::result::Result<Option<Value>, Failure> {
    match response {
        HostValue::Unit => typed("ok"),
        other => refusal(state, func, other, typed),
    }
}

fn check_keys(keys: &[String]) -> std::result::Result<(), String> {
    store::check_batch(keys.len())?;
    keys.iter().try_for_each(|key| store::check_key(key))
}
