//! golemw-bench: measures golemw against baselines taken in the same run, prints one table per
//! figure and writes them into `BENCHMARKS.md` at the repository root.
//!
//! Each figure is one function `fn(&Ctx) -> anyhow::Result<Figure>` in its own module, listed in
//! [`FIGURES`]; adding a figure is adding a module and a line there.
//!
//! ```sh
//! cargo run --release -p golemw-bench                       # every figure, updates BENCHMARKS.md
//! cargo run --release -p golemw-bench -- --only oplog --no-write
//! ```

mod capture;
mod cold_start;
mod fork;
mod host_calls;
mod hostile;
mod http;
mod invocation;
mod journal;
mod many_workers;
mod oplog;
mod plain;
mod report;
mod restart;
mod rpc;
mod sleepers;
mod stats;
mod throughput;
mod travel;
mod workers;

use std::path::PathBuf;

use anyhow::{bail, Context as _, Result};
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};

use report::Figure;

/// A figure: its id (the `--only` name and the BENCHMARKS.md section key) and its function.
type FigureFn = fn(&Ctx) -> Result<Figure>;

const FIGURES: &[(&str, FigureFn)] = &[
    ("host-calls", host_calls::run),
    ("oplog", oplog::run),
    ("invocation", invocation::run),
    ("restart", restart::run),
    ("restore-limit", restart::run_limit),
    ("capture", capture::run),
    ("cold-start", cold_start::run),
    ("many-workers", many_workers::run),
    ("time-travel", travel::run),
    ("fork", fork::run),
    ("throughput", throughput::run),
    ("sleepers", sleepers::run),
    ("rpc", rpc::run),
    ("hostile", hostile::run),
    ("wasmer-journal", journal::run_figure),
];

#[derive(Parser, Debug)]
#[command(about = "Benchmarks of golemw; writes BENCHMARKS.md at the repository root")]
struct Args {
    /// Timed runs per configuration in the host-call figure (after warm-up).
    #[arg(long, default_value_t = 500)]
    runs: usize,
    /// Timed invocations per configuration in the invocation-latency figure.
    #[arg(long, default_value_t = 1000)]
    latency_runs: usize,
    /// Oplog entries appended (and replayed) per repetition in the oplog figure.
    #[arg(long, default_value_t = 1_000_000)]
    entries: u64,
    /// Repetitions of the oplog figure (each on a fresh data directory); the median is reported.
    #[arg(long, default_value_t = 5)]
    oplog_reps: usize,
    /// Samples per configuration in the cold-start figure (after warm-up).
    #[arg(long, default_value_t = 500)]
    cold_start_runs: usize,
    /// Idle workers created on disk for the many-workers figure (at least 600).
    #[arg(long, default_value_t = 10_000)]
    many_workers: usize,
    /// Run only these figures (comma-separated): host-calls, oplog, invocation, restart,
    /// restore-limit, capture, cold-start, many-workers, time-travel, fork, throughput, sleepers,
    /// rpc, hostile, wasmer-journal.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Print JSON on stdout instead of tables.
    #[arg(long)]
    json: bool,
    /// Do not update BENCHMARKS.md.
    #[arg(long)]
    no_write: bool,
}

/// What every figure gets: the settings and a place for scratch data directories.
pub struct Ctx {
    pub runs: usize,
    pub latency_runs: usize,
    pub entries: u64,
    pub oplog_reps: usize,
    pub cold_start_runs: usize,
    pub many_workers: usize,
    scratch: PathBuf,
}

impl Ctx {
    /// A fresh temporary directory on the repository's disk, removed when dropped.
    pub fn temp_dir(&self) -> Result<tempfile::TempDir> {
        tempfile::Builder::new()
            .prefix("golemw-bench-")
            .tempdir_in(&self.scratch)
            .with_context(|| format!("creating a directory under {}", self.scratch.display()))
    }

    /// A progress bar on stderr for `len` steps of `figure`.
    pub fn progress(&self, figure: &str, len: u64) -> ProgressBar {
        let bar = ProgressBar::new(len);
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix:>12} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg}",
            )
            .expect("a valid template"),
        );
        bar.set_prefix(figure.to_string());
        bar
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    // The runtime's logs, for profiling a figure: only when RUST_LOG asks (they would
    // otherwise cost time inside the measurements).
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    for name in &args.only {
        if !FIGURES.iter().any(|(id, _)| id == name) {
            let known: Vec<_> = FIGURES.iter().map(|(id, _)| *id).collect();
            bail!(
                "unknown figure {name:?}; the figures are {}",
                known.join(", ")
            );
        }
    }
    if cfg!(debug_assertions) {
        eprintln!(
            "warning: a debug build; run `cargo run --release -p golemw-bench` for real numbers"
        );
    }
    let root = golemw_tests::repo_root();
    let scratch = root.join("target").join("bench-tmp");
    std::fs::create_dir_all(&scratch).with_context(|| format!("creating {}", scratch.display()))?;
    let ctx = Ctx {
        runs: args.runs,
        latency_runs: args.latency_runs,
        entries: args.entries,
        oplog_reps: args.oplog_reps,
        cold_start_runs: args.cold_start_runs,
        many_workers: args.many_workers,
        scratch,
    };
    let mut meta = report::Meta::collect(&std::env::args().skip(1).collect::<Vec<_>>());
    let mut figures = Vec::new();
    for (id, run) in FIGURES {
        if !args.only.is_empty() && !args.only.iter().any(|o| o == id) {
            continue;
        }
        let started = std::time::Instant::now();
        let figure = run(&ctx).with_context(|| format!("figure {id}"))?;
        let seconds = started.elapsed().as_secs_f64();
        eprintln!("figure {id}: {seconds:.1} s");
        meta.timings.push((id.to_string(), seconds));
        if !args.json {
            println!("{}", figure.to_text());
        }
        figures.push(figure);
    }
    eprintln!("wall time: {}", meta.timings_text());
    if args.json {
        let out = serde_json::json!({ "meta": meta, "figures": figures });
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    if !args.no_write {
        let path = root.join("BENCHMARKS.md");
        report::update_markdown(&path, &meta, &figures)?;
        eprintln!("updated {}", path.display());
    }
    Ok(())
}
