//! Durable outgoing HTTP (`wasi:http/outgoing-handler`): a real HTTP server on 127.0.0.1 counts
//! what it receives; requests made by a `wasm32-wasip2` component are sent live and their
//! responses (or failures) recorded, replayed after a restart without being sent again, sent
//! again after a crash under the default idempotence mode, and never twice with idempotence
//! off.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use golemw_runtime::host::http::send::{REQUEST_BODY_BYTES_MAX, RESPONSE_BODY_BYTES_MAX};
use golemw_runtime::oplog::{HostFunction, OplogEntry};
use golemw_runtime::storage::{codec, Storage};
use golemw_runtime::{
    Executor, ExecutorOptions, RecoveryMode, SnapshotPolicy, WorkerId, WorkerRecord, WorkerStatus,
};
use golemw_tests::{guest_component, oplog_entries, Completes};

/// How the exchange is named in the oplog.
const RECORDED_AS: &str = "wasi:http/outgoing-handler@0.2.handle";

/// One request as the server read it.
#[derive(Clone, Debug)]
struct Received {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// A tiny HTTP/1.1 server on 127.0.0.1 (one request per connection), counting what it
/// receives. Paths: `/hello` (200, `hello #<n>`), `/echo` (201, the request body, and the
/// request's `x-test` header back as `x-echo`), `/missing` (404), `/slow` (never answers),
/// `/big` (a body one byte past the response limit), `/trailers` (a chunked body with a
/// trailer), `/garbage` (not an HTTP response).
struct HttpServer {
    address: String,
    received: Arc<Mutex<Vec<Received>>>,
    count: Arc<AtomicUsize>,
}

impl HttpServer {
    fn start() -> HttpServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let received = Arc::new(Mutex::new(Vec::new()));
        let count = Arc::new(AtomicUsize::new(0));
        let (log, counter) = (Arc::clone(&received), Arc::clone(&count));
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (log, counter) = (Arc::clone(&log), Arc::clone(&counter));
                std::thread::spawn(move || serve(stream, &log, &counter));
            }
        });
        HttpServer {
            address,
            received,
            count,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("\"http://{}{path}\"", self.address)
    }

    fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    fn last(&self) -> Received {
        self.received.lock().unwrap().last().cloned().unwrap()
    }
}

fn serve(stream: TcpStream, log: &Mutex<Vec<Received>>, count: &AtomicUsize) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() || line.is_empty() {
        return;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let path = parts.next().unwrap_or_default().to_string();
    let mut headers = Vec::new();
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).unwrap();
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':').unwrap();
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .map(|(_, v)| v.parse().unwrap())
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    let n = count.fetch_add(1, Ordering::SeqCst) + 1;
    let echo = headers
        .iter()
        .find(|(name, _)| name == "x-test")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    log.lock().unwrap().push(Received {
        method,
        path: path.clone(),
        headers,
        body: body.clone(),
    });
    let (status, extra, reply): (&str, String, Vec<u8>) = match path.as_str() {
        "/hello" => (
            "200 OK",
            "x-reply: yes\r\n".into(),
            format!("hello #{n}").into_bytes(),
        ),
        "/echo" => ("201 Created", format!("x-echo: {echo}\r\n"), body),
        "/big" => (
            "200 OK",
            String::new(),
            vec![b'x'; RESPONSE_BODY_BYTES_MAX as usize + 1],
        ),
        "/trailers" => {
            // A chunked body in two chunks, then a trailer.
            let mut stream = stream;
            let _ = stream.write_all(
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntrailer: x-checksum\r\n\
                  connection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\
                  x-checksum: abc\r\n\r\n",
            );
            return;
        }
        "/garbage" => {
            let mut stream = stream;
            let _ = stream.write_all(b"this is not HTTP\r\n\r\n");
            return;
        }
        "/slow" => {
            std::thread::sleep(Duration::from_secs(5));
            return;
        }
        _ => ("404 Not Found", String::new(), b"no such thing".to_vec()),
    };
    let mut stream = stream;
    let head = format!(
        "HTTP/1.1 {status}\r\ncontent-length: {}\r\n{extra}connection: close\r\n\r\n",
        reply.len()
    );
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(&reply);
}

fn options() -> ExecutorOptions {
    ExecutorOptions {
        fsync: false,
        // Snapshots only where a test takes them, so that crash tests cut a plain history.
        snapshot_policy: SnapshotPolicy::Off,
        ..ExecutorOptions::default()
    }
}

/// Opens `dir`; one just let go of may stay locked a moment (the dropped executor's runtime
/// threads release their last references to it in the background).
fn open(dir: &Path) -> Arc<Executor> {
    until_unlocked(|| Executor::open(dir, options()))
}

fn until_unlocked<T>(mut open: impl FnMut() -> Result<T, golemw_runtime::Error>) -> T {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match open() {
            Ok(opened) => return opened,
            Err(golemw_runtime::Error::DataDirLocked { .. }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(err) => panic!("opening the data directory: {err}"),
        }
    }
}

/// The http-client component added to `ex`, and a worker of it.
fn setup(ex: &Executor, worker: &str) -> WorkerId {
    let wasm = std::fs::read(guest_component("http-client")).unwrap();
    if ex.components().latest("http-client").is_err() {
        ex.components().add("http-client", &wasm).unwrap();
    }
    ex.worker_id("http-client", worker).unwrap()
}

fn invoke(ex: &Executor, id: &WorkerId, function: &str, args: &[String]) -> String {
    ex.invoke(id, function, args, None)
        .done()
        .unwrap_or_else(|e| panic!("{id}.{function}({args:?}) failed: {e}"))
        .result
        .unwrap_or_default()
}

/// `send(method, url, headers, body, timeout-ms)` of the guest; its WAVE result.
fn send(
    ex: &Executor,
    id: &WorkerId,
    method: &str,
    url: String,
    headers: &str,
    body: Option<&str>,
    timeout_ms: Option<u64>,
) -> String {
    let body = match body {
        Some(body) => format!("some(\"{body}\")"),
        None => "none".into(),
    };
    let timeout = match timeout_ms {
        Some(ms) => format!("some({ms})"),
        None => "none".into(),
    };
    let args = [
        format!("\"{method}\""),
        url,
        headers.to_string(),
        body,
        timeout,
    ];
    invoke(ex, id, "send", &args)
}

fn exchanges(ex: &Executor, id: &WorkerId) -> usize {
    oplog_entries(ex, id)
        .into_iter()
        .filter(|(_, e)| {
            matches!(e, OplogEntry::ImportedFunctionInvoked { function: HostFunction::Golem(f), .. } if f == RECORDED_AS)
        })
        .count()
}

#[test]
fn get_and_post_round_trip_with_headers_and_bodies() {
    let server = HttpServer::start();
    let dir = tempfile::tempdir().unwrap();
    let ex = open(dir.path());
    let id = setup(&ex, "w");
    let got = send(&ex, &id, "GET", server.url("/hello"), "[]", None, None);
    assert!(got.starts_with("ok({status: 200,"), "{got}");
    assert!(got.contains("(\"x-reply\", \"yes\")"), "{got}");
    assert!(got.contains("body: \"hello #1\", body-len: 8"), "{got}");
    assert!(!got.contains("trailers: some"), "{got}");
    let request = server.last();
    assert_eq!(
        (request.method.as_str(), request.path.as_str()),
        ("GET", "/hello")
    );
    assert!(request.body.is_empty());

    // A body longer than one write (4096 bytes), and headers, go out as written.
    let body = "ping-".repeat(2000);
    let posted = send(
        &ex,
        &id,
        "POST",
        server.url("/echo"),
        "[(\"x-test\", \"abc\"), (\"content-type\", \"text/plain\")]",
        Some(&body),
        None,
    );
    assert!(posted.starts_with("ok({status: 201,"), "{posted}");
    assert!(posted.contains("(\"x-echo\", \"abc\")"), "{posted}");
    assert!(
        posted.contains(&format!("body-len: {}", body.len())),
        "{posted}"
    );
    let request = server.last();
    assert_eq!(request.method, "POST");
    assert_eq!(request.body, body.as_bytes());
    assert!(request.headers.contains(&("x-test".into(), "abc".into())));
    assert!(request
        .headers
        .contains(&("content-type".into(), "text/plain".into())));

    // A status the server gives is a response, not an error; other methods are sent as named.
    let missing = send(&ex, &id, "DELETE", server.url("/missing"), "[]", None, None);
    assert!(missing.starts_with("ok({status: 404,"), "{missing}");
    assert_eq!(server.last().method, "DELETE");
    assert_eq!(server.count(), 3);
    assert_eq!(exchanges(&ex, &id), 3);
}

#[test]
fn a_restart_replays_the_recorded_responses_without_sending_again() {
    let server = HttpServer::start();
    let dir = tempfile::tempdir().unwrap();
    let ex = open(dir.path());
    let id = setup(&ex, "w");
    let first = send(&ex, &id, "GET", server.url("/hello"), "[]", None, None);
    assert!(first.contains("hello #1"), "{first}");
    ex.snapshot(&id).unwrap();
    let second = send(
        &ex,
        &id,
        "POST",
        server.url("/echo"),
        "[]",
        Some("after"),
        None,
    );
    assert!(second.contains("body: \"after\""), "{second}");
    assert_eq!(server.count(), 2);
    drop(ex);

    // Both ways back: the snapshot and the tail, and the whole history. Each replayed
    // invocation returns what was recorded (the server would now say `hello #3`), which the
    // worker checks against the recorded result: no divergence.
    let ex = open(dir.path());
    let restored = ex.recover(&id, RecoveryMode::Auto).unwrap();
    assert!(restored.snapshot_index.is_some(), "{restored:?}");
    assert_eq!(restored.invocations_replayed, 1, "{restored:?}");
    let replayed = ex.recover(&id, RecoveryMode::FullReplay).unwrap();
    assert_eq!(replayed.snapshot_index, None);
    assert_eq!(replayed.invocations_replayed, 2, "{replayed:?}");
    assert_eq!(server.count(), 2, "replay sent nothing");
    drop(ex);
    let ex = open(dir.path());
    let third = send(&ex, &id, "GET", server.url("/hello"), "[]", None, None);
    assert!(third.contains("hello #3"), "{third}");
    assert_eq!(server.count(), 3);
    assert_eq!(exchanges(&ex, &id), 3);
}

/// Cuts a worker's oplog after entry `keep` and makes its record say the invocation in flight
/// there was never completed: what a process killed at that point leaves behind.
fn crash_after(dir: &Path, id: &WorkerId, keep: u64) {
    use golemw_runtime::oplog::store::{self, BlockEncoder, BlockRead};
    let storage = until_unlocked(|| Storage::open(dir));
    let workers = storage.tables().workers;
    let bytes = storage.get(workers, &id.storage_key()).unwrap().unwrap();
    let mut record: WorkerRecord = codec::decode(&bytes, "worker record").unwrap();
    let blocks = store::read_blocks(&storage, &record.uid, 1, usize::MAX).unwrap();
    let mut kept = Vec::new();
    let mut invoked_at = 0;
    storage
        .write(|txn| {
            for block in &blocks {
                let BlockRead::Entries(entries) = block else {
                    panic!("corrupt block")
                };
                let last = entries.last().unwrap().0;
                txn.del(
                    storage.tables().oplog,
                    &store::block_key(&record.uid, last),
                    None,
                )?;
                for (index, entry) in entries {
                    if *index <= keep {
                        if matches!(entry, OplogEntry::ExportedFunctionInvoked { .. }) {
                            invoked_at = *index;
                        }
                        kept.push(entry.clone());
                    }
                }
            }
            let encoded = BlockEncoder::default().encode(&kept);
            store::append_block(txn, &storage, &record.uid, 1, &encoded, kept.len())?;
            Ok(())
        })
        .unwrap();
    record.oplog_len = invoked_at - 1;
    record.status = WorkerStatus::Idle;
    let encoded = codec::encode(&record);
    storage
        .write(|txn| {
            txn.put(
                workers,
                &id.storage_key(),
                &encoded,
                lmdb::WriteFlags::empty(),
            )?;
            Ok(())
        })
        .unwrap();
    storage.sync().unwrap();
}

/// The index of the last recorded exchange.
fn last_exchange(ex: &Executor, id: &WorkerId) -> u64 {
    oplog_entries(ex, id)
        .into_iter()
        .filter(|(_, e)| {
            matches!(e, OplogEntry::ImportedFunctionInvoked { function: HostFunction::Golem(f), .. } if f == RECORDED_AS)
        })
        .map(|(i, _)| i)
        .next_back()
        .expect("an exchange was recorded")
}

#[test]
fn a_request_begun_without_a_recorded_response_is_sent_again_under_default_idempotence() {
    let server = HttpServer::start();
    let dir = tempfile::tempdir().unwrap();
    let ex = open(dir.path());
    let id = setup(&ex, "w");
    send(
        &ex,
        &id,
        "POST",
        server.url("/echo"),
        "[]",
        Some("once?"),
        None,
    );
    assert_eq!(server.count(), 1);
    let at = last_exchange(&ex, &id);
    drop(ex);
    // The request was sent, the process died before its response was committed.
    crash_after(dir.path(), &id, at - 1);
    let ex = open(dir.path());
    let report = ex.recover(&id, RecoveryMode::Auto).unwrap();
    assert!(report.resumed_invocation, "{report:?}");
    // At least once: the invocation finished live on recovery sent it again.
    assert_eq!(server.count(), 2);
    assert_eq!(server.last().body, b"once?");
    assert_eq!(exchanges(&ex, &id), 1);
    let record = ex.worker_record(&id).unwrap();
    assert_eq!(record.status, WorkerStatus::Idle, "{record:?}");
}

#[test]
fn a_request_begun_without_a_recorded_response_fails_the_worker_with_idempotence_off() {
    let server = HttpServer::start();
    let dir = tempfile::tempdir().unwrap();
    let ex = open(dir.path());
    let id = setup(&ex, "w");
    invoke(&ex, &id, "set-idempotent", &["false".into()]);
    send(&ex, &id, "GET", server.url("/hello"), "[]", None, None);
    assert_eq!(server.count(), 1);
    let entries = oplog_entries(&ex, &id);
    let at = last_exchange(&ex, &id);
    assert_eq!(entries[at as usize - 2].1, OplogEntry::BeginRemoteWrite);
    assert_eq!(
        entries[at as usize].1,
        OplogEntry::EndRemoteWrite { begin: at - 1 }
    );
    drop(ex);
    // The begin marker was committed before sending; nothing after it was.
    crash_after(dir.path(), &id, at - 1);
    let ex = open(dir.path());
    let recovered = ex.recover(&id, RecoveryMode::Auto);
    let record = ex.worker_record(&id).unwrap();
    assert_eq!(
        record.status,
        WorkerStatus::Failed,
        "{recovered:?} {record:?}"
    );
    let why = record.last_error.unwrap_or_default();
    assert!(why.contains("remote side effect"), "{why}");
    // At most once: not sent again.
    assert_eq!(server.count(), 1);
}

#[test]
fn refused_connections_timeouts_and_bad_responses_are_error_codes_replayed() {
    let server = HttpServer::start();
    let closed = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().to_string()
    };
    let dir = tempfile::tempdir().unwrap();
    let ex = open(dir.path());
    let id = setup(&ex, "w");
    let refused = send(
        &ex,
        &id,
        "GET",
        format!("\"http://{closed}/\""),
        "[]",
        None,
        None,
    );
    assert!(refused.contains("ConnectionRefused"), "{refused}");
    let started = Instant::now();
    let slow = send(&ex, &id, "GET", server.url("/slow"), "[]", None, Some(1000));
    assert!(slow.contains("ConnectionReadTimeout"), "{slow}");
    assert!(started.elapsed() >= Duration::from_millis(1000));
    assert_eq!(server.count(), 1);
    let garbage = send(&ex, &id, "GET", server.url("/garbage"), "[]", None, None);
    assert!(garbage.contains("HttpProtocolError"), "{garbage}");
    assert_eq!(server.count(), 2);
    // https is refused before anything is sent (no TLS client in this golemw).
    let https = send(
        &ex,
        &id,
        "GET",
        "\"https://example.com/\"".into(),
        "[]",
        None,
        None,
    );
    assert!(
        https.contains("InternalError") && https.contains("https"),
        "{https}"
    );
    assert_eq!(exchanges(&ex, &id), 3);
    drop(ex);
    // Replayed as recorded: no connection, no wait.
    let ex = open(dir.path());
    let replaying = Instant::now();
    ex.recover(&id, RecoveryMode::FullReplay).unwrap();
    assert!(replaying.elapsed() < Duration::from_millis(1000));
    assert_eq!(server.count(), 2);
    assert_eq!(exchanges(&ex, &id), 3);
}

#[test]
fn a_response_past_the_size_limit_fails_with_http_response_body_size() {
    let server = HttpServer::start();
    let dir = tempfile::tempdir().unwrap();
    let ex = open(dir.path());
    let id = setup(&ex, "w");
    let big = send(&ex, &id, "GET", server.url("/big"), "[]", None, None);
    assert!(
        big.contains(&format!(
            "HttpResponseBodySize(Some({RESPONSE_BODY_BYTES_MAX}))"
        )),
        "{big}"
    );
    // Recorded as the failure: a restart neither sends nor reads it again.
    drop(ex);
    let ex = open(dir.path());
    ex.recover(&id, RecoveryMode::FullReplay).unwrap();
    assert_eq!(server.count(), 1);
    // The worker goes on.
    let hello = send(&ex, &id, "GET", server.url("/hello"), "[]", None, None);
    assert!(hello.contains("hello #2"), "{hello}");
}

#[test]
fn a_request_body_past_the_size_limit_fails_with_http_request_body_size() {
    let server = HttpServer::start();
    let dir = tempfile::tempdir().unwrap();
    let ex = open(dir.path());
    let id = setup(&ex, "w");
    // Written as zeroes, and finished before `handle` this time.
    let small = invoke(
        &ex,
        &id,
        "post-zeroes",
        &[server.url("/echo"), "100000".into()],
    );
    assert_eq!(small, "ok(201)");
    assert_eq!(server.last().body, vec![0; 100_000]);
    let past = (REQUEST_BODY_BYTES_MAX + 1).to_string();
    let big = invoke(&ex, &id, "post-zeroes", &[server.url("/echo"), past]);
    assert!(
        big.contains(&format!(
            "HttpRequestBodySize(Some({}))",
            REQUEST_BODY_BYTES_MAX + 1
        )),
        "{big}"
    );
    // Nothing was sent, and nothing recorded for it: it failed in the guest's own calls.
    assert_eq!(server.count(), 1);
    assert_eq!(exchanges(&ex, &id), 1);
}

#[test]
fn response_trailers_are_recorded_and_replayed() {
    let server = HttpServer::start();
    let dir = tempfile::tempdir().unwrap();
    let ex = open(dir.path());
    let id = setup(&ex, "w");
    let got = send(&ex, &id, "GET", server.url("/trailers"), "[]", None, None);
    assert!(got.contains("body: \"hello world\""), "{got}");
    assert!(
        got.contains("trailers: some([(\"x-checksum\", \"abc\")])"),
        "{got}"
    );
    drop(ex);
    let ex = open(dir.path());
    ex.recover(&id, RecoveryMode::FullReplay).unwrap();
    assert_eq!(server.count(), 1);
}

#[test]
fn an_interrupt_stops_a_request_in_flight_and_records_nothing_of_it() {
    let server = HttpServer::start();
    let dir = tempfile::tempdir().unwrap();
    let ex = open(dir.path());
    let id = setup(&ex, "w");
    let running = {
        let (ex, id, url) = (Arc::clone(&ex), id.clone(), server.url("/slow"));
        std::thread::spawn(move || {
            let args = [
                "\"GET\"".to_string(),
                url,
                "[]".into(),
                "none".into(),
                "none".into(),
            ];
            ex.invoke(&id, "send", &args, None).done()
        })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.count() == 0 {
        assert!(Instant::now() < deadline, "the request never arrived");
        std::thread::sleep(Duration::from_millis(10));
    }
    // The server holds the request for 5 s; the default read timeout is 60 s.
    let interrupted = Instant::now();
    ex.interrupt_worker(&id).unwrap();
    let err = running.join().unwrap().unwrap_err();
    assert!(
        matches!(err, golemw_runtime::Error::Interrupted { .. }),
        "{err}"
    );
    assert!(interrupted.elapsed() < Duration::from_secs(2));
    assert_eq!(exchanges(&ex, &id), 0);
}

#[test]
fn a_response_kept_across_invocations_survives_a_restart_unread() {
    let server = HttpServer::start();
    let dir = tempfile::tempdir().unwrap();
    let ex = open(dir.path());
    let id = setup(&ex, "w");
    assert_eq!(invoke(&ex, &id, "keep", &[server.url("/echo")]), "ok");
    let sent = server.last().headers;
    assert!(sent.contains(&("x-test".into(), "kept".into())), "{sent:?}");
    // The response's resources are part of the snapshot's host state.
    ex.snapshot(&id).unwrap();
    drop(ex);
    let ex = open(dir.path());
    let restored = ex.recover(&id, RecoveryMode::Auto).unwrap();
    assert!(restored.snapshot_index.is_some(), "{restored:?}");
    assert_eq!(invoke(&ex, &id, "read-kept", &[]), "ok(\"201 \")");
    // And rebuilt by replaying the history that made them.
    assert_eq!(invoke(&ex, &id, "keep", &[server.url("/hello")]), "ok");
    drop(ex);
    let ex = open(dir.path());
    ex.recover(&id, RecoveryMode::FullReplay).unwrap();
    assert_eq!(invoke(&ex, &id, "read-kept", &[]), "ok(\"200 hello #2\")");
    assert_eq!(server.count(), 2);
}

#[test]
fn waiting_for_a_response_before_the_body_is_finished_traps() {
    let server = HttpServer::start();
    let dir = tempfile::tempdir().unwrap();
    let ex = open(dir.path());
    let id = setup(&ex, "w");
    let args = [server.url("/echo")];
    let err = ex
        .invoke(&id, "wait-unfinished", &args, None)
        .done()
        .unwrap_err();
    assert!(err.to_string().contains("not finished"), "{err}");
    assert_eq!(server.count(), 0);
    assert_eq!(exchanges(&ex, &id), 0);
}
