//! Support code for golemw's integration tests.
//!
//! The guest programs under `tests/guests/` (a cargo workspace of their own) are built from
//! source for `wasm32-wasip1` the first time a test asks for one; [`guest_wasm`] returns the path
//! of the built core module.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The target the guests are built for.
pub const GUEST_TARGET: &str = "wasm32-wasip1";

/// The root of the repository (the main cargo workspace).
pub fn repo_root() -> PathBuf {
    // CARGO_MANIFEST_DIR is <repo>/tests.
    let tests_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    tests_dir
        .parent()
        .expect("tests/ has a parent directory")
        .to_path_buf()
}

/// The cargo target directory the guests are built in: `<repo>/target/guests`.
pub fn guest_target_dir() -> PathBuf {
    repo_root().join("target").join("guests")
}

/// The path of the built guest `name` (a crate of `tests/guests/`, e.g. `"counter"` or
/// `"diverge-v1"`), building every guest first if this process has not done so yet.
///
/// The build runs once per test process (the result is cached) and under an exclusive lock on
/// `<repo>/target/guests/.build.lock`, so several test processes can call this at once. It runs
/// `cargo build --release --target wasm32-wasip1` on `tests/guests/Cargo.toml` with
/// `--target-dir <repo>/target/guests`; cargo itself skips the work when nothing changed.
///
/// Panics, with cargo's output, if the build fails; panics if the guest does not exist.
pub fn guest_wasm(name: &str) -> PathBuf {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let release_dir = match BUILT.get_or_init(build_guests) {
        Ok(dir) => dir,
        Err(message) => panic!("{message}"),
    };
    let path = release_dir.join(format!("{}.wasm", name.replace('-', "_")));
    assert!(
        path.is_file(),
        "guest {name:?} was not built: {} does not exist (is it a member of tests/guests/Cargo.toml?)",
        path.display()
    );
    path
}

/// Builds every guest; returns the directory holding the `.wasm` files.
fn build_guests() -> Result<PathBuf, String> {
    let root = repo_root();
    let manifest = root.join("tests").join("guests").join("Cargo.toml");
    let target_dir = guest_target_dir();
    fs::create_dir_all(&target_dir)
        .map_err(|e| format!("cannot create {}: {e}", target_dir.display()))?;

    let lock_path = target_dir.join(".build.lock");
    let lock = File::create(&lock_path)
        .map_err(|e| format!("cannot create lock file {}: {e}", lock_path.display()))?;
    lock.lock()
        .map_err(|e| format!("cannot lock {}: {e}", lock_path.display()))?;

    ensure_target(GUEST_TARGET);
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .arg("build")
        .arg("--release")
        .arg("--target")
        .arg(GUEST_TARGET)
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("--target-dir")
        .arg(&target_dir)
        .current_dir(root.join("tests").join("guests"));
    without_host_build_settings(&mut command);

    let output = command
        .output()
        .map_err(|e| format!("cannot run cargo to build the test guests: {e}"));
    drop(lock); // closing the file releases the lock
    let output = output?;
    if !output.status.success() {
        return Err(format!(
            "building the test guests failed ({}): `cargo build --release --target {GUEST_TARGET} \
             --manifest-path {} --target-dir {}`\n\
             (if the target is missing: `rustup target add {GUEST_TARGET}`)\n\
             --- cargo stderr ---\n{}\n--- cargo stdout ---\n{}",
            output.status,
            manifest.display(),
            target_dir.display(),
            String::from_utf8_lossy(&output.stderr),
            String::from_utf8_lossy(&output.stdout),
        ));
    }
    Ok(target_dir.join(GUEST_TARGET).join("release"))
}

/// Adds the Rust target `target` with rustup when the toolchain lacks it, so that
/// `cargo test --workspace` works on a fresh machine. Without rustup (or offline) nothing
/// happens here, and the guest build that follows says what is missing.
fn ensure_target(target: &str) {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let installed = Command::new(rustc)
        .args(["--print", "target-libdir", "--target", target])
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
        .is_some_and(|libdir| libdir.is_dir());
    if !installed {
        let _ = Command::new("rustup")
            .args(["target", "add", target])
            .status();
    }
}

/// Settings meant for the host build (coverage or sanitizer flags, a forced target or target
/// dir) must not leak into a guest build.
fn without_host_build_settings(command: &mut Command) {
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_BUILD_TARGET_DIR",
        "RUSTC_WORKSPACE_WRAPPER",
    ] {
        command.env_remove(var);
    }
}

/// The target Rust builds components for directly (the main module imports WASI 0.2).
pub const COMPONENT_TARGET: &str = "wasm32-wasip2";

/// The guest `name` built as a component binary for [`COMPONENT_TARGET`] (a `.wasm` that
/// `wasm-tools component wit` reads), under the same lock as [`guest_wasm`].
pub fn guest_component(name: &str) -> PathBuf {
    let root = repo_root();
    let target_dir = guest_target_dir();
    fs::create_dir_all(&target_dir).expect("create the guest target dir");
    let lock = File::create(target_dir.join(".build.lock")).expect("create the lock file");
    lock.lock().expect("lock the guest build");
    ensure_target(COMPONENT_TARGET);
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .args([
            "build",
            "--release",
            "--target",
            COMPONENT_TARGET,
            "-p",
            name,
        ])
        .arg("--manifest-path")
        .arg(root.join("tests").join("guests").join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir)
        .current_dir(root.join("tests").join("guests"));
    without_host_build_settings(&mut command);
    let output = command
        .output()
        .expect("run cargo to build a guest component");
    drop(lock);
    assert!(
        output.status.success(),
        "building guest {name} for {COMPONENT_TARGET} failed (if the target is missing: \
         `rustup target add {COMPONENT_TARGET}`):\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    target_dir
        .join(COMPONENT_TARGET)
        .join("release")
        .join(format!("{}.wasm", name.replace('-', "_")))
}

/// Every entry of a worker's oplog, in order; a corrupt block fails the test.
pub fn oplog_entries(
    executor: &golemw_runtime::Executor,
    id: &golemw_runtime::WorkerId,
) -> Vec<(u64, golemw_runtime::oplog::OplogEntry)> {
    let mut out = Vec::new();
    for block in executor.oplog(id, 1, usize::MAX).unwrap() {
        match block {
            golemw_runtime::oplog::store::BlockRead::Entries(e) => out.extend(e),
            golemw_runtime::oplog::store::BlockRead::Corrupt { detail, .. } => {
                panic!("corrupt oplog: {detail}")
            }
        }
    }
    out
}

/// An invocation a test expects to complete: its outcome, or its error. One that is not over
/// (suspended, asleep, queued, retrying) fails the test, saying how it was deferred; tests of
/// deferral match [`golemw_runtime::Invoked`] themselves.
pub trait Completes {
    fn done(self) -> Result<golemw_runtime::InvocationOutcome, golemw_runtime::Error>;
}

impl Completes for Result<golemw_runtime::Invoked, golemw_runtime::Error> {
    fn done(self) -> Result<golemw_runtime::InvocationOutcome, golemw_runtime::Error> {
        self.map(|invoked| {
            invoked
                .completed()
                .unwrap_or_else(|deferred| panic!("the invocation did not complete: {deferred}"))
        })
    }
}

/// Invokes `function` on worker `id` with WAVE `args` and no idempotency key: its WAVE result,
/// or the error.
pub fn try_invoke(
    ex: &golemw_runtime::Executor,
    id: &golemw_runtime::WorkerId,
    function: &str,
    args: &[&str],
) -> Result<Option<String>, golemw_runtime::Error> {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    ex.invoke(id, function, &args, None)
        .done()
        .map(|o| o.result)
}

/// [`try_invoke`] that must succeed: its WAVE result, or "" for a function without one.
pub fn invoke_text(
    ex: &golemw_runtime::Executor,
    id: &golemw_runtime::WorkerId,
    function: &str,
    args: &[&str],
) -> String {
    try_invoke(ex, id, function, args)
        .unwrap_or_else(|e| panic!("{id} {function}({args:?}) failed: {e}"))
        .unwrap_or_default()
}

mod fixtures;
pub use fixtures::*;

pub mod server;

mod wasm_fixtures;
pub use wasm_fixtures::*;
