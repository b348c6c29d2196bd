//! Figure 2: oplog append and replay throughput, and compression.
//!
//! Entries go through the real code path: a live `Gate` appending `imported-function-invoked`
//! clock entries (it writes a block every 4096 entries), one final durable commit, on a real
//! `Storage` in a fresh data directory. Replay reads them back with `store::read_entries` in
//! 16 Ki batches and through a replaying `Gate`. In-memory encode / decode of the same entries
//! (no LMDB) are the baselines.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use golemw_runtime::gate::Gate;
use golemw_runtime::oplog::store::{self, BlockEncoder, BlockRead, BLOCK_ENTRIES_MAX};
use golemw_runtime::oplog::{HostFunction, HostValue, OplogEntry};
use golemw_runtime::storage::Storage;
use golemw_runtime::{ComponentId, WorkerId};
use indicatif::ProgressBar;
use lmdb::{Cursor, Transaction};
use uuid::Uuid;

use crate::report::{Figure, Table};
use crate::stats::{count, fmt, median, ratio};
use crate::Ctx;

/// Replay batch size, as `Gate` uses.
const READ_BATCH: usize = 16 * 1024;
/// Progress is reported every this many entries.
const TICK: u64 = 1 << 16;

/// Wall-clock readings as a guest calling the clock in a loop sees them: about 1 µs apart,
/// with noise. Deterministic for a seed, so the same sequence can be produced twice.
#[derive(Clone)]
struct ClockSim {
    now_ns: u64,
    rng: u64,
}

impl ClockSim {
    fn new() -> Self {
        ClockSim {
            now_ns: 1_750_000_000_000_000_000,
            rng: 0x9e37_79b9_7f4a_7c15,
        }
    }

    fn next_entry(&mut self) -> OplogEntry {
        // xorshift64
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.now_ns += 700 + self.rng % 600;
        OplogEntry::ImportedFunctionInvoked {
            function: HostFunction::ClockTimeGet,
            request: HostValue::U64(0),
            response: HostValue::Errno(0, self.now_ns),
        }
    }
}

/// Timings (per repetition) and sizes.
#[derive(Default)]
struct Measured {
    append: Vec<f64>,
    read: Vec<f64>,
    replay: Vec<f64>,
    encode: Vec<f64>,
    decode: Vec<f64>,
    raw_bytes: u64,
    block_bytes: u64,
    stored_bytes: u64,
    blocks: u64,
    file_bytes: u64,
}

pub fn run(ctx: &Ctx) -> Result<Figure> {
    let n = ctx.entries;
    let bar = ctx.progress("oplog", 3 * n * ctx.oplog_reps as u64);
    let mut m = Measured::default();
    for rep in 0..ctx.oplog_reps {
        // Alternate which goes first, so neither always runs on a cold allocator and cache.
        if rep % 2 == 0 {
            in_memory(n, &mut m, &bar)?;
            through_storage(ctx, n, &mut m, &bar)?;
        } else {
            through_storage(ctx, n, &mut m, &bar)?;
            in_memory(n, &mut m, &bar)?;
        }
    }
    bar.finish_and_clear();
    Ok(figure(ctx, n, &m))
}

/// Entries per second.
fn rate(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

/// Baselines: encode into blocks and decode them again, in memory; also the sizes.
fn in_memory(n: u64, m: &mut Measured, bar: &ProgressBar) -> Result<()> {
    let mut clock = ClockSim::new();
    let mut encoder = BlockEncoder::default();
    let mut pending = Vec::with_capacity(BLOCK_ENTRIES_MAX);
    let mut blocks = Vec::new();
    let (mut raw, mut encoded) = (0u64, 0u64);
    let start = Instant::now();
    for i in 1..=n {
        pending.push(clock.next_entry());
        if pending.len() == BLOCK_ENTRIES_MAX || i == n {
            let block = encoder.encode(&pending);
            raw += encoder.last_raw_len() as u64;
            encoded += block.len() as u64;
            blocks.push((i, block));
            pending.clear();
        }
    }
    m.encode.push(rate(n, start.elapsed()));
    m.raw_bytes = raw;
    m.block_bytes = encoded;
    let start = Instant::now();
    let mut decoded = 0u64;
    for (last, block) in &blocks {
        match store::decode_block(block, *last) {
            BlockRead::Entries(entries) => decoded += entries.len() as u64,
            BlockRead::Corrupt { detail, .. } => anyhow::bail!("block {last}: {detail}"),
        }
    }
    m.decode.push(rate(n, start.elapsed()));
    ensure!(decoded == n, "decoded {decoded} of {n} entries");
    bar.inc(n);
    Ok(())
}

/// The real path: append through a live gate, read back with `read_entries` and a replaying
/// gate, then measure what LMDB holds.
fn through_storage(ctx: &Ctx, n: u64, m: &mut Measured, bar: &ProgressBar) -> Result<()> {
    let dir = ctx.temp_dir()?;
    let storage = Arc::new(Storage::open(dir.path())?);
    let uid = Uuid::new_v4();
    let worker = WorkerId {
        component_id: ComponentId(Uuid::new_v4()),
        worker_name: "bench".into(),
    };
    let mut gate = Gate::new(Arc::clone(&storage), worker.clone(), uid, 0, false);
    let mut clock = ClockSim::new();
    let start = Instant::now();
    for i in 1..=n {
        gate.append(clock.next_entry())?;
        if i % TICK == 0 {
            bar.inc(TICK);
        }
    }
    gate.commit_with(true, |_| Ok(()))?;
    m.append.push(rate(n, start.elapsed()));
    bar.inc(n % TICK);
    drop(gate);

    let start = Instant::now();
    let mut from = 1;
    loop {
        let batch = store::read_entries(&storage, &uid, from, READ_BATCH)?;
        if batch.is_empty() {
            break;
        }
        from += batch.len() as u64;
    }
    m.read.push(rate(n, start.elapsed()));
    ensure!(from == n + 1, "read {} of {n} entries", from - 1);
    bar.inc(n / 2);

    let mut gate = Gate::new(Arc::clone(&storage), worker, uid, n, false);
    let start = Instant::now();
    let mut replayed = 0u64;
    while gate.next_replayed()?.is_some() {
        replayed += 1;
    }
    m.replay.push(rate(n, start.elapsed()));
    ensure!(replayed == n, "replayed {replayed} of {n} entries");
    bar.inc(n - n / 2);

    let txn = storage.env().begin_ro_txn()?;
    let mut cursor = txn.open_ro_cursor(storage.tables().oplog)?;
    let (mut stored, mut blocks) = (0u64, 0u64);
    for item in cursor.iter_start() {
        stored += item?.1.len() as u64;
        blocks += 1;
    }
    m.stored_bytes = stored;
    m.blocks = blocks;
    m.file_bytes = std::fs::metadata(dir.path().join("lmdb").join("data.mdb"))?.len();
    Ok(())
}

fn figure(ctx: &Ctx, n: u64, m: &Measured) -> Figure {
    let (append, encode) = (median(&m.append), median(&m.encode));
    let (read, replay, decode) = (median(&m.read), median(&m.replay), median(&m.decode));
    let mut speed = Table::new(&[
        "operation",
        "entries/s",
        "ns/entry",
        "speed vs in-memory baseline",
    ]);
    let mut row = |what: &str, r: f64, base: Option<f64>| {
        let vs = base.map_or("baseline".into(), |b| ratio(r, b));
        speed.row(vec![what.into(), count(r), fmt(1e9 / r), vs]);
    };
    row(
        "append: live Gate → LMDB (block per 4096, each commit fsynced)",
        append,
        Some(encode),
    );
    row(
        "baseline: BlockEncoder::encode only, in memory",
        encode,
        None,
    );
    row(
        "replay read: store::read_entries, 16 Ki batches",
        read,
        Some(decode),
    );
    row("replay: Gate::next_replayed", replay, Some(decode));
    row(
        "baseline: store::decode_block only, in memory",
        decode,
        None,
    );

    let per = |bytes: u64| fmt(bytes as f64 / n as f64);
    let mut sizes = Table::new(&["size", "bytes", "bytes/entry"]);
    sizes.row(vec![
        "raw: postcard + LEB128 length".into(),
        count(m.raw_bytes as f64),
        per(m.raw_bytes),
    ]);
    sizes.row(vec![
        format!("stored: {} zstd blocks in LMDB (values)", m.blocks),
        count(m.stored_bytes as f64),
        per(m.stored_bytes),
    ]);
    sizes.row(vec![
        "LMDB file data.mdb (pages, B-tree, free list)".into(),
        count(m.file_bytes as f64),
        per(m.file_bytes),
    ]);
    let compression = m.raw_bytes as f64 / m.stored_bytes as f64;
    Figure {
        id: "oplog",
        title: "2. Oplog append throughput and compression".into(),
        method: format!(
            "{} `imported-function-invoked` clock entries (wall-clock readings ~1 µs apart with \
             noise) appended through a live `Gate` on a real `Storage` in a fresh data directory: \
             the gate writes a zstd block per 4096 entries in its own LMDB transaction (whose \
             commit fsyncs the data, as every commit of durable storage does), then one final \
             durable commit (data and meta fsyncs). Then read back with `store::read_entries` in \
             16 Ki batches, and through a replaying `Gate`. Baselines: encoding the same entries \
             with `BlockEncoder` and decoding the blocks with `decode_block`, in memory. Median of \
             {} repetitions, each on a fresh data directory.",
            count(n as f64),
            ctx.oplog_reps
        ),
        tables: vec![speed, sizes],
        goals: Vec::new(),
        notes: vec![
            format!(
                "Compression ratio (raw / stored): {compression:.2}× — {} bytes per entry \
                 before zstd, {} after (block header included).",
                per(m.raw_bytes),
                per(m.stored_bytes)
            ),
            format!(
                "BlockEncoder blocks and LMDB values agree: {} vs {} bytes.",
                count(m.block_bytes as f64),
                count(m.stored_bytes as f64)
            ),
        ],
        metrics: vec![
            ("append_entries_per_s".into(), append),
            ("encode_entries_per_s".into(), encode),
            ("read_entries_per_s".into(), read),
            ("gate_replay_entries_per_s".into(), replay),
            ("decode_entries_per_s".into(), decode),
            ("raw_bytes_per_entry".into(), m.raw_bytes as f64 / n as f64),
            (
                "stored_bytes_per_entry".into(),
                m.stored_bytes as f64 / n as f64,
            ),
            (
                "file_bytes_per_entry".into(),
                m.file_bytes as f64 / n as f64,
            ),
            ("compression_ratio".into(), compression),
        ],
    }
}
