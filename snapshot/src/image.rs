//! A worker's memory kept as a file, so that a restore maps it instead of copying it.
//!
//! Restoring 64 MiB by copying costs what writing 64 MiB of fresh memory costs, and most of that
//! is the kernel handing out and clearing 16,384 new pages, one fault each. A private
//! (copy-on-write) mapping of a file in the page cache costs none of that: reads map the cached
//! pages, and only the pages the guest later writes are copied, when it writes them.
//!
//! The image is a cache, never the source of truth: the snapshot in storage is. It is checked
//! page by page against the snapshot's page table when it is mapped (an XXH3-128 fingerprint per
//! 64 KiB page at memory-bandwidth speed; holes are zero without being read), and every page that
//! differs (torn or stale writes, a crash between a capture and its image write, corruption) is
//! reported so the caller writes it from storage. So the file needs no fsync and no ordering with
//! the LMDB commit.
//!
//! The one rule that keeps a live mapping safe: [`MemoryImage::write_changed`] writes only pages
//! whose entry differs from what the file holds, and a page the mapping still shares with the
//! file has, by definition, the file's content; so only pages the instance has written (and
//! thereby copied) are ever rewritten under a mapping.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::page::{fingerprint, PageRef, PAGE_BYTES};

/// An all-zero page, to compare with.
static ZERO_PAGE: [u8; PAGE_BYTES] = [0; PAGE_BYTES];

/// The memory image file of one worker. It holds no file descriptor between operations, so
/// any number of active workers can have one.
pub struct MemoryImage {
    path: PathBuf,
    /// Device and inode of the file this describes: a file put at `path` since is another image
    /// (operations on it fail rather than write into it). [`MemoryImage::create`] makes the
    /// file that replaces an image while the old one still exists, so their inodes differ.
    id: (u64, u64),
    /// What each page of the file holds, where known (the page table it was last checked
    /// against or written to); `None`: unknown, rewritten by the next [`MemoryImage::write_changed`].
    held: Vec<Option<PageRef>>,
}

impl MemoryImage {
    /// Opens the image at `path`; `None` if there is none, or only an empty one (nothing was
    /// ever written to it). What it holds is unknown until it is checked by
    /// [`MemoryImage::map_over`] or written by [`MemoryImage::write_changed`].
    pub fn open(path: &Path) -> io::Result<Option<Self>> {
        let meta = match OpenOptions::new().read(true).write(true).open(path) {
            Ok(file) => file.metadata()?,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(err),
        };
        Ok((meta.len() > 0).then(|| Self::describing(path, &meta)))
    }

    /// A new, empty image at `path`, put in place of any file there by a rename, so an instance
    /// that maps the old file keeps reading it unchanged, and the two never share an inode.
    pub fn create(path: &Path) -> io::Result<Self> {
        let fresh = unfinished(path);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&fresh)?;
        let image = Self::describing(path, &file.metadata()?);
        if let Err(err) = std::fs::rename(&fresh, path) {
            let _ = std::fs::remove_file(&fresh);
            return Err(err);
        }
        Ok(image)
    }

    /// Removes the image at `path`, and one a crash left half made, if there are.
    pub fn remove(path: &Path) -> io::Result<()> {
        for path in [path.to_path_buf(), unfinished(path)] {
            match std::fs::remove_file(&path) {
                Err(err) if err.kind() != io::ErrorKind::NotFound => return Err(err),
                _ => {}
            }
        }
        Ok(())
    }

    fn describing(path: &Path, meta: &std::fs::Metadata) -> Self {
        MemoryImage {
            path: path.to_path_buf(),
            id: (meta.dev(), meta.ino()),
            held: Vec::new(),
        }
    }

    /// The image's file, opened for one operation.
    fn file(&self) -> io::Result<File> {
        let file = OpenOptions::new().read(true).write(true).open(&self.path)?;
        let meta = file.metadata()?;
        if (meta.dev(), meta.ino()) != self.id {
            return Err(io::Error::other(format!(
                "{} was replaced by another file",
                self.path.display()
            )));
        }
        Ok(file)
    }

    /// Maps the image over `memory`, copy-on-write, and checks it against `pages` (the page
    /// table of the state `memory` must hold). Returns the indexes of the pages that differ:
    /// the caller must write those into `memory` from storage; every other page already reads
    /// the right bytes. On error `memory` holds what it held, or zeros if a failed mapping took
    /// it away.
    ///
    /// # Safety
    ///
    /// `memory` must be a region of its own mmap (a wasm linear memory), page aligned, that
    /// nothing reads or writes during the call, and whose owner unmaps it with the rest of its
    /// reservation. The file must be changed only through [`MemoryImage::write_changed`] while
    /// the mapping lives.
    pub unsafe fn map_over(
        &mut self,
        memory: &mut [u8],
        pages: &[PageRef],
    ) -> io::Result<Vec<usize>> {
        if memory.len() != pages.len() * PAGE_BYTES {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "memory of {} bytes for a page table of {} pages",
                    memory.len(),
                    pages.len()
                ),
            ));
        }
        if !(memory.as_ptr() as usize).is_multiple_of(crate::dirty::OS_PAGE_BYTES) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "memory does not start at a page boundary",
            ));
        }
        if memory.is_empty() {
            self.held.clear();
            return Ok(Vec::new());
        }
        // Past its end a file mapping faults with SIGBUS: a short (torn) image is extended with
        // zeros, which the check below then finds wrong where they should not be zero.
        let file = self.file()?;
        if file.metadata()?.len() < memory.len() as u64 {
            file.set_len(memory.len() as u64)?;
        }
        // The check reads the page cache, but the mapping goes on reading the file after it:
        // bytes still waiting to be written back must reach the disk first, and a writeback
        // that failed (which would let an evicted page come back older) is reported here, to
        // this new descriptor too. Captures start their writeback at once, so this finds little
        // or nothing to do (about 50 µs on a clean file here).
        file.sync_data()?;
        let has_data = data_pages(&file, pages.len())?;
        // SAFETY: the caller guarantees `memory` is a page-aligned mapping of its own that
        // nothing uses meanwhile; MAP_FIXED replaces exactly its pages with the file's.
        let mapped = unsafe {
            libc::mmap(
                memory.as_mut_ptr().cast(),
                memory.len(),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_FIXED,
                file.as_raw_fd(),
                0,
            )
        };
        if mapped == libc::MAP_FAILED {
            let err = io::Error::last_os_error();
            // Some kernels unmap the old range before a MAP_FIXED mapping can still fail: put
            // zeroed memory back, so the caller can restore into it by copying.
            // SAFETY: the same range, again replaced whole, by anonymous memory.
            let zeroed = unsafe {
                libc::mmap(
                    memory.as_mut_ptr().cast(),
                    memory.len(),
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                    -1,
                    0,
                )
            };
            if zeroed == libc::MAP_FAILED {
                // Linear memory with a hole in it cannot be used or safely left to anyone.
                eprintln!("golemw: could not map memory back after a failed image mapping: {err}");
                std::process::abort();
            }
            return Err(err);
        }
        // A hole read or written through a private file mapping makes the filesystem allocate
        // a page for it; on tmpfs, with the disk full, that fault is a SIGBUS. Holes read as
        // zeros: map anonymous zero pages over them instead.
        let fd = file.as_raw_fd();
        let end = memory.len() as i64;
        let os_page = crate::dirty::OS_PAGE_BYTES as i64;
        let mut offset = 0i64;
        while offset < end {
            // SAFETY: lseek on a file descriptor we own.
            let start = unsafe { libc::lseek(fd, offset, libc::SEEK_HOLE) };
            if start < 0 || start >= end {
                break;
            }
            // SAFETY: as above.
            let stop = unsafe { libc::lseek(fd, start, libc::SEEK_DATA) };
            let stop = if stop < 0 { end } else { stop.min(end) };
            let (from, to) = (
                (start + os_page - 1) / os_page * os_page,
                stop / os_page * os_page,
            );
            if to > from {
                // SAFETY: a page-aligned range inside `memory`, replaced by zero pages.
                let zeroed = unsafe {
                    libc::mmap(
                        memory.as_mut_ptr().add(from as usize).cast(),
                        (to - from) as usize,
                        libc::PROT_READ | libc::PROT_WRITE,
                        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                        -1,
                        0,
                    )
                };
                if zeroed == libc::MAP_FAILED {
                    eprintln!("golemw: could not map zeros over a hole of a memory image");
                    std::process::abort();
                }
            }
            offset = stop;
        }
        drop(file); // the mapping keeps the file alive
        let check = |(index, page): (usize, &[u8])| {
            let good = match pages[index] {
                PageRef::Zero => !has_data[index] || page == &ZERO_PAGE[..],
                PageRef::Stored {
                    fingerprint: expected,
                    ..
                } => has_data[index] && fingerprint(page) == expected,
            };
            (!good).then_some(index)
        };
        let differ: Vec<usize> = if crate::parallel(pages.len()) {
            memory
                .par_chunks(PAGE_BYTES)
                .enumerate()
                .filter_map(check)
                .collect()
        } else {
            memory
                .chunks(PAGE_BYTES)
                .enumerate()
                .filter_map(check)
                .collect()
        };
        self.held = pages.iter().copied().map(Some).collect();
        for &index in &differ {
            // The caller writes these pages in memory; the file keeps the wrong bytes until the
            // next write_changed.
            self.held[index] = None;
        }
        Ok(differ)
    }

    /// Brings the file to `pages`, the page table of `memory` as it is now: writes every page
    /// whose entry differs from what the file holds (zero pages become holes). Returns the
    /// number of pages written. On error what the file holds is unknown (and the next call
    /// rewrites every page).
    pub fn write_changed(&mut self, memory: &[u8], pages: &[PageRef]) -> io::Result<usize> {
        debug_assert_eq!(memory.len(), pages.len() * PAGE_BYTES);
        let outcome = self.write_changed_inner(memory, pages);
        if outcome.is_err() {
            self.held.clear();
        }
        outcome
    }

    fn write_changed_inner(&mut self, memory: &[u8], pages: &[PageRef]) -> io::Result<usize> {
        let file = self.file()?;
        let changed = |index: usize| self.held.get(index).copied().flatten() != Some(pages[index]);
        let mut written = 0;
        let mut index = 0;
        while index < pages.len() {
            if !changed(index) {
                index += 1;
                continue;
            }
            // A run of changed pages of one kind: one write or one hole punch.
            let zero = pages[index] == PageRef::Zero;
            let start = index;
            while index < pages.len() && changed(index) && (pages[index] == PageRef::Zero) == zero {
                index += 1;
            }
            let (from, to) = (start * PAGE_BYTES, index * PAGE_BYTES);
            if zero {
                punch_hole(&file, from as u64, (to - from) as u64, &memory[from..to])?;
            } else {
                file.write_all_at(&memory[from..to], from as u64)?;
            }
            written += index - start;
        }
        // Mapping needs the file to reach the end of memory (a hole at the end is not written).
        if file.metadata()?.len() < memory.len() as u64 {
            file.set_len(memory.len() as u64)?;
        }
        // Start writing back now, without waiting: the fdatasync before the next mapping then
        // has little left to do, and reports a writeback that failed meanwhile.
        if written > 0 {
            // SAFETY: sync_file_range on a file descriptor we own; no memory is passed.
            let rc = unsafe {
                libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE)
            };
            if rc != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        self.held = pages.iter().copied().map(Some).collect();
        Ok(written)
    }
}

/// Where [`MemoryImage::create`] makes a new image before renaming it into place.
fn unfinished(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".new");
    PathBuf::from(name)
}

/// Which pages of the first `count` hold any data (the rest lie in holes: zero, and not
/// worth reading). Where the filesystem cannot say, every page counts as data.
fn data_pages(file: &File, count: usize) -> io::Result<Vec<bool>> {
    let fd = file.as_raw_fd();
    let end = (count * PAGE_BYTES) as i64;
    let mut data = vec![false; count];
    let mut offset = 0i64;
    while offset < end {
        // SAFETY: lseek on a file descriptor we own.
        let start = unsafe { libc::lseek(fd, offset, libc::SEEK_DATA) };
        if start < 0 {
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::ENXIO) => break, // no data from `offset` on
                Some(libc::EINVAL) => return Ok(vec![true; count]),
                _ => return Err(err),
            }
        }
        if start >= end {
            break;
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, start, libc::SEEK_HOLE) };
        if hole < 0 {
            return Err(io::Error::last_os_error());
        }
        let first = start as usize / PAGE_BYTES;
        let last = (hole.min(end) as usize).div_ceil(PAGE_BYTES);
        data[first..last].iter_mut().for_each(|d| *d = true);
        offset = hole;
    }
    Ok(data)
}

/// Zeroes `len` bytes at `offset`: a hole where the filesystem can make one, else written
/// zeros (`zeros` is that many zero bytes).
fn punch_hole(file: &File, offset: u64, len: u64, zeros: &[u8]) -> io::Result<()> {
    // SAFETY: fallocate on a file descriptor we own.
    let rc = unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            offset as i64,
            len as i64,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) => file.write_all_at(zeros, offset),
        _ => Err(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dirty::tests::Mapping;
    use crate::page::PageHash;

    fn page_table(memory: &[u8]) -> Vec<PageRef> {
        memory
            .chunks(PAGE_BYTES)
            .map(|page| {
                if page.iter().all(|&b| b == 0) {
                    PageRef::Zero
                } else {
                    PageRef::Stored {
                        hash: PageHash::of(page),
                        fingerprint: fingerprint(page),
                    }
                }
            })
            .collect()
    }

    /// 200 pages (over the threshold for checking on all cores): some zero, the rest filled.
    fn state(seed: u8) -> Vec<u8> {
        let mut memory = vec![0u8; 200 * PAGE_BYTES];
        for (i, page) in memory.chunks_mut(PAGE_BYTES).enumerate() {
            if i % 3 != 0 {
                page.iter_mut()
                    .enumerate()
                    .for_each(|(j, b)| *b = (i + j) as u8 ^ seed);
            }
        }
        memory
    }

    /// An image of `memory` written at `w.mem` in a new temporary directory.
    fn written_image(memory: &[u8]) -> (tempfile::TempDir, PathBuf, MemoryImage) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.mem");
        let mut image = MemoryImage::create(&path).unwrap();
        image.write_changed(memory, &page_table(memory)).unwrap();
        (dir, path, image)
    }

    #[test]
    fn a_written_image_maps_back_with_nothing_to_repair() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.mem");
        let original = state(1);
        let pages = page_table(&original);
        let mut image = MemoryImage::create(&path).unwrap();
        assert_eq!(image.write_changed(&original, &pages).unwrap(), 200);
        // Nothing changed: nothing to write.
        assert_eq!(image.write_changed(&original, &pages).unwrap(), 0);
        // Zero pages are holes: a third of the file takes no space.
        let blocks = std::os::unix::fs::MetadataExt::blocks(&std::fs::metadata(&path).unwrap());
        assert!(
            blocks * 512 < (original.len() as u64) * 3 / 4,
            "{blocks} blocks"
        );

        let region_len = original.len();
        let region = Mapping::new(region_len);
        region.slice(region_len).fill(0xee); // what a fresh instance might hold: overwritten by the map
        let mut image = MemoryImage::open(&path).unwrap().expect("written above");
        let differ = unsafe { image.map_over(region.slice(region_len), &pages) }.unwrap();
        assert!(differ.is_empty(), "{differ:?}");
        assert_eq!(region.slice(region_len), &original[..]);
    }

    #[test]
    fn stale_torn_and_corrupt_pages_are_reported_and_writes_stay_private() {
        let old = state(1);
        let (_dir, path, image) = written_image(&old);
        drop(image);
        // The snapshot to restore is a later state: pages 1, 2 and 4 changed (4 became zero).
        let mut new = old.clone();
        new[PAGE_BYTES + 5] ^= 1;
        new[2 * PAGE_BYTES..3 * PAGE_BYTES].fill(7);
        new[4 * PAGE_BYTES..5 * PAGE_BYTES].fill(0);
        let pages = page_table(&new);
        // The file was also corrupted at page 10 and cut short in page 150.
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.write_all_at(&[0xff], 10 * PAGE_BYTES as u64 + 99)
            .unwrap();
        file.set_len(150 * PAGE_BYTES as u64 + 100).unwrap();
        drop(file);

        let region_len = new.len();
        let region = Mapping::new(region_len);
        let mut image = MemoryImage::open(&path).unwrap().expect("written above");
        let differ = unsafe { image.map_over(region.slice(region_len), &pages) }.unwrap();
        // Page 4 was non-zero and must be zero; 150..200 were cut (those that should be
        // zero, i % 3 == 0, are right anyway).
        let mut expected = vec![1, 2, 4, 10];
        expected.extend((150..200).filter(|i| i % 3 != 0));
        assert_eq!(differ, expected);
        // The caller repairs them from storage.
        let memory = region.slice(region_len);
        for &i in &differ {
            let range = i * PAGE_BYTES..(i + 1) * PAGE_BYTES;
            memory[range.clone()].copy_from_slice(&new[range]);
        }
        assert_eq!(memory, &new[..]);
        // Writes to the mapping never reach the file, and the next write_changed rewrites the
        // repaired pages (unknown in the file) and those written since.
        memory[20 * PAGE_BYTES] ^= 0x55;
        let now = memory.to_vec();
        let on_disk = std::fs::read(&path).unwrap();
        assert_ne!(on_disk[20 * PAGE_BYTES], now[20 * PAGE_BYTES]);
        let written = image.write_changed(&now, &page_table(&now)).unwrap();
        assert_eq!(written, differ.len() + 1);
        assert_eq!(std::fs::read(&path).unwrap(), now);
        // The mapping still reads the same bytes.
        assert_eq!(region.slice(region_len), &now[..]);
    }

    #[test]
    fn a_memory_larger_than_the_image_is_mapped_with_the_rest_reported() {
        let small = state(3);
        let (_dir, _path, mut image) = written_image(&small);
        let mut grown = small.clone();
        grown.extend(std::iter::repeat_n(9u8, 4 * PAGE_BYTES));
        grown.extend(std::iter::repeat_n(0u8, 4 * PAGE_BYTES));
        let pages = page_table(&grown);
        let region_len = grown.len();
        let region = Mapping::new(region_len);
        let differ = unsafe { image.map_over(region.slice(region_len), &pages) }.unwrap();
        assert_eq!(differ, vec![200, 201, 202, 203]);
        assert_eq!(&region.slice(region_len)[..small.len()], &small[..]);
    }

    #[test]
    fn the_kernel_records_writes_to_a_mapped_image() {
        let original = state(5);
        let pages = page_table(&original);
        let (_dir, _path, mut image) = written_image(&original);
        let region_len = original.len() + 8 * PAGE_BYTES;
        let region = Mapping::new(region_len);
        let memory = &mut region.slice(region_len)[..original.len()];
        assert!(unsafe { image.map_over(memory, &pages) }
            .unwrap()
            .is_empty());
        let Some(mut tracker) = crate::dirty::tests::tracker_for(memory) else {
            return;
        };
        tracker.take(memory).unwrap();
        assert!(
            tracker.take(memory).unwrap().is_empty(),
            "reads are not writes"
        );
        memory[5 * PAGE_BYTES + 3] ^= 1; // a page shared with the file: copied on write
        memory[6 * PAGE_BYTES] = 1; // a hole (page 6 is zero)
        let written = tracker.take(memory).unwrap();
        assert_eq!(written.iter().collect::<Vec<_>>(), vec![5, 6]);
        // Past the mapped image, memory grown later (anonymous) is tracked too.
        let grown = region.slice(region_len);
        grown[original.len() + PAGE_BYTES] = 4;
        let written = tracker.take(grown).unwrap();
        assert!(
            written.contains(201),
            "{:?}",
            written.iter().collect::<Vec<_>>()
        );
        assert!(!written.contains(5));
    }

    #[test]
    fn an_image_replaced_at_its_path_is_not_written_and_no_descriptor_is_held() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.mem");
        let memory = state(7);
        let pages = page_table(&memory);
        // Descriptors open on files in `dir` (other tests run alongside: count only ours).
        let open_fds = || {
            std::fs::read_dir("/proc/self/fd")
                .unwrap()
                .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
                .filter(|target| target.starts_with(dir.path()))
                .count()
        };
        assert_eq!(open_fds(), 0);
        let mut images: Vec<MemoryImage> = (0..50)
            .map(|i| MemoryImage::create(&dir.path().join(format!("{i}.mem"))).unwrap())
            .collect();
        for image in &mut images {
            image.write_changed(&memory, &pages).unwrap();
        }
        assert_eq!(open_fds(), 0, "images hold no file descriptor");

        let mut image = MemoryImage::create(&path).unwrap();
        image.write_changed(&memory, &pages).unwrap();
        // Another image put in its place (as a new instance of the worker does).
        let other = MemoryImage::create(&path).unwrap();
        std::fs::write(&path, b"another image").unwrap();
        drop(other);
        let mut changed = memory.clone();
        changed[3] ^= 1;
        let err = image
            .write_changed(&changed, &page_table(&changed))
            .unwrap_err();
        assert!(err.to_string().contains("replaced"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"another image");
    }

    #[test]
    fn memory_off_a_page_boundary_is_refused_and_left_alone() {
        let memory = state(2);
        let pages = page_table(&memory);
        let (_dir, _path, mut image) = written_image(&memory);
        let region_len = memory.len() + PAGE_BYTES;
        let region = Mapping::new(region_len);
        region.slice(region_len).fill(5);
        let shifted = &mut region.slice(region_len)[8..8 + memory.len()];
        let err = unsafe { image.map_over(shifted, &pages) }.unwrap_err();
        assert!(err.to_string().contains("page boundary"), "{err}");
        assert!(region.slice(region_len).iter().all(|&b| b == 5));
    }

    #[test]
    fn a_page_table_of_another_size_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut image = MemoryImage::create(&dir.path().join("w.mem")).unwrap();
        let region_len = 2 * PAGE_BYTES;
        let region = Mapping::new(region_len);
        let err =
            unsafe { image.map_over(region.slice(region_len), &[PageRef::Zero]) }.unwrap_err();
        assert!(err.to_string().contains("page table of 1 pages"), "{err}");
    }
}
