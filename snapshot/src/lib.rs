//! Snapshots of a wasm instance's state at idle points: linear memory, globals and opaque host
//! state, as a manifest pointing at content-addressed, compressed pages.
//!
//! The pipeline is the layout, in the order data flows:
//! [`page`] (one page's identity and encoding) -> [`capture`] (memory to manifest + new pages)
//! -> [`manifest`] (what a snapshot is, encoded with a checksum) -> [`restore`] (manifest and
//! pages back into memory) and [`diff`] (which pages changed between two snapshots);
//! [`dirty`] asks the kernel which pages were written, so capture and rewind skip the rest;
//! [`image`] keeps the latest state as a file that a restore maps copy-on-write instead of
//! copying.
//!
//! This crate knows nothing of LMDB or Wasmer: the runtime stores what [`capture`] returns and
//! hands [`restore`] a way to fetch pages.

pub mod capture;
pub mod diff;
pub mod dirty;
pub mod image;
pub mod manifest;
pub mod page;
pub mod restore;

pub use capture::{capture, capture_written, Capture, CaptureStats, State};
pub use diff::{diff, PageRange};
pub use dirty::{DirtyTracker, PageSet};
pub use image::MemoryImage;
pub use manifest::Manifest;
pub use page::{PageHash, PageRef, PAGE_BYTES};
pub use restore::{restore_into, restore_into_fresh, restore_over, restore_over_candidates};

/// Pages below which capture and restore stay on the calling thread: 128 pages (8 MiB) take
/// well under a millisecond, less than waking (or, in a fresh process, starting) a thread pool.
const PARALLEL_PAGES_MIN: usize = 128;

/// Whether work over `pages` pages is worth spreading over the cores.
fn parallel(pages: usize) -> bool {
    pages >= PARALLEL_PAGES_MIN
}

/// Errors of snapshot data: corruption is expected (disks fail) and reported, never decoded.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("corrupt snapshot {what}: {detail}")]
    Corrupt { what: String, detail: String },
    #[error("page {hash} is missing from storage")]
    MissingPage { hash: PageHash },
    #[error("the snapshot needs {needed} bytes of memory but the target has {available}")]
    MemoryTooSmall { needed: u64, available: u64 },
    #[error("storage error while reading page {hash}: {detail}")]
    Fetch { hash: PageHash, detail: String },
}
