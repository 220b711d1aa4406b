//! PyTorch weights files (`pytorch_model.bin`, `open_clip_pytorch_model.bin`, `*.pt`, `*.pth`)
//! read without running Python: the zip layout `torch.save` writes since PyTorch 1.6
//! (`ARCHIVE/data.pkl` + one `ARCHIVE/data/KEY` entry per storage), its pickle through the
//! restricted reader of `super::pickle`, each storage read once and every tensor made as a view
//! of it (offset and strides as saved, so tensors sharing a storage share it here too).
//!
//! Sizes are checked before anything is allocated: a storage's entry must hold exactly the bytes
//! its element count says, and a view must lie inside its storage. A state dict nested in a
//! training checkpoint (`state_dict`, `model`, `module`) is found, and DDP's `module.` prefix
//! removed, as the reference loaders do.
use super::pickle::{self, Global, Value};
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};

/// Weights file names, in the order a folder's are preferred after its safetensors.
pub const PICKLE_NAMES: [&str; 2] = ["pytorch_model.bin", "open_clip_pytorch_model.bin"];

/// Why a PyTorch file was not read.
#[derive(Debug, thiserror::Error)]
pub enum TorchFileError {
    #[error(
        "{}: not a zip archive — written by PyTorch before 1.6, or with \
         _use_new_zipfile_serialization=False; load it with torch and save it again (torch.save \
         with a current PyTorch, or safetensors.torch.save_file)",
        path.display()
    )]
    Legacy { path: PathBuf },
    #[error("{}: {what}", path.display())]
    Layout { path: PathBuf, what: String },
    #[error("{}: {source}", path.display())]
    Pickle {
        path: PathBuf,
        source: pickle::PickleError,
    },
    #[error("reading {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Whether `path` names a PyTorch file rather than safetensors (by its name, as the loaders
/// choose them).
pub fn is_pickle(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e == "bin" || e == "pt" || e == "pth")
}

/// The named tensors of the state dict in `path`, in the file's order.
pub fn read(path: &Path) -> Result<Vec<(String, Tensor)>, TorchFileError> {
    TorchFile::open(path)?.tensors()
}

/// A PyTorch file with its pickle read and checked, its storages not yet.
pub struct TorchFile {
    zip: zip::ZipArchive<std::fs::File>,
    /// `ARCHIVE/`, the folder every entry is in.
    prefix: String,
    path: PathBuf,
    file_len: u64,
    views: Vec<(String, View)>,
}

/// One tensor as saved: a view of a storage.
struct View {
    key: String,
    kind: Kind,
    numel: i64,
    offset: i64,
    size: Vec<i64>,
    stride: Vec<i64>,
}

impl TorchFile {
    /// Reads the pickle and checks every tensor against its storage's zip entry (by the entry's
    /// header; the bytes are read by [`TorchFile::tensors`]).
    pub fn open(path: &Path) -> Result<Self, TorchFileError> {
        let layout = |what: String| TorchFileError::Layout {
            path: path.to_path_buf(),
            what,
        };
        let file = std::fs::File::open(path).map_err(|source| TorchFileError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let file_len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let mut magic = [0u8; 2];
        let zipped = std::io::Read::read_exact(&mut &file, &mut magic).is_ok() && magic == *b"PK";
        let mut zip = match zip::ZipArchive::new(file) {
            Ok(zip) => zip,
            Err(e) if zipped => {
                return Err(layout(format!(
                    "a damaged zip archive ({e}; cut short by a broken download or copy?)"
                )));
            }
            Err(_) => {
                return Err(TorchFileError::Legacy {
                    path: path.to_path_buf(),
                });
            }
        };
        let pkl_name = zip
            .file_names()
            .find(|n| n.ends_with("/data.pkl") && n.matches('/').count() == 1)
            .map(str::to_string)
            .ok_or_else(|| {
                layout("a zip without ARCHIVE/data.pkl: not a torch.save file".into())
            })?;
        let prefix = pkl_name.trim_end_matches("data.pkl").to_string();
        if let Ok(order) = entry(&mut zip, &format!("{prefix}byteorder"), 16, file_len, path)
            && order != b"little"
        {
            return Err(layout(format!(
                "saved on a {} machine; only little-endian files are read",
                String::from_utf8_lossy(&order)
            )));
        }
        let pkl = entry(&mut zip, &pkl_name, file_len, file_len, path)?;
        let root = pickle::read(&pkl).map_err(|source| TorchFileError::Pickle {
            path: path.to_path_buf(),
            source,
        })?;
        let dict = state_dict(&root).ok_or_else(|| {
            layout(
                "it holds no state dict (names to tensors) at its top or under state_dict, \
                 model or module"
                    .into(),
            )
        })?;
        let mut views = Vec::new();
        for (key, value) in dict {
            let Value::Str(name) = key else { continue };
            let bad = |what: String| layout(format!("tensor {name:?}: {what}"));
            if let Some(view) = view(value).map_err(bad)? {
                let entry_name = format!("{prefix}data/{}", view.key);
                let bytes = (view.numel as u64)
                    .checked_mul(view.kind.elt_size_in_bytes() as u64)
                    .ok_or_else(|| bad("its storage's size overflows".into()))?;
                let held = zip
                    .by_name(&entry_name)
                    .map_err(|e| bad(format!("its storage {entry_name}: {e}")))?
                    .size();
                if held != bytes {
                    return Err(bad(format!(
                        "its storage {entry_name} holds {held} bytes, its {} elements need \
                         {bytes}",
                        view.numel
                    )));
                }
                views.push((name.clone(), view));
            }
        }
        if views.is_empty() {
            return Err(layout("its state dict has no tensors".into()));
        }
        // DDP saves every name under `module.`.
        if views.iter().all(|(n, _)| n.starts_with("module.")) {
            for (n, _) in &mut views {
                n.replace_range(.."module.".len(), "");
            }
        }
        Ok(Self {
            zip,
            prefix,
            path: path.to_path_buf(),
            file_len,
            views,
        })
    }

    /// Each tensor's name and shape, in the file's order.
    pub fn shapes(&self) -> impl Iterator<Item = (&str, &[i64])> {
        self.views
            .iter()
            .map(|(n, v)| (n.as_str(), v.size.as_slice()))
    }

    /// The tensors, each storage read once and every tensor a view of it as saved.
    pub fn tensors(mut self) -> Result<Vec<(String, Tensor)>, TorchFileError> {
        let mut loaded: HashMap<String, Tensor> = HashMap::new();
        let mut out = Vec::with_capacity(self.views.len());
        for (name, v) in std::mem::take(&mut self.views) {
            let storage = match loaded.get(&v.key) {
                Some(t) if t.kind() == v.kind && t.numel() as i64 == v.numel => t.shallow_clone(),
                Some(_) => {
                    return Err(TorchFileError::Layout {
                        path: self.path.clone(),
                        what: format!("storage {} is named with two types or sizes", v.key),
                    });
                }
                None => {
                    let bytes = v.numel as u64 * v.kind.elt_size_in_bytes() as u64;
                    let name = format!("{}data/{}", self.prefix, v.key);
                    let data = entry(&mut self.zip, &name, bytes, self.file_len, &self.path)?;
                    let t = Tensor::from_data_size(&data, &[v.numel], v.kind);
                    loaded.insert(v.key.clone(), t.shallow_clone());
                    t
                }
            };
            out.push((name, storage.as_strided(&v.size, &v.stride, Some(v.offset))));
        }
        Ok(out)
    }
}

/// The dict of tensors: the top value, or the one a training checkpoint nests it in.
fn state_dict(root: &Value) -> Option<&Vec<(Value, Value)>> {
    let Value::Dict(items) = root else {
        return None;
    };
    let has_tensors = items
        .iter()
        .any(|(_, v)| matches!(v, Value::Call(g, _) if is_tensor(*g)));
    if has_tensors {
        return Some(items);
    }
    ["state_dict", "model", "module"].iter().find_map(|k| {
        items.iter().find_map(|(key, v)| match key {
            Value::Str(s) if s == k => state_dict(v),
            _ => None,
        })
    })
}

fn is_tensor(g: Global) -> bool {
    matches!(
        g,
        Global::RebuildTensorV2 | Global::RebuildParameter | Global::RebuildFromTypeV2
    )
}

/// The view a pickled value rebuilds; `None` for values that are not tensors.
fn view(v: &Value) -> Result<Option<View>, String> {
    let Value::Call(g, args) = v else {
        return Ok(None);
    };
    match g {
        // (storage, offset, size, stride, requires_grad, backward_hooks[, metadata])
        Global::RebuildTensorV2 => {
            let [storage, offset, size, stride, ..] = &args[..] else {
                return Err("a tensor rebuild with too few arguments".into());
            };
            let (key, kind, numel) = persistent(storage)
                .ok_or("a tensor rebuild whose storage is not a saved storage")?;
            let (Value::Int(offset), Some(size), Some(stride)) = (offset, ints(size), ints(stride))
            else {
                return Err("a tensor rebuild with a malformed offset, size or stride".into());
            };
            check_view(*offset, &size, &stride, numel)?;
            Ok(Some(View {
                key,
                kind,
                numel,
                offset: *offset,
                size,
                stride,
            }))
        }
        // (data, requires_grad, backward_hooks): a Parameter around a tensor.
        Global::RebuildParameter => match args.first() {
            Some(data) => view(data),
            None => Err("a parameter rebuild without its tensor".into()),
        },
        // (func, type, args, state): a tensor subclass; only Tensor and Parameter.
        Global::RebuildFromTypeV2 => match &args[..] {
            [
                Value::Global(f @ (Global::RebuildTensorV2 | Global::RebuildParameter)),
                Value::Global(Global::TensorClass | Global::ParameterClass),
                Value::Tuple(inner),
                ..,
            ] => view(&Value::Call(*f, inner.clone())),
            _ => Err("a tensor of a type other than Tensor or Parameter".into()),
        },
        _ => Ok(None),
    }
}

/// `('storage', StorageType, key, location, numel)` → key, element type and count.
fn persistent(v: &Value) -> Option<(String, Kind, i64)> {
    let Value::Persistent(id) = v else {
        return None;
    };
    let Value::Tuple(parts) = id.as_ref() else {
        return None;
    };
    match &parts[..] {
        [
            Value::Str(tag),
            Value::Global(Global::Storage(ty)),
            Value::Str(key),
            _,
            Value::Int(numel),
        ] if tag == "storage" && *numel >= 0 => Some((key.clone(), kind(ty)?, *numel)),
        _ => None,
    }
}

fn kind(storage: &str) -> Option<Kind> {
    Some(match storage {
        "FloatStorage" => Kind::Float,
        "HalfStorage" => Kind::Half,
        "BFloat16Storage" => Kind::BFloat16,
        "DoubleStorage" => Kind::Double,
        "LongStorage" => Kind::Int64,
        "IntStorage" => Kind::Int,
        "ShortStorage" => Kind::Int16,
        "CharStorage" => Kind::Int8,
        "ByteStorage" => Kind::Uint8,
        "BoolStorage" => Kind::Bool,
        _ => return None,
    })
}

fn ints(v: &Value) -> Option<Vec<i64>> {
    let Value::Tuple(items) = v else {
        return None;
    };
    items
        .iter()
        .map(|i| match i {
            Value::Int(n) => Some(*n),
            _ => None,
        })
        .collect()
}

/// A view lies inside its storage: sizes and strides not negative, and the furthest element
/// (offset + Σ (size-1)·stride) below the storage's element count, with checked arithmetic.
fn check_view(offset: i64, size: &[i64], stride: &[i64], numel: i64) -> Result<(), String> {
    if size.len() != stride.len() || size.len() > 64 {
        return Err(format!("size {size:?} and stride {stride:?} do not match"));
    }
    if offset < 0 || size.iter().chain(stride).any(|v| *v < 0) {
        return Err("a negative offset, size or stride".into());
    }
    let elements = size
        .iter()
        .try_fold(1i64, |a, s| a.checked_mul(*s))
        .ok_or("its size overflows")?;
    if elements == 0 {
        return Ok(());
    }
    let last = size
        .iter()
        .zip(stride)
        .try_fold(offset, |a, (s, st)| {
            a.checked_add((s - 1).checked_mul(*st)?)
        })
        .ok_or("its extent overflows")?;
    if last >= numel {
        return Err(format!(
            "the view (offset {offset}, size {size:?}, stride {stride:?}) reaches element {last} of a storage of {numel}"
        ));
    }
    Ok(())
}

/// The bytes of zip entry `name`, refused when its header claims more than `cap` or than the
/// file has; the zip reader checks the CRC once the entry is read to its end.
fn entry(
    zip: &mut zip::ZipArchive<std::fs::File>,
    name: &str,
    cap: u64,
    file_len: u64,
    path: &Path,
) -> Result<Vec<u8>, TorchFileError> {
    let layout = |what: String| TorchFileError::Layout {
        path: path.to_path_buf(),
        what,
    };
    let mut e = zip
        .by_name(name)
        .map_err(|err| layout(format!("zip entry {name}: {err}")))?;
    let claimed = e.size();
    if claimed > cap || claimed > file_len {
        return Err(layout(format!(
            "zip entry {name} claims {claimed} bytes, more than {} (the file is {file_len} bytes)",
            cap.min(file_len)
        )));
    }
    let mut out = Vec::with_capacity(claimed as usize);
    (&mut e)
        .take(claimed + 1)
        .read_to_end(&mut out)
        .map_err(|err| layout(format!("zip entry {name} is damaged: {err}")))?;
    if out.len() as u64 != claimed {
        return Err(layout(format!(
            "zip entry {name} holds {} bytes, its header says {claimed}",
            out.len()
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_must_lie_inside_their_storage() {
        assert!(check_view(0, &[2, 3], &[3, 1], 6).is_ok());
        assert!(check_view(2, &[2, 2], &[1, 2], 6).is_ok());
        assert!(check_view(0, &[0, 5], &[5, 1], 0).is_ok());
        assert!(check_view(1, &[2, 3], &[3, 1], 6).is_err());
        assert!(check_view(0, &[2], &[1, 1], 6).is_err());
        assert!(check_view(-1, &[1], &[1], 6).is_err());
        assert!(check_view(0, &[1 << 62, 4], &[4, 1], 6).is_err());
        assert!(check_view(0, &[3, 1 << 62], &[1 << 62, 1], i64::MAX).is_err());
    }
}
