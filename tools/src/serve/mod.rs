//! `golemw serve`: the data directory's components and workers behind an HTTP API.
//!
//! One thread owns the executor ([`executor_thread`]); the HTTP side (axum on tokio) turns each
//! request into a job for it ([`routes`]) and its errors into status codes ([`api_error`]).

mod api_error;
mod executor_thread;
mod routes;

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
}

/// How long requests in flight may take to finish after SIGINT or SIGTERM; a second signal
/// stops at once. Stopping cuts nothing durable short: what was answered is committed.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

pub fn run(ctx: &Context, args: ServeArgs) -> Result<ExitCode> {
    let (executor, executor_thread) = executor_thread::ExecutorThread::start(ctx.clone())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
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
        let app = routes::router(executor)
            .layer(middleware::from_fn(json_errors))
            .layer(middleware::from_fn(log_request));
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown_signal(interrupt, terminate))
            .await
            .context("serving HTTP")?;
        // The router (and with it the last job sender) is gone: the executor thread finishes
        // the job it is on and stops. Waited for here, where the grace deadline still runs.
        tokio::task::spawn_blocking(move || executor_thread.join())
            .await?
            .map_err(|_| anyhow::anyhow!("the executor thread panicked"))
    })?;
    Ok(ExitCode::SUCCESS)
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
