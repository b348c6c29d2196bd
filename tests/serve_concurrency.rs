//! `golemw serve` under concurrent load: a sleeping worker does not hold up others, queued
//! invocations, interrupts over HTTP, and the crash checker: concurrent clients, SIGKILLs at
//! random moments, retries with the same idempotency keys, and nothing lost or doubled.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use golemw_tests::server::{try_request, Server};
use serde_json::{json, Value};

fn start(data_dir: &Path, args: &[&str]) -> Server {
    Server::start_with(env!("CARGO_BIN_EXE_golemw").as_ref(), data_dir, args)
}

/// A small deterministic pseudo-random sequence (xorshift), seeded per test run.
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        eprintln!("random seed: {seed}");
        Rng(seed | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Deposits `amount` into `worker` with idempotency key `key` at `address`; `None` when the
/// server cannot be reached or the connection broke (it was killed): the caller sends again.
fn deposit(address: &str, worker: &str, key: &str, amount: u64) -> Option<u64> {
    let body = json!({ "function": "add", "params": [amount.to_string()] }).to_string();
    let (status, answer) = try_request(
        address,
        "POST",
        &format!("/v1/components/counter/workers/{worker}/invoke-and-await"),
        &[
            ("Content-Type", "application/json"),
            ("Idempotency-Key", key),
        ],
        body.as_bytes(),
        Some(Duration::from_secs(30)),
    )
    .ok()?;
    assert_eq!(status, 200, "deposit {key} into {worker}: {answer}");
    Some(answer["result"].as_str().unwrap().parse().unwrap())
}

#[test]
fn crash_checker_nothing_answered_is_lost_or_doubled_across_sigkills() {
    const CLIENTS: usize = 8;
    const DEPOSITS: u64 = 30;
    const KILLS: usize = 6;
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[]);
    server.add_component("counter", "counter");
    let address = Arc::new(RwLock::new(server.address.clone()));
    let server = Arc::new(Mutex::new(server));
    // (worker, key) -> (amount, the total the deposit answered)
    type Answers = HashMap<(String, String), (u64, u64)>;
    let answered: Arc<Mutex<Answers>> = Arc::default();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let (address, answered) = (Arc::clone(&address), Arc::clone(&answered));
            std::thread::spawn(move || {
                let worker = format!("acc-{client}");
                for i in 1..=DEPOSITS {
                    let key = format!("c{client}-d{i}");
                    // Distinct amounts: a deposit counted twice shows in every later total.
                    let amount = i * 10 + client as u64;
                    let total = loop {
                        let at = address.read().unwrap().clone();
                        match deposit(&at, &worker, &key, amount) {
                            Some(total) => break total,
                            // Killed: send the same request again, with the same key.
                            None => std::thread::sleep(Duration::from_millis(20)),
                        }
                    };
                    answered
                        .lock()
                        .unwrap()
                        .insert((worker.clone(), key), (amount, total));
                }
            })
        })
        .collect();
    let mut rng = Rng::new();
    for _ in 0..KILLS {
        std::thread::sleep(Duration::from_millis(100 + rng.below(400)));
        let mut server = server.lock().unwrap();
        server.kill();
        *server = start(dir.path(), &[]);
        *address.write().unwrap() = server.address.clone();
    }
    clients.into_iter().for_each(|c| c.join().unwrap());

    let server = server.lock().unwrap();
    let answered = answered.lock().unwrap();
    assert_eq!(answered.len(), CLIENTS * DEPOSITS as usize);
    for client in 0..CLIENTS {
        let worker = format!("acc-{client}");
        // Each answer is the running total after exactly the deposits before it, once each.
        let mut expected = 0;
        for i in 1..=DEPOSITS {
            let (amount, total) = answered[&(worker.clone(), format!("c{client}-d{i}"))];
            expected += amount;
            assert_eq!(total, expected, "{worker}: deposit {i} answered {total}");
        }
        let balance = server.result(&format!("counter/{worker}"), "get", &[]);
        assert_eq!(balance, expected.to_string(), "{worker}'s balance");
        // And the oplog holds each key's invocation once (outside deleted regions).
        let (status, rows) = server.get(&format!(
            "/v1/components/counter/workers/{worker}/oplog?count=100000"
        ));
        assert_eq!(status, 200);
        let mut seen: HashMap<String, usize> = HashMap::new();
        for row in rows.as_array().unwrap() {
            if row["deleted"] == json!(true) {
                continue;
            }
            if row["kind"] != "exported-function-invoked" {
                continue;
            }
            // The entry is `{"Variant": {fields}}`.
            let fields = row["entry"].as_object().unwrap().values().next().unwrap();
            let key = fields["idempotency_key"].as_str().unwrap();
            *seen.entry(key.to_string()).or_default() += 1;
        }
        for i in 1..=DEPOSITS {
            let key = format!("c{client}-d{i}");
            assert_eq!(
                seen.get(&key),
                Some(&1),
                "{worker}: {key} in the oplog {seen:?}"
            );
        }
    }
}

#[test]
fn a_sleeping_worker_holds_no_thread_and_another_worker_is_answered_meanwhile() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &["--durable-sleep-min-ms", "100"]);
    server.add_component("clocks", "clocks");
    server.add_component("counter", "counter");
    assert_eq!(server.result("counter/b", "add", &["1"]), "1");
    let address = server.address.clone();
    let started = Instant::now();
    let sleeper = std::thread::spawn(move || {
        let body = json!({ "function": "sleep-ms", "params": ["2000"] }).to_string();
        let answer = try_request(
            &address,
            "POST",
            "/v1/components/clocks/workers/a/invoke-and-await",
            &[
                ("Content-Type", "application/json"),
                ("Idempotency-Key", "nap"),
            ],
            body.as_bytes(),
            None,
        )
        .unwrap();
        (answer, started.elapsed())
    });
    std::thread::sleep(Duration::from_millis(300));
    let (status, a) = server.get("/v1/components/clocks/workers/a");
    assert_eq!(status, 200, "{a}");
    assert_eq!(a["status"], "suspended", "{a}");
    assert!(a["sleeping_until_ms"].as_u64().is_some(), "{a}");
    let (status, nap) = server.get("/v1/components/clocks/workers/a/invocations/nap");
    assert_eq!(
        (status, &nap["status"]),
        (200, &json!("suspended")),
        "{nap}"
    );
    let asked = Instant::now();
    assert_eq!(server.result("counter/b", "add", &["1"]), "2");
    assert!(
        asked.elapsed() < Duration::from_millis(1000),
        "B waited {:?} behind A's sleep",
        asked.elapsed()
    );
    let ((status, answer), took) = sleeper.join().unwrap();
    assert_eq!(
        (status, &answer["status"]),
        (200, &json!("completed")),
        "{answer}"
    );
    assert!(
        took >= Duration::from_millis(2000),
        "the sleep took {took:?}"
    );
    let (_, a) = server.get("/v1/components/clocks/workers/a");
    assert_eq!(a["status"], "idle", "{a}");
}

#[test]
fn a_server_killed_while_a_worker_sleeps_wakes_it_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(dir.path(), &["--durable-sleep-min-ms", "100"]);
    server.add_component("clocks", "clocks");
    let address = server.address.clone();
    // Sent, and left waiting: the server dies under it.
    std::thread::spawn(move || {
        let body = json!({ "function": "sleep-ms", "params": ["1500"] }).to_string();
        let _ = try_request(
            &address,
            "POST",
            "/v1/components/clocks/workers/a/invoke-and-await",
            &[
                ("Content-Type", "application/json"),
                ("Idempotency-Key", "nap"),
            ],
            body.as_bytes(),
            None,
        );
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, a) = server.get("/v1/components/clocks/workers/a");
        if a["status"] == "suspended" {
            break;
        }
        assert!(Instant::now() < deadline, "never went to sleep: {a}");
        std::thread::sleep(Duration::from_millis(20));
    }
    server.kill();
    let server = start(dir.path(), &["--durable-sleep-min-ms", "100"]);
    // The same request again waits for the woken invocation's result.
    let (status, answer) = server.request(
        "POST",
        "/v1/components/clocks/workers/a/invoke-and-await",
        &[
            ("Content-Type", "application/json"),
            ("Idempotency-Key", "nap"),
        ],
        json!({ "function": "sleep-ms", "params": ["1500"] })
            .to_string()
            .as_bytes(),
    );
    assert_eq!(
        (status, &answer["status"]),
        (200, &json!("completed")),
        "{answer}"
    );
    let (status, nap) = server.get("/v1/components/clocks/workers/a/invocations/nap");
    assert_eq!(
        (status, &nap["status"]),
        (200, &json!("completed")),
        "{nap}"
    );
}

#[test]
fn queued_invocations_are_answered_202_and_run_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[]);
    server.add_component("counter", "counter");
    let mut keys = Vec::new();
    for n in 1..=5 {
        let (status, queued) = server.request(
            "POST",
            "/v1/components/counter/workers/q/invoke",
            &[
                ("Content-Type", "application/json"),
                ("Idempotency-Key", &format!("k{n}")),
            ],
            json!({ "function": "add", "params": [n.to_string()] })
                .to_string()
                .as_bytes(),
        );
        assert_eq!(
            (status, &queued["status"]),
            (202, &json!("queued")),
            "{queued}"
        );
        keys.push(queued["idempotency_key"].as_str().unwrap().to_string());
    }
    // Waiting for the last with invoke-and-await and its key gives its result.
    let (status, last) = server.request(
        "POST",
        "/v1/components/counter/workers/q/invoke-and-await",
        &[
            ("Content-Type", "application/json"),
            ("Idempotency-Key", "k5"),
        ],
        json!({ "function": "add", "params": ["5"] })
            .to_string()
            .as_bytes(),
    );
    assert_eq!((status, &last["result"]), (200, &json!("15")), "{last}");
    let mut total = 0;
    for (n, key) in keys.iter().enumerate() {
        total += n + 1;
        let (status, done) = server.get(&format!(
            "/v1/components/counter/workers/q/invocations/{key}"
        ));
        assert_eq!(status, 200, "{done}");
        assert_eq!(
            done,
            json!({ "status": "completed", "result": total.to_string() })
        );
    }
    let (status, unknown) = server.get("/v1/components/counter/workers/q/invocations/nope");
    assert_eq!(
        (status, &unknown["kind"]),
        (404, &json!("unknown-invocation")),
        "{unknown}"
    );
    // A wrong call is refused, not queued.
    let (status, refused) = server.post_json(
        "/v1/components/counter/workers/q/invoke",
        json!({ "function": "add", "params": [] }),
    );
    assert_eq!(
        (status, &refused["kind"]),
        (400, &json!("invalid-arguments")),
        "{refused}"
    );
}

#[test]
fn interrupt_over_http_stops_an_endless_loop_and_other_workers_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[]);
    server.add_component("hostile", "hostile");
    assert_eq!(server.result("hostile/loop", "add", &["1"]), "1");
    let address = server.address.clone();
    let spinning = std::thread::spawn(move || {
        let body = json!({ "function": "spin", "params": [] }).to_string();
        try_request(
            &address,
            "POST",
            "/v1/components/hostile/workers/loop/invoke-and-await",
            &[("Content-Type", "application/json")],
            body.as_bytes(),
            None,
        )
        .unwrap()
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.get("/v1/components/hostile/workers/loop").1["status"] != "running" {
        assert!(Instant::now() < deadline, "the loop never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Another worker of the same component is served while the loop runs.
    assert_eq!(server.result("hostile/calm", "add", &["2"]), "2");
    let (status, interrupted) =
        server.post_json("/v1/components/hostile/workers/loop/interrupt", json!({}));
    assert_eq!(status, 200, "{interrupted}");
    assert_eq!(interrupted["previous"], "running", "{interrupted}");
    let (status, answer) = spinning.join().unwrap();
    assert_eq!(
        (status, &answer["kind"]),
        (409, &json!("interrupted")),
        "{answer}"
    );
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("Interrupted via the Golem API"),
        "{answer}"
    );
    let (_, record) = server.get("/v1/components/hostile/workers/loop");
    assert_eq!(record["status"], "interrupted", "{record}");
    assert_eq!(server.result("hostile/calm", "add", &["2"]), "4");
}

/// `--invocation-deadline-ms`: an endless loop is stopped at the deadline, each retry too, and
/// the request is answered with the trap; other workers are served meanwhile.
#[test]
fn a_runaway_guest_is_stopped_at_the_invocation_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &["--invocation-deadline-ms", "300"]);
    server.add_component("hostile", "hostile");
    assert_eq!(server.result("hostile/loop", "add", &["1"]), "1");
    let address = server.address.clone();
    let started = Instant::now();
    let spinning = std::thread::spawn(move || {
        let body = json!({ "function": "spin", "params": [] }).to_string();
        try_request(
            &address,
            "POST",
            "/v1/components/hostile/workers/loop/invoke-and-await",
            &[("Content-Type", "application/json")],
            body.as_bytes(),
            None,
        )
        .unwrap()
    });
    assert_eq!(server.result("hostile/calm", "add", &["2"]), "2");
    let (status, answer) = spinning.join().unwrap();
    assert_eq!((status, &answer["kind"]), (422, &json!("trap")), "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("ran past its deadline of 300 ms"),
        "{answer}"
    );
    assert!(started.elapsed() >= Duration::from_millis(4 * 300));
    let (_, record) = server.get("/v1/components/hostile/workers/loop");
    assert_eq!(record["status"], "failed", "{record}");
    assert_eq!(server.result("hostile/calm", "add", &["2"]), "4");
}

#[test]
fn concurrent_clients_on_distinct_workers_are_all_answered_durably() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(dir.path(), &[]);
    server.add_component("counter", "counter");
    let address = server.address.clone();
    let threads: Vec<_> = (0..32)
        .map(|c| {
            let address = address.clone();
            std::thread::spawn(move || {
                for i in 1..=10u64 {
                    let total = deposit(&address, &format!("w{c}"), &format!("{c}-{i}"), 1)
                        .expect("the server is up");
                    assert_eq!(total, i);
                }
            })
        })
        .collect();
    threads.into_iter().for_each(|t| t.join().unwrap());
    server.kill();
    let server = start(dir.path(), &[]);
    for c in 0..32 {
        assert_eq!(server.result(&format!("counter/w{c}"), "get", &[]), "10");
    }
    let _: Value = server.get("/healthz").1;
}
