//! The web console in a real browser: headless Chromium, driven through chromedriver's WebDriver
//! protocol (JSON over HTTP, spoken with the same plain-socket client as the server tests),
//! against a real `golemw serve`. Each page is loaded, a promise completed and a worker reverted
//! from the page; screenshots are kept under `target/console-screenshots/`.
//!
//! Chromium and chromedriver are Debian's `chromium` and `chromium-driver`; the first test
//! installs them with apt-get where missing and fails, saying so, if that does not work: these
//! tests never pass without a browser.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use base64::Engine as _;
use golemw_tests::server::Server;
use serde_json::{json, Value};

/// How long a page may take to show what a test waits for.
const PAGE_WAIT: Duration = Duration::from_secs(20);

/// The `golemw` binary under test: this build's, or `GOLEMW_TEST_BIN` (a copy of it, where
/// other builds share the target directory and may replace the binary meanwhile).
fn golemw() -> PathBuf {
    match std::env::var_os("GOLEMW_TEST_BIN") {
        Some(path) => path.into(),
        None => env!("CARGO_BIN_EXE_golemw").into(),
    }
}

/// Chromium's and chromedriver's paths, installed with apt-get if missing (once per process).
fn browser() -> &'static (PathBuf, PathBuf) {
    static FOUND: OnceLock<Result<(PathBuf, PathBuf), String>> = OnceLock::new();
    let found = FOUND.get_or_init(|| {
        let find = || -> Option<(PathBuf, PathBuf)> {
            let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
                .into_iter()
                .map(PathBuf::from)
                .find(|p| p.exists())?;
            let driver = PathBuf::from("/usr/bin/chromedriver");
            driver.exists().then_some((chromium, driver))
        };
        if let Some(found) = find() {
            return Ok(found);
        }
        let install = Command::new("sh")
            .args([
                "-c",
                "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
                 chromium chromium-driver",
            ])
            .output();
        find().ok_or_else(|| {
            format!(
                "the browser tests need Debian's chromium and chromium-driver, and installing \
                 them failed: {}",
                match install {
                    Ok(out) => String::from_utf8_lossy(&out.stderr).into_owned(),
                    Err(err) => err.to_string(),
                }
            )
        })
    });
    match found {
        Ok(found) => found,
        Err(message) => panic!("{message}"),
    }
}

/// One HTTP/1.1 request to chromedriver: the status and the JSON body. Reads the body by its
/// `Content-Length` (chromedriver says `Connection: close` but keeps the socket open).
fn try_request(
    address: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Option<Duration>,
) -> std::io::Result<(u16, Value)> {
    let stream = TcpStream::connect(address)?;
    stream.set_read_timeout(timeout.or(Some(Duration::from_secs(60))))?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    (&stream).write_all(head.as_bytes())?;
    (&stream).write_all(body)?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let status: u16 = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status line: {line:?}")))?;
    let mut length = 0usize;
    loop {
        line.clear();
        reader.read_line(&mut line)?;
        if line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body)?;
    let value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    Ok((status, value))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A chromedriver process and one headless Chromium session; both ended when dropped.
struct Browser {
    driver: Child,
    address: String,
    session: String,
}

impl Browser {
    fn start() -> Browser {
        let (chromium, chromedriver) = browser();
        let port = free_port();
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let address = format!("127.0.0.1:{port}");
        let started = Instant::now();
        loop {
            let ready = try_request(&address, "GET", "/status", &[], b"", None)
                .is_ok_and(|(_, v)| v["value"]["ready"] == true);
            if ready {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "chromedriver did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut browser = Browser {
            driver,
            address,
            session: String::new(),
        };
        let capabilities = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            // Dialogs (the console's confirmations) wait for the test to answer them.
            "unhandledPromptBehavior": "ignore",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,1400"],
            },
        }}});
        let created = browser.command("POST", "/session", capabilities);
        browser.session = created["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {created}"))
            .to_string();
        browser
    }

    /// One WebDriver command; its `value`.
    fn command(&self, method: &str, path: &str, body: Value) -> Value {
        let body = body.to_string();
        let (status, answer) = try_request(
            &self.address,
            method,
            path,
            &[("Content-Type", "application/json")],
            body.as_bytes(),
            Some(Duration::from_secs(60)),
        )
        .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"));
        assert_eq!(status, 200, "WebDriver {method} {path}: {answer}");
        answer["value"].clone()
    }

    fn session_command(&self, method: &str, path: &str, body: Value) -> Value {
        self.command(method, &format!("/session/{}{path}", self.session), body)
    }

    fn go(&self, url: &str) {
        self.session_command("POST", "/url", json!({ "url": url }));
    }

    /// Runs `script` (a function body; `arguments` are `args`) in the page; what it returns.
    fn run(&self, script: &str, args: Value) -> Value {
        self.session_command(
            "POST",
            "/execute/sync",
            json!({ "script": script, "args": args }),
        )
    }

    /// Waits until `script` returns something other than null or false; returns it.
    fn wait_for(&self, what: &str, script: &str) -> Value {
        let started = Instant::now();
        loop {
            let value = self.run(script, json!([]));
            if !value.is_null() && value != false {
                return value;
            }
            if started.elapsed() > PAGE_WAIT {
                let page = self.run("return document.body.innerText", json!([]));
                panic!("waited {PAGE_WAIT:?} for {what}; the page shows:\n{page}");
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    fn element(&self, css: &str) -> String {
        let found = self.session_command(
            "POST",
            "/element",
            json!({ "using": "css selector", "value": css }),
        );
        found
            .as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("no element {css}: {found}"))
            .to_string()
    }

    fn click(&self, css: &str) {
        let id = self.element(css);
        self.session_command("POST", &format!("/element/{id}/click"), json!({}));
    }

    fn type_into(&self, css: &str, text: &str) {
        let id = self.element(css);
        self.session_command("POST", &format!("/element/{id}/clear"), json!({}));
        self.session_command(
            "POST",
            &format!("/element/{id}/value"),
            json!({ "text": text }),
        );
    }

    /// Accepts the confirmation dialog the page opened (waiting for it to open).
    fn confirm(&self) {
        let started = Instant::now();
        loop {
            let (status, answer) = try_request(
                &self.address,
                "GET",
                &format!("/session/{}/alert/text", self.session),
                &[],
                b"",
                None,
            )
            .unwrap();
            if status == 200 {
                let question = answer["value"].as_str().unwrap_or_default();
                assert!(question.contains('?'), "not a question: {answer}");
                self.session_command("POST", "/alert/accept", json!({}));
                return;
            }
            assert!(
                started.elapsed() < PAGE_WAIT,
                "no confirmation dialog opened"
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Saves a screenshot of the page as `target/console-screenshots/NAME.png`.
    fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.session_command("GET", "/screenshot", json!({}));
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap())
            .unwrap();
        let dir = golemw_tests::repo_root()
            .join("target")
            .join("console-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, bytes).unwrap();
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = try_request(
                &self.address,
                "DELETE",
                &format!("/session/{}", self.session),
                &[],
                b"",
                Some(Duration::from_secs(10)),
            );
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn start(data_dir: &Path, args: &[&str]) -> Server {
    Server::start_with(&golemw(), data_dir, args)
}

#[test]
fn the_console_shows_each_page_completes_a_promise_and_reverts_a_worker() {
    let browser = Browser::start();
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &["--snapshot-policy", "invocations:1"]);
    server.add_component("counter", "counter");
    server.add_component("promises", "promises");
    for _ in 0..3 {
        server.result("counter/w1", "add", &["1"]);
    }
    server.result("counter/w2", "add", &["7"]);
    let (status, body) = server.invoke("promises/p", "add-and-await", &["4"]);
    assert_eq!(status, 202, "{body}");
    let url = format!("http://{}/", server.address);

    // Components, with their exports.
    browser.go(&url);
    let shown = browser.wait_for(
        "the components",
        "const t = document.querySelector('#components-table'); return t && t.innerText",
    );
    let shown = shown.as_str().unwrap();
    assert!(
        shown.contains("counter") && shown.contains("promises"),
        "{shown}"
    );
    assert!(shown.contains("golemw:counter/api.{add}"), "{shown}");
    browser.screenshot("components");

    // Workers of a component, then filtered as `worker list --filter`.
    browser.go(&format!("{url}#/c/counter"));
    let rows = browser.wait_for(
        "the workers",
        "const t = document.querySelector('#workers-table'); return t && t.tBodies[0].rows.length",
    );
    assert_eq!(rows, 2);
    // Live: a worker created meanwhile shows up without a reload.
    server.result("counter/w3", "add", &["1"]);
    browser.wait_for(
        "the new worker, live",
        "const t = document.querySelector('#workers-table'); \
         return t && t.tBodies[0].rows.length === 3 && t.innerText.includes('w3')",
    );
    browser.type_into("#filter-input", "name == w2");
    browser.click("#filter-form button");
    browser.wait_for(
        "the filtered workers",
        "const t = document.querySelector('#workers-table'); \
         return t && t.tBodies[0].rows.length === 1 && t.innerText.includes('w2')",
    );
    browser.screenshot("workers-filtered");
    browser.type_into("#filter-input", "status == nonsense");
    browser.click("#filter-form button");
    let error = browser.wait_for(
        "the filter's error",
        "const e = document.querySelector('#filter-error'); return e && e.innerText",
    );
    assert!(error.as_str().unwrap().contains("nonsense"), "{error}");

    // A suspended worker's promise, completed from its page.
    browser.go(&format!("{url}#/c/promises/w/p"));
    browser.wait_for(
        "the promise",
        "return document.querySelector('#complete-promise')",
    );
    assert_eq!(
        browser.run(
            "return document.querySelector('#worker-status').innerText",
            json!([])
        ),
        "suspended"
    );
    browser.screenshot("worker-awaiting-promise");
    browser.type_into("#promise-payload", "paid");
    browser.click("#complete-promise");
    browser.confirm();
    browser.wait_for(
        "the worker to resume",
        "const s = document.querySelector('#worker-status'); \
         return s && s.innerText !== 'suspended' && !document.querySelector('#complete-promise')",
    );
    let (_, p) = server.get("/v1/components/promises/workers/p");
    assert_ne!(p["status"], "suspended", "{p}");
    assert!(p["awaiting"].is_null(), "{p}");

    // A worker's page: metadata, oplog with its snapshots marked, output as it happens.
    browser.go(&format!("{url}#/c/counter/w/w1"));
    // The previous page (worker p) had an oplog table too: wait for w1's.
    browser.wait_for(
        "the oplog of w1",
        "const h = document.querySelector('h1'); \
         return h && h.innerText.startsWith('w1') && document.querySelector('#oplog-table')",
    );
    let marked = browser.run(
        "return document.querySelectorAll('#oplog-table tr.snapshot').length",
        json!([]),
    );
    assert!(marked.as_u64().unwrap() >= 3, "snapshots marked: {marked}");
    server.result("counter/w1", "print", &[r#""seen in the console""#]);
    browser.wait_for(
        "the live output",
        "return document.querySelector('#output').innerText.includes('seen in the console')",
    );
    // The oplog length follows the worker without a reload.
    let (_, w1) = server.get("/v1/components/counter/workers/w1");
    let length = w1["oplog_len"].to_string();
    browser.wait_for(
        "the oplog length to follow",
        &format!("return document.querySelector('#oplog-len').innerText === '{length}'"),
    );
    browser.screenshot("worker");

    // Revert the last invocation (the print) and the one before (the third add) from the page.
    browser.type_into("#revert-last", "2");
    browser.click("#revert-button");
    browser.confirm();
    browser.wait_for(
        "the reverted entries, marked deleted",
        "return document.querySelectorAll('#oplog-table tr.deleted').length >= 2",
    );
    assert_eq!(server.result("counter/w1", "get", &[]), json!("2"));
    browser.screenshot("worker-reverted");

    // A status changed elsewhere shows without a reload; resume from the page.
    browser.go(&format!("{url}#/c/counter/w/w2"));
    browser.wait_for(
        "the oplog of w2",
        "const h = document.querySelector('h1'); \
         return h && h.innerText.startsWith('w2') && document.querySelector('#oplog-table')",
    );
    let (status, body) = server.post_json("/v1/components/counter/workers/w2/interrupt", json!({}));
    assert_eq!(status, 200, "{body}");
    browser.wait_for(
        "the interrupted status",
        "return document.querySelector('#worker-status').innerText === 'interrupted'",
    );
    browser.click("#resume-button");
    browser.confirm();
    browser.wait_for(
        "the worker to be idle again",
        "return document.querySelector('#worker-status').innerText === 'idle'",
    );
    let (_, w2) = server.get("/v1/components/counter/workers/w2");
    assert_eq!(w2["status"], "idle", "{w2}");

    // Snapshots: the heatmap shows the page the adds changed, and none between a snapshot and
    // itself.
    let (_, list) = server.get("/v1/components/counter/workers/w1/snapshots");
    let indexes: Vec<u64> = list["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["index"].as_u64().unwrap())
        .collect();
    assert!(indexes.len() >= 2, "{list}");
    browser.go(&format!(
        "{url}#/c/counter/w/w1/snapshots?a={}&b={}",
        indexes[0], indexes[1]
    ));
    let changed = browser.wait_for(
        "the heatmap",
        "const h = document.querySelector('#heatmap'); return h && h.dataset.changed",
    );
    assert!(
        changed.as_str().unwrap().parse::<u32>().unwrap() >= 1,
        "{changed}"
    );
    browser.screenshot("snapshots-heatmap");
    browser.go(&format!(
        "{url}#/c/counter/w/w1/snapshots?a={}&b={}",
        indexes[1], indexes[1]
    ));
    browser.wait_for(
        "the heatmap of a snapshot against itself",
        "const h = document.querySelector('#heatmap'); return h && h.dataset.changed === '0'",
    );
}

#[test]
fn a_worker_with_a_long_oplog_and_many_snapshots_loads_fast() {
    /// Entries in the oplog: clock calls, each one entry.
    const CLOCK_CALLS: u32 = 1_000_000;
    /// Invocations that make them; with the small ones after, one snapshot each.
    const BIG_INVOCATIONS: u32 = 10;
    const SNAPSHOTS: usize = 100;
    let browser = Browser::start();
    let dir = tempfile::tempdir().unwrap();
    let keep = SNAPSHOTS.to_string();
    let server = start(
        dir.path(),
        &[
            "--snapshot-policy",
            "invocations:1",
            "--snapshots-keep",
            &keep,
        ],
    );
    server.add_component("clocks", "clocks");
    let per_call = (CLOCK_CALLS / BIG_INVOCATIONS).to_string();
    let built = Instant::now();
    for _ in 0..BIG_INVOCATIONS {
        server.result("clocks/big", "many-clocks", &[&per_call]);
    }
    for _ in BIG_INVOCATIONS as usize..SNAPSHOTS {
        server.result("clocks/big", "now", &[]);
    }
    let (_, details) = server.get("/v1/components/clocks/workers/big");
    let length = details["oplog_len"].as_u64().unwrap();
    assert!(length >= u64::from(CLOCK_CALLS), "{details}");
    let (_, list) = server.get("/v1/components/clocks/workers/big/snapshots");
    assert_eq!(list["snapshots"].as_array().unwrap().len(), SNAPSHOTS);
    eprintln!(
        "built {length} entries and {SNAPSHOTS} snapshots in {:?}",
        built.elapsed()
    );

    // The worker's page, loaded afresh: first paint, and the oplog's last page drawn.
    let url = format!("http://{}/#/c/clocks/w/big", server.address);
    browser.go(&format!("http://{}/healthz", server.address));
    browser.go(&url);
    browser.wait_for("the oplog", "return window.golemwTimings.oplogMs");
    let timings = browser.run(
        "const paint = performance.getEntriesByName('first-contentful-paint')[0]; \
         return { first_paint_ms: paint ? paint.startTime : null, \
                  oplog_ms: window.golemwTimings.oplogMs }",
        json!([]),
    );
    browser.screenshot("long-oplog");
    // Paging to the first entries: from the click to the table drawn.
    let paged = browser.run(
        "const started = performance.now(); \
         location.hash = '#/c/clocks/w/big?from=1'; \
         return started",
        json!([]),
    );
    browser.wait_for(
        "the first page",
        "return document.querySelector('#oplog-table tr[data-index=\"1\"]') !== null",
    );
    let first_page_ms = browser
        .run("return window.golemwTimings.oplogMs", json!([]))
        .as_f64()
        .unwrap()
        - paged.as_f64().unwrap();
    // Finding an entry past the 10^6 clock calls from the first page: the whole oplog searched.
    browser.type_into("#oplog-search", "api#now");
    let started = Instant::now();
    browser.click("#oplog-find");
    browser.wait_for(
        "the match past the clock calls",
        "const row = document.querySelector('#oplog-table tr.match'); \
         return row && Number(row.dataset.index) > 1000000",
    );
    let find_ms = started.elapsed().as_secs_f64() * 1000.0;
    browser.screenshot("long-oplog-found");
    let first_paint = timings["first_paint_ms"].as_f64().expect("a first paint");
    let oplog = timings["oplog_ms"].as_f64().unwrap();
    eprintln!(
        "{length} entries, {SNAPSHOTS} snapshots: first paint {first_paint:.0} ms, last page of \
         the oplog drawn at {oplog:.0} ms, first page after {first_page_ms:.0} ms, an entry \
         after them all found in {find_ms:.0} ms"
    );
    // The issue's target is 200 ms; the bound here leaves room for a loaded CI machine.
    for (what, ms) in [
        ("first paint", first_paint),
        ("oplog page", oplog),
        ("paging", first_page_ms),
    ] {
        assert!(ms < 1000.0, "{what} took {ms:.0} ms");
    }
}
