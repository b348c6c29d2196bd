//! `golemw serve`: the data directory's components and workers behind an HTTP API.
//!
//! The HTTP side (axum on tokio) turns each request into a job on the shared executor
//! ([`jobs`], [`routes`]) and its errors into status codes ([`api_error`]).

mod api_error;
mod connect;
mod console;
mod guard;
mod jobs;
mod metrics;
mod openapi;
mod oplog_search;
mod routes;
mod snapshots;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use axum::extract::Request;
use axum::http::header;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::commands::Context;

/// The options of `golemw serve` (its help is on the `Serve` command in main.rs).
#[derive(clap::Args)]
pub struct ServeArgs {
    /// Address to listen on; port 0 picks a free port (the address is printed either way).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9881")]
    listen: SocketAddr,

    /// Workers kept in memory at most; past it the least recently used idle ones are dropped
    /// and come back from their nearest snapshot when next used.
    #[arg(long, value_name = "N", env = "GOLEMW_MAX_ACTIVE_WORKERS",
          default_value_t = golemw_runtime::executor::DEFAULT_MAX_ACTIVE_WORKERS)]
    max_active_workers: usize,

    /// Linear memory of the workers kept in memory at most (MiB, each counting its whole
    /// memory, touched or not); past it the least recently used idle ones are dropped, as past
    /// --max-active-workers. Default: half the machine's physical memory, so that workers
    /// grown to their --max-memory-mib cannot take all of it between them. 0: no limit.
    #[arg(long, value_name = "MIB", env = "GOLEMW_MAX_ACTIVE_MEMORY_MIB")]
    max_active_memory_mib: Option<u64>,

    /// A guest sleep at least this long (milliseconds) suspends its worker durably instead of
    /// holding a thread: the due time is recorded, the instance dropped, and the worker brought
    /// back then (after a restart too). Shorter sleeps wait in the thread.
    #[arg(long, value_name = "MS", env = "GOLEMW_DURABLE_SLEEP_MIN_MS",
          default_value_t = golemw_runtime::executor::DEFAULT_DURABLE_SLEEP_MIN_MS)]
    durable_sleep_min_ms: u64,

    /// An invocation whose guest runs longer than this (milliseconds) is stopped and traps, and
    /// the worker's retry policy applies; 0: no limit. The default matches the 60 s after which
    /// common HTTP proxies (nginx, cloud load balancers) give up on a request anyway, and
    /// bounds what a runaway guest costs: one thread and one core for that long per attempt.
    #[arg(long, value_name = "MS", env = "GOLEMW_INVOCATION_DEADLINE_MS",
          default_value_t = DEFAULT_INVOCATION_DEADLINE_MS)]
    invocation_deadline_ms: u64,

    /// A guest call that has run this long (milliseconds) is confined to one core, with the
    /// other long calls, until it returns: runaway guests slow each other down, not the short
    /// invocations of other workers. 0: never.
    #[arg(long, value_name = "MS", env = "GOLEMW_CONFINE_AFTER_MS",
          default_value_t = golemw_runtime::watchdog::DEFAULT_CONFINE_AFTER.as_millis() as u64)]
    confine_after_ms: u64,

    /// Another name the server may be reached by (the `Host` header of requests): requests for
    /// any other than the listen address and localhost are refused, so that a web page cannot
    /// reach the server through a name rebound to this machine. `NAME` alone allows any port.
    /// Repeat the flag, or separate names with commas.
    #[arg(
        long = "allowed-host",
        value_name = "NAME[:PORT]",
        env = "GOLEMW_ALLOWED_HOSTS",
        value_delimiter = ','
    )]
    allowed_hosts: Vec<String>,

    /// A connection is closed when a request's headers take longer than this to arrive
    /// (milliseconds), and when it sits idle between requests that long: idle and half-sent
    /// connections cannot pile up.
    #[arg(long, value_name = "MS", env = "GOLEMW_HEADER_TIMEOUT_MS",
          default_value_t = DEFAULT_HEADER_TIMEOUT_MS)]
    header_timeout_ms: u64,

    /// A file holding the access token every request must then carry (`Authorization: Bearer
    /// TOKEN`); or set GOLEMW_TOKEN. Required to listen on an address other than loopback.
    /// `golemw` commands on the same data directory find it in `<data-dir>/server.json`
    /// (readable by its owner only).
    #[arg(long, value_name = "FILE")]
    token_file: Option<std::path::PathBuf>,

    /// A request body must arrive within this long (milliseconds) of its headers; a slower one
    /// fails (and so does the request): a client cannot hold a request open by trickling its
    /// body.
    #[arg(long, value_name = "MS", env = "GOLEMW_BODY_TIMEOUT_MS",
          default_value_t = DEFAULT_BODY_TIMEOUT_MS)]
    body_timeout_ms: u64,

    /// Connections served at once, at most; more wait to be accepted until one closes.
    #[arg(long, value_name = "N", env = "GOLEMW_MAX_CONNECTIONS",
          default_value_t = DEFAULT_MAX_CONNECTIONS)]
    max_connections: usize,

    /// Output streams (`GET .../connect`, `golemw worker connect`) open at once, at most; past
    /// it they are refused (503 `too-many-streams`). Each holds a connection too.
    #[arg(long, value_name = "N", env = "GOLEMW_MAX_CONNECT_STREAMS",
          default_value_t = connect::DEFAULT_MAX_STREAMS)]
    max_connect_streams: usize,
}

/// Default of `--header-timeout-ms`: long enough for any client on a real network to send its
/// headers, and for a keep-alive client to send its next request.
const DEFAULT_HEADER_TIMEOUT_MS: u64 = 10_000;

/// Default of `--body-timeout-ms`: a 512 MiB component (the largest accepted) at 10 MB/s.
const DEFAULT_BODY_TIMEOUT_MS: u64 = 60_000;

/// Default of `--max-connections`: far above the clients a 2-core server is measured with
/// (BENCHMARKS.md: 256), and below the common limit of 1,024 open files, which LMDB, memory
/// images and the executor's threads draw on too; raise both together (`ulimit -n`).
const DEFAULT_MAX_CONNECTIONS: usize = 768;

/// Default of `--invocation-deadline-ms`.
const DEFAULT_INVOCATION_DEADLINE_MS: u64 = 60_000;

/// How long requests in flight may take to finish after SIGINT or SIGTERM; a second signal
/// stops at once. Stopping cuts nothing durable short: what was answered is committed.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Threads running invocations (and other jobs) at once, at most. Each blocks while its guest
/// runs or its commit waits for the disk; many of them waiting together is what lets group
/// commit share one fsync among many invocations.
const BLOCKING_THREADS_MAX: usize = 512;

/// The machine's physical memory (1 TiB if it cannot be read, which leaves the budget to
/// --max-active-workers).
fn physical_memory_bytes() -> u64 {
    // SAFETY: sysconf has no memory arguments.
    let (pages, page) = unsafe {
        (
            libc::sysconf(libc::_SC_PHYS_PAGES),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    if pages > 0 && page > 0 {
        (pages as u64).saturating_mul(page as u64)
    } else {
        1 << 40
    }
}

pub fn run(ctx: &Context, args: ServeArgs) -> Result<ExitCode> {
    // A trapped invocation's retry backoff is waited out on a timer (see the invoke route),
    // not by sleeping a thread.
    let options = golemw_runtime::ExecutorOptions {
        wait_for_retries: false,
        max_active_workers: args.max_active_workers,
        max_active_memory: match args.max_active_memory_mib {
            Some(0) => None,
            Some(mib) => Some(mib.saturating_mul(1 << 20)),
            None => Some(physical_memory_bytes() / 2),
        },
        durable_sleep_min: Some(Duration::from_millis(args.durable_sleep_min_ms)),
        invocation_deadline: (args.invocation_deadline_ms > 0)
            .then(|| Duration::from_millis(args.invocation_deadline_ms)),
        confine_after: (args.confine_after_ms > 0)
            .then(|| Duration::from_millis(args.confine_after_ms)),
        ..ctx.executor_options()
    };
    let token = access_token(&args)?;
    if token.is_none() && !args.listen.ip().is_loopback() {
        anyhow::bail!(
            "listening on {} (beyond loopback) needs an access token, or any machine that \
             reaches the port could upload and run code: set GOLEMW_TOKEN or pass --token-file",
            args.listen
        );
    }
    let executor = golemw_runtime::Executor::serve(&ctx.data_dir, options)
        .with_context(|| format!("opening the data directory {}", ctx.data_dir.display()))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(std::thread::available_parallelism().map_or(2, |n| n.get()))
        .max_blocking_threads(BLOCKING_THREADS_MAX)
        .thread_name("golemw-serve")
        .enable_all()
        .build()
        .context("starting the HTTP runtime")?;
    runtime.block_on(async {
        // Before the address is printed: a signal sent as soon as a script reads it stops the
        // server cleanly.
        let interrupt = signal(SignalKind::interrupt()).context("listening for SIGINT")?;
        let terminate = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("listening on {}", args.listen))?;
        let address = listener.local_addr()?;
        // Other golemw commands on this data directory find the server here (written before
        // the address is printed: a script that reads it can use the CLI at once).
        let _advertised = match crate::remote::Advertised::write(
            &ctx.data_dir,
            &format!("http://{address}"),
            token.as_deref(),
        ) {
            Ok(advertised) => Some(advertised),
            Err(err) => {
                let _ = std::fs::remove_file(ctx.data_dir.join("server.json"));
                tracing::warn!(%err, "serving without advertising the address to golemw commands");
                None
            }
        };
        if ctx.json {
            // One line, so that a script can read it before the server's logs.
            println!(
                "{}",
                serde_json::json!({
                    "listening": address.to_string(),
                    "url": format!("http://{address}"),
                })
            );
        } else {
            println!("listening on http://{address}");
        }

        let checks = guard::Guard {
            hosts: guard::AllowedHosts::new(address, &args.allowed_hosts),
            token: guard::Token::new(token.clone()),
        };
        let jobs = jobs::Jobs::new(std::sync::Arc::clone(&executor));
        let served = metrics::ServeMetrics::new(std::sync::Arc::clone(&executor));
        let (streams, stop_streams) = connect::Streams::new(jobs.clone(), args.max_connect_streams);
        let app = routes::router(jobs.clone())
            .merge(metrics::router(
                jobs.clone(),
                std::sync::Arc::clone(&served),
            ))
            .merge(oplog_search::router(jobs.clone()))
            .merge(snapshots::router(jobs))
            .merge(console::router())
            .merge(connect::router(streams))
            .merge(openapi::router())
            .layer(middleware::from_fn_with_state(
                served,
                metrics::count_invocations,
            ))
            .layer(middleware::from_fn_with_state(checks, guard::guard))
            .layer(middleware::from_fn(json_errors))
            .layer(middleware::from_fn_with_state(
                Duration::from_millis(args.body_timeout_ms.max(1)),
                body_deadline,
            ))
            .layer(middleware::from_fn(log_request));
        let limits = ConnectionLimits {
            header_timeout: Duration::from_millis(args.header_timeout_ms.max(1)),
            max_connections: args.max_connections.max(1),
        };
        let shutdown = async move {
            shutdown_signal(interrupt, terminate).await;
            // Output streams never end by themselves; graceful shutdown waits for them.
            stop_streams.stop();
        };
        serve_connections(listener, app, limits, shutdown).await;
        anyhow::Ok(())
    })?;
    // Every connection is closed and its jobs are done (a job's handler waits for it).
    drop(runtime);
    drop(executor);
    Ok(ExitCode::SUCCESS)
}

/// The access token: `--token-file`'s first line, else `GOLEMW_TOKEN`; `None` if neither.
fn access_token(args: &ServeArgs) -> Result<Option<String>> {
    let token = match &args.token_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("reading the token file {}", path.display()))?
                .lines()
                .next()
                .unwrap_or_default()
                .trim()
                .to_string(),
        ),
        None => std::env::var("GOLEMW_TOKEN").ok(),
    };
    match token {
        Some(token) if token.len() < 16 => anyhow::bail!(
            "the access token is {} characters; use at least 16 (e.g. `openssl rand -hex 16`)",
            token.len()
        ),
        Some(token) if token.chars().any(|c| c.is_whitespace() || c.is_control()) => {
            anyhow::bail!("the access token must not contain spaces or control characters")
        }
        other => Ok(other),
    }
}

/// What bounds the connections of a server.
struct ConnectionLimits {
    header_timeout: Duration,
    max_connections: usize,
}

/// Accepts connections and serves HTTP/1.1 on each until `shutdown` resolves, then waits for
/// the requests in flight. Each connection holds one of `max_connections` permits (past them,
/// connections wait in the listen backlog) and is closed when a request's headers, or the next
/// request after an idle spell, take longer than `header_timeout`.
async fn serve_connections(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    limits: ConnectionLimits,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let permits = std::sync::Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = std::sync::Arc::clone(&permits).acquire_owned() => {
                permit.expect("the semaphore is never closed")
            }
            _ = &mut shutdown => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(err) => {
                    // Out of file descriptors, say: wait a little rather than spin.
                    tracing::warn!(%err, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(limits.header_timeout)
            .keep_alive(true);
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let connection = http.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(%err, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Resolves at the first SIGINT or SIGTERM; from then on a second one, or the end of
/// [`SHUTDOWN_GRACE`], exits the process.
async fn shutdown_signal(mut interrupt: Signal, mut terminate: Signal) {
    tokio::select! {
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
    }
    tracing::info!(
        grace = ?SHUTDOWN_GRACE,
        "stopping: finishing the requests in flight (a second signal stops at once)"
    );
    tokio::spawn(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
            _ = tokio::time::sleep(SHUTDOWN_GRACE) => {}
        }
        tracing::warn!(
            "stopping now: requests still running are cut off (all answered ones are durable)"
        );
        std::process::exit(1);
    });
}

/// Gives the request's body a deadline (see `--body-timeout-ms`): reading it past the
/// deadline fails, and the handler reading it answers with that error.
async fn body_deadline(
    axum::extract::State(timeout): axum::extract::State<Duration>,
    request: Request,
    next: Next,
) -> Response {
    let (parts, body) = request.into_parts();
    let timed = TimedBody {
        inner: body,
        deadline: Box::pin(tokio::time::sleep(timeout)),
        timeout,
    };
    next.run(Request::from_parts(parts, axum::body::Body::new(timed)))
        .await
}

/// A request body that fails once its deadline has passed.
struct TimedBody {
    inner: axum::body::Body,
    deadline: std::pin::Pin<Box<tokio::time::Sleep>>,
    timeout: Duration,
}

impl http_body::Body for TimedBody {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        if let std::task::Poll::Ready(frame) = std::pin::Pin::new(&mut self.inner).poll_frame(cx) {
            return std::task::Poll::Ready(frame);
        }
        if std::future::Future::poll(self.deadline.as_mut(), cx).is_ready() {
            let message = format!(
                "the request body did not arrive within {} ms (--body-timeout-ms)",
                self.timeout.as_millis()
            );
            return std::task::Poll::Ready(Some(Err(axum::Error::new(message))));
        }
        std::task::Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Errors axum answers itself (a path, query or body it cannot read, an unknown method) come
/// as plain text: rewritten as the API's JSON error, so every error has the same shape.
async fn json_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if is_json || !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 64 << 10)
        .await
        .map(|bytes| String::from_utf8_lossy(&bytes).trim().to_string())
        .unwrap_or_default();
    let message = match text.is_empty() {
        true => status.canonical_reason().unwrap_or("error").to_string(),
        false => text,
    };
    let mut rewritten =
        api_error::ApiError::new(status, api_error::kind_of_status(status), message)
            .into_response();
    if let Some(allow) = parts.headers.get(header::ALLOW) {
        rewritten.headers_mut().insert(header::ALLOW, allow.clone());
    }
    rewritten
}

/// One `info` line per request: method, path, status and time taken.
async fn log_request(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let response = next.run(request).await;
    tracing::info!(
        %method,
        %path,
        status = response.status().as_u16(),
        ms = started.elapsed().as_secs_f64() * 1000.0,
        "request"
    );
    response
}
