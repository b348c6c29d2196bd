//! Cold start (issue figure 2): a new worker created from a compiled module the executor has
//! already cached, and its first invocation (`counter`'s `get`), against plain Wasmer
//! instantiating the same compiled module and calling the core export.

use crate::workers::Completes;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _, Result};
use golemw_runtime::storage::{IoCounts, Storage};
use golemw_runtime::{Executor, ExecutorOptions, WorkerId};
use lmdb::WriteFlags;

use crate::plain::{InstantiateTimes, PlainHost, PlainInstance};
use crate::report::{Figure, Goal, Table};
use crate::stats::{fmt, ratio, Samples};
use crate::Ctx;

const EXPORT: &str = "golemw:counter/api#get";
const WARMUP: usize = 20;
/// Workers (or plain instances) kept alive before the executor is reopened (instances dropped),
/// so memory does not grow with the number of samples.
const ACTIVE_MAX: usize = 100;
/// The goal for a cold start, ms.
const GOAL_MS: f64 = 1.0;
/// Golem 1.0's cold start over REST, ms.
const GOLEM_1_MS: f64 = 11.5;

/// An executor on its own data directory, reopened every [`ACTIVE_MAX`] workers.
struct Side {
    dir: tempfile::TempDir,
    options: ExecutorOptions,
    /// `create_worker` then `invoke`; else `invoke` alone, which creates the worker.
    explicit: bool,
    executor: Option<Arc<Executor>>,
    /// Workers created by the open executor.
    active: usize,
    created: u64,
    /// Per sample: create_worker, the first invoke, its Worker::recover, a second invoke.
    create: Samples,
    first: Samples,
    recover: Samples,
    second: Samples,
    total: Samples,
    /// LMDB commits and syncs of the last sample's cold start (creation + first invoke).
    io: IoCounts,
}

impl Side {
    fn new(ctx: &Ctx, fsync: bool, explicit: bool, runs: usize) -> Result<Self> {
        let options = ExecutorOptions {
            echo_output: false,
            fsync,
            ..ExecutorOptions::default()
        };
        let samples = || Samples::with_capacity(runs);
        Ok(Side {
            dir: ctx.temp_dir()?,
            options,
            explicit,
            executor: None,
            active: 0,
            created: 0,
            create: samples(),
            first: samples(),
            recover: samples(),
            second: samples(),
            total: samples(),
            io: IoCounts::default(),
        })
    }

    /// fsyncs of one cold start: each commit fsyncs its data and each sync the meta page,
    /// when fsync is on.
    fn fsyncs(&self) -> u64 {
        match self.options.fsync {
            true => self.io.commits + self.io.syncs,
            false => 0,
        }
    }

    /// Opens the executor (again, dropping its workers, once [`ACTIVE_MAX`] were created in
    /// it) and has it cache the compiled module through one untimed worker.
    fn ensure_open(&mut self, wasm: &[u8]) -> Result<()> {
        if self.active >= ACTIVE_MAX {
            self.executor = None;
        }
        if self.executor.is_none() {
            let executor = Executor::open(self.dir.path(), self.options.clone())?;
            if executor.components().resolve_id("counter").is_err() {
                executor.components().add("counter", wasm)?;
            }
            let id = self.next_id(&executor)?;
            executor.invoke(&id, EXPORT, &[], None).done()?;
            self.executor = Some(executor);
            self.active = 1;
        }
        Ok(())
    }

    fn next_id(&mut self, executor: &Executor) -> Result<WorkerId> {
        self.created += 1;
        Ok(executor.worker_id("counter", &format!("w{}", self.created))?)
    }

    /// Creates a worker and invokes it twice; records the times if `record`.
    fn sample(&mut self, wasm: &[u8], record: bool) -> Result<()> {
        self.ensure_open(wasm)?;
        let id = {
            let executor = self.executor.as_ref().expect("opened above");
            self.created += 1;
            executor.worker_id("counter", &format!("w{}", self.created))?
        };
        let executor = self.executor.as_mut().expect("opened above");
        let io_before = executor.storage().io_counts();
        let started = Instant::now();
        if self.explicit {
            executor.create_worker(&id, Vec::new(), Vec::new())?;
        }
        let created = started.elapsed();
        let first = executor.invoke(&id, EXPORT, &[], None).done()?;
        let total = started.elapsed();
        let io_after = executor.storage().io_counts();
        let started = Instant::now();
        let second = executor.invoke(&id, EXPORT, &[], None).done()?;
        let again = started.elapsed();
        ensure!(
            first.result.as_deref() == Some("0") && second.result.as_deref() == Some("0"),
            "a new counter should read 0, got {:?} and {:?}",
            first.result,
            second.result
        );
        let recovery = executor
            .worker_record(&id)?
            .last_recovery
            .context("the worker was not recovered")?;
        // A stored worker is recovered from its `create` entry; one created by its first
        // invocation starts from memory and replays nothing.
        let replayed = u64::from(self.explicit);
        ensure!(
            recovery.snapshot_index.is_none() && recovery.entries_replayed == replayed,
            "a new worker should replay {replayed} entries: {recovery:?}"
        );
        self.io = IoCounts {
            commits: io_after.commits - io_before.commits,
            syncs: io_after.syncs - io_before.syncs,
            grouped_writes: io_after.grouped_writes - io_before.grouped_writes,
        };
        self.active += 1;
        if record {
            self.create.push(created);
            self.first.push(total - created);
            self.recover
                .push(Duration::from_micros(recovery.duration_us));
            self.second.push(again);
            self.total.push(total);
        }
        Ok(())
    }
}

/// Plain Wasmer: instances of one compiled module, dropped every [`ACTIVE_MAX`].
struct Plain {
    host: PlainHost,
    alive: Vec<PlainInstance>,
    setup: Samples,
    instance: Samples,
    initialize: Samples,
    call: Samples,
    total: Samples,
}

impl Plain {
    fn sample(&mut self, record: bool) -> Result<()> {
        if self.alive.len() >= ACTIVE_MAX {
            self.alive.clear();
        }
        let started = Instant::now();
        let (mut instance, times): (_, InstantiateTimes) = self.host.instantiate()?;
        let func = instance.function(EXPORT)?;
        let instantiated = started.elapsed();
        let out = self.host.call(&mut instance, &func, &[])?;
        let total = started.elapsed();
        ensure!(out.len() == 1, "get returned {} values", out.len());
        self.alive.push(instance);
        if record {
            self.setup.push(times.setup);
            self.instance.push(times.instance);
            self.initialize.push(times.initialize);
            self.call.push(total - instantiated);
            self.total.push(total);
        }
        Ok(())
    }
}

/// The fsyncs of a small durable commit alone: a transaction putting a worker-record-sized
/// value and an oplog-block-sized value, what an invocation without an idempotency key commits
/// (its commit fsyncs the data), then `Storage::sync` (fsyncs the meta page).
struct FsyncProbe {
    storage: Storage,
    _dir: tempfile::TempDir,
    n: u64,
    commit: Samples,
    sync: Samples,
}

impl FsyncProbe {
    fn sample(&mut self, record: bool) -> Result<()> {
        self.n += 1;
        let tables = self.storage.tables();
        let key = [self.n.to_be_bytes(), [7u8; 8]].concat();
        let started = Instant::now();
        self.storage.write(|txn| {
            txn.put(tables.workers, &key, &[7u8; 160], WriteFlags::empty())?;
            txn.put(tables.oplog, &key, &[7u8; 120], WriteFlags::empty())?;
            Ok(())
        })?;
        let committed = started.elapsed();
        let started = Instant::now();
        self.storage.sync()?;
        if record {
            self.commit.push(committed);
            self.sync.push(started.elapsed());
        }
        Ok(())
    }
}

pub fn run(ctx: &Ctx) -> Result<Figure> {
    let wasm = std::fs::read(golemw_tests::guest_wasm("counter"))?;
    let runs = ctx.cold_start_runs;
    let mut implicit = Side::new(ctx, true, false, runs)?;
    let mut implicit_batched = Side::new(ctx, false, false, runs)?;
    let mut durable = Side::new(ctx, true, true, runs)?;
    let mut batched = Side::new(ctx, false, true, runs)?;
    let samples = || Samples::with_capacity(runs);
    let mut plain = Plain {
        host: PlainHost::new(&wasm)?,
        alive: Vec::with_capacity(ACTIVE_MAX),
        setup: samples(),
        instance: samples(),
        initialize: samples(),
        call: samples(),
        total: samples(),
    };
    let probe_dir = ctx.temp_dir()?;
    let mut probe = FsyncProbe {
        storage: Storage::open(probe_dir.path())?,
        _dir: probe_dir,
        n: 0,
        commit: Samples::with_capacity(runs),
        sync: Samples::with_capacity(runs),
    };
    let bar = ctx.progress("cold-start", (WARMUP + runs) as u64);
    for round in 0..WARMUP + runs {
        let record = round >= WARMUP;
        for k in 0..6 {
            match (round + k) % 6 {
                0 => implicit.sample(&wasm, record)?,
                1 => durable.sample(&wasm, record)?,
                2 => batched.sample(&wasm, record)?,
                3 => probe.sample(record)?,
                4 => implicit_batched.sample(&wasm, record)?,
                _ => plain.sample(record)?,
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(figure(
        runs,
        [&implicit, &implicit_batched],
        &durable,
        &batched,
        &plain,
        &probe,
    ))
}

fn figure(
    runs: usize,
    [implicit, implicit_batched]: [&Side; 2],
    durable: &Side,
    batched: &Side,
    plain: &Plain,
    probe: &FsyncProbe,
) -> Figure {
    let fsync = &probe.sync;
    let base = plain.total.median();
    let mut table = Table::new(&[
        "configuration",
        "cold start p50 µs",
        "p99 µs",
        "× plain Wasmer (p50)",
        "create_worker p50 µs",
        "first invoke p50 µs",
        "of it Worker::recover p50 µs",
        "second invoke p50 µs",
        "commits / fsyncs",
    ]);
    let mut metrics = Vec::new();
    for (name, side) in [
        (
            "golemw, invoke of a new worker name (creates it), durable commit",
            implicit,
        ),
        (
            "golemw, invoke of a new worker name (creates it), batched commit",
            implicit_batched,
        ),
        (
            "golemw, create_worker + invoke, durable commits (fsync, the default)",
            durable,
        ),
        (
            "golemw, create_worker + invoke, batched commits (no fsync)",
            batched,
        ),
    ] {
        let create = if side.explicit {
            fmt(side.create.median())
        } else {
            "in invoke".into()
        };
        table.row(vec![
            name.to_string(),
            fmt(side.total.median()),
            fmt(side.total.p99()),
            ratio(side.total.median(), base),
            create,
            fmt(side.first.median()),
            fmt(side.recover.median()),
            fmt(side.second.median()),
            format!("{} / {}", side.io.commits, side.fsyncs()),
        ]);
        metrics.push((format!("{name}: p50_us"), side.total.median()));
        metrics.push((format!("{name}: p99_us"), side.total.p99()));
        metrics.push((format!("{name}: create_p50_us"), side.create.median()));
        metrics.push((format!("{name}: first_p50_us"), side.first.median()));
        metrics.push((format!("{name}: recover_p50_us"), side.recover.median()));
        metrics.push((format!("{name}: second_p50_us"), side.second.median()));
    }
    table.row(vec![
        "plain Wasmer: instantiate + first call".into(),
        fmt(base),
        fmt(plain.total.p99()),
        ratio(base, base),
        String::new(),
        String::new(),
        String::new(),
        String::new(),
        "0 / 0".into(),
    ]);
    metrics.push(("plain: p50_us".into(), base));
    metrics.push(("plain: p99_us".into(), plain.total.p99()));

    let mut split = Table::new(&["step, timed alone", "p50 µs", "p99 µs"]);
    for (name, s) in [
        (
            "plain Wasmer: Store::new + WASI env + import object (with stubs)",
            &plain.setup,
        ),
        ("plain Wasmer: Instance::new", &plain.instance),
        (
            "plain Wasmer: WasiEnv::initialize + _initialize",
            &plain.initialize,
        ),
        ("plain Wasmer: export lookup + call of `get`", &plain.call),
        (
            "commit of a small 2-value LMDB transaction (fsyncs its data)",
            &probe.commit,
        ),
        ("Storage::sync after it (fsyncs the meta page)", fsync),
    ] {
        split.row(vec![name.to_string(), fmt(s.median()), fmt(s.p99())]);
        metrics.push((format!("plain {name}: p50_us"), s.median()));
    }

    let goal_implicit = Goal::under(
        "cold start p50 (invoke of a new worker, durable)",
        implicit.total.median() / 1000.0,
        GOAL_MS,
        "ms",
    );
    let goal_durable = Goal::under(
        "cold start p50 (create_worker + invoke, durable)",
        durable.total.median() / 1000.0,
        GOAL_MS,
        "ms",
    );
    let goal_batched = Goal::under(
        "cold start p50 (create_worker + invoke, batched)",
        batched.total.median() / 1000.0,
        GOAL_MS,
        "ms",
    );
    let mut notes = Vec::new();
    for (what, side) in [
        ("invoke of a new worker, durable", implicit),
        ("create_worker + invoke, durable", durable),
    ] {
        let p50 = side.total.median();
        if p50 >= GOAL_MS * 1000.0 {
            // Each durable commit is two fsyncs; the floor is that many commits timed alone
            // plus plain Wasmer's instantiate and call.
            let commits = side.fsyncs() / 2;
            let floor = commits as f64 * (probe.commit.median() + fsync.median()) + base;
            notes.push(format!(
                "Cold start ({what}) missed by {} µs; dominated by fsyncs: it is {} µs over \
                 the batched cold start ({} µs), that is {} fsyncs (a small commit's data \
                 fsync, timed alone in this run: {} µs p50; the meta page's: {} µs). LMDB must \
                 sync a commit's data before its meta page, so a durable commit costs two. Its \
                 floor on this disk, {commits} durable commit(s) timed alone plus plain \
                 Wasmer's instantiate and call, is {} µs{}; it takes {} of it. Only a faster \
                 disk or batched commits remove the fsyncs.",
                fmt(p50 - GOAL_MS * 1000.0),
                fmt(p50 - batched.total.median()),
                fmt(batched.total.median()),
                side.fsyncs(),
                fmt(probe.commit.median()),
                fmt(fsync.median()),
                fmt(floor),
                if floor >= GOAL_MS * 1000.0 {
                    " (above the goal: a measured limit)"
                } else {
                    ""
                },
                ratio(p50, floor),
            ));
        }
    }
    let b = batched;
    let activation_rest = b.first.median() - b.recover.median() - b.second.median();
    notes.push(format!(
        "Batched, where the {} µs go (p50s): create_worker {} µs (worker record + `create` entry \
         in one LMDB transaction); Worker::recover {} µs (store, WASI env, golemw's imports, \
         Instance::new, _initialize, replay of `create`), against {} µs for plain Wasmer's \
         instantiate steps; the invocation itself about {} µs (the second invoke of the same \
         worker); the rest of the first invoke, {} µs, is activation around Worker::recover \
         (record reads, the oplog and snapshot lookups).",
        fmt(b.total.median()),
        fmt(b.create.median()),
        fmt(b.recover.median()),
        fmt(plain.setup.median() + plain.instance.median() + plain.initialize.median()),
        fmt(b.second.median()),
        fmt(activation_rest),
    ));
    notes.push(format!(
        "create_worker + invoke, durable − batched: {} µs at p50, {} fsyncs (create_worker's \
         durable commit, then the invocation's). Invoking a new worker name creates it in \
         memory and its invocation's durable commit stores it ({} fsyncs): {} µs over the \
         same without fsync ({} µs, against {} µs for plain Wasmer). \
         The floor of a durable cold start on this disk is one durable commit ({} µs: the \
         two fsyncs timed alone) plus plain Wasmer's instantiate and call ({} µs): {} µs{}; \
         invoking a new worker name takes {} of it.",
        fmt(durable.total.median() - batched.total.median()),
        durable.fsyncs(),
        implicit.fsyncs(),
        fmt(implicit.total.median() - implicit_batched.total.median()),
        fmt(implicit_batched.total.median()),
        fmt(base),
        fmt(probe.commit.median() + fsync.median()),
        fmt(base),
        fmt(probe.commit.median() + fsync.median() + base),
        if probe.commit.median() + fsync.median() + base > GOAL_MS * 1000.0 {
            format!(
                " (above the {GOAL_MS} ms goal: no durable cold start can meet it on this disk)"
            )
        } else {
            String::new()
        },
        ratio(
            implicit.total.median(),
            probe.commit.median() + fsync.median() + base
        ),
    ));
    notes.push(format!(
        "Golem 1.0 measured {GOLEM_1_MS} ms over REST; golemw in process: {} ms durable \
         (invoke of a new worker, {:.1}× less), {} ms batched ({:.1}× less).",
        fmt(implicit.total.median() / 1000.0),
        GOLEM_1_MS * 1000.0 / implicit.total.median(),
        fmt(batched.total.median() / 1000.0),
        GOLEM_1_MS * 1000.0 / batched.total.median(),
    ));
    Figure {
        id: "cold-start",
        title: "7. Cold start of a new worker from a cached module".into(),
        method: format!(
            "`Executor::create_worker` of a new `counter` worker and its first \
             `Executor::invoke` of `get` (which activates it: record read, Worker::recover from \
             its one-entry oplog, then the invocation and its commit), timed together; and \
             `Executor::invoke` of `get` on a new worker name alone, which creates the worker \
             (the way Golem creates workers on first invocation: instantiated from memory, \
             stored by the invocation's commit). {runs} \
             samples per configuration after {WARMUP} warm-up samples, configurations \
             interleaved. The executor has compiled and cached the module before (an untimed \
             worker after each open); it is reopened every {ACTIVE_MAX} workers so at most \
             {ACTIVE_MAX} are in memory, as many as the plain instances kept alive. Also timed: a \
             second invoke of the same worker (a warm invocation). Plain Wasmer instantiates \
             the same compiled module in a new Store (WASI env, import object, Instance::new, \
             `_initialize`) and calls the core export `{EXPORT}`; its steps are in the second \
             table, with the fsyncs of a small durable LMDB commit on a data directory of its own, \
             interleaved with the rest. Commits and fsyncs per cold start are counted by \
             `Storage::io_counts`. Default snapshot policy, worker names `w1`, `w2`, …"
        ),
        tables: vec![table, split],
        goals: vec![goal_implicit, goal_durable, goal_batched],
        notes,
        metrics,
    }
}
