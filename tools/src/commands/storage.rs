//! `golemw check` and `golemw backup`: a data directory's integrity, and a consistent copy of
//! it. Both read without the directory's lock, beside a running server.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};

use anyhow::{Context as _, Result};
use clap::Args;
use golemw_runtime::check::Report;
use golemw_runtime::storage::Storage;

use super::Context;

#[derive(Args)]
pub struct CheckArgs {
    /// Read the tables in this process (what `check` runs in a child process, so that a crash
    /// of LMDB on a damaged page is reported, not suffered).
    #[arg(long, hide = true)]
    walk: bool,
}

#[derive(Args)]
pub struct BackupArgs {
    /// A new or empty directory: it becomes a data directory of its own.
    pub dir: PathBuf,
}

/// `golemw check`: exit status 0 when nothing is damaged, 1 otherwise.
pub fn check(ctx: &Context, args: CheckArgs) -> Result<ExitCode> {
    if args.walk {
        return walk(ctx);
    }
    let mut child = Command::new(std::env::current_exe().context("finding the golemw binary")?)
        .arg("--data-dir")
        .arg(&ctx.data_dir)
        .args(["check", "--walk"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting the checker")?;
    let mut table = None;
    let mut report = None;
    for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
        let line = line?;
        let value: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        if let Some(name) = value["table"].as_str() {
            table = Some(name.to_string());
        }
        if !value["report"].is_null() {
            report = Some(value["report"].clone());
        }
    }
    let status = child.wait()?;
    let mut report = match report {
        Some(report) => report,
        None if status.success() => anyhow::bail!("the checker stopped without a report"),
        None => {
            use std::os::unix::process::ExitStatusExt;
            let how = match status.signal() {
                Some(signal) => format!("crashed with signal {signal}"),
                None => format!("failed ({status})"),
            };
            serde_json::json!({
                "read": {},
                "findings": [{
                    "table": table.clone().unwrap_or_default(),
                    "at": "the table's LMDB pages",
                    "problem": format!(
                        "reading it {how}: LMDB's own pages are damaged (they carry no \
                         checksum); restore the data directory from a backup"
                    ),
                }],
            })
        }
    };
    let findings = report["findings"].as_array().map_or(0, Vec::len);
    if ctx.json {
        report["damaged"] = serde_json::json!(findings > 0);
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        let read: u64 = report["read"]
            .as_object()
            .map(|tables| tables.values().filter_map(|n| n.as_u64()).sum())
            .unwrap_or(0);
        for finding in report["findings"].as_array().into_iter().flatten() {
            println!(
                "damaged: {} {}: {}",
                finding["table"].as_str().unwrap_or_default(),
                finding["at"].as_str().unwrap_or_default(),
                finding["problem"].as_str().unwrap_or_default()
            );
        }
        match findings {
            0 => println!("ok: {read} records read, nothing damaged"),
            n => println!("{n} damaged ({read} records read)"),
        }
    }
    Ok(if findings == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The check itself: progress and the report as JSON lines on stdout.
fn walk(ctx: &Context) -> Result<ExitCode> {
    let storage = Storage::open_read_only(&ctx.data_dir)?;
    let report: Report = golemw_runtime::check::check(&storage, |table| {
        println!("{}", serde_json::json!({ "table": table }));
    })?;
    println!("{}", serde_json::json!({ "report": report }));
    Ok(ExitCode::SUCCESS)
}

/// `golemw backup DIR`.
pub fn backup(ctx: &Context, args: BackupArgs) -> Result<ExitCode> {
    let started = std::time::Instant::now();
    let storage = Storage::open_read_only(&ctx.data_dir)?;
    let bytes = storage.copy_to(&args.dir).with_context(|| {
        format!(
            "backing up {} to {}",
            ctx.data_dir.display(),
            args.dir.display()
        )
    })?;
    let seconds = started.elapsed().as_secs_f64();
    if ctx.json {
        println!(
            "{}",
            serde_json::json!({ "backup": args.dir, "bytes": bytes, "seconds": seconds })
        );
    } else {
        println!(
            "backed up {} to {} ({:.1} MiB in {seconds:.2} s); use it with --data-dir {}",
            ctx.data_dir.display(),
            args.dir.display(),
            bytes as f64 / (1 << 20) as f64,
            args.dir.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}
