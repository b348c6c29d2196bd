//! What `golemw serve` offers operators and tools beside the API itself: `/metrics` for
//! Prometheus, `/openapi.json`, and a worker's output as a stream (`connect`, `golemw worker
//! connect`). Each test runs a real server process and speaks HTTP/1.1 to it over sockets.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use golemw_tests::server::Server;
use serde_json::{json, Value};

/// The `golemw` binary under test: this build's, or `GOLEMW_TEST_BIN` (a copy of it, where
/// other builds share the target directory and may replace the binary meanwhile).
fn golemw() -> &'static Path {
    static BIN: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| match std::env::var_os("GOLEMW_TEST_BIN") {
        Some(path) => path.into(),
        None => env!("CARGO_BIN_EXE_golemw").into(),
    })
}

fn start(data_dir: &Path, args: &[&str]) -> Server {
    Server::start_with(golemw(), data_dir, args)
}

/// A GET whose answer is not JSON: the status, the headers (lowercase names) and the body.
fn get_text(address: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String, String) {
    let mut stream = TcpStream::connect(address).unwrap();
    let mut head = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head.to_ascii_lowercase(), body.to_string())
}

/// The samples of a Prometheus text scrape: `name{label="value",...}` (labels sorted) -> value.
fn parse_scrape(text: &str) -> BTreeMap<String, f64> {
    let mut samples = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').unwrap();
        let key = match series.split_once('{') {
            Some((name, labels)) => {
                let mut labels: Vec<&str> = labels.trim_end_matches('}').split(',').collect();
                labels.sort();
                format!("{name}{{{}}}", labels.join(","))
            }
            None => series.to_string(),
        };
        samples.insert(key, value.parse().unwrap());
    }
    samples
}

fn scrape(server: &Server) -> BTreeMap<String, f64> {
    let (status, head, body) = get_text(&server.address, "/metrics", &[]);
    assert_eq!(status, 200, "{body}");
    assert!(
        head.contains("content-type: application/openmetrics-text"),
        "{head}"
    );
    assert!(body.ends_with("# EOF\n"), "{body}");
    parse_scrape(&body)
}

fn sample(samples: &BTreeMap<String, f64>, key: &str) -> f64 {
    *samples
        .get(key)
        .unwrap_or_else(|| panic!("no sample {key} in {samples:#?}"))
}

#[test]
fn metrics_count_invocations_commits_snapshots_restores_and_workers() {
    let dir = tempfile::tempdir().unwrap();
    // A snapshot after every invocation, and one worker in memory: the second worker evicts
    // the first, which then comes back from its snapshot.
    let server = start(
        dir.path(),
        &[
            "--snapshot-policy",
            "invocations:1",
            "--max-active-workers",
            "1",
        ],
    );
    server.add_component("counter", "counter");
    server.add_component("promises", "promises");
    let before = scrape(&server);
    assert_eq!(sample(&before, "golemw_workers"), 0.0);

    for n in 1..=3 {
        assert_eq!(
            server.result("counter/w1", "add", &["1"]),
            json!(n.to_string())
        );
    }
    server.result("counter/w2", "add", &["5"]);
    server.result("counter/w1", "get", &[]);
    let (status, _) = server.invoke("counter/w1", "no-such-function", &[]);
    assert_eq!(status, 400);
    // A worker awaiting a promise is suspended.
    let (status, body) = server.invoke("promises/p", "add-and-await", &["4"]);
    assert_eq!(status, 202, "{body}");

    let after = scrape(&server);
    let completed =
        r#"golemw_invocation_seconds_count{outcome="completed",route="invoke-and-await"}"#;
    assert_eq!(sample(&after, completed), 5.0);
    let refused = r#"golemw_invocation_seconds_count{outcome="refused",route="invoke-and-await"}"#;
    assert_eq!(sample(&after, refused), 1.0);
    let suspended =
        r#"golemw_invocation_seconds_count{outcome="suspended",route="invoke-and-await"}"#;
    assert_eq!(sample(&after, suspended), 1.0);
    let fast = r#"golemw_invocation_seconds_bucket{le="+Inf",outcome="completed",route="invoke-and-await"}"#;
    assert_eq!(sample(&after, fast), 5.0);
    assert!(
        sample(
            &after,
            r#"golemw_invocation_seconds_sum{outcome="completed",route="invoke-and-await"}"#
        ) > 0.0
    );

    for counter in [
        "golemw_commits_total",
        "golemw_fsyncs_total",
        "golemw_grouped_writes_total",
        "golemw_group_commit_batch_writes_count",
    ] {
        assert!(
            sample(&after, counter) > sample(&before, counter),
            "{counter} did not move"
        );
    }
    assert!(sample(&after, "golemw_snapshots_total") >= 4.0);
    assert!(sample(&after, "golemw_snapshot_pages_new_total") >= 1.0);
    assert!(sample(&after, "golemw_snapshot_seconds_count") >= 4.0);
    assert!(sample(&after, r#"golemw_restores_total{kind="snapshot"}"#) >= 1.0);
    assert!(sample(&after, "golemw_evicted_workers_total") >= 1.0);
    assert_eq!(sample(&after, "golemw_active_workers"), 1.0);
    assert_eq!(sample(&after, "golemw_workers"), 3.0);
    assert_eq!(sample(&after, "golemw_suspended_workers"), 1.0);
    assert_eq!(sample(&after, "golemw_queued_invocations"), 0.0);

    // The counters go on moving with the next invocation.
    server.result("counter/w2", "add", &["1"]);
    let later = scrape(&server);
    assert_eq!(sample(&later, completed), 6.0);
    assert!(sample(&later, "golemw_commits_total") > sample(&after, "golemw_commits_total"));
}

/// The routes the router declares: `.route("PATH", get(..).post(..))` in the server's source,
/// with the methods each takes (`GET`, `POST`, ...).
fn routes_in_source() -> BTreeSet<(String, String)> {
    let dir = golemw_tests::repo_root().join("tools/src/serve");
    let mut routes = BTreeSet::new();
    let mut files = Vec::new();
    let mut dirs = vec![dir.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap();
        for (at, _) in code.match_indices(".route(") {
            // The call's arguments: up to its closing parenthesis.
            let mut depth = 0;
            let mut end = at + ".route".len();
            for (i, c) in code[end..].char_indices() {
                match c {
                    '(' => depth += 1,
                    ')' => depth -= 1,
                    _ => {}
                }
                if depth == 0 {
                    end += i;
                    break;
                }
            }
            let args = &code[at + ".route(".len()..end];
            let route = args.split('"').nth(1).unwrap().to_string();
            let handlers = &args[args.find(',').unwrap()..];
            for method in ["get", "post", "put", "delete", "patch"] {
                let call = format!("{method}(");
                let called = handlers.match_indices(&call).any(|(i, _)| {
                    i == 0
                        || !handlers.as_bytes()[i - 1].is_ascii_alphanumeric()
                            && handlers.as_bytes()[i - 1] != b'_'
                });
                if called {
                    routes.insert((route.clone(), method.to_ascii_uppercase()));
                }
            }
        }
    }
    assert!(
        routes.len() > 20,
        "found only {routes:?} in {}",
        dir.display()
    );
    routes
}

#[test]
fn the_openapi_document_has_every_route_of_the_router_and_no_other() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[]);
    let (status, document) = server.get("/openapi.json");
    assert_eq!(status, 200, "{document}");
    assert!(document["openapi"].as_str().unwrap().starts_with("3."));
    let mut documented = BTreeSet::new();
    for (path, operations) in document["paths"].as_object().unwrap() {
        for (method, operation) in operations.as_object().unwrap() {
            assert!(
                operation["responses"]
                    .as_object()
                    .is_some_and(|r| !r.is_empty()),
                "{method} {path} documents no response"
            );
            documented.insert((path.clone(), method.to_ascii_uppercase()));
        }
    }
    let declared = routes_in_source();
    assert_eq!(
        documented.difference(&declared).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "documented but not routed"
    );
    assert_eq!(
        declared.difference(&documented).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "routed but not documented (add #[utoipa::path] to the handler and list it in \
         tools/src/serve/openapi.rs)"
    );
    // And the server answers each documented operation with a route of its own (an error about
    // the request at most, never "no route" or a method it does not take).
    for (path, method) in &documented {
        let concrete = path
            .replace("{component}", "nothing")
            .replace("{worker}", "w")
            .replace("{key}", "k")
            .replace("{oplog_idx}", "1");
        let (status, body) = match method.as_str() {
            // Not all answers are JSON (metrics); an error is.
            "GET" => {
                let (status, _, body) = get_text(&server.address, &concrete, &[]);
                (status, body)
            }
            _ => {
                let (status, body) = server.request(
                    method,
                    &concrete,
                    &[("Content-Type", "application/json")],
                    b"{}",
                );
                (status, body.to_string())
            }
        };
        assert!(
            status != 405 && !body.contains("no-route"),
            "{method} {concrete}: {status} {body}"
        );
    }
}

/// An open output stream of a worker: the raw bytes of the response, read as they come.
struct EventStream {
    reader: BufReader<TcpStream>,
    seen: String,
}

impl EventStream {
    /// Opens `GET .../connect` (plus `query`); panics unless it answers 200 with events.
    fn open(address: &str, worker: &str, query: &str, headers: &[(&str, &str)]) -> EventStream {
        match Self::try_open(address, worker, query, headers) {
            Ok(stream) => stream,
            Err((status, body)) => panic!("connect answered {status}: {body}"),
        }
    }

    /// Opens the stream, or returns the status and body of the refusal.
    fn try_open(
        address: &str,
        worker: &str,
        query: &str,
        headers: &[(&str, &str)],
    ) -> Result<EventStream, (u16, String)> {
        let (component, name) = worker.split_once('/').unwrap();
        let mut stream = TcpStream::connect(address).unwrap();
        let mut head = format!(
            "GET /v1/components/{component}/workers/{name}/connect{query} HTTP/1.1\r\nHost: \
             {address}\r\n"
        );
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut reader = BufReader::new(stream);
        let mut status_line = String::new();
        reader.read_line(&mut status_line).unwrap();
        let status: u16 = status_line.split(' ').nth(1).unwrap().parse().unwrap();
        let mut head = String::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line == "\r\n" {
                break;
            }
            head.push_str(&line.to_ascii_lowercase());
        }
        if status != 200 {
            let mut body = String::new();
            let _ = reader.read_to_string(&mut body);
            return Err((status, body));
        }
        assert!(head.contains("content-type: text/event-stream"), "{head}");
        Ok(EventStream {
            reader,
            seen: String::new(),
        })
    }

    /// Waits (at most `limit`) for `text` to arrive on the stream; all seen so far otherwise.
    fn wait_for(&mut self, text: &str, limit: Duration) -> Result<(), String> {
        let started = Instant::now();
        while !self.seen.contains(text) {
            if started.elapsed() > limit {
                return Err(self.seen.clone());
            }
            let mut buf = [0u8; 4096];
            match self.reader.read(&mut buf) {
                Ok(0) => return Err(format!("stream ended: {}", self.seen)),
                Ok(n) => self.seen.push_str(&String::from_utf8_lossy(&buf[..n])),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(e) => return Err(format!("{e}: {}", self.seen)),
            }
        }
        Ok(())
    }
}

#[test]
fn connect_streams_a_workers_output_as_it_is_committed() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[]);
    server.add_component("counter", "counter");
    server.result("counter/w", "print", &[r#""printed before""#]);

    let mut live = EventStream::open(&server.address, "counter/w", "", &[]);
    server.result("counter/w", "print", &[r#""hello from connect""#]);
    live.wait_for("hello from connect", Duration::from_secs(10))
        .unwrap();
    assert!(live.seen.contains("event: stdout"), "{}", live.seen);
    assert!(
        !live.seen.contains("printed before"),
        "a stream starts at the end: {}",
        live.seen
    );
    // From the start: the earlier output too, in order.
    let mut all = EventStream::open(&server.address, "counter/w", "?from=1", &[]);
    all.wait_for("hello from connect", Duration::from_secs(10))
        .unwrap();
    let first = all.seen.find("printed before").expect("earlier output");
    assert!(first < all.seen.find("hello from connect").unwrap());

    // An unknown worker is refused before any stream starts.
    let refused = EventStream::try_open(&server.address, "counter/nobody", "", &[]);
    let (status, body) = refused.err().expect("refused");
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("unknown-worker"), "{body}");

    // The CLI follows the same stream, one JSON object a line.
    let mut cli = Command::new(golemw())
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--json", "worker", "connect", "counter/w"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = std::sync::mpsc::channel();
    let stdout = cli.stdout.take().unwrap();
    let sender = lines.0;
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if sender.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    // Until the CLI's stream is open, what is printed may be before its start: print again
    // until a line arrives.
    let started = Instant::now();
    let line = loop {
        server.result("counter/w", "print", &[r#""to the cli""#]);
        if let Ok(line) = lines.1.recv_timeout(Duration::from_millis(500)) {
            break line;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the CLI printed nothing"
        );
    };
    let _ = cli.kill();
    let _ = cli.wait();
    let event: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(event["stream"], "stdout", "{line}");
    assert_eq!(event["text"], "to the cli\n", "{line}");
    assert!(event["index"].as_u64().unwrap() > 1, "{line}");
}

/// Output reaches a stream as the guest writes it, before its invocation ends (and commits), and
/// the committed entry is not sent again.
#[test]
fn connect_streams_output_live_before_the_invocation_ends() {
    let dir = tempfile::tempdir().unwrap();
    // The guest's sleep stays in its thread (no durable sleep, which would commit first).
    let server = start(dir.path(), &["--durable-sleep-min-ms", "600000"]);
    server.add_component("counter", "counter");
    server.result("counter/w", "get", &[]);
    let mut live = EventStream::open(&server.address, "counter/w", "", &[]);
    let address = server.address.clone();
    let started = Instant::now();
    let invocation = std::thread::spawn(move || {
        let body =
            json!({ "function": "print-and-wait", "params": ["\"mid-invocation\"", "3000"] });
        golemw_tests::server::try_request(
            &address,
            "POST",
            "/v1/components/counter/workers/w/invoke-and-await",
            &[("Content-Type", "application/json")],
            body.to_string().as_bytes(),
            None,
        )
    });
    live.wait_for("mid-invocation", Duration::from_secs(10))
        .unwrap();
    let seen_after = started.elapsed();
    assert!(
        seen_after < Duration::from_millis(2500),
        "the output came only after {seen_after:?}: not live"
    );
    assert!(live.seen.contains(r#""live":true"#), "{}", live.seen);
    let (status, body) = invocation.join().unwrap().unwrap();
    assert_eq!(status, 200, "{body}");
    // Committed now; the stream does not send it a second time.
    server.result("counter/w", "print", &[r#""after""#]);
    live.wait_for("after", Duration::from_secs(10)).unwrap();
    assert_eq!(
        live.seen.matches("mid-invocation").count(),
        1,
        "{}",
        live.seen
    );
}

#[test]
fn oplog_search_finds_the_next_matching_entry_a_bounded_stretch_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[]);
    server.add_component("clocks", "clocks");
    server.add_component("counter", "counter");
    server.result("counter/w", "print", &[r#""Needle one""#]);
    server.result("counter/w", "add", &["1"]);
    server.result("counter/w", "print", &[r#""needle two""#]);
    let search = |worker: &str, q: &str, from: u64| {
        let (status, body) = server.get(&format!(
            "/v1/components/{worker}/oplog/search?q={q}&from={from}"
        ));
        assert_eq!(status, 200, "{body}");
        body
    };
    // Each print's invocation (its parameter) and its output match, case ignored.
    let mut kinds = Vec::new();
    let mut from = 1;
    let last = loop {
        let answer = search("counter/workers/w", "NEEDLE", from);
        let Some(found) = answer["found"].as_u64() else {
            break answer;
        };
        let (_, rows) = server.get(&format!(
            "/v1/components/counter/workers/w/oplog?from={found}&count=1"
        ));
        kinds.push(rows[0]["kind"].as_str().unwrap().to_string());
        from = found + 1;
    };
    assert_eq!(
        kinds,
        [
            "exported-function-invoked",
            "log",
            "exported-function-invoked",
            "log"
        ]
    );
    assert_eq!(last["scanned_to"], last["oplog_len"], "{last}");
    let (status, body) = server.get("/v1/components/counter/workers/w/oplog/search?q=");
    assert_eq!(status, 400, "{body}");

    // Past 200,000 entries one request stops and says where; the next goes on from there.
    server.result("clocks/w", "many-clocks", &["300000"]);
    server.result("clocks/w", "many-clocks", &["1"]);
    let far = search("clocks/workers/w", "completed%20-%3E%201", 1);
    assert!(far["found"].is_null(), "{far}");
    let stopped = far["scanned_to"].as_u64().unwrap();
    assert_eq!(stopped, 200_000, "{far}");
    let next = search("clocks/workers/w", "completed%20-%3E%201", stopped + 1);
    let found = next["found"]
        .as_u64()
        .expect("found after the first stretch");
    assert!(found > 300_000, "{next}");
}

#[test]
fn output_streams_are_limited_and_a_closed_one_frees_its_place() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &["--max-connect-streams", "2"]);
    server.add_component("counter", "counter");
    server.result("counter/w", "add", &["1"]);
    let first = EventStream::open(&server.address, "counter/w", "", &[]);
    let _second = EventStream::open(&server.address, "counter/w", "", &[]);
    let (status, body) = EventStream::try_open(&server.address, "counter/w", "", &[])
        .err()
        .expect("a third stream is refused");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("too-many-streams"), "{body}");
    assert!(body.contains("--max-connect-streams"), "{body}");
    // Other requests are served meanwhile.
    server.result("counter/w", "add", &["1"]);

    // A client that goes away frees its place (noticed at the stream's next look).
    drop(first);
    let started = Instant::now();
    loop {
        match EventStream::try_open(&server.address, "counter/w", "", &[]) {
            Ok(_) => break,
            Err((503, _)) if started.elapsed() < Duration::from_secs(5) => {
                std::thread::sleep(Duration::from_millis(100))
            }
            Err((status, body)) => panic!("still refused after a stream closed: {status} {body}"),
        }
    }
}

#[test]
fn a_server_with_a_token_wants_it_for_metrics_openapi_and_streams() {
    let dir = tempfile::tempdir().unwrap();
    let token = "6b1d0c9e2f3a4b5c6d7e8f9a0b1c2d3e";
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, token).unwrap();
    let data = dir.path().join("data");
    let server = start(&data, &["--token-file", token_file.to_str().unwrap()]);
    let bearer = format!("Bearer {token}");
    let wrong = format!("Bearer {}", token.replace('6', "7"));
    for path in ["/metrics", "/openapi.json"] {
        for headers in [vec![], vec![("Authorization", wrong.as_str())]] {
            let (status, _, body) = get_text(&server.address, path, &headers);
            assert_eq!(status, 401, "{path}: {body}");
            assert!(body.contains("unauthorized"), "{body}");
        }
        let (status, _, body) =
            get_text(&server.address, path, &[("Authorization", bearer.as_str())]);
        assert_eq!(status, 200, "{path}: {body}");
    }
    let (status, body) = EventStream::try_open(&server.address, "counter/w", "", &[])
        .err()
        .expect("no token, no stream");
    assert_eq!(status, 401, "{body}");
    // With the token the request gets as far as the worker (unknown here).
    let (status, body) = EventStream::try_open(
        &server.address,
        "counter/w",
        "",
        &[("Authorization", bearer.as_str())],
    )
    .err()
    .expect("an unknown component");
    assert_eq!(status, 404, "{body}");
}

#[test]
fn serve_listens_on_loopback_unless_told_otherwise() {
    let help = Command::new(golemw())
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    assert!(help.contains("[default: 127.0.0.1:9881]"), "{help}");
    // Beyond loopback without a token: refused before anything is opened.
    let dir = tempfile::tempdir().unwrap();
    let refused = Command::new(golemw())
        .arg("--data-dir")
        .arg(dir.path())
        .args(["serve", "--listen", "0.0.0.0:0"])
        .env_remove("GOLEMW_TOKEN")
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("needs an access token"), "{stderr}");
}
