//! Durable outgoing HTTP: `wasi:http/outgoing-handler@0.2` and the resources of
//! `wasi:http/types@0.2` a client needs (fields, outgoing requests and their options and
//! bodies, future and incoming responses, incoming bodies, future trailers), as canonical-ABI
//! imports through the durability gate.
//!
//! **One recorded call per request.** Everything but the exchange itself is a function of the
//! guest's own calls: building a request, writing its body, reading the response's status,
//! headers, body chunks and trailers. Those are not recorded; their handles count up the same
//! way live and in replay. The exchange is one host call, made when the guest first asks the
//! future for its response (`future-incoming-response.get`) once the request body is finished:
//! its request is the method, URL, headers and the body's length and BLAKE3 hash (replay
//! checks the guest sends the same), its response the whole response or the `error-code`
//! (see [`send`]). Replay returns the recorded response without sending. The pollable of a
//! future is ready at once: `get` sends and waits itself (and traps if the request body is
//! not finished yet, which would otherwise make a waiting guest spin forever).
//!
//! **At least once, or at most once.** The exchange is a remote side effect
//! ([`remote_side_effect`]): under the default idempotence mode a crash before the response is
//! committed sends the request again when the invocation is finished on recovery; with
//! idempotence off the `begin-remote-write` marker is committed before sending, and a crash
//! before the end fails the worker rather than send twice. A live response is committed (not
//! fsynced) right after it is recorded, so a block holds at most one response body.
//!
//! **Handles** of this module count from [`HANDLE_BASE`]: its input and output streams go
//! through `wasi:io/streams` like `host::wasi2`'s stdio streams, which count from 1, and the
//! stream functions pass a handle here when it is one of these.
//!
//! Limits: see [`send`] (body sizes, timeouts). Not supported: `https` (no TLS client is
//! built in; refused with `internal-error`) and request trailers.

pub mod send;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use wasm_wave::value::{Type, Value};
use wasm_wave::wasm::{WasmType, WasmValue};

use super::persistence::remote_side_effect;
use super::{Failure, HostState};
use crate::abi::{parse_wave, wave_string};
use crate::component::ImportedFunction;
use crate::error::Error;
use crate::oplog::{HostFunction, HostValue};
use send::{Entries, Exchange, Outgoing, Timeouts};

/// `wasi:http/types`, by its version-less key.
pub const TYPES: &str = "wasi:http/types@0.2";
/// `wasi:http/outgoing-handler`, by its version-less key.
pub const OUTGOING_HANDLER: &str = "wasi:http/outgoing-handler@0.2";
/// How the exchange is named in the oplog.
const RECORDED_AS: &str = "wasi:http/outgoing-handler@0.2.handle";

/// The functions provided, by interface (version-less key); destructors included.
pub const PROVIDED: super::Provided = super::Provided(&[
    (
        TYPES,
        &[
            "[constructor]fields",
            "[static]fields.from-list",
            "[method]fields.get",
            "[method]fields.has",
            "[method]fields.set",
            "[method]fields.delete",
            "[method]fields.append",
            "[method]fields.entries",
            "[method]fields.clone",
            "[resource-drop]fields",
            "[constructor]outgoing-request",
            "[method]outgoing-request.body",
            "[method]outgoing-request.method",
            "[method]outgoing-request.set-method",
            "[method]outgoing-request.path-with-query",
            "[method]outgoing-request.set-path-with-query",
            "[method]outgoing-request.scheme",
            "[method]outgoing-request.set-scheme",
            "[method]outgoing-request.authority",
            "[method]outgoing-request.set-authority",
            "[method]outgoing-request.headers",
            "[resource-drop]outgoing-request",
            "[constructor]request-options",
            "[method]request-options.connect-timeout",
            "[method]request-options.set-connect-timeout",
            "[method]request-options.first-byte-timeout",
            "[method]request-options.set-first-byte-timeout",
            "[method]request-options.between-bytes-timeout",
            "[method]request-options.set-between-bytes-timeout",
            "[resource-drop]request-options",
            "[method]outgoing-body.write",
            "[static]outgoing-body.finish",
            "[resource-drop]outgoing-body",
            "[method]future-incoming-response.subscribe",
            "[method]future-incoming-response.get",
            "[resource-drop]future-incoming-response",
            "[method]incoming-response.status",
            "[method]incoming-response.headers",
            "[method]incoming-response.consume",
            "[resource-drop]incoming-response",
            "[method]incoming-body.stream",
            "[static]incoming-body.finish",
            "[resource-drop]incoming-body",
            "[method]future-trailers.subscribe",
            "[method]future-trailers.get",
            "[resource-drop]future-trailers",
            "http-error-code",
            // The server side (see `SERVER_SIDE`): provided so that components linking them
            // (a JavaScript runtime links both sides) load; they trap if called.
            "[method]incoming-request.method",
            "[method]incoming-request.path-with-query",
            "[method]incoming-request.scheme",
            "[method]incoming-request.authority",
            "[method]incoming-request.headers",
            "[method]incoming-request.consume",
            "[resource-drop]incoming-request",
            "[constructor]outgoing-response",
            "[method]outgoing-response.status-code",
            "[method]outgoing-response.set-status-code",
            "[method]outgoing-response.headers",
            "[method]outgoing-response.body",
            "[resource-drop]outgoing-response",
            "[static]response-outparam.set",
            "[method]response-outparam.send-informational",
            "[resource-drop]response-outparam",
        ],
    ),
    (OUTGOING_HANDLER, &["handle"]),
]);

/// The resources of `wasi:http/types` that only `wasi:http/incoming-handler` hands out: golemw
/// serves no incoming requests, so a guest never holds one, and their functions trap.
const SERVER_SIDE: [&str; 3] = ["incoming-request", "outgoing-response", "response-outparam"];

/// The first handle this module gives out (see the module docs): far above any count of
/// stdio streams, far below `u32::MAX`, which bindings use as "no handle".
pub const HANDLE_BASE: u32 = 1 << 30;

/// Whether a handle is one of this module's (a stream of a body rather than stdio).
pub fn owns(handle: u32) -> bool {
    handle >= HANDLE_BASE
}

/// HTTP resources one worker instance may hold open at once (fields, requests, bodies,
/// streams, futures...): a guest creating them in a loop without dropping them traps instead of
/// growing the host's memory without bound. A client needs a handful per request in flight.
pub const RESOURCES_MAX: usize = 1 << 16;

/// What one `check-write` allows, as for stdio streams.
const WRITE_BUDGET: u64 = 64 << 10;

/// A `fields` resource (headers or trailers).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Fields {
    entries: Entries,
    /// Fields handed out by a request or response are immutable.
    immutable: bool,
}

/// An `outgoing-request` under construction.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Request {
    method: String,
    scheme: Option<String>,
    authority: Option<String>,
    path_with_query: Option<String>,
    headers: Entries,
    /// The handle of its body, once taken.
    body: Option<u32>,
}

/// An `outgoing-body` (also kept after `finish` until its request is sent).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct OutBody {
    bytes: Vec<u8>,
    stream_taken: bool,
    finished: bool,
    /// Dropped by the guest without `finish`: the request must fail.
    abandoned: bool,
    /// Written past [`send::REQUEST_BODY_BYTES_MAX`]: the request must fail.
    too_large: bool,
    /// Bytes the guest wrote or tried to write (what the failure reports).
    attempted: u64,
}

/// A `future-incoming-response`.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Future {
    method: String,
    url: String,
    headers: Entries,
    body: Option<u32>,
    timeouts: Timeouts,
    /// The response handle or `error-code` once there, and whether `get` returned it.
    outcome: Option<(Result<u32, String>, bool)>,
}

/// An `incoming-response`.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct InResponse {
    status: u16,
    headers: Entries,
    /// The body and trailers until `consume` takes them.
    body: Option<(Vec<u8>, Option<Entries>)>,
}

/// An `incoming-body`.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct InBody {
    /// The bytes until `stream` takes them.
    bytes: Option<Vec<u8>>,
    trailers: Option<Entries>,
}

/// A stream of this module: the body of a request being written, or of a response being read.
#[derive(Clone, Debug, Serialize, Deserialize)]
enum Stream {
    /// Writes go to this outgoing body.
    Out(u32),
    /// What is left to read.
    In { bytes: Vec<u8>, at: usize },
}

/// The HTTP resources of one worker instance. Part of a snapshot's host state: a guest may
/// keep fields or a response across invocations.
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct HttpHandles {
    /// The last handle given out, relative to [`HANDLE_BASE`].
    last: u32,
    fields: BTreeMap<u32, Fields>,
    requests: BTreeMap<u32, Request>,
    options: BTreeMap<u32, Timeouts>,
    out_bodies: BTreeMap<u32, OutBody>,
    futures: BTreeMap<u32, Future>,
    responses: BTreeMap<u32, InResponse>,
    in_bodies: BTreeMap<u32, InBody>,
    streams: BTreeMap<u32, Stream>,
    /// Future trailers: the trailers, and whether `get` returned them.
    trailers: BTreeMap<u32, (Option<Entries>, bool)>,
}

impl HttpHandles {
    /// A new handle; a trap past [`RESOURCES_MAX`] open resources.
    fn next(&mut self) -> std::result::Result<u32, Failure> {
        let open = self.fields.len()
            + self.requests.len()
            + self.options.len()
            + self.out_bodies.len()
            + self.futures.len()
            + self.responses.len()
            + self.in_bodies.len()
            + self.streams.len()
            + self.trailers.len();
        if open >= RESOURCES_MAX {
            return Err(Failure::Trap(format!(
                "this worker has {open} wasi:http resources open, the most it may have"
            )));
        }
        self.last += 1;
        let handle = HANDLE_BASE + self.last;
        debug_assert!(owns(handle) && handle != u32::MAX, "handles ran out");
        Ok(handle)
    }

    fn new_fields(
        &mut self,
        entries: Entries,
        immutable: bool,
    ) -> std::result::Result<u32, Failure> {
        let handle = self.next()?;
        self.fields.insert(handle, Fields { entries, immutable });
        Ok(handle)
    }

    /// Forgets the body of a request that will not be sent, once the guest no longer holds it
    /// (it gave it to `finish`, or dropped it; one it still holds goes when it drops it).
    fn forget_body(&mut self, body: Option<u32>) {
        if let Some(body) = body {
            if self
                .out_bodies
                .get(&body)
                .is_some_and(|b| b.finished || b.abandoned)
            {
                self.out_bodies.remove(&body);
            }
        }
    }

    /// Forgets a resource the guest dropped. An unknown handle is the guest's mistake.
    pub fn drop_handle(&mut self, name: &str, handle: u32) -> std::result::Result<(), String> {
        let known = match name.trim_start_matches("[resource-drop]") {
            "fields" => self.fields.remove(&handle).is_some(),
            "outgoing-request" => match self.requests.remove(&handle) {
                Some(request) => {
                    self.forget_body(request.body);
                    true
                }
                None => false,
            },
            "request-options" => self.options.remove(&handle).is_some(),
            "outgoing-body" => {
                let used = self.requests.values().any(|r| r.body == Some(handle))
                    || self.futures.values().any(|f| f.body == Some(handle));
                match self.out_bodies.get_mut(&handle) {
                    // Kept (abandoned) for the request it belongs to, which then fails.
                    Some(body) if used => {
                        body.abandoned = !body.finished;
                        true
                    }
                    Some(_) => self.out_bodies.remove(&handle).is_some(),
                    None => false,
                }
            }
            "future-incoming-response" => match self.futures.remove(&handle) {
                Some(future) => {
                    self.forget_body(future.body);
                    true
                }
                None => false,
            },
            "incoming-response" => self.responses.remove(&handle).is_some(),
            "incoming-body" => self.in_bodies.remove(&handle).is_some(),
            "future-trailers" => self.trailers.remove(&handle).is_some(),
            "input-stream" | "output-stream" => self.streams.remove(&handle).is_some(),
            _ => false,
        };
        match known {
            true => Ok(()),
            false => Err(format!("{name}: unknown handle {handle}")),
        }
    }
}

type Outcome = std::result::Result<Option<Value>, Failure>;

fn trap(function: &str, handle: u32) -> Failure {
    Failure::Trap(format!("{function}: unknown handle {handle}"))
}

fn engine(function: &str, err: impl std::fmt::Display) -> Failure {
    Failure::Fatal(Error::Engine(format!("{function}: {err}")))
}

/// Builds result values of `func`'s result type.
struct Results<'a> {
    func: &'a ImportedFunction,
}

impl Results<'_> {
    fn ty(&self) -> std::result::Result<&Type, Failure> {
        self.func
            .abi
            .result_type()
            .ok_or_else(|| engine(&self.func.name, "has no result type"))
    }

    /// A result given as WAVE text.
    fn wave(&self, text: &str) -> Outcome {
        Ok(Some(parse_wave(self.ty()?, text)?))
    }

    /// A result of type `list<u8>` inside `ok(...)` of a `result` (a stream read).
    fn ok_bytes(&self, bytes: &[u8]) -> Outcome {
        let ty = self.ty()?;
        let list_ty = ty
            .result_types()
            .and_then(|(ok, _)| ok)
            .ok_or_else(|| engine(&self.func.name, "the result is not result<list<u8>, _>"))?;
        let list = bytes_value(&list_ty, bytes).map_err(|e| engine(&self.func.name, e))?;
        let value =
            Value::make_result(ty, Ok(Some(list))).map_err(|e| engine(&self.func.name, e))?;
        Ok(Some(value))
    }

    /// A result of type `list<tuple<string, list<u8>>>` (entries).
    fn entries(&self, entries: &Entries) -> Outcome {
        let value = entries_value(self.ty()?, entries).map_err(|e| engine(&self.func.name, e))?;
        Ok(Some(value))
    }

    /// A result of type `list<list<u8>>` (the values of one field).
    fn values(&self, values: &[&[u8]]) -> Outcome {
        let ty = self.ty()?;
        let elem = ty
            .list_element_type()
            .ok_or_else(|| engine(&self.func.name, "the result is not list<list<u8>>"))?;
        let items = values
            .iter()
            .map(|v| bytes_value(&elem, v))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| engine(&self.func.name, e))?;
        let value = Value::make_list(ty, items).map_err(|e| engine(&self.func.name, e))?;
        Ok(Some(value))
    }
}

fn bytes_value(ty: &Type, bytes: &[u8]) -> std::result::Result<Value, String> {
    Value::make_list(ty, bytes.iter().map(|b| Value::make_u8(*b))).map_err(|e| e.to_string())
}

fn entries_value(ty: &Type, entries: &Entries) -> std::result::Result<Value, String> {
    let tuple = ty.list_element_type().ok_or("not a list")?;
    let value_ty = tuple.tuple_element_types().nth(1).ok_or("not a pair")?;
    let items = entries
        .iter()
        .map(|(name, value)| {
            Value::make_tuple(
                &tuple,
                vec![
                    Value::make_string(name.as_str().into()),
                    bytes_value(&value_ty, value)?,
                ],
            )
            .map_err(|e| e.to_string())
        })
        .collect::<std::result::Result<Vec<_>, String>>()?;
    Value::make_list(ty, items).map_err(|e| e.to_string())
}

fn bytes_of(value: Option<&Value>) -> Vec<u8> {
    value
        .map(|list| list.unwrap_list().map(|b| b.unwrap_u8()).collect())
        .unwrap_or_default()
}

fn string_of(value: Option<&Value>) -> String {
    value
        .map(|v| v.unwrap_string().into_owned())
        .unwrap_or_default()
}

/// An `option<string>` parameter.
fn option_string(value: Option<&Value>) -> Option<String> {
    value.and_then(|v| v.unwrap_option().map(|s| s.unwrap_string().into_owned()))
}

/// The method a `method` variant names (`GET`, ..., or the other method's own spelling).
fn method_of(value: Option<&Value>) -> String {
    let Some(value) = value else {
        return "GET".into();
    };
    let (case, payload) = value.unwrap_variant();
    match (case.as_ref(), payload) {
        ("other", Some(other)) => other.unwrap_string().into_owned(),
        (case, _) => case.to_ascii_uppercase(),
    }
}

const METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

fn method_wave(method: &str) -> String {
    match METHODS.contains(&method) {
        true => method.to_ascii_lowercase(),
        false => format!("other({})", wave_string(method)),
    }
}

/// The scheme a `scheme` variant names (`http`, `https` or another).
fn scheme_of(value: &Value) -> String {
    let (case, payload) = value.unwrap_variant();
    match (case.as_ref(), payload) {
        ("other", Some(other)) => other.unwrap_string().into_owned(),
        (case, _) => case.to_ascii_lowercase(),
    }
}

fn scheme_wave(scheme: &str) -> String {
    match scheme {
        "http" => "HTTP".into(),
        "https" => "HTTPS".into(),
        other => format!("other({})", wave_string(other)),
    }
}

fn option_wave(value: Option<String>) -> String {
    match value {
        Some(v) => format!("some({v})"),
        None => "none".into(),
    }
}

/// Whether `name` is a valid field name (an HTTP token).
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Whether `value` is a valid field value (no line breaks or NUL).
fn valid_value(value: &[u8]) -> bool {
    !value.iter().any(|b| matches!(b, b'\r' | b'\n' | 0))
}

/// One call of a `wasi:http` function (drops excepted).
pub(super) fn call(state: &mut HostState, func: &ImportedFunction, params: Vec<Value>) -> Outcome {
    let out = Results { func };
    let name = func.name.as_str();
    let handle = || params.first().map(|v| v.unwrap_u32()).unwrap_or_default();
    if func.module == OUTGOING_HANDLER {
        return handle_request(state, &out, &params);
    }
    let resource = name
        .split(']')
        .nth(1)
        .and_then(|rest| rest.split('.').next());
    if resource.is_some_and(|r| SERVER_SIDE.contains(&r)) {
        return Err(Failure::Trap(format!(
            "{name}: golemw serves no incoming HTTP requests (wasi:http/incoming-handler)"
        )));
    }
    let http = &mut state.http;
    match name {
        "[constructor]fields" => out.wave(&http.new_fields(Vec::new(), false)?.to_string()),
        "[static]fields.from-list" => {
            let mut entries = Vec::new();
            for pair in params
                .first()
                .map(|l| l.unwrap_list())
                .into_iter()
                .flatten()
            {
                let mut parts = pair.unwrap_tuple();
                let field = string_of(parts.next().as_deref());
                let value = bytes_of(parts.next().as_deref());
                if !valid_name(&field) || !valid_value(&value) {
                    return out.wave("err(invalid-syntax)");
                }
                entries.push((field, value));
            }
            out.wave(&format!("ok({})", http.new_fields(entries, false)?))
        }
        "[method]fields.get"
        | "[method]fields.has"
        | "[method]fields.entries"
        | "[method]fields.clone" => {
            let fields = http
                .fields
                .get(&handle())
                .ok_or_else(|| trap(name, handle()))?;
            let field = string_of(params.get(1));
            let matching = fields
                .entries
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case(&field));
            match name {
                "[method]fields.get" => {
                    let values: Vec<&[u8]> = matching.map(|(_, v)| v.as_slice()).collect();
                    out.values(&values)
                }
                "[method]fields.has" => out.wave(&matching.count().gt(&0).to_string()),
                "[method]fields.entries" => out.entries(&fields.entries.clone()),
                _ => {
                    let entries = fields.entries.clone();
                    out.wave(&http.new_fields(entries, false)?.to_string())
                }
            }
        }
        "[method]fields.set" | "[method]fields.delete" | "[method]fields.append" => {
            let fields = http
                .fields
                .get_mut(&handle())
                .ok_or_else(|| trap(name, handle()))?;
            let field = string_of(params.get(1));
            let values: Vec<Vec<u8>> = match name {
                "[method]fields.set" => params
                    .get(2)
                    .map(|l| l.unwrap_list().map(|v| bytes_of(Some(&v))).collect())
                    .unwrap_or_default(),
                "[method]fields.append" => vec![bytes_of(params.get(2))],
                _ => Vec::new(),
            };
            if fields.immutable {
                return out.wave("err(immutable)");
            }
            if !valid_name(&field) || !values.iter().all(|v| valid_value(v)) {
                return out.wave("err(invalid-syntax)");
            }
            if name != "[method]fields.append" {
                fields
                    .entries
                    .retain(|(n, _)| !n.eq_ignore_ascii_case(&field));
            }
            fields
                .entries
                .extend(values.into_iter().map(|v| (field.clone(), v)));
            out.wave("ok")
        }
        "[constructor]outgoing-request" => {
            // The headers are moved into the request (an own handle).
            let headers = http
                .fields
                .remove(&handle())
                .ok_or_else(|| trap(name, handle()))?;
            let request = http.next()?;
            http.requests.insert(
                request,
                Request {
                    method: "GET".into(),
                    scheme: None,
                    authority: None,
                    path_with_query: None,
                    headers: headers.entries,
                    body: None,
                },
            );
            out.wave(&request.to_string())
        }
        _ if name.starts_with("[method]outgoing-request.") => {
            let body_handle = match name {
                "[method]outgoing-request.body" => Some(http.next()?),
                _ => None,
            };
            let request = http
                .requests
                .get_mut(&handle())
                .ok_or_else(|| trap(name, handle()))?;
            let text = match name.trim_start_matches("[method]outgoing-request.") {
                "body" => match (request.body, body_handle) {
                    (None, Some(body)) => {
                        request.body = Some(body);
                        http.out_bodies.insert(body, OutBody::default());
                        format!("ok({body})")
                    }
                    _ => "err".into(),
                },
                "method" => method_wave(&request.method),
                "set-method" => {
                    let method = method_of(params.get(1));
                    match valid_name(&method) {
                        true => {
                            request.method = method;
                            "ok".into()
                        }
                        false => "err".into(),
                    }
                }
                "path-with-query" => {
                    option_wave(request.path_with_query.as_deref().map(wave_string))
                }
                "set-path-with-query" => {
                    request.path_with_query = option_string(params.get(1));
                    "ok".into()
                }
                "scheme" => option_wave(request.scheme.as_deref().map(scheme_wave)),
                "set-scheme" => {
                    request.scheme = params
                        .get(1)
                        .and_then(|v| v.unwrap_option().map(|s| scheme_of(&s)));
                    "ok".into()
                }
                "authority" => option_wave(request.authority.as_deref().map(wave_string)),
                "set-authority" => {
                    request.authority = option_string(params.get(1));
                    "ok".into()
                }
                "headers" => {
                    let entries = request.headers.clone();
                    http.new_fields(entries, true)?.to_string()
                }
                _ => return Err(not_implemented(func)),
            };
            out.wave(&text)
        }
        "[constructor]request-options" => {
            let options = http.next()?;
            http.options.insert(options, Timeouts::default());
            out.wave(&options.to_string())
        }
        _ if name.starts_with("[method]request-options.") => {
            let options = http
                .options
                .get_mut(&handle())
                .ok_or_else(|| trap(name, handle()))?;
            let which = name.trim_start_matches("[method]request-options.");
            let setting = which.trim_start_matches("set-");
            let slot = match setting {
                "connect-timeout" => &mut options.connect_ns,
                "first-byte-timeout" => &mut options.first_byte_ns,
                "between-bytes-timeout" => &mut options.between_bytes_ns,
                _ => return Err(not_implemented(func)),
            };
            match which.starts_with("set-") {
                true => {
                    *slot = params
                        .get(1)
                        .and_then(|v| v.unwrap_option().map(|d| d.unwrap_u64()));
                    out.wave("ok")
                }
                false => out.wave(&option_wave(slot.map(|ns| ns.to_string()))),
            }
        }
        "[method]outgoing-body.write" => {
            let stream = http.next()?;
            let body = http
                .out_bodies
                .get_mut(&handle())
                .filter(|b| !b.finished)
                .ok_or_else(|| trap(name, handle()))?;
            if body.stream_taken {
                return out.wave("err");
            }
            body.stream_taken = true;
            http.streams.insert(stream, Stream::Out(handle()));
            out.wave(&format!("ok({stream})"))
        }
        "[static]outgoing-body.finish" => {
            let body = http
                .out_bodies
                .get_mut(&handle())
                .filter(|b| !b.finished)
                .ok_or_else(|| trap(name, handle()))?;
            body.finished = true;
            let trailers = params
                .get(1)
                .and_then(|v| v.unwrap_option().map(|t| t.unwrap_u32()));
            if let Some(trailers) = trailers {
                // The request then fails: its body was not finished as the guest asked.
                body.abandoned = true;
                http.fields.remove(&trailers);
                return out.wave(&format!(
                    "err({})",
                    send::internal_error("request trailers are not supported by this golemw")
                ));
            }
            out.wave("ok")
        }
        "[method]future-incoming-response.subscribe" | "[method]future-trailers.subscribe" => {
            let known = match name {
                "[method]future-trailers.subscribe" => http.trailers.contains_key(&handle()),
                _ => http.futures.contains_key(&handle()),
            };
            if !known {
                return Err(trap(name, handle()));
            }
            // Ready at once: `get` does the waiting (see the module docs).
            out.wave(&state.rpc.ready_pollable().to_string())
        }
        "[method]future-incoming-response.get" => future_get(state, &out, handle()),
        "[method]incoming-response.status" | "[method]incoming-response.headers" => {
            let response = http
                .responses
                .get(&handle())
                .ok_or_else(|| trap(name, handle()))?;
            match name {
                "[method]incoming-response.status" => out.wave(&response.status.to_string()),
                _ => {
                    let entries = response.headers.clone();
                    out.wave(&http.new_fields(entries, true)?.to_string())
                }
            }
        }
        "[method]incoming-response.consume" => {
            let body = http.next()?;
            let response = http
                .responses
                .get_mut(&handle())
                .ok_or_else(|| trap(name, handle()))?;
            match response.body.take() {
                Some((bytes, trailers)) => {
                    http.in_bodies.insert(
                        body,
                        InBody {
                            bytes: Some(bytes),
                            trailers,
                        },
                    );
                    out.wave(&format!("ok({body})"))
                }
                None => out.wave("err"),
            }
        }
        "[method]incoming-body.stream" => {
            let stream = http.next()?;
            let body = http
                .in_bodies
                .get_mut(&handle())
                .ok_or_else(|| trap(name, handle()))?;
            match body.bytes.take() {
                Some(bytes) => {
                    http.streams.insert(stream, Stream::In { bytes, at: 0 });
                    out.wave(&format!("ok({stream})"))
                }
                None => out.wave("err"),
            }
        }
        "[static]incoming-body.finish" => {
            let body = http
                .in_bodies
                .remove(&handle())
                .ok_or_else(|| trap(name, handle()))?;
            let trailers = http.next()?;
            http.trailers.insert(trailers, (body.trailers, false));
            out.wave(&trailers.to_string())
        }
        "[method]future-trailers.get" => {
            let (trailers, taken) = http
                .trailers
                .get_mut(&handle())
                .ok_or_else(|| trap(name, handle()))?;
            if std::mem::replace(taken, true) {
                return out.wave("some(err)");
            }
            let trailers = trailers.clone();
            match trailers {
                Some(entries) => {
                    let fields = http.new_fields(entries, true)?;
                    out.wave(&format!("some(ok(ok(some({fields}))))"))
                }
                None => out.wave("some(ok(ok(none)))"),
            }
        }
        // No `wasi:io/error` is ever handed out by these streams.
        "http-error-code" => out.wave("none"),
        _ => Err(not_implemented(func)),
    }
}

fn not_implemented(func: &ImportedFunction) -> Failure {
    Failure::Fatal(Error::Engine(format!(
        "{}.{} is not implemented by this golemw",
        func.module, func.name
    )))
}

/// `outgoing-handler.handle`: checks the request and makes its future; nothing is sent yet
/// (see the module docs).
fn handle_request(state: &mut HostState, out: &Results<'_>, params: &[Value]) -> Outcome {
    let http = &mut state.http;
    let handle = params.first().map(|v| v.unwrap_u32()).unwrap_or_default();
    let request = http
        .requests
        .remove(&handle)
        .ok_or_else(|| trap("handle", handle))?;
    let timeouts = match params
        .get(1)
        .and_then(|v| v.unwrap_option().map(|o| o.unwrap_u32()))
    {
        Some(options) => http
            .options
            .remove(&options)
            .ok_or_else(|| trap("handle", options))?,
        None => Timeouts::default(),
    };
    // Refusals that depend on the request alone: the same live and in replay.
    let scheme = request.scheme.as_deref().unwrap_or("http");
    if scheme != "http" {
        return out.wave(&format!(
            "err({})",
            send::internal_error(&format!(
                "{scheme} requests are not supported by this golemw (http only)"
            ))
        ));
    }
    let Some(authority) = request.authority.as_deref().filter(|a| !a.is_empty()) else {
        return out.wave("err(HTTP-request-URI-invalid)");
    };
    let path = request.path_with_query.as_deref().unwrap_or("/");
    let path = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    };
    let future = http.next()?;
    http.futures.insert(
        future,
        Future {
            url: format!("{scheme}://{authority}{path}"),
            method: request.method,
            headers: request.headers,
            body: request.body,
            timeouts,
            outcome: None,
        },
    );
    out.wave(&format!("ok({future})"))
}

/// `future-incoming-response.get`: the exchange, through the gate, the first time it is asked
/// for (the request body must be finished by then).
fn future_get(state: &mut HostState, out: &Results<'_>, handle: u32) -> Outcome {
    let function = "[method]future-incoming-response.get";
    let http = &mut state.http;
    let future = http
        .futures
        .get(&handle)
        .ok_or_else(|| trap(function, handle))?;
    if let Some((outcome, taken)) = &future.outcome {
        let text = match (outcome, taken) {
            (_, true) => "some(err)".to_string(),
            (Ok(response), false) => format!("some(ok(ok({response})))"),
            (Err(code), false) => format!("some(ok(err({code})))"),
        };
        if let Some(future) = http.futures.get_mut(&handle) {
            future.outcome.as_mut().expect("checked above").1 = true;
        }
        return out.wave(&text);
    }
    let body = match future.body {
        None => Ok(Vec::new()),
        Some(body) => match http.out_bodies.get(&body) {
            Some(b) if b.too_large => Err(send::request_body_size(b.attempted)),
            Some(b) if b.abandoned => Err(send::internal_error(
                "the request body was not finished (dropped without outgoing-body.finish, or finished \
                 with trailers, which this golemw cannot send)",
            )),
            // The response cannot come before the request is whole, and the future's pollable
            // is ready at once: a guest waiting now would spin forever, so it traps instead.
            Some(b) if !b.finished => {
                return Err(Failure::Trap(format!(
                    "{function}: the request body is not finished; call outgoing-body.finish \
                     before waiting for the response"
                )))
            }
            Some(_) => Ok(http
                .out_bodies
                .remove(&body)
                .map(|b| b.bytes)
                .unwrap_or_default()),
            None => Err(send::internal_error("the request body is gone")),
        },
    };
    let outgoing = Outgoing {
        method: future.method.clone(),
        url: future.url.clone(),
        headers: future.headers.clone(),
        body: body.clone().unwrap_or_default(),
        timeouts: future.timeouts,
    };
    let exchange = match body {
        Ok(_) => exchange(state, &outgoing).map_err(Failure::from)?,
        Err(code) => Exchange::Failed(code),
    };
    let http = &mut state.http;
    let (outcome, text) = match exchange {
        Exchange::Response(response) => {
            let handle = http.next()?;
            http.responses.insert(
                handle,
                InResponse {
                    status: response.status,
                    headers: response.headers,
                    body: Some((response.body, response.trailers)),
                },
            );
            (Ok(handle), format!("some(ok(ok({handle})))"))
        }
        Exchange::Failed(code) => {
            let text = format!("some(ok(err({code})))");
            (Err(code), text)
        }
    };
    if let Some(future) = http.futures.get_mut(&handle) {
        debug_assert!(future.outcome.is_none(), "a future's exchange is made once");
        future.outcome = Some((outcome, true));
    }
    out.wave(&text)
}

/// The exchange: recorded live, returned from the oplog in replay (see the module docs).
fn exchange(state: &mut HostState, request: &Outgoing) -> crate::error::Result<Exchange> {
    let headers: Vec<String> = request
        .headers
        .iter()
        .map(|(n, v)| {
            format!(
                "({}, {})",
                wave_string(n),
                wave_string(&String::from_utf8_lossy(v))
            )
        })
        .collect();
    let described = format!(
        "{{method: {}, url: {}, headers: [{}], body-bytes: {}, body-blake3: {}}}",
        wave_string(&request.method),
        wave_string(&request.url),
        headers.join(", "),
        request.body.len(),
        wave_string(&blake3::hash(&request.body).to_hex()),
    );
    let live = state.gate.mode() == crate::gate::Mode::Live;
    let response = remote_side_effect(state, |state| {
        // Sent before the gate is asked, so that an exchange abandoned for a stop request
        // leaves no entry (the invocation stops with the gate's error).
        let sent = match state.gate.will_run_live() {
            true => match send::send(request, state.gate.stop_signal()) {
                Some(exchange) => Some(exchange),
                None => {
                    return Err(state.gate.stop_requested().unwrap_or_else(|| {
                        Error::Engine("an outgoing HTTP request was stopped".into())
                    }))
                }
            },
            false => None,
        };
        state.gate.host_call(
            HostFunction::Golem(RECORDED_AS.into()),
            HostValue::Wave(described),
            move || HostValue::Bytes(sent.expect("sent above").encode()),
        )
    })?;
    if live && state.gate.pending_len() > 0 {
        // One response body per block at most (see the module docs).
        state.gate.commit_with(false, |_| Ok(()))?;
    }
    match response {
        HostValue::Bytes(bytes) => Exchange::decode(&bytes).map_err(|detail| Error::Corrupt {
            what: format!("recorded result of {RECORDED_AS}"),
            detail,
        }),
        other => Err(Error::Corrupt {
            what: format!("recorded result of {RECORDED_AS}"),
            detail: format!("unexpected shape: {other}"),
        }),
    }
}

/// A `wasi:io/streams` call on one of this module's streams (see [`owns`]).
pub(super) fn stream_call(
    state: &mut HostState,
    func: &ImportedFunction,
    params: Vec<Value>,
) -> Outcome {
    let out = Results { func };
    let name = func.name.as_str();
    let handle = params.first().map(|v| v.unwrap_u32()).unwrap_or_default();
    let http = &mut state.http;
    let stream = http
        .streams
        .get_mut(&handle)
        .ok_or_else(|| trap(name, handle))?;
    match (stream, name) {
        (_, "[method]input-stream.subscribe" | "[method]output-stream.subscribe") => {
            out.wave(&state.rpc.ready_pollable().to_string())
        }
        (
            Stream::In { bytes, at },
            "[method]input-stream.read"
            | "[method]input-stream.blocking-read"
            | "[method]input-stream.skip"
            | "[method]input-stream.blocking-skip",
        ) => {
            if *at >= bytes.len() {
                return out.wave("err(closed)");
            }
            let len = params.get(1).map(|v| v.unwrap_u64()).unwrap_or_default();
            let end = bytes.len().min(at.saturating_add(len as usize));
            let chunk = *at..end;
            *at = end;
            match name.ends_with("skip") {
                true => out.wave(&format!("ok({})", chunk.len())),
                false => {
                    let chunk = bytes[chunk].to_vec();
                    out.ok_bytes(&chunk)
                }
            }
        }
        (Stream::Out(body), name) if name.starts_with("[method]output-stream.") => {
            let body = *body;
            let body = http
                .out_bodies
                .get_mut(&body)
                .filter(|b| !b.finished && !b.too_large);
            let Some(body) = body else {
                return out.wave("err(closed)");
            };
            let room = send::REQUEST_BODY_BYTES_MAX.saturating_sub(body.bytes.len() as u64);
            match name {
                "[method]output-stream.check-write" => match room {
                    0 => out.wave("err(closed)"),
                    room => out.wave(&format!("ok({})", room.min(WRITE_BUDGET))),
                },
                "[method]output-stream.write"
                | "[method]output-stream.blocking-write-and-flush"
                | "[method]output-stream.write-zeroes"
                | "[method]output-stream.blocking-write-zeroes-and-flush" => {
                    let zeroes = name.contains("zeroes");
                    let asked = match zeroes {
                        true => params.get(1).map(|v| v.unwrap_u64()).unwrap_or_default(),
                        false => params.get(1).map(|l| l.unwrap_list().count()).unwrap_or(0) as u64,
                    };
                    body.attempted = body.attempted.saturating_add(asked);
                    if asked > room {
                        // Past the limit: the request body is cut off, and the stream closed.
                        body.too_large = true;
                        return out.wave("err(closed)");
                    }
                    match zeroes {
                        true => body.bytes.resize(body.bytes.len() + asked as usize, 0),
                        false => body.bytes.extend(bytes_of(params.get(1))),
                    }
                    out.wave("ok")
                }
                "[method]output-stream.flush" | "[method]output-stream.blocking-flush" => {
                    out.wave("ok")
                }
                _ => Err(not_implemented(func)),
            }
        }
        (_, name) => Err(Failure::Trap(format!(
            "{name}: handle {handle} is a stream of the other direction"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_side_is_provided_so_that_components_linking_it_load() {
        for resource in SERVER_SIDE {
            let names: Vec<&str> = PROVIDED[0]
                .1
                .iter()
                .copied()
                .filter(|name| name.contains(&format!("]{resource}")))
                .collect();
            assert!(names.len() >= 3, "{resource}: {names:?}");
            assert!(PROVIDED.is_drop(TYPES, &format!("[resource-drop]{resource}")));
        }
        assert!(PROVIDED.provides(OUTGOING_HANDLER, "handle"));
        assert!(!PROVIDED.provides(TYPES, "handle"));
        assert!(!PROVIDED.is_interface("wasi:http/incoming-handler@0.2"));
    }

    #[test]
    fn handles_count_from_the_base_and_stop_at_the_resource_limit() {
        let mut handles = HttpHandles::default();
        assert_eq!(handles.next().ok(), Some(HANDLE_BASE + 1));
        assert!(owns(HANDLE_BASE + 1) && !owns(1));
        for _ in 0..RESOURCES_MAX {
            let handle = handles.next().ok().expect("below the limit");
            handles.options.insert(handle, Timeouts::default());
        }
        assert!(matches!(handles.next(), Err(Failure::Trap(_))));
        assert_eq!(
            handles.drop_handle("[resource-drop]request-options", HANDLE_BASE + 2),
            Ok(())
        );
        assert!(handles.next().is_ok());
        assert!(handles
            .drop_handle("[resource-drop]fields", HANDLE_BASE + 2)
            .is_err());
    }
}
