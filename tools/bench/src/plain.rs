//! The baseline: the same module on plain Wasmer + wasmer-wasix, no durability. Set up the way
//! `runtime/src/worker.rs` sets up a worker (same engine, WASI builder, import object and
//! `_initialize`), minus golemw's gated overrides; imports outside WASI (golem:api) get stubs
//! that trap, so a module such as `counter` instantiates for exports that never call them.

use std::sync::Arc;

use anyhow::{anyhow, Context as _, Result};
use wasmer::{Extern, ExternType, Function, Instance, Module, RuntimeError, Store, Value};

pub struct PlainWasmer {
    /// wasmer-wasix schedules on tokio; entered around every call, as golemw's executor does.
    tokio: tokio::runtime::Runtime,
    store: Store,
    instance: Instance,
}

impl PlainWasmer {
    pub fn new(wasm: &[u8]) -> Result<Self> {
        let engine = wasmer::Engine::default();
        let tokio = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let _entered = tokio.enter();
        let task_manager = wasmer_wasix::runtime::task_manager::tokio::TokioTaskManager::new(
            tokio.handle().clone(),
        );
        let mut runtime = wasmer_wasix::PluggableRuntime::new(Arc::new(task_manager));
        runtime.set_engine(engine.clone());
        let mut store = Store::new(engine);
        let module = Module::new(&store, wasm).context("compiling the module")?;
        let mut wasi = wasmer_wasix::WasiEnvBuilder::new("bench")
            .runtime(Arc::new(runtime))
            .finalize(&mut store)
            .map_err(|e| anyhow!("setting up WASI: {e}"))?;
        let mut imports = wasmer_wasix::generate_import_object_from_env(
            &mut store,
            &wasi.env,
            wasmer_wasix::WasiVersion::Snapshot1,
        );
        for import in module.imports() {
            if imports.get_export(import.module(), import.name()).is_some() {
                continue;
            }
            if let ExternType::Function(ty) = import.ty() {
                let what = format!("{}.{}", import.module(), import.name());
                let stub = Function::new(&mut store, ty, move |_| {
                    Err(RuntimeError::new(format!(
                        "{what} is a stub in the baseline"
                    )))
                });
                imports.define(import.module(), import.name(), Extern::Function(stub));
            }
        }
        let instance =
            Instance::new(&mut store, &module, &imports).context("instantiating the module")?;
        wasi.initialize(&mut store, instance.clone())
            .map_err(|e| anyhow!("initialising WASI: {e}"))?;
        if let Ok(init) = instance.exports.get_function("_initialize") {
            init.call(&mut store, &[])
                .map_err(|e| anyhow!("_initialize: {e}"))?;
        }
        drop(_entered);
        Ok(PlainWasmer {
            tokio,
            store,
            instance,
        })
    }

    /// The core export `name`, to call with [`PlainWasmer::call`].
    pub fn function(&self, name: &str) -> Result<Function> {
        Ok(self.instance.exports.get_function(name)?.clone())
    }

    /// Calls a core export directly with core values.
    pub fn call(&mut self, func: &Function, args: &[Value]) -> Result<Box<[Value]>> {
        let _entered = self.tokio.enter();
        func.call(&mut self.store, args)
            .map_err(|e| anyhow!("calling the export: {e}"))
    }
}
