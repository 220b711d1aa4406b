//! What a feature-cache entry is keyed on: the model's files, and the data's files.
//!
//! An entry lives at a path named by its *slot* — the model, which data (canonical paths, not
//! their contents), the class names and the preprocessing — and holds the *data key*: every
//! file the evaluation reads, with its length and modification and change times. A set
//! rewritten in place keeps its slot but changes its data key, so the stale entry is found,
//! reported and overwritten instead of served.
use super::super::ZeroShotTask;
use crate::data::spec::{Shard, parse_spec};
use crate::data::stream::stable_hash;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// A key that changes whenever the weights in `folder` do: its canonical path and every
/// file's name, length and modification time (the weights are not hashed: that would read
/// gigabytes to save re-encoding a few thousand images).
pub fn model_key(folder: &Path) -> String {
    let folder = canonical(folder);
    let mut parts = vec![folder.display().to_string()];
    if let Ok(entries) = std::fs::read_dir(&folder) {
        let mut files: Vec<String> = entries
            .flatten()
            .filter_map(|e| {
                let m = e.metadata().ok()?;
                let modified = m
                    .modified()
                    .ok()?
                    .duration_since(std::time::UNIX_EPOCH)
                    .ok()?;
                m.is_file().then(|| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    format!("{name}:{}:{}", m.len(), modified.as_nanos())
                })
            })
            .collect();
        files.sort();
        parts.extend(files);
    }
    stable_hash(&parts.join("\0"))
}

/// Where a set's features are cached and what its files look like now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DataKey {
    /// Which data this is (canonical paths and class names), not what it holds: names the
    /// cache file.
    pub identity: String,
    /// Every file the evaluation reads with its length, modification and change time: must
    /// match the cache entry's.
    pub files: String,
}

impl DataKey {
    /// The key of `task`'s data, or `None` when it cannot be known without reading the data
    /// (a `pipe:` shard's output may change at any time): such a set is not cached.
    pub fn of(task: &ZeroShotTask) -> Option<Self> {
        let (identity, files): (String, Vec<PathBuf>) = match &task.bench {
            Some(set) => {
                let root = canonical(&set.root);
                let split = root.join(&set.split);
                let mut files = vec![split.join("nshards.txt")];
                files.extend(set.shards.iter().map(|s| canonical(s)));
                (format!("{}\0{}", root.display(), set.split), files)
            }
            None if Path::new(&task.data).is_dir() => {
                let root = canonical(Path::new(&task.data));
                (root.display().to_string(), image_folder_files(&root))
            }
            None => {
                let mut files = Vec::new();
                for shard in parse_spec(&task.data).ok()? {
                    match shard {
                        Shard::File(p) => files.push(canonical(Path::new(&p))),
                        Shard::Pipe(_) => return None,
                    }
                }
                let names: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
                (names.join("\0"), files)
            }
        };
        let identity = format!("{identity}\0{}", task.classnames.join("\n"));
        Some(Self {
            identity,
            files: stable_hash(&fingerprint(&files)),
        })
    }
}

/// Every regular file one level under each class folder of an ImageFolder: the images
/// `FolderBatches` reads (and any other file there, which costs at most a needless rebuild).
fn image_folder_files(root: &Path) -> Vec<PathBuf> {
    let list = |dir: &Path| -> Vec<PathBuf> {
        std::fs::read_dir(dir)
            .map(|entries| entries.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    };
    list(root)
        .into_iter()
        .filter(|p| p.is_dir())
        .flat_map(|class| list(&class).into_iter().filter(|p| p.is_file()))
        .collect()
}

/// `path:length:mtime:ctime` of every file, sorted. The change time catches a rewrite that
/// restored the modification time (`tar x`, `cp -p`, `rsync -t`); a file that cannot be read
/// is listed as such, so the entry is not used and encoding reports the actual error.
fn fingerprint(files: &[PathBuf]) -> String {
    let mut lines: Vec<String> = files
        .iter()
        .map(|p| match std::fs::metadata(p) {
            Ok(m) => format!(
                "{}:{}:{}.{:09}:{}.{:09}",
                p.display(),
                m.len(),
                m.mtime(),
                m.mtime_nsec(),
                m.ctime(),
                m.ctime_nsec()
            ),
            Err(_) => format!("{}:unreadable", p.display()),
        })
        .collect();
    lines.sort();
    lines.join("\0")
}

fn canonical(p: &Path) -> PathBuf {
    p.canonicalize().unwrap_or_else(|_| p.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder_task(dir: &Path) -> ZeroShotTask {
        ZeroShotTask {
            data: dir.display().to_string(),
            classnames: vec!["cat".into(), "dog".into()],
            templates: vec!["{}".into()],
            subset: None,
            bench: None,
            confusion_max_classes: crate::eval::metrics::DEFAULT_CONFUSION_MAX_CLASSES,
        }
    }

    #[test]
    fn a_file_rewritten_in_place_changes_the_data_key_but_not_the_identity() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("cat")).unwrap();
        std::fs::write(dir.path().join("cat/a.jpg"), b"one").unwrap();
        let task = folder_task(dir.path());
        let before = DataKey::of(&task).unwrap();
        assert_eq!(
            DataKey::of(&task).unwrap(),
            before,
            "stable while untouched"
        );
        // Same length, same name: only the times tell.
        std::fs::write(dir.path().join("cat/a.jpg"), b"two").unwrap();
        let after = DataKey::of(&task).unwrap();
        assert_eq!(after.identity, before.identity);
        assert_ne!(after.files, before.files);
        std::fs::write(dir.path().join("cat/b.jpg"), b"new").unwrap();
        assert_ne!(
            DataKey::of(&task).unwrap().files,
            after.files,
            "a new image"
        );
    }

    #[test]
    fn shard_specs_are_keyed_on_their_files_and_pipes_are_not_cached() {
        let dir = tempfile::tempdir().unwrap();
        let shard = dir.path().join("s-0.tar");
        std::fs::write(&shard, b"x").unwrap();
        let mut task = folder_task(dir.path());
        task.data = shard.display().to_string();
        let before = DataKey::of(&task).unwrap();
        std::fs::write(&shard, b"xy").unwrap();
        assert_ne!(DataKey::of(&task).unwrap().files, before.files);
        task.data = "pipe:cat s-0.tar".into();
        assert_eq!(DataKey::of(&task), None);
    }

    #[test]
    fn other_class_names_are_another_slot() {
        let dir = tempfile::tempdir().unwrap();
        let mut task = folder_task(dir.path());
        let a = DataKey::of(&task).unwrap();
        task.classnames.reverse();
        assert_ne!(DataKey::of(&task).unwrap().identity, a.identity);
    }
}
