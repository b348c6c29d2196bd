//! Figure: durable throughput with many clients at once, through `golemw serve` over HTTP and
//! in process, against the same invocations made one at a time (what a server that runs one
//! request at a time could do at best: one durable commit, two fsyncs, each).

use crate::workers::Completes;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _, Result};
use golemw_runtime::{Executor, ExecutorOptions};

use crate::http::{Connection, Server};
use crate::report::{Figure, Goal, Table};
use crate::stats::{fmt, Samples};
use crate::Ctx;

/// Concurrent clients per configuration, each on a worker of its own.
const CLIENTS: &[usize] = &[1, 8, 64, 256];
/// How long each configuration is measured, after its warm-up.
const MEASURE: Duration = Duration::from_secs(4);
/// Warm-up per configuration: workers created and active, connections open.
const WARM_UP: Duration = Duration::from_secs(1);

/// One configuration's result.
struct Run {
    clients: usize,
    invocations: u64,
    seconds: f64,
    latencies: Samples,
    /// CPU time of the server process (or of this process, in process) per invocation, µs.
    cpu_us: f64,
    /// LMDB commits and syncs during the measurement.
    commits: u64,
    syncs: u64,
}

impl Run {
    fn per_second(&self) -> f64 {
        self.invocations as f64 / self.seconds
    }
}

pub fn run(ctx: &Ctx) -> Result<Figure> {
    let golemw = crate::restart::golemw_binary()?;
    let counter = golemw_tests::guest_wasm("counter");
    let bar = ctx.progress("throughput", 2 * CLIENTS.len() as u64);
    let mut http = Vec::new();
    {
        let dir = ctx.temp_dir()?;
        let server = Server::start(&golemw, dir.path())?;
        server.add_component("counter", &std::fs::read(&counter)?)?;
        for &clients in CLIENTS {
            http.push(over_http(&server, clients)?);
            bar.inc(1);
        }
    }
    let mut local = Vec::new();
    {
        let dir = ctx.temp_dir()?;
        let ex = Executor::open(dir.path(), ExecutorOptions::default())?;
        ex.components().add("counter", &std::fs::read(&counter)?)?;
        for &clients in CLIENTS {
            local.push(in_process(&ex, clients)?);
            bar.inc(1);
        }
    }
    bar.finish_and_clear();

    let serial = local[0].per_second();
    let mut table = Table::new(&[
        "clients",
        "HTTP inv/s",
        "HTTP p50 ms",
        "HTTP p99 ms",
        "HTTP CPU µs/inv",
        "HTTP inv/commit",
        "HTTP syncs/inv",
        "in process inv/s",
        "in-proc p50 ms",
        "in-proc p99 ms",
        "in-proc CPU µs/inv",
        "HTTP × one at a time",
    ]);
    let mut metrics = Vec::new();
    for (h, l) in http.iter().zip(&local) {
        table.row(vec![
            h.clients.to_string(),
            crate::stats::count(h.per_second()),
            fmt(h.latencies.median() / 1000.0),
            fmt(h.latencies.p99() / 1000.0),
            fmt(h.cpu_us),
            fmt(h.invocations as f64 / h.commits.max(1) as f64),
            fmt(h.syncs as f64 / h.invocations.max(1) as f64),
            crate::stats::count(l.per_second()),
            fmt(l.latencies.median() / 1000.0),
            fmt(l.latencies.p99() / 1000.0),
            fmt(l.cpu_us),
            format!("{:.2}×", h.per_second() / serial),
        ]);
        metrics.push((format!("http_{}_per_s", h.clients), h.per_second()));
        metrics.push((
            format!("http_{}_p50_ms", h.clients),
            h.latencies.median() / 1000.0,
        ));
        metrics.push((
            format!("http_{}_p99_ms", h.clients),
            h.latencies.p99() / 1000.0,
        ));
        metrics.push((format!("local_{}_per_s", l.clients), l.per_second()));
    }
    let at_64 = http
        .iter()
        .find(|r| r.clients == 64)
        .context("64 clients measured")?;
    let rate = at_64.per_second();
    let goals = vec![
        Goal {
            target: "at least 10,000 durable invocations/s through HTTP at 64 clients".into(),
            met: rate >= 10_000.0,
            detail: format!(
                "{} invocations/s ({:.2}× the goal)",
                crate::stats::count(rate),
                rate / 10_000.0
            ),
        },
        Goal::under(
            "p50 latency through HTTP at 64 clients",
            at_64.latencies.median() / 1000.0,
            10.0,
            "ms",
        ),
    ];
    let notes = vec![
        format!(
            "One at a time (1 client, in process) is {} durable invocations/s: each pays a commit's \
             two fsyncs alone. With many clients, commits that wait at the same moment share one \
             transaction and one pair of fsyncs (group commit): at 64 clients over HTTP, {} \
             invocations per commit.",
            crate::stats::count(serial),
            fmt(at_64.invocations as f64 / at_64.commits.max(1) as f64)
        ),
        "The clients run on the same 2 cores as the server (HTTP: one thread per client, \
         keep-alive connections, request parsing and JSON included), so the HTTP figures include \
         the clients' own CPU."
            .into(),
        "Anchors: Golem's nightly benchmark reaches about 2,400 invocations/s with 100 workers on \
         a 32-vCPU machine with an in-memory Redis (no disk write); Restate 1.2 publishes about \
         23,000 requests/s on a 3-node cluster."
            .into(),
    ];
    Ok(Figure {
        id: "throughput",
        title: "Durable throughput with many concurrent clients".into(),
        method: format!(
            "`golemw serve` (release build) on a fresh data directory with the `counter` \
             component; N client threads, each with a keep-alive HTTP/1.1 connection and a worker \
             of its own, post `add(1)` to invoke-and-await in a loop ({} s warm-up, then {} s \
             measured), each request with its own Idempotency-Key; every answer is durable (its \
             commit fsynced). CPU time is the server process's (user + system, /proc) over the \
             invocations. The same sweep in process: N threads calling `Executor::invoke` on \
             distinct workers of one shared executor (CPU time of the whole bench process). \
             Commits and syncs from `Storage::io_counts` (in process) and the server's \
             `/v1/metrics/io` (HTTP); a sync is the meta-page fsync that makes a commit durable \
             (its data pages had their own fsync in the commit).",
            WARM_UP.as_secs(),
            MEASURE.as_secs()
        ),
        tables: vec![table],
        goals,
        notes,
        metrics,
    })
}

/// N threads invoking distinct workers of one shared in-process executor.
fn in_process(ex: &Arc<Executor>, clients: usize) -> Result<Run> {
    let ids: Vec<_> = (0..clients)
        .map(|i| ex.worker_id("counter", &format!("p{clients}-{i}")))
        .collect::<Result<_, _>>()?;
    for id in &ids {
        ex.invoke(id, "add", &["1".into()], None).done()?;
    }
    let io_before = ex.storage().io_counts();
    let cpu_before = process_cpu_us(std::process::id())?;
    let results = run_clients(clients, |i, deadline, record| {
        let id = &ids[i];
        let mut n = 0u64;
        while Instant::now() < deadline {
            let start = Instant::now();
            ex.invoke(id, "add", &["1".into()], Some(&format!("k{n}")))
                .done()?;
            record(start.elapsed());
            n += 1;
        }
        Ok(())
    })?;
    let cpu = process_cpu_us(std::process::id())? - cpu_before;
    let io = ex.storage().io_counts();
    Ok(finish(
        clients,
        results,
        cpu,
        io.commits - io_before.commits,
        io.syncs - io_before.syncs,
    ))
}

/// N client threads on keep-alive connections to the server, distinct workers.
fn over_http(server: &Server, clients: usize) -> Result<Run> {
    let io_before = server.io()?;
    let cpu_before = process_cpu_us(server.child.id())?;
    let address = server.address.clone();
    let results = run_clients(clients, |i, deadline, record| {
        let mut connection = Connection::open(&address)?;
        let path = format!("/v1/components/counter/workers/h{clients}-{i}/invoke-and-await");
        let body = r#"{"function":"add","params":["1"]}"#;
        let mut n = 0u64;
        while Instant::now() < deadline {
            let key = format!("k{n}");
            let start = Instant::now();
            let (status, answer) = connection.post(&path, &key, body)?;
            ensure!(status == 200, "{path}: {status} {answer}");
            record(start.elapsed());
            n += 1;
        }
        Ok(())
    })?;
    let cpu = process_cpu_us(server.child.id())? - cpu_before;
    let io = server.io()?;
    Ok(finish(
        clients,
        results,
        cpu,
        io.0 - io_before.0,
        io.1 - io_before.1,
    ))
}

/// What the client threads of one configuration measured: (latencies, measured seconds).
pub(crate) type ClientResults = (Samples, f64);

/// Runs `clients` threads of `client(index, deadline, record)`: a warm-up whose latencies are
/// dropped, then the measured part. Every thread starts each part together.
pub(crate) fn run_clients(
    clients: usize,
    client: impl Fn(usize, Instant, &mut dyn FnMut(Duration)) -> Result<()> + Sync,
) -> Result<ClientResults> {
    let start = Barrier::new(clients + 1);
    let measured = Barrier::new(clients + 1);
    let all = std::sync::Mutex::new(Samples::with_capacity(1 << 16));
    let mut seconds = 0.0;
    std::thread::scope(|scope| -> Result<()> {
        let handles: Vec<_> = (0..clients)
            .map(|i| {
                let (client, start, measured, all) = (&client, &start, &measured, &all);
                scope.spawn(move || -> Result<()> {
                    start.wait();
                    client(i, Instant::now() + WARM_UP, &mut |_| {})?;
                    measured.wait();
                    let mut mine = Samples::with_capacity(1 << 12);
                    let result = client(i, Instant::now() + MEASURE, &mut |d| mine.push(d));
                    all.lock().expect("samples").extend(&mine);
                    result
                })
            })
            .collect();
        start.wait();
        measured.wait();
        let began = Instant::now();
        for handle in handles {
            handle.join().expect("client thread panicked")?;
        }
        seconds = began.elapsed().as_secs_f64();
        Ok(())
    })?;
    Ok((all.into_inner().expect("samples"), seconds))
}

fn finish(
    clients: usize,
    (latencies, seconds): ClientResults,
    cpu: f64,
    commits: u64,
    syncs: u64,
) -> Run {
    let invocations = latencies.count() as u64;
    Run {
        clients,
        invocations,
        seconds,
        latencies,
        cpu_us: cpu / invocations.max(1) as f64,
        commits,
        syncs,
    }
}

/// User + system CPU time of a process, µs (from /proc/PID/stat).
pub(crate) fn process_cpu_us(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')').context("no ')' in /proc/PID/stat")? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    /// /proc counts CPU time in USER_HZ ticks, which Linux fixes at 100 per second.
    const TICKS_PER_SECOND: f64 = 100.0;
    Ok(ticks / TICKS_PER_SECOND * 1e6)
}
