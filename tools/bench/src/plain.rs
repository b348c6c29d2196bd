//! The baseline: the same module on plain Wasmer + wasmer-wasix, no durability. Set up the way
//! `runtime/src/worker.rs` sets up a worker (same engine, WASI builder, import object and
//! `_initialize`), minus golemw's gated overrides; imports outside WASI (golem:api) get stubs
//! that trap, so a module such as `counter` instantiates for exports that never call them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _, Result};
use wasmer::{Extern, ExternType, Function, Instance, Module, RuntimeError, Store, Value};

/// A compiled module and what instances of it share: the engine, tokio, the WASI runtime.
pub struct PlainHost {
    /// wasmer-wasix schedules on tokio; entered around every call, as golemw's executor does.
    tokio: tokio::runtime::Runtime,
    engine: wasmer::Engine,
    runtime: Arc<dyn wasmer_wasix::Runtime + Send + Sync>,
    module: Module,
}

/// One instance of a [`PlainHost`]'s module in its own store.
pub struct PlainInstance {
    store: Store,
    instance: Instance,
}

/// Where the time of [`PlainHost::instantiate`] goes.
#[derive(Clone, Copy, Debug, Default)]
pub struct InstantiateTimes {
    /// `Store::new`, the WASI environment and the import object (stubs included).
    pub setup: Duration,
    /// `Instance::new`.
    pub instance: Duration,
    /// `WasiEnv::initialize` and the module's `_initialize`.
    pub initialize: Duration,
}

impl PlainHost {
    /// Compiles `wasm` once; every instance reuses the compiled module.
    pub fn new(wasm: &[u8]) -> Result<Self> {
        let engine = wasmer::Engine::default();
        let tokio = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let task_manager = wasmer_wasix::runtime::task_manager::tokio::TokioTaskManager::new(
            tokio.handle().clone(),
        );
        let mut runtime = wasmer_wasix::PluggableRuntime::new(Arc::new(task_manager));
        runtime.set_engine(engine.clone());
        let module = Module::new(&engine, wasm).context("compiling the module")?;
        Ok(PlainHost {
            tokio,
            engine,
            runtime: Arc::new(runtime),
            module,
        })
    }

    /// A new instance of the compiled module, initialised (`_initialize` run), with how long
    /// each step took.
    pub fn instantiate(&self) -> Result<(PlainInstance, InstantiateTimes)> {
        let _entered = self.tokio.enter();
        let started = Instant::now();
        let mut store = Store::new(self.engine.clone());
        let mut wasi = wasmer_wasix::WasiEnvBuilder::new("bench")
            .runtime(Arc::clone(&self.runtime))
            .finalize(&mut store)
            .map_err(|e| anyhow!("setting up WASI: {e}"))?;
        let mut imports = wasmer_wasix::generate_import_object_from_env(
            &mut store,
            &wasi.env,
            wasmer_wasix::WasiVersion::Snapshot1,
        );
        for import in self.module.imports() {
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
        let setup = started.elapsed();
        let instance = Instance::new(&mut store, &self.module, &imports)
            .context("instantiating the module")?;
        let instantiated = started.elapsed();
        wasi.initialize(&mut store, instance.clone())
            .map_err(|e| anyhow!("initialising WASI: {e}"))?;
        if let Ok(init) = instance.exports.get_function("_initialize") {
            init.call(&mut store, &[])
                .map_err(|e| anyhow!("_initialize: {e}"))?;
        }
        let times = InstantiateTimes {
            setup,
            instance: instantiated - setup,
            initialize: started.elapsed() - instantiated,
        };
        Ok((PlainInstance { store, instance }, times))
    }

    /// Calls a core export of `instance` directly with core values.
    pub fn call(
        &self,
        instance: &mut PlainInstance,
        func: &Function,
        args: &[Value],
    ) -> Result<Box<[Value]>> {
        let _entered = self.tokio.enter();
        func.call(&mut instance.store, args)
            .map_err(|e| anyhow!("calling the export: {e}"))
    }
}

impl PlainInstance {
    /// Reads every byte of the linear memory the way a snapshot restore's zero check does (a
    /// word at a time, per 64 KiB page); returns the time and the pages that are not all zero.
    pub fn zero_scan(&self) -> Result<(Duration, usize)> {
        let memory = self.instance.exports.get_memory("memory")?;
        let view = memory.view(&self.store);
        let started = Instant::now();
        // SAFETY: no wasm code runs while the slice is alive (the store is borrowed shared).
        let data = unsafe { view.data_unchecked() };
        let nonzero = data
            .chunks(golemw_snapshot::PAGE_BYTES)
            .filter(|page| {
                // SAFETY: every bit pattern is a valid u64.
                let (head, words, tail) = unsafe { page.align_to::<u64>() };
                !(head.iter().all(|b| *b == 0)
                    && words.iter().all(|w| *w == 0)
                    && tail.iter().all(|b| *b == 0))
            })
            .count();
        Ok((started.elapsed(), std::hint::black_box(nonzero)))
    }

    /// The core export `name`, to call with [`PlainHost::call`].
    pub fn function(&self, name: &str) -> Result<Function> {
        Ok(self.instance.exports.get_function(name)?.clone())
    }
}

/// One instance on its own host: the baseline of the per-invocation figures.
pub struct PlainWasmer {
    host: PlainHost,
    instance: PlainInstance,
}

impl PlainWasmer {
    pub fn new(wasm: &[u8]) -> Result<Self> {
        let host = PlainHost::new(wasm)?;
        let (instance, _) = host.instantiate()?;
        Ok(PlainWasmer { host, instance })
    }

    /// The core export `name`, to call with [`PlainWasmer::call`].
    pub fn function(&self, name: &str) -> Result<Function> {
        self.instance.function(name)
    }

    /// Calls a core export directly with core values.
    pub fn call(&mut self, func: &Function, args: &[Value]) -> Result<Box<[Value]>> {
        self.host.call(&mut self.instance, func, args)
    }
}
