//! A worker whose state lives in linear memory: a registry of heap buffers that it allocates,
//! frees, rewrites and grows. Deterministic apart from `now` (the one host call).
//!
//! The inputs for the instance-snapshot tests: `fill-mib` gives a worker a large, incompressible
//! memory, `touch` dirties a controlled share of it, `checksum` is the state digest to compare
//! after a restore.

use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

wit_bindgen::generate!({
    world: "golemw:memory/memory",
    path: ["../../../wit", "wit"],
    generate_all,
});

use exports::golemw::memory::api::Guest;

/// The granularity `touch` works in: an OS page.
const CHUNK: usize = 4096;
/// The granularity `touch-pages` works in: a wasm page.
const WASM_PAGE: usize = 65536;

/// The worker's state. No `HashMap`: its random seed would be a host call.
struct State {
    /// Bumped by every call that changes memory; seeds the byte streams.
    counter: u64,
    /// The buffers, by slot id; `None` is a freed slot.
    slots: Vec<Option<Vec<u8>>>,
}

static STATE: Mutex<State> = Mutex::new(State {
    counter: 0,
    slots: Vec::new(),
});

fn state() -> std::sync::MutexGuard<'static, State> {
    // panic = "abort": the lock is never poisoned.
    STATE.lock().unwrap()
}

/// xorshift64* (never seeded with 0).
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        // splitmix64 of the seed, so that consecutive seeds give unrelated streams.
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        Rng(if z == 0 { 0x2545_f491_4f6c_dd1d } else { z })
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Overwrites `bytes` with the stream (8 bytes per step).
    fn fill(&mut self, bytes: &mut [u8]) {
        let mut words = bytes.chunks_exact_mut(8);
        for word in &mut words {
            word.copy_from_slice(&self.next().to_le_bytes());
        }
        let rest = words.into_remainder();
        let last = self.next().to_le_bytes();
        rest.copy_from_slice(&last[..rest.len()]);
    }

    /// XORs the stream into `bytes` (so every byte changes with probability 255/256 and the
    /// result still depends on what was there).
    fn xor(&mut self, bytes: &mut [u8]) {
        let mut words = bytes.chunks_exact_mut(8);
        for word in &mut words {
            let value = u64::from_le_bytes(word.try_into().unwrap()) ^ self.next();
            word.copy_from_slice(&value.to_le_bytes());
        }
        let rest = words.into_remainder();
        let last = self.next().to_le_bytes();
        for (byte, x) in rest.iter_mut().zip(last) {
            *byte ^= x;
        }
    }
}

/// A hand-written 64-bit hash, word at a time: FNV-1a's multiply plus an xor-shift for the high
/// bits. Every step is a bijection of the state for a given input word, so changing any one
/// word of an input of the same length always changes the result.
struct Hasher(u64);

impl Hasher {
    const PRIME: u64 = 0x0000_0100_0000_01b3;

    fn new() -> Hasher {
        Hasher(0xcbf2_9ce4_8422_2325)
    }

    fn word(&mut self, word: u64) {
        let mut h = (self.0 ^ word).wrapping_mul(Self::PRIME);
        h ^= h >> 29;
        self.0 = h;
    }

    fn bytes(&mut self, bytes: &[u8]) {
        self.word(bytes.len() as u64);
        let mut words = bytes.chunks_exact(8);
        for word in &mut words {
            self.word(u64::from_le_bytes(word.try_into().unwrap()));
        }
        let rest = words.remainder();
        if !rest.is_empty() {
            let mut last = [0u8; 8];
            last[..rest.len()].copy_from_slice(rest);
            self.word(u64::from_le_bytes(last));
        }
    }

    fn finish(&self) -> u64 {
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h
    }
}

impl State {
    /// A new buffer of `bytes` bytes from the stream seeded by the bumped counter, in the
    /// lowest free slot.
    fn alloc(&mut self, bytes: usize) -> u32 {
        self.counter += 1;
        let mut buffer = vec![0u8; bytes];
        Rng::new(self.counter).fill(&mut buffer);
        let slot = match self.slots.iter().position(Option::is_none) {
            Some(slot) => {
                self.slots[slot] = Some(buffer);
                slot
            }
            None => {
                self.slots.push(Some(buffer));
                self.slots.len() - 1
            }
        };
        slot as u32
    }

    fn live_bytes(&self) -> u64 {
        self.slots.iter().flatten().map(|b| b.len() as u64).sum()
    }
}

struct Memory;

/// Rewrites `percent`% of the buffers' `chunk`-aligned pieces of linear memory (see `touch`).
fn touch_chunks(percent: u32, chunk: usize) -> u64 {
    let percent = percent.min(100) as u64;
    let mut state = state();
    state.counter += 1;
    let mut rng = Rng::new(state.counter);
    let mut hash = Hasher::new();
    hash.word(state.counter);
    // `n` numbers the chunks over all buffers; chunk n is selected when
    // floor((n + 1) p / 100) > floor(n p / 100): exactly floor(N p / 100) of N chunks,
    // evenly spread (every chunk at 100, every 10th at 10).
    let mut n: u64 = 0;
    for buffer in state.slots.iter_mut().flatten() {
        let start = buffer.as_ptr() as usize;
        let mut offset = 0;
        while offset < buffer.len() {
            // Up to the next `chunk` boundary of linear memory.
            let end = ((start + offset) / chunk + 1) * chunk - start;
            let end = end.min(buffer.len());
            if (n + 1) * percent / 100 > n * percent / 100 {
                let piece = &mut buffer[offset..end];
                rng.xor(piece);
                hash.bytes(piece);
            }
            n += 1;
            offset = end;
        }
    }
    hash.finish()
}

impl Guest for Memory {
    fn alloc(kib: u32) -> u32 {
        state().alloc(kib as usize * 1024)
    }

    fn free(slot: u32) -> bool {
        let mut state = state();
        match state.slots.get_mut(slot as usize) {
            Some(buffer @ Some(_)) => {
                *buffer = None;
                state.counter += 1;
                true
            }
            _ => false,
        }
    }

    fn touch(percent: u32) -> u64 {
        touch_chunks(percent, CHUNK)
    }

    fn touch_pages(percent: u32) -> u64 {
        touch_chunks(percent, WASM_PAGE)
    }

    fn fill_mib(mib: u32) {
        const MIB: usize = 1024 * 1024;
        let target = mib as u64 * MIB as u64;
        let mut state = state();
        let mut live = state.live_bytes();
        while live < target {
            state.alloc(MIB);
            live += MIB as u64;
        }
    }

    fn checksum() -> u64 {
        let state = state();
        let mut hash = Hasher::new();
        hash.word(state.counter);
        hash.word(state.slots.len() as u64);
        for slot in &state.slots {
            match slot {
                None => hash.word(u64::MAX),
                Some(buffer) => hash.bytes(buffer),
            }
        }
        hash.finish()
    }

    fn memory_bytes() -> u64 {
        core::arch::wasm32::memory_size(0) as u64 * 65536
    }

    fn live_bytes() -> u64 {
        state().live_bytes()
    }

    fn now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("wall clock before the Unix epoch")
            .as_nanos() as u64
    }

    fn clocks(n: u32) -> u64 {
        (0..n).fold(0, |acc, _| acc ^ Self::now())
    }

    fn jump(to: u64) {
        golem::api::host::set_oplog_index(to);
    }
}

export!(Memory);
