//! Host functions the guest imports: WASI preview 1 (from wasmer-wasix, with the
//! non-deterministic calls overridden to go through the durability gate) and golem:api.

pub mod blobstore;
pub mod context;
pub mod get_workers;
pub mod golem;
pub mod http;
pub mod keyvalue;
pub mod persistence;
pub mod promises;
pub mod rpc;
mod stored;
pub mod wasi;
pub mod wasi2;

use std::sync::Arc;

use wasmer::{AsStoreMut, Function, Memory, RuntimeError};

use crate::abi::{AbiError, CoreValue, GuestMemory};
use crate::component::Interface;
use crate::gate::Gate;
pub use context::WorkerContext;

/// The core import module of `golem:api/host@0.2.0`.
pub use crate::component::GOLEM_HOST_MODULE;
/// The core import module of WASI preview 1.
pub const WASI_MODULE: &str = "wasi_snapshot_preview1";

/// Whether the runtime provides the core import `module.name`.
pub fn is_provided_import(module: &str, name: &str) -> bool {
    let key = crate::component::interface_key(module);
    match key.as_ref() {
        WASI_MODULE => wasi::PREVIEW1_FUNCTIONS.contains(&name),
        GOLEM_HOST_MODULE => golem::PROVIDED.contains(&name),
        crate::component::GOLEM_RPC_MODULE => rpc::RPC_PROVIDED.contains(&name),
        crate::component::WASI_POLL_MODULE => rpc::POLL_PROVIDED.contains(&name),
        key if wasi2::PROVIDED.is_interface(key) => wasi2::PROVIDED.provides(key, name),
        key if http::PROVIDED.is_interface(key) => http::PROVIDED.provides(key, name),
        key if keyvalue::PROVIDED.is_interface(key) => keyvalue::PROVIDED.provides(key, name),
        key if blobstore::PROVIDED.is_interface(key) => blobstore::PROVIDED.provides(key, name),
        module => crate::stubs::is_stub_import(module, name),
    }
}

/// State shared by the host functions of one worker instance (the `FunctionEnv` data).
pub struct HostState {
    /// The durability gate: every non-deterministic host call goes through it.
    pub gate: Gate,
    /// Who the worker is: for metadata and URIs.
    pub context: Arc<WorkerContext>,
    /// The component's decoded WIT interface (import ABIs).
    pub interface: Arc<Interface>,
    /// The guest's exported memory, once instantiated.
    pub memory: Option<Memory>,
    /// The guest's `cabi_realloc`, once instantiated.
    pub realloc: Option<Function>,
    /// wasmer-wasix's own `fd_write`, for descriptors other than stdout and stderr.
    pub wasi_fd_write: Option<Function>,
    /// The last monotonic clock reading handed to the guest, live or replayed: readings never
    /// go backwards, even across a restart of the host.
    pub last_monotonic_ns: u64,
    /// `update-worker` calls made live during the current invocation; the executor applies
    /// them once the invocation is over (updates wait until their worker is idle).
    pub update_requests: Vec<crate::history::UpdateRequest>,
    /// Open `get-workers` resources.
    pub enumerations: get_workers::Enumerations,
    /// Retry policy, persistence level, idempotence mode, open atomic regions.
    pub persistence: persistence::Persistence,
    /// The idempotency key of the invocation running (live or replayed): calls to other
    /// workers derive theirs from it.
    pub invocation_key: String,
    /// Open WASI 0.2 streams.
    pub wasi2: wasi2::Handles,
    /// Open `wasi:http` resources (requests, responses, their bodies and streams).
    pub http: http::HttpHandles,
    /// Open `wasi:keyvalue` buckets, values and errors.
    pub keyvalue: keyvalue::Handles,
    /// Open `wasi:blobstore` containers, values and listings.
    pub blobstore: blobstore::Handles,
    /// Open `golem:rpc` clients, futures and their pollables.
    pub rpc: rpc::RpcHandles,
    /// How calls reach other workers (the executor); `None`: they fail with `protocol-error`.
    pub rpc_dispatch: Option<Arc<dyn crate::rpc::Dispatch>>,
    /// Sleeps at least this long suspend the worker durably instead of holding its thread
    /// (a server sets it; one-shot commands sleep in the process).
    pub durable_sleep_min: Option<std::time::Duration>,
}

/// The guest memory and allocator as the canonical ABI sees them.
pub struct GuestMem<'a, S: AsStoreMut> {
    pub store: &'a mut S,
    pub memory: &'a Memory,
    pub realloc: Option<&'a Function>,
}

impl<S: AsStoreMut> GuestMemory for GuestMem<'_, S> {
    fn read(&self, offset: u32, out: &mut [u8]) -> Result<(), AbiError> {
        self.memory
            .view(&*self.store)
            .read(u64::from(offset), out)
            .map_err(|_| AbiError::OutOfBounds {
                address: u64::from(offset),
                length: out.len() as u64,
            })
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), AbiError> {
        self.memory
            .view(&*self.store)
            .write(u64::from(offset), bytes)
            .map_err(|_| AbiError::OutOfBounds {
                address: u64::from(offset),
                length: bytes.len() as u64,
            })
    }

    fn realloc(
        &mut self,
        old_ptr: u32,
        old_size: u32,
        align: u32,
        new_size: u32,
    ) -> Result<u32, AbiError> {
        let failed = |reason: String| AbiError::AllocationFailed {
            size: new_size,
            align,
            reason,
        };
        let realloc = self
            .realloc
            .ok_or_else(|| failed("the guest does not export cabi_realloc".into()))?;
        let args = [
            wasmer::Value::I32(old_ptr as i32),
            wasmer::Value::I32(old_size as i32),
            wasmer::Value::I32(align as i32),
            wasmer::Value::I32(new_size as i32),
        ];
        let result = realloc
            .call(self.store, &args)
            .map_err(|e| failed(format!("cabi_realloc trapped: {e}")))?;
        match result.first() {
            Some(wasmer::Value::I32(ptr)) => Ok(*ptr as u32),
            _ => Err(failed("cabi_realloc did not return an i32".into())),
        }
    }
}

/// Converts between the ABI's engine-independent values and wasmer's.
pub fn to_wasmer(value: CoreValue) -> wasmer::Value {
    match value {
        CoreValue::I32(v) => wasmer::Value::I32(v),
        CoreValue::I64(v) => wasmer::Value::I64(v),
        CoreValue::F32(v) => wasmer::Value::F32(v),
        CoreValue::F64(v) => wasmer::Value::F64(v),
    }
}

/// See [`to_wasmer`].
pub fn from_wasmer(value: &wasmer::Value) -> Result<CoreValue, RuntimeError> {
    Ok(match value {
        wasmer::Value::I32(v) => CoreValue::I32(*v),
        wasmer::Value::I64(v) => CoreValue::I64(*v),
        wasmer::Value::F32(v) => CoreValue::F32(*v),
        wasmer::Value::F64(v) => CoreValue::F64(*v),
        other => {
            return Err(RuntimeError::new(format!(
                "unexpected core value {other:?} in a canonical-ABI call"
            )))
        }
    })
}

/// The functions a host module of WASI 0.2-style interfaces provides, by version-less
/// interface: what it answers for a guest's imports.
pub struct Provided(pub &'static [(&'static str, &'static [&'static str])]);

impl Provided {
    /// Whether `name` of interface `key` is provided.
    pub fn provides(&self, key: &str, name: &str) -> bool {
        self.0
            .iter()
            .any(|(interface, names)| *interface == key && names.contains(&name))
    }

    /// Whether `key` is one of these interfaces.
    pub fn is_interface(&self, key: &str) -> bool {
        self.0.iter().any(|(interface, _)| *interface == key)
    }

    /// Resource destructors (core imports `(i32) -> ()`).
    pub fn is_drop(&self, key: &str, name: &str) -> bool {
        self.is_interface(key) && name.starts_with("[resource-drop]")
    }
}

impl std::ops::Deref for Provided {
    type Target = [(&'static str, &'static [&'static str])];

    fn deref(&self) -> &Self::Target {
        self.0
    }
}

/// How a host function of the canonical ABI failed.
pub(crate) enum Failure {
    /// The runtime cannot go on (storage, divergence, a stop request): the worker reports it.
    Fatal(crate::error::Error),
    /// The guest misused the API (an unknown handle): it traps, like any other trap.
    Trap(String),
    /// The guest exited (WASI 0.2 `exit`): the invocation ends as preview 1's `proc_exit`.
    Exit(u32),
    /// Nothing failed, but the guest must stop here (a jump, an await, a long sleep).
    Unwind(crate::outcome::Unwind),
}

impl From<crate::error::Error> for Failure {
    /// A trap the guest caused fails the invocation like any other trap; anything else stops
    /// the runtime's work on it.
    fn from(err: crate::error::Error) -> Self {
        match err {
            crate::error::Error::Trap { function, message } => {
                Failure::Trap(format!("{function}: {message}"))
            }
            err => Failure::Fatal(err),
        }
    }
}

impl From<crate::abi::AbiError> for Failure {
    fn from(err: crate::abi::AbiError) -> Self {
        Failure::Fatal(err.into())
    }
}

/// A host function failed in a way that must stop the guest; the error itself is kept in the
/// gate (see [`Gate::set_fatal`]) and reported by the worker.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HostAbort(pub String);

/// Unwinds the guest for `why`, remembering it in the gate (see [`Gate::set_unwind`]).
pub fn unwind(gate: &mut Gate, why: crate::outcome::Unwind) -> RuntimeError {
    let message = format!("unwound: {why:?}");
    gate.set_unwind(why);
    RuntimeError::user(Box::new(HostAbort(message)))
}

/// Stops the guest with `err`, remembering it in the gate.
pub fn abort(gate: &mut Gate, err: crate::error::Error) -> RuntimeError {
    let message = err.to_string();
    gate.set_fatal(err);
    RuntimeError::user(Box::new(HostAbort(message)))
}
