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
/// What a memory bomb grows by: up to the per-worker limit of `golemw serve` (1 GiB, 16,384
/// pages) less the guest's own pages.
const BOMB_PAGES: u32 = 16_300;

struct Run {
    label: &'static str,
    latencies: Samples,
    seconds: f64,
}

pub fn run(ctx: &Ctx) -> Result<Figure> {
    let golemw = crate::restart::golemw_binary()?;
    let all = 0..SPINNERS + BOMBS + FLOODS;
    // Extra arguments of `golemw serve`: none (its default confinement), or never confine.
    const DEFAULT: &[&str] = &[];
    const NEVER: &[&str] = &["--confine-after-ms", "0"];
    let configurations = [
        ("no hostile guest", DEFAULT, 0..0),
        (
            "10 hostile guests, long calls confined (default)",
            DEFAULT,
            all.clone(),
        ),
        ("10 hostile guests, not confined", NEVER, all),
        ("only the 6 endless loops (confined)", DEFAULT, 0..SPINNERS),
        (
            "only the 2 memory bombs (confined)",
            DEFAULT,
            SPINNERS..SPINNERS + BOMBS,
        ),
        (
            "only the 2 output floods (confined)",
            DEFAULT,
            SPINNERS + BOMBS..SPINNERS + BOMBS + FLOODS,
        ),
    ];
    let bar = ctx.progress("hostile", configurations.len() as u64);
    let mut runs = Vec::new();
    for (label, args, attacking) in configurations {
        let hostile = !attacking.is_empty();
        let dir = ctx.temp_dir()?;
        let server = Server::start_with(&golemw, dir.path(), args)?;
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
            attacking
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
             only by the 60 s invocation deadline), {BOMBS} memory bombs (`grow` by \
             {BOMB_PAGES} pages, to just under the 1 GiB per-worker limit, touching every 64 \
             KiB page, on a new worker each time, deleted afterwards) and {FLOODS} output floods \
             (`flood` of 64 MiB, again and again), each on a worker of its own, started 0.5 s \
             before the measurement."
        ),
        "A guest call that has run 10 ms (the default `--confine-after-ms`) is confined to the \
         last core the server may use, with the other long calls, and runs as SCHED_IDLE until \
         it returns; short invocations keep the other cores and preempt long calls on the last \
         one."
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
    let bomb = (SPINNERS..SPINNERS + BOMBS).contains(&i);
    let (function, params) = if i < SPINNERS {
        ("spin", "[]".to_string())
    } else if bomb {
        // Up to the per-worker limit (1 GiB = 16,384 pages) less the guest's own pages.
        ("grow", format!("[\"{BOMB_PAGES}\"]"))
    } else {
        ("flood", "[\"64\"]".to_string())
    };
    let body = format!(r#"{{"function":"{function}","params":{params}}}"#);
    let mut n = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let Ok(mut connection) = Connection::open(address) else {
            return;
        };
        // A bomb takes a new worker each time (a worker at its limit cannot grow again) and
        // deletes it afterwards, so its memory is mapped, faulted in and released every time.
        let worker = if bomb {
            format!("h{i}-{n}")
        } else {
            format!("h{i}")
        };
        let path = format!("/v1/components/hostile/workers/{worker}");
        // Errors (a trap, a refused grow, the server going away) are the point: go on.
        let _ = connection.post(&format!("{path}/invoke-and-await"), &format!("a{n}"), &body);
        if bomb {
            let _ = connection.send("DELETE", &path, "", None, b"");
        }
        n += 1;
    }
}
