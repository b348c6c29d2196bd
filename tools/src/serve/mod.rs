//! `golemw serve`: the data directory's components and workers behind an HTTP API.
//!
//! One thread owns the executor ([`executor_thread`]); the HTTP side (axum on tokio) turns each
//! request into a job for it ([`routes`]) and its errors into status codes ([`api_error`]).

mod api_error;
mod executor_thread;
mod routes;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context as _, Result};
use axum::extract::Request;
use axum::middleware::{self, Next};
use axum::response::Response;

use crate::commands::Context;

/// Serve the data directory over HTTP (JSON), until SIGINT or SIGTERM.
///
/// Routes (all answers are JSON; errors are {"error": MESSAGE, "kind": KIND}):
///   GET    /healthz
///   GET    /v1/components                       latest version of every component
///   GET    /v1/components/C                     latest version of component C (name or UUID)
///   POST   /v1/components/NAME                  add a component; body: the wasm file
///   PUT    /v1/components/C                     add a version of C; body: the wasm file
///   GET    /v1/components/C/workers[?filter=EXPR]          (EXPR as `worker list --filter`)
///   POST   /v1/components/C/workers             create; body {"name", "args"?, "env"?: {K: V}}
///   GET    /v1/components/C/workers/W           metadata, as `worker get --json`
///   DELETE /v1/components/C/workers/W
///   POST   /v1/components/C/workers/W/invoke-and-await
///          body {"function", "params": [WAVE, ...]}; header Idempotency-Key (optional)
///   GET    /v1/components/C/workers/W/oplog[?from=N&count=N]
///   POST   /v1/components/C/workers/W/promises/N/complete   body: the payload
///   POST   /v1/components/C/workers/W/interrupt | resume
///   POST   /v1/components/C/workers/W/update   body {"version": V, "mode"?: "automatic" |
///                                               "snapshot-based"}
///   POST   /v1/components/C/workers/W/revert   body {"to_oplog_index": N} or
///                                               {"last_invocations": N}
///
/// Requests run one at a time, in arrival order, on one executor: a long invocation delays
/// the requests behind it. The data directory is held while serving (other golemw commands on
/// it are refused); a killed server loses nothing committed.
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub struct ServeArgs {
    /// Address to listen on; port 0 picks a free port (the address is printed either way).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9881")]
    listen: SocketAddr,
}

pub fn run(ctx: &Context, args: ServeArgs) -> Result<ExitCode> {
    let (executor, executor_thread) = executor_thread::ExecutorThread::start(ctx.clone())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("starting the HTTP runtime")?;
    runtime.block_on(async {
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
        let app = routes::router(executor).layer(middleware::from_fn(log_request));
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown_signal())
            .await
            .context("serving HTTP")
    })?;
    // The router (and with it the last job sender) is gone: the executor thread finishes the
    // job it is on and stops.
    drop(runtime);
    executor_thread
        .join()
        .map_err(|_| anyhow::anyhow!("the executor thread panicked"))?;
    Ok(ExitCode::SUCCESS)
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = match signal(SignalKind::terminate()) {
        Ok(stream) => stream,
        Err(err) => {
            tracing::warn!(%err, "cannot listen for SIGTERM; stop the server with SIGINT");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    tracing::info!("stopping: finishing the requests in flight");
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
