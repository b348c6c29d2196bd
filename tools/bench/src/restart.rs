//! Figures 4 and 5: restart of a `memory` worker holding 64 MiB of buffers.
//!
//! Figure 4 builds histories of 10^3 … 10^6 oplog entries (one data directory each) and times
//! recovery from the newest snapshot plus the tail after it against a full replay, in process
//! (`Executor::recover` on a freshly opened executor) and as a whole `golemw worker recover`
//! process. Figure 5 restores a 64 MiB snapshot (no tail) and compares it with copying 64 MiB.

use crate::workers::Completes;
use std::collections::HashMap;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _, Result};
use golemw_runtime::worker::RevertTarget;
use golemw_runtime::{
    Executor, ExecutorOptions, RecoveryMode, RecoveryReport, SnapshotPolicy, WorkerId,
};
use golemw_snapshot::page::decode_page_into;
use golemw_snapshot::SnapshotError;
use indicatif::ProgressBar;

use crate::report::{Figure, Goal, Table};
use crate::stats::{count, fmt, median, Samples};
use crate::Ctx;

/// MiB of buffers the worker holds (`fill-mib`).
pub const MEMORY_MIB: u32 = 64;
const MIB: usize = 1 << 20;
const LENGTHS: [u64; 4] = [1_000, 10_000, 100_000, 1_000_000];
/// Entries after the newest snapshot, the same at every length (about the mean tail under the
/// default policy, `entries:1000`), so that only the history's length varies.
const TAIL: u64 = 500;
/// The snapshot policy while histories are built.
const BUILD_POLICY: SnapshotPolicy = SnapshotPolicy::Entries(10_000);
/// Clock calls per `clocks` invocation while building: 1000 entries per invocation.
const CLOCKS_PER_CALL: u64 = 998;
/// A history whose build is projected to take longer than this is not built.
const BUILD_BUDGET_S: f64 = 180.0;
/// Timed recoveries per mode and length.
const REPS: usize = 5;
/// Timed 64 MiB copies per kind.
pub const COPY_REPS: usize = 9;
const FLATNESS_GOAL: f64 = 1.5;
const SPEEDUP_GOAL: f64 = 20.0;
const LIMIT_GOAL: f64 = 3.0;

fn ms(us: f64) -> String {
    fmt(us / 1000.0)
}

fn us(micros: u64) -> Duration {
    Duration::from_micros(micros)
}

/// A fresh data directory with the `memory` component and its worker `w` holding
/// [`MEMORY_MIB`] MiB of buffers; the executor stays open.
pub fn memory_worker(
    ctx: &Ctx,
    options: ExecutorOptions,
) -> Result<(tempfile::TempDir, Arc<Executor>, WorkerId)> {
    let dir = ctx.temp_dir()?;
    let ex = Executor::open(dir.path(), options).context("opening the executor")?;
    let wasm = std::fs::read(golemw_tests::guest_wasm("memory"))?;
    ex.components().add("memory", &wasm)?;
    let id = ex.worker_id("memory", "w")?;
    ex.create_worker(&id, Vec::new(), Vec::new())?;
    ex.invoke(&id, "fill-mib", &[MEMORY_MIB.to_string()], None)
        .done()?;
    Ok((dir, ex, id))
}

/// One data directory's history.
struct History {
    dir: tempfile::TempDir,
    entries: u64,
    snapshot_at: u64,
    build: Duration,
    /// Entries per second of the `clocks` invocations (for projecting the next build).
    rate: f64,
}

/// Invokes `clocks` until the oplog has `to` entries (`len` is its length).
pub fn grow(
    ex: &mut Arc<Executor>,
    id: &WorkerId,
    len: &mut u64,
    to: u64,
    bar: &ProgressBar,
) -> Result<()> {
    while *len + 2 <= to {
        let n = CLOCKS_PER_CALL.min(to - *len - 2);
        ex.invoke(id, "clocks", &[n.to_string()], None).done()?;
        *len += n + 2;
        bar.inc(n + 2);
    }
    Ok(())
}

/// `fill-mib 64`, `clocks` up to `entries - TAIL`, an explicit snapshot, `clocks` up to
/// `entries`.
fn build(ctx: &Ctx, entries: u64, bar: &ProgressBar) -> Result<History> {
    let started = Instant::now();
    let options = ExecutorOptions {
        fsync: false,
        snapshot_policy: BUILD_POLICY,
        ..ExecutorOptions::default()
    };
    let (dir, mut ex, id) = memory_worker(ctx, options)?;
    let mut len = ex.oplog_len(&id)?;
    let (grow_started, first) = (Instant::now(), len);
    grow(&mut ex, &id, &mut len, entries - TAIL, bar)?;
    ex.snapshot(&id)?;
    let snapshot_at = len;
    grow(&mut ex, &id, &mut len, entries, bar)?;
    let rate = (len - first) as f64 / grow_started.elapsed().as_secs_f64();
    ensure!(
        ex.oplog_len(&id)? == len,
        "the oplog has {} entries, expected {len}",
        ex.oplog_len(&id)?
    );
    drop(ex);
    Ok(History {
        dir,
        entries: len,
        snapshot_at,
        build: started.elapsed(),
        rate,
    })
}

/// `Executor::recover` on a freshly opened executor: its wall time and report.
fn recover_in_process(dir: &Path, mode: RecoveryMode) -> Result<(Duration, RecoveryReport)> {
    recover_with(dir, mode, ExecutorOptions::default()).map(|(wall, report, ..)| (wall, report))
}

/// `Executor::recover` on an executor freshly opened with `options`: its wall time and report,
/// and the executor with the worker active.
fn recover_with(
    dir: &Path,
    mode: RecoveryMode,
    options: ExecutorOptions,
) -> Result<(Duration, RecoveryReport, Arc<Executor>, WorkerId)> {
    let ex = Executor::open(dir, options)?;
    let id = ex.worker_id("memory", "w")?;
    let start = Instant::now();
    let report = ex.recover(&id, mode)?;
    Ok((start.elapsed(), report, ex, id))
}

/// The cargo target directory: `$CARGO_TARGET_DIR`, else `<repo>/target`.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or(golemw_tests::repo_root().join("target"), PathBuf::from)
}

/// Builds the release `golemw` binary (cargo does nothing when it is up to date).
pub fn golemw_binary() -> Result<PathBuf> {
    let root = golemw_tests::repo_root();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--release", "--quiet", "-p", "golemw"])
        .current_dir(&root)
        .status()
        .context("running cargo build --release -p golemw")?;
    ensure!(status.success(), "cargo build --release -p golemw failed");
    Ok(target_dir().join("release").join("golemw"))
}

/// Runs `golemw --json --data-dir DIR ARGS` (no GOLEMW_* or RUST_LOG from the environment;
/// `log` sets RUST_LOG): wall time from spawn to exit, stdout, stderr.
pub fn golemw_run(
    golemw: &Path,
    dir: &Path,
    args: &[&str],
    log: Option<&str>,
) -> Result<(Duration, Vec<u8>, String)> {
    let mut cmd = Command::new(golemw);
    cmd.arg("--json").arg("--data-dir").arg(dir).args(args);
    for var in [
        "GOLEMW_DATA_DIR",
        "GOLEMW_SNAPSHOT_POLICY",
        "GOLEMW_SNAPSHOTS_KEEP",
        "GOLEMW_WRITE_TRACKING",
        "GOLEMW_MEMORY_IMAGES",
        "RUST_LOG",
    ] {
        cmd.env_remove(var);
    }
    if let Some(filter) = log {
        cmd.env("RUST_LOG", filter).env("NO_COLOR", "1");
    }
    let start = Instant::now();
    let out = cmd.output().context("running golemw")?;
    let wall = start.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    ensure!(
        out.status.success(),
        "golemw {} failed: {stderr}",
        args.join(" ")
    );
    Ok((wall, out.stdout, stderr))
}

/// A `golemw worker recover` process: wall time, its report, and its stderr. With `debug`, the
/// worker module logs at debug level (the instantiate / restore split).
fn recover_process(
    golemw: &Path,
    dir: &Path,
    mode: RecoveryMode,
    debug: bool,
) -> Result<(Duration, RecoveryReport, String)> {
    recover_process_with(golemw, dir, mode, debug, true)
}

/// [`recover_process`] with memory images on or off (`--memory-images`).
fn recover_process_with(
    golemw: &Path,
    dir: &Path,
    mode: RecoveryMode,
    debug: bool,
    images: bool,
) -> Result<(Duration, RecoveryReport, String)> {
    let mut args = vec!["--memory-images", if images { "true" } else { "false" }];
    args.extend(["worker", "recover", "memory/w"]);
    if mode == RecoveryMode::FullReplay {
        args.push("--full-replay");
    }
    let log = debug.then_some("golemw_runtime::worker=debug");
    let (wall, stdout, stderr) = golemw_run(golemw, dir, &args, log)?;
    let report = serde_json::from_slice(&stdout).context("golemw's JSON report")?;
    Ok((wall, report, stderr))
}

/// The number after ` field=` in a log (ANSI colour codes removed).
fn log_field(log: &str, field: &str) -> Option<u64> {
    let mut plain = String::with_capacity(log.len());
    let mut in_escape = false;
    for c in log.chars() {
        match (in_escape, c) {
            (false, '\x1b') => in_escape = true,
            (false, c) => plain.push(c),
            (true, 'm') => in_escape = false,
            (true, _) => {}
        }
    }
    let at = plain.find(&format!(" {field}="))? + field.len() + 2;
    plain[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// Whole-process recoveries from the snapshot with the debug log: medians of the phases, µs.
#[derive(Default)]
struct Phases {
    /// `golemw worker get`: process start, Executor::open, module load, manifest list, exit.
    floor: Vec<f64>,
    wall: Vec<f64>,
    outside: Vec<f64>,
    instantiate: Vec<f64>,
    memory: Vec<f64>,
    /// Of `memory`: starting write tracking over the restored pages (absent where unavailable).
    track: Vec<f64>,
    tail: Vec<f64>,
}

impl Phases {
    fn add(&mut self, golemw: &Path, dir: &Path) -> Result<()> {
        let (wall, report, log) = recover_process(golemw, dir, RecoveryMode::Auto, true)?;
        let field = |name| {
            log_field(&log, name).with_context(|| format!("no {name} in golemw's log:\n{log}"))
        };
        let wall = wall.as_secs_f64() * 1e6;
        self.wall.push(wall);
        let (floor, _, _) = golemw_run(golemw, dir, &["worker", "get", "memory/w"], None)?;
        self.floor.push(floor.as_secs_f64() * 1e6);
        self.outside.push(wall - report.duration_us as f64);
        self.instantiate.push(field("instantiate_us")? as f64);
        self.memory.push(field("restore_us")? as f64);
        if let Some(track) = log_field(&log, "track_us") {
            self.track.push(track as f64);
        }
        self.tail
            .push(report.duration_us.saturating_sub(report.restore_us) as f64);
        Ok(())
    }
}

/// Everything measured for one history.
#[derive(Default)]
struct Restart {
    auto_wall: Samples,
    auto_restore: Samples,
    auto_duration: Samples,
    full_wall: Samples,
    full_duration: Samples,
    proc_auto: Samples,
    /// Whole process from the snapshot with memory images off: every page copied.
    proc_copy: Samples,
    proc_full: Samples,
    proc_full_duration: Samples,
    phases: Phases,
}

fn measure(golemw: &Path, h: &History, bar: &ProgressBar) -> Result<Restart> {
    let dir = h.dir.path();
    let mut m = Restart::default();
    let check = |r: &RecoveryReport, mode: RecoveryMode| {
        let (snapshot, entries) = match mode {
            RecoveryMode::FullReplay => (None, h.entries),
            _ => (Some(h.snapshot_at), h.entries - h.snapshot_at),
        };
        ensure!(
            r.snapshot_index == snapshot && r.entries_replayed == entries,
            "{mode:?} recovery used snapshot {:?} and replayed {} entries; expected {snapshot:?} \
             and {entries} (skipped: {:?})",
            r.snapshot_index,
            r.entries_replayed,
            r.skipped
        );
        Ok(())
    };
    for _ in 0..REPS {
        let (wall, r) = recover_in_process(dir, RecoveryMode::Auto)?;
        check(&r, RecoveryMode::Auto)?;
        m.auto_wall.push(wall);
        m.auto_restore.push(us(r.restore_us));
        m.auto_duration.push(us(r.duration_us));
        let (wall, r) = recover_in_process(dir, RecoveryMode::FullReplay)?;
        check(&r, RecoveryMode::FullReplay)?;
        m.full_wall.push(wall);
        m.full_duration.push(us(r.duration_us));
        let (wall, r, _) = recover_process(golemw, dir, RecoveryMode::Auto, false)?;
        check(&r, RecoveryMode::Auto)?;
        m.proc_auto.push(wall);
        let (wall, r, _) = recover_process_with(golemw, dir, RecoveryMode::Auto, false, false)?;
        check(&r, RecoveryMode::Auto)?;
        m.proc_copy.push(wall);
        let (wall, r, _) = recover_process(golemw, dir, RecoveryMode::FullReplay, false)?;
        check(&r, RecoveryMode::FullReplay)?;
        m.proc_full.push(wall);
        m.proc_full_duration.push(us(r.duration_us));
        m.phases.add(golemw, dir)?;
        bar.inc(1);
    }
    Ok(m)
}

/// Figure 4: restart time against history length.
pub fn run(ctx: &Ctx) -> Result<Figure> {
    let golemw = golemw_binary()?;
    let bar = ctx.progress("restart", LENGTHS.iter().sum());
    // The floor of a restore into a fresh process's memory: writing 64 MiB it never touched.
    let copy = copies(&bar);
    bar.set_message("building histories");
    let mut histories = Vec::new();
    let mut notes = Vec::new();
    for &n in &LENGTHS {
        if let Some(last) = histories.last().map(|h: &History| h.rate) {
            let projected = n as f64 / last;
            if projected > BUILD_BUDGET_S {
                notes.push(format!(
                    "The {} entry history was not built: projected {projected:.0} s at {} \
                     entries/s, over the {BUILD_BUDGET_S:.0} s budget.",
                    count(n as f64),
                    count(last)
                ));
                bar.inc(n);
                continue;
            }
        }
        histories.push(build(ctx, n, &bar)?);
    }
    bar.finish_and_clear();
    let bar = ctx.progress("restart", (histories.len() * REPS) as u64);
    bar.set_message("recovering");
    let measured: Vec<Restart> = histories
        .iter()
        .map(|h| measure(&golemw, h, &bar))
        .collect::<Result<_>>()?;
    bar.finish_and_clear();

    let mut table = Table::new(&[
        "oplog entries",
        "snapshot at",
        "in-process: snapshot + tail ms",
        "of it restore_us ms",
        "full replay ms",
        "speed-up",
        "process: snapshot + tail ms",
        "full replay ms",
        "speed-up",
        "process, images off: snapshot + tail ms",
        "speed-up",
    ]);
    let mut phases = Table::new(&[
        "oplog entries",
        "process: worker get ms",
        "process: restart wall ms",
        "outside Worker::recover ms",
        "instantiate ms",
        "memory + globals restore ms",
        "tail replay ms",
        "in process: Executor::recover − Worker::recover ms",
        "full replay Worker::recover ms: process / in process",
    ]);
    let mut metrics = Vec::new();
    for (h, m) in histories.iter().zip(&measured) {
        let entries = count(h.entries as f64);
        table.row(vec![
            entries.clone(),
            count(h.snapshot_at as f64),
            ms(m.auto_wall.median()),
            ms(m.auto_restore.median()),
            ms(m.full_wall.median()),
            format!("{}×", fmt(m.full_wall.median() / m.auto_wall.median())),
            ms(m.proc_auto.median()),
            ms(m.proc_full.median()),
            format!("{}×", fmt(m.proc_full.median() / m.proc_auto.median())),
            ms(m.proc_copy.median()),
            format!("{}×", fmt(m.proc_full.median() / m.proc_copy.median())),
        ]);
        let p = &m.phases;
        phases.row(vec![
            entries,
            ms(median(&p.floor)),
            ms(median(&p.wall)),
            ms(median(&p.outside)),
            ms(median(&p.instantiate)),
            ms(median(&p.memory)),
            ms(median(&p.tail)),
            ms(m.auto_wall.median() - m.auto_duration.median()),
            format!(
                "{} / {}",
                ms(m.proc_full_duration.median()),
                ms(m.full_duration.median())
            ),
        ]);
        for (name, value) in [
            ("in_process_snapshot_us", m.auto_wall.median()),
            ("in_process_restore_us", m.auto_restore.median()),
            ("in_process_full_replay_us", m.full_wall.median()),
            ("process_snapshot_us", m.proc_auto.median()),
            ("process_snapshot_copied_us", m.proc_copy.median()),
            ("process_full_replay_us", m.proc_full.median()),
        ] {
            metrics.push((format!("{}: {name}", h.entries), value));
        }
        notes.push(format!(
            "{} entries: built in {:.1} s ({} entries/s of `clocks` invocations).",
            count(h.entries as f64),
            h.build.as_secs_f64(),
            count(h.rate)
        ));
    }
    let mut goals = Vec::new();
    if let (Some(first), Some(last)) = (measured.first(), measured.last()) {
        let (n0, n1) = (histories[0].entries, histories[histories.len() - 1].entries);
        let flat = last.auto_wall.median() / first.auto_wall.median();
        let flat_proc = last.proc_auto.median() / first.proc_auto.median();
        goals.push(Goal {
            target: format!(
                "flatness: in-process restart from a snapshot at {} entries / at {} at most \
                 {FLATNESS_GOAL}×",
                count(n1 as f64),
                count(n0 as f64)
            ),
            met: flat <= FLATNESS_GOAL,
            detail: format!("{flat:.2}× (whole process: {flat_proc:.2}×)"),
        });
        let speedup = last.proc_full.median() / last.proc_auto.median();
        goals.push(Goal {
            target: format!(
                "whole-process restart from a snapshot at {} entries at least {SPEEDUP_GOAL}× \
                 faster than full replay",
                count(n1 as f64)
            ),
            met: speedup >= SPEEDUP_GOAL && n1 >= 1_000_000,
            detail: format!(
                "{speedup:.1}× ({} ms vs {} ms){}",
                ms(last.proc_auto.median()),
                ms(last.proc_full.median()),
                if n1 < 1_000_000 {
                    " — not measured at 10^6"
                } else {
                    ""
                }
            ),
        });
        if n1 > n0 {
            let per_entry = |a: &Samples, b: &Samples| (b.median() - a.median()) / (n1 - n0) as f64;
            notes.push(format!(
                "Full replay costs {} µs per further entry in process ({} µs as a process) on \
                 top of {} ms at {} entries (mostly replaying `fill-mib {MEMORY_MIB}`). For \
                 {SPEEDUP_GOAL}× at {} entries the whole-process restart would have to take at \
                 most {} ms.",
                fmt(per_entry(&first.full_wall, &last.full_wall)),
                fmt(per_entry(&first.proc_full, &last.proc_full)),
                ms(first.full_wall.median()),
                count(n0 as f64),
                count(n1 as f64),
                ms(last.proc_full.median() / SPEEDUP_GOAL)
            ));
        }
        let floor = median(&last.phases.floor) + copy.fresh_two;
        notes.push(format!(
            "The restart maps the worker's memory image (the default): it reads and checks the \
             64 MiB from the page cache instead of writing them into memory the process never \
             touched, and the pages the worker writes later are copied then (figure 5 measures \
             that cost). The restart copying every page (`--memory-images false`) has a floor \
             of a `golemw worker get` process ({} ms: start, Executor::open, module load from \
             the compiled cache, exit) plus writing 64 MiB into fresh memory on both cores ({} \
             ms, memcpy; the first-touch page faults are most of it) = {} ms, at most {:.1}× \
             against this run's full replay at {} entries; it measured {:.1}× ({} ms).",
            ms(median(&last.phases.floor)),
            ms(copy.fresh_two),
            ms(floor),
            last.proc_full.median() / floor,
            count(n1 as f64),
            last.proc_full.median() / last.proc_copy.median(),
            ms(last.proc_copy.median()),
        ));
        metrics.push(("flatness".into(), flat));
        metrics.push(("process_speedup_at_longest".into(), speedup));
    }
    notes.push(
        "The OS page cache is warm (the histories were just written and every run reads the \
         same files); nothing is cached in process between in-process runs (a new Executor \
         each time)."
            .into(),
    );
    Ok(Figure {
        id: "restart",
        title: "4. Restart time against history length (64 MiB worker)".into(),
        method: format!(
            "A `memory` worker with {MEMORY_MIB} MiB of incompressible buffers (`fill-mib \
             {MEMORY_MIB}`), its history grown with `clocks(n)` invocations (n+2 entries each, \
             {} per invocation) to each length, built with `ExecutorOptions {{ fsync: false, \
             snapshot_policy: {BUILD_POLICY}, .. }}`. Every history has an explicit snapshot \
             {TAIL} entries before its end, so each restart restores 64 MiB and replays the same \
             {TAIL}-entry tail; only the length of the history before the snapshot differs. \
             In process: `Executor::recover(RecoveryMode::Auto)` (snapshot + tail) and \
             `FullReplay`, each on a freshly opened Executor, wall time of the call (module \
             loaded from the compiled cache included, `Executor::open` excluded). Whole process: \
             `target/release/golemw --json --data-dir D worker recover memory/w [--full-replay]`, \
             spawn to exit, and the same from the snapshot with `--memory-images false`. Median of {REPS} runs of each, interleaved. The phase table comes \
             from {REPS} more whole-process snapshot restarts with \
             `RUST_LOG=golemw_runtime::worker=debug` (its `snapshot restored` event), each \
             followed by `golemw worker get memory/w` (process start, Executor::open, module \
             load from the compiled cache, manifest list, exit: everything but the instance).",
            CLOCKS_PER_CALL + 2
        ),
        tables: vec![table, phases],
        goals,
        notes,
        metrics,
    })
}

/// Runs `f` once and records its wall time.
fn timed<T>(samples: &mut Samples, f: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let out = f();
    samples.push(start.elapsed());
    out
}

/// `n` bytes of xorshift noise (incompressible, like the worker's buffers).
pub fn noise(n: usize) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(n);
    out
}

/// Median µs to copy 64 MiB (`copy_from_slice`): into a buffer whose pages are already faulted
/// in; into a freshly allocated one (the copy faults its pages in, as a restore into a fresh
/// instance's memory does); the latter split over two threads.
pub struct Copies {
    pub faulted: f64,
    pub fresh: f64,
    pub fresh_two: f64,
}

pub fn copies(bar: &ProgressBar) -> Copies {
    let src = noise(MEMORY_MIB as usize * MIB);
    let n = src.len();
    let mut dst = vec![1u8; n];
    let mut s = [(); 3].map(|_| Samples::with_capacity(COPY_REPS));
    for _ in 0..COPY_REPS {
        timed(&mut s[0], || dst.copy_from_slice(black_box(&src)));
        black_box(&dst);
        let fresh = timed(&mut s[1], || {
            let mut d = vec![0u8; n];
            d.copy_from_slice(black_box(&src));
            d
        });
        drop(black_box(fresh));
        let fresh = timed(&mut s[2], || {
            let mut d = vec![0u8; n];
            let (a, b) = d.split_at_mut(n / 2);
            std::thread::scope(|scope| {
                scope.spawn(|| a.copy_from_slice(&src[..n / 2]));
                b.copy_from_slice(&src[n / 2..]);
            });
            d
        });
        drop(black_box(fresh));
        bar.inc(1);
    }
    Copies {
        faulted: s[0].median(),
        fresh: s[1].median(),
        fresh_two: s[2].median(),
    }
}

/// Figure 5: the in-process restore of a 64 MiB snapshot against copying 64 MiB.
pub fn run_limit(ctx: &Ctx) -> Result<Figure> {
    let golemw = golemw_binary()?;
    let bar = ctx.progress("restore-limit", (2 * COPY_REPS + 2 * REPS) as u64);
    let copy = copies(&bar);

    // The snapshot's pages decoded from RAM (no LMDB, no instance) into a fresh buffer.
    let src = noise(MEMORY_MIB as usize * MIB);
    let state = golemw_snapshot::State {
        memory: &src,
        globals: Vec::new(),
        host_state: Vec::new(),
        oplog_index: 1,
        component_version: 0,
        created_at_ms: 0,
    };
    let captured = golemw_snapshot::capture(state, None, |_| false);
    let pages: HashMap<_, _> = captured.new_pages.into_iter().collect();
    let mut ram = Samples::with_capacity(COPY_REPS);
    for _ in 0..COPY_REPS {
        let restored = timed(&mut ram, || {
            let mut dst = vec![0u8; src.len()];
            golemw_snapshot::restore_into(&captured.manifest, &mut dst, |hash, page| {
                let stored = pages
                    .get(hash)
                    .ok_or(SnapshotError::MissingPage { hash: *hash })?;
                decode_page_into(stored, page, hash)
            })
            .map(|()| dst)
        })?;
        ensure!(restored == src, "restore_into gave back different bytes");
        bar.inc(1);
    }

    let options = ExecutorOptions {
        fsync: false,
        snapshot_policy: SnapshotPolicy::Off,
        ..ExecutorOptions::default()
    };
    let (dir, ex, id) = memory_worker(ctx, options)?;
    let memory_bytes = ex.invoke(&id, "memory-bytes", &[], None).done()?.result;
    ex.snapshot(&id)?;
    let at = ex.oplog_len(&id)?;
    drop(ex);
    let [mut wall, mut restore, mut duration] = [(); 3].map(|_| Samples::default());
    // Per restore kind (image mapped, pages copied): restore_us, then the first invocation
    // reading every byte (`checksum`) and the next writing every page (`touch-pages 100`).
    let mut after: [[Samples; 3]; 2] = Default::default();
    let mut phases = Phases::default();
    for _ in 0..REPS {
        for (kind, images) in [(0, true), (1, false)] {
            let options = ExecutorOptions {
                fsync: false,
                snapshot_policy: SnapshotPolicy::Off,
                memory_image_min_bytes: images
                    .then_some(golemw_runtime::snapshots::DEFAULT_IMAGE_MIN_BYTES),
                ..ExecutorOptions::default()
            };
            let (w, r, ex, id) = recover_with(dir.path(), RecoveryMode::Auto, options)?;
            ensure!(
                r.snapshot_index == Some(at) && r.entries_replayed == 0,
                "restored {:?} and replayed {}, not the snapshot at {at} alone (skipped: {:?})",
                r.snapshot_index,
                r.entries_replayed,
                r.skipped
            );
            if images {
                wall.push(w);
                restore.push(us(r.restore_us));
                duration.push(us(r.duration_us));
            }
            let [restored, read, write] = &mut after[kind];
            restored.push(us(r.restore_us));
            timed(read, || ex.invoke(&id, "checksum", &[], None).done())?;
            timed(write, || {
                ex.invoke(&id, "touch-pages", &["100".into()], None).done()
            })?;
            // Undone, so that every run restores the same snapshot with nothing to replay.
            ex.revert_worker(&id, RevertTarget::LastInvocations(2))?;
        }
        phases.add(&golemw, dir.path())?;
        bar.inc(2);
    }
    bar.finish_and_clear();

    let mut table = Table::new(&["operation", "median ms", "× memcpy (fresh)", "GB/s"]);
    let bytes = (MEMORY_MIB as usize * MIB) as f64;
    let mut row = |what: &str, t: f64| {
        table.row(vec![
            what.into(),
            ms(t),
            format!("{}×", fmt(t / copy.fresh)),
            fmt(bytes / t / 1e3),
        ]);
    };
    row("baseline: memcpy 64 MiB into faulted memory", copy.faulted);
    row(
        "baseline: memcpy 64 MiB into fresh memory (page faults)",
        copy.fresh,
    );
    row(
        "baseline: memcpy 64 MiB into fresh memory, 2 threads",
        copy.fresh_two,
    );
    row(
        "restore_into from RAM (CRC32 + copy per page, no LMDB, no instance)",
        ram.median(),
    );
    row(
        "in process: RecoveryReport.restore_us (instantiate + restore)",
        restore.median(),
    );
    row(
        "in process: RecoveryReport.duration_us (+ snapshot list, tail)",
        duration.median(),
    );
    row("in process: Executor::recover wall", wall.median());
    row(
        "process: instantiate (debug log)",
        median(&phases.instantiate),
    );
    row(
        "process: memory + globals restore (debug log)",
        median(&phases.memory),
    );
    if !phases.track.is_empty() {
        row(
            "process: of it, starting write tracking (debug log)",
            median(&phases.track),
        );
    }
    row("process: whole golemw worker recover", median(&phases.wall));
    for (kind, what) in [(0, "memory image mapped"), (1, "pages copied (images off)")] {
        let [restored, read, write] = &after[kind];
        row(
            &format!("in process, {what}: restore_us"),
            restored.median(),
        );
        row("  then `checksum`, reading every byte", read.median());
        row(
            "  then `touch-pages 100`, writing every page",
            write.median(),
        );
        row(
            "  restore + both invocations",
            restored.median() + read.median() + write.median(),
        );
    }
    let limit = restore.median() / copy.fresh;
    Ok(Figure {
        id: "restore-limit",
        title: "5. Restoring 64 MiB against the physical limit".into(),
        method: format!(
            "A `memory` worker with {MEMORY_MIB} MiB of incompressible buffers (linear memory \
             {} bytes) and a snapshot at its last entry (no tail). In process: \
             `Executor::recover(RecoveryMode::Auto)` on a freshly opened Executor, {REPS} runs, \
             with memory images (the default) and without; after each, the invocations \
             `checksum` and `touch-pages 100` are timed, then reverted. \
             Whole process: `golemw worker recover` with `RUST_LOG=golemw_runtime::worker=debug` \
             for the instantiate / restore split, {REPS} runs. Baselines, {COPY_REPS} runs \
             each: `copy_from_slice` of 64 MiB into an already-faulted `Vec<u8>`, into a freshly \
             allocated one (`vec![0; n]`, allocation included), and into a fresh one split over \
             two threads; and `golemw_snapshot::restore_into` of the same pages held in a \
             HashMap into a fresh buffer. Medians.",
            memory_bytes.unwrap_or_default()
        ),
        tables: vec![table],
        goals: vec![
            Goal {
                target: format!(
                    "in-process restore (restore_us) within {LIMIT_GOAL}× of memcpy into fresh \
                     memory"
                ),
                met: limit <= LIMIT_GOAL,
                detail: format!(
                    "{limit:.2}× ({} ms vs {} ms; whole Executor::recover {:.2}×)",
                    ms(restore.median()),
                    ms(copy.fresh),
                    wall.median() / copy.fresh
                ),
            },
            Goal {
                target: format!(
                    "in-process restore (restore_us) within {LIMIT_GOAL}× of memcpy into \
                     faulted memory"
                ),
                met: restore.median() / copy.faulted <= LIMIT_GOAL,
                detail: format!(
                    "{:.2}× ({} ms vs {} ms)",
                    restore.median() / copy.faulted,
                    ms(restore.median()),
                    ms(copy.faulted)
                ),
            },
        ],
        notes: vec![
            "The OS page cache is warm: LMDB's map is read from memory.".into(),
            if phases.track.is_empty() {
                "Write tracking is not available here: restores do not start it.".into()
            } else {
                format!(
                    "The restore includes starting write tracking over the restored memory, {} \
                     ms in the process runs (row above): it makes the first capture after the \
                     restore, and a jump back, read only the pages written since instead of all \
                     64 MiB (figures 6 and 9).",
                    ms(median(&phases.track))
                )
            },
            format!(
                "First-touch page faults cost {} ms of the fresh copy ({} 4 KiB pages, {} µs \
                 each): a restore copying into a fresh instance's memory pays them too; one \
                 mapping the memory image pays them at the guest's first write of each page.",
                ms(copy.fresh - copy.faulted),
                count(bytes / 4096.0),
                fmt((copy.fresh - copy.faulted) / (bytes / 4096.0))
            ),
            format!(
                "Mapping the image moves the cost of fresh memory from the restore to the \
                 guest's first write of each page (a copy-on-write fault): after the mapped \
                 restore, `touch-pages 100` took {} ms against {} ms after a copied one; \
                 restore and both invocations together {} ms against {} ms. Reading costs no \
                 more ({} ms against {} ms for `checksum`).",
                ms(after[0][2].median()),
                ms(after[1][2].median()),
                ms(after[0].iter().map(Samples::median).sum::<f64>()),
                ms(after[1].iter().map(Samples::median).sum::<f64>()),
                ms(after[0][1].median()),
                ms(after[1][1].median()),
            ),
            format!(
                "Transparent huge pages: {}.",
                std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
                    .map_or("unknown".into(), |s| s.trim().to_string())
            ),
        ],
        metrics: vec![
            ("memcpy_faulted_us".into(), copy.faulted),
            ("memcpy_fresh_us".into(), copy.fresh),
            ("memcpy_fresh_two_threads_us".into(), copy.fresh_two),
            ("restore_into_ram_us".into(), ram.median()),
            ("restore_us".into(), restore.median()),
            ("duration_us".into(), duration.median()),
            ("recover_wall_us".into(), wall.median()),
            ("process_instantiate_us".into(), median(&phases.instantiate)),
            ("process_memory_restore_us".into(), median(&phases.memory)),
            ("process_wall_us".into(), median(&phases.wall)),
        ],
    })
}
