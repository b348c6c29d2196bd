//! Which pages differ between two snapshots, as ranges.

use serde::Serialize;

use crate::manifest::Manifest;
use crate::page::PageRef;

/// A run of consecutive changed pages, `start..end` (page numbers).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct PageRange {
    pub start: u32,
    pub end: u32,
}

/// The changed page ranges from `a` to `b`; pages beyond the shorter memory count as changed.
pub fn diff(a: &Manifest, b: &Manifest) -> Vec<PageRange> {
    let len = a.pages.len().max(b.pages.len());
    let mut ranges: Vec<PageRange> = Vec::new();
    for i in 0..len {
        let same = match (a.pages.get(i), b.pages.get(i)) {
            (Some(PageRef::Zero), Some(PageRef::Zero)) => true,
            (Some(PageRef::Stored { hash: x, .. }), Some(PageRef::Stored { hash: y, .. })) => {
                x == y
            }
            _ => false,
        };
        if same {
            continue;
        }
        let i = i as u32;
        match ranges.last_mut() {
            Some(last) if last.end == i => last.end = i + 1,
            _ => ranges.push(PageRange {
                start: i,
                end: i + 1,
            }),
        }
    }
    ranges
}
