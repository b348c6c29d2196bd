//! `golem:rpc/types@0.1.0` (the `wasm-rpc` and `future-invoke-result` resources) and the
//! pollables of `wasi:io/poll@0.2.0` that its futures are awaited through.
//!
//! **Exactly once.** Every call is a host call through the gate: the request (target, function,
//! parameters) and the outcome are recorded, and replay returns the recorded outcome without
//! calling again. Each call carries an idempotency key derived from the caller's worker id, the
//! idempotency key of the invocation making it, the oplog index of its entry and the request: a
//! caller that crashed after sending reaches the same call at the same index when its
//! invocation runs again (recovery, or its client sending the same key to a worker whose first
//! invocation was lost with its creation) and sends the same key, and the callee answers with
//! its stored result instead of running again. Another invocation, or another call at that
//! index after a crash took another path, gets another key.
//!
//! **What is recorded.** `invoke-and-await` and `invoke`: their outcome. `async-invoke-and-await`:
//! the future's handle (the call starts live only; a future whose call a crash interrupted is
//! started again, under the same key, when the guest next asks about it live). `get`, `ready`,
//! `block` and `poll`: what they returned, so that replay never waits and sees what the guest saw.
//! Constructors, `subscribe` and drops are effects of guest code alone: not recorded, the
//! handles count up and are the same on replay.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use wasm_wave::value::Value;
use wasm_wave::wasm::WasmValue;

use super::persistence::remote_side_effect;
use super::HostState;
use crate::abi::{parse_wave, wave_string};
use crate::component::{ImportedFunction, GOLEM_RPC_MODULE, WASI_POLL_MODULE};
use crate::error::{Error, Result};
use crate::ids::WorkerId;
use crate::oplog::{HostFunction, HostValue};
use crate::rpc::{result_wave, Call, CallResult, Dispatch, PendingCall, RpcError, Waited};
use crate::wit_value::WitValue;

const CONSTRUCTOR: &str = "[constructor]wasm-rpc";
const INVOKE_AND_AWAIT: &str = "[method]wasm-rpc.invoke-and-await";
const INVOKE: &str = "[method]wasm-rpc.invoke";
const ASYNC_INVOKE: &str = "[method]wasm-rpc.async-invoke-and-await";
const CLIENT_DROP: &str = "[resource-drop]wasm-rpc";
const SUBSCRIBE: &str = "[method]future-invoke-result.subscribe";
const GET: &str = "[method]future-invoke-result.get";
const FUTURE_DROP: &str = "[resource-drop]future-invoke-result";
const READY: &str = "[method]pollable.ready";
const BLOCK: &str = "[method]pollable.block";
const POLL: &str = "poll";
const POLLABLE_DROP: &str = "[resource-drop]pollable";

/// The `golem:rpc/types@0.1.0` functions this runtime implements.
pub const RPC_PROVIDED: &[&str] = &[
    CONSTRUCTOR,
    INVOKE_AND_AWAIT,
    INVOKE,
    ASYNC_INVOKE,
    CLIENT_DROP,
    SUBSCRIBE,
    GET,
    FUTURE_DROP,
];

/// The `wasi:io/poll@0.2.0` functions this runtime implements (pollables of RPC futures).
pub const POLL_PROVIDED: &[&str] = &[READY, BLOCK, POLL, POLLABLE_DROP];

/// Resource destructors: core imports `(i32) -> ()` without a WIT function of their own.
pub const DROPS: &[(&str, &str)] = &[
    (GOLEM_RPC_MODULE, CLIENT_DROP),
    (GOLEM_RPC_MODULE, FUTURE_DROP),
    (WASI_POLL_MODULE, POLLABLE_DROP),
];

/// Calls in flight at most per worker instance, counting futures not yet dropped: a guest
/// starting calls in a loop gets `denied` past it instead of a thread per call without bound.
pub const FUTURES_MAX: usize = 1024;

/// The RPC resources of one worker instance. Part of a snapshot's host state: a guest may keep
/// a client or a future across invocations.
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct RpcHandles {
    /// The last handle given out (clients, futures and pollables share the count).
    last: u32,
    /// Clients: the URI they were made with.
    clients: BTreeMap<u32, String>,
    futures: BTreeMap<u32, FutureCall>,
    /// Pollables, and the future each is for.
    pollables: BTreeMap<u32, u32>,
}

/// An `async-invoke-and-await` call.
#[derive(Clone, Serialize, Deserialize)]
struct FutureCall {
    target: std::result::Result<WorkerId, String>,
    function: String,
    params: Vec<WitValue>,
    idempotency_key: String,
    /// The call as this process runs it; `None` until started (never during replay; after a
    /// restore, until the guest asks about it live).
    #[serde(skip)]
    pending: Option<Arc<PendingCall>>,
}

impl RpcHandles {
    fn next(&mut self) -> u32 {
        self.last += 1;
        self.last
    }

    /// Forgets a resource the guest dropped. An unknown handle is the guest's mistake.
    pub fn drop_handle(&mut self, name: &str, handle: u32) -> std::result::Result<(), String> {
        let known = match name {
            CLIENT_DROP => self.clients.remove(&handle).is_some(),
            FUTURE_DROP => self.futures.remove(&handle).is_some(),
            POLLABLE_DROP => self.pollables.remove(&handle).is_some(),
            _ => false,
        };
        match known {
            true => Ok(()),
            false => Err(format!("{name}: unknown handle {handle}")),
        }
    }
}

/// How an RPC host function failed.
pub(super) enum Failure {
    /// The runtime cannot go on (storage, divergence, a stop request).
    Fatal(Error),
    /// The guest misused the API (an unknown handle): it traps.
    Trap(String),
}

impl From<Error> for Failure {
    fn from(err: Error) -> Self {
        Failure::Fatal(err)
    }
}

impl From<crate::abi::AbiError> for Failure {
    fn from(err: crate::abi::AbiError) -> Self {
        Failure::Fatal(err.into())
    }
}

type Outcome = std::result::Result<Option<Value>, Failure>;

/// One call of a `golem:rpc/types` or `wasi:io/poll` function (drops excepted).
pub(super) fn call(state: &mut HostState, func: &ImportedFunction, params: Vec<Value>) -> Outcome {
    let typed = |text: &str| -> Outcome {
        let ty = func
            .abi
            .result_type()
            .ok_or_else(|| Error::Engine(format!("{} has no result type", func.name)))?;
        Ok(Some(parse_wave(ty, text)?))
    };
    let handle = |i: usize| params.get(i).map(|v| v.unwrap_u32()).unwrap_or_default();
    let function = HostFunction::Golem(format!("{}.{}", func.module, func.name));
    match func.name.as_str() {
        CONSTRUCTOR => {
            let uri = params
                .first()
                .and_then(|v| {
                    v.unwrap_record()
                        .next()
                        .map(|(_, s)| s.unwrap_string().into_owned())
                })
                .unwrap_or_default();
            let client = state.rpc.next();
            state.rpc.clients.insert(client, uri);
            typed(&client.to_string())
        }
        INVOKE_AND_AWAIT | INVOKE | ASYNC_INVOKE => {
            let client = handle(0);
            let uri =
                state.rpc.clients.get(&client).cloned().ok_or_else(|| {
                    Failure::Trap(format!("{}: unknown handle {client}", func.name))
                })?;
            let name = params
                .get(1)
                .map(|v| v.unwrap_string().into_owned())
                .unwrap_or_default();
            let mut values = Vec::new();
            if let Some(list) = params.get(2) {
                for value in list.unwrap_list() {
                    values.push(WitValue::from_lifted(&value).map_err(|e| {
                        Failure::Fatal(Error::Engine(format!("{}: {e}", func.name)))
                    })?);
                }
            }
            let request = request_text(&uri, &name, &values);
            let target = WorkerId::from_uri(&uri);
            match func.name.as_str() {
                INVOKE_AND_AWAIT => {
                    let text = remote_side_effect(state, |state| {
                        let call = state.call(target, &name, values, &request);
                        let live = match state.gate.will_run_live() {
                            true => Some(state.run_and_wait(call)?),
                            false => None,
                        };
                        let response = state.gate.host_call(
                            function,
                            HostValue::Wave(request),
                            move || HostValue::Wave(result_wave(&live.expect("run above"))),
                        )?;
                        wave_of(response, &func.name)
                    })?;
                    typed(&text)
                }
                INVOKE => {
                    let text = remote_side_effect(state, |state| {
                        let call = state.call(target, &name, values, &request);
                        let live = match state.gate.will_run_live() {
                            true => Some(match call {
                                Ok(call) => state.dispatch().and_then(|d| d.enqueue(call)),
                                Err(err) => Err(err),
                            }),
                            false => None,
                        };
                        let response = state.gate.host_call(
                            function,
                            HostValue::Wave(request),
                            move || {
                                HostValue::Wave(match live.expect("run above") {
                                    Ok(()) => "ok".into(),
                                    Err(err) => format!("err({})", err.to_wave()),
                                })
                            },
                        )?;
                        wave_of(response, &func.name)
                    })?;
                    typed(&text)
                }
                _ => {
                    let future = state.rpc.next();
                    let index = remote_side_effect(state, |state| {
                        let index = state.gate.next_index();
                        let response = state.gate.host_call(
                            function,
                            HostValue::Wave(request.clone()),
                            || HostValue::U64(u64::from(future)),
                        )?;
                        if response != HostValue::U64(u64::from(future)) {
                            return Err(Error::Corrupt {
                                what: format!("recorded result of {}", func.name),
                                detail: format!("handle {response}, expected {future}"),
                            });
                        }
                        Ok(index)
                    })?;
                    let mut call = FutureCall {
                        target,
                        function: name,
                        params: values,
                        idempotency_key: call_key(
                            &state.context.id,
                            &state.invocation_key,
                            index,
                            &request,
                        ),
                        pending: None,
                    };
                    if state.gate.will_run_live() {
                        call.pending = Some(state.start(&call));
                    }
                    state.rpc.futures.insert(future, call);
                    typed(&future.to_string())
                }
            }
        }
        SUBSCRIBE => {
            let future = handle(0);
            if !state.rpc.futures.contains_key(&future) {
                return Err(Failure::Trap(format!(
                    "{}: unknown handle {future}",
                    func.name
                )));
            }
            let pollable = state.rpc.next();
            state.rpc.pollables.insert(pollable, future);
            typed(&pollable.to_string())
        }
        GET => {
            let future = handle(0);
            let live = match state.gate.will_run_live() {
                true => Some(match state.started(&[future], &func.name)?.first() {
                    Some(pending) => match pending.outcome() {
                        Some(outcome) => format!("some({})", result_wave(&outcome)),
                        None => "none".into(),
                    },
                    None => "none".into(),
                }),
                false => {
                    state.check_future(future, &func.name)?;
                    None
                }
            };
            let response =
                state
                    .gate
                    .host_call(function, HostValue::U64(u64::from(future)), move || {
                        HostValue::Wave(live.expect("computed above"))
                    })?;
            typed(&wave_of(response, &func.name)?)
        }
        READY | BLOCK => {
            let pollable = handle(0);
            let future = state.future_of(pollable, &func.name)?;
            let live = match state.gate.will_run_live() {
                true => {
                    let pending = state.started(&[future], &func.name)?;
                    if func.name == BLOCK {
                        state.wait(&pending)?;
                    }
                    Some(HostValue::U64(u64::from(
                        pending.iter().all(|p| p.is_done()),
                    )))
                }
                false => None,
            };
            let response =
                state
                    .gate
                    .host_call(function, HostValue::U64(u64::from(pollable)), move || {
                        live.expect("computed above")
                    })?;
            match (func.name == READY, response) {
                (true, HostValue::U64(ready)) => typed(if ready == 1 { "true" } else { "false" }),
                (false, HostValue::U64(_)) => Ok(None),
                (_, other) => Err(Failure::Fatal(shape_error(&func.name, &other))),
            }
        }
        POLL => {
            let pollables: Vec<u32> = params
                .first()
                .map(|list| list.unwrap_list().map(|v| v.unwrap_u32()).collect())
                .unwrap_or_default();
            if pollables.is_empty() {
                return Err(Failure::Trap("poll: the list of pollables is empty".into()));
            }
            let futures = pollables
                .iter()
                .map(|p| state.future_of(*p, &func.name))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            let live = match state.gate.will_run_live() {
                true => {
                    let pending = state.started(&futures, &func.name)?;
                    if !pending.iter().any(|p| p.is_done()) {
                        state.wait(&pending)?;
                    }
                    let ready: Vec<String> = pending
                        .iter()
                        .enumerate()
                        .filter(|(_, p)| p.is_done())
                        .map(|(i, _)| i.to_string())
                        .collect();
                    Some(format!("[{}]", ready.join(", ")))
                }
                false => None,
            };
            let request = format!(
                "[{}]",
                pollables
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            let response = state
                .gate
                .host_call(function, HostValue::Wave(request), move || {
                    HostValue::Wave(live.expect("computed above"))
                })?;
            typed(&wave_of(response, &func.name)?)
        }
        other => Err(Failure::Fatal(Error::Engine(format!(
            "{}.{other} is not implemented by this golemw",
            func.module
        )))),
    }
}

impl HostState {
    fn dispatch(&self) -> std::result::Result<Arc<dyn Dispatch>, RpcError> {
        self.rpc_dispatch.clone().ok_or_else(|| {
            RpcError::ProtocolError(
                "worker-to-worker calls are not available to this instance".into(),
            )
        })
    }

    /// The call the guest asked for, keyed by the index its entry gets.
    fn call(
        &self,
        target: std::result::Result<WorkerId, String>,
        function: &str,
        params: Vec<WitValue>,
        request: &str,
    ) -> std::result::Result<Call, RpcError> {
        Ok(Call {
            caller: self.context.id.clone(),
            target: target.map_err(RpcError::NotFound)?,
            function: function.to_string(),
            params,
            idempotency_key: call_key(
                &self.context.id,
                &self.invocation_key,
                self.gate.next_index(),
                request,
            ),
        })
    }

    /// Runs a call and waits for its outcome (live only). A stop request ends the wait with the
    /// error the invocation stops with; nothing is recorded then.
    fn run_and_wait(&self, call: std::result::Result<Call, RpcError>) -> Result<CallResult> {
        let call = match call {
            Ok(call) => call,
            Err(err) => return Ok(Err(err)),
        };
        let dispatch = match self.dispatch() {
            Ok(dispatch) => dispatch,
            Err(err) => return Ok(Err(err)),
        };
        let pending = dispatch.start(call);
        self.wait(std::slice::from_ref(&pending))?;
        Ok(pending.outcome().expect("waited until done"))
    }

    /// Starts an `async-invoke-and-await` call (live only).
    fn start(&self, future: &FutureCall) -> Arc<PendingCall> {
        let failed = |target: WorkerId, err: RpcError| {
            let pending = PendingCall::new(target);
            pending.finish(Err(err));
            pending
        };
        let target = match &future.target {
            Ok(target) => target.clone(),
            Err(err) => return failed(self.context.id.clone(), RpcError::NotFound(err.clone())),
        };
        let running = self
            .rpc
            .futures
            .values()
            .filter(|f| f.pending.as_ref().is_some_and(|p| !p.is_done()))
            .count();
        if running >= FUTURES_MAX {
            return failed(
                target,
                RpcError::Denied(format!(
                    "this worker has {running} calls in flight, the most it may have"
                )),
            );
        }
        match self.dispatch() {
            Ok(dispatch) => dispatch.start(Call {
                caller: self.context.id.clone(),
                target,
                function: future.function.clone(),
                params: future.params.clone(),
                idempotency_key: future.idempotency_key.clone(),
            }),
            Err(err) => failed(target, err),
        }
    }

    /// The calls of `futures`, started if they are not (after a restore, or a recovery that
    /// replayed their start). Live only.
    fn started(
        &mut self,
        futures: &[u32],
        function: &str,
    ) -> std::result::Result<Vec<Arc<PendingCall>>, Failure> {
        let mut out = Vec::with_capacity(futures.len());
        for handle in futures {
            self.check_future(*handle, function)?;
            let future = &self.rpc.futures[handle];
            let pending = match &future.pending {
                Some(pending) => Arc::clone(pending),
                None => {
                    let pending = self.start(future);
                    if let Some(future) = self.rpc.futures.get_mut(handle) {
                        future.pending = Some(Arc::clone(&pending));
                    }
                    pending
                }
            };
            out.push(pending);
        }
        Ok(out)
    }

    fn check_future(&self, future: u32, function: &str) -> std::result::Result<(), Failure> {
        match self.rpc.futures.contains_key(&future) {
            true => Ok(()),
            false => Err(Failure::Trap(format!(
                "{function}: unknown handle {future}"
            ))),
        }
    }

    fn future_of(&self, pollable: u32, function: &str) -> std::result::Result<u32, Failure> {
        let future = *self
            .rpc
            .pollables
            .get(&pollable)
            .ok_or_else(|| Failure::Trap(format!("{function}: unknown handle {pollable}")))?;
        // A future dropped before its pollable: the pollable stays usable, as ready.
        Ok(future)
    }

    /// Blocks until one of `pending` is done, or the invocation is asked to stop.
    fn wait(&self, pending: &[Arc<PendingCall>]) -> Result<()> {
        if pending.iter().any(|p| p.is_done()) {
            return Ok(());
        }
        let Ok(dispatch) = self.dispatch() else {
            return Ok(()); // every call failed at once without a dispatcher
        };
        match dispatch.wait(&self.context.id, pending, self.gate.stop_signal()) {
            Waited::Done => Ok(()),
            Waited::Stopped => Err(self.gate.stop_requested().unwrap_or_else(|| {
                Error::Engine("a wait for a worker-to-worker call was stopped".into())
            })),
        }
    }
}

/// The recorded request of a call: target URI, function and parameters, as WAVE.
fn request_text(uri: &str, function: &str, params: &[WitValue]) -> String {
    let params: Vec<String> = params.iter().map(WitValue::to_wave).collect();
    format!(
        "{}, {}, [{}]",
        wave_string(uri),
        wave_string(function),
        params.join(", ")
    )
}

/// The idempotency key of a call (see the module's documentation): the index, for people
/// reading it, and a hash of everything that identifies the call.
fn call_key(caller: &WorkerId, invocation_key: &str, index: u64, request: &str) -> String {
    let mut hasher = blake3::Hasher::new();
    for part in [
        caller.uri().as_bytes(),
        invocation_key.as_bytes(),
        &index.to_le_bytes(),
        request.as_bytes(),
    ] {
        hasher.update(&(part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    let hash = hasher.finalize().to_hex();
    format!("rpc:{index}:{}", &hash[..32])
}

fn wave_of(response: HostValue, function: &str) -> Result<String> {
    match response {
        HostValue::Wave(text) => Ok(text),
        other => Err(shape_error(function, &other)),
    }
}

fn shape_error(function: &str, value: &HostValue) -> Error {
    Error::Corrupt {
        what: format!("recorded result of {function}"),
        detail: format!("unexpected shape: {value}"),
    }
}
