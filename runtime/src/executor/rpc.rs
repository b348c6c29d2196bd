//! The executor's side of worker-to-worker calls (`golem:rpc`): where a target worker is, how a
//! call runs there, and the graph of workers waiting on each other's calls.
//!
//! **Where.** [`Executor::resolve_target`] is the one place that turns a call's target into the
//! worker that runs it; today every target is in this data directory. Workers on other nodes
//! are reached by teaching it (and [`Dispatcher::start`]) about them.
//!
//! **How.** Each call runs on a thread of its own (a caller waiting for it holds its own thread
//! and its worker's turn, nothing more): it checks the function and converts the parameters
//! against the callee's types, takes the callee's turn like any invocation, and invokes under
//! the call's idempotency key, so a key sent again (the caller recovered) is answered from the
//! callee's stored result. A callee that sleeps, suspends or is queued behind a sleeping
//! invocation is waited for, as the HTTP API waits for it.
//!
//! **Waiting on oneself.** A worker's turn is held for its whole invocation, also while it waits
//! for a call. If the callee (or a worker it calls in turn) needs the caller's turn, nobody can
//! go on. Every wait is recorded here (worker -> the calls its invocation waits for); the wait
//! that closes a cycle finds it, and one call of the cycle that has not started yet (there is
//! always one: a worker that waits is busy, so a call to it waits for its turn) fails with
//! `denied`, naming the cycle. Its caller gets the error and goes on; the cycle is broken.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, Weak};
use std::time::Duration;

use super::{Executor, InvocationOutcome};
use crate::abi::{parse_wave, to_wave};
use crate::component::ExportedFunction;
use crate::error::{Error, Result};
use crate::ids::WorkerId;
use crate::outcome::{Deferred, Invoked};
use crate::rpc::{Call, CallResult, Dispatch, PendingCall, RpcError, Waited, STOP_CHECK};
use crate::stop::StopSignal;
use crate::wit_value::WitValue;

/// Calls running at once in this process at most (each holds a thread while it runs or waits
/// for its callee's turn). Past it a call fails with `denied` at once.
pub const CALLS_IN_FLIGHT_MAX: usize = 4096;

/// The executor's state for calls between its workers.
#[derive(Default)]
pub(super) struct Calls {
    /// Workers whose invocation waits, and the calls it waits for.
    waiting: Mutex<HashMap<WorkerId, Vec<Arc<PendingCall>>>>,
    /// Calls with a thread now.
    in_flight: AtomicUsize,
    /// The threads calls run on.
    threads: Arc<CallThreads>,
}

/// A call's work on its thread.
type Job = Box<dyn FnOnce() + Send>;

/// Threads for calls, kept a while after their call for the next one (starting a thread per
/// call cost more than the rest of a call's hop).
#[derive(Default)]
struct CallThreads {
    /// Idle threads, by id, and how to hand each its next job.
    idle: Mutex<Vec<(u64, mpsc::Sender<Job>)>>,
    next_id: AtomicUsize,
}

/// How long a call thread waits for another call before it ends.
const THREAD_IDLE: Duration = Duration::from_secs(10);

impl CallThreads {
    /// Runs `job` on an idle thread, or a new one.
    fn run(self: &Arc<Self>, mut job: Job) -> std::io::Result<()> {
        loop {
            let idle = self.idle.lock().expect("call threads poisoned").pop();
            match idle {
                // A thread that gave up waiting just now drops its receiver: try another.
                Some((_, sender)) => match sender.send(job) {
                    Ok(()) => return Ok(()),
                    Err(mpsc::SendError(back)) => job = back,
                },
                None => break,
            }
        }
        let threads = Arc::clone(self);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) as u64;
        std::thread::Builder::new()
            .name("golemw-rpc".into())
            .spawn(move || {
                let mut job = job;
                loop {
                    job();
                    let (sender, receiver) = mpsc::channel();
                    threads
                        .idle
                        .lock()
                        .expect("call threads poisoned")
                        .push((id, sender));
                    job = match receiver.recv_timeout(THREAD_IDLE) {
                        Ok(next) => next,
                        Err(_) => {
                            let mut idle = threads.idle.lock().expect("call threads poisoned");
                            match idle.iter().position(|(i, _)| *i == id) {
                                Some(at) => {
                                    idle.remove(at);
                                    return;
                                }
                                // Taken by a caller that is about to send: take the job.
                                None => {
                                    drop(idle);
                                    match receiver.recv() {
                                        Ok(next) => next,
                                        Err(_) => return,
                                    }
                                }
                            }
                        }
                    };
                }
            })
            .map(|_| ())
    }
}

/// What host functions are given to reach other workers: the executor, held weakly (a worker
/// does not keep its executor alive).
pub(super) struct Dispatcher {
    pub(super) executor: Weak<Executor>,
}

impl Dispatch for Dispatcher {
    fn resolve(&self, uri: &str) -> std::result::Result<WorkerId, RpcError> {
        let executor = self
            .executor
            .upgrade()
            .ok_or_else(|| RpcError::ProtocolError("the executor is shutting down".into()))?;
        executor.resolve_uri(uri)
    }

    fn start(&self, call: Call) -> Arc<PendingCall> {
        let pending = PendingCall::new(call.target.clone());
        let Some(executor) = self.executor.upgrade() else {
            pending.finish(Err(RpcError::ProtocolError(
                "the executor is shutting down".into(),
            )));
            return pending;
        };
        let in_flight = &executor.calls.in_flight;
        if in_flight.fetch_add(1, Ordering::SeqCst) >= CALLS_IN_FLIGHT_MAX {
            in_flight.fetch_sub(1, Ordering::SeqCst);
            pending.finish(Err(RpcError::Denied(format!(
                "{CALLS_IN_FLIGHT_MAX} worker-to-worker calls are in flight already"
            ))));
            return pending;
        }
        let running = Arc::clone(&pending);
        let threads = Arc::clone(&executor.calls.threads);
        let spawned = threads.run(Box::new(move || {
            let outcome = executor.run_call(&call, &running);
            executor.calls.in_flight.fetch_sub(1, Ordering::SeqCst);
            // Let go of the executor before the caller hears: one that drops its last
            // reference after the call closes it at once, not when this thread is next used.
            drop(executor);
            if let Some(outcome) = outcome {
                running.finish(outcome);
            }
        }));
        if let Err(err) = spawned {
            pending.finish(Err(RpcError::Denied(format!(
                "no thread for the call: {err}"
            ))));
            if let Some(executor) = self.executor.upgrade() {
                executor.calls.in_flight.fetch_sub(1, Ordering::SeqCst);
            }
        }
        pending
    }

    fn enqueue(&self, call: Call) -> std::result::Result<(), RpcError> {
        let executor = self
            .executor
            .upgrade()
            .ok_or_else(|| RpcError::ProtocolError("the executor is shutting down".into()))?;
        let (export, params) = executor.prepare_call(&call)?;
        executor
            .enqueue(
                &call.target,
                &export.display_name,
                &params,
                Some(&call.idempotency_key),
            )
            .map(|_| ())
            .map_err(rpc_error)
    }

    fn wait(
        &self,
        caller: &WorkerId,
        calls: &[Arc<PendingCall>],
        stop: Option<&StopSignal>,
        until: Option<std::time::Instant>,
    ) -> Waited {
        let Some(executor) = self.executor.upgrade() else {
            // Every call fails at once without an executor; only a timer is left to wait for.
            return crate::rpc::sleep_until(until, stop);
        };
        executor.calls.wait(caller, calls, stop, until)
    }
}

impl Calls {
    /// See [`Dispatch::wait`].
    fn wait(
        &self,
        caller: &WorkerId,
        calls: &[Arc<PendingCall>],
        stop: Option<&StopSignal>,
        until: Option<std::time::Instant>,
    ) -> Waited {
        let me = std::thread::current();
        for call in calls {
            call.watch(me.clone());
        }
        {
            let mut waiting = self.waiting.lock().expect("call graph poisoned");
            waiting.insert(caller.clone(), calls.to_vec());
            if let Some(cycle) = cycle_through(&waiting, caller) {
                let chain = describe(caller, &cycle);
                match cycle.iter().find(|c| !c.is_running() && !c.is_done()) {
                    Some(victim) => {
                        tracing::info!(%chain, "a call would wait for itself; refused");
                        victim.cancel(RpcError::Denied(format!(
                            "the call would wait for itself: {chain} (each holds its turn \
                             until the call it waits for returns)"
                        )));
                    }
                    None => tracing::error!(%chain, "workers wait in a cycle of running calls"),
                }
            }
        }
        let outcome = loop {
            if calls.iter().any(|c| c.is_done()) {
                break Waited::Done;
            }
            if stop.is_some_and(|s| s.reason().is_some()) {
                break Waited::Stopped;
            }
            let now = std::time::Instant::now();
            if until.is_some_and(|until| now >= until) {
                break Waited::Done;
            }
            let nap = until.map_or(STOP_CHECK, |until| (until - now).min(STOP_CHECK));
            std::thread::park_timeout(nap);
        };
        self.waiting
            .lock()
            .expect("call graph poisoned")
            .remove(caller);
        outcome
    }
}

/// The calls of a cycle of waits from `from` back to it, if there is one (depth first).
fn cycle_through(
    waiting: &HashMap<WorkerId, Vec<Arc<PendingCall>>>,
    from: &WorkerId,
) -> Option<Vec<Arc<PendingCall>>> {
    fn visit(
        waiting: &HashMap<WorkerId, Vec<Arc<PendingCall>>>,
        at: &WorkerId,
        from: &WorkerId,
        seen: &mut HashSet<WorkerId>,
        path: &mut Vec<Arc<PendingCall>>,
    ) -> bool {
        for call in waiting.get(at).into_iter().flatten() {
            if call.is_done() {
                continue;
            }
            path.push(Arc::clone(call));
            if call.target == *from {
                return true;
            }
            if seen.insert(call.target.clone()) && visit(waiting, &call.target, from, seen, path) {
                return true;
            }
            path.pop();
        }
        false
    }
    let mut path = Vec::new();
    visit(waiting, from, from, &mut HashSet::new(), &mut path).then_some(path)
}

/// `a -> b -> a`, by worker name.
fn describe(from: &WorkerId, cycle: &[Arc<PendingCall>]) -> String {
    std::iter::once(from)
        .chain(cycle.iter().map(|c| &c.target))
        .map(|w| w.worker_name.as_str())
        .collect::<Vec<_>>()
        .join(" -> ")
}

impl Executor {
    /// The worker a URI names: the component by UUID, or by name (resolved here, once).
    fn resolve_uri(&self, uri: &str) -> std::result::Result<WorkerId, RpcError> {
        let by_uuid = WorkerId::from_uri(uri);
        if by_uuid.is_ok() {
            return by_uuid.map_err(RpcError::NotFound);
        }
        let Some((component, rest)) = uri
            .strip_prefix("urn:worker:")
            .and_then(|rest| rest.split_once('/'))
        else {
            return by_uuid.map_err(RpcError::NotFound);
        };
        match self.components.resolve_id(component) {
            Ok(id) => {
                WorkerId::from_uri(&format!("urn:worker:{id}/{rest}")).map_err(RpcError::NotFound)
            }
            Err(_) => Err(RpcError::NotFound(format!(
                "no component {component:?} (by name or UUID) for {uri:?}"
            ))),
        }
    }

    /// The worker that runs calls to `target`, and the component version it runs (the latest,
    /// for a worker the call will create). The one place targets are resolved.
    fn resolve_target(
        &self,
        target: &WorkerId,
    ) -> std::result::Result<crate::ids::ComponentVersion, RpcError> {
        match self.worker_record(target) {
            Ok(record) => Ok(record.component_version),
            Err(Error::UnknownWorker(_)) => self
                .components
                .latest_of(&target.component_id)
                .map(|c| c.version)
                .map_err(|err| match err {
                    Error::UnknownComponent(_) => RpcError::NotFound(format!(
                        "no component {} (in {})",
                        target.component_id,
                        target.uri()
                    )),
                    err => rpc_error(err),
                }),
            Err(err) => Err(rpc_error(err)),
        }
    }

    /// The callee's export and the call's parameters as WAVE, checked against its types.
    fn prepare_call(
        &self,
        call: &Call,
    ) -> std::result::Result<(Arc<ExportedFunction>, Vec<String>), RpcError> {
        let version = self.resolve_target(&call.target)?;
        let (_, interface) = self
            .module(call.target.component_id, version)
            .map_err(rpc_error)?;
        let export = interface
            .find_export(&call.function)
            .map_err(|err| match err {
                Error::UnknownFunction(message) => RpcError::NotFound(message),
                err => rpc_error(err),
            })?;
        let types = export.abi.param_types();
        let names = export.abi.param_names();
        if types.len() != call.params.len() {
            return Err(RpcError::ProtocolError(format!(
                "{} takes {} parameters ({}), the call gives {}",
                export.display_name,
                types.len(),
                names.join(", "),
                call.params.len()
            )));
        }
        let mut params = Vec::with_capacity(types.len());
        for (i, ((param, ty), name)) in call.params.iter().zip(types).zip(names).enumerate() {
            let wrong = |detail: String| {
                RpcError::ProtocolError(format!(
                    "parameter {} (`{name}`) of {}: {detail}",
                    i + 1,
                    export.display_name
                ))
            };
            let value = param.to_typed(ty).map_err(wrong)?;
            params.push(to_wave(&value).map_err(|e| wrong(e.to_string()))?);
        }
        Ok((export, params))
    }

    /// Runs a call on its callee (on the call's own thread) and returns its outcome; `None`
    /// if it was withdrawn before it started (its outcome is set already).
    fn run_call(&self, call: &Call, pending: &PendingCall) -> Option<CallResult> {
        let (export, params) = match self.prepare_call(call) {
            Ok(prepared) => prepared,
            Err(err) => return Some(Err(err)),
        };
        pending.watch(std::thread::current());
        let turn = self
            .slots
            .turn_unless(&call.target, || pending.is_cancelled())?;
        if !pending.begin() {
            return None; // withdrawn just as its turn came: dropping the turn passes it on
        }
        let key = call.idempotency_key.as_str();
        // The caller's own durable commit, later in the same environment, makes this one
        // durable too before anyone outside learns of the result.
        let outcome = self.invoke_in_as(
            turn,
            &export.display_name,
            &params,
            Some(key),
            super::Completion::BeforeCallersCommit,
        );
        let outcome = self.until_finished(&call.target, &export, &params, key, outcome);
        Some(outcome.and_then(|done| {
            results_tuple(&export, done.result.as_deref()).map_err(RpcError::ProtocolError)
        }))
    }

    /// Waits for an invocation that did not finish in its first run (its callee slept,
    /// suspended, is queued behind a sleeping invocation, or trapped and will be retried),
    /// blocking this thread. Without a serving executor's timers nothing would bring such an
    /// invocation back, so it is reported as it is.
    fn until_finished(
        &self,
        id: &WorkerId,
        export: &ExportedFunction,
        params: &[String],
        key: &str,
        mut outcome: Result<Invoked>,
    ) -> std::result::Result<InvocationOutcome, RpcError> {
        let serving = self.background.get().is_some();
        loop {
            outcome = match outcome {
                Ok(Invoked::Completed(done)) => return Ok(done),
                Ok(Invoked::Deferred(Deferred::RetryScheduled {
                    delay, function, ..
                })) => {
                    std::thread::sleep(delay);
                    self.continue_retry(id, &function, key)
                }
                // The callee is in another invocation that is not over: this one waits in
                // its queue, as it would behind a sleep.
                Err(Error::WorkerSuspended { .. } | Error::WorkerBusy { .. }) if serving => self
                    .push_queued(id, &export.display_name, params, Some(key))
                    .and_then(|_| self.block_on_invocation(id, key)),
                Ok(Invoked::Deferred(_)) if serving => self.block_on_invocation(id, key),
                Ok(Invoked::Deferred(deferred)) => {
                    return Err(RpcError::RemoteInternalError(format!(
                        "{deferred}; this process has no timers to finish it"
                    )))
                }
                Err(err) => return Err(rpc_error(err)),
            };
        }
    }

    /// [`Executor::await_invocation`] from a thread that is not the runtime's.
    fn block_on_invocation(&self, id: &WorkerId, key: &str) -> Result<Invoked> {
        let tokio = self.tokio.as_ref().expect("set until drop");
        tokio
            .block_on(self.await_invocation(id, key))
            .map(|result| {
                Invoked::Completed(InvocationOutcome {
                    result,
                    from_idempotency_key: false,
                })
            })
    }
}

/// The tuple of the export's results, from the WAVE of its result.
fn results_tuple(
    export: &ExportedFunction,
    result: Option<&str>,
) -> std::result::Result<WitValue, String> {
    match (export.abi.result_type(), result) {
        (Some(ty), Some(text)) => {
            let value = parse_wave(ty, text).map_err(|e| e.to_string())?;
            WitValue::results_tuple(Some((&value, ty)))
        }
        (None, None) => WitValue::results_tuple(None),
        (Some(_), None) => Err(format!("{} returned no result", export.display_name)),
        (None, Some(text)) => Err(format!(
            "{} has no result but returned {text}",
            export.display_name
        )),
    }
}

/// How a callee's error reaches the caller.
fn rpc_error(err: Error) -> RpcError {
    match err {
        Error::UnknownFunction(message) => RpcError::NotFound(message),
        Error::UnknownComponent(_) | Error::UnknownWorker(_) => RpcError::NotFound(err.to_string()),
        Error::InvalidArguments(_)
        | Error::InvalidWorkerName(_)
        | Error::IdempotencyKeyReused { .. } => RpcError::ProtocolError(err.to_string()),
        Error::QueueFull { .. } => RpcError::Denied(err.to_string()),
        _ => RpcError::RemoteInternalError(err.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker(name: &str) -> WorkerId {
        WorkerId {
            component_id: crate::ids::ComponentId(uuid::Uuid::nil()),
            worker_name: name.into(),
        }
    }

    #[test]
    fn a_cycle_of_waits_is_found_and_named() {
        let mut waiting = HashMap::new();
        let (a, b, c) = (worker("a"), worker("b"), worker("c"));
        let a_to_b = PendingCall::new(b.clone());
        assert!(a_to_b.begin());
        waiting.insert(a.clone(), vec![a_to_b]);
        waiting.insert(b.clone(), vec![PendingCall::new(c.clone())]);
        assert!(cycle_through(&waiting, &a).is_none());
        waiting.insert(c.clone(), vec![PendingCall::new(a.clone())]);
        let cycle = cycle_through(&waiting, &c).expect("c -> a -> b -> c");
        assert_eq!(describe(&c, &cycle), "c -> a -> b -> c");
        // A done call is no edge.
        cycle[0].finish(Ok(WitValue::default()));
        assert!(cycle_through(&waiting, &c).is_none());
        // Calling oneself is the shortest cycle.
        let mut selfish = HashMap::new();
        selfish.insert(a.clone(), vec![PendingCall::new(a.clone())]);
        assert_eq!(
            describe(&a, &cycle_through(&selfish, &a).unwrap()),
            "a -> a"
        );
    }
}
