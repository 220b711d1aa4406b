//! SentencePiece's precompiled character map, checked before `spm_precompiled` runs it.
use super::MAX_CHARSMAP;
use std::collections::HashSet;

/// Walks every node of the character map's double-array trie, as `Precompiled` would while
/// encoding any text, and fails where that would read outside the array or the normalized
/// strings. Layout: the trie's byte length (u32, little endian), its u32 units, the strings.
pub(super) fn check_charsmap(map: &[u8]) -> Result<(), String> {
    let bad = |why: String| format!("normalizer_spec.precompiled_charsmap {why}");
    if map.len() > MAX_CHARSMAP {
        return Err(bad(format!(
            "is {} bytes; at most {MAX_CHARSMAP} are read",
            map.len()
        )));
    }
    if map.len() < 4 {
        return Err(bad("is shorter than its 4-byte header".into()));
    }
    let trie_len = u32::from_le_bytes([map[0], map[1], map[2], map[3]]) as usize;
    if trie_len % 4 != 0 || trie_len == 0 || trie_len > map.len() - 4 {
        return Err(bad(format!(
            "says its trie is {trie_len} bytes, but it holds {} after the header",
            map.len() - 4
        )));
    }
    let units: Vec<usize> = map[4..4 + trie_len]
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    let normalized = std::str::from_utf8(&map[4 + trie_len..])
        .map_err(|_| bad("has normalized strings that are not UTF-8".into()))?;
    // Darts-clone's unit layout, as spm_precompiled reads it.
    let offset = |u: usize| (u >> 10) << ((u & (1 << 9)) >> 6);
    let label = |u: usize| u & ((1 << 31) | 0xFF);
    let has_leaf = |u: usize| (u >> 8) & 1 == 1;
    let value = |u: usize| u & ((1 << 31) - 1);
    let outside = || bad("has a trie that points outside itself".into());
    let mut todo = vec![offset(units[0])];
    let mut seen = HashSet::new();
    while let Some(node) = todo.pop() {
        for c in 1..=255usize {
            let at = node ^ c;
            let unit = *units.get(at).ok_or_else(outside)?;
            if label(unit) != c {
                continue;
            }
            let child = at ^ offset(unit);
            if has_leaf(unit) {
                let start = value(*units.get(child).ok_or_else(outside)?);
                if !normalized.is_char_boundary(start) {
                    return Err(outside());
                }
            }
            if seen.insert(child) {
                todo.push(child);
            }
        }
    }
    Ok(())
}
