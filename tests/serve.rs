//! `golemw serve`, as a client uses it: a real server process on a free port, spoken to over
//! HTTP/1.1, killed with SIGKILL where crash safety is the point.

use std::path::Path;
use std::process::Command;

use golemw_tests::guest_wasm;
use serde_json::{json, Value};

/// A running `golemw serve` of this build.
struct Server;

impl Server {
    fn start(data_dir: &Path) -> golemw_tests::server::Server {
        golemw_tests::server::Server::start_with(
            env!("CARGO_BIN_EXE_golemw").as_ref(),
            data_dir,
            &[],
        )
    }
}

fn add_component(server: &golemw_tests::server::Server, name: &str, guest: &str) -> Value {
    server.add_component(name, guest)
}

/// Asserts an error answer: its status and kind, and that its message mentions `says`.
fn assert_error((status, body): (u16, Value), want_status: u16, kind: &str, says: &str) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["kind"], kind, "{body}");
    let message = body["error"].as_str().unwrap();
    assert!(
        message.contains(says),
        "{message:?} should mention {says:?}"
    );
}

#[test]
fn the_http_api_manages_components_and_workers_and_invokes_them() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    assert_eq!(server.get("/healthz"), (200, json!({ "status": "ok" })));
    assert_error(server.get("/v2/nothing"), 404, "no-route", "/v2/nothing");

    // Components.
    let component = add_component(&server, "counter", "counter");
    assert_eq!(component["name"], "counter");
    assert_eq!(component["version"], 0);
    let wasm = std::fs::read(guest_wasm("counter")).unwrap();
    assert_error(
        server.request(
            "POST",
            "/v1/components/counter",
            &[("Content-Type", "application/wasm")],
            &wasm,
        ),
        409,
        "component-exists",
        "already exists",
    );
    assert_error(
        server.request(
            "POST",
            "/v1/components/broken",
            &[("Content-Type", "application/wasm")],
            b"\0asm but not really",
        ),
        400,
        "invalid-component",
        "invalid component",
    );
    let (status, updated) = server.request(
        "PUT",
        "/v1/components/counter",
        &[("Content-Type", "application/wasm")],
        &wasm,
    );
    assert_eq!((status, &updated["version"]), (200, &json!(1)), "{updated}");
    let (status, list) = server.get("/v1/components");
    assert_eq!(status, 200);
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(server.get("/v1/components/counter").1["version"], 1);
    assert_error(
        server.get("/v1/components/nope"),
        404,
        "unknown-component",
        "nope",
    );

    // Workers: created explicitly, or by their first invocation.
    let (status, created) = server.post_json(
        "/v1/components/counter/workers",
        json!({ "name": "w1", "env": { "REGION": "eu" } }),
    );
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["env"], json!([["REGION", "eu"]]));
    assert_error(
        server.post_json("/v1/components/counter/workers", json!({ "name": "w1" })),
        409,
        "worker-exists",
        "already exists",
    );
    assert_error(
        server.post_json("/v1/components/counter/workers", json!({ "nom": "w1" })),
        400,
        "bad-request",
        "name",
    );
    assert_eq!(server.result("counter/w1", "add", &["2"]), "2");
    assert_eq!(server.result("counter/w1", "add", &["3"]), "5");
    assert_eq!(server.result("counter/w2", "get", &[]), "0");

    // An idempotency key runs the invocation once; a repeat returns its stored result.
    let invoke_once = |n: &str| {
        let body = json!({ "function": "add", "params": [n] }).to_string();
        server.request(
            "POST",
            "/v1/components/counter/workers/w1/invoke-and-await",
            &[
                ("Content-Type", "application/json"),
                ("Idempotency-Key", "order-7"),
            ],
            body.as_bytes(),
        )
    };
    let (status, first) = invoke_once("10");
    assert_eq!((status, &first["result"]), (200, &json!("15")), "{first}");
    assert_eq!(first["from_idempotency_key"], false);
    let (status, again) = invoke_once("10");
    assert_eq!((status, &again["result"]), (200, &json!("15")), "{again}");
    assert_eq!(again["from_idempotency_key"], true);
    assert_eq!(server.result("counter/w1", "get", &[]), "15");

    // Metadata, listing with a filter, the oplog.
    let (status, w1) = server.get("/v1/components/counter/workers/w1");
    assert_eq!(status, 200, "{w1}");
    assert_eq!(w1["status"], "idle");
    assert!(w1["oplog_len"].as_u64().unwrap() >= 9, "{w1}");
    assert_eq!(
        w1["uri"],
        format!("urn:worker:{}/w1", component["id"].as_str().unwrap())
    );
    let (status, all) = server.get("/v1/components/counter/workers");
    assert_eq!(status, 200);
    let names: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["id"]["worker_name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["w1", "w2"], "{all}");
    let (status, filtered) =
        server.get("/v1/components/counter/workers?filter=env.REGION%20%3D%3D%20eu");
    assert_eq!(status, 200, "{filtered}");
    assert_eq!(filtered.as_array().unwrap().len(), 1, "{filtered}");
    assert_error(
        server.get("/v1/components/counter/workers?filter=name%20~%20x"),
        400,
        "invalid-filter",
        "column",
    );
    // Thousands of `(` (which once overflowed the parser's stack and aborted the server) are
    // refused, and the server goes on.
    assert_error(
        server.get(&format!(
            "/v1/components/counter/workers?filter={}",
            "(".repeat(2_500)
        )),
        400,
        "invalid-filter",
        "nest deeper than 32",
    );
    let (status, _) = server.get("/v1/components/counter/workers");
    assert_eq!(status, 200);
    let (status, oplog) = server.get("/v1/components/counter/workers/w1/oplog?from=1&count=2");
    assert_eq!(status, 200, "{oplog}");
    let rows = oplog.as_array().unwrap();
    assert_eq!(rows.len(), 2, "{oplog}");
    assert_eq!(
        (rows[0]["index"].as_u64(), rows[0]["kind"].as_str()),
        (Some(1), Some("create"))
    );

    // Bad requests: each a clear error, and the worker's state untouched.
    assert_error(
        server.invoke("counter/w1", "nope", &[]),
        400,
        "unknown-function",
        "nope",
    );
    assert_error(
        server.invoke("counter/w1", "add", &[]),
        400,
        "invalid-arguments",
        "1",
    );
    assert_error(
        server.invoke("counter/w1", "add", &["1", "2"]),
        400,
        "invalid-arguments",
        "2",
    );
    assert_error(
        server.invoke("counter/w1", "add", &["\"two\""]),
        400,
        "invalid-arguments",
        "",
    );
    assert_error(
        server.invoke("counter/w1", "add", &["{"]),
        400,
        "invalid-arguments",
        "",
    );
    assert_error(
        server.request(
            "POST",
            "/v1/components/counter/workers/w1/invoke-and-await",
            &[("Content-Type", "application/json")],
            b"{\"function\": ",
        ),
        400,
        "bad-request",
        "",
    );
    assert_error(
        server.invoke("nope/w1", "get", &[]),
        404,
        "unknown-component",
        "nope",
    );
    // A refused invocation of a new name creates no worker.
    assert_error(
        server.invoke("counter/ghost", "add", &["x"]),
        400,
        "invalid-arguments",
        "u64",
    );
    assert_error(
        server.get("/v1/components/counter/workers/ghost"),
        404,
        "unknown-worker",
        "ghost",
    );
    assert_error(
        server.get("/v1/components/counter/workers/w9"),
        404,
        "unknown-worker",
        "w9",
    );
    // The API adds its own hint, naming a route (the runtime's message names none).
    let (_, body) = server.get("/v1/components/counter/workers/w9");
    let hint = body["hint"].as_str().unwrap();
    assert!(
        hint.starts_with("GET /v1/components/")
            && hint.ends_with("/workers lists the component's workers"),
        "{body}"
    );
    assert!(
        !body["error"].as_str().unwrap().contains("golemw"),
        "{body}"
    );
    assert_eq!(server.result("counter/w1", "get", &[]), "15");

    // Requests axum itself refuses answer in the same JSON shape.
    assert_error(
        server.request("DELETE", "/v1/components/counter", &[], b""),
        405,
        "method-not-allowed",
        "",
    );
    assert_error(
        server.request(
            "POST",
            "/v1/components/counter/workers/w1/promises/abc/complete",
            &[("Content-Type", "application/octet-stream")],
            b"",
        ),
        400,
        "bad-request",
        "",
    );
    assert_error(
        server.get("/v1/components/counter/workers/w1/oplog?count=x"),
        400,
        "bad-request",
        "count",
    );
    assert_error(
        server.get("/v1/components/counter/workers?filtr=x"),
        400,
        "bad-request",
        "filtr",
    );
    assert_error(
        server.request(
            "POST",
            "/v1/components/counter/workers/w1/invoke-and-await",
            &[],
            br#"{"function": "get"}"#,
        ),
        415,
        "unsupported-media-type",
        "Content-Type",
    );
    assert_error(
        server.get("/v1/components/counter/workers/a%2Fb"),
        400,
        "invalid-worker-name",
        "a/b",
    );
    // Idempotency keys are 1 to 256 bytes.
    let with_key = |key: &str| {
        server.request(
            "POST",
            "/v1/components/counter/workers/w1/invoke-and-await",
            &[
                ("Content-Type", "application/json"),
                ("Idempotency-Key", key),
            ],
            br#"{"function": "add", "params": ["1"]}"#,
        )
    };
    assert_error(with_key(""), 400, "invalid-arguments", "idempotency key");
    assert_error(with_key(&"k".repeat(257)), 400, "invalid-arguments", "257");
    assert_eq!(with_key(&"k".repeat(256)).1["result"], "16");

    // Deletion.
    let (status, deleted) = server.request("DELETE", "/v1/components/counter/workers/w2", &[], b"");
    assert_eq!(status, 200, "{deleted}");
    assert_error(
        server.get("/v1/components/counter/workers/w2"),
        404,
        "unknown-worker",
        "w2",
    );
}

/// A server killed with SIGKILL after answering loses none of the invocations it answered,
/// and holds the data directory while it runs.
#[test]
fn a_killed_server_loses_no_answered_invocation() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    add_component(&server, "counter", "counter");
    let mut total = 0u64;
    for n in 1..=20u64 {
        total += n;
        assert_eq!(
            server.result("counter/w", "add", &[&n.to_string()]),
            total.to_string()
        );
    }
    // Other golemw commands on the same directory go through the server while it holds it...
    let golemw = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_golemw"))
            .arg("--data-dir")
            .arg(dir.path())
            .args(args)
            .env("RUST_LOG", "golemw=info")
            .output()
            .unwrap()
    };
    let invoked = golemw(&["worker", "invoke", "counter/w", "get"]);
    assert!(
        invoked.status.success(),
        "{}",
        String::from_utf8_lossy(&invoked.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&invoked.stdout).trim(),
        total.to_string()
    );
    assert!(
        String::from_utf8_lossy(&invoked.stderr).contains("answered by the server"),
        "{}",
        String::from_utf8_lossy(&invoked.stderr)
    );
    let got = golemw(&["--json", "worker", "get", "counter/w"]);
    let got: Value = serde_json::from_slice(&got.stdout).unwrap();
    assert_eq!(got["status"], "idle", "{got}");
    // ...and one that needs the directory to itself is refused, saying why.
    let other = golemw(&["snapshot", "list", "counter/w"]);
    assert!(!other.status.success());
    assert!(
        String::from_utf8_lossy(&other.stderr).contains("in use by another golemw process"),
        "{}",
        String::from_utf8_lossy(&other.stderr)
    );
    drop(server); // SIGKILL

    let server = Server::start(dir.path());
    assert_eq!(server.result("counter/w", "get", &[]), total.to_string());
    assert_eq!(
        server.result("counter/w", "add", &["1"]),
        (total + 1).to_string()
    );
}

/// An invocation that awaits an incomplete promise answers 202 with the promise; completing
/// the promise over HTTP resumes the worker, and the same request then returns the result.
#[test]
fn a_suspended_invocation_answers_202_and_completing_its_promise_resumes_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    add_component(&server, "promises", "promises");
    let invoke = || {
        let body = json!({ "function": "add-and-await", "params": ["4"] }).to_string();
        server.request(
            "POST",
            "/v1/components/promises/workers/w/invoke-and-await",
            &[
                ("Content-Type", "application/json"),
                ("Idempotency-Key", "order-1"),
            ],
            body.as_bytes(),
        )
    };
    let (status, suspended) = invoke();
    assert_eq!(status, 202, "{suspended}");
    assert_eq!(suspended["status"], "suspended");
    assert_eq!(suspended["idempotency_key"], "order-1");
    let idx = suspended["promise"]["oplog_idx"].as_u64().unwrap();
    assert_error(
        server.invoke("promises/w", "total", &[]),
        409,
        "worker-suspended",
        "suspended",
    );
    assert_error(
        server.post_json(
            "/v1/components/promises/workers/w/update",
            json!({ "version": 0 }),
        ),
        409,
        "worker-suspended",
        "suspended",
    );
    assert_error(
        server.request(
            "POST",
            "/v1/components/promises/workers/w/promises/999/complete",
            &[("Content-Type", "application/octet-stream")],
            b"x",
        ),
        404,
        "unknown-promise",
        "999",
    );

    let (status, completion) = server.request(
        "POST",
        &format!("/v1/components/promises/workers/w/promises/{idx}/complete"),
        &[("Content-Type", "application/octet-stream")],
        b"paid",
    );
    assert_eq!(status, 200, "{completion}");
    assert_eq!(completion["completed"], true, "{completion}");
    let (status, done) = invoke();
    assert_eq!(
        (status, &done["result"]),
        (200, &json!("\"4:paid\"")),
        "{done}"
    );
    assert_eq!(server.result("promises/w", "total", &[]), "4");
}

/// The worker operations a user would otherwise run with the CLI, which the server's hold on
/// the data directory refuses while it runs: interrupt and resume, update, revert.
#[test]
fn workers_are_interrupted_resumed_updated_and_reverted_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    add_component(&server, "upd", "update-v1");
    let (status, created) = server.post_json("/v1/components/upd/workers", json!({ "name": "w" }));
    assert_eq!(status, 201, "{created}");
    let v2 = std::fs::read(guest_wasm("update-v2")).unwrap();
    assert_eq!(
        server
            .request(
                "PUT",
                "/v1/components/upd",
                &[("Content-Type", "application/wasm")],
                &v2
            )
            .0,
        200
    );
    assert_eq!(server.result("upd/w", "add", &["5"]), "5");
    assert_eq!(server.result("upd/w", "add", &["7"]), "12");
    let post = |path: &str| {
        server.request(
            "POST",
            &format!("/v1/components/upd/workers/w/{path}"),
            &[("Content-Type", "application/json")],
            b"",
        )
    };
    let post_json = |path: &str, body: Value| {
        server.post_json(&format!("/v1/components/upd/workers/w/{path}"), body)
    };

    // Interrupted, nothing runs it until it is resumed.
    let (status, interrupted) = post("interrupt");
    assert_eq!(status, 200, "{interrupted}");
    assert_eq!(
        (&interrupted["status"], &interrupted["previous"]),
        (&json!("interrupted"), &json!("idle"))
    );
    assert_error(
        server.invoke("upd/w", "get", &[]),
        409,
        "worker-interrupted",
        "interrupted",
    );
    let (status, resumed) = post("resume");
    assert_eq!(
        (status, &resumed["status"]),
        (200, &json!("idle")),
        "{resumed}"
    );
    assert_eq!(server.result("upd/w", "get", &[]), "12");

    // Updated to version 1: the new code runs on the old state.
    assert_eq!(server.result("upd/w", "version", &[]), "1");
    assert_error(
        post_json("update", json!({ "version": 1, "mode": "sideways" })),
        400,
        "bad-request",
        "sideways",
    );
    assert_error(
        post_json("update", json!({ "version": 9 })),
        404,
        "unknown-component-version",
        "9",
    );
    // (`version` returned 1 on version 0: an automatic update would diverge replaying it.)
    let (status, updated) = post_json("update", json!({ "version": 1, "mode": "snapshot-based" }));
    assert_eq!(status, 200, "{updated}");
    assert_eq!(server.result("upd/w", "version", &[]), "2");
    assert_eq!(server.result("upd/w", "get", &[]), "12");

    // Reverted: the last invocation is undone.
    assert_eq!(server.result("upd/w", "add", &["100"]), "112");
    assert_error(
        post_json("revert", json!({})),
        400,
        "bad-request",
        "exactly one",
    );
    assert_error(
        post_json(
            "revert",
            json!({ "to_oplog_index": 2, "last_invocations": 1 }),
        ),
        400,
        "bad-request",
        "exactly one",
    );
    let (status, reverted) = post_json("revert", json!({ "last_invocations": 1 }));
    assert_eq!(status, 200, "{reverted}");
    assert_eq!(reverted["status"], "idle");
    assert_eq!(server.result("upd/w", "get", &[]), "12");
    let (_, w) = server.get("/v1/components/upd/workers/w");
    assert_eq!(w["component_version"], 1, "{w}");
}

/// A trapped invocation's retry backoff is waited out on a timer: other requests run while it
/// waits, and the invocation's own request answers once a retry succeeds.
#[test]
fn a_retry_backoff_does_not_hold_up_other_requests() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    add_component(&server, "txn", "txn");
    // One retry, 2 s after the first attempt traps.
    server.result(
        "txn/slow",
        "set-retry-policy",
        &["{max-attempts: 1, min-delay: 2000000000, max-delay: 2000000000, multiplier: 1.0}"],
    );
    let started = std::time::Instant::now();
    std::thread::scope(|scope| {
        // Traps while the worker's retry count is below 1: the retry returns 1.
        let slow = scope.spawn(|| server.result("txn/slow", "trap-until", &["1"]));
        while server.get("/v1/components/txn/workers/slow").1["status"] != "retrying" {
            assert!(!slow.is_finished(), "the first attempt did not trap");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(server.result("txn/fast", "items", &[]), "[]");
        assert_eq!(
            server.get("/v1/components/txn/workers/fast").1["status"],
            "idle"
        );
        assert!(
            !slow.is_finished(),
            "the other requests ran during the backoff"
        );
        assert_eq!(slow.join().unwrap(), "1");
    });
    assert!(started.elapsed() >= std::time::Duration::from_secs(2));
    let (_, slow) = server.get("/v1/components/txn/workers/slow");
    assert_eq!(
        (&slow["status"], &slow["retry_count"]),
        (&json!("idle"), &json!(0)),
        "{slow}"
    );
}

/// SIGTERM: the server answers what it is doing, exits with status 0 and lets the data
/// directory go.
#[test]
fn sigterm_stops_the_server_cleanly_and_releases_the_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path());
    add_component(&server, "counter", "counter");
    assert_eq!(server.result("counter/w", "add", &["3"]), "3");
    let killed = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = server.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let server = Server::start(dir.path());
    assert_eq!(server.result("counter/w", "get", &[]), "3");
}

/// Other web pages cannot drive the server: a request for another host (a name rebound to this
/// machine) is refused, and so is a POST whose body a browser would send cross-site without
/// asking (text/plain, a form, or none); `--allowed-host` admits a name.
#[test]
fn requests_from_other_sites_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = golemw_tests::server::Server::start_with(
        env!("CARGO_BIN_EXE_golemw").as_ref(),
        dir.path(),
        &["--allowed-host", "golemw.test"],
    );
    add_component(&server, "counter", "counter");
    assert_eq!(server.result("counter/w", "add", &["1"]), "1");
    let port = server.address.rsplit(':').next().unwrap().to_string();
    let rebound = format!("attacker.example:{port}");
    assert_error(
        server.request("GET", "/v1/components", &[("Host", &rebound)], b""),
        403,
        "forbidden-host",
        "--allowed-host",
    );
    let allowed = format!("golemw.test:{port}");
    assert_eq!(
        server
            .request("GET", "/v1/components", &[("Host", &allowed)], b"")
            .0,
        200
    );
    let localhost = format!("localhost:{port}");
    assert_eq!(
        server
            .request("GET", "/healthz", &[("Host", &localhost)], b"")
            .0,
        200
    );
    // What a page can post cross-site without a preflight: refused, nothing done.
    for content_type in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
        None,
    ] {
        let headers: Vec<(&str, &str)> = content_type
            .map(|t| vec![("Content-Type", t)])
            .unwrap_or_default();
        assert_error(
            server.request(
                "POST",
                "/v1/components/counter/workers/w/interrupt",
                &headers,
                b"{}",
            ),
            415,
            "unsupported-media-type",
            "application/json",
        );
        // A small body: refused before it is read, so a large one could meet a closed socket.
        assert_error(
            server.request("POST", "/v1/components/evil", &headers, b"\0asm\x01\0\0\0"),
            415,
            "unsupported-media-type",
            "application/wasm",
        );
    }
    let (_, worker) = server.get("/v1/components/counter/workers/w");
    assert_eq!(worker["status"], "idle", "{worker}");
    let (status, _) = server.get("/v1/components/evil");
    assert_eq!(status, 404);
    assert_eq!(server.result("counter/w", "add", &["1"]), "2");
}

/// `proc_exit(n)` over HTTP: 422 `exited` with the code in the body.
#[test]
fn a_guests_exit_code_is_in_the_answer() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    add_component(&server, "hostile", "hostile");
    let (status, body) = server.invoke("hostile/w", "exit-with", &["3"]);
    assert_eq!((status, &body["kind"]), (422, &json!("exited")), "{body}");
    assert_eq!(body["exit_code"], 3, "{body}");
    let (_, record) = server.get("/v1/components/hostile/workers/w");
    assert_eq!(record["status"], "exited", "{record}");
}

#[test]
fn idle_and_half_sent_connections_are_closed_and_do_not_starve_requests() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let server = golemw_tests::server::Server::start_with(
        env!("CARGO_BIN_EXE_golemw").as_ref(),
        dir.path(),
        &["--header-timeout-ms", "300", "--max-connections", "32"],
    );
    // More idle connections than may be served at once, and some that stop mid-request.
    let mut idle: Vec<std::net::TcpStream> = (0..60)
        .map(|_| std::net::TcpStream::connect(&server.address).unwrap())
        .collect();
    let mut half: Vec<std::net::TcpStream> = (0..10)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(&server.address).unwrap();
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: ").unwrap();
            s
        })
        .collect();
    // A real request still gets through: the stalled ones are dropped after their timeout.
    let started = std::time::Instant::now();
    let (status, _) = golemw_tests::server::try_request(
        &server.address,
        "GET",
        "/healthz",
        &[],
        b"",
        Some(std::time::Duration::from_secs(10)),
    )
    .unwrap();
    assert_eq!(status, 200);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "answered after {:?}",
        started.elapsed()
    );
    // Every stalled connection was closed by the server (EOF or a reset, not a timeout here).
    std::thread::sleep(std::time::Duration::from_millis(1500));
    for stream in idle.iter_mut().chain(half.iter_mut()) {
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let mut buf = [0u8; 256];
        match stream.read(&mut buf) {
            Ok(0) => {}
            // A half-sent request may get a 408 before the close.
            Ok(_) => {
                let mut rest = Vec::new();
                let _ = stream.read_to_end(&mut rest);
            }
            Err(err) => assert!(
                err.kind() != std::io::ErrorKind::WouldBlock
                    && err.kind() != std::io::ErrorKind::TimedOut,
                "a stalled connection is still open: {err}"
            ),
        }
    }
}

#[test]
fn beyond_loopback_the_server_needs_a_token_and_every_request_must_carry_it() {
    use std::os::unix::fs::PermissionsExt;
    let golemw = env!("CARGO_BIN_EXE_golemw");
    let dir = tempfile::tempdir().unwrap();
    // No token, listening on every interface: refused before anything is opened.
    let out = Command::new(golemw)
        .arg("--data-dir")
        .arg(dir.path())
        .args(["serve", "--listen", "0.0.0.0:0"])
        .env_remove("GOLEMW_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("needs an access token"), "{stderr}");
    // A token too short to be one.
    let short = dir.path().join("short");
    std::fs::write(&short, "abc\n").unwrap();
    let out = Command::new(golemw)
        .arg("--data-dir")
        .arg(dir.path())
        .args(["serve", "--listen", "127.0.0.1:0", "--token-file"])
        .arg(&short)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 16"));

    let token_file = dir.path().join("token");
    let token = "3f1c9a7e5b2d4c6a8e0f1a2b3c4d5e6f";
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let data = dir.path().join("data");
    let server = golemw_tests::server::Server::start_with(
        golemw.as_ref(),
        &data,
        &["--token-file", token_file.to_str().unwrap()],
    );
    let get = |headers: &[(&str, &str)]| {
        golemw_tests::server::try_request(
            &server.address,
            "GET",
            "/v1/components",
            headers,
            b"",
            None,
        )
        .unwrap()
    };
    let (status, body) = get(&[]);
    assert_eq!(
        (status, body["kind"].as_str()),
        (401, Some("unauthorized")),
        "{body}"
    );
    let wrong = format!("Bearer {}", token.replace('3', "4"));
    assert_eq!(get(&[("Authorization", &wrong)]).0, 401);
    let right = format!("Bearer {token}");
    assert_eq!(get(&[("Authorization", &right)]).0, 200);
    // Health checks need no token.
    let (status, _) =
        golemw_tests::server::try_request(&server.address, "GET", "/healthz", &[], b"", None)
            .unwrap();
    assert_eq!(status, 200);
    // The CLI on the same data directory finds the token beside the address, in a file only
    // its owner may read.
    let mode = std::fs::metadata(data.join("server.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o077,
        0,
        "server.json is readable by others: {mode:o}"
    );
    let out = Command::new(golemw)
        .arg("--data-dir")
        .arg(&data)
        .args(["component", "list"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_trickled_request_body_fails_at_its_deadline() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let server = golemw_tests::server::Server::start_with(
        env!("CARGO_BIN_EXE_golemw").as_ref(),
        dir.path(),
        &["--body-timeout-ms", "300"],
    );
    let mut stream = std::net::TcpStream::connect(&server.address).unwrap();
    let head = format!(
        "POST /v1/components/c/workers HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
         Content-Length: 100\r\n\r\n{{\"na",
        server.address
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let started = std::time::Instant::now();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    // The answer comes (and the connection may close) without the rest of the body.
    while let Ok(n) = stream.read(&mut buf) {
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
        if answer.windows(4).any(|w| w == b"\r\n\r\n") && answer.ends_with(b"}") {
            break;
        }
    }
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 4"), "{text}");
    assert!(text.contains("did not arrive within 300 ms"), "{text}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    // The server goes on.
    assert_eq!(server.get("/healthz").0, 200);
}
