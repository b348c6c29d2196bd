//! `golemw run FILE FUNCTION [ARGS]...`

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use clap::Args;
use golemw_runtime::Error;

use super::Context;
use crate::output;

#[derive(Args)]
pub struct RunArgs {
    /// The wasm module (wasm32-wasip1, built with wit-bindgen).
    file: PathBuf,
    /// The function to invoke: `ns:pkg/iface.{func}`, or just `func` if unambiguous.
    function: String,
    /// Parameters as WAVE values, e.g. `42`, `"text"`, `[1, 2]`, `{name: "x"}`.
    /// Options may come before or after them; negative numbers are values. A value that
    /// starts with `-` otherwise (`-inf`) goes after `--`, which ends the options.
    #[arg(allow_negative_numbers = true)]
    args: Vec<String>,
    /// Worker name.
    #[arg(long, default_value = "main")]
    worker: String,
    /// Run at most once per key: a repeated key returns the stored result.
    #[arg(long)]
    idempotency_key: Option<String>,
}

pub fn run(ctx: &Context, args: RunArgs) -> Result<ExitCode> {
    let wasm =
        std::fs::read(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    let name = args
        .file
        .file_stem()
        .and_then(|s| s.to_str())
        .context("the file name is not valid UTF-8")?
        .to_string();
    let executor = ctx.executor()?;
    let components = executor.components();
    let record = match components.latest(&name) {
        Ok(latest)
            if latest.wasm_crc32 == crc32fast::hash(&wasm) && latest.size == wasm.len() as u64 =>
        {
            latest
        }
        Ok(_) => components.update(&name, &wasm)?,
        Err(Error::UnknownComponent(_)) => components.add(&name, &wasm)?,
        Err(err) => return Err(err.into()),
    };
    let id = executor.worker_id(&record.id.to_string(), &args.worker)?;
    if let Ok(existing) = executor.worker_record(&id) {
        if existing.component_version != record.version {
            eprintln!(
                "note: worker {} runs version {} of {name}; the file is version {}",
                args.worker, existing.component_version, record.version
            );
        }
    }
    let invoked = executor.invoke(
        &id,
        &args.function,
        &args.args,
        args.idempotency_key.as_deref(),
    )?;
    let outcome = match invoked.completed() {
        Ok(outcome) => outcome,
        Err(deferred) => {
            super::promise::report_deferred(ctx, deferred);
            return Ok(ExitCode::SUCCESS);
        }
    };
    if ctx.json {
        output::json(&serde_json::json!({
            "component": record.id.to_string(),
            "worker": args.worker,
            "result": outcome.result,
            "from_idempotency_key": outcome.from_idempotency_key,
        }));
    } else if let Some(result) = outcome.result {
        println!("{result}");
    }
    Ok(ExitCode::SUCCESS)
}
