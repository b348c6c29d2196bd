//! Many workers (issue figure 7): thousands of idle `counter` workers on disk, each with state
//! and a snapshot; activation of random ones (restore + first invocation) and the resident
//! memory of 100 active workers, against plain Wasmer instances of the same module.

use crate::workers::Completes;
use std::os::unix::fs::MetadataExt as _;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _, Result};
use golemw_runtime::{Executor, ExecutorOptions, SnapshotPolicy, WorkerId};

use crate::plain::PlainHost;
use crate::report::{Figure, Table};
use crate::stats::{count, fmt, median, ratio, Rss, Samples};
use crate::Ctx;

const ADD: &str = "golemw:counter/api#add";
const GET: &str = "golemw:counter/api#get";
/// Workers active at once in an activation round.
const ACTIVE: usize = 100;
/// Activation rounds: even ones with durable commits, odd ones batched.
const ROUNDS: usize = 6;
/// Workers created per executor during setup (the executor keeps every worker it touched in
/// memory until it is dropped).
const SETUP_BATCH: usize = 250;
/// Oplog entries of a worker after setup: `create` and three invocations of two entries.
const SETUP_ENTRIES: u64 = 7;

fn name(i: usize) -> String {
    format!("w{i:05}")
}

/// splitmix64: a fixed pseudo-random order, the same in every run.
fn shuffled(n: usize) -> Vec<usize> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        order.swap(i, (next() % (i as u64 + 1)) as usize);
    }
    order
}

struct Setup {
    seconds: f64,
    /// Per worker: capture_us of its snapshot, pages stored, bytes of new pages.
    capture: Samples,
    pages_stored: Vec<f64>,
    bytes_new: Vec<f64>,
    memory_bytes: u64,
}

/// Creates `n` workers, each with counter = i + 2 after `add(i)`, `add(1)`, `add(1)`, and a
/// snapshot at its last entry. Batched commits (no fsync), snapshot policy off.
fn setup(ctx: &Ctx, dir: &std::path::Path, wasm: &[u8], n: usize) -> Result<Setup> {
    let options = ExecutorOptions {
        echo_output: false,
        fsync: false,
        snapshot_policy: SnapshotPolicy::Off,
        ..ExecutorOptions::default()
    };
    let started = Instant::now();
    let bar = ctx.progress("many-workers", n as u64);
    bar.set_message("creating workers");
    let mut capture = Samples::with_capacity(n);
    let mut pages_stored = Vec::with_capacity(n);
    let mut bytes_new = Vec::with_capacity(n);
    let mut memory_bytes = 0;
    let mut executor = None;
    for i in 0..n {
        if i % SETUP_BATCH == 0 {
            // The old executor holds the directory's lock: drop it first.
            drop(executor.take());
            let ex = Executor::open(dir, options.clone())?;
            if i == 0 {
                ex.components().add("counter", wasm)?;
            }
            executor = Some(ex);
        }
        let ex = executor.as_mut().expect("opened above");
        let id = ex.worker_id("counter", &name(i))?;
        ex.create_worker(&id, Vec::new(), Vec::new())?;
        for add in [i, 1, 1] {
            ex.invoke(&id, ADD, &[add.to_string()], None).done()?;
        }
        let stats = ex.snapshot(&id)?;
        capture.push(Duration::from_micros(stats.capture_us));
        pages_stored.push(f64::from(stats.pages_stored));
        bytes_new.push(stats.bytes_new as f64);
        if i == 0 {
            memory_bytes = u64::from(stats.pages_total) * 65536;
        }
        bar.inc(1);
    }
    drop(executor);
    bar.finish_and_clear();
    Ok(Setup {
        seconds: started.elapsed().as_secs_f64(),
        capture,
        pages_stored,
        bytes_new,
        memory_bytes,
    })
}

/// One configuration's activations.
#[derive(Default)]
struct Activations {
    total: Samples,
    recover: Samples,
    restore: Samples,
}

/// Plain Wasmer: `ACTIVE` instances of the compiled module, each initialised and called once.
struct PlainRun {
    instantiate: Samples,
    /// RSS before and after instantiating `ACTIVE` instances.
    rss: (Rss, Rss),
    /// Reading every byte of a fresh instance's memory, and its non-zero 64 KiB pages.
    zero_scan: Samples,
    nonzero_pages: usize,
}

fn plain_run(wasm: &[u8]) -> Result<PlainRun> {
    let host = PlainHost::new(wasm)?;
    // Warm up (allocator, engine, code pages), then measure from a clean state.
    for _ in 0..2 {
        let mut alive = Vec::with_capacity(ACTIVE);
        for _ in 0..ACTIVE {
            alive.push(host.instantiate()?.0);
        }
    }
    let before = Rss::now();
    let mut alive = Vec::with_capacity(ACTIVE);
    let mut instantiate = Samples::with_capacity(ACTIVE);
    for _ in 0..ACTIVE {
        let started = Instant::now();
        let (mut instance, _) = host.instantiate()?;
        let func = instance.function(GET)?;
        host.call(&mut instance, &func, &[])?;
        instantiate.push(started.elapsed());
        alive.push(instance);
    }
    let rss = (before, Rss::now());
    drop(alive);
    let mut zero_scan = Samples::with_capacity(ACTIVE);
    let mut nonzero_pages = 0;
    for _ in 0..ACTIVE {
        let (instance, _) = host.instantiate()?;
        let (elapsed, nonzero) = instance.zero_scan()?;
        zero_scan.push(elapsed);
        nonzero_pages = nonzero;
    }
    Ok(PlainRun {
        instantiate,
        rss,
        zero_scan,
        nonzero_pages,
    })
}

pub fn run(ctx: &Ctx) -> Result<Figure> {
    let n = ctx.many_workers;
    ensure!(
        n >= ACTIVE * ROUNDS,
        "--many-workers must be at least {}",
        ACTIVE * ROUNDS
    );
    let wasm = std::fs::read(golemw_tests::guest_wasm("counter"))?;
    let dir = ctx.temp_dir()?;
    let setup = setup(ctx, dir.path(), &wasm, n)?;
    let data = dir.path().join("lmdb").join("data.mdb");
    let meta = std::fs::metadata(&data).with_context(|| format!("{}", data.display()))?;
    let disk_bytes = (meta.blocks() * 512) as f64;

    let plain = plain_run(&wasm)?;

    let order = shuffled(n);
    let mut durable = Activations::default();
    let mut batched = Activations::default();
    let mut rss_rounds = Vec::new();
    let bar = ctx.progress("many-workers", (ROUNDS * ACTIVE) as u64);
    bar.set_message("activating");
    for (round, ids) in order.chunks(ACTIVE).take(ROUNDS).enumerate() {
        let fsync = round % 2 == 0;
        let options = ExecutorOptions {
            echo_output: false,
            fsync,
            ..ExecutorOptions::default()
        };
        let executor = Executor::open(dir.path(), options)?;
        let warm: WorkerId = executor.worker_id("counter", &name(order[n - 1]))?;
        // Loads and caches the compiled module without activating a worker.
        executor.snapshot_blocker(&warm)?;
        let into = if fsync { &mut durable } else { &mut batched };
        let before = Rss::now();
        for &i in ids {
            let id = executor.worker_id("counter", &name(i))?;
            let started = Instant::now();
            let out = executor.invoke(&id, ADD, &["1".into()], None).done()?;
            let elapsed = started.elapsed();
            let expected = (i + 3).to_string();
            ensure!(
                out.result.as_deref() == Some(expected.as_str()),
                "worker {i}: add(1) returned {:?}, expected {expected} (state not restored?)",
                out.result
            );
            let recovery = executor
                .worker_record(&id)?
                .last_recovery
                .context("the worker was not recovered")?;
            ensure!(
                recovery.snapshot_index == Some(SETUP_ENTRIES) && recovery.entries_replayed == 0,
                "worker {i} was not restored from its snapshot alone: {recovery:?}"
            );
            into.total.push(elapsed);
            into.recover
                .push(Duration::from_micros(recovery.duration_us));
            into.restore
                .push(Duration::from_micros(recovery.restore_us));
            bar.inc(1);
        }
        rss_rounds.push((before, Rss::now()));
        drop(executor);
    }
    bar.finish_and_clear();
    Ok(figure(
        n,
        &setup,
        disk_bytes,
        &plain,
        &durable,
        &batched,
        &rss_rounds,
    ))
}

#[allow(clippy::too_many_arguments)]
fn figure(
    n: usize,
    setup: &Setup,
    disk_bytes: f64,
    plain: &PlainRun,
    durable: &Activations,
    batched: &Activations,
    rss_rounds: &[(Rss, Rss)],
) -> Figure {
    let base = plain.instantiate.median();
    let per_round = ACTIVE * ROUNDS / 2;
    let mut table = Table::new(&[
        "activation of a random idle worker",
        "p50 µs",
        "p99 µs",
        "× plain Wasmer instantiate + call (p50)",
        "of it Worker::recover p50 µs",
        "of it instantiate + restore p50 µs",
    ]);
    let mut metrics = Vec::new();
    for (name, a) in [
        (
            "golemw, durable commit (fsync, the default): invoke add(1)",
            durable,
        ),
        ("golemw, batched commit (no fsync): invoke add(1)", batched),
    ] {
        table.row(vec![
            name.to_string(),
            fmt(a.total.median()),
            fmt(a.total.p99()),
            ratio(a.total.median(), base),
            fmt(a.recover.median()),
            fmt(a.restore.median()),
        ]);
        metrics.push((format!("{name}: p50_us"), a.total.median()));
        metrics.push((format!("{name}: p99_us"), a.total.p99()));
        metrics.push((format!("{name}: recover_p50_us"), a.recover.median()));
        metrics.push((format!("{name}: restore_p50_us"), a.restore.median()));
    }
    table.row(vec![
        "plain Wasmer: instantiate + call `get` (no state to restore)".into(),
        fmt(base),
        fmt(plain.instantiate.p99()),
        ratio(base, base),
        String::new(),
        String::new(),
    ]);
    table.row(vec![
        format!(
            "plain Wasmer: read every byte of a fresh instance's {} KiB memory",
            fmt(setup.memory_bytes as f64 / 1024.0)
        ),
        fmt(plain.zero_scan.median()),
        fmt(plain.zero_scan.p99()),
        ratio(plain.zero_scan.median(), base),
        String::new(),
        String::new(),
    ]);
    metrics.push(("plain instantiate: p50_us".into(), base));
    metrics.push(("plain zero scan: p50_us".into(), plain.zero_scan.median()));

    let mib = |kib: f64| kib / 1024.0;
    let med =
        |f: &dyn Fn(&(Rss, Rss)) -> f64| median(&rss_rounds.iter().map(f).collect::<Vec<_>>());
    let before = med(&|(b, _)| b.total_kib);
    let after = med(&|(_, a)| a.total_kib);
    let growth = med(&|(b, a)| a.since(b).total_kib);
    let anon = med(&|(b, a)| a.since(b).anon_kib);
    let file = med(&|(b, a)| a.since(b).file_kib);
    let (pb, pa) = plain.rss;
    let plain_growth = pa.since(&pb);
    let mut memory = Table::new(&[
        &format!("resident memory, {ACTIVE} active"),
        "VmRSS before MiB",
        "VmRSS after MiB",
        "growth MiB",
        "of it RssAnon MiB",
        "of it RssFile MiB",
        "VmRSS growth per worker KiB",
        "RssAnon growth per worker KiB",
        "× plain Wasmer (RssAnon)",
    ]);
    memory.row(vec![
        format!("golemw: {ACTIVE} workers activated (median of {ROUNDS} rounds)"),
        fmt(mib(before)),
        fmt(mib(after)),
        fmt(mib(growth)),
        fmt(mib(anon)),
        fmt(mib(file)),
        fmt(growth / ACTIVE as f64),
        fmt(anon / ACTIVE as f64),
        ratio(anon, plain_growth.anon_kib),
    ]);
    memory.row(vec![
        format!("plain Wasmer: {ACTIVE} instances, `get` called on each"),
        fmt(mib(pb.total_kib)),
        fmt(mib(pa.total_kib)),
        fmt(mib(plain_growth.total_kib)),
        fmt(mib(plain_growth.anon_kib)),
        fmt(mib(plain_growth.file_kib)),
        fmt(plain_growth.total_kib / ACTIVE as f64),
        fmt(plain_growth.anon_kib / ACTIVE as f64),
        ratio(plain_growth.anon_kib, plain_growth.anon_kib),
    ]);
    metrics.push(("rss_before_kib".into(), before));
    metrics.push(("rss_growth_100_active_kib".into(), growth));
    metrics.push(("rss_anon_growth_100_active_kib".into(), anon));
    metrics.push(("rss_growth_plain_100_kib".into(), plain_growth.total_kib));

    let b = batched;
    let notes = vec![
        format!(
            "Setup: {} workers created, invoked 3 times and snapshotted in {:.1} s ({} µs per \
             worker) with batched commits (`fsync: false`, no fsync at all) and the snapshot \
             policy off; LMDB data.mdb {} MiB on disk ({} KiB per worker). Each snapshot: linear \
             memory {} KiB, {} non-zero 64 KiB pages stored (median), {} bytes after compression \
             (median), capture_us p50 {} µs.",
            count(n as f64),
            setup.seconds,
            fmt(setup.seconds * 1e6 / n as f64),
            fmt(disk_bytes / 1048576.0),
            fmt(disk_bytes / 1024.0 / n as f64),
            fmt(setup.memory_bytes as f64 / 1024.0),
            fmt(median(&setup.pages_stored)),
            count(median(&setup.bytes_new)),
            fmt(setup.capture.median()),
        ),
        format!(
            "Batched activation, p50: {} µs, of which Worker::recover {} µs (instantiate + \
             restore {} µs) and {} µs the rest (record read, the invocation and its commit). \
             The restore no longer reads the pages it knows a fresh instance holds as zero \
             (beyond its initial size, or outside its data segments): reading a fresh \
             instance's whole memory costs {} µs at p50 (row above; {} of its 64 KiB pages are \
             not zero), which that zero check used to pay on every activation (850.6 µs batched \
             p50 before, measured 2026-11-25). What remains is mostly instantiation (plain \
             Wasmer's own steps are most of Worker::recover) and reading and decoding the one \
             stored page.",
            fmt(b.total.median()),
            fmt(b.recover.median()),
            fmt(b.restore.median()),
            fmt(b.total.median() - b.recover.median()),
            fmt(plain.zero_scan.median()),
            plain.nonzero_pages,
        ),
        format!(
            "VmRSS growth per round: {}.",
            rss_rounds
                .iter()
                .map(|(b, a)| format!("{} MiB", fmt(mib(a.since(b).total_kib))))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        "RssAnon is the workers' own memory: a restore writes each stored 64 KiB snapshot page \
         whole into the fresh linear memory (16 resident 4 KiB pages, though the counter's \
         state needs fewer; plain Wasmer's instances only fault in what their data segments and \
         `get` touch), plus golemw's per-worker state where the heap had no free space left. \
         RssFile is LMDB's memory map, not per-worker memory: the data.mdb pages this \
         process touched through the map (records, oplog blocks, manifests, snapshot pages, and \
         the B-tree and free-list pages the commits read), shared with the page cache and \
         reclaimable. It grows with the size of the file: about 3 MiB per 100 activations with \
         600 workers on disk in a trial run; not broken down further."
            .to_string(),
        "Durable − batched activation is the invocation's durable commit (two fsyncs); the \
         activation itself writes nothing (its recovery report goes with that commit). The OS page cache is warm \
         (the workers were just written): activation reads LMDB from memory."
            .to_string(),
    ];
    Figure {
        id: "many-workers",
        title: "8. Many idle workers: activation and resident memory".into(),
        method: format!(
            "{} `counter` workers in one data directory, each created, invoked \
             `add(i)`, `add(1)`, `add(1)` (counter = i + 2, {SETUP_ENTRIES} oplog entries) and \
             snapshotted at its last entry, by executors reopened every {SETUP_BATCH} workers \
             (an Executor keeps every worker it touched in memory until it is dropped; it has \
             no eviction). Then {ROUNDS} rounds, each on a freshly opened Executor (module loaded \
             and cached before timing, no worker active): {ACTIVE} distinct workers in a fixed \
             pseudo-random order get `Executor::invoke(add(1))`, timed end to end (activation: \
             record read, snapshot restore with no tail to replay, then the invocation and its \
             commit); the result is checked to be i + 3 and the recovery to have used the \
             snapshot. Even rounds commit durably (fsync), odd ones batched, {per_round} \
             activations each. Resident memory (VmRSS, RssAnon, RssFile from /proc/self/status) \
             is read after opening the executor and after its {ACTIVE} activations, all \
             {ACTIVE} workers still in memory. Baseline: plain Wasmer instantiating the same \
             compiled module {ACTIVE} times (new Store, WASI env, `_initialize`) and calling \
             `get` on each, after two warm-up batches, all {ACTIVE} kept alive for the memory \
             reading.",
            count(n as f64)
        ),
        tables: vec![table, memory],
        goals: Vec::new(),
        notes,
        metrics,
    }
}
