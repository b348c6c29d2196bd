//! Worker-to-worker calls in `golemw serve` killed with SIGKILL at random moments: clients run
//! chains of calls (caller -> hop -> callee) with idempotency keys and send each again until
//! answered; every deposit reaches the callee exactly once, whichever worker the kill caught.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use golemw_tests::server::{try_request, Server};
use serde_json::json;

fn start(data_dir: &Path) -> Server {
    Server::start_with(env!("CARGO_BIN_EXE_golemw").as_ref(), data_dir, &[])
}

/// A WAVE string.
fn wave(text: &str) -> String {
    format!("{text:?}")
}

/// `chain([hop], sink, amount)` on `caller` with key `key`; `None` when the server is gone
/// (killed): the client sends the same request again.
fn deposit(
    address: &str,
    caller: &str,
    hop: &str,
    sink: &str,
    key: &str,
    amount: u64,
) -> Option<u64> {
    let body = json!({
        "function": "chain",
        "params": [format!("[{}]", wave(hop)), wave(sink), amount.to_string()],
    })
    .to_string();
    let (status, answer) = try_request(
        address,
        "POST",
        &format!("/v1/components/rpc-caller/workers/{caller}/invoke-and-await"),
        &[
            ("Content-Type", "application/json"),
            ("Idempotency-Key", key),
        ],
        body.as_bytes(),
        Some(Duration::from_secs(60)),
    )
    .ok()?;
    assert_eq!(status, 200, "deposit {key} through {caller}: {answer}");
    let result = answer["result"].as_str().unwrap();
    let total = result
        .strip_prefix("ok(")
        .and_then(|r| r.strip_suffix(')'))
        .unwrap_or_else(|| panic!("deposit {key}: {result}"));
    Some(total.parse().unwrap())
}

#[test]
fn chains_of_calls_take_effect_exactly_once_across_sigkills() {
    const CLIENTS: usize = 4;
    const DEPOSITS: u64 = 40;
    const KILLS: usize = 5;
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let caller_id = server.add_component("rpc-caller", "rpc-caller")["id"]
        .as_str()
        .unwrap()
        .to_string();
    let callee_id = server.add_component("rpc-callee", "rpc-callee")["id"]
        .as_str()
        .unwrap()
        .to_string();
    let address = Arc::new(RwLock::new(server.address.clone()));
    let server = Arc::new(Mutex::new(server));
    // (client, deposit) -> (amount, the total it answered)
    type Answers = HashMap<(usize, u64), (u64, u64)>;
    let answered: Arc<Mutex<Answers>> = Arc::default();
    // Requests a kill cut off (sent again): the kills must have caught calls in flight.
    let resent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let (address, answered) = (Arc::clone(&address), Arc::clone(&answered));
            let resent = Arc::clone(&resent);
            let hop = format!("urn:worker:{caller_id}/h{client}");
            let sink = format!("urn:worker:{callee_id}/b{client}");
            std::thread::spawn(move || {
                for i in 1..=DEPOSITS {
                    let key = format!("c{client}-d{i}");
                    // Distinct amounts: one counted twice shows in every later total.
                    let amount = i * 10 + client as u64;
                    let total = loop {
                        let at = address.read().unwrap().clone();
                        let caller = format!("c{client}");
                        match deposit(&at, &caller, &hop, &sink, &key, amount) {
                            Some(total) => break total,
                            None => {
                                resent.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                                std::thread::sleep(Duration::from_millis(20))
                            }
                        }
                    };
                    answered
                        .lock()
                        .unwrap()
                        .insert((client, i), (amount, total));
                }
            })
        })
        .collect();
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("random seed: {seed}");
    for _ in 0..KILLS {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_millis(150 + seed % 350));
        let mut server = server.lock().unwrap();
        server.kill();
        *server = start(dir.path());
        *address.write().unwrap() = server.address.clone();
    }
    clients.into_iter().for_each(|c| c.join().unwrap());
    let resent = resent.load(std::sync::atomic::Ordering::SeqCst);
    eprintln!("requests sent again after a kill: {resent}");
    assert!(resent > 0, "no kill caught a deposit in flight");

    let server = server.lock().unwrap();
    let answered = answered.lock().unwrap();
    for client in 0..CLIENTS {
        let mut expected = 0;
        for i in 1..=DEPOSITS {
            let (amount, total) = answered[&(client, i)];
            expected += amount;
            assert_eq!(
                total, expected,
                "client {client}: deposit {i} answered {total}"
            );
        }
        let balance = server.result(&format!("rpc-callee/b{client}"), "total", &[]);
        assert_eq!(balance, expected.to_string(), "b{client}'s total");
        // The hop and the caller each counted every deposit once.
        for worker in [format!("h{client}"), format!("c{client}")] {
            let calls = server.result(&format!("rpc-caller/{worker}"), "calls", &[]);
            assert_eq!(calls, DEPOSITS.to_string(), "{worker}'s successful calls");
        }
    }
}
