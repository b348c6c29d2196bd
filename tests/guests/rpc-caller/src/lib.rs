//! A worker calling other workers through `golem:rpc/types`: synchronous, enqueued and
//! asynchronous invocations, fan-out with `wasi:io/poll.poll`, chains of callers, and
//! futures kept across invocations.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

wit_bindgen::generate!({
    world: "golemw:rpc-caller/caller",
    path: ["../../../wit", "wit"],
    generate_all,
});

use exports::golemw::rpc_caller::api::Guest;
use golem::rpc::types::{FutureInvokeResult, RpcError, Uri, WasmRpc, WitNode, WitValue};
use wasi::io::poll::poll;

/// The callee's `add` function.
const ADD: &str = "golemw:rpc-callee/api.{add}";
/// This component's own `chain` function.
const CHAIN: &str = "golemw:rpc-caller/api.{chain}";

/// A future kept by `start`, with the client it came from (kept alive as long as the future).
struct Pending {
    future: FutureInvokeResult,
    _client: WasmRpc,
}

thread_local! {
    /// How many `add-remote` and `chain` calls succeeded.
    static CALLS: Cell<u64> = const { Cell::new(0) };
    /// The id the next `start` returns.
    static NEXT_ID: Cell<u32> = const { Cell::new(1) };
    /// Futures kept by `start`, by id.
    static PENDING: RefCell<HashMap<u32, Pending>> = RefCell::new(HashMap::new());
}

/// A client for the worker with URI `target`.
fn client(target: &str) -> WasmRpc {
    WasmRpc::new(&Uri {
        value: target.to_string(),
    })
}

/// A `u64` as a wit-value.
fn u64_value(n: u64) -> WitValue {
    WitValue {
        nodes: vec![WitNode::PrimU64(n)],
    }
}

/// A `string` as a wit-value.
fn string_value(s: &str) -> WitValue {
    WitValue {
        nodes: vec![WitNode::PrimString(s.to_string())],
    }
}

/// A `list<string>` as a wit-value: the list node, then one node per element.
fn string_list_value(items: &[String]) -> WitValue {
    let mut nodes = vec![WitNode::ListValue((1..=items.len() as i32).collect())];
    nodes.extend(items.iter().map(|s| WitNode::PrimString(s.clone())));
    WitValue { nodes }
}

/// An rpc-error as text: `<case>: <message>`.
fn format_error(e: &RpcError) -> String {
    match e {
        RpcError::ProtocolError(m) => format!("protocol-error: {m}"),
        RpcError::Denied(m) => format!("denied: {m}"),
        RpcError::NotFound(m) => format!("not-found: {m}"),
        RpcError::RemoteInternalError(m) => format!("remote-internal-error: {m}"),
    }
}

/// The node of the single result in a results tuple (`tuple-value([i])`).
fn single_result(value: &WitValue) -> Option<&WitNode> {
    match value.nodes.first()? {
        WitNode::TupleValue(items) if items.len() == 1 => {
            value.nodes.get(usize::try_from(items[0]).ok()?)
        }
        _ => None,
    }
}

/// The node at index `i` of `value`.
fn node(value: &WitValue, i: Option<i32>) -> Option<&WitNode> {
    value.nodes.get(usize::try_from(i?).ok()?)
}

/// Decodes the results of a function returning `u64`.
fn decode_u64(result: Result<WitValue, RpcError>) -> Result<u64, String> {
    let value = result.map_err(|e| format_error(&e))?;
    match single_result(&value) {
        Some(WitNode::PrimU64(n)) => Ok(*n),
        _ => Err(format!("unexpected result shape: {:?}", value.nodes)),
    }
}

/// Decodes the results of a function returning `result<u64, string>`.
fn decode_result_u64(result: Result<WitValue, RpcError>) -> Result<u64, String> {
    let value = result.map_err(|e| format_error(&e))?;
    match single_result(&value) {
        Some(WitNode::ResultValue(Ok(i))) => {
            if let Some(WitNode::PrimU64(n)) = node(&value, *i) {
                return Ok(*n);
            }
        }
        Some(WitNode::ResultValue(Err(i))) => {
            if let Some(WitNode::PrimString(s)) = node(&value, *i) {
                return Err(s.clone());
            }
        }
        _ => {}
    }
    Err(format!("unexpected result shape: {:?}", value.nodes))
}

/// Counts a successful `add-remote` or `chain`.
fn count(result: Result<u64, String>) -> Result<u64, String> {
    if result.is_ok() {
        CALLS.with(|c| c.set(c.get() + 1));
    }
    result
}

struct Caller;

impl Guest for Caller {
    fn call(target: String, function: String, params: Vec<WitValue>) -> Result<WitValue, RpcError> {
        client(&target).invoke_and_await(&function, &params)
    }

    fn enqueue(target: String, function: String, params: Vec<WitValue>) -> Result<(), RpcError> {
        client(&target).invoke(&function, &params)
    }

    fn call_async(
        target: String,
        function: String,
        params: Vec<WitValue>,
    ) -> Result<WitValue, RpcError> {
        let rpc = client(&target);
        let future = rpc.async_invoke_and_await(&function, &params);
        let pollable = future.subscribe();
        pollable.block();
        drop(pollable);
        future.get().unwrap_or_else(|| {
            Err(RpcError::ProtocolError(
                "get returned none after block".into(),
            ))
        })
    }

    fn fan_out(targets: Vec<String>, n: u64) -> Vec<Result<u64, String>> {
        let clients: Vec<WasmRpc> = targets.iter().map(|t| client(t)).collect();
        let futures: Vec<FutureInvokeResult> = clients
            .iter()
            .map(|rpc| rpc.async_invoke_and_await(ADD, &[u64_value(n)]))
            .collect();
        let pollables: Vec<_> = futures.iter().map(|f| f.subscribe()).collect();
        // Indices (into `pollables`) of the pollables not yet reported ready.
        let mut waiting: Vec<usize> = (0..pollables.len()).collect();
        while !waiting.is_empty() {
            let polled: Vec<_> = waiting.iter().map(|&i| &pollables[i]).collect();
            let ready = poll(&polled);
            let mut still = Vec::new();
            for (k, &i) in waiting.iter().enumerate() {
                if !ready.contains(&(k as u32)) {
                    still.push(i);
                }
            }
            waiting = still;
        }
        drop(pollables);
        futures
            .iter()
            .map(|f| match f.get() {
                Some(result) => decode_u64(result),
                None => Err("get returned none after poll".to_string()),
            })
            .collect()
    }

    fn add_remote(target: String, n: u64) -> Result<u64, String> {
        count(decode_u64(
            client(&target).invoke_and_await(ADD, &[u64_value(n)]),
        ))
    }

    fn chain(hops: Vec<String>, sink: String, n: u64) -> Result<u64, String> {
        let Some((next, rest)) = hops.split_first() else {
            return Self::add_remote(sink, n);
        };
        let params = [string_list_value(rest), string_value(&sink), u64_value(n)];
        count(decode_result_u64(
            client(next).invoke_and_await(CHAIN, &params),
        ))
    }

    fn calls() -> u64 {
        CALLS.with(Cell::get)
    }

    fn start(target: String, function: String, params: Vec<WitValue>) -> u32 {
        let rpc = client(&target);
        let future = rpc.async_invoke_and_await(&function, &params);
        let id = NEXT_ID.with(|n| {
            let id = n.get();
            n.set(id + 1);
            id
        });
        let pending = Pending {
            future,
            _client: rpc,
        };
        PENDING.with(|p| p.borrow_mut().insert(id, pending));
        id
    }

    fn ready(id: u32) -> bool {
        PENDING.with(|p| {
            p.borrow()
                .get(&id)
                .is_some_and(|pending| pending.future.subscribe().ready())
        })
    }

    fn finish(id: u32) -> Option<Result<WitValue, RpcError>> {
        PENDING.with(|p| {
            let mut pending = p.borrow_mut();
            let result = pending.get(&id)?.future.get();
            if result.is_some() {
                pending.remove(&id);
            }
            result
        })
    }
}

export!(Caller);
