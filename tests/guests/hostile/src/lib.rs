//! A guest that misbehaves on request (endless loops, output floods, memory bombs), beside a
//! well-behaved counter.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

wit_bindgen::generate!({
    world: "golemw:hostile/hostile",
    path: ["../../../wit", "wit"],
});

use exports::golemw::hostile::api::Guest;

static TOTAL: AtomicU64 = AtomicU64::new(0);

struct Hostile;

impl Guest for Hostile {
    fn add(n: u64) -> u64 {
        TOTAL.fetch_add(n, Ordering::SeqCst) + n
    }

    fn spin() -> u64 {
        let mut x = TOTAL.load(Ordering::Relaxed);
        loop {
            // Opaque to the optimiser, so the loop is not removed.
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
    }

    fn spin_with_clock() -> u64 {
        let mut x = 0u64;
        loop {
            let now = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0);
            x = std::hint::black_box(x ^ now);
        }
    }

    fn exit_with(code: u32) {
        std::process::exit(code as i32)
    }

    fn flood(mib: u32) {
        let chunk = vec![b'x'; 64 << 10];
        let mut out = std::io::stdout();
        for _ in 0..(u64::from(mib) * 16) {
            let _ = out.write_all(&chunk);
        }
        let _ = out.flush();
    }

    fn grow(pages: u32) -> u32 {
        let before = core::arch::wasm32::memory_grow(0, pages as usize);
        if before == usize::MAX {
            return u32::MAX;
        }
        let base = before * 65536;
        for page in 0..pages as usize {
            // SAFETY: the pages were just added to linear memory; nothing else uses them.
            unsafe { std::ptr::write_volatile((base + page * 65536) as *mut u8, 1) };
        }
        core::arch::wasm32::memory_size(0) as u32
    }

    fn recurse(depth: u32) -> u32 {
        if depth == 0 {
            return 0;
        }
        std::hint::black_box(Self::recurse(depth - 1)) + 1
    }
}

export!(Hostile);
