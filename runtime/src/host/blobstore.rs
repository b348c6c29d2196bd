//! `wasi:blobstore` as Golem 1.0 provides it (`blobstore`, `container`, `types`; WIT in
//! `wit/deps/blobstore`), over the store in [`crate::blobstore`].
//!
//! What goes through the gate (see `super::stored`): reads (`get-container`,
//! `container-exists`, `get-data`, `list-objects`, `has-object`, `object-info`) are recorded
//! with what they returned and replay never reads the store; writes (`create-container`,
//! `delete-container`, `copy-object`, `move-object`, `write-data`, `delete-object`,
//! `delete-objects`, `clear`) are recorded and their change is written by the commit that
//! writes their entry. Writes decide under the store's turn (`crate::blobstore::write_lock`),
//! so a recorded outcome (the source existed, the container existed) is what was written.
//! A container handle, values and listings are the guest's own: nothing is recorded for them,
//! and they are part of a snapshot's host state.
//!
//! As in Golem: creating an existing container returns it; `get-data`'s `end` is exclusive
//! (and clamped to the object's size); errors are strings. A value's body is written through a
//! `wasi:io/streams` output stream (`host::wasi2` hands its writes here); reading one as a
//! stream (`incoming-value-consume-async`) returns an error asking for the sync variant.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};
use wasm_wave::value::Value;
use wasm_wave::wasm::WasmValue;

use super::stored::{
    decode, encode, ok_bytes, request, shape_error, through_gate, unquote, wave_strings, Commit,
    Live, Turn,
};
use super::{Failure, HostState};
use crate::abi::{parse_wave, wave_string};
use crate::blobstore as store;
use crate::component::ImportedFunction;
use crate::error::Error;
use crate::oplog::{now_ms, HostFunction, HostValue};

const TYPES: &str = "wasi:blobstore/types";
const CONTAINER: &str = "wasi:blobstore/container";
const BLOBSTORE: &str = "wasi:blobstore/blobstore";

/// The functions provided, by interface.
pub const PROVIDED: super::Provided = super::Provided(&[
    (
        TYPES,
        &[
            "[static]outgoing-value.new-outgoing-value",
            "[method]outgoing-value.outgoing-value-write-body",
            "[resource-drop]outgoing-value",
            "[method]incoming-value.incoming-value-consume-sync",
            "[method]incoming-value.incoming-value-consume-async",
            "[method]incoming-value.size",
            "[resource-drop]incoming-value",
        ],
    ),
    (
        CONTAINER,
        &[
            "[method]container.name",
            "[method]container.info",
            "[method]container.get-data",
            "[method]container.write-data",
            "[method]container.list-objects",
            "[method]container.delete-object",
            "[method]container.delete-objects",
            "[method]container.has-object",
            "[method]container.object-info",
            "[method]container.clear",
            "[resource-drop]container",
            "[method]stream-object-names.read-stream-object-names",
            "[method]stream-object-names.skip-stream-object-names",
            "[resource-drop]stream-object-names",
        ],
    ),
    (
        BLOBSTORE,
        &[
            "create-container",
            "get-container",
            "delete-container",
            "container-exists",
            "copy-object",
            "move-object",
        ],
    ),
]);

/// The most resources a worker may hold open at once (they are part of its host state).
pub const OPEN_RESOURCES_MAX: usize = 4096;

/// One resource handed to the guest.
#[derive(Clone, Debug, Serialize, Deserialize)]
enum Resource {
    /// A container, by name, with its creation time as it was when obtained (what `info`
    /// returns, as Golem's does).
    Container { name: String, created_at_ms: u64 },
    /// A value the guest writes through its body stream; `overflow` once it passed the limit
    /// (the bytes past it are dropped and `write-data` refuses it).
    Outgoing { body: Vec<u8>, overflow: bool },
    /// Data read by `get-data`.
    Incoming(Vec<u8>),
    /// The names `list-objects` returned that the guest has not read yet.
    Names(VecDeque<String>),
}

impl Resource {
    fn kind(&self) -> &'static str {
        match self {
            Resource::Container { .. } => "container",
            Resource::Outgoing { .. } => "outgoing-value",
            Resource::Incoming(_) => "incoming-value",
            Resource::Names(_) => "stream-object-names",
        }
    }
}

/// The `wasi:blobstore` resources of one worker instance (part of a snapshot's host state),
/// numbered in the order the guest made them, so replay hands out the same numbers.
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct Handles {
    /// The last handle given out.
    last: u32,
    /// Open resources by handle.
    open: BTreeMap<u32, Resource>,
}

impl Handles {
    fn open(&mut self, resource: Resource) -> std::result::Result<u32, Failure> {
        if self.open.len() >= OPEN_RESOURCES_MAX {
            return Err(Failure::Trap(format!(
                "wasi:blobstore: {OPEN_RESOURCES_MAX} resources are open; drop some first"
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
                "wasi:blobstore: handle {handle} is a {}, not a {kind}",
                other.kind()
            ))),
            None => Err(Failure::Trap(format!(
                "wasi:blobstore: unknown {kind} handle {handle}"
            ))),
        }
    }

    fn container(&mut self, handle: u32) -> std::result::Result<(String, u64), Failure> {
        match self.get(handle, "container")? {
            Resource::Container {
                name,
                created_at_ms,
            } => Ok((name.clone(), *created_at_ms)),
            _ => unreachable!("get checked the kind"),
        }
    }

    /// Appends `bytes` to the body of outgoing value `value` (a write to the output stream
    /// `outgoing-value-write-body` returned). Past [`store::OBJECT_BYTES_MAX`] the bytes are
    /// dropped and the value marked, so that `write-data` refuses it with the reason.
    pub fn write_body(&mut self, value: u32, bytes: &[u8]) -> std::result::Result<(), String> {
        match self.open.get_mut(&value) {
            Some(Resource::Outgoing { body, overflow }) => {
                if body.len() + bytes.len() > store::OBJECT_BYTES_MAX {
                    *overflow = true;
                } else {
                    body.extend_from_slice(bytes);
                }
                Ok(())
            }
            // The value was dropped before its body stream: the bytes go nowhere.
            None => Ok(()),
            Some(other) => Err(format!(
                "wasi:blobstore: handle {value} is a {}, not an outgoing-value",
                other.kind()
            )),
        }
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

/// The store's turn, for writes (see the module documentation).
const TURN: Option<Turn> = Some(store::write_lock);

/// One call of a `wasi:blobstore` function (drops excepted).
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
    let refused = |reason: &str| typed(&format!("err({})", wave_string(reason)));
    let u32_at = |at: usize| params.get(at).map(|v| v.unwrap_u32()).unwrap_or_default();
    let u64_at = |at: usize| params.get(at).map(|v| v.unwrap_u64()).unwrap_or_default();
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
    let object_id_at = |at: usize| -> (String, String) {
        let mut id = (String::new(), String::new());
        for (field, value) in params
            .get(at)
            .map(|v| v.unwrap_record())
            .into_iter()
            .flatten()
        {
            match field.as_ref() {
                "container" => id.0 = value.unwrap_string().into_owned(),
                "object" => id.1 = value.unwrap_string().into_owned(),
                _ => {}
            }
        }
        id
    };
    let function = HostFunction::Golem(format!("{}.{}", func.module, func.name));
    // A recorded refusal as the guest's `err(reason)`; any other shape is corrupt.
    let refusal = |response: HostValue| match response {
        HostValue::Wave(reason) => refused(&unquote(&reason)),
        other => Err(Failure::Fatal(shape_error(func, &other))),
    };
    let unit = |response: HostValue| match response {
        HostValue::Unit => typed("ok"),
        other => refusal(other),
    };
    let flag = |response: HostValue| match response {
        HostValue::U64(found) => typed(&format!("ok({})", found == 1)),
        other => refusal(other),
    };
    match (func.module.as_str(), func.name.as_str()) {
        // Values and listings: the guest's own, nothing recorded.
        (TYPES, "[static]outgoing-value.new-outgoing-value") => {
            let handle = state.blobstore.open(Resource::Outgoing {
                body: Vec::new(),
                overflow: false,
            })?;
            typed(&handle.to_string())
        }
        (TYPES, "[method]outgoing-value.outgoing-value-write-body") => {
            let value = u32_at(0);
            state.blobstore.get(value, "outgoing-value")?;
            let stream = state.wasi2.open_blob_body(value);
            typed(&format!("ok({stream})"))
        }
        (TYPES, "[method]incoming-value.incoming-value-consume-sync") => {
            let Resource::Incoming(data) = state.blobstore.get(u32_at(0), "incoming-value")? else {
                unreachable!("get checked the kind")
            };
            let data = std::mem::take(data);
            Ok(Some(ok_bytes(&result_type, &data)?))
        }
        (TYPES, "[method]incoming-value.incoming-value-consume-async") => {
            state.blobstore.get(u32_at(0), "incoming-value")?;
            refused(
                "incoming-value-consume-async: streamed bodies are not supported by golemw; \
                 use incoming-value-consume-sync",
            )
        }
        (TYPES, "[method]incoming-value.size") => {
            let Resource::Incoming(data) = state.blobstore.get(u32_at(0), "incoming-value")? else {
                unreachable!("get checked the kind")
            };
            typed(&data.len().to_string())
        }
        (CONTAINER, "[method]container.name") => {
            let (name, _) = state.blobstore.container(u32_at(0))?;
            typed(&format!("ok({})", wave_string(&name)))
        }
        (CONTAINER, "[method]container.info") => {
            let (name, created_at_ms) = state.blobstore.container(u32_at(0))?;
            typed(&format!(
                "ok({{name: {}, created-at: {created_at_ms}}})",
                wave_string(&name)
            ))
        }
        (
            CONTAINER,
            "[method]stream-object-names.read-stream-object-names"
            | "[method]stream-object-names.skip-stream-object-names",
        ) => {
            let Resource::Names(names) = state.blobstore.get(u32_at(0), "stream-object-names")?
            else {
                unreachable!("get checked the kind")
            };
            let wanted = usize::try_from(u64_at(1)).unwrap_or(usize::MAX);
            let taken: Vec<String> = names.drain(..wanted.min(names.len())).collect();
            let end = names.is_empty();
            match func.name.ends_with("read-stream-object-names") {
                true => typed(&format!("ok(({}, {end}))", wave_strings(&taken))),
                false => typed(&format!("ok(({}, {end}))", taken.len())),
            }
        }
        // Containers.
        (BLOBSTORE, "create-container") => {
            let name = string_at(0);
            let request = request(&[&wave_string(&name)]);
            let response = through_gate(state, function, request, Commit::Now, TURN, |storage| {
                if let Err(reason) = store::check_container(&name) {
                    return Live::refused(reason);
                }
                // Its creation time: the stored one if it exists, else now.
                let created = store::container(storage, &name)?.unwrap_or_else(now_ms);
                let storage = std::sync::Arc::clone(storage);
                let name = name.clone();
                Live::write(HostValue::U64(created), move |txn| {
                    store::create_container(txn, &storage, &name, created).map(drop)
                })
            })?;
            open_container(state, name, response, &typed, &refusal)
        }
        (BLOBSTORE, "get-container") => {
            let name = string_at(0);
            let request = request(&[&wave_string(&name)]);
            let response = through_gate(state, function, request, Commit::Now, None, |storage| {
                if let Err(reason) = store::check_container(&name) {
                    return Live::refused(reason);
                }
                match store::container(storage, &name)? {
                    Some(created) => Live::read(HostValue::U64(created)),
                    None => Live::refused(format!("container {name:?} does not exist")),
                }
            })?;
            open_container(state, name, response, &typed, &refusal)
        }
        (BLOBSTORE, "delete-container") => {
            let name = string_at(0);
            let request = request(&[&wave_string(&name)]);
            let response = through_gate(state, function, request, Commit::Now, TURN, |storage| {
                if let Err(reason) = store::check_container(&name) {
                    return Live::refused(reason);
                }
                if store::container(storage, &name)?.is_none() {
                    return Live::refused(format!("container {name:?} does not exist"));
                }
                let storage = std::sync::Arc::clone(storage);
                let name = name.clone();
                Live::write(HostValue::Unit, move |txn| {
                    store::delete_container(txn, &storage, &name)
                })
            })?;
            unit(response)
        }
        (BLOBSTORE, "container-exists") => {
            let name = string_at(0);
            let request = request(&[&wave_string(&name)]);
            let response = through_gate(state, function, request, Commit::Now, None, |storage| {
                if let Err(reason) = store::check_container(&name) {
                    return Live::refused(reason);
                }
                let exists = store::container(storage, &name)?.is_some();
                Live::read(HostValue::U64(u64::from(exists)))
            })?;
            flag(response)
        }
        (BLOBSTORE, "copy-object" | "move-object") => {
            let (from, to) = (object_id_at(0), object_id_at(1));
            let moving = func.name == "move-object";
            let request = request(&[
                &format!("({}, {})", wave_string(&from.0), wave_string(&from.1)),
                &format!("({}, {})", wave_string(&to.0), wave_string(&to.1)),
            ]);
            let response = through_gate(state, function, request, Commit::Now, TURN, |storage| {
                let checked = [&from.0, &to.0]
                    .into_iter()
                    .try_for_each(|c| store::check_container(c))
                    .and_then(|()| {
                        [&from.1, &to.1]
                            .into_iter()
                            .try_for_each(|o| store::check_object(o))
                    });
                if let Err(reason) = checked {
                    return Live::refused(reason);
                }
                if store::container(storage, &to.0)?.is_none() {
                    return Live::refused(format!("container {:?} does not exist", to.0));
                }
                let Some(object) = store::object(storage, &from.0, &from.1)? else {
                    return Live::refused(format!(
                        "object {:?} of container {:?} does not exist",
                        from.1, from.0
                    ));
                };
                let (storage, from, to, now) = (
                    std::sync::Arc::clone(storage),
                    from.clone(),
                    to.clone(),
                    now_ms(),
                );
                Live::write(HostValue::Unit, move |txn| {
                    store::put_object(txn, &storage, &to.0, &to.1, &object.data, now)?;
                    if moving && from != to {
                        store::delete_object(txn, &storage, &from.0, &from.1)?;
                    }
                    Ok(())
                })
            })?;
            unit(response)
        }
        // Objects.
        (CONTAINER, "[method]container.get-data") => {
            let ((container, _), name) = (state.blobstore.container(u32_at(0))?, string_at(1));
            let (start, end) = (u64_at(2), u64_at(3));
            let request = request(&[
                &wave_string(&container),
                &wave_string(&name),
                &start.to_string(),
                &end.to_string(),
            ]);
            let response = through_gate(state, function, request, Commit::Now, None, |storage| {
                if let Err(reason) = store::check_object(&name) {
                    return Live::refused(reason);
                }
                if start > end {
                    return Live::refused(format!("start {start} is past end {end}"));
                }
                match store::object(storage, &container, &name)? {
                    Some(object) => {
                        let len = object.data.len() as u64;
                        let range = start.min(len) as usize..end.min(len) as usize;
                        Live::read(HostValue::Bytes(object.data[range].to_vec()))
                    }
                    None => Live::refused(format!(
                        "object {name:?} of container {container:?} does not exist"
                    )),
                }
            })?;
            match response {
                HostValue::Bytes(data) => {
                    let handle = state.blobstore.open(Resource::Incoming(data))?;
                    typed(&format!("ok({handle})"))
                }
                other => refusal(other),
            }
        }
        (CONTAINER, "[method]container.write-data") => {
            let ((container, _), name) = (state.blobstore.container(u32_at(0))?, string_at(1));
            let Resource::Outgoing { body, overflow } =
                state.blobstore.get(u32_at(2), "outgoing-value")?.clone()
            else {
                unreachable!("get checked the kind")
            };
            let size = match overflow {
                true => format!("more than {} bytes", store::OBJECT_BYTES_MAX),
                false => super::stored::digest(&body),
            };
            let request = request(&[&wave_string(&container), &wave_string(&name), &size]);
            let response = through_gate(
                state,
                function,
                request,
                Commit::Now,
                TURN,
                move |storage| {
                    if let Err(reason) = store::check_object(&name) {
                        return Live::refused(reason);
                    }
                    if overflow {
                        return Live::refused(format!(
                            "the object is more than {0} bytes; at most {0} are allowed",
                            store::OBJECT_BYTES_MAX
                        ));
                    }
                    if store::container(storage, &container)?.is_none() {
                        return Live::refused(format!("container {container:?} does not exist"));
                    }
                    let (storage, now) = (std::sync::Arc::clone(storage), now_ms());
                    Live::write(HostValue::Unit, move |txn| {
                        store::put_object(txn, &storage, &container, &name, &body, now)
                    })
                },
            )?;
            unit(response)
        }
        (CONTAINER, "[method]container.list-objects") => {
            let (container, _) = state.blobstore.container(u32_at(0))?;
            let request = request(&[&wave_string(&container)]);
            let response = through_gate(state, function, request, Commit::Now, None, |storage| {
                match store::list_objects(storage, &container)? {
                    Ok(names) => Live::read(HostValue::Bytes(encode(&names))),
                    Err(reason) => Live::refused(reason),
                }
            })?;
            match response {
                HostValue::Bytes(bytes) => {
                    let names: Vec<String> = decode(func, &bytes)?;
                    let handle = state.blobstore.open(Resource::Names(names.into()))?;
                    typed(&format!("ok({handle})"))
                }
                other => refusal(other),
            }
        }
        (CONTAINER, "[method]container.delete-object" | "[method]container.delete-objects") => {
            let (container, _) = state.blobstore.container(u32_at(0))?;
            let names = match func.name.ends_with("delete-objects") {
                true => strings_at(1),
                false => vec![string_at(1)],
            };
            let request = request(&[&wave_string(&container), &wave_strings(&names)]);
            let response = through_gate(
                state,
                function,
                request,
                Commit::Now,
                TURN,
                move |storage| {
                    let checked = store::check_batch(names.len())
                        .and_then(|()| names.iter().try_for_each(|n| store::check_object(n)));
                    if let Err(reason) = checked {
                        return Live::refused(reason);
                    }
                    let storage = std::sync::Arc::clone(storage);
                    Live::write(HostValue::Unit, move |txn| {
                        names.iter().try_for_each(|name| {
                            store::delete_object(txn, &storage, &container, name)
                        })
                    })
                },
            )?;
            unit(response)
        }
        (CONTAINER, "[method]container.has-object") => {
            let ((container, _), name) = (state.blobstore.container(u32_at(0))?, string_at(1));
            let request = request(&[&wave_string(&container), &wave_string(&name)]);
            let response = through_gate(state, function, request, Commit::Now, None, |storage| {
                if let Err(reason) = store::check_object(&name) {
                    return Live::refused(reason);
                }
                let found = store::object(storage, &container, &name)?.is_some();
                Live::read(HostValue::U64(u64::from(found)))
            })?;
            flag(response)
        }
        (CONTAINER, "[method]container.object-info") => {
            let ((container, _), name) = (state.blobstore.container(u32_at(0))?, string_at(1));
            let request = request(&[&wave_string(&container), &wave_string(&name)]);
            let response = through_gate(state, function, request, Commit::Now, None, |storage| {
                if let Err(reason) = store::check_object(&name) {
                    return Live::refused(reason);
                }
                match store::object(storage, &container, &name)? {
                    Some(object) => Live::read(HostValue::Bytes(encode(&(
                        object.created_at_ms,
                        object.data.len() as u64,
                    )))),
                    None => Live::refused(format!(
                        "object {name:?} of container {container:?} does not exist"
                    )),
                }
            })?;
            match response {
                HostValue::Bytes(bytes) => {
                    let (created, size): (u64, u64) = decode(func, &bytes)?;
                    typed(&format!(
                        "ok({{name: {}, container: {}, created-at: {created}, size: {size}}})",
                        wave_string(&name),
                        wave_string(&container)
                    ))
                }
                other => refusal(other),
            }
        }
        (CONTAINER, "[method]container.clear") => {
            let (container, _) = state.blobstore.container(u32_at(0))?;
            let request = request(&[&wave_string(&container)]);
            let response = through_gate(state, function, request, Commit::Now, TURN, |storage| {
                if store::container(storage, &container)?.is_none() {
                    return Live::refused(format!("container {container:?} does not exist"));
                }
                let storage = std::sync::Arc::clone(storage);
                let container = container.clone();
                Live::write(HostValue::Unit, move |txn| {
                    store::clear(txn, &storage, &container)
                })
            })?;
            unit(response)
        }
        (module, name) => Err(Failure::Fatal(Error::Engine(format!(
            "{module}.{name} is not implemented by this golemw"
        )))),
    }
}

/// A container handle for a recorded creation time, or the recorded refusal.
fn open_container(
    state: &mut HostState,
    name: String,
    response: HostValue,
    typed: &dyn Fn(&str) -> std::result::Result<Option<Value>, Failure>,
    refusal: &dyn Fn(HostValue) -> std::result::Result<Option<Value>, Failure>,
) -> std::result::Result<Option<Value>, Failure> {
    match response {
        HostValue::U64(created_at_ms) => {
            let handle = state.blobstore.open(Resource::Container {
                name,
                created_at_ms,
            })?;
            typed(&format!("ok({handle})"))
        }
        other => refusal(other),
    }
}
