//! One page of linear memory: its identity (content hash), its fingerprint (change detection)
//! and its stored encoding.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::SnapshotError;

/// Snapshot page size: one wasm page (64 KiB). Larger than an OS page, so a 64 MiB memory's page
/// table has 1024 entries (40 KiB manifest), not 16384; a write dirties at most 64 KiB of storage.
pub const PAGE_BYTES: usize = 64 * 1024;

/// zstd level 1: pages are compressed on the capture path, which must stay in milliseconds.
const ZSTD_LEVEL: i32 = 1;
/// Stored pages start with a codec byte and a CRC32 of the stored bytes.
const HEADER_BYTES: usize = 1 + 4;
const CODEC_RAW: u8 = 0;
const CODEC_ZSTD: u8 = 1;

/// A page's content address: BLAKE3 of its bytes. Cryptographic, so a guest cannot make two
/// different pages share a key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PageHash(pub [u8; 32]);

impl PageHash {
    /// The hash of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        PageHash(*blake3::hash(bytes).as_bytes())
    }
}

impl fmt::Display for PageHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0[..8] {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for PageHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PageHash({self})")
    }
}

/// Fast fingerprint for change detection between consecutive captures of the same worker
/// (XXH3-128: memory-bandwidth speed). Never used as a storage key.
pub fn fingerprint(bytes: &[u8]) -> u128 {
    xxhash_rust::xxh3::xxh3_128(bytes)
}

/// Where a page's bytes are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PageRef {
    /// All zero: not stored.
    Zero,
    /// Stored under `hash`; `fingerprint` lets the next capture skip hashing it if unchanged.
    Stored { hash: PageHash, fingerprint: u128 },
}

/// Encodes a page for storage: zstd when it helps, raw otherwise, with a CRC32.
pub fn encode_page(bytes: &[u8]) -> Vec<u8> {
    let compressed = if looks_compressible(bytes) {
        zstd::bulk::compress(bytes, ZSTD_LEVEL).ok()
    } else {
        None
    };
    let (codec, payload): (u8, &[u8]) = match &compressed {
        // Keep compression only if it saves at least 1/8: decompression costs restore time.
        Some(c) if c.len() < bytes.len() - bytes.len() / 8 => (CODEC_ZSTD, c),
        _ => (CODEC_RAW, bytes),
    };
    let mut out = Vec::with_capacity(HEADER_BYTES + payload.len());
    out.push(codec);
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// Whether compressing the page is worth trying: a 12 KiB sample (its first, middle and last
/// 4 KiB) must shrink by 1/8. On incompressible data (encrypted, random, already compressed)
/// this costs a fifth of a failed attempt on the whole page (measured: ~48 us per 64 KiB page).
fn looks_compressible(bytes: &[u8]) -> bool {
    const SAMPLE_BYTES: usize = 4096;
    if bytes.len() <= 3 * SAMPLE_BYTES {
        return true;
    }
    let middle = bytes.len() / 2 - SAMPLE_BYTES / 2;
    let mut sample = Vec::with_capacity(3 * SAMPLE_BYTES);
    sample.extend_from_slice(&bytes[..SAMPLE_BYTES]);
    sample.extend_from_slice(&bytes[middle..middle + SAMPLE_BYTES]);
    sample.extend_from_slice(&bytes[bytes.len() - SAMPLE_BYTES..]);
    match zstd::bulk::compress(&sample, ZSTD_LEVEL) {
        Ok(c) => c.len() < sample.len() - sample.len() / 8,
        Err(_) => false,
    }
}

/// Decodes a stored page into `dst` (exactly one page), checking its CRC32.
pub fn decode_page_into(
    stored: &[u8],
    dst: &mut [u8],
    hash: &PageHash,
) -> Result<(), SnapshotError> {
    let corrupt = |detail: String| SnapshotError::Corrupt {
        what: format!("page {hash}"),
        detail,
    };
    if stored.len() < HEADER_BYTES {
        return Err(corrupt(format!(
            "{} bytes, shorter than its header",
            stored.len()
        )));
    }
    let crc = u32::from_le_bytes(stored[1..5].try_into().expect("4 bytes"));
    let payload = &stored[HEADER_BYTES..];
    let actual = crc32fast::hash(payload);
    if crc != actual {
        return Err(corrupt(format!(
            "checksum mismatch (stored {crc:08x}, computed {actual:08x})"
        )));
    }
    match stored[0] {
        CODEC_RAW if payload.len() == dst.len() => dst.copy_from_slice(payload),
        CODEC_RAW => return Err(corrupt(format!("raw page of {} bytes", payload.len()))),
        CODEC_ZSTD => {
            let written = zstd::bulk::decompress_to_buffer(payload, dst)
                .map_err(|e| corrupt(format!("zstd: {e}")))?;
            if written != dst.len() {
                return Err(corrupt(format!("decompressed to {written} bytes")));
            }
        }
        other => return Err(corrupt(format!("unknown codec {other}"))),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A page of xorshift output: incompressible.
    fn noise_page() -> Vec<u8> {
        let mut x = 0x2545f4914f6cdd1du64;
        (0..PAGE_BYTES)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 32) as u8
            })
            .collect()
    }

    #[test]
    fn pages_round_trip_compressed_and_raw() {
        let text: Vec<u8> = (0..PAGE_BYTES).map(|i| (i % 7) as u8).collect();
        for page in [text, noise_page()] {
            let stored = encode_page(&page);
            let mut back = vec![0u8; PAGE_BYTES];
            decode_page_into(&stored, &mut back, &PageHash::of(&page)).unwrap();
            assert_eq!(back, page);
        }
    }

    #[test]
    fn random_pages_are_stored_raw_and_text_pages_compressed() {
        assert_eq!(encode_page(&noise_page())[0], CODEC_RAW);
        let text: Vec<u8> = b"golemw "
            .iter()
            .copied()
            .cycle()
            .take(PAGE_BYTES)
            .collect();
        assert_eq!(encode_page(&text)[0], CODEC_ZSTD);
    }

    #[test]
    fn a_corrupt_page_is_detected() {
        let page = vec![3u8; PAGE_BYTES];
        let mut stored = encode_page(&page);
        let last = stored.len() - 1;
        stored[last] ^= 0xff;
        let mut back = vec![0u8; PAGE_BYTES];
        let err = decode_page_into(&stored, &mut back, &PageHash::of(&page)).unwrap_err();
        assert!(err.to_string().contains("checksum mismatch"), "{err}");
    }
}
