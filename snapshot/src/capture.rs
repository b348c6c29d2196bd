//! Capture: linear memory to a manifest plus the pages storage does not have yet.
//!
//! Cost model (64 MiB memory, 1024 pages): every page is fingerprinted with XXH3-128 (memory
//! bandwidth, split over the cores); only pages whose fingerprint differs from the previous
//! capture are hashed with BLAKE3 and compressed. So a capture costs one read of memory plus
//! work proportional to what changed. With the kernel's record of written pages
//! ([`capture_written`]) even the read is skipped for pages nobody wrote.

use std::time::Instant;

use rayon::prelude::*;

use crate::dirty::PageSet;
pub use crate::manifest::CaptureStats;
use crate::manifest::Manifest;
use crate::page::{encode_page, fingerprint, PageHash, PageRef, PAGE_BYTES};

/// What a capture produced: the manifest and the pages to store.
pub struct Capture {
    pub manifest: Manifest,
    /// New pages, `(hash, encoded bytes)`, sorted by hash (deterministic).
    pub new_pages: Vec<(PageHash, Vec<u8>)>,
}

/// What the previous capture of the same memory knew, for change detection.
pub type Previous<'a> = Option<&'a [PageRef]>;

/// The instance state to capture.
pub struct State<'a> {
    /// Linear memory.
    pub memory: &'a [u8],
    /// Every global, in store order.
    pub globals: Vec<u128>,
    /// The runtime's encoded host state.
    pub host_state: Vec<u8>,
    /// The oplog index the state corresponds to.
    pub oplog_index: u64,
    /// The component version that produced it.
    pub component_version: u64,
    /// Capture time, ms since the epoch.
    pub created_at_ms: u64,
}

/// Captures `state`. `previous` is the page table of the last snapshot of this worker (pages
/// whose fingerprint is unchanged are not hashed again); `is_stored` says whether storage already
/// has a page (then it is referenced, not written).
pub fn capture(
    state: State<'_>,
    previous: Previous<'_>,
    is_stored: impl Fn(&PageHash) -> bool + Sync,
) -> Capture {
    capture_pages(state, previous, None, is_stored)
}

/// [`capture`] when the kernel told us which pages were `written` since the memory held
/// exactly `previous` (see [`crate::dirty`]): every other page is taken from `previous`
/// without being read, so the cost follows what changed, not the size of memory. Pages past
/// the end of `previous` are read.
pub fn capture_written(
    state: State<'_>,
    previous: &[PageRef],
    written: &PageSet,
    is_stored: impl Fn(&PageHash) -> bool + Sync,
) -> Capture {
    capture_pages(state, Some(previous), Some(written), is_stored)
}

fn capture_pages(
    state: State<'_>,
    previous: Previous<'_>,
    written: Option<&PageSet>,
    is_stored: impl Fn(&PageHash) -> bool + Sync,
) -> Capture {
    let started = Instant::now();
    let memory = state.memory;
    let capture_page = |(i, bytes): (usize, &[u8])| {
        let fp = fingerprint(bytes);
        if let Some(PageRef::Stored { fingerprint, hash }) = previous.and_then(|p| p.get(i)) {
            if *fingerprint == fp && bytes.len() == PAGE_BYTES {
                return (
                    PageRef::Stored {
                        hash: *hash,
                        fingerprint: fp,
                    },
                    None,
                );
            }
        }
        if is_zero(bytes) {
            return (PageRef::Zero, None);
        }
        let hash = if bytes.len() == PAGE_BYTES {
            PageHash::of(bytes)
        } else {
            // A trailing partial page (memory is a whole number of wasm pages, so only in
            // tests) is padded to a full page.
            let mut padded = bytes.to_vec();
            padded.resize(PAGE_BYTES, 0);
            PageHash::of(&padded)
        };
        let encoded = if is_stored(&hash) {
            None
        } else {
            let mut padded = bytes.to_vec();
            padded.resize(PAGE_BYTES, 0);
            Some(encode_page(&padded))
        };
        (
            PageRef::Stored {
                hash,
                fingerprint: fp,
            },
            encoded,
        )
    };
    let pages: Vec<(PageRef, Option<Vec<u8>>)> = match (written, previous) {
        (Some(written), Some(previous)) => {
            // Only the written pages (and any beyond the previous memory) are read.
            let count = memory.len().div_ceil(PAGE_BYTES);
            let read: Vec<usize> = (0..count)
                .filter(|i| *i >= previous.len() || written.contains(*i))
                .collect();
            let page_at = |i: usize| {
                let end = ((i + 1) * PAGE_BYTES).min(memory.len());
                (i, &memory[i * PAGE_BYTES..end])
            };
            let fresh: Vec<(PageRef, Option<Vec<u8>>)> = if crate::parallel(read.len()) {
                read.par_iter().map(|i| capture_page(page_at(*i))).collect()
            } else {
                read.iter().map(|i| capture_page(page_at(*i))).collect()
            };
            let mut fresh = read.into_iter().zip(fresh).peekable();
            (0..count)
                .map(|i| match fresh.next_if(|(j, _)| *j == i) {
                    Some((_, page)) => page,
                    None => (previous[i], None),
                })
                .collect()
        }
        _ if crate::parallel(memory.len() / PAGE_BYTES) => memory
            .par_chunks(PAGE_BYTES)
            .enumerate()
            .map(capture_page)
            .collect(),
        _ => memory
            .chunks(PAGE_BYTES)
            .enumerate()
            .map(capture_page)
            .collect(),
    };
    let mut new_pages: Vec<(PageHash, Vec<u8>)> = Vec::new();
    let mut refs = Vec::with_capacity(pages.len());
    for (page, encoded) in pages {
        if let (PageRef::Stored { hash, .. }, Some(encoded)) = (&page, encoded) {
            new_pages.push((*hash, encoded));
        }
        refs.push(page);
    }
    // Identical new pages (e.g. two equal buffers) are written once; sorted for determinism.
    new_pages.sort_unstable_by_key(|a| a.0);
    new_pages.dedup_by(|a, b| a.0 == b.0);
    let stats = CaptureStats {
        pages_total: refs.len() as u32,
        pages_stored: refs
            .iter()
            .filter(|p| matches!(p, PageRef::Stored { .. }))
            .count() as u32,
        pages_new: new_pages.len() as u32,
        bytes_new: new_pages.iter().map(|(_, b)| b.len() as u64).sum(),
        capture_us: started.elapsed().as_micros() as u64,
    };
    Capture {
        manifest: Manifest {
            oplog_index: state.oplog_index,
            component_version: state.component_version,
            memory_bytes: memory.len() as u64,
            globals: state.globals,
            host_state: state.host_state,
            pages: refs,
            created_at_ms: state.created_at_ms,
            stats,
        },
        new_pages,
    }
}

/// Whether every byte is zero, a word at a time.
pub(crate) fn is_zero(bytes: &[u8]) -> bool {
    let (head, words, tail) = unsafe {
        // SAFETY: every bit pattern is a valid u64; align_to only reinterprets the aligned middle.
        bytes.align_to::<u64>()
    };
    head.iter().all(|b| *b == 0) && words.iter().all(|w| *w == 0) && tail.iter().all(|b| *b == 0)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::sync::Mutex;

    /// A state of `memory` with no globals or host state, at oplog index 1.
    pub(crate) fn state(memory: &[u8]) -> State<'_> {
        State {
            memory,
            globals: vec![],
            host_state: vec![],
            oplog_index: 1,
            component_version: 0,
            created_at_ms: 0,
        }
    }

    fn snap(memory: &[u8], previous: Previous<'_>, stored: &Mutex<HashSet<PageHash>>) -> Capture {
        let state = state(memory);
        let capture = capture(state, previous, |h| stored.lock().unwrap().contains(h));
        stored
            .lock()
            .unwrap()
            .extend(capture.new_pages.iter().map(|(h, _)| *h));
        capture
    }

    #[test]
    fn zero_pages_are_not_stored_and_unchanged_pages_are_stored_once() {
        let mut memory = vec![0u8; 16 * PAGE_BYTES];
        memory[3 * PAGE_BYTES] = 1;
        memory[7 * PAGE_BYTES + 5] = 2;
        let stored = Mutex::new(HashSet::new());
        let first = snap(&memory, None, &stored);
        assert_eq!(first.manifest.stats.pages_stored, 2);
        assert_eq!(first.new_pages.len(), 2);
        memory[7 * PAGE_BYTES + 6] = 9;
        let second = snap(&memory, Some(&first.manifest.pages), &stored);
        assert_eq!(second.new_pages.len(), 1, "only the changed page is new");
        assert_eq!(second.manifest.pages[3], first.manifest.pages[3]);
        assert_ne!(second.manifest.pages[7], first.manifest.pages[7]);
    }

    #[test]
    fn capture_of_written_pages_equals_a_full_capture() {
        let mut memory = vec![0u8; 300 * PAGE_BYTES];
        for (i, b) in memory.iter_mut().enumerate().step_by(4093) {
            *b = (i % 251) as u8 + 1;
        }
        let stored = Mutex::new(HashSet::new());
        let first = snap(&memory, None, &stored);
        // Change pages 0, 7 (back to zero), 150 and 299; grow by two pages, one written.
        let mut written = PageSet::new();
        for page in [0usize, 7, 150, 299] {
            memory[page * PAGE_BYTES..(page + 1) * PAGE_BYTES].fill(0);
            written.insert(page);
        }
        memory[150 * PAGE_BYTES + 3] = 9;
        memory.resize(302 * PAGE_BYTES, 0);
        memory[301 * PAGE_BYTES] = 4;
        // A page reported written that did not change is harmless.
        written.insert(20);
        let full = snap(&memory, Some(&first.manifest.pages), &stored);
        let state = state(&memory);
        let tracked = capture_written(state, &first.manifest.pages, &written, |h| {
            stored.lock().unwrap().contains(h)
        });
        assert_eq!(tracked.manifest.pages, full.manifest.pages);
        assert_eq!(tracked.manifest.pages.len(), 302);
        assert_eq!(tracked.manifest.pages[7], PageRef::Zero);
        assert_eq!(tracked.manifest.pages[300], PageRef::Zero);
        assert!(matches!(
            tracked.manifest.pages[301],
            PageRef::Stored { .. }
        ));
    }

    #[test]
    fn identical_pages_share_one_stored_copy() {
        let memory = vec![5u8; 4 * PAGE_BYTES];
        let stored = Mutex::new(HashSet::new());
        let capture = snap(&memory, None, &stored);
        assert_eq!(capture.manifest.stats.pages_stored, 4);
        assert_eq!(capture.new_pages.len(), 1);
    }
}
