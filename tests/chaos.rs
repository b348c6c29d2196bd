//! A bounded chaos run against a real `golemw serve`: concurrent clients depositing into
//! counters with idempotency keys, SIGKILLs at random moments, a real (tmpfs) disk that fills
//! and empties under the server, and hostile guests (endless loops, memory bombs, output floods,
//! runaway recursion) beside the well-behaved ones. The checker then asserts that nothing
//! answered was lost or doubled, that every answer was a true running total, and that the
//! well-behaved requests' latencies stayed bounded.
//!
//! `GOLEMW_CHAOS_SECS` sets the length of the run (default 25 s, for CI), `GOLEMW_CHAOS_SEED`
//! replays one run's random choices (the seed is printed at the start; the timing of threads
//! is not replayed). The long run:
//!
//! ```sh
//! GOLEMW_CHAOS_SECS=600 cargo test -p golemw --test chaos -- --nocapture
//! ```
//!
//! Needs root (it mounts a tmpfs for the data directory) and fails, saying so, without it.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use golemw_tests::server::{try_request, Server};
use serde_json::{json, Value};

/// Clients, each depositing into a counter worker of its own.
const CLIENTS: usize = 6;
/// Threads firing hostile invocations.
const HOSTILE_THREADS: usize = 2;
/// The tmpfs holding the data directory, in MiB, for a run of `secs` seconds: room for the
/// compiled-module cache, the memory images of the four memory bombs (each at most
/// `MAX_MEMORY_MIB`) and the database, which grows by about a megabyte a second under this
/// load (oplogs and snapshots are kept), so that once the ballast is gone there is room again.
fn disk_mib(secs: u64) -> u64 {
    160 + 2 * secs
}
/// `--max-memory-mib`: bounds what a memory bomb takes (and its memory image on the small disk).
const MAX_MEMORY_MIB: &str = "16";
/// `--invocation-deadline-ms`: endless loops are stopped after this (and after each of the
/// three retries): short enough that a spin's four attempts (about 5 s with the backoff) often
/// fit between two SIGKILLs.
const DEADLINE_MS: &str = "1000";
/// The bound on the 99th percentile of the well-behaved requests' latencies (answered 200 at
/// the first try, with no SIGKILL in between). A deposit takes about a millisecond when the
/// server is alone; the bound is far above that because this runs a debug build of the server
/// on a 2-core machine beside the test's own 8 busy threads, two hostile guests burning a core
/// between them (confined to one core, as SCHED_IDLE, only after 10 ms), memory bombs being snapshotted,
/// and the first request to each worker after a restart recovering it from storage. A server
/// that let a hostile guest hold up other workers (a spin is stopped after 1 s, each retry too)
/// would show multi-second latencies and fail it.
const P99_BOUND: Duration = Duration::from_secs(2);
/// How long a well-behaved request may go unanswered before the test calls it hung.
const DEPOSIT_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a hostile request may go unanswered: four attempts of a 1 s spin with backoff in
/// between take about five seconds.
const HOSTILE_TIMEOUT: Duration = Duration::from_secs(120);

/// A small deterministic pseudo-random sequence (xorshift).
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        // Spread nearby seeds apart (splitmix64), and never zero.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)) | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }

    /// A duration between `min_ms` and `max_ms` milliseconds.
    fn millis(&mut self, min_ms: u64, max_ms: u64) -> Duration {
        Duration::from_millis(min_ms + self.below(max_ms - min_ms + 1))
    }
}

/// What the server runs with, after `serve`.
const SERVE_ARGS: &[&str] = &[
    "--invocation-deadline-ms",
    DEADLINE_MS,
    "--max-memory-mib",
    MAX_MEMORY_MIB,
    // Snapshots (and with them the bombs' memory images) at every idle point a second apart,
    // so that they too meet the full disk.
    "--snapshot-policy",
    "seconds:1",
];

fn start(data_dir: &Path) -> Server {
    Server::start_with(env!("CARGO_BIN_EXE_golemw").as_ref(), data_dir, SERVE_ARGS)
}

/// Why `golemw serve` did not start: the first line it prints (its error, as JSON), from one
/// more attempt (killed at once if it does start this time).
fn why_no_start(data_dir: &Path) -> String {
    use std::io::BufRead;
    let mut child = Command::new(env!("CARGO_BIN_EXE_golemw"))
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--json", "serve", "--listen", "127.0.0.1:0"])
        .args(SERVE_ARGS)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start golemw serve");
    let mut line = String::new();
    let _ = std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line);
    let _ = child.kill();
    let _ = child.wait();
    line.trim().to_string()
}

/// What `df` says of the mount, for messages.
fn df(mount: &Path) -> String {
    Command::new("df")
        .arg("-k")
        .arg(mount)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_else(|e| format!("(df failed: {e})"))
}

/// What `du` says of the mount's top directories, for the summary.
fn du(mount: &Path) -> String {
    Command::new("du")
        .args(["-k", "-d", "2"])
        .arg(mount)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_else(|e| format!("(du failed: {e})"))
}

/// A tmpfs mounted on a fresh temporary directory, and the server running on a data directory
/// inside it. Dropping it kills the server first, then unmounts.
struct Rig {
    mount: PathBuf,
    data_dir: PathBuf,
    ballast: PathBuf,
    server: Option<Server>,
    _dir: tempfile::TempDir,
}

impl Rig {
    fn mount(mib: u64) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let mount = dir.path().to_path_buf();
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(&mount)
            .output()
            .unwrap_or_else(|e| panic!("the chaos run needs `mount` (run as root): {e}"));
        assert!(
            output.status.success(),
            "the chaos run mounts a {mib} MiB tmpfs for the server's data directory, so that \
             the disk really fills; that needs root (or CAP_SYS_ADMIN): `mount -t tmpfs {}` \
             failed ({}): {}",
            mount.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
        Rig {
            data_dir: mount.join("data"),
            ballast: mount.join("ballast.bin"),
            mount,
            server: None,
            _dir: dir,
        }
    }

    fn server(&mut self) -> &mut Server {
        self.server.as_mut().expect("the server is running")
    }

    /// Fails the test if the server exited without being killed by us.
    fn assert_alive(&mut self, seed: u64) {
        if let Some(status) = self.server().child.try_wait().unwrap() {
            panic!(
                "seed {seed}: the server exited on its own ({status}) (its stderr is above); disk: \
                 \n{}",
                df(&self.mount)
            );
        }
    }

    /// SIGKILLs the server (after checking it had not died by itself) and starts it again on
    /// the same data directory; returns the new address.
    fn kill_and_restart(&mut self, seed: u64) -> String {
        self.assert_alive(seed);
        self.server().kill();
        self.server = None;
        let data_dir = self.data_dir.clone();
        let server = std::panic::catch_unwind(|| start(&data_dir)).unwrap_or_else(|_| {
            panic!(
                "seed {seed}: the server did not start again after a SIGKILL{}; it says: {}\n{}",
                if self.ballast.exists() {
                    " (with the disk filled by the ballast)"
                } else {
                    ""
                },
                why_no_start(&data_dir),
                df(&self.mount)
            )
        });
        let address = server.address.clone();
        self.server = Some(server);
        address
    }

    /// Fills the disk with the ballast file, to ENOSPC, then frees `room` bytes of it.
    /// Returns the ballast's size.
    fn fill(&self, room: u64) -> u64 {
        let mut file = File::create(&self.ballast).unwrap();
        let mut written = 0u64;
        for chunk in [1 << 20, 4 << 10] {
            let block = vec![0xA5u8; chunk];
            loop {
                match file.write(&block) {
                    Ok(0) => break,
                    Ok(n) => written += n as u64,
                    Err(e) if e.kind() == ErrorKind::StorageFull => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => panic!("writing {}: {e}", self.ballast.display()),
                }
            }
        }
        let size = written.saturating_sub(room);
        file.set_len(size).unwrap();
        size
    }

    fn empty(&self) {
        std::fs::remove_file(&self.ballast).unwrap();
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        // The server first: it holds files in the mount.
        if let Some(mut server) = self.server.take() {
            server.kill();
        }
        let unmounted = Command::new("umount")
            .arg(&self.mount)
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            // Something still holds it open: detach it now, gone once that lets go.
            let _ = Command::new("umount").arg("-l").arg(&self.mount).status();
        }
    }
}

/// One deposit of a client: its idempotency key, its amount, and the highest running total
/// the client had been answered before it first sent it (the deposit must land above that).
#[derive(Clone, Debug)]
struct Deposit {
    key: String,
    amount: u64,
    floor: u64,
    /// Sends so far.
    sends: u32,
}

/// What one client saw.
#[derive(Default)]
struct Ledger {
    /// Answered deposits in answer order: (deposit, the running total it answered).
    answered: Vec<(Deposit, u64)>,
    /// Sent, not answered yet.
    pending: Vec<Deposit>,
    /// Resends of an unanswered deposit.
    resends: u64,
    /// 507 storage-full answers.
    refusals: u64,
    /// Requests that broke (server killed) or could not connect (server down).
    broken: u64,
}

/// Shared between the threads.
struct Shared {
    seed: u64,
    address: RwLock<String>,
    /// SIGKILLs so far; a latency counts only if none happened while its request was out.
    kills: AtomicU64,
    stop: AtomicBool,
    /// Latencies of deposits answered 200 at their first send with no kill meanwhile.
    latencies: Mutex<Vec<Duration>>,
    hostile: Mutex<HostileLog>,
}

#[derive(Default)]
struct HostileLog {
    sent: u64,
    /// Answers by (function, status, kind).
    answers: BTreeMap<(String, u16, String), u64>,
    /// Requests that broke or could not connect.
    broken: u64,
    /// 507 storage-full answers (the request is sent again).
    refusals: u64,
    /// Spins stopped at the deadline: answered with the deadline's trap (422 `trap` when the
    /// answer came from the last attempt, 409 `worker-failed` with the trap as the reason when
    /// the attempts ran out while the request was cut off by a SIGKILL).
    spins_stopped: u64,
}

/// Sets the stop flag when dropped, so that threads end when the test fails.
struct StopOnDrop(Arc<Shared>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.stop.store(true, Ordering::SeqCst);
    }
}

/// The outcome of one request.
enum Sent {
    Answered(u16, Value),
    /// Could not connect, or the connection broke: the server was killed.
    Broken,
}

fn invoke(
    address: &str,
    worker: &str,
    function: &str,
    params: &[String],
    key: &str,
    timeout: Duration,
) -> Sent {
    let (component, name) = worker.split_once('/').unwrap();
    let body = json!({ "function": function, "params": params }).to_string();
    match try_request(
        address,
        "POST",
        &format!("/v1/components/{component}/workers/{name}/invoke-and-await"),
        &[
            ("Content-Type", "application/json"),
            ("Idempotency-Key", key),
        ],
        body.as_bytes(),
        Some(timeout),
    ) {
        Ok((status, body)) => Sent::Answered(status, body),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => panic!(
            "{function}({params:?}) on {worker} with key {key}: no answer within {timeout:?}"
        ),
        Err(_) => Sent::Broken,
    }
}

/// Whether an answer is the full disk (the only refusal a deposit may get).
/// Sends `deposit` to `worker` (`add` under the deposit's key), once.
fn send(address: &str, worker: &str, deposit: &Deposit) -> Sent {
    invoke(
        address,
        worker,
        "add",
        &[deposit.amount.to_string()],
        &deposit.key,
        DEPOSIT_TIMEOUT,
    )
}

fn is_storage_full(status: u16, body: &Value) -> bool {
    status == 507 && body["kind"] == "storage-full"
}

/// A well-behaved client: deposits into `counter/acc-{client}` until told to stop; an
/// unanswered deposit (server killed, disk full) stays pending and is sent again later with
/// the same key, in between new ones.
fn client(shared: Arc<Shared>, client: usize) -> Ledger {
    let mut rng = Rng::new(shared.seed ^ (0xC11E_0000 + client as u64));
    let worker = format!("counter/acc-{client}");
    let mut ledger = Ledger::default();
    let mut highest = 0u64;
    let mut next = 0u64;
    while !shared.stop.load(Ordering::SeqCst) {
        // A pending deposit half the time, and always once a few have piled up.
        let mut deposit =
            if !ledger.pending.is_empty() && (ledger.pending.len() >= 3 || rng.below(2) == 0) {
                let i = rng.below(ledger.pending.len() as u64) as usize;
                ledger.resends += 1;
                ledger.pending.swap_remove(i)
            } else {
                next += 1;
                Deposit {
                    key: format!("c{client}-d{next}"),
                    amount: 1 + rng.below(1000),
                    floor: highest,
                    sends: 0,
                }
            };
        deposit.sends += 1;
        // A moment between requests, as a client has: it keeps the database's growth (and so
        // the disk the run needs) near a megabyte a second.
        std::thread::sleep(rng.millis(0, 6));
        let kills = shared.kills.load(Ordering::SeqCst);
        let address = shared.address.read().unwrap().clone();
        let sent = Instant::now();
        match send(&address, &worker, &deposit) {
            Sent::Answered(200, body) => {
                let took = sent.elapsed();
                assert_eq!(body["status"], "completed", "{worker} {deposit:?}: {body}");
                let total: u64 = body["result"].as_str().unwrap().parse().unwrap();
                if deposit.sends == 1 && shared.kills.load(Ordering::SeqCst) == kills {
                    shared.latencies.lock().unwrap().push(took);
                }
                highest = highest.max(total);
                ledger.answered.push((deposit, total));
            }
            Sent::Answered(status, body) if is_storage_full(status, &body) => {
                ledger.refusals += 1;
                ledger.pending.push(deposit);
                std::thread::sleep(rng.millis(30, 120));
            }
            Sent::Answered(status, body) => panic!(
                "seed {}: deposit {deposit:?} into {worker} answered {status} (only 200, or 507 \
                 on a full disk, may answer a deposit): {body}",
                shared.seed
            ),
            Sent::Broken => {
                ledger.broken += 1;
                ledger.pending.push(deposit);
                std::thread::sleep(rng.millis(10, 60));
            }
        }
    }
    ledger
}

/// Fires hostile invocations until told to stop: endless loops and runaway recursion on fresh
/// workers (they end `failed`), memory bombs and output floods on a few long-lived ones.
/// Their answers are not checked for success, only logged.
fn hostile(shared: Arc<Shared>, thread: usize) {
    let mut rng = Rng::new(shared.seed ^ (0x4057_1000 + thread as u64));
    let mut n = 0u64;
    // The long-lived workers' names change once one has failed for good (its allocations fail
    // at the memory limit, a trap, retried until it ends `failed`): the failed one is deleted.
    let mut generation = [0u64; 2];
    while !shared.stop.load(Ordering::SeqCst) {
        n += 1;
        let slot = rng.below(2) as usize;
        let pool = format!("hostile/bomb-{thread}-{slot}-{}", generation[slot]);
        // Each thread starts with an endless loop; then anything.
        let (worker, function, params) = match if n == 1 { 0 } else { rng.below(6) } {
            0 | 1 => (format!("hostile/spin-{thread}-{n}"), "spin", vec![]),
            2 => (pool, "grow", vec![(16 + rng.below(240)).to_string()]),
            3 => (pool, "flood", vec![(1 + rng.below(8)).to_string()]),
            4 => (
                format!("hostile/deep-{thread}-{n}"),
                "recurse",
                vec!["10000000".to_string()],
            ),
            _ => (pool, "add", vec!["1".to_string()]),
        };
        let key = format!("h{thread}-{n}");
        shared.hostile.lock().unwrap().sent += 1;
        // A request the SIGKILL broke, or the full disk refused, is sent again with its key, a
        // few times, like a client would: an endless loop's attempts go on across restarts
        // until its worker fails.
        let mut answer = None;
        for _ in 0..10 {
            let address = shared.address.read().unwrap().clone();
            match invoke(&address, &worker, function, &params, &key, HOSTILE_TIMEOUT) {
                Sent::Answered(status, body) if is_storage_full(status, &body) => {
                    shared.hostile.lock().unwrap().refusals += 1;
                }
                Sent::Answered(status, body) => {
                    answer = Some((address, status, body));
                    break;
                }
                Sent::Broken => shared.hostile.lock().unwrap().broken += 1,
            }
            if shared.stop.load(Ordering::SeqCst) {
                break;
            }
            std::thread::sleep(rng.millis(100, 300));
        }
        let Some((address, status, body)) = answer else {
            continue;
        };
        let kind = body["kind"].as_str().unwrap_or("").to_string();
        let mut log = shared.hostile.lock().unwrap();
        if function == "spin"
            && (status == 422 || status == 409)
            && body["error"]
                .as_str()
                .is_some_and(|e| e.contains("ran past its deadline"))
        {
            log.spins_stopped += 1;
        }
        *log.answers
            .entry((function.to_string(), status, kind.clone()))
            .or_default() += 1;
        drop(log);
        if worker.contains("/bomb-") && kind == "worker-failed" {
            generation[slot] += 1;
            let name = worker.split_once('/').unwrap().1;
            let deleted = try_request(
                &address,
                "DELETE",
                &format!("/v1/components/hostile/workers/{name}"),
                &[],
                b"",
                Some(HOSTILE_TIMEOUT),
            );
            let status = deleted.map_or(0, |(status, _)| status);
            *shared
                .hostile
                .lock()
                .unwrap()
                .answers
                .entry(("delete".to_string(), status, String::new()))
                .or_default() += 1;
        }
        std::thread::sleep(rng.millis(50, 400));
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

/// Joins a thread, failing the test with its panic.
fn join<T>(thread: JoinHandle<T>) -> T {
    match thread.join() {
        Ok(value) => value,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

#[test]
fn chaos_nothing_answered_is_lost_or_doubled_and_well_behaved_latency_stays_bounded() {
    let secs: u64 = std::env::var("GOLEMW_CHAOS_SECS")
        .ok()
        .map(|s| s.parse().expect("GOLEMW_CHAOS_SECS: a number of seconds"))
        .unwrap_or(25);
    let seed: u64 = std::env::var("GOLEMW_CHAOS_SEED")
        .ok()
        .map(|s| s.parse().expect("GOLEMW_CHAOS_SEED: a number"))
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("chaos: {secs} s, seed {seed} (GOLEMW_CHAOS_SEED={seed} replays its choices)");
    let mut rng = Rng::new(seed);

    let mut rig = Rig::mount(disk_mib(secs));
    let server = start(&rig.data_dir);
    server.add_component("counter", "counter");
    server.add_component("hostile", "hostile");
    let shared = Arc::new(Shared {
        seed,
        address: RwLock::new(server.address.clone()),
        kills: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        latencies: Mutex::default(),
        hostile: Mutex::default(),
    });
    rig.server = Some(server);
    let _stop = StopOnDrop(Arc::clone(&shared));

    let clients: Vec<JoinHandle<Ledger>> = (0..CLIENTS)
        .map(|c| {
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || client(shared, c))
        })
        .collect();
    let hostiles: Vec<JoinHandle<()>> = (0..HOSTILE_THREADS)
        .map(|t| {
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || hostile(shared, t))
        })
        .collect();

    // The chaos: SIGKILLs every 2-6 s; the disk filled (to ENOSPC, or with a little room left)
    // for 1-4 s at a time, emptied for 1-5 s.
    let began = Instant::now();
    let end = began + Duration::from_secs(secs);
    let mut next_kill = began + rng.millis(2000, 6000);
    let mut next_disk = began + rng.millis(1000, 3000);
    let (mut fills, mut full_restarts) = (0u64, 0u64);
    let mut full = false;
    while Instant::now() < end {
        std::thread::sleep(Duration::from_millis(25));
        rig.assert_alive(seed);
        if let Some(done) = clients.iter().position(|c| c.is_finished()) {
            // A client only ends early by failing.
            let _ = join(clients.into_iter().nth(done).unwrap());
            unreachable!("client {done} ended before the run did");
        }
        if let Some(done) = hostiles.iter().position(|h| h.is_finished()) {
            join(hostiles.into_iter().nth(done).unwrap());
            unreachable!("hostile thread {done} ended before the run did");
        }
        let now = Instant::now();
        if now >= next_disk {
            if full {
                rig.empty();
                next_disk = now + rng.millis(1000, 5000);
            } else {
                let room = [0, 0, 0, 64 << 10, 512 << 10][rng.below(5) as usize];
                let size = rig.fill(room);
                fills += 1;
                eprintln!(
                    "chaos {:>5.1} s: disk filled ({} MiB of ballast, {} KiB left)",
                    began.elapsed().as_secs_f64(),
                    size >> 20,
                    room >> 10
                );
                next_disk = now + rng.millis(1000, 4000);
            }
            full = !full;
        }
        if now >= next_kill {
            full_restarts += u64::from(full);
            shared.kills.fetch_add(1, Ordering::SeqCst);
            let address = rig.kill_and_restart(seed);
            *shared.address.write().unwrap() = address;
            eprintln!(
                "chaos {:>5.1} s: SIGKILL and restart{}",
                began.elapsed().as_secs_f64(),
                if full { " on a full disk" } else { "" }
            );
            next_kill = Instant::now() + rng.millis(2000, 6000);
        }
    }

    // The end of the chaos: room again, one last restart, every thread stopped.
    shared.stop.store(true, Ordering::SeqCst);
    if full {
        rig.empty();
    }
    shared.kills.fetch_add(1, Ordering::SeqCst);
    let address = rig.kill_and_restart(seed);
    *shared.address.write().unwrap() = address.clone();
    let kills = shared.kills.load(Ordering::SeqCst);
    hostiles.into_iter().for_each(join);
    let mut ledgers: Vec<Ledger> = clients.into_iter().map(join).collect();

    // Every unanswered deposit sent again, with its key, until answered.
    let settle = Instant::now() + Duration::from_secs(120);
    for (c, ledger) in ledgers.iter_mut().enumerate() {
        let worker = format!("counter/acc-{c}");
        for mut deposit in std::mem::take(&mut ledger.pending) {
            loop {
                rig.assert_alive(seed);
                deposit.sends += 1;
                ledger.resends += 1;
                match send(&address, &worker, &deposit) {
                    Sent::Answered(200, body) => {
                        let total = body["result"].as_str().unwrap().parse().unwrap();
                        ledger.answered.push((deposit, total));
                        break;
                    }
                    Sent::Answered(status, body) if is_storage_full(status, &body) => {
                        ledger.refusals += 1;
                        assert!(
                            Instant::now() < settle,
                            "seed {seed}: the disk stays full with the ballast gone: {body}\n{}",
                            df(&rig.mount)
                        );
                        std::thread::sleep(Duration::from_millis(200));
                    }
                    Sent::Answered(status, body) => panic!(
                        "seed {seed}: deposit {deposit:?} into {worker} answered {status}: {body}"
                    ),
                    Sent::Broken => {
                        panic!("seed {seed}: the server broke a connection after the chaos ended")
                    }
                }
            }
        }
    }

    // The checker. For each worker: its answers, ordered by the running total they answered,
    // are exactly the running sums of their amounts (each deposit applied once, none lost, none
    // applied twice, none answered with another's total); each deposit landed above every total
    // answered before it was first sent; its balance is their sum; and its oplog holds each
    // key's invocation once.
    let server = rig.server();
    for (c, ledger) in ledgers.iter().enumerate() {
        let worker = format!("acc-{c}");
        let mut by_total: Vec<&(Deposit, u64)> = ledger.answered.iter().collect();
        by_total.sort_by_key(|(_, total)| *total);
        let mut sum = 0;
        for (deposit, total) in &by_total {
            sum += deposit.amount;
            assert_eq!(
                *total, sum,
                "seed {seed}: {worker}: {deposit:?} answered {total}, but the deposits answered \
                 below it sum to {sum} with it: one was lost, doubled or answered wrongly"
            );
            assert!(
                *total > deposit.floor,
                "seed {seed}: {worker}: {deposit:?} answered {total}, not above {} answered \
                 before it was first sent",
                deposit.floor
            );
        }
        // In answer order, the deposits answered at their first send answered rising totals:
        // each was sent after the one before it was answered, so it landed after it.
        let mut last = 0;
        for (deposit, total) in ledger.answered.iter().filter(|(d, _)| d.sends == 1) {
            assert!(
                *total > last,
                "seed {seed}: {worker}: {deposit:?} answered {total} after {last} was answered"
            );
            last = *total;
        }
        let balance = server.result(&format!("counter/{worker}"), "get", &[]);
        assert_eq!(
            balance,
            sum.to_string(),
            "seed {seed}: {worker}'s balance against its answered deposits"
        );
        let (status, rows) = server.get(&format!(
            "/v1/components/counter/workers/{worker}/oplog?count=100000000"
        ));
        assert_eq!(status, 200, "{rows}");
        let mut seen: HashMap<String, usize> = HashMap::new();
        for row in rows.as_array().unwrap() {
            if row["deleted"] == json!(true) || row["kind"] != "exported-function-invoked" {
                continue;
            }
            // The entry is `{"Variant": {fields}}`.
            let fields = row["entry"].as_object().unwrap().values().next().unwrap();
            if let Some(key) = fields["idempotency_key"].as_str() {
                *seen.entry(key.to_string()).or_default() += 1;
            }
        }
        for (deposit, _) in &ledger.answered {
            assert_eq!(
                seen.get(&deposit.key),
                Some(&1),
                "seed {seed}: {worker}: {} in the oplog",
                deposit.key
            );
        }
        // The final `get` was invoked too; nothing else.
        let sent: std::collections::HashSet<&str> = ledger
            .answered
            .iter()
            .map(|(d, _)| d.key.as_str())
            .collect();
        let strangers: Vec<&String> = seen.keys().filter(|k| !sent.contains(k.as_str())).collect();
        assert!(
            strangers.len() <= 1,
            "seed {seed}: {worker}: invocations in the oplog that no client sent: {strangers:?}"
        );
    }

    // Every part of the chaos happened.
    let answered: usize = ledgers.iter().map(|l| l.answered.len()).sum();
    let resends: u64 = ledgers.iter().map(|l| l.resends).sum();
    let refusals: u64 = ledgers.iter().map(|l| l.refusals).sum();
    let broken: u64 = ledgers.iter().map(|l| l.broken).sum();
    let mut latencies = shared.latencies.lock().unwrap().clone();
    latencies.sort();
    let hostile = shared.hostile.lock().unwrap();
    let hostile_answered: u64 = hostile.answers.values().sum();
    let (p50, p99) = match latencies.is_empty() {
        true => (Duration::ZERO, Duration::ZERO),
        false => (percentile(&latencies, 0.50), percentile(&latencies, 0.99)),
    };
    eprintln!(
        "chaos summary (seed {seed}, {secs} s):\n  deposits answered {answered} (resends {resends}, \
         broken by kills {broken}, disk-full refusals {refusals})\n  SIGKILLs {kills} ({full_restarts} \
         on a full disk), disk fills {fills}\n  hostile calls {} sent, {hostile_answered} answered, \
         {} broken by kills, {} disk-full refusals, {} spins stopped at the deadline\n  \
         well-behaved latency over {} first-try answers: p50 {p50:?}, p99 {p99:?}, max {:?}",
        hostile.sent,
        hostile.broken,
        hostile.refusals,
        hostile.spins_stopped,
        latencies.len(),
        latencies.last().copied().unwrap_or_default(),
    );
    eprintln!("  the disk at the end:\n{}", du(&rig.mount));
    for ((function, status, kind), count) in &hostile.answers {
        eprintln!("  hostile {function}: {status} {kind} x{count}");
    }
    assert!(kills >= 2, "seed {seed}: only {kills} SIGKILLs");
    assert!(fills >= 1, "seed {seed}: the disk was never filled");
    assert!(
        refusals >= 1,
        "seed {seed}: the disk filled {fills} times but no deposit was refused for it: the \
         server never met the full disk"
    );
    assert!(
        broken >= 1,
        "seed {seed}: no deposit was caught by a SIGKILL"
    );
    assert!(
        hostile_answered >= HOSTILE_THREADS as u64,
        "seed {seed}: the hostile guests were answered {hostile_answered} times"
    );
    assert!(
        hostile.spins_stopped >= 1,
        "seed {seed}: no endless loop was stopped at its deadline: {:?}",
        hostile.answers
    );
    assert!(
        latencies.len() >= 20 * CLIENTS,
        "seed {seed}: only {} well-behaved first-try answers to measure",
        latencies.len()
    );
    assert!(
        p99 <= P99_BOUND,
        "seed {seed}: well-behaved p99 latency {p99:?} (p50 {p50:?}) is past {P99_BOUND:?}"
    );
}
