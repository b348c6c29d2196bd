//! Worker-to-worker calls (`golem:rpc`): what a call is, how it can fail, and the handle its
//! caller waits on. The functions a guest calls are in `host::rpc`; finding the target, running
//! the call there and noticing calls that would wait on themselves is the executor's
//! (`executor::rpc`), reached through [`Dispatch`] so that host functions need not know it.

use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread::Thread;

use crate::ids::WorkerId;
use crate::stop::StopSignal;
use crate::wit_value::WitValue;
use wasm_wave::value::{Type, Value};
use wasm_wave::wasm::WasmValue;

/// One call of an exported function of another worker.
#[derive(Clone, Debug)]
pub struct Call {
    pub caller: WorkerId,
    pub target: WorkerId,
    /// The function as users name it (`ns:pkg/iface.{f}`).
    pub function: String,
    /// One value per parameter.
    pub params: Vec<WitValue>,
    /// Derived from the caller and the oplog index of the call: a caller recovering after a
    /// crash sends the same key again, and the callee answers it with the stored result.
    pub idempotency_key: String,
}

/// How a call failed (WIT `rpc-error`). None of these traps the caller: the guest decides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RpcError {
    /// The parameters do not fit the function, or the call could not be carried out.
    ProtocolError(String),
    /// The call is refused (it would wait on itself; too many calls in flight).
    Denied(String),
    /// No such component, worker or function.
    NotFound(String),
    /// The callee trapped after its retries, or is failed or exited.
    RemoteInternalError(String),
}

impl RpcError {
    /// WAVE of the WIT `rpc-error` value.
    pub fn to_wave(&self) -> String {
        let (case, message) = match self {
            RpcError::ProtocolError(m) => ("protocol-error", m),
            RpcError::Denied(m) => ("denied", m),
            RpcError::NotFound(m) => ("not-found", m),
            RpcError::RemoteInternalError(m) => ("remote-internal-error", m),
        };
        format!("{case}({})", crate::abi::wave_string(message))
    }
}

impl std::fmt::Display for RpcError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RpcError::ProtocolError(m) => write!(f, "protocol error: {m}"),
            RpcError::Denied(m) => write!(f, "denied: {m}"),
            RpcError::NotFound(m) => write!(f, "not found: {m}"),
            RpcError::RemoteInternalError(m) => write!(f, "remote internal error: {m}"),
        }
    }
}

/// The outcome of a call: the tuple of the function's results, or why it failed.
pub type CallResult = Result<WitValue, RpcError>;

/// WAVE of the WIT `result<wit-value, rpc-error>`.
pub fn result_wave(result: &CallResult) -> String {
    match result {
        Ok(value) => format!("ok({})", value.to_wave()),
        Err(err) => format!("err({})", err.to_wave()),
    }
}

/// The wasm-wave type of WIT `result<wit-value, rpc-error>`, for reading back what was
/// recorded of a call.
pub fn call_result_type() -> &'static Type {
    static TYPE: OnceLock<Type> = OnceLock::new();
    TYPE.get_or_init(|| {
        let index = Type::S32;
        let indexes = Type::list(Type::S32);
        let uri = Type::record([("value", Type::STRING)]).expect("a record type");
        let node = Type::variant([
            ("record-value", Some(indexes.clone())),
            (
                "variant-value",
                Some(Type::tuple(vec![Type::U32, Type::option(index.clone())]).expect("a tuple")),
            ),
            ("enum-value", Some(Type::U32)),
            ("flags-value", Some(Type::list(Type::BOOL))),
            ("tuple-value", Some(indexes.clone())),
            ("list-value", Some(indexes)),
            ("option-value", Some(Type::option(index.clone()))),
            (
                "result-value",
                Some(Type::result(
                    Some(Type::option(index.clone())),
                    Some(Type::option(index)),
                )),
            ),
            ("prim-u8", Some(Type::U8)),
            ("prim-u16", Some(Type::U16)),
            ("prim-u32", Some(Type::U32)),
            ("prim-u64", Some(Type::U64)),
            ("prim-s8", Some(Type::S8)),
            ("prim-s16", Some(Type::S16)),
            ("prim-s32", Some(Type::S32)),
            ("prim-s64", Some(Type::S64)),
            ("prim-float32", Some(Type::F32)),
            ("prim-float64", Some(Type::F64)),
            ("prim-char", Some(Type::CHAR)),
            ("prim-bool", Some(Type::BOOL)),
            ("prim-string", Some(Type::STRING)),
            (
                "handle",
                Some(Type::tuple(vec![uri, Type::U64]).expect("a tuple")),
            ),
        ])
        .expect("a variant type");
        let wit_value = Type::record([("nodes", Type::list(node))]).expect("a record type");
        let rpc_error = Type::variant([
            ("protocol-error", Some(Type::STRING)),
            ("denied", Some(Type::STRING)),
            ("not-found", Some(Type::STRING)),
            ("remote-internal-error", Some(Type::STRING)),
        ])
        .expect("a variant type");
        Type::result(Some(wit_value), Some(rpc_error))
    })
}

/// Reads the WAVE of a `result<wit-value, rpc-error>` (as [`result_wave`] writes it).
pub fn parse_call_result(text: &str) -> Result<CallResult, String> {
    let value = crate::abi::parse_wave(call_result_type(), text).map_err(|e| e.to_string())?;
    call_result_of(&value)
}

/// A `result<wit-value, rpc-error>` value as a [`CallResult`].
pub fn call_result_of(value: &Value) -> Result<CallResult, String> {
    Ok(match value.unwrap_result() {
        Ok(Some(tree)) => Ok(WitValue::from_lifted(&tree)?),
        Err(Some(err)) => {
            let (case, message) = err.unwrap_variant();
            let message = message
                .map(|m| m.unwrap_string().into_owned())
                .unwrap_or_default();
            Err(match case.as_ref() {
                "protocol-error" => RpcError::ProtocolError(message),
                "denied" => RpcError::Denied(message),
                "not-found" => RpcError::NotFound(message),
                _ => RpcError::RemoteInternalError(message),
            })
        }
        _ => return Err("a call result without its payload".into()),
    })
}

/// What the executor does for host functions that reach other workers.
pub trait Dispatch: Send + Sync {
    /// The worker a URI names: `urn:worker:<component>/<worker name>`, the component by UUID
    /// (as Golem writes it) or by name.
    fn resolve(&self, uri: &str) -> Result<WorkerId, RpcError>;
    /// Starts `call` (on a thread of its own) and returns the handle its outcome arrives on.
    fn start(&self, call: Call) -> Arc<PendingCall>;
    /// Queues `call` at its target, durably, without waiting for it to run.
    fn enqueue(&self, call: Call) -> Result<(), RpcError>;
    /// Blocks the caller until one of `calls` is done or `until` passes, or the caller's
    /// invocation is asked to stop (the stop signal says why). If waiting would close a cycle of workers waiting on
    /// each other, a call of the cycle that has not started fails instead.
    fn wait(
        &self,
        caller: &WorkerId,
        calls: &[Arc<PendingCall>],
        stop: Option<&StopSignal>,
        until: Option<std::time::Instant>,
    ) -> Waited;
}

/// How often a wait looks at its stop signal (an interrupt or its deadline); calls finishing
/// wake it at once.
pub const STOP_CHECK: std::time::Duration = std::time::Duration::from_millis(20);

/// Sleeps until `until` (at once if `None`), or until the invocation is asked to stop.
pub fn sleep_until(until: Option<std::time::Instant>, stop: Option<&StopSignal>) -> Waited {
    let Some(until) = until else {
        return Waited::Done;
    };
    loop {
        if stop.is_some_and(|s| s.reason().is_some()) {
            return Waited::Stopped;
        }
        let now = std::time::Instant::now();
        if now >= until {
            return Waited::Done;
        }
        std::thread::sleep((until - now).min(STOP_CHECK));
    }
}

/// How a wait for calls ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Waited {
    /// One of the calls is done.
    Done,
    /// The waiting invocation was asked to stop.
    Stopped,
}

/// A call in flight.
pub struct PendingCall {
    pub target: WorkerId,
    state: Mutex<PendingState>,
}

#[derive(Default)]
struct PendingState {
    outcome: Option<CallResult>,
    /// The call holds its target's turn: it runs (and can no longer be withdrawn).
    started: bool,
    /// Withdrawn before it started; the thread running it gives up its place in line.
    cancelled: bool,
    /// Threads to wake when it is done or withdrawn (waiting callers, the thread running it).
    watchers: Vec<Thread>,
}

impl PendingCall {
    pub fn new(target: WorkerId) -> Arc<Self> {
        Arc::new(PendingCall {
            target,
            state: Mutex::new(PendingState::default()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, PendingState> {
        self.state.lock().expect("pending call poisoned")
    }

    /// The outcome, once there is one.
    pub fn outcome(&self) -> Option<CallResult> {
        self.lock().outcome.clone()
    }

    pub fn is_done(&self) -> bool {
        self.lock().outcome.is_some()
    }

    pub fn is_cancelled(&self) -> bool {
        self.lock().cancelled
    }

    /// Whether it started and is not done (a cycle through it is a real one).
    pub fn is_running(&self) -> bool {
        let state = self.lock();
        state.started && state.outcome.is_none()
    }

    /// Wakes `thread` when the call is done (or now, if it is).
    pub fn watch(&self, thread: Thread) {
        let mut state = self.lock();
        if state.outcome.is_some() || state.cancelled {
            thread.unpark();
        }
        state.watchers.push(thread);
    }

    /// Sets the outcome (the first one set stays) and wakes the watchers.
    pub fn finish(&self, outcome: CallResult) {
        let mut state = self.lock();
        if state.outcome.is_none() {
            state.outcome = Some(outcome);
        }
        for thread in state.watchers.drain(..) {
            thread.unpark();
        }
    }

    /// The call takes its target's turn: from now on it runs to the end. `false` if it was
    /// withdrawn first.
    pub fn begin(&self) -> bool {
        let mut state = self.lock();
        if state.cancelled {
            return false;
        }
        state.started = true;
        true
    }

    /// Withdraws a call that has not started, failing it with `err`. `false` if it had.
    pub fn cancel(&self, err: RpcError) -> bool {
        let mut state = self.lock();
        if state.started || state.outcome.is_some() {
            return false;
        }
        state.cancelled = true;
        state.outcome = Some(Err(err));
        for thread in state.watchers.drain(..) {
            thread.unpark();
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> WorkerId {
        WorkerId {
            component_id: crate::ids::ComponentId(uuid::Uuid::nil()),
            worker_name: "w".into(),
        }
    }

    #[test]
    fn a_started_call_cannot_be_withdrawn_and_a_withdrawn_one_cannot_start() {
        let started = PendingCall::new(target());
        assert!(started.begin());
        assert!(!started.cancel(RpcError::Denied("x".into())));
        assert!(started.is_running());
        started.finish(Ok(WitValue::default()));
        assert!(started.is_done() && !started.is_running());

        let withdrawn = PendingCall::new(target());
        assert!(withdrawn.cancel(RpcError::Denied("cycle".into())));
        assert!(!withdrawn.begin());
        // The first outcome stays.
        withdrawn.finish(Ok(WitValue::default()));
        assert_eq!(
            withdrawn.outcome(),
            Some(Err(RpcError::Denied("cycle".into())))
        );
    }

    #[test]
    fn recorded_results_read_back() {
        for result in [
            Ok(WitValue {
                nodes: vec![
                    crate::wit_value::Node::Tuple(vec![1]),
                    crate::wit_value::Node::String("a\"b".into()),
                ],
            }),
            Err(RpcError::RemoteInternalError("boom".into())),
            Err(RpcError::Denied("cycle".into())),
        ] {
            assert_eq!(parse_call_result(&result_wave(&result)).unwrap(), result);
        }
    }

    #[test]
    fn errors_are_written_as_the_wit_variant() {
        assert_eq!(
            RpcError::NotFound("no \"f\"".into()).to_wave(),
            "not-found(\"no \\\"f\\\"\")"
        );
        assert_eq!(
            result_wave(&Err(RpcError::Denied("d".into()))),
            "err(denied(\"d\"))"
        );
    }
}
