//! `golemw snapshot list | show | diff | export | verify | take`

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context as _, Result};
use clap::Subcommand;
use golemw_runtime::snapshots::{self, StoredSnapshot};
use golemw_snapshot::{Manifest, PageRef};

use super::{worker_id, Context};
use crate::output;

#[derive(Subcommand)]
pub enum SnapshotCommand {
    /// List a worker's snapshots: index, memory size, pages, bytes, age.
    List {
        /// COMPONENT/WORKER
        worker: String,
    },
    /// Show one snapshot's manifest (the newest if no index is given).
    Show {
        /// COMPONENT/WORKER
        worker: String,
        /// Oplog index of the snapshot.
        index: Option<u64>,
    },
    /// Which pages changed between two snapshots, as page ranges.
    Diff {
        /// COMPONENT/WORKER
        worker: String,
        /// Oplog index of the first snapshot.
        a: u64,
        /// Oplog index of the second snapshot.
        b: u64,
    },
    /// Write a snapshot's linear memory to a file.
    Export {
        /// COMPONENT/WORKER
        worker: String,
        /// Oplog index of the snapshot.
        index: u64,
        /// Output file for the memory image.
        #[arg(long)]
        memory: PathBuf,
    },
    /// Restore from each snapshot, replay to the end, and compare with a full replay.
    ///
    /// Exits non-zero if any snapshot leads to a different state (or cannot be used).
    Verify {
        /// COMPONENT/WORKER
        worker: String,
        /// Check every snapshot, not only the newest.
        #[arg(long)]
        all: bool,
    },
    /// Take a snapshot of a worker now.
    Take {
        /// COMPONENT/WORKER
        worker: String,
    },
}

fn find(list: &[StoredSnapshot], index: Option<u64>) -> Result<&StoredSnapshot> {
    match index {
        Some(index) => list.iter().find(|s| s.index == index).with_context(|| {
            format!(
                "no snapshot at oplog index {index}; there are snapshots at {:?}",
                list.iter().map(|s| s.index).collect::<Vec<_>>()
            )
        }),
        None => list.last().context("the worker has no snapshots"),
    }
}

fn manifest(s: &StoredSnapshot) -> Result<&Manifest> {
    s.manifest
        .as_ref()
        .map_err(|e| anyhow::anyhow!("snapshot at {} is unusable: {e}", s.index))
}

pub fn run(ctx: &Context, cmd: SnapshotCommand) -> Result<ExitCode> {
    let executor = ctx.executor()?;
    match cmd {
        SnapshotCommand::List { worker } => {
            let id = worker_id(&executor, &worker)?;
            let list = crate::views::snapshot_list(&executor, &id)?;
            let rows = list["snapshots"].as_array().cloned().unwrap_or_default();
            let total_pages = &list["stored_page_bytes"];
            if ctx.json {
                output::json(&list);
            } else if rows.is_empty() {
                println!("no snapshots of {id}");
            } else {
                println!(
                    "{:>10} {:>12} {:>7} {:>7} {:>5} {:>12} {:>9}  AGE",
                    "INDEX", "MEMORY", "PAGES", "STORED", "NEW", "NEW BYTES", "CAPTURE"
                );
                for row in &rows {
                    if let Some(err) = row.get("error") {
                        println!(
                            "{:>10}  UNUSABLE: {}",
                            row["index"].to_string(),
                            err.as_str().unwrap_or_default()
                        );
                        continue;
                    }
                    let cell = |key: &str| row[key].to_string();
                    println!(
                        "{:>10} {:>12} {:>7} {:>7} {:>5} {:>12} {:>7}us  {}s",
                        cell("index"),
                        cell("memory_bytes"),
                        cell("pages_total"),
                        cell("pages_stored"),
                        cell("pages_new"),
                        cell("bytes_new"),
                        cell("capture_us"),
                        cell("age_s")
                    );
                }
                println!("stored pages of this worker: {total_pages} bytes (compressed)");
            }
        }
        SnapshotCommand::Show { worker, index } => {
            let id = worker_id(&executor, &worker)?;
            let uid = executor.worker_record(&id)?.uid;
            let list = snapshots::list(executor.storage(), &uid)?;
            let m = manifest(find(&list, index)?)?;
            let zero = m
                .pages
                .iter()
                .filter(|p| matches!(p, PageRef::Zero))
                .count();
            if ctx.json {
                output::json(m);
            } else {
                println!("oplog index:       {}", m.oplog_index);
                println!("component version: {}", m.component_version);
                println!(
                    "memory:            {} bytes ({} pages of 64 KiB)",
                    m.memory_bytes,
                    m.pages.len()
                );
                println!("zero pages:        {zero} (not stored)");
                println!("stored pages:      {}", m.pages.len() - zero);
                println!("distinct pages:    {}", m.page_hashes().len());
                println!("globals:           {}", m.globals.len());
                for (i, g) in m.globals.iter().enumerate() {
                    println!("  global {i:>3}:      {g:#x}");
                }
                println!("host state:        {} bytes", m.host_state.len());
                println!("taken:             {}", output::timestamp(m.created_at_ms));
                println!(
                    "capture:           {} new pages, {} bytes, {} us",
                    m.stats.pages_new, m.stats.bytes_new, m.stats.capture_us
                );
            }
        }
        SnapshotCommand::Diff { worker, a, b } => {
            let id = worker_id(&executor, &worker)?;
            let uid = executor.worker_record(&id)?.uid;
            let list = snapshots::list(executor.storage(), &uid)?;
            let (ma, mb) = (
                manifest(find(&list, Some(a))?)?,
                manifest(find(&list, Some(b))?)?,
            );
            let ranges = golemw_snapshot::diff(ma, mb);
            if ctx.json {
                output::json(&ranges);
            } else if ranges.is_empty() {
                println!("no page differs between {a} and {b}");
            } else {
                let pages: u32 = ranges.iter().map(|r| r.end - r.start).sum();
                println!("{pages} pages of 64 KiB differ between {a} and {b}:");
                for r in ranges {
                    println!(
                        "  pages {}..{}  (bytes {:#x}..{:#x})",
                        r.start,
                        r.end,
                        r.start as u64 * 65536,
                        r.end as u64 * 65536
                    );
                }
            }
        }
        SnapshotCommand::Export {
            worker,
            index,
            memory,
        } => {
            let id = worker_id(&executor, &worker)?;
            let uid = executor.worker_record(&id)?.uid;
            let list = snapshots::list(executor.storage(), &uid)?;
            let m = manifest(find(&list, Some(index))?)?;
            let reader = snapshots::PageReader::new(executor.storage(), uid)?;
            let mut image = vec![0u8; m.memory_bytes as usize];
            golemw_snapshot::restore_into(m, &mut image, |h, page| reader.read_into(h, page))?;
            std::fs::write(&memory, &image)
                .with_context(|| format!("writing {}", memory.display()))?;
            if ctx.json {
                output::json(&serde_json::json!({ "file": memory, "bytes": image.len() }));
            } else {
                println!(
                    "wrote {} bytes of memory to {}",
                    image.len(),
                    memory.display()
                );
            }
        }
        SnapshotCommand::Verify { worker, all } => {
            let id = worker_id(&executor, &worker)?;
            let bar = indicatif::ProgressBar::new(0);
            bar.set_style(
                indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} ({elapsed})")
                    .expect("valid template"),
            );
            bar.set_message("verifying snapshots");
            let (reference, checks) = executor.verify_snapshots(&id, all, |done, total| {
                bar.set_length(total as u64);
                bar.set_position(done as u64);
            })?;
            bar.finish_and_clear();
            let failed = checks.iter().filter(|c| !c.matches).count();
            if ctx.json {
                output::json(&serde_json::json!({ "full_replay": reference, "snapshots": checks }));
            } else {
                println!("full replay:            {reference}");
                for c in &checks {
                    match &c.digest {
                        Ok(d) if c.matches => println!("snapshot {:>10}:    {d}  ok", c.index),
                        Ok(d) => println!("snapshot {:>10}:    {d}  MISMATCH", c.index),
                        Err(e) => println!("snapshot {:>10}:    FAILED: {e}", c.index),
                    }
                }
                if checks.is_empty() {
                    println!("the worker has no snapshots");
                }
            }
            if failed > 0 {
                bail!("{failed} snapshot(s) do not reproduce the full replay's state");
            }
        }
        SnapshotCommand::Take { worker } => {
            let id = worker_id(&executor, &worker)?;
            let stats = executor.snapshot(&id)?;
            if ctx.json {
                output::json(&stats);
            } else {
                println!(
                    "snapshot taken: {} pages, {} stored, {} new ({} bytes) in {} us",
                    stats.pages_total,
                    stats.pages_stored,
                    stats.pages_new,
                    stats.bytes_new,
                    stats.capture_us
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
