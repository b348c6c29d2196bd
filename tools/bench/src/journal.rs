//! Figure 10: against Wasmer's own journal. The same state, 64 MiB of incompressible memory,
//! restored by `wasmer run` from its journal snapshot and by golemw from its snapshot, whole
//! processes. Needs the peers `tools/bench/install-peers.sh` installs (wasmer-cli built from
//! crates.io, Binaryen's wasm-opt); without them the figure says so and measures nothing.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use golemw_runtime::{ExecutorOptions, SnapshotPolicy};

use crate::report::{Figure, Table};
use crate::restart::{golemw_binary, golemw_run, memory_worker, target_dir, MEMORY_MIB};
use crate::stats::{fmt, median, ratio};
use crate::travel::copy_dir;
use crate::Ctx;

const RUNS: usize = 5;
/// The Wasmer the comparison is against (the one golemw embeds).
const WASMER_VERSION: &str = "7.4.2";

/// `$WASMER`, else `target/peers/bin/wasmer` (where install-peers.sh puts it).
fn wasmer_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("WASMER") {
        return Some(PathBuf::from(path));
    }
    let path = target_dir().join("peers").join("bin").join("wasmer");
    path.exists().then_some(path)
}

/// Whether `program --version` runs, and what it prints.
fn version(program: &Path) -> Option<String> {
    let out = Command::new(program).arg("--version").output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Runs `program args` with `stdin` as its standard input: wall time and stdout.
fn run(program: &Path, args: &[&str], stdin: &[u8]) -> Result<(Duration, String)> {
    let start = Instant::now();
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {}", program.display()))?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(stdin)
        .context("writing stdin")?;
    let out = child.wait_with_output()?;
    let wall = start.elapsed();
    ensure!(
        out.status.success(),
        "{} {} failed ({}): {}",
        program.display(),
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((wall, String::from_utf8_lossy(&out.stdout).into_owned()))
}

/// The `checksum …` line a journal-fill run printed.
fn checksum(stdout: &str) -> Result<String> {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("checksum "))
        .map(str::to_string)
        .with_context(|| format!("no checksum in the output: {stdout:?}"))
}

fn not_measured(why: String) -> Figure {
    Figure {
        id: "wasmer-journal",
        title: "10. Against Wasmer's journal: restoring 64 MiB, whole processes".into(),
        method: "Not measured in this run.".into(),
        tables: Vec::new(),
        goals: Vec::new(),
        notes: vec![format!(
            "NOT MEASURED: {why}. Run `tools/bench/install-peers.sh` once (it builds wasmer-cli \
             {WASMER_VERSION} from crates.io into target/peers, about 45 minutes on 2 cores, and \
             installs Binaryen's wasm-opt), then the bench again."
        )],
        metrics: Vec::new(),
    }
}

pub fn run_figure(ctx: &Ctx) -> Result<Figure> {
    let Some(wasmer) = wasmer_binary() else {
        return Ok(not_measured(
            "no wasmer binary ($WASMER or target/peers/bin/wasmer)".into(),
        ));
    };
    let Some(wasmer_version) = version(&wasmer) else {
        return Ok(not_measured(format!("{} does not run", wasmer.display())));
    };
    let wasm_opt = PathBuf::from("wasm-opt");
    let Some(wasm_opt_version) = version(&wasm_opt) else {
        return Ok(not_measured("no wasm-opt (Binaryen) on PATH".into()));
    };
    let bar = ctx.progress("wasmer-journal", (4 * RUNS + 4) as u64);
    let scratch = ctx.temp_dir()?;

    // Wasmer snapshots a process by unwinding its stack with asyncify, so the guest is
    // asyncified (and exports its stack pointer, see its build.rs).
    let plain_wasm = golemw_tests::guest_wasm("journal-fill");
    let wasm = scratch.path().join("journal-fill.asyncify.wasm");
    let status = Command::new(&wasm_opt)
        .arg("--asyncify")
        .arg("-O2")
        .arg(&plain_wasm)
        .arg("-o")
        .arg(&wasm)
        .status()
        .context("running wasm-opt")?;
    ensure!(status.success(), "wasm-opt --asyncify failed");
    let wasm_arg = wasm.to_str().context("a UTF-8 path")?;
    let line = b"go\n";

    // Warm-up: Wasmer compiles the module once and caches it; every timed run loads the cache.
    let (_, out) = run(&wasmer, &["run", wasm_arg], line)?;
    let expected = checksum(&out)?;
    bar.inc(1);

    let journal = scratch.path().join("journal.log");
    let journal_arg = journal.to_str().context("a UTF-8 path")?;
    let (record_wall, _) = run(
        &wasmer,
        &[
            "run",
            "--journal-writable",
            journal_arg,
            "--snapshot-on",
            "first-stdin",
            "--stop-after-snapshot",
            wasm_arg,
        ],
        line,
    )?;
    let journal_bytes = std::fs::metadata(&journal)?.len();
    bar.inc(1);

    // golemw: the `memory` worker with as much incompressible memory, snapshot at its end.
    let options = ExecutorOptions {
        snapshot_policy: SnapshotPolicy::Off,
        ..ExecutorOptions::default()
    };
    let (dir, ex, id) = memory_worker(ctx, options)?;
    ex.snapshot(&id)?;
    drop(ex);
    let golemw = golemw_binary()?;
    bar.inc(2);

    let mut samples: [Vec<f64>; 4] = Default::default();
    for _ in 0..RUNS {
        let (wall, out) = run(&wasmer, &["run", wasm_arg], line)?;
        ensure!(checksum(&out)? == expected);
        samples[0].push(wall.as_secs_f64() * 1e3);
        bar.inc(1);
        let (wall, out) = run(
            &wasmer,
            &[
                "run",
                "--journal",
                journal_arg,
                "--skip-journal-stdio",
                wasm_arg,
            ],
            line,
        )?;
        if checksum(&out)? != expected {
            bail!("wasmer's restore printed another checksum: {out:?} (expected {expected})");
        }
        if out.contains("filled") {
            bail!("wasmer ran the program from the start instead of restoring it: {out:?}");
        }
        samples[1].push(wall.as_secs_f64() * 1e3);
        bar.inc(1);
        // Each golemw run starts from the same state (an invocation adds to the tail the next
        // restore would replay): a copy of the data directory, made untimed.
        for (args, into) in [
            (&["worker", "invoke", "memory/w", "checksum"][..], 2),
            (&["worker", "recover", "memory/w"][..], 3),
        ] {
            let copy = scratch.path().join("golemw-run");
            copy_dir(dir.path(), &copy)?;
            let (wall, _, _) = golemw_run(&golemw, &copy, args, None)?;
            samples[into].push(wall.as_secs_f64() * 1e3);
            std::fs::remove_dir_all(&copy)?;
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    let ms: Vec<f64> = samples.iter().map(|s| median(s)).collect();
    let mut table = Table::new(&[
        "whole process",
        "what it does",
        "median ms",
        "× wasmer journal restore",
    ]);
    for (what, does, t) in [
        (
            "wasmer run (no journal)",
            "fill 64 MiB, read a line, checksum",
            ms[0],
        ),
        (
            "wasmer run --journal (restore)",
            "replay the journal (64 MiB snapshot), rewind into the read, checksum",
            ms[1],
        ),
        (
            "golemw worker invoke memory/w checksum",
            "restore the 64 MiB snapshot, replay the tail, checksum invocation, durable commit",
            ms[2],
        ),
        (
            "golemw worker recover memory/w",
            "restore the 64 MiB snapshot, replay the tail",
            ms[3],
        ),
    ] {
        table.row(vec![what.into(), does.into(), fmt(t), ratio(t, ms[1])]);
    }
    Ok(Figure {
        id: "wasmer-journal",
        title: "10. Against Wasmer's journal: restoring 64 MiB, whole processes".into(),
        method: format!(
            "The same state on both sides: 64 MiB of incompressible bytes in linear memory. \
             Wasmer: `{wasmer_version}` ({}) runs `tests/guests/journal-fill` (a plain WASI \
             command: fill 64 MiB from an xorshift stream, read a line from stdin, print an \
             FNV-1a checksum of the 64 MiB), asyncified with `{wasm_opt_version}` because \
             Wasmer's journal snapshots unwind the stack with asyncify. Recorded once with \
             `wasmer run --journal-writable J --snapshot-on first-stdin --stop-after-snapshot` \
             ({} ms, journal {} MiB), then restored with `wasmer run --journal J \
             --skip-journal-stdio`: the checksum it prints must equal a fresh run's, and it must \
             not print the fill's line (so it did not run the fill again). golemw: a `memory` \
             worker after `fill-mib {MEMORY_MIB}` with a snapshot at its last entry; \
             `golemw worker invoke memory/w checksum` (restore, replay of the tail, an \
             invocation hashing the 64 MiB, its durable commit) and `golemw worker recover`. \
             Each golemw run gets a fresh copy of the data directory (copied and synced, \
             untimed), so every restore starts from the same snapshot with nothing to replay. \
             {RUNS} runs each, interleaved, after one warm-up run of Wasmer (its module cache). \
             Medians.",
            wasmer.display(),
            fmt(record_wall.as_secs_f64() * 1e3),
            fmt(journal_bytes as f64 / (1024.0 * 1024.0)),
        ),
        tables: vec![table],
        goals: Vec::new(),
        notes: vec![format!(
            "golemw restores and answers (invoke) in {} ms against {} ms for Wasmer's journal \
             restore ({}); Wasmer running the program from scratch takes {} ms.",
            fmt(ms[2]),
            fmt(ms[1]),
            ratio(ms[2], ms[1]),
            fmt(ms[0]),
        )],
        metrics: vec![
            ("wasmer_plain_ms".into(), ms[0]),
            ("wasmer_journal_restore_ms".into(), ms[1]),
            ("golemw_invoke_ms".into(), ms[2]),
            ("golemw_recover_ms".into(), ms[3]),
            ("journal_bytes".into(), journal_bytes as f64),
        ],
    })
}
