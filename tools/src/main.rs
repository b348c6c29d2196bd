//! `golemw`: run, invoke and inspect durable WebAssembly workers.

mod commands;
mod filter_expr;
mod hints;
mod output;
mod remote;
mod serve;
mod views;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Durable WebAssembly workers on Wasmer: every worker survives crashes and restarts.
///
/// Workers are instances of components (wasm32-wasip1 modules built with wit-bindgen). Their
/// history is kept in an oplog in an LMDB database under the data directory; any command that
/// touches a worker brings it back from there.
#[derive(Parser)]
#[command(name = "golemw", version, propagate_version = true)]
struct Cli {
    /// Data directory holding components, workers and oplogs.
    /// Defaults to $XDG_DATA_HOME/golemw (or ~/.local/share/golemw).
    #[arg(long, global = true, env = "GOLEMW_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,

    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    json: bool,

    /// When to snapshot workers (at idle points): off, invocations:N, entries:N, seconds:N or
    /// replay-ms:N (once replaying the invocations since the last snapshot would take N ms of
    /// guest time; the default, replay-ms:50, bounds a restart in time).
    /// Recovery restores the newest snapshot and replays only the entries after it.
    #[arg(long, global = true, env = "GOLEMW_SNAPSHOT_POLICY", value_name = "POLICY",
          default_value_t = golemw_runtime::SnapshotPolicy::default())]
    snapshot_policy: golemw_runtime::SnapshotPolicy,

    /// Snapshots kept per worker; older ones are pruned with the pages only they use.
    #[arg(long, global = true, env = "GOLEMW_SNAPSHOTS_KEEP", value_name = "N",
          default_value_t = golemw_runtime::snapshots::DEFAULT_SNAPSHOTS_KEEP)]
    snapshots_keep: usize,

    /// Ask the kernel (Linux 6.7+, userfaultfd) which pages of a worker's memory were written,
    /// so snapshots and time travel read only those. Falls back to comparing every page where
    /// unavailable; `false` forces the comparison.
    #[arg(long, global = true, env = "GOLEMW_WRITE_TRACKING", value_name = "BOOL",
          default_value_t = true, action = clap::ArgAction::Set)]
    write_tracking: bool,

    /// Keep the memory of workers with 4 MiB or more of it as a file next to the oplog
    /// (`images/` in the data directory), written at each snapshot, that a restart maps
    /// copy-on-write instead of copying; checked page by page against the snapshot, so a stale
    /// or damaged image costs only the pages it has wrong. `false`: restarts copy from the
    /// snapshot's pages.
    #[arg(long, global = true, env = "GOLEMW_MEMORY_IMAGES", value_name = "BOOL",
          default_value_t = true, action = clap::ArgAction::Set)]
    memory_images: bool,

    /// The most the data directory's database may grow to, in MiB (default: no limit short of
    /// 1 TiB). Past it, an operation fails as on a full disk ("reached its limit"), leaving
    /// nothing of itself behind; raise the limit and retry.
    #[arg(
        long,
        global = true,
        env = "GOLEMW_MAX_STORAGE_MIB",
        value_name = "MIB"
    )]
    max_storage_mib: Option<u64>,

    /// The most linear memory one worker may have, in MiB. Past it the guest's `memory.grow`
    /// fails (an allocation failure, usually a trap), as at wasm32's 4 GiB; a module that
    /// starts with more is refused. Bounds what one hostile or runaway guest can take.
    #[arg(
        long,
        global = true,
        env = "GOLEMW_MAX_MEMORY_MIB",
        value_name = "MIB",
        default_value_t = DEFAULT_MAX_MEMORY_MIB
    )]
    max_memory_mib: u64,

    /// More logging (repeat for more); or set RUST_LOG.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a function of a wasm file as a durable worker, in one step.
    ///
    /// Adds the file as a component named after it (a new version if it changed), creates the
    /// worker if needed, invokes FUNCTION and prints the result as WAVE. Run it again and the
    /// worker continues from its state.
    Run(commands::run::RunArgs),
    /// Add, update and list components.
    #[command(subcommand)]
    Component(commands::component::ComponentCommand),
    /// Create, invoke, inspect and delete workers.
    #[command(subcommand)]
    Worker(commands::worker::WorkerCommand),
    /// Inspect, diff, export and verify worker snapshots.
    #[command(subcommand)]
    Snapshot(commands::snapshot::SnapshotCommand),
    /// Read every record of the data directory and report what is damaged (exit status 1).
    ///
    /// Verifies the checksum of every record, oplog block, snapshot manifest and page (and each
    /// page's hash), and what ties them together: history whose worker record is missing or
    /// unreadable, snapshots whose pages are gone, names of missing components. Runs beside a
    /// running server (it reads without the directory's lock).
    Check(commands::storage::CheckArgs),
    /// Make a consistent, compacted copy of the data directory in DIR (a new or empty
    /// directory), hot: a running server goes on meanwhile. DIR is then a data directory of
    /// its own (`--data-dir DIR`).
    Backup(commands::storage::BackupArgs),
    /// Write the stub WIT for calling a component's workers with typed functions.
    ///
    /// For each interface `ns:pkg/iface` the component exports, the stub package
    /// `ns:pkg-stub` has an interface `stub-iface` with a resource `iface`: its constructor
    /// takes a worker URI (urn:worker:COMPONENT-UUID/NAME), `blocking-f` calls `f` and waits,
    /// `f` returns a future. Import it in the calling component's world (with the target's WIT
    /// package as a dependency, for its types); golemw links those imports to golem:rpc, so no
    /// stub component is built or composed.
    Stubgen(commands::stubgen::StubgenArgs),
    /// Serve the data directory over HTTP: components, workers, invocations, oplogs, promises.
    ///
    /// Routes (all answers are JSON; errors are {"error": MESSAGE, "kind": KIND}):
    ///   GET    /healthz
    ///   GET    /v1/components                       latest version of every component
    ///   GET    /v1/components/C                     latest version of component C (name or UUID)
    ///   POST   /v1/components/NAME                  add a component; body: the wasm file
    ///   PUT    /v1/components/C                     add a version of C; body: the wasm file
    ///   GET    /v1/components/C/workers[?filter=EXPR]          (EXPR as `worker list --filter`)
    ///   POST   /v1/components/C/workers             create; body {"name", "args"?, "env"?: {K: V}}
    ///   GET    /v1/components/C/workers/W           metadata, as `worker get --json`
    ///   DELETE /v1/components/C/workers/W
    ///   POST   /v1/components/C/workers/W/invoke-and-await
    ///          body {"function", "params": [WAVE, ...]}; header Idempotency-Key (optional)
    ///   GET    /v1/components/C/workers/W/oplog[?from=N&count=N]
    ///   POST   /v1/components/C/workers/W/promises/N/complete   body: the payload
    ///   POST   /v1/components/C/workers/W/interrupt | resume
    ///   POST   /v1/components/C/workers/W/update   body {"version": V, "mode"?: "automatic" |
    ///                                               "snapshot-based"}
    ///   POST   /v1/components/C/workers/W/revert   body {"to_oplog_index": N} or
    ///                                               {"last_invocations": N}
    ///   POST   /v1/components/C/workers/W/fork     body {"target": NAME, "oplog_index"?: N}
    ///   POST   /v1/components/C/workers/W/invoke   queue it (202 with its idempotency key)
    ///   GET    /v1/components/C/workers/W/invocations/KEY   pending, running, suspended, completed
    ///   GET    /v1/metrics/io                       commits, syncs, grouping, workers in memory
    ///
    /// Invocations of different workers run in parallel, one worker's in arrival order; commits
    /// that meet share one fsync. Long guest sleeps suspend the worker durably (see
    /// --durable-sleep-min-ms). SIGINT or SIGTERM lets requests in flight finish (30 s at most; a
    /// second signal stops at once). While serving, `golemw worker` and `golemw component`
    /// commands on the same data directory go through the server; a killed server loses nothing
    /// it answered.
    #[command(verbatim_doc_comment)]
    Serve(serve::ServeArgs),
}

/// Default of `--max-memory-mib`: 16 times the largest worker the benchmarks run (64 MiB), a
/// quarter of wasm32's reach.
const DEFAULT_MAX_MEMORY_MIB: u64 = 1024;

fn default_data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("golemw");
    }
    match std::env::var_os("HOME") {
        Some(home) => PathBuf::from(home).join(".local/share/golemw"),
        None => PathBuf::from(".golemw"),
    }
}

/// A command that ran in this process (logged for `-v`, beside the server's "answered by").
fn local(outcome: anyhow::Result<ExitCode>) -> anyhow::Result<ExitCode> {
    tracing::info!("answered in this process");
    outcome
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = match cli.verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter)),
        )
        .with_writer(std::io::stderr)
        .init();
    let ctx = commands::Context {
        data_dir: cli.data_dir.unwrap_or_else(default_data_dir),
        json: cli.json,
        snapshot_policy: cli.snapshot_policy,
        snapshots_keep: cli.snapshots_keep,
        write_tracking: cli.write_tracking,
        memory_images: cli.memory_images,
        max_storage_mib: cli.max_storage_mib,
        max_memory_mib: cli.max_memory_mib,
    };
    let outcome = match cli.command {
        Command::Run(args) => commands::run::run(&ctx, args),
        // While `golemw serve` holds the data directory, these go through its API.
        Command::Component(cmd) => match remote::Remote::find(&ctx.data_dir) {
            Ok(Some(server)) => remote::run_component(&ctx, &server, cmd),
            Ok(None) => local(commands::component::run(&ctx, cmd)),
            Err(err) => Err(err),
        },
        Command::Worker(cmd) => match remote::Remote::find(&ctx.data_dir) {
            Ok(Some(server)) => remote::run_worker(&ctx, &server, cmd),
            Ok(None) => local(commands::worker::run(&ctx, cmd)),
            Err(err) => Err(err),
        },
        Command::Snapshot(cmd) => commands::snapshot::run(&ctx, cmd),
        Command::Stubgen(args) => commands::stubgen::run(&ctx, args),
        Command::Check(args) => commands::storage::check(&ctx, args),
        Command::Backup(args) => commands::storage::backup(&ctx, args),
        Command::Serve(args) => serve::run(&ctx, args),
    };
    match outcome {
        Ok(code) => code,
        Err(err) => {
            let runtime_error = err.downcast_ref::<golemw_runtime::Error>();
            let hint = runtime_error.and_then(hints::for_cli);
            // A guest's own exit code is the command's (1 where it does not fit a status).
            let exit_code = match runtime_error {
                Some(golemw_runtime::Error::GuestExited { code, .. }) => Some(*code),
                _ => err
                    .downcast_ref::<remote::GuestExit>()
                    .map(|exit| exit.code),
            };
            let status = exit_code.map_or(1, |code| u8::try_from(code).unwrap_or(1).max(1));
            if ctx.json {
                println!(
                    "{}",
                    serde_json::json!({ "error": format!("{err:#}"), "hint": hint })
                );
            } else {
                eprintln!("error: {err:#}");
                if let Some(hint) = hint {
                    eprintln!("hint: {hint}");
                }
            }
            ExitCode::from(status)
        }
    }
}
