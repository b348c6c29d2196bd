//! Figure: sleeping workers. A sleep past the durable-sleep threshold suspends its worker (the
//! instance is dropped, a timer brings it back by recovery at the due time), so sleepers should
//! cost other workers nothing, wake on time, and survive a SIGKILL of the server.
//!
//! Two parts, both through `golemw serve` over HTTP:
//! - isolation: the latency of 8 clients invoking other workers, without and then with 1,000
//!   workers sleeping 10 s; how late each sleeper wakes; the server's resident memory;
//! - restart: 10,000 sleepers, the server SIGKILLed while they sleep and restarted; the time to
//!   serve the first request after the restart; how late each sleeper wakes;
//! - threshold: what a sleep costs held in process and durable (suspend, drop the instance,
//!   recover at the due time), the trade-off behind `--durable-sleep-min-ms`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _, Result};

use crate::http::{Connection, Server};
use crate::report::{Figure, Goal, Table};
use crate::stats::{fmt, Samples};
use crate::Ctx;

/// Sleepers in the isolation part, and how long each sleeps.
const ISOLATION_SLEEPERS: usize = 1_000;
const ISOLATION_SLEEP: Duration = Duration::from_secs(10);
/// Their due times are spread evenly over this window: 1,000 wake-ups a second, the rate of the
/// restart part. Due all at once, they measured how fast queuing was (each wake is a recovery
/// of about a millisecond of CPU, so two cores wake some 1,500 a second at best).
const ISOLATION_WINDOW: Duration = Duration::from_secs(1);
/// Clients invoking other workers while the sleepers sleep, and for how long.
const LOAD_CLIENTS: usize = 8;
const LOAD_MEASURE: Duration = Duration::from_secs(3);
/// Sleepers in the restart part; their due times are spread evenly over `RESTART_WINDOW`,
/// which starts `RESTART_LEAD` after the first is queued (time to queue them all, see them
/// asleep, kill and restart the server).
const RESTART_SLEEPERS: usize = 10_000;
const RESTART_LEAD: Duration = Duration::from_secs(40);
const RESTART_WINDOW: Duration = Duration::from_secs(10);
/// Threads queuing sleepers and collecting their results.
const QUEUE_THREADS: usize = 16;
/// A sleeper must wake this close to its due time.
const ON_TIME_MS: f64 = 50.0;
/// Sleep lengths measured held in process and durable (the threshold's trade-off), and how
/// many sleeps of each.
const THRESHOLD_SLEEPS_MS: &[u64] = &[1, 10, 100];
const THRESHOLD_RUNS: usize = 100;

pub fn run(ctx: &Ctx) -> Result<Figure> {
    let golemw = crate::restart::golemw_binary()?;
    let counter = std::fs::read(golemw_tests::guest_wasm("counter"))?;
    let clocks = std::fs::read(golemw_tests::guest_wasm("clocks"))?;
    let bar = ctx.progress("sleepers", 7);

    // Isolation.
    let dir = ctx.temp_dir()?;
    let server = Server::start(&golemw, dir.path())?;
    server.add_component("counter", &counter)?;
    server.add_component("clocks", &clocks)?;
    bar.set_message("load without sleepers");
    load(&server, "warm")?;
    let quiet = load(&server, "quiet")?;
    bar.inc(1);
    bar.set_message("queuing 1,000 sleepers");
    let iso_first = now_ms() + ISOLATION_SLEEP.as_millis() as u64;
    let iso_step = ISOLATION_WINDOW.as_millis() as f64 / ISOLATION_SLEEPERS as f64;
    let iso_queue_start = Instant::now();
    let dues: Vec<u64> = queue_sleepers(&server, "iso", ISOLATION_SLEEPERS, |i, _| {
        iso_first + (i as f64 * iso_step) as u64
    })?;
    let iso_queued_in = iso_queue_start.elapsed();
    wait_asleep(&server, ISOLATION_SLEEPERS, Duration::from_secs(60))?;
    bar.inc(1);
    let rss_sleeping = rss_kib(server.child.id())?;
    bar.set_message("load with 1,000 sleepers");
    let busy = load(&server, "busy")?;
    bar.inc(1);
    bar.set_message("waiting for the sleepers to wake");
    sleep_until_ms(dues.iter().max().copied().unwrap_or(0) + 1_000);
    let woke = collect(&server, "iso", &dues)?;
    let iso_late = lateness(&dues, &woke);
    bar.inc(1);
    drop(server);
    drop(dir);

    // Restart.
    let dir = ctx.temp_dir()?;
    let server = Server::start(&golemw, dir.path())?;
    server.add_component("counter", &counter)?;
    server.add_component("clocks", &clocks)?;
    invoke_add(&server, "after-restart", "warm")?;
    bar.set_message("queuing 10,000 sleepers");
    let first = now_ms() + RESTART_LEAD.as_millis() as u64;
    let step = RESTART_WINDOW.as_millis() as f64 / RESTART_SLEEPERS as f64;
    let queue_start = Instant::now();
    let dues = queue_sleepers(&server, "rs", RESTART_SLEEPERS, |i, _| {
        first + (i as f64 * step) as u64
    })?;
    wait_asleep(&server, RESTART_SLEEPERS, Duration::from_secs(120))?;
    let queued_in = queue_start.elapsed();
    ensure!(
        now_ms() + 5_000 < first,
        "queuing {RESTART_SLEEPERS} sleepers took {queued_in:?}, past the lead of {RESTART_LEAD:?}"
    );
    let rss_10k = rss_kib(server.child.id())?;
    bar.inc(1);
    bar.set_message("SIGKILL and restart");
    drop(server); // SIGKILL
    let restarted = Instant::now();
    let server = Server::start(&golemw, dir.path())?;
    let listening = restarted.elapsed();
    invoke_add(&server, "after-restart", "first")?;
    let first_request = restarted.elapsed();
    let timers = server.metrics()?["pending_timers"].as_u64().unwrap_or(0);
    let rss_restarted = rss_kib(server.child.id())?;
    bar.set_message("waiting for the sleepers to wake");
    sleep_until_ms(dues.iter().max().copied().unwrap_or(0) + 2_000);
    let woke = collect(&server, "rs", &dues)?;
    let restart_late = lateness(&dues, &woke);
    bar.inc(1);
    drop(server);
    drop(dir);

    bar.set_message("the durable-sleep threshold");
    let mut threshold = Vec::new();
    for durable in [false, true] {
        let dir = ctx.temp_dir()?;
        let floor = if durable { "0" } else { "100000000" };
        let server = Server::start_with(&golemw, dir.path(), &["--durable-sleep-min-ms", floor])?;
        server.add_component("clocks", &clocks)?;
        let mut rows = Vec::new();
        for &ms in THRESHOLD_SLEEPS_MS {
            rows.push(sleep_cost(&server, ms)?);
        }
        threshold.push(rows);
    }
    bar.inc(1);
    bar.finish_and_clear();

    let ratio = busy.p99() / quiet.p99();
    let mut load_table = Table::new(&[
        "other workers' invocations",
        "p50 ms",
        "p99 ms",
        "p99 × without sleepers",
    ]);
    for (name, s) in [
        ("without sleepers".to_string(), &quiet),
        (format!("{ISOLATION_SLEEPERS} sleeping"), &busy),
    ] {
        load_table.row(vec![
            name,
            fmt(s.median() / 1000.0),
            fmt(s.p99() / 1000.0),
            format!("{:.2}×", s.p99() / quiet.p99()),
        ]);
    }
    let mut wake_table = Table::new(&[
        "sleepers",
        "woke late p50 ms",
        "p99 ms",
        "max ms",
        "later than 50 ms",
        "server RSS MiB (asleep)",
    ]);
    wake_table.row(vec![
        format!("{ISOLATION_SLEEPERS}, 10 s each"),
        fmt(iso_late.median()),
        fmt(iso_late.p99()),
        fmt(iso_late.max()),
        late_count(&iso_late).to_string(),
        fmt(rss_sleeping as f64 / 1024.0),
    ]);
    wake_table.row(vec![
        format!("{RESTART_SLEEPERS}, SIGKILL + restart while asleep"),
        fmt(restart_late.median()),
        fmt(restart_late.p99()),
        fmt(restart_late.max()),
        late_count(&restart_late).to_string(),
        format!(
            "{} (before the kill) / {} (after the restart)",
            fmt(rss_10k as f64 / 1024.0),
            fmt(rss_restarted as f64 / 1024.0)
        ),
    ]);
    let mut restart_table = Table::new(&["after SIGKILL with 10,000 sleepers", "ms"]);
    restart_table.row(vec![
        "spawn to listening".into(),
        fmt(listening.as_secs_f64() * 1e3),
    ]);
    restart_table.row(vec![
        "spawn to first answered invocation".into(),
        fmt(first_request.as_secs_f64() * 1e3),
    ]);

    let mut threshold_table = Table::new(&[
        "sleep ms",
        "in process: late p50 ms",
        "CPU ms/sleep",
        "durable: late p50 ms",
        "CPU ms/sleep",
        "durable CPU, % of the sleep",
    ]);
    for (i, &ms) in THRESHOLD_SLEEPS_MS.iter().enumerate() {
        let (held, durable) = (&threshold[0][i], &threshold[1][i]);
        threshold_table.row(vec![
            ms.to_string(),
            fmt(held.0),
            fmt(held.1),
            fmt(durable.0),
            fmt(durable.1),
            format!("{:.1}%", durable.1 / ms as f64 * 100.0),
        ]);
    }

    let goals = vec![
        Goal::under(
            "other workers' p99 with 1,000 sleepers, × the same run without",
            ratio,
            1.5,
            "×",
        ),
        Goal::under(
            "latest wake of 1,000 sleepers after their due time",
            iso_late.max(),
            ON_TIME_MS,
            "ms",
        ),
        Goal::under(
            "latest wake of 10,000 sleepers after SIGKILL and restart",
            restart_late.max(),
            ON_TIME_MS,
            "ms",
        ),
    ];
    let notes = vec![
        format!(
            "Queuing the {ISOLATION_SLEEPERS} isolation sleepers took {:.2} s; their due times \
             are {} ms apart.",
            iso_queued_in.as_secs_f64(),
            fmt(iso_step)
        ),
        format!(
            "Queuing {RESTART_SLEEPERS} sleepers (each a new worker run to its sleep) took {:.1} s; \
             after the restart the server had {timers} timers pending.",
            queued_in.as_secs_f64()
        ),
        "A sleeper's lateness is the wall clock its guest reads on waking (live, after the \
         recovery that brought it back) minus the due time it asked for: timer, recovery from \
         the nearest snapshot, replay to the sleep and the clock call are all in it."
            .into(),
    ];
    let metrics = vec![
        ("quiet_p99_ms".into(), quiet.p99() / 1000.0),
        ("busy_p99_ms".into(), busy.p99() / 1000.0),
        ("p99_ratio".into(), ratio),
        ("iso_late_max_ms".into(), iso_late.max()),
        ("iso_late_p99_ms".into(), iso_late.p99()),
        ("rss_1000_sleepers_kib".into(), rss_sleeping as f64),
        ("restart_late_max_ms".into(), restart_late.max()),
        ("restart_late_p99_ms".into(), restart_late.p99()),
        (
            "restart_first_request_ms".into(),
            first_request.as_secs_f64() * 1e3,
        ),
    ];
    Ok(Figure {
        id: "sleepers",
        title: "Sleeping workers: isolation, waking on time, SIGKILL with 10,000 asleep".into(),
        method: format!(
            "`golemw serve` (release build, default durable-sleep threshold) with the `counter` \
             and `clocks` components. Isolation: {LOAD_CLIENTS} client threads, each with a \
             keep-alive connection and a counter worker of its own, invoke `add(1)` for {} s \
             (after a warm-up) without sleepers; then {ISOLATION_SLEEPERS} clocks workers are \
             queued `sleep-until(due)` (`POST .../invoke`, due 10 s after the first is queued, \
             spread evenly over {} s) and, once \
             the server reports them all asleep (`/v1/metrics/io` pending timers), the same load \
             runs again; resident memory (VmRSS) is read while they sleep. Restart: \
             {RESTART_SLEEPERS} sleepers due evenly over {} s starting {} s after the first is \
             queued; once all sleep the server is SIGKILLed and started again on the same data \
             directory. Each sleeper's result (read with `GET .../invocations/KEY` after its \
             due time) is the wall clock on waking.",
            LOAD_MEASURE.as_secs(),
            ISOLATION_WINDOW.as_secs(),
            RESTART_WINDOW.as_secs(),
            RESTART_LEAD.as_secs()
        ),
        tables: vec![load_table, wake_table, restart_table, threshold_table],
        goals,
        notes,
        metrics,
    })
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock before 1970")
        .as_millis() as u64
}

fn sleep_until_ms(at: u64) {
    let now = now_ms();
    if at > now {
        std::thread::sleep(Duration::from_millis(at - now));
    }
}

/// `LOAD_CLIENTS` threads invoking `add(1)` on counter workers of their own for
/// `LOAD_MEASURE`: every latency, µs.
fn load(server: &Server, tag: &str) -> Result<Samples> {
    let all = Mutex::new(Samples::with_capacity(1 << 14));
    let start = Barrier::new(LOAD_CLIENTS);
    std::thread::scope(|scope| -> Result<()> {
        let handles: Vec<_> = (0..LOAD_CLIENTS)
            .map(|i| {
                let (all, start) = (&all, &start);
                scope.spawn(move || -> Result<()> {
                    let mut connection = Connection::open(&server.address)?;
                    let path = format!("/v1/components/counter/workers/load-{i}/invoke-and-await");
                    let body = r#"{"function":"add","params":["1"]}"#;
                    let mut mine = Samples::with_capacity(1 << 12);
                    start.wait();
                    let deadline = Instant::now() + LOAD_MEASURE;
                    let mut n = 0u64;
                    while Instant::now() < deadline {
                        let key = format!("{tag}-{n}");
                        let began = Instant::now();
                        let (status, answer) = connection.post(&path, &key, body)?;
                        ensure!(status == 200, "{path}: {status} {answer}");
                        mine.push(began.elapsed());
                        n += 1;
                    }
                    all.lock().expect("samples").extend(&mine);
                    Ok(())
                })
            })
            .collect();
        for handle in handles {
            handle.join().expect("load thread panicked")?;
        }
        Ok(())
    })?;
    Ok(all.into_inner().expect("samples"))
}

/// Sleeps of `ms` one after another on one worker: (median ms late, server CPU ms per sleep).
fn sleep_cost(server: &Server, ms: u64) -> Result<(f64, f64)> {
    let mut connection = Connection::open(&server.address)?;
    let path = format!("/v1/components/clocks/workers/t{ms}/invoke-and-await");
    let body = format!(r#"{{"function":"sleep-ms","params":["{ms}"]}}"#);
    let (status, answer) = connection.post(&path, "warm", &body)?;
    ensure!(status == 200, "{path}: {status} {answer}");
    let cpu_before = crate::throughput::process_cpu_us(server.child.id())?;
    let mut late = Samples::with_capacity(THRESHOLD_RUNS);
    for n in 0..THRESHOLD_RUNS {
        let began = Instant::now();
        let (status, answer) = connection.post(&path, &format!("s{n}"), &body)?;
        ensure!(status == 200, "{path}: {status} {answer}");
        late.push(began.elapsed().saturating_sub(Duration::from_millis(ms)));
    }
    let cpu = crate::throughput::process_cpu_us(server.child.id())? - cpu_before;
    Ok((late.median() / 1000.0, cpu / 1000.0 / THRESHOLD_RUNS as f64))
}

fn invoke_add(server: &Server, worker: &str, key: &str) -> Result<()> {
    let mut connection = Connection::open(&server.address)?;
    let path = format!("/v1/components/counter/workers/{worker}/invoke-and-await");
    let (status, answer) = connection.post(&path, key, r#"{"function":"add","params":["1"]}"#)?;
    ensure!(status == 200, "{path}: {status} {answer}");
    Ok(())
}

/// Queues `count` sleepers (`clocks` workers `{tag}-{i}`, key `nap`), sleeper `i` due at
/// `due(i, now_ms)`; returns the due times.
fn queue_sleepers(
    server: &Server,
    tag: &str,
    count: usize,
    due: impl Fn(usize, u64) -> u64 + Sync,
) -> Result<Vec<u64>> {
    let next = AtomicUsize::new(0);
    let dues = Mutex::new(vec![0u64; count]);
    std::thread::scope(|scope| -> Result<()> {
        let handles: Vec<_> = (0..QUEUE_THREADS)
            .map(|_| {
                let (next, dues, due) = (&next, &dues, &due);
                scope.spawn(move || -> Result<()> {
                    let mut connection = Connection::open(&server.address)?;
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= count {
                            return Ok(());
                        }
                        let at = due(i, now_ms());
                        let path = format!("/v1/components/clocks/workers/{tag}-{i}/invoke");
                        let body = format!(r#"{{"function":"sleep-until","params":["{at}"]}}"#);
                        let (status, answer) = connection.post(&path, "nap", &body)?;
                        ensure!(status == 202, "{path}: {status} {answer}");
                        dues.lock().expect("dues")[i] = at;
                    }
                })
            })
            .collect();
        for handle in handles {
            handle.join().expect("queue thread panicked")?;
        }
        Ok(())
    })?;
    Ok(dues.into_inner().expect("dues"))
}

/// Waits until the server has at least `count` timers pending (every sleeper asleep).
fn wait_asleep(server: &Server, count: usize, limit: Duration) -> Result<()> {
    let began = Instant::now();
    loop {
        let pending = server.metrics()?["pending_timers"].as_u64().unwrap_or(0);
        if pending as usize >= count {
            return Ok(());
        }
        ensure!(
            began.elapsed() < limit,
            "only {pending} of {count} sleepers asleep after {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Each sleeper's result: the wall clock (ms) on waking.
fn collect(server: &Server, tag: &str, dues: &[u64]) -> Result<Vec<u64>> {
    let next = AtomicUsize::new(0);
    let woke = Arc::new(Mutex::new(vec![0u64; dues.len()]));
    std::thread::scope(|scope| -> Result<()> {
        let handles: Vec<_> = (0..QUEUE_THREADS)
            .map(|_| {
                let (next, woke) = (&next, &woke);
                scope.spawn(move || -> Result<()> {
                    let mut connection = Connection::open(&server.address)?;
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= dues.len() {
                            return Ok(());
                        }
                        let path =
                            format!("/v1/components/clocks/workers/{tag}-{i}/invocations/nap");
                        let (status, answer) = connection.send("GET", &path, "", None, b"")?;
                        ensure!(status == 200, "{path}: {status} {answer}");
                        let value: serde_json::Value = serde_json::from_str(&answer)?;
                        ensure!(
                            value["status"] == "completed",
                            "sleeper {tag}-{i} has not woken 1 s after its due time: {answer}"
                        );
                        let at: u64 = value["result"]
                            .as_str()
                            .and_then(|s| s.parse().ok())
                            .with_context(|| format!("{path}: no wake time in {answer}"))?;
                        woke.lock().expect("woke")[i] = at;
                    }
                })
            })
            .collect();
        for handle in handles {
            handle.join().expect("collect thread panicked")?;
        }
        Ok(())
    })?;
    let woke = woke.lock().expect("woke").clone();
    Ok(woke)
}

/// How late each sleeper woke, ms (never negative: a sleeper cannot wake early).
fn lateness(dues: &[u64], woke: &[u64]) -> Samples {
    let mut late = Samples::with_capacity(dues.len());
    for (due, woke) in dues.iter().zip(woke) {
        late.push_value(woke.saturating_sub(*due) as f64);
    }
    late
}

fn late_count(late: &Samples) -> usize {
    late.values().iter().filter(|&&ms| ms > ON_TIME_MS).count()
}

/// Resident memory of a process, KiB (VmRSS in /proc/PID/status).
fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS in /proc/PID/status")
}
