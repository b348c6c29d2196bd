//! `golem:api/host@0.2.0`: each function takes its lifted params and returns its result as a
//! WAVE value, going through the durability gate where the result is not a pure function of
//! the worker's own state.

use std::collections::BTreeMap;
use std::sync::Arc;

use wasm_wave::value::Value;
use wasm_wave::wasm::WasmValue;
use wasmer::{
    Function, FunctionEnv, FunctionEnvMut, FunctionType, Imports, Module, RuntimeError, Store, Type,
};

use super::context::worker_metadata_wave;
use super::get_workers::{self, Construct};
use super::persistence::{self, remote_side_effect};
use super::{abort, from_wasmer, to_wasmer, unwind, GuestMem, HostState, GOLEM_HOST_MODULE};
use super::{blobstore, http, keyvalue, rpc};
use super::{wasi2, Failure};
use crate::abi::wave_string;
use crate::abi::{parse_wave, CoreType};
use crate::component::{ImportedFunction, HOST_INTERFACES};
use crate::error::{Error, Result};
use crate::oplog::{HostFunction, HostValue};
use crate::outcome::Unwind;

/// The functions of `golem:api/host@0.2.0` this runtime implements; a module importing another
/// one is refused at upload with its name.
pub const PROVIDED: &[&str] = &[
    "get-oplog-index",
    "generate-idempotency-key",
    "get-self-metadata",
    "get-worker-metadata",
    "get-self-uri",
    "oplog-commit",
    "set-oplog-index",
    "update-worker",
    "create-promise",
    "await-promise",
    "complete-promise",
    "delete-promise",
    get_workers::CONSTRUCTOR,
    get_workers::GET_NEXT,
    get_workers::DROP,
    // Transactions and persistence control, implemented in `super::persistence`.
    "mark-begin-operation",
    "mark-end-operation",
    "get-retry-policy",
    "set-retry-policy",
    "get-oplog-persistence-level",
    "set-oplog-persistence-level",
    "get-idempotence-mode",
    "set-idempotence-mode",
];

/// Defines the host functions of the [`HOST_INTERFACES`] that `module` imports (a guest imports
/// only those it calls; defining the ~40 others for every instance cost about 55 µs of each
/// cold start), calling into [`call`], plus the resource destructors where imported.
pub fn define_imports(
    store: &mut Store,
    env: &FunctionEnv<HostState>,
    imports: &mut Imports,
    module: &Module,
    functions: &BTreeMap<(String, String), Arc<ImportedFunction>>,
) {
    for import in module.imports() {
        let (module_name, name) = (import.module(), import.name());
        let key = crate::component::interface_key(module_name);
        let key = key.as_ref();
        let stub = crate::stubs::stub_target(module_name).is_some();
        let stored = keyvalue::PROVIDED.is_interface(key) || blobstore::PROVIDED.is_interface(key);
        if !HOST_INTERFACES.contains(&key)
            && !wasi2::PROVIDED.is_interface(key)
            && !http::PROVIDED.is_interface(key)
            && !stub
            && !stored
        {
            continue;
        }
        if wasi2::PROVIDED.is_drop(key, name) || http::PROVIDED.is_drop(key, name) {
            let resource = name.to_string();
            let drop = Function::new_typed_with_env(
                store,
                env,
                move |mut ctx: FunctionEnvMut<HostState>,
                      handle: i32|
                      -> Result<(), RuntimeError> {
                    let state = ctx.data_mut();
                    match http::owns(handle as u32) {
                        true => state.http.drop_handle(&resource, handle as u32),
                        false => state.wasi2.drop_handle(&resource, handle as u32),
                    }
                    .map_err(RuntimeError::new)
                },
            );
            imports.define(module_name, name, drop);
            continue;
        }
        if keyvalue::PROVIDED.is_drop(key, name) || blobstore::PROVIDED.is_drop(key, name) {
            // Both stores name resources `outgoing-value` and `incoming-value`: by interface.
            let (resource, blob) = (name.to_string(), blobstore::PROVIDED.is_drop(key, name));
            let drop = Function::new_typed_with_env(
                store,
                env,
                move |mut ctx: FunctionEnvMut<HostState>,
                      handle: i32|
                      -> Result<(), RuntimeError> {
                    let state = ctx.data_mut();
                    match blob {
                        true => state.blobstore.drop_handle(&resource, handle as u32),
                        false => state.keyvalue.drop_handle(&resource, handle as u32),
                    }
                    .map_err(RuntimeError::new)
                },
            );
            imports.define(module_name, name, drop);
            continue;
        }
        if (module_name, name) == (GOLEM_HOST_MODULE, get_workers::DROP) {
            // Resource destructors are core imports without a WIT function of their own.
            let drop = Function::new_typed_with_env(
                store,
                env,
                |mut ctx: FunctionEnvMut<HostState>, handle: i32| -> Result<(), RuntimeError> {
                    ctx.data_mut()
                        .enumerations
                        .drop_handle(handle as u32)
                        .map_err(RuntimeError::new)
                },
            );
            imports.define(module_name, name, drop);
            continue;
        }
        if rpc::DROPS.contains(&(key, name)) || (stub && name.starts_with("[resource-drop]")) {
            let resource = name.to_string();
            let drop = Function::new_typed_with_env(
                store,
                env,
                move |mut ctx: FunctionEnvMut<HostState>,
                      handle: i32|
                      -> Result<(), RuntimeError> {
                    ctx.data_mut()
                        .rpc
                        .drop_handle(&resource, handle as u32)
                        .map_err(RuntimeError::new)
                },
            );
            imports.define(module_name, name, drop);
            continue;
        }
        // One the WIT world does not declare stays undefined: instantiation names it.
        let Some(func) = functions.get(&(key.to_string(), name.to_string())) else {
            continue;
        };
        let ty = FunctionType::new(
            func.abi
                .core_params()
                .iter()
                .map(core_type)
                .collect::<Vec<_>>(),
            func.abi
                .core_results()
                .iter()
                .map(core_type)
                .collect::<Vec<_>>(),
        );
        let func = Arc::clone(func);
        let host = Function::new_with_env(store, env, ty, move |ctx, args| call(ctx, &func, args));
        imports.define(module_name, name, host);
    }
}

fn core_type(ty: &CoreType) -> Type {
    match ty {
        CoreType::I32 => Type::I32,
        CoreType::I64 => Type::I64,
        CoreType::F32 => Type::F32,
        CoreType::F64 => Type::F64,
    }
}

/// One call from the guest: lift params, run, lower the result.
fn call(
    mut ctx: FunctionEnvMut<HostState>,
    func: &ImportedFunction,
    args: &[wasmer::Value],
) -> Result<Vec<wasmer::Value>, RuntimeError> {
    let core_args = args
        .iter()
        .map(from_wasmer)
        .collect::<Result<Vec<_>, _>>()?;
    let (state, mut store) = ctx.data_and_store_mut();
    let memory = state
        .memory
        .clone()
        .expect("memory is set after instantiation");
    let realloc = state.realloc.clone();
    let mut mem = GuestMem {
        store: &mut store,
        memory: &memory,
        realloc: realloc.as_ref(),
    };
    let (params, retptr) = func
        .abi
        .lift_params(&mem, &core_args)
        .map_err(|e| abort(&mut state.gate, e.into()))?;
    let result = match func.name.as_str() {
        _ if wasi2::PROVIDED.is_interface(&func.module) => wasi2::call(state, func, params),
        _ if http::PROVIDED.is_interface(&func.module) => http::call(state, func, params),
        _ if keyvalue::PROVIDED.is_interface(&func.module) => keyvalue::call(state, func, params),
        _ if blobstore::PROVIDED.is_interface(&func.module) => blobstore::call(state, func, params),
        _ if func.module != GOLEM_HOST_MODULE => rpc::call(state, func, params),
        get_workers::CONSTRUCTOR | get_workers::GET_NEXT => {
            // A remote side effect (see `persistence`); a guest misuse traps inside it.
            let mut failure = None;
            let result = remote_side_effect(state, |state| {
                get_workers_call(state, func, params).or_else(|f| match f {
                    Failure::Fatal(err) => Err(err),
                    trap => {
                        failure = Some(trap);
                        Ok(None)
                    }
                })
            });
            match (failure, result) {
                (Some(trap), _) => Err(trap),
                (None, result) => result.map_err(Failure::Fatal),
            }
        }
        _ => dispatch(state, func, params),
    };
    let result = match result {
        Ok(result) => result,
        Err(Failure::Fatal(err)) => return Err(abort(&mut state.gate, err)),
        Err(Failure::Unwind(why)) => return Err(unwind(&mut state.gate, why)),
        Err(Failure::Trap(message)) => return Err(RuntimeError::new(message)),
        Err(Failure::Exit(code)) => {
            return Err(RuntimeError::user(Box::new(wasmer_wasix::WasiError::Exit(
                (code as i32).into(),
            ))))
        }
    };
    let core = func
        .abi
        .lower_result(&mut mem, result.as_ref(), retptr)
        .map_err(|e| abort(&mut state.gate, e.into()))?;
    Ok(core.into_iter().map(to_wasmer).collect())
}

fn dispatch(
    state: &mut HostState,
    func: &ImportedFunction,
    params: Vec<Value>,
) -> Result<Option<Value>, Failure> {
    match func.name.as_str() {
        "set-oplog-index" => set_oplog_index(state, &params),
        name if super::promises::FUNCTIONS.contains(&name) => {
            super::promises::call(state, func, params)
        }
        _ => Ok(dispatch_recorded(state, func, params)?),
    }
}

/// `set-oplog-index`: a valid jump unwinds the guest; an invalid one traps.
fn set_oplog_index(state: &mut HostState, params: &[Value]) -> Result<Option<Value>, Failure> {
    let target = params.first().map(|v| v.unwrap_u64()).unwrap_or(0);
    // A valid jump is never replayed: the call sits in the region it deletes. An
    // invalid one traps, and must trap again on replay: its refusal is recorded.
    let next = state.gate.next_index();
    let refusal = state.gate.history().jump_target_error(target, next);
    let response = state.gate.host_call(
        HostFunction::Golem("set-oplog-index".into()),
        HostValue::U64(target),
        || match &refusal {
            Some(reason) => HostValue::Wave(wave_string(reason)),
            None => HostValue::Unit,
        },
    );
    match response? {
        HostValue::Wave(reason) => Err(Failure::Trap(format!(
            "set-oplog-index: {}",
            reason.trim_matches('"')
        ))),
        // Live and valid: the call was recorded only to be deleted with the region;
        // unwind the guest, the worker records the jump and restarts.
        _ => Err(Failure::Unwind(Unwind::Jump { target })),
    }
}

/// The functions that never unwind the guest: their errors are [`Error`]s (a trap, or fatal).
fn dispatch_recorded(
    state: &mut HostState,
    func: &ImportedFunction,
    params: Vec<Value>,
) -> Result<Option<Value>> {
    let result_type = func.abi.result_type();
    let typed = |text: &str| -> Result<Option<Value>> {
        let ty = result_type
            .ok_or_else(|| Error::Engine(format!("{} has no result type", func.name)))?;
        Ok(Some(parse_wave(ty, text)?))
    };
    if let Some(result) = persistence::dispatch(state, &func.name, &params, &typed) {
        return result;
    }
    match func.name.as_str() {
        "get-oplog-index" => {
            let index = state.gate.no_op()?;
            typed(&index.to_string())
        }
        "generate-idempotency-key" => {
            let live = state.gate.mode() == crate::gate::Mode::Live;
            let key = state.gate.host_call(
                HostFunction::GenerateIdempotencyKey,
                HostValue::Unit,
                || HostValue::Bytes(uuid::Uuid::new_v4().as_bytes().to_vec()),
            )?;
            if live {
                // Committed before it is returned, so the guest never sees a key that a crash
                // could replace with another.
                state.gate.commit_with(true, |_| Ok(()))?;
            }
            let HostValue::Bytes(bytes) = key else {
                return Err(shape_error(func, &key));
            };
            let uuid = uuid::Uuid::from_slice(&bytes)
                .map_err(|_| shape_error(func, &HostValue::Bytes(bytes)))?;
            let (high, low) = uuid.as_u64_pair();
            typed(&format!("{{high-bits: {high}, low-bits: {low}}}"))
        }
        "get-self-metadata" => {
            let context = Arc::clone(&state.context);
            let response =
                state
                    .gate
                    .host_call(HostFunction::GetSelfMetadata, HostValue::Unit, || {
                        HostValue::Wave(worker_metadata_wave(&context.self_metadata()))
                    })?;
            match response {
                HostValue::Wave(text) => typed(&text),
                other => Err(shape_error(func, &other)),
            }
        }
        "get-worker-metadata" => {
            let request = params
                .first()
                .map(|v| wasm_wave::to_string(v).unwrap_or_default())
                .unwrap_or_default();
            let context = Arc::clone(&state.context);
            let target = params.first().cloned();
            let response = remote_side_effect(state, |state| {
                state.gate.host_call(
                    HostFunction::GetWorkerMetadata,
                    HostValue::Wave(request),
                    || match target.as_ref().and_then(|v| context.lookup_worker(v)) {
                        Some(metadata) => {
                            HostValue::Wave(format!("some({})", worker_metadata_wave(&metadata)))
                        }
                        None => HostValue::Wave("none".into()),
                    },
                )
            })?;
            match response {
                HostValue::Wave(text) => typed(&text),
                other => Err(shape_error(func, &other)),
            }
        }
        "get-self-uri" => {
            // A pure function of the worker's identity: nothing to record.
            let function = params
                .first()
                .map(|v| v.unwrap_string().to_string())
                .unwrap_or_default();
            let uri = format!(
                "{}/{}",
                state.context.id_at(state.gate.next_index()).uri(),
                crate::ids::url_encode(&function)
            );
            typed(&format!("{{value: {}}}", wave_string(&uri)))
        }
        "oplog-commit" => {
            if state.gate.mode() == crate::gate::Mode::Live {
                // One replica: durable once fsynced.
                state.gate.commit_with(true, |_| Ok(()))?;
            }
            Ok(None)
        }
        "update-worker" => {
            let request = params
                .iter()
                .map(|v| wasm_wave::to_string(v).unwrap_or_default())
                .collect::<Vec<_>>()
                .join(", ");
            let live = state.gate.mode() == crate::gate::Mode::Live;
            remote_side_effect(state, |state| {
                state.gate.host_call(
                    HostFunction::Golem("update-worker".into()),
                    HostValue::Wave(request),
                    || HostValue::Unit,
                )
            })?;
            if live {
                let worker = params
                    .first()
                    .and_then(super::context::worker_id_from_value)
                    .ok_or_else(|| Error::Trap {
                        function: "update-worker".into(),
                        message: "the worker-id parameter could not be read".into(),
                    })?;
                let target_version = params.get(1).map(|v| v.unwrap_u64()).unwrap_or(0);
                let mode = match params
                    .get(2)
                    .map(|v| v.unwrap_enum().to_string())
                    .as_deref()
                {
                    Some("snapshot-based") => crate::history::UpdateMode::SnapshotBased,
                    _ => crate::history::UpdateMode::Automatic,
                };
                state.update_requests.push(crate::history::UpdateRequest {
                    worker,
                    target_version,
                    mode,
                });
            }
            Ok(None)
        }
        other => Err(Error::Engine(format!(
            "golem:api/host@0.2.0.{other} is not implemented by this golemw"
        ))),
    }
}

/// The constructor and `get-next` of the `get-workers` resource (see [`get_workers`]).
fn get_workers_call(
    state: &mut HostState,
    func: &ImportedFunction,
    params: Vec<Value>,
) -> Result<Option<Value>, Failure> {
    let result_type = func
        .abi
        .result_type()
        .ok_or_else(|| Error::Engine(format!("{} has no result type", func.name)))?;
    let function = HostFunction::Golem(func.name.clone());
    if func.name == get_workers::CONSTRUCTOR {
        let request = params
            .iter()
            .map(|v| wasm_wave::to_string(v).map_err(|e| Error::Engine(e.to_string())))
            .collect::<Result<Vec<_>>>()?
            .join(", ");
        let construct = Construct::from_params(&params)?;
        let candidate = state.enumerations.next_handle();
        let live = state.gate.mode() == crate::gate::Mode::Live;
        let response = state
            .gate
            .host_call(function, HostValue::Wave(request), || {
                HostValue::U64(u64::from(candidate))
            })?;
        let HostValue::U64(handle) = response else {
            return Err(shape_error(func, &response).into());
        };
        let handle = u32::try_from(handle).map_err(|_| shape_error(func, &response))?;
        let snapshot = if live && !construct.precise {
            Some(get_workers::snapshot(&state.context, construct.component)?)
        } else {
            None
        };
        state.enumerations.open(handle, construct, snapshot)?;
        return Ok(Some(parse_wave(result_type, &handle.to_string())?));
    }
    let handle = params.first().map(|v| v.unwrap_u32()).unwrap_or_default();
    state
        .enumerations
        .check(handle, &func.name)
        .map_err(Failure::Trap)?;
    let context = Arc::clone(&state.context);
    let enumerations = &mut state.enumerations;
    let mut live_error = None;
    let response =
        state.gate.host_call(
            function,
            HostValue::U64(u64::from(handle)),
            || match enumerations.next_page_live(handle, &context, context.enumeration_page_size) {
                Ok(text) => HostValue::Wave(text),
                Err(err) => {
                    live_error = Some(err);
                    HostValue::Unit
                }
            },
        );
    if let Some(err) = live_error {
        return Err(err.into());
    }
    let HostValue::Wave(text) = response? else {
        return Err(Error::Corrupt {
            what: format!("recorded result of {}", func.name),
            detail: "not a WAVE value".into(),
        }
        .into());
    };
    let page = parse_wave(result_type, &text)?;
    state.enumerations.advance(handle, &page);
    Ok(Some(page))
}

fn shape_error(func: &ImportedFunction, value: &HostValue) -> Error {
    Error::Corrupt {
        what: format!("recorded result of {}", func.name),
        detail: format!("unexpected shape: {value}"),
    }
}
