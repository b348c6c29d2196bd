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
use wasm_wave::wasm::{WasmType, WasmValue};

use super::persistence::remote_side_effect;
use super::{Failure, HostState};
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
    /// Pollables, and what each waits for.
    pollables: BTreeMap<u32, PollSource>,
}

/// What a pollable waits for.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
enum PollSource {
    /// An RPC future (by its handle).
    Future(u32),
    /// Nothing: ready at once (streams, whose reads and writes never block).
    Ready,
    /// The monotonic clock reaching this instant (ns).
    Until(u64),
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
        use crate::stubs::StubFunction;
        let known = match name {
            CLIENT_DROP => self.clients.remove(&handle).is_some(),
            FUTURE_DROP => self.futures.remove(&handle).is_some(),
            POLLABLE_DROP => self.pollables.remove(&handle).is_some(),
            stub => match StubFunction::parse(stub) {
                Some(StubFunction::DropClient) => self.clients.remove(&handle).is_some(),
                Some(StubFunction::DropFuture) => self.futures.remove(&handle).is_some(),
                _ => false,
            },
        };
        match known {
            true => Ok(()),
            false => Err(format!("{name}: unknown handle {handle}")),
        }
    }
}

type Outcome = std::result::Result<Option<Value>, Failure>;

/// One call of a `golem:rpc/types`, `wasi:io/poll` or stub-interface function (drops
/// excepted).
pub(super) fn call(state: &mut HostState, func: &ImportedFunction, params: Vec<Value>) -> Outcome {
    if let Some(target) = crate::stubs::stub_target(&func.module) {
        return stub_call(state, func, &target, params);
    }
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
            let uri = params.first().map(uri_of).unwrap_or_default();
            typed(&state.rpc.open_client(uri).to_string())
        }
        INVOKE_AND_AWAIT | INVOKE | ASYNC_INVOKE => {
            let uri = state.rpc.client(handle(0), &func.name)?;
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
            match func.name.as_str() {
                INVOKE_AND_AWAIT => typed(&state.call_and_wait(function, &uri, &name, values)?),
                INVOKE => typed(&state.enqueue_call(function, &uri, &name, values)?),
                _ => typed(&state.start_call(function, &uri, name, values)?.to_string()),
            }
        }
        SUBSCRIBE => typed(&state.subscribe(handle(0), &func.name)?.to_string()),
        GET => typed(&state.future_result(function, handle(0), &func.name)?),
        READY | BLOCK => {
            let pollable = handle(0);
            let slept = match func.name == BLOCK {
                true => state.sleep_on_timers(&[pollable], &func.name)?,
                false => false,
            };
            let live = match state.gate.will_run_live() {
                true => {
                    let wait = func.name == BLOCK && !slept;
                    let ready = state.ready_after(&[pollable], wait, slept, &func.name)?;
                    Some(HostValue::U64(u64::from(ready[0])))
                }
                false => {
                    state.source_of(pollable, &func.name)?;
                    None
                }
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
            let slept = state.sleep_on_timers(&pollables, &func.name)?;
            let live = match state.gate.will_run_live() {
                true => {
                    let ready = state.ready_after(&pollables, !slept, slept, &func.name)?;
                    let ready: Vec<String> = ready
                        .iter()
                        .enumerate()
                        .filter(|(_, ready)| **ready)
                        .map(|(i, _)| i.to_string())
                        .collect();
                    Some(format!("[{}]", ready.join(", ")))
                }
                false => {
                    for pollable in &pollables {
                        state.source_of(*pollable, &func.name)?;
                    }
                    None
                }
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

/// A function of a stub interface (`crate::stubs`): the same calls as `wasm-rpc`'s, with the
/// callee's own types. A call that fails traps the caller with the `rpc-error` (the stub's
/// functions have no error in their results), as Golem's generated stubs do.
fn stub_call(
    state: &mut HostState,
    func: &ImportedFunction,
    target: &str,
    params: Vec<Value>,
) -> Outcome {
    use crate::stubs::StubFunction;
    let recorded_as = HostFunction::Golem(format!("{}.{}", func.module, func.name));
    // `self` of a method (the constructor's first parameter is the URI).
    let handle = || params.first().map(|v| v.unwrap_u32()).unwrap_or_default();
    let result_type = func.abi.result_type();
    let typed = |text: &str| -> Outcome {
        let ty = result_type
            .ok_or_else(|| Error::Engine(format!("{} has no result type", func.name)))?;
        Ok(Some(parse_wave(ty, text)?))
    };
    // The stub's parameters after `self`, as trees of the callee's types.
    let trees = || -> std::result::Result<Vec<WitValue>, Failure> {
        params
            .iter()
            .zip(func.abi.param_types())
            .skip(1)
            .map(|(value, ty)| {
                WitValue::from_typed(value, ty)
                    .map_err(|e| Failure::Fatal(Error::Engine(format!("{}: {e}", func.name))))
            })
            .collect()
    };
    let failed = |uri: &str, function: &str, err: RpcError| {
        Failure::Trap(format!("calling {function} of {uri}: {err}"))
    };
    let kind = StubFunction::parse(&func.name).ok_or_else(|| {
        Failure::Fatal(Error::Engine(format!(
            "{} is not a stub function",
            func.name
        )))
    })?;
    match kind {
        StubFunction::Client => {
            let uri = params.first().map(uri_of).unwrap_or_default();
            typed(&state.rpc.open_client(uri).to_string())
        }
        StubFunction::Blocking(function) => {
            let uri = state.rpc.client(handle(), &func.name)?;
            let function = format!("{target}.{{{function}}}");
            let text = state.call_and_wait(recorded_as, &uri, &function, trees()?)?;
            let outcome = crate::rpc::parse_call_result(&text).map_err(|e| {
                Failure::Fatal(Error::Corrupt {
                    what: format!("recorded result of {}", func.name),
                    detail: e,
                })
            })?;
            match outcome {
                Ok(results) => Ok(first_result(&results, result_type)
                    .map_err(|e| failed(&uri, &function, RpcError::ProtocolError(e)))?),
                Err(err) => Err(failed(&uri, &function, err)),
            }
        }
        StubFunction::Start(function) => {
            let uri = state.rpc.client(handle(), &func.name)?;
            let function = format!("{target}.{{{function}}}");
            typed(
                &state
                    .start_call(recorded_as, &uri, function, trees()?)?
                    .to_string(),
            )
        }
        StubFunction::Subscribe => typed(&state.subscribe(handle(), &func.name)?.to_string()),
        StubFunction::Get => {
            let handle = handle();
            let text = state.future_result(recorded_as, handle, &func.name)?;
            let ty = result_type
                .ok_or_else(|| Error::Engine(format!("{} has no result type", func.name)))?;
            let done = match text.strip_prefix("some(").and_then(|t| t.strip_suffix(')')) {
                Some(result) => Some(crate::rpc::parse_call_result(result).map_err(|e| {
                    Failure::Fatal(Error::Corrupt {
                        what: format!("recorded result of {}", func.name),
                        detail: e,
                    })
                })?),
                None => None,
            };
            let future = state.rpc.futures.get(&handle);
            let (uri, function) = future
                .map(|f| match &f.target {
                    Ok(id) => (id.uri(), f.function.clone()),
                    Err(uri) => (uri.clone(), f.function.clone()),
                })
                .unwrap_or_default();
            // `get` of a function without a result says whether it is done.
            let value = match (done, ty.option_some_type()) {
                (None, Some(_)) => Value::make_option(ty, None),
                (None, None) => Ok(Value::make_bool(false)),
                (Some(Err(err)), _) => return Err(failed(&uri, &function, err)),
                (Some(Ok(results)), Some(inner)) => {
                    let value = first_result(&results, Some(&inner))
                        .map_err(|e| failed(&uri, &function, RpcError::ProtocolError(e)))?;
                    Value::make_option(ty, value)
                }
                (Some(Ok(_)), None) => Ok(Value::make_bool(true)),
            }
            .map_err(|e| Failure::Fatal(Error::Engine(e.to_string())))?;
            Ok(Some(value))
        }
        StubFunction::DropClient | StubFunction::DropFuture => Err(Failure::Fatal(Error::Engine(
            format!("{} is a destructor, defined on its own", func.name),
        ))),
    }
}

/// The value of a results tuple (`tuple-value([i])`), read as `ty`; `None` for a function
/// without a result.
fn first_result(
    results: &WitValue,
    ty: Option<&wasm_wave::value::Type>,
) -> std::result::Result<Option<Value>, String> {
    let Some(ty) = ty else {
        return Ok(None);
    };
    let tuple = wasm_wave::value::Type::tuple(vec![ty.clone()]).ok_or("no tuple type")?;
    let value = results.to_typed(&tuple)?;
    let first = value.unwrap_tuple().next().map(|v| v.into_owned());
    Ok(first)
}

/// A pollable's source as a wait sees it.
enum Source {
    Call(Arc<PendingCall>),
    Ready,
    Until(u64),
}

impl RpcHandles {
    /// A pollable that is ready at once (a stream's).
    pub fn ready_pollable(&mut self) -> u32 {
        let pollable = self.next();
        self.pollables.insert(pollable, PollSource::Ready);
        pollable
    }

    /// A pollable ready once the monotonic clock reaches `instant` (ns).
    pub fn timer_pollable(&mut self, instant: u64) -> u32 {
        let pollable = self.next();
        self.pollables.insert(pollable, PollSource::Until(instant));
        pollable
    }

    /// A new client for the worker at `uri` (checked when it is used).
    fn open_client(&mut self, uri: String) -> u32 {
        let client = self.next();
        self.clients.insert(client, uri);
        client
    }

    /// The URI of a client.
    fn client(&self, client: u32, function: &str) -> std::result::Result<String, Failure> {
        self.clients
            .get(&client)
            .cloned()
            .ok_or_else(|| Failure::Trap(format!("{function}: unknown handle {client}")))
    }
}

/// The string of a WIT `uri` record value.
fn uri_of(value: &Value) -> String {
    value
        .unwrap_record()
        .next()
        .map(|(_, s)| s.unwrap_string().into_owned())
        .unwrap_or_default()
}

impl HostState {
    /// `invoke-and-await`: calls `function` of the worker at `uri`, waits, and returns the WAVE
    /// of its `result<wit-value, rpc-error>` (recorded; replayed without calling).
    fn call_and_wait(
        &mut self,
        recorded_as: HostFunction,
        uri: &str,
        function: &str,
        params: Vec<WitValue>,
    ) -> Result<String> {
        let request = request_text(uri, function, &params);
        let target = self.resolve(uri);
        remote_side_effect(self, |state| {
            let call = state.call(target, function, params, &request);
            let live = match state.gate.will_run_live() {
                true => Some(state.run_and_wait(call)?),
                false => None,
            };
            let response =
                state
                    .gate
                    .host_call(recorded_as, HostValue::Wave(request), move || {
                        HostValue::Wave(result_wave(&live.expect("run above")))
                    })?;
            wave_of(response, "invoke-and-await")
        })
    }

    /// `invoke`: queues the call at its callee; the WAVE of its `result<_, rpc-error>`.
    fn enqueue_call(
        &mut self,
        recorded_as: HostFunction,
        uri: &str,
        function: &str,
        params: Vec<WitValue>,
    ) -> Result<String> {
        let request = request_text(uri, function, &params);
        let target = self.resolve(uri);
        remote_side_effect(self, |state| {
            let call = state.call(target, function, params, &request);
            let live = match state.gate.will_run_live() {
                true => Some(match call {
                    Ok(call) => state.dispatch().and_then(|d| d.enqueue(call)),
                    Err(err) => Err(err),
                }),
                false => None,
            };
            let response =
                state
                    .gate
                    .host_call(recorded_as, HostValue::Wave(request), move || {
                        HostValue::Wave(match live.expect("run above") {
                            Ok(()) => "ok".into(),
                            Err(err) => format!("err({})", err.to_wave()),
                        })
                    })?;
            wave_of(response, "invoke")
        })
    }

    /// `async-invoke-and-await`: starts the call (live) and returns its future's handle.
    fn start_call(
        &mut self,
        recorded_as: HostFunction,
        uri: &str,
        function: String,
        params: Vec<WitValue>,
    ) -> Result<u32> {
        let request = request_text(uri, &function, &params);
        let future = self.rpc.next();
        let index = remote_side_effect(self, |state| {
            let index = state.gate.next_index();
            let response =
                state
                    .gate
                    .host_call(recorded_as, HostValue::Wave(request.clone()), || {
                        HostValue::U64(u64::from(future))
                    })?;
            if response != HostValue::U64(u64::from(future)) {
                return Err(Error::Corrupt {
                    what: "recorded result of async-invoke-and-await".into(),
                    detail: format!("handle {response}, expected {future}"),
                });
            }
            Ok(index)
        })?;
        let mut call = FutureCall {
            target: self.resolve(uri).map_err(|e| e.to_string()),
            function,
            params,
            idempotency_key: call_key(
                self.context.id_at(index),
                &self.invocation_key,
                index,
                &request,
            ),
            pending: None,
        };
        if self.gate.will_run_live() {
            call.pending = Some(self.start(&call));
        }
        self.rpc.futures.insert(future, call);
        Ok(future)
    }

    /// `subscribe`: a pollable for a future.
    fn subscribe(&mut self, future: u32, function: &str) -> std::result::Result<u32, Failure> {
        self.check_future(future, function)?;
        let pollable = self.rpc.next();
        self.rpc
            .pollables
            .insert(pollable, PollSource::Future(future));
        Ok(pollable)
    }

    /// `get`: the WAVE of the future's `option<result<wit-value, rpc-error>>` (recorded).
    fn future_result(
        &mut self,
        recorded_as: HostFunction,
        future: u32,
        function: &str,
    ) -> std::result::Result<String, Failure> {
        let live = match self.gate.will_run_live() {
            true => Some(match self.started(&[future], function)?.first() {
                Some(pending) => match pending.outcome() {
                    Some(outcome) => format!("some({})", result_wave(&outcome)),
                    None => "none".into(),
                },
                None => "none".into(),
            }),
            false => {
                self.check_future(future, function)?;
                None
            }
        };
        let response =
            self.gate
                .host_call(recorded_as, HostValue::U64(u64::from(future)), move || {
                    HostValue::Wave(live.expect("computed above"))
                })?;
        Ok(wave_of(response, function)?)
    }

    /// The worker a URI names (see [`Dispatch::resolve`]).
    fn resolve(&self, uri: &str) -> std::result::Result<WorkerId, RpcError> {
        match &self.rpc_dispatch {
            Some(dispatch) => dispatch.resolve(uri),
            None => WorkerId::from_uri(uri).map_err(RpcError::NotFound),
        }
    }

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
        target: std::result::Result<WorkerId, RpcError>,
        function: &str,
        params: Vec<WitValue>,
        request: &str,
    ) -> std::result::Result<Call, RpcError> {
        Ok(Call {
            caller: self.context.id.clone(),
            target: target?,
            function: function.to_string(),
            params,
            idempotency_key: call_key(
                self.context.id_at(self.gate.next_index()),
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
        self.wait(std::slice::from_ref(&pending), None)?;
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

    fn source_of(&self, pollable: u32, function: &str) -> std::result::Result<PollSource, Failure> {
        self.rpc
            .pollables
            .get(&pollable)
            .copied()
            .ok_or_else(|| Failure::Trap(format!("{function}: unknown handle {pollable}")))
    }

    /// A wait on timers alone as long as a durable sleep suspends the worker, as preview 1's
    /// `poll_oneoff` does (`host::wasi`): the due time is recorded (`golemw:sleep-until`), the
    /// guest unwound, and the worker brought back at that time; the replay that brings it back
    /// finds the due time here and waits only what is left (by the wall clock: the monotonic
    /// instants of the timers belong to the process that made them). Returns whether it waited.
    fn sleep_on_timers(
        &mut self,
        pollables: &[u32],
        function: &str,
    ) -> std::result::Result<bool, Failure> {
        let mut earliest: Option<u64> = None;
        for pollable in pollables {
            match self.source_of(*pollable, function)? {
                PollSource::Until(instant) => {
                    earliest = Some(earliest.map_or(instant, |e| e.min(instant)))
                }
                // A call or a stream can end the wait at any time: not a sleep.
                _ => return Ok(false),
            }
        }
        let Some(instant) = earliest else {
            return Ok(false);
        };
        let wait =
            std::time::Duration::from_nanos(instant.saturating_sub(super::wasi::monotonic_ns()));
        let min = self.durable_sleep_min;
        let long = |wait| min.is_some_and(|min| crate::sleeps::suspends(wait, min));
        let sleep_until = HostFunction::SleepUntil;
        let recorded = self.gate.replaying(&sleep_until)?;
        let live = self.gate.mode() == crate::gate::Mode::Live;
        let suspends = live && long(wait) && !self.gate.persist_nothing();
        if !recorded && !suspends {
            return Ok(false);
        }
        let due = move || HostValue::U64(crate::oplog::now_ms() + wait.as_millis() as u64);
        // The request is the timers' deadline on the guest's monotonic clock (the same in
        // replay); what is left of it now is not.
        let due_ms = match self
            .gate
            .host_call(sleep_until, HostValue::U64(instant), due)?
        {
            HostValue::U64(due_ms) => due_ms,
            other => return Err(Failure::Fatal(shape_error("golemw:sleep-until", &other))),
        };
        if self.gate.mode() != crate::gate::Mode::Live {
            // The wait's own entry follows: replay answers it.
            return Ok(false);
        }
        let left = std::time::Duration::from_millis(due_ms.saturating_sub(crate::oplog::now_ms()));
        if long(left) {
            return Err(Failure::Unwind(crate::outcome::Unwind::Sleep {
                until_ms: due_ms,
            }));
        }
        let until = Some(std::time::Instant::now() + left);
        match crate::rpc::sleep_until(until, self.gate.stop_signal()) {
            Waited::Done => Ok(true),
            Waited::Stopped => {
                Err(Failure::Fatal(self.gate.stop_requested().unwrap_or_else(
                    || Error::Engine("a durable sleep was stopped".into()),
                )))
            }
        }
    }

    /// [`HostState::ready`]; after a durable sleep (`slept`) the earliest timers are ready
    /// whatever this process's monotonic clock says.
    fn ready_after(
        &mut self,
        pollables: &[u32],
        wait: bool,
        slept: bool,
        function: &str,
    ) -> std::result::Result<Vec<bool>, Failure> {
        let mut ready = self.ready(pollables, wait, function)?;
        if slept && !ready.iter().any(|r| *r) {
            let instants: Vec<Option<u64>> = pollables
                .iter()
                .map(|p| match self.source_of(*p, function) {
                    Ok(PollSource::Until(instant)) => Some(instant),
                    _ => None,
                })
                .collect();
            let earliest = instants.iter().flatten().min().copied();
            for (ready, instant) in ready.iter_mut().zip(instants) {
                *ready = instant.is_some() && instant == earliest;
            }
        }
        Ok(ready)
    }

    /// Which of `pollables` are ready (live); with `wait`, first waits until one is (or the
    /// invocation is asked to stop). Futures not started are started.
    fn ready(
        &mut self,
        pollables: &[u32],
        wait: bool,
        function: &str,
    ) -> std::result::Result<Vec<bool>, Failure> {
        let mut sources = Vec::with_capacity(pollables.len());
        for pollable in pollables {
            sources.push(match self.source_of(*pollable, function)? {
                // A future dropped before its pollable: nothing left to wait for.
                PollSource::Future(future) if !self.rpc.futures.contains_key(&future) => {
                    Source::Ready
                }
                PollSource::Future(future) => {
                    Source::Call(self.started(&[future], function)?.remove(0))
                }
                PollSource::Ready => Source::Ready,
                PollSource::Until(instant) => Source::Until(instant),
            });
        }
        let now = || super::wasi::monotonic_ns();
        let is_ready = |source: &Source| match source {
            Source::Call(pending) => pending.is_done(),
            Source::Ready => true,
            Source::Until(instant) => now() >= *instant,
        };
        if wait && !sources.iter().any(is_ready) {
            let calls: Vec<Arc<PendingCall>> = sources
                .iter()
                .filter_map(|s| match s {
                    Source::Call(pending) => Some(Arc::clone(pending)),
                    _ => None,
                })
                .collect();
            let until = sources
                .iter()
                .filter_map(|s| match s {
                    Source::Until(instant) => Some(*instant),
                    _ => None,
                })
                .min()
                .map(|instant| {
                    std::time::Instant::now()
                        + std::time::Duration::from_nanos(instant.saturating_sub(now()))
                });
            self.wait(&calls, until)?;
        }
        Ok(sources.iter().map(is_ready).collect())
    }

    /// Blocks until one of `pending` is done or `until` passes, or the invocation is asked to
    /// stop.
    fn wait(&self, pending: &[Arc<PendingCall>], until: Option<std::time::Instant>) -> Result<()> {
        if pending.iter().any(|p| p.is_done()) {
            return Ok(());
        }
        let waited = match self.dispatch() {
            Ok(dispatch) => {
                dispatch.wait(&self.context.id, pending, self.gate.stop_signal(), until)
            }
            // Without a dispatcher every call failed at once; only a timer can be waited for.
            Err(_) => crate::rpc::sleep_until(until, self.gate.stop_signal()),
        };
        match waited {
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
