//! Which pages of a memory were written since we last looked, told by the kernel.
//!
//! Without it, capture and in-place rewind read every page to find the few that changed
//! (64 MiB: several milliseconds of memory bandwidth, whatever the change). Linux 6.7+ can
//! say instead: the range is registered with a userfaultfd in *asynchronous* write-protect
//! mode, so the first write to a protected 4 KiB page only clears its protection bit (no fault
//! reaches user space, no thread waits), and the `PAGEMAP_SCAN` ioctl on `/proc/self/pagemap`
//! lists the unprotected ("written") pages and protects them again in one walk of the page
//! tables.
//!
//! Every way this process writes memory goes through the page tables, system calls writing
//! into a buffer included, so no write is missed. Linear memory is never dropped with
//! `madvise` (which would zero a page without a write); a memory moved by growth is detected
//! by its base address. Pages reported that were not really changed cost only a comparison.
//!
//! Where the kernel lacks any of this (or a sandbox forbids userfaultfd), [`DirtyTracker::new`]
//! fails and callers compare fingerprints instead.

use crate::page::PAGE_BYTES;

/// The smallest page size of the platforms we run on; the kernel tracks at this grain.
pub(crate) const OS_PAGE_BYTES: usize = 4096;

/// A set of snapshot page indexes (64 KiB pages of linear memory).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PageSet {
    words: Vec<u64>,
    count: usize,
}

impl PageSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds page `index`.
    pub fn insert(&mut self, index: usize) {
        let word = index / 64;
        if word >= self.words.len() {
            self.words.resize(word + 1, 0);
        }
        let bit = 1u64 << (index % 64);
        if self.words[word] & bit == 0 {
            self.words[word] |= bit;
            self.count += 1;
        }
    }

    /// Adds pages `start..end`.
    pub fn insert_range(&mut self, start: usize, end: usize) {
        for index in start..end {
            self.insert(index);
        }
    }

    pub fn contains(&self, index: usize) -> bool {
        self.words
            .get(index / 64)
            .is_some_and(|w| w & (1u64 << (index % 64)) != 0)
    }

    /// How many pages are in the set.
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The pages in ascending order.
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.words.iter().enumerate().flat_map(|(w, bits)| {
            let mut bits = *bits;
            std::iter::from_fn(move || {
                if bits == 0 {
                    return None;
                }
                let bit = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                Some(w * 64 + bit)
            })
        })
    }
}

/// Why the kernel cannot track writes here.
#[derive(Debug, thiserror::Error)]
#[error("write tracking is unavailable: {reason}")]
pub struct Unavailable {
    pub reason: String,
    /// The kernel has the feature but this process may not use it (a seccomp filter or
    /// sysctl refused userfaultfd), as opposed to a kernel without it.
    pub forbidden: bool,
}

impl Unavailable {
    fn new(reason: impl Into<String>) -> Self {
        Unavailable {
            reason: reason.into(),
            forbidden: false,
        }
    }
}

/// The memory a tracker watches moved or shrank, or the kernel refused to scan or register
/// it: its reports no longer apply.
#[derive(Clone, Copy, Debug, thiserror::Error)]
#[error("write tracking of the memory at {was_base:#x} ({was_len} bytes) was lost")]
pub struct TrackingLost {
    pub was_base: usize,
    pub was_len: usize,
}

/// Whether this process can track writes (tries the kernel once).
pub fn available() -> Result<(), Unavailable> {
    imp::Tracker::new().map(|_| ())
}

/// Tracks writes to one memory mapping. Until the first [`DirtyTracker::take`] every page
/// counts as written (nothing is protected yet).
pub struct DirtyTracker {
    inner: imp::Tracker,
    base: usize,
    len: usize,
}

impl DirtyTracker {
    /// Starts tracking `memory`, which must start at an OS page boundary and be a whole number
    /// of 64 KiB pages (linear memory is both).
    pub fn new(memory: &[u8]) -> Result<Self, Unavailable> {
        let base = memory.as_ptr() as usize;
        if !base.is_multiple_of(OS_PAGE_BYTES) || !memory.len().is_multiple_of(PAGE_BYTES) {
            return Err(Unavailable::new("memory is not page aligned"));
        }
        let inner = imp::Tracker::new()?;
        if !memory.is_empty() {
            inner.register(base, memory.len())?;
        }
        Ok(DirtyTracker {
            inner,
            base,
            len: memory.len(),
        })
    }

    /// The pages of `memory` (the same mapping, possibly grown) written since the last call,
    /// or since [`DirtyTracker::new`] for the first; protects them again, so the next call
    /// reports only later writes. Pages added by growth are reported as written.
    pub fn take(&mut self, memory: &[u8]) -> Result<PageSet, TrackingLost> {
        let base = memory.as_ptr() as usize;
        let lost = TrackingLost {
            was_base: self.base,
            was_len: self.len,
        };
        if base != self.base || memory.len() < self.len || !memory.len().is_multiple_of(PAGE_BYTES)
        {
            return Err(lost);
        }
        let mut written = PageSet::new();
        if self.len > 0 {
            self.inner
                .scan_and_protect(self.base, self.len, |start, end| {
                    let first = (start - self.base) / PAGE_BYTES;
                    let last = (end - 1 - self.base) / PAGE_BYTES;
                    written.insert_range(first, last + 1);
                })
                .map_err(|_| lost)?;
        }
        if memory.len() > self.len {
            let grown = memory.len() - self.len;
            // The kernel cannot track what is not registered: register the growth, and report
            // it written this once (its protection starts with the next scan).
            let registered = self.inner.register(self.base + self.len, grown);
            written.insert_range(self.len / PAGE_BYTES, memory.len() / PAGE_BYTES);
            if registered.is_err() {
                return Err(lost);
            }
            // Written now means "since registration": protect what is already there.
            self.inner
                .scan_and_protect(self.base + self.len, grown, |_, _| {})
                .map_err(|_| lost)?;
            self.len = memory.len();
        }
        Ok(written)
    }
}

#[cfg(target_os = "linux")]
mod imp {
    //! userfaultfd (async write-protect) + PAGEMAP_SCAN. Constants from the kernel's uapi
    //! headers (linux/userfaultfd.h, linux/fs.h); they are the same on every architecture.

    use std::fs::File;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::sync::OnceLock;

    use super::Unavailable;

    const UFFD_USER_MODE_ONLY: libc::c_int = 1;
    const UFFD_API: u64 = 0xAA;
    const UFFD_FEATURE_WP_ASYNC: u64 = 1 << 15;
    const UFFDIO_API: libc::c_ulong = 0xC018_AA3F;
    const UFFDIO_REGISTER: libc::c_ulong = 0xC020_AA00;
    const UFFDIO_REGISTER_MODE_WP: u64 = 1 << 1;

    const PAGEMAP_SCAN: libc::c_ulong = 0xC060_6610;
    const PM_SCAN_WP_MATCHING: u64 = 1 << 0;
    const PM_SCAN_CHECK_WPASYNC: u64 = 1 << 1;
    const PAGE_IS_WRITTEN: u64 = 1 << 1;

    #[repr(C)]
    struct UffdioApi {
        api: u64,
        features: u64,
        ioctls: u64,
    }

    #[repr(C)]
    struct UffdioRegister {
        start: u64,
        len: u64,
        mode: u64,
        ioctls: u64,
    }

    #[repr(C)]
    struct PmScanArg {
        size: u64,
        flags: u64,
        start: u64,
        end: u64,
        walk_end: u64,
        vec: u64,
        vec_len: u64,
        max_pages: u64,
        category_inverted: u64,
        category_mask: u64,
        category_anyof_mask: u64,
        return_mask: u64,
    }

    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct PageRegion {
        start: u64,
        end: u64,
        categories: u64,
    }

    pub struct Tracker {
        uffd: &'static OwnedFd,
    }

    fn os_error(what: &str) -> Unavailable {
        let error = std::io::Error::last_os_error();
        Unavailable {
            forbidden: matches!(error.raw_os_error(), Some(libc::EPERM | libc::EACCES)),
            reason: format!("{what}: {error}"),
        }
    }

    /// `/proc/self/pagemap`, opened once per process.
    fn pagemap() -> Result<&'static File, Unavailable> {
        static PAGEMAP: OnceLock<Result<File, String>> = OnceLock::new();
        PAGEMAP
            .get_or_init(|| File::open("/proc/self/pagemap").map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|e| Unavailable::new(format!("opening /proc/self/pagemap: {e}")))
    }

    /// One userfaultfd for the whole process. In asynchronous write-protect mode it never
    /// delivers an event, so every tracked memory can share it, and a process with thousands
    /// of active workers spends one descriptor, not thousands. A memory's registration ends
    /// when the memory is unmapped (a tracker dropped before that leaves it registered, which
    /// a later tracker of the same memory reuses).
    fn shared_uffd() -> Result<&'static OwnedFd, Unavailable> {
        static UFFD: OnceLock<Result<OwnedFd, (String, bool)>> = OnceLock::new();
        UFFD.get_or_init(|| open_uffd().map_err(|e| (e.reason, e.forbidden)))
            .as_ref()
            .map_err(|(reason, forbidden)| Unavailable {
                reason: reason.clone(),
                forbidden: *forbidden,
            })
    }

    fn open_uffd() -> Result<OwnedFd, Unavailable> {
        // User-mode-only needs no privilege; async write-protect never delivers a fault
        // anyway, so nothing is lost by it.
        let flags = libc::O_CLOEXEC | libc::O_NONBLOCK | UFFD_USER_MODE_ONLY;
        // SAFETY: a plain system call; the result is a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, flags) };
        if fd < 0 {
            return Err(os_error("userfaultfd"));
        }
        // SAFETY: `fd` is a descriptor we own from here on.
        let uffd = unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) };
        let mut api = UffdioApi {
            api: UFFD_API,
            features: UFFD_FEATURE_WP_ASYNC,
            ioctls: 0,
        };
        // SAFETY: UFFDIO_API reads and writes a `uffdio_api`, which `api` is.
        if unsafe { libc::ioctl(uffd.as_raw_fd(), UFFDIO_API, &mut api) } != 0 {
            return Err(os_error("userfaultfd with asynchronous write-protect"));
        }
        Ok(uffd)
    }

    impl Tracker {
        pub fn new() -> Result<Self, Unavailable> {
            pagemap()?;
            Ok(Tracker {
                uffd: shared_uffd()?,
            })
        }

        pub fn register(&self, start: usize, len: usize) -> Result<(), Unavailable> {
            let mut register = UffdioRegister {
                start: start as u64,
                len: len as u64,
                mode: UFFDIO_REGISTER_MODE_WP,
                ioctls: 0,
            };
            // SAFETY: UFFDIO_REGISTER reads and writes a `uffdio_register`. Registering only
            // changes how write faults in the range are handled, never the memory's contents.
            if unsafe { libc::ioctl(self.uffd.as_raw_fd(), UFFDIO_REGISTER, &mut register) } != 0 {
                return Err(os_error("registering memory for write tracking"));
            }
            Ok(())
        }

        /// Calls `written(start, end)` for each run of written 4 KiB pages in the range and
        /// write-protects them again.
        pub fn scan_and_protect(
            &self,
            start: usize,
            len: usize,
            mut written: impl FnMut(usize, usize),
        ) -> Result<(), Unavailable> {
            let fd = pagemap()?.as_raw_fd();
            let end = (start + len) as u64;
            let mut regions = [PageRegion::default(); 256];
            let mut from = start as u64;
            while from < end {
                let mut arg = PmScanArg {
                    size: std::mem::size_of::<PmScanArg>() as u64,
                    flags: PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC,
                    start: from,
                    end,
                    walk_end: 0,
                    vec: regions.as_mut_ptr() as u64,
                    vec_len: regions.len() as u64,
                    max_pages: 0,
                    category_inverted: 0,
                    category_mask: PAGE_IS_WRITTEN,
                    category_anyof_mask: 0,
                    return_mask: PAGE_IS_WRITTEN,
                };
                // SAFETY: PAGEMAP_SCAN reads `arg` and writes at most `vec_len` regions into
                // `regions`, which outlives the call. It only changes page-table protection
                // bits of our own registered range.
                let found = unsafe { libc::ioctl(fd, PAGEMAP_SCAN, &mut arg) };
                if found < 0 {
                    return Err(os_error("PAGEMAP_SCAN"));
                }
                for region in &regions[..found as usize] {
                    written(region.start as usize, region.end as usize);
                }
                if arg.walk_end <= from {
                    return Err(Unavailable::new("PAGEMAP_SCAN made no progress"));
                }
                from = arg.walk_end;
            }
            Ok(())
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    use super::Unavailable;

    pub struct Tracker;

    impl Tracker {
        pub fn new() -> Result<Self, Unavailable> {
            Err(Unavailable::new("only Linux reports written pages"))
        }

        pub fn register(&self, _start: usize, _len: usize) -> Result<(), Unavailable> {
            unreachable!("no tracker exists off Linux")
        }

        pub fn scan_and_protect(
            &self,
            _start: usize,
            _len: usize,
            _written: impl FnMut(usize, usize),
        ) -> Result<(), Unavailable> {
            unreachable!("no tracker exists off Linux")
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
pub(crate) mod tests {
    use super::*;

    /// An anonymous private mapping, like Wasmer's linear memory.
    pub(crate) struct Mapping {
        ptr: *mut u8,
        len: usize,
    }

    impl Mapping {
        pub(crate) fn new(len: usize) -> Self {
            // SAFETY: a fresh anonymous mapping; checked below.
            let ptr = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            assert_ne!(ptr, libc::MAP_FAILED);
            Mapping {
                ptr: ptr as *mut u8,
                len,
            }
        }

        #[allow(clippy::mut_from_ref)]
        pub(crate) fn slice(&self, len: usize) -> &mut [u8] {
            assert!(len <= self.len);
            // SAFETY: within our mapping; tests use one slice at a time.
            unsafe { std::slice::from_raw_parts_mut(self.ptr, len) }
        }
    }

    impl Drop for Mapping {
        fn drop(&mut self) {
            // SAFETY: unmapping what `new` mapped.
            unsafe { libc::munmap(self.ptr as *mut libc::c_void, self.len) };
        }
    }

    /// Whether this kernel is new enough (6.7) that tracking must work.
    fn kernel_supports_tracking() -> bool {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
        let mut parts = release.trim().split(['.', '-']);
        let major: u32 = parts.next().unwrap().parse().unwrap();
        let minor: u32 = parts.next().unwrap().parse().unwrap();
        (major, minor) >= (6, 7)
    }

    /// The tracker, or None where the kernel lacks the feature or the system forbids it
    /// (then `new` must have said why; the runtime falls back to fingerprints).
    pub(crate) fn tracker_for(memory: &[u8]) -> Option<DirtyTracker> {
        match DirtyTracker::new(memory) {
            Ok(tracker) => Some(tracker),
            Err(err) => {
                assert!(
                    err.forbidden || !kernel_supports_tracking(),
                    "this kernel should track writes: {err}"
                );
                assert!(!err.reason.is_empty());
                eprintln!("write tracking not tested here: {err}");
                None
            }
        }
    }

    #[test]
    fn reports_exactly_the_pages_written_since_the_last_take() {
        let mapping = Mapping::new(32 * PAGE_BYTES);
        let memory = mapping.slice(16 * PAGE_BYTES);
        // Some pages populated before tracking starts, some never touched.
        memory[..8 * PAGE_BYTES].fill(1);
        let Some(mut tracker) = tracker_for(memory) else {
            return;
        };
        let first = tracker.take(memory).unwrap();
        assert!(
            (0..8).all(|p| first.contains(p)),
            "before the first take everything present counts as written"
        );
        assert!(tracker.take(memory).unwrap().is_empty(), "nothing written");
        memory[3 * PAGE_BYTES + 100] = 7; // a populated page
        memory[12 * PAGE_BYTES + 5] = 9; // a page never touched before
        memory[15 * PAGE_BYTES - 1] = 2; // the last byte of page 14
                                         // A read is not a write (even of a page never touched, which maps the zero page).
                                         // SAFETY: reading bytes of our own mapping.
        unsafe {
            std::ptr::read_volatile(memory.as_ptr().add(10 * PAGE_BYTES + 64));
            std::ptr::read_volatile(memory.as_ptr().add(2 * PAGE_BYTES));
        }
        let written = tracker.take(memory).unwrap();
        assert_eq!(written.iter().collect::<Vec<_>>(), vec![3, 12, 14]);
        assert!(tracker.take(memory).unwrap().is_empty());

        // A write by the kernel on our behalf (read(2) into the buffer) is reported too.
        let mut fds = [0; 2];
        // SAFETY: pipe fills two descriptors, closed below.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        let data = [42u8; 16];
        // SAFETY: writing from and reading into buffers we own, of the lengths given.
        unsafe {
            assert_eq!(libc::write(fds[1], data.as_ptr() as *const _, 16), 16);
            let into = memory.as_mut_ptr().add(5 * PAGE_BYTES + 4096);
            assert_eq!(libc::read(fds[0], into as *mut _, 16), 16);
            libc::close(fds[0]);
            libc::close(fds[1]);
        }
        assert_eq!(
            tracker.take(memory).unwrap().iter().collect::<Vec<_>>(),
            vec![5]
        );
    }

    #[test]
    fn growth_is_reported_then_tracked() {
        let mapping = Mapping::new(16 * PAGE_BYTES);
        let Some(mut tracker) = tracker_for(mapping.slice(4 * PAGE_BYTES)) else {
            return;
        };
        tracker.take(mapping.slice(4 * PAGE_BYTES)).unwrap();
        let grown = mapping.slice(8 * PAGE_BYTES);
        grown[6 * PAGE_BYTES] = 1;
        let written = tracker.take(grown).unwrap();
        assert_eq!(written.iter().collect::<Vec<_>>(), vec![4, 5, 6, 7]);
        assert!(tracker.take(grown).unwrap().is_empty());
        grown[7 * PAGE_BYTES + 9] = 3;
        grown[PAGE_BYTES] = 3;
        assert_eq!(
            tracker.take(grown).unwrap().iter().collect::<Vec<_>>(),
            vec![1, 7]
        );
        // Another mapping, or a smaller one, is not what was tracked.
        assert!(tracker.take(mapping.slice(2 * PAGE_BYTES)).is_err());
        let other = Mapping::new(8 * PAGE_BYTES);
        assert!(tracker.take(other.slice(8 * PAGE_BYTES)).is_err());
    }

    #[test]
    fn memory_that_is_not_whole_pages_is_refused_with_the_reason() {
        let mapping = Mapping::new(4 * PAGE_BYTES);
        let memory = mapping.slice(4 * PAGE_BYTES);
        for bad in [&memory[8..PAGE_BYTES + 8], &memory[..PAGE_BYTES + 1]] {
            let err = DirtyTracker::new(bad).err().expect("refused");
            assert!(err.reason.contains("not page aligned"), "{err}");
            assert!(!err.forbidden);
        }
    }

    #[test]
    fn trackers_share_one_descriptor_and_a_memory_can_be_tracked_again() {
        let Some(_) = tracker_for(Mapping::new(PAGE_BYTES).slice(PAGE_BYTES)) else {
            return;
        };
        let open_fds = || std::fs::read_dir("/proc/self/fd").unwrap().count();
        let before = open_fds();
        let mappings: Vec<Mapping> = (0..200).map(|_| Mapping::new(2 * PAGE_BYTES)).collect();
        let trackers: Vec<DirtyTracker> = mappings
            .iter()
            .map(|m| DirtyTracker::new(m.slice(2 * PAGE_BYTES)).unwrap())
            .collect();
        // Other tests may open descriptors meanwhile; 200 trackers must not each hold one.
        assert!(open_fds() < before + 50, "{} -> {}", before, open_fds());
        drop(trackers);
        // A memory whose tracker was dropped is tracked again by a new one.
        let memory = mappings[7].slice(2 * PAGE_BYTES);
        let mut again = DirtyTracker::new(memory).unwrap();
        again.take(memory).unwrap();
        memory[PAGE_BYTES + 3] = 1;
        assert_eq!(
            again.take(memory).unwrap().iter().collect::<Vec<_>>(),
            vec![1]
        );
    }

    #[test]
    fn page_set_counts_and_iterates_in_order() {
        let mut set = PageSet::new();
        set.insert(130);
        set.insert(2);
        set.insert(2);
        set.insert_range(63, 66);
        assert_eq!(set.len(), 5);
        assert_eq!(set.iter().collect::<Vec<_>>(), vec![2, 63, 64, 65, 130]);
        assert!(set.contains(64) && !set.contains(66));
    }
}
