//! The stream's pure functions: seeded hashes, the epoch's shard permutation, and the
//! fingerprint that ties a saved state to its shard list and ordering settings.
use super::StreamOptions;
use crate::data::spec::Shard;

/// The shard permutation of an epoch, identical on every rank (ranks then take every
/// world_size-th entry, so they cover the shards without overlap).
pub(super) fn epoch_order(n: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = (mix(seed, 0xE90C ^ epoch << 16, i as u64) % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    order
}

/// `seed` re-derived with `salt` (see [`super::StreamState::salt`]); `seed` itself for salt 0.
pub(crate) fn salted(seed: u64, salt: u64) -> u64 {
    match salt {
        0 => seed,
        salt => mix(seed, 0x0E1A_571C, salt),
    }
}

/// A stateless 64-bit hash of three words (splitmix64 finalizer rounds).
pub fn mix(a: u64, b: u64, c: u64) -> u64 {
    let mut z = a ^ b.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ c.wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    for _ in 0..2 {
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
    }
    z
}

/// The hash a saved state must match: the shard list and the ordering settings, rank and world
/// size included (an elastic resume restores each old rank with its own).
pub(super) fn fingerprint(shards: &[Shard], o: &StreamOptions) -> String {
    let mut text = String::new();
    for s in shards {
        text.push_str(&s.url());
        text.push('\0');
    }
    text.push_str(&format!(
        "{:?}/{}/{}/{}/{}\0",
        o.order, o.shuffle_buffer, o.seed, o.rank, o.world_size
    ));
    stable_hash(&text)
}

/// 64-bit FNV-1a of `text` as hex: stable across Rust versions and platforms, unlike
/// `DefaultHasher`, so hashes saved in checkpoints stay comparable.
pub fn stable_hash(text: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
    }
    format!("{h:016x}")
}
