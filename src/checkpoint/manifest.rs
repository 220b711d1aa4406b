//! `manifest.json`: the size and CRC-32 of every file of a checkpoint, written last into the
//! temporary folder, so a checkpoint cut short or damaged later (a truncated copy, a bad disk)
//! is recognised before it is loaded, and `--resume auto` can pass over it to an intact one.
//!
//! Checkpoints written before manifests existed are checked by structure instead: `state.json`
//! parses and each safetensors file is as long as its header says. Either way the model's
//! weights must be finite.
use super::{CheckpointError, io};
use safetensors::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

pub const MANIFEST: &str = "manifest.json";

/// Every file of a checkpoint (but the manifest itself), by name.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Manifest {
    files: BTreeMap<String, FileEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct FileEntry {
    bytes: u64,
    /// CRC-32 (IEEE) of the content, 8 hex digits.
    crc32: String,
}

/// Writes `dir/manifest.json` for the files now in `dir`, read back from disk (what a later
/// reader will see, not what was meant to be written).
pub(super) fn write(dir: &Path) -> Result<(), CheckpointError> {
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(dir).map_err(io("listing", dir))? {
        let path = entry.map_err(io("listing", dir))?.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if name == MANIFEST || !path.is_file() {
            continue;
        }
        let (bytes, crc) = crc_of_file(&path)?;
        let crc32 = format!("{crc:08x}");
        files.insert(name.into_owned(), FileEntry { bytes, crc32 });
    }
    let json = serde_json::to_string_pretty(&Manifest { files }).expect("manifest serializes");
    super::write_synced(&dir.join(MANIFEST), json.as_bytes())
}

/// Checks the checkpoint in `dir` against its manifest (or, for an older checkpoint without
/// one, its structure) and that its model weights are finite; [`CheckpointError::Corrupt`]
/// says what is wrong.
pub fn verify(dir: &Path) -> Result<(), CheckpointError> {
    problem(dir).map_err(|reason| CheckpointError::Corrupt {
        dir: dir.to_path_buf(),
        reason,
    })
}

fn problem(dir: &Path) -> Result<(), String> {
    let manifest_path = dir.join(MANIFEST);
    if manifest_path.is_file() {
        let manifest: Manifest = std::fs::read_to_string(&manifest_path)
            .map_err(|e| e.to_string())
            .and_then(|text| serde_json::from_str(&text).map_err(|e| e.to_string()))
            .map_err(|e| format!("{MANIFEST} is unreadable ({e})"))?;
        for (name, want) in &manifest.files {
            check_file(&dir.join(name), name, want)?;
        }
    } else {
        // Written before manifests: the safetensors headers must match the files' lengths.
        for name in ["model.safetensors", "optimizer.safetensors"] {
            let bytes = std::fs::read(dir.join(name))
                .map_err(|e| format!("{name} cannot be read ({e})"))?;
            SafeTensors::deserialize(&bytes)
                .map_err(|e| format!("{name} is incomplete or damaged ({e:?})"))?;
        }
    }
    super::read_state(dir).map_err(|e| match e {
        CheckpointError::BadState { reason, .. } => format!("state.json: {reason}"),
        other => other.to_string(),
    })?;
    let bytes = std::fs::read(dir.join("model.safetensors"))
        .map_err(|e| format!("model.safetensors cannot be read ({e})"))?;
    match non_finite_tensor(&bytes) {
        Err(e) => Err(format!(
            "model.safetensors is incomplete or damaged ({e:?})"
        )),
        Ok(Some(name)) => Err(format!(
            "model.safetensors: `{name}` holds non-finite values (NaN or infinity)"
        )),
        Ok(None) => Ok(()),
    }
}

fn check_file(path: &Path, name: &str, want: &FileEntry) -> Result<(), String> {
    let len = std::fs::metadata(path)
        .map_err(|e| format!("{name} is missing ({e})"))?
        .len();
    if len != want.bytes {
        return Err(format!(
            "{name} is {len} bytes, the manifest says {} (cut short or overwritten)",
            want.bytes
        ));
    }
    let (_, crc) = crc_of_file(path).map_err(|e| e.to_string())?;
    if format!("{crc:08x}") != want.crc32 {
        return Err(format!(
            "{name} has CRC-32 {crc:08x}, the manifest says {} (its content is damaged)",
            want.crc32
        ));
    }
    Ok(())
}

/// The length and CRC-32 of a file, read in 1 MiB pieces.
fn crc_of_file(path: &Path) -> Result<(u64, u32), CheckpointError> {
    let mut file = std::fs::File::open(path).map_err(io("reading", path))?;
    let mut hasher = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(io("reading", path))?;
        if n == 0 {
            return Ok((total, hasher.finalize()));
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
}

/// The name of the first floating-point tensor in a safetensors file that holds a NaN or an
/// infinity, if any.
fn non_finite_tensor(bytes: &[u8]) -> Result<Option<String>, safetensors::SafeTensorError> {
    let file = SafeTensors::deserialize(bytes)?;
    let mut tensors = file.tensors();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(tensors
        .into_iter()
        .find(|(_, t)| !all_finite(t.dtype(), t.data()))
        .map(|(name, _)| name))
}

/// Whether every element is finite: the exponent bits are not all ones.
fn all_finite(dtype: Dtype, data: &[u8]) -> bool {
    match dtype {
        Dtype::F32 => data
            .chunks_exact(4)
            .all(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) & 0x7f80_0000 != 0x7f80_0000),
        Dtype::F64 => data
            .chunks_exact(8)
            .all(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")).is_finite()),
        Dtype::BF16 => data
            .chunks_exact(2)
            .all(|b| u16::from_le_bytes([b[0], b[1]]) & 0x7f80 != 0x7f80),
        Dtype::F16 => data
            .chunks_exact(2)
            .all(|b| u16::from_le_bytes([b[0], b[1]]) & 0x7c00 != 0x7c00),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_finite_values_are_found_in_every_float_kind() {
        let f32s = |v: f32| v.to_le_bytes().to_vec();
        assert!(all_finite(
            Dtype::F32,
            &[f32s(1.5), f32s(-0.0), f32s(f32::MAX)].concat()
        ));
        assert!(!all_finite(
            Dtype::F32,
            &[f32s(1.0), f32s(f32::NAN)].concat()
        ));
        assert!(!all_finite(Dtype::F32, &f32s(f32::NEG_INFINITY)));
        assert!(!all_finite(Dtype::F64, &f64::INFINITY.to_le_bytes()));
        // bf16 +inf = 0x7f80, f16 NaN = 0x7e00; 1.0 in each is finite.
        assert!(!all_finite(Dtype::BF16, &0x7f80u16.to_le_bytes()));
        assert!(all_finite(Dtype::BF16, &0x3f80u16.to_le_bytes()));
        assert!(!all_finite(Dtype::F16, &0x7e00u16.to_le_bytes()));
        assert!(all_finite(Dtype::F16, &0x3c00u16.to_le_bytes()));
        assert!(all_finite(Dtype::I64, &u64::MAX.to_le_bytes()));
    }
}
