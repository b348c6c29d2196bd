//! Figure: well-behaved workers beside hostile ones on one server: the latency of short
//! invocations with no hostile guest, and with 10 (endless loops, memory bombs, output floods)
//! running at the same time, with long calls confined to one core (the default) and not.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};

use crate::http::{Connection, Server};
use crate::report::{Figure, Goal, Table};
use crate::stats::{fmt, ratio, Samples};
use crate::throughput::run_clients;
use crate::Ctx;

/// Well-behaved clients, each on a `counter` worker of its own.
const CLIENTS: usize = 8;
/// Hostile guests running at once: spinning, growing memory, flooding output.
const SPINNERS: usize = 6;
const BOMBS: usize = 2;
const FLOODS: usize = 2;

struct Run {
    label: &'static str,
    latencies: Samples,
    seconds: f64,
}

pub fn run(ctx: &Ctx) -> Result<Figure> {
    let golemw = crate::restart::golemw_binary()?;
    let bar = ctx.progress("hostile", 3);
    let mut runs = Vec::new();
    for (label, confine, hostile) in [
        ("no hostile guest", "50", false),
        (
            "10 hostile guests, long calls confined (default)",
            "50",
            true,
        ),
        ("10 hostile guests, not confined", "0", true),
    ] {
        let dir = ctx.temp_dir()?;
        let server = Server::start_with(&golemw, dir.path(), &["--confine-after-ms", confine])?;
        server.add_component(
            "counter",
            &std::fs::read(golemw_tests::guest_wasm("counter"))?,
        )?;
        server.add_component(
            "hostile",
            &std::fs::read(golemw_tests::guest_wasm("hostile"))?,
        )?;
        let stop = Arc::new(AtomicBool::new(false));
        let attackers: Vec<_> = if hostile {
            (0..SPINNERS + BOMBS + FLOODS)
                .map(|i| {
                    let (address, stop) = (server.address.clone(), Arc::clone(&stop));
                    std::thread::spawn(move || attack(&address, i, &stop))
                })
                .collect()
        } else {
            Vec::new()
        };
        // Let the attack start before measuring.
        std::thread::sleep(Duration::from_millis(if hostile { 500 } else { 0 }));
        let address = server.address.clone();
        let (latencies, seconds) = run_clients(CLIENTS, |i, deadline, record| {
            let mut connection = Connection::open(&address)?;
            let path = format!("/v1/components/counter/workers/w{i}/invoke-and-await");
            let body = r#"{"function":"add","params":["1"]}"#;
            let mut n = 0u64;
            while Instant::now() < deadline {
                let start = Instant::now();
                let (status, answer) = connection.post(&path, &format!("k{n}"), body)?;
                ensure!(status == 200, "{path}: {status} {answer}");
                record(start.elapsed());
                n += 1;
            }
            Ok(())
        })?;
        stop.store(true, Ordering::SeqCst);
        // The spinners run until their deadline: the server is killed, not waited for.
        drop(server);
        for attacker in attackers {
            let _ = attacker.join();
        }
        runs.push(Run {
            label,
            latencies,
            seconds,
        });
        bar.inc(1);
    }
    bar.finish_and_clear();

    let base = &runs[0];
    let mut table = Table::new(&["configuration", "inv/s", "p50 ms", "p99 ms", "p99 × none"]);
    let mut metrics = Vec::new();
    for (i, run) in runs.iter().enumerate() {
        let p99 = run.latencies.p99() / 1000.0;
        table.row(vec![
            run.label.to_string(),
            crate::stats::count(run.latencies.count() as f64 / run.seconds),
            fmt(run.latencies.median() / 1000.0),
            fmt(p99),
            ratio(run.latencies.p99(), base.latencies.p99()),
        ]);
        metrics.push((format!("p99_ms_{i}"), p99));
    }
    let confined = &runs[1];
    let goals = vec![Goal::under(
        "p99 of well-behaved workers with 10 hostile guests ÷ without",
        confined.latencies.p99() / base.latencies.p99(),
        2.0,
        "×",
    )];
    let notes = vec![
        format!(
            "Hostile guests (the `hostile` test guest): {SPINNERS} endless loops (`spin`, stopped \
             only by the 60 s invocation deadline), {BOMBS} memory bombs (`grow` of 1 GiB, the \
             per-worker limit, touching every page, again and again) and {FLOODS} output floods \
             (`flood` of 64 MiB, again and again), each on a worker of its own, started 0.5 s \
             before the measurement."
        ),
        "A guest call that has run 50 ms is confined to the last core the server may use, with \
         the other long calls, until it returns (`--confine-after-ms`); short invocations keep \
         the other cores. With 2 cores, the loops share one core and the well-behaved \
         invocations have the other."
            .into(),
    ];
    Ok(Figure {
        id: "hostile",
        title: "Hostile guests beside well-behaved ones".into(),
        method: format!(
            "`golemw serve` (release build, default limits) on a fresh data directory; {CLIENTS} \
             client threads, each with a keep-alive HTTP/1.1 connection and a `counter` worker of \
             its own, post `add(1)` to invoke-and-await in a loop (1 s warm-up, 4 s measured), \
             with no hostile guest, then with 10 hostile ones running on the same server, long \
             calls confined (the default) and not (`--confine-after-ms 0`). Latency is the whole \
             request as the client sees it; the clients run on the same 2 cores."
        ),
        tables: vec![table],
        goals,
        notes,
        metrics,
    })
}

/// One hostile guest: invokes its attack again and again until told to stop (each request may
/// be cut off when the server is killed at the end).
fn attack(address: &str, i: usize, stop: &AtomicBool) {
    let (function, params) = if i < SPINNERS {
        ("spin", "[]")
    } else if i < SPINNERS + BOMBS {
        ("grow", "[\"16384\"]")
    } else {
        ("flood", "[\"64\"]")
    };
    let path = format!("/v1/components/hostile/workers/h{i}/invoke-and-await");
    let body = format!(r#"{{"function":"{function}","params":{params}}}"#);
    let mut n = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let Ok(mut connection) = Connection::open(address) else {
            return;
        };
        // Errors (a trap, a refused grow, the server going away) are the point: go on.
        let _ = connection.post(&path, &format!("a{n}"), &body);
        n += 1;
    }
}
