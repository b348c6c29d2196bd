//! Restore: a manifest and its pages back into linear memory.

use std::sync::atomic::{AtomicU64, Ordering};

use rayon::prelude::*;

use crate::manifest::Manifest;
use crate::page::{PageHash, PageRef, PAGE_BYTES};
use crate::SnapshotError;

/// Writes the snapshot's memory into `dst` (at least `manifest.memory_bytes` long).
/// `read_page(hash, page)` decodes a stored page straight into its place in `dst` (see
/// [`crate::page::decode_page_into`]), so no page is copied twice. Large memories are restored
/// on all cores. Zero pages are zeroed (the fresh instance's data segments may have written
/// there).
pub fn restore_into<F>(
    manifest: &Manifest,
    dst: &mut [u8],
    read_page: F,
) -> Result<(), SnapshotError>
where
    F: Fn(&PageHash, &mut [u8]) -> Result<(), SnapshotError> + Sync,
{
    restore(manifest, dst, read_page, false, |_| false, |_| false).map(|_| ())
}

/// [`restore_into`] for memory the caller knows to be zero wherever `known_zero(page index)`
/// says so (a fresh instance's memory outside its data segments): those pages are not even
/// read when the snapshot has them as zero. Reading untouched memory is not free: each 4 KiB
/// faults in the kernel's zero page, and most of a small worker's memory is untouched.
pub fn restore_into_fresh<F, Z>(
    manifest: &Manifest,
    dst: &mut [u8],
    read_page: F,
    known_zero: Z,
) -> Result<(), SnapshotError>
where
    F: Fn(&PageHash, &mut [u8]) -> Result<(), SnapshotError> + Sync,
    Z: Fn(usize) -> bool + Sync,
{
    restore(manifest, dst, read_page, false, known_zero, |_| false).map(|_| ())
}

/// Rewinds memory that already holds a later state of the same instance to the snapshot:
/// like [`restore_into`], but a page whose fingerprint already matches the snapshot's is left
/// alone, so going back a little costs a hash of memory plus the pages that differ, not a
/// decode of every page. `dst` must be exactly `manifest.memory_bytes` long. Returns the
/// number of pages written.
pub fn restore_over<F>(
    manifest: &Manifest,
    dst: &mut [u8],
    read_page: F,
) -> Result<u64, SnapshotError>
where
    F: Fn(&PageHash, &mut [u8]) -> Result<(), SnapshotError> + Sync,
{
    restore_over_candidates(manifest, dst, read_page, |_| true)
}

/// [`restore_over`] when the caller knows which pages may differ from the snapshot: pages
/// for which `candidate(index)` is false are left alone without being read. The runtime knows
/// this from the kernel's record of pages written since its last capture plus the pages that
/// differ between that capture's page table and this snapshot's, so a rewind costs what
/// changed, not a pass over memory.
pub fn restore_over_candidates<F, C>(
    manifest: &Manifest,
    dst: &mut [u8],
    read_page: F,
    candidate: C,
) -> Result<u64, SnapshotError>
where
    F: Fn(&PageHash, &mut [u8]) -> Result<(), SnapshotError> + Sync,
    C: Fn(usize) -> bool + Sync,
{
    if dst.len() as u64 != manifest.memory_bytes {
        return Err(SnapshotError::MemoryTooSmall {
            needed: manifest.memory_bytes,
            available: dst.len() as u64,
        });
    }
    restore(manifest, dst, read_page, true, |_| false, |i| !candidate(i))
}

fn restore<F, Z, E>(
    manifest: &Manifest,
    dst: &mut [u8],
    read_page: F,
    skip_unchanged: bool,
    known_zero: Z,
    known_equal: E,
) -> Result<u64, SnapshotError>
where
    F: Fn(&PageHash, &mut [u8]) -> Result<(), SnapshotError> + Sync,
    Z: Fn(usize) -> bool + Sync,
    E: Fn(usize) -> bool + Sync,
{
    let needed = manifest.memory_bytes as usize;
    if dst.len() < needed {
        return Err(SnapshotError::MemoryTooSmall {
            needed: manifest.memory_bytes,
            available: dst.len() as u64,
        });
    }
    let written = AtomicU64::new(0);
    let restore_page = |(index, (page, page_ref)): (usize, (&mut [u8], &PageRef))| match page_ref {
        _ if known_equal(index) => Ok(()),
        PageRef::Zero if known_zero(index) => Ok(()),
        PageRef::Zero => {
            // Most of a fresh instance's memory is untouched: reading it maps the kernel's zero
            // page, writing would fault in and clear a real one. Only clear what is not zero.
            if !crate::capture::is_zero(page) {
                page.fill(0);
                written.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        }
        PageRef::Stored { fingerprint, .. }
            if skip_unchanged && crate::page::fingerprint(page) == *fingerprint =>
        {
            Ok(())
        }
        PageRef::Stored { hash, .. } => {
            written.fetch_add(1, Ordering::Relaxed);
            if page.len() == PAGE_BYTES {
                read_page(hash, page)
            } else {
                let mut full = vec![0u8; PAGE_BYTES];
                read_page(hash, &mut full)?;
                let len = page.len();
                page.copy_from_slice(&full[..len]);
                Ok(())
            }
        }
    };
    if crate::parallel(manifest.pages.len()) {
        dst[..needed]
            .par_chunks_mut(PAGE_BYTES)
            .zip(manifest.pages.par_iter())
            .enumerate()
            .try_for_each(restore_page)?;
    } else {
        dst[..needed]
            .chunks_mut(PAGE_BYTES)
            .zip(manifest.pages.iter())
            .enumerate()
            .try_for_each(restore_page)?;
    }
    Ok(written.into_inner())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::capture::tests::state;
    use crate::capture::{capture, State};

    #[test]
    fn restore_gives_back_the_captured_memory() {
        let mut memory = vec![0u8; 8 * PAGE_BYTES];
        for (i, b) in memory
            .iter_mut()
            .enumerate()
            .skip(PAGE_BYTES)
            .take(3 * PAGE_BYTES)
        {
            *b = (i * 31 % 251) as u8;
        }
        let state = State {
            memory: &memory,
            globals: vec![1, 2, u128::MAX],
            host_state: vec![9],
            oplog_index: 42,
            component_version: 3,
            created_at_ms: 0,
        };
        let captured = capture(state, None, |_| false);
        let pages: HashMap<_, _> = captured.new_pages.into_iter().collect();
        let manifest = Manifest::decode(&captured.manifest.encode()).unwrap();
        let mut dst = vec![0xAAu8; 8 * PAGE_BYTES];
        restore_into(&manifest, &mut dst, |h, page| {
            let stored = pages
                .get(h)
                .ok_or(SnapshotError::MissingPage { hash: *h })?;
            crate::page::decode_page_into(stored, page, h)
        })
        .unwrap();
        assert_eq!(dst, memory);
        assert_eq!(manifest.globals, vec![1, 2, u128::MAX]);
    }

    #[test]
    fn restore_over_rewrites_only_the_pages_that_changed() {
        let mut memory = vec![0u8; 8 * PAGE_BYTES];
        for (i, b) in memory.iter_mut().enumerate().take(5 * PAGE_BYTES) {
            *b = (i * 7 % 253) as u8;
        }
        let state = state(&memory);
        let captured = capture(state, None, |_| false);
        let pages: HashMap<_, _> = captured.new_pages.into_iter().collect();
        // A later state: one stored page changed, one zero page written.
        let mut later = memory.clone();
        later[2 * PAGE_BYTES + 10] ^= 0xFF;
        later[7 * PAGE_BYTES] = 1;
        let written = restore_over(&captured.manifest, &mut later, |h, page| {
            crate::page::decode_page_into(&pages[h], page, h)
        })
        .unwrap();
        assert_eq!(later, memory);
        assert_eq!(written, 2);
        // Memory of another size is refused (it cannot be rewound in place).
        let mut bigger = vec![0u8; 9 * PAGE_BYTES];
        assert!(restore_over(&captured.manifest, &mut bigger, |_, _| Ok(())).is_err());
    }

    #[test]
    fn restore_over_candidates_reads_only_the_candidates() {
        let mut memory = vec![0u8; 6 * PAGE_BYTES];
        for (i, b) in memory.iter_mut().enumerate() {
            *b = (i * 13 % 241) as u8;
        }
        let state = state(&memory);
        let captured = capture(state, None, |_| false);
        let pages: HashMap<_, _> = captured.new_pages.into_iter().collect();
        let mut later = memory.clone();
        later[PAGE_BYTES] ^= 1;
        later[4 * PAGE_BYTES] ^= 1;
        // Page 1 changed and is a candidate; page 3 is a candidate but unchanged; page 4
        // changed but the caller vouches it did not, so it is left alone: the caller's word
        // is what saves reading memory.
        let written = restore_over_candidates(
            &captured.manifest,
            &mut later,
            |h, page| crate::page::decode_page_into(&pages[h], page, h),
            |i| i == 1 || i == 3,
        )
        .unwrap();
        assert_eq!(written, 1);
        assert_eq!(later[..4 * PAGE_BYTES], memory[..4 * PAGE_BYTES]);
        assert_ne!(later[4 * PAGE_BYTES], memory[4 * PAGE_BYTES]);
    }

    #[test]
    fn a_missing_page_is_an_error_not_a_wrong_state() {
        let memory = vec![1u8; 2 * PAGE_BYTES];
        let state = state(&memory);
        let captured = capture(state, None, |_| false);
        let mut dst = vec![0u8; 2 * PAGE_BYTES];
        let err = restore_into(&captured.manifest, &mut dst, |h, _| {
            Err(SnapshotError::MissingPage { hash: *h })
        });
        assert!(matches!(err, Err(SnapshotError::MissingPage { .. })));
    }
}
