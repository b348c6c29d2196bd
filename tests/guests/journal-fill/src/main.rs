//! Fills 64 MiB of heap with pseudo-random (incompressible) bytes, waits for a line on stdin,
//! then prints a checksum of the 64 MiB and exits.
//!
//! The benchmarks run it under `wasmer run` with a writable journal: Wasmer snapshots the
//! process at its first read of stdin (memory and stack), and a second `wasmer run` restores
//! that snapshot from the journal, reads the line and prints the checksum, without filling
//! again. The checksum shows that the 64 MiB came back. It matches the `memory` guest's
//! `fill-mib 64` in size and incompressibility, so golemw and Wasmer restore the same state.

use std::io::BufRead;

const MIB: usize = 1024 * 1024;
const FILL_MIB: usize = 64;

fn main() {
    let mut memory = vec![0u8; FILL_MIB * MIB];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for chunk in memory.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    println!("filled {FILL_MIB} MiB");
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .expect("reading stdin");
    // FNV-1a over 64-bit words: every byte of the 64 MiB counts.
    let mut hash: u64 = 0xCBF2_9CE4_8422_2325;
    for word in memory.chunks_exact(8) {
        hash ^= u64::from_le_bytes(word.try_into().expect("8 bytes"));
        hash = hash.wrapping_mul(0x0100_0000_01B3);
    }
    println!("checksum {hash:016x}");
}
