//! A small, stable, fast hash for natural keys and per-symbol maps.
//!
//! Stability matters: dedupe keys are checkpointed and compared after a restart, so the hash
//! must not change between runs or toolchains the way `std`'s unspecified default may.

use std::hash::{BuildHasherDefault, Hasher};

/// FxHash-style multiply-rotate hasher (the rustc hasher), stable across runs.
#[derive(Default, Clone, Copy, Debug)]
pub struct StableHasher(u64);

const K: u64 = 0x517c_c1b7_2722_0a95;

impl Hasher for StableHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut b = [0u8; 8];
            b.copy_from_slice(c);
            self.write_u64(u64::from_le_bytes(b));
        }
        for &b in chunks.remainder() {
            self.write_u64(u64::from(b));
        }
        self.write_u64(bytes.len() as u64);
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(K);
    }

    fn finish(&self) -> u64 {
        // Final avalanche (splitmix64) so that similar keys spread over the whole range.
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// Build-hasher for maps keyed by symbol.
pub type StableBuild = BuildHasherDefault<StableHasher>;

/// Hashes a sequence of byte strings and integers with field separation.
pub fn stable_hash(parts: &[&[u8]], ints: &[i64]) -> u64 {
    let mut h = StableHasher::default();
    for p in parts {
        h.write(p);
    }
    for &i in ints {
        h.write_u64(i as u64);
    }
    h.finish()
}
