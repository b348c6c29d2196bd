//! The oplog in LMDB: entries are grouped into blocks, one block per commit, each block
//! zstd-compressed as a whole (single entries are too small to compress on their own) and
//! keyed by `worker uid ++ index of its last entry (big endian)`. Keying by the *last* index
//! makes "the block holding entry i" one `MDB_SET_RANGE` seek.
//!
//! Block layout: `[version u8][codec u8][count u32][raw_len u32][crc32 u32][payload]`, the CRC
//! covering the first ten header bytes and the payload; the payload (after decompression) is
//! `count` times `[LEB128 length][postcard entry]`.

use lmdb::{Cursor, RwTransaction, Transaction, WriteFlags};
use uuid::Uuid;

use super::entry::OplogEntry;
use crate::error::{Error, Result};
use crate::ids::OplogIndex;
use crate::storage::codec::FORMAT_VERSION;
use crate::storage::Storage;

/// At most this many entries go into one block; a long invocation flushes a block this big.
pub const BLOCK_ENTRIES_MAX: usize = 4096;
/// A decompressed block larger than this is corrupt (guards the allocation on read).
const BLOCK_RAW_BYTES_MAX: usize = 256 << 20;
/// Blocks with less raw payload than this are stored uncompressed: a typical invocation's
/// block (~80 bytes) does not shrink under zstd, and trying cost 8.6 of its 29.5 us batched
/// latency (BENCHMARKS.md, figure 3).
const COMPRESS_BYTES_MIN: usize = 512;
/// zstd level 1: the fastest standard level; oplog text compresses well even there.
const ZSTD_LEVEL: i32 = 1;
const HEADER_BYTES: usize = 1 + 1 + 4 + 4 + 4;
const CODEC_RAW: u8 = 0;
const CODEC_ZSTD: u8 = 1;

/// The LMDB key of a block.
pub fn block_key(worker_uid: &Uuid, last_index: OplogIndex) -> [u8; 24] {
    let mut key = [0u8; 24];
    key[..16].copy_from_slice(worker_uid.as_bytes());
    key[16..].copy_from_slice(&last_index.to_be_bytes());
    key
}

/// Encodes entries into a block.
pub struct BlockEncoder {
    compressor: zstd::bulk::Compressor<'static>,
    raw: Vec<u8>,
}

impl Default for BlockEncoder {
    fn default() -> Self {
        BlockEncoder {
            compressor: zstd::bulk::Compressor::new(ZSTD_LEVEL)
                .expect("zstd level 1 is a valid level"),
            raw: Vec::new(),
        }
    }
}

impl BlockEncoder {
    /// Encodes `entries` into one block value.
    pub fn encode(&mut self, entries: &[OplogEntry]) -> Vec<u8> {
        assert!(!entries.is_empty() && entries.len() <= BLOCK_ENTRIES_MAX);
        self.raw.clear();
        for entry in entries {
            let encoded = postcard::to_stdvec(entry).expect("encoding into a Vec cannot fail");
            write_leb128(&mut self.raw, encoded.len() as u64);
            self.raw.extend_from_slice(&encoded);
        }
        let (codec, payload) = if self.raw.len() >= COMPRESS_BYTES_MIN {
            match self.compressor.compress(&self.raw) {
                Ok(compressed) if compressed.len() < self.raw.len() => (CODEC_ZSTD, compressed),
                _ => (CODEC_RAW, self.raw.clone()),
            }
        } else {
            (CODEC_RAW, self.raw.clone())
        };
        let mut block = Vec::with_capacity(HEADER_BYTES + payload.len());
        block.push(FORMAT_VERSION);
        block.push(codec);
        block.extend_from_slice(&(entries.len() as u32).to_le_bytes());
        block.extend_from_slice(&(self.raw.len() as u32).to_le_bytes());
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&block[..10]);
        hasher.update(&payload);
        block.extend_from_slice(&hasher.finalize().to_le_bytes());
        block.extend_from_slice(&payload);
        block
    }

    /// Bytes of the last block before compression (for statistics).
    pub fn last_raw_len(&self) -> usize {
        self.raw.len()
    }
}

/// Appends one block holding `entries`, the first of which has index `first_index`.
pub fn append_block(
    txn: &mut RwTransaction<'_>,
    storage: &Storage,
    worker_uid: &Uuid,
    first_index: OplogIndex,
    block: &[u8],
    count: usize,
) -> Result<()> {
    let last = first_index + count as u64 - 1;
    txn.put(
        storage.tables().oplog,
        &block_key(worker_uid, last),
        &block,
        WriteFlags::NO_OVERWRITE,
    )
    .map_err(|err| match err {
        lmdb::Error::KeyExist => Error::Storage(format!(
            "oplog block ending at {last} of worker {worker_uid} already exists: two writers?"
        )),
        err => err.into(),
    })
}

/// A block read back: its entries, or why it could not be decoded.
pub enum BlockRead {
    Entries(Vec<(OplogIndex, OplogEntry)>),
    Corrupt {
        first: OplogIndex,
        last: OplogIndex,
        detail: String,
    },
}

/// Decodes a block whose last entry has index `last`.
pub fn decode_block(bytes: &[u8], last: OplogIndex) -> BlockRead {
    match decode_block_inner(bytes, last) {
        Ok(entries) => BlockRead::Entries(entries),
        Err((count, detail)) => BlockRead::Corrupt {
            first: last + 1 - (count.max(1) as u64).min(last.max(1)),
            last,
            detail,
        },
    }
}

fn decode_block_inner(
    bytes: &[u8],
    last: OplogIndex,
) -> std::result::Result<Vec<(OplogIndex, OplogEntry)>, (usize, String)> {
    if bytes.len() < HEADER_BYTES {
        return Err((
            1,
            format!("block is {} bytes, shorter than its header", bytes.len()),
        ));
    }
    let count = u32::from_le_bytes(bytes[2..6].try_into().unwrap()) as usize;
    let raw_len = u32::from_le_bytes(bytes[6..10].try_into().unwrap()) as usize;
    let stored_crc = u32::from_le_bytes(bytes[10..14].try_into().unwrap());
    let payload = &bytes[HEADER_BYTES..];
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&bytes[..10]);
    hasher.update(payload);
    let crc = hasher.finalize();
    // The count is only trusted once the checksum holds.
    if crc != stored_crc {
        return Err((
            1,
            format!("checksum mismatch (stored {stored_crc:08x}, computed {crc:08x})"),
        ));
    }
    if bytes[0] != FORMAT_VERSION {
        return Err((count, format!("unknown format version {}", bytes[0])));
    }
    if count == 0 || count > BLOCK_ENTRIES_MAX || count as u64 > last {
        return Err((1, format!("implausible entry count {count}")));
    }
    if raw_len > BLOCK_RAW_BYTES_MAX {
        return Err((count, format!("implausible size {raw_len}")));
    }
    let raw = match bytes[1] {
        CODEC_RAW => payload.to_vec(),
        CODEC_ZSTD => {
            zstd::bulk::decompress(payload, raw_len).map_err(|e| (count, format!("zstd: {e}")))?
        }
        other => return Err((count, format!("unknown codec {other}"))),
    };
    if raw.len() != raw_len {
        return Err((
            count,
            format!("decompressed to {} bytes, expected {raw_len}", raw.len()),
        ));
    }
    let first = last + 1 - count as u64;
    let mut entries = Vec::with_capacity(count);
    let mut rest = raw.as_slice();
    for i in 0..count as u64 {
        let (len, after) = read_leb128(rest).ok_or((count, "truncated length".to_string()))?;
        let len = usize::try_from(len).map_err(|_| (count, "bad length".to_string()))?;
        if after.len() < len {
            return Err((count, format!("entry {} is truncated", first + i)));
        }
        let entry: OplogEntry = postcard::from_bytes(&after[..len])
            .map_err(|e| (count, format!("entry {} does not decode: {e}", first + i)))?;
        entries.push((first + i, entry));
        rest = &after[len..];
    }
    if !rest.is_empty() {
        return Err((count, format!("{} trailing bytes", rest.len())));
    }
    Ok(entries)
}

/// Reads blocks of a worker's oplog starting with the one holding `from`, until at least `count`
/// entries at or after `from` were seen. Corrupt blocks are returned as such, not skipped.
pub fn read_blocks(
    storage: &Storage,
    worker_uid: &Uuid,
    from: OplogIndex,
    count: usize,
) -> Result<Vec<BlockRead>> {
    let txn = storage.env().begin_ro_txn()?;
    let mut cursor = txn.open_ro_cursor(storage.tables().oplog)?;
    let mut blocks = Vec::new();
    let mut seen = 0usize;
    let mut prev_last: Option<OplogIndex> = None;
    for item in cursor.iter_from(block_key(worker_uid, from)) {
        let (key, value) = item?;
        if key.len() != 24 || &key[..16] != worker_uid.as_bytes() {
            break;
        }
        let last = u64::from_be_bytes(key[16..].try_into().unwrap());
        let mut block = decode_block(value, last);
        // A corrupt header hides the block's size; the neighbours bound it instead.
        if let BlockRead::Corrupt { first, .. } = &mut block {
            *first = match prev_last {
                Some(prev) => prev + 1,
                None => (*first).min(from),
            };
        }
        prev_last = Some(last);
        seen += match &block {
            BlockRead::Entries(entries) => entries.iter().filter(|(i, _)| *i >= from).count(),
            BlockRead::Corrupt { first, last, .. } => (last - first.max(&from) + 1) as usize,
        };
        blocks.push(block);
        if seen >= count {
            break;
        }
    }
    Ok(blocks)
}

/// Reads entries `from..from+count` (fewer at the end of the oplog); a corrupt block is an error
/// naming its index range.
pub fn read_entries(
    storage: &Storage,
    worker_uid: &Uuid,
    from: OplogIndex,
    count: usize,
) -> Result<Vec<(OplogIndex, OplogEntry)>> {
    let mut out = Vec::new();
    for block in read_blocks(storage, worker_uid, from, count)? {
        match block {
            BlockRead::Entries(entries) => out.extend(
                entries
                    .into_iter()
                    .filter(|(i, _)| *i >= from)
                    .take(count - out.len().min(count)),
            ),
            BlockRead::Corrupt {
                first,
                last,
                detail,
            } => {
                return Err(Error::Corrupt {
                    what: format!("oplog of worker {worker_uid}, entries {first}..={last}"),
                    detail,
                })
            }
        }
        if out.len() >= count {
            break;
        }
    }
    Ok(out)
}

/// Copies entries `1..=upto` of the oplog of `from` into the (empty) oplog of `to`, inside the
/// transaction that creates `to`: blocks that end at or before `upto` are copied as they are
/// (checksum verified, not decompressed), the block holding `upto` is cut there and encoded
/// again. Returns the number of blocks written. A damaged block is an error naming its entries:
/// nothing is copied from a history that cannot be read.
pub fn copy_prefix(
    txn: &mut RwTransaction<'_>,
    storage: &Storage,
    from: &Uuid,
    to: &Uuid,
    upto: OplogIndex,
) -> Result<usize> {
    /// Blocks are read in batches of about this many bytes (a cursor cannot stay open while
    /// the same transaction writes), so a long oplog is never held in memory whole.
    const BATCH_BYTES: usize = 16 << 20;
    let db = storage.tables().oplog;
    let damaged = |first: OplogIndex, last: OplogIndex, detail: String| Error::Corrupt {
        what: format!("oplog of worker {from}, entries {first}..={last}"),
        detail,
    };
    let mut written = 0;
    let mut next = 1;
    while next <= upto {
        let mut batch: Vec<(OplogIndex, Vec<u8>)> = Vec::new();
        let mut bytes = 0;
        {
            let mut cursor = txn.open_ro_cursor(db)?;
            for item in cursor.iter_from(block_key(from, next)) {
                let (key, value) = item?;
                if key.len() != 24 || &key[..16] != from.as_bytes() {
                    break;
                }
                let last = u64::from_be_bytes(key[16..].try_into().unwrap());
                bytes += value.len();
                batch.push((last, value.to_vec()));
                if last >= upto || bytes >= BATCH_BYTES {
                    break;
                }
            }
        }
        let Some(&(batch_last, _)) = batch.last() else {
            return Err(damaged(next, upto, "the entries are missing".into()));
        };
        for (last, block) in batch {
            let first = block_first(&block, last).map_err(|detail| damaged(next, last, detail))?;
            if first != next {
                return Err(damaged(
                    next,
                    last,
                    format!("the block starts at entry {first}, not {next}"),
                ));
            }
            if last <= upto {
                txn.put(db, &block_key(to, last), &block, WriteFlags::NO_OVERWRITE)?;
            } else {
                // The block holding `upto`: its entries up to there, encoded again.
                let entries = match decode_block(&block, last) {
                    BlockRead::Entries(entries) => entries,
                    BlockRead::Corrupt {
                        first,
                        last,
                        detail,
                    } => return Err(damaged(first, last, detail)),
                };
                let kept: Vec<OplogEntry> = entries
                    .into_iter()
                    .filter(|(index, _)| *index <= upto)
                    .map(|(_, entry)| entry)
                    .collect();
                let cut = BlockEncoder::default().encode(&kept);
                txn.put(db, &block_key(to, upto), &cut, WriteFlags::NO_OVERWRITE)?;
            }
            written += 1;
            next = last + 1;
        }
        if batch_last >= upto {
            break;
        }
    }
    Ok(written)
}

/// The index of a block's first entry, once its header and checksum are verified (the payload
/// is not decompressed).
fn block_first(bytes: &[u8], last: OplogIndex) -> std::result::Result<OplogIndex, String> {
    if bytes.len() < HEADER_BYTES {
        return Err(format!(
            "block is {} bytes, shorter than its header",
            bytes.len()
        ));
    }
    let count = u32::from_le_bytes(bytes[2..6].try_into().unwrap()) as u64;
    let stored_crc = u32::from_le_bytes(bytes[10..14].try_into().unwrap());
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&bytes[..10]);
    hasher.update(&bytes[HEADER_BYTES..]);
    let crc = hasher.finalize();
    if crc != stored_crc {
        return Err(format!(
            "checksum mismatch (stored {stored_crc:08x}, computed {crc:08x})"
        ));
    }
    if bytes[0] != FORMAT_VERSION {
        return Err(format!("unknown format version {}", bytes[0]));
    }
    if count == 0 || count > BLOCK_ENTRIES_MAX as u64 || count > last {
        return Err(format!("implausible entry count {count}"));
    }
    Ok(last + 1 - count)
}

/// Deletes every block of a worker.
pub fn delete_all(txn: &mut RwTransaction<'_>, storage: &Storage, worker_uid: &Uuid) -> Result<()> {
    delete_from(txn, storage, worker_uid, 0)
}

/// Deletes every block whose last index is at least `from_last`.
pub fn delete_from(
    txn: &mut RwTransaction<'_>,
    storage: &Storage,
    worker_uid: &Uuid,
    from_last: OplogIndex,
) -> Result<()> {
    let from = block_key(worker_uid, from_last);
    crate::storage::delete_range(txn, storage.tables().oplog, worker_uid.as_bytes(), &from)?;
    Ok(())
}

fn write_leb128(out: &mut Vec<u8>, mut value: u64) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn read_leb128(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let mut value = 0u64;
    for (i, byte) in bytes.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, &bytes[i + 1..]));
        }
    }
    None
}

/// The index of the last entry stored for a worker (0 if none): one seek past the worker's last
/// key, one step back.
pub fn last_index(storage: &Storage, worker_uid: &Uuid) -> Result<OplogIndex> {
    let txn = storage.env().begin_ro_txn()?;
    let cursor = txn.open_ro_cursor(storage.tables().oplog)?;
    let past_end = block_key(worker_uid, u64::MAX);
    // Position after the worker's last block, then step back onto it.
    let step_back = match cursor.get(Some(&past_end), None, lmdb_sys::MDB_SET_RANGE) {
        Ok(_) => lmdb_sys::MDB_PREV,
        Err(lmdb::Error::NotFound) => lmdb_sys::MDB_LAST,
        Err(err) => return Err(err.into()),
    };
    let found = match cursor.get(None, None, step_back) {
        Ok((Some(key), _)) => Some(key.to_vec()),
        Ok((None, _)) | Err(lmdb::Error::NotFound) => None,
        Err(err) => return Err(err.into()),
    };
    Ok(match found {
        Some(key) if key.len() == 24 && &key[..16] == worker_uid.as_bytes() => {
            u64::from_be_bytes(key[16..].try_into().unwrap())
        }
        _ => 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oplog::entry::{HostFunction, HostValue};

    fn clock_entry(i: u64) -> OplogEntry {
        OplogEntry::ImportedFunctionInvoked {
            function: HostFunction::ClockTimeGet,
            request: HostValue::U64(0),
            response: HostValue::Errno(0, 1_700_000_000_000_000_000 + i * 1000),
        }
    }

    #[test]
    fn blocks_round_trip_and_compress() {
        let entries: Vec<_> = (0..1000).map(clock_entry).collect();
        let mut encoder = BlockEncoder::default();
        let block = encoder.encode(&entries);
        assert!(
            block.len() * 4 < encoder.last_raw_len(),
            "{} vs {}",
            block.len(),
            encoder.last_raw_len()
        );
        match decode_block(&block, 1000) {
            BlockRead::Entries(decoded) => {
                assert_eq!(decoded.len(), 1000);
                assert_eq!(decoded[0].0, 1);
                assert_eq!(decoded[999].1, entries[999]);
            }
            BlockRead::Corrupt { detail, .. } => panic!("{detail}"),
        }
    }

    #[test]
    fn a_corrupt_block_names_its_index_range() {
        let entries: Vec<_> = (0..10).map(clock_entry).collect();
        let mut block = BlockEncoder::default().encode(&entries);
        let middle = block.len() / 2;
        block[middle] ^= 0x40;
        match decode_block(&block, 20) {
            BlockRead::Corrupt { last, detail, .. } => {
                assert_eq!(last, 20);
                assert!(detail.contains("checksum"), "{detail}");
            }
            BlockRead::Entries(_) => panic!("corruption went unnoticed"),
        }
    }
}
