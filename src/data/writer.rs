//! Writing WebDataset tar shards the way img2dataset lays them out.
//!
//! A sample is a key plus members (`KEY.jpg`, `KEY.txt`, ...) stored next to each other in one
//! tar; shards are numbered `PREFIX-000000.tar`, `PREFIX-000001.tar`, ... so a brace spec such as
//! `DIR/PREFIX-{000000..000007}.tar` names them all. Headers carry no time, owner or host
//! details, so the same samples always give byte-identical shards.
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// Why a shard could not be written.
#[derive(Debug, thiserror::Error)]
pub enum WriterError {
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("max_samples_per_shard must be at least 1")]
    ZeroShardSize,
    /// WebDataset splits member names at the first `.`, so keys must not contain one.
    #[error("invalid sample key {0:?}: must be non-empty without '.', '/' or '\\'")]
    InvalidKey(String),
    #[error("invalid member extension {ext:?} for sample {key}: must be non-empty without '/'")]
    InvalidExtension { key: String, ext: String },
}

/// One finished shard: where it is and how many samples it holds.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ShardInfo {
    pub path: PathBuf,
    pub samples: usize,
}

/// The shard being filled: written under `NAME.tar.tmp`, renamed to `NAME.tar` when full, so a
/// reader never sees a half-written shard under its final name.
struct OpenShard {
    builder: tar::Builder<BufWriter<File>>,
    tmp: PathBuf,
    path: PathBuf,
    samples: usize,
}

/// Writes samples into numbered tar shards of at most `max_samples_per_shard` samples each.
pub struct ShardWriter {
    dir: PathBuf,
    prefix: String,
    max_samples: usize,
    open: Option<OpenShard>,
    done: Vec<ShardInfo>,
}

impl ShardWriter {
    /// A writer producing `dir/prefix-NNNNNN.tar`; `dir` is created if missing. No file is
    /// created until the first sample, so zero samples give zero shards.
    pub fn new(
        dir: impl AsRef<Path>,
        prefix: &str,
        max_samples_per_shard: usize,
    ) -> Result<Self, WriterError> {
        if max_samples_per_shard == 0 {
            return Err(WriterError::ZeroShardSize);
        }
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir).map_err(|source| WriterError::Io {
            op: "creating directory",
            path: dir.clone(),
            source,
        })?;
        Ok(Self {
            dir,
            prefix: prefix.to_string(),
            max_samples: max_samples_per_shard,
            open: None,
            done: Vec::new(),
        })
    }

    /// The file name of shard `index`, e.g. `train-000003.tar`.
    pub fn shard_name(prefix: &str, index: usize) -> String {
        format!("{prefix}-{index:06}.tar")
    }

    /// Appends one sample: each `(ext, bytes)` becomes the member `KEY.EXT`.
    pub fn write(&mut self, key: &str, members: &[(&str, &[u8])]) -> Result<(), WriterError> {
        if key.is_empty() || key.contains(['.', '/', '\\']) {
            return Err(WriterError::InvalidKey(key.to_string()));
        }
        if let Some((ext, _)) = members
            .iter()
            .find(|(e, _)| e.is_empty() || e.contains('/'))
        {
            return Err(WriterError::InvalidExtension {
                key: key.to_string(),
                ext: ext.to_string(),
            });
        }
        if self.open.is_none() {
            self.open = Some(self.start_shard()?);
        }
        let shard = self.open.as_mut().expect("a shard was just opened");
        for (ext, bytes) in members {
            let mut header = tar::Header::new_ustar();
            header.set_entry_type(tar::EntryType::Regular);
            header.set_size(bytes.len() as u64);
            header.set_mode(0o644);
            header.set_mtime(0);
            header.set_uid(0);
            header.set_gid(0);
            let name = format!("{key}.{ext}");
            header.set_path(&name).map_err(|source| WriterError::Io {
                op: "naming member in",
                path: shard.tmp.clone(),
                source,
            })?;
            header.set_cksum();
            shard
                .builder
                .append(&header, *bytes)
                .map_err(|source| WriterError::Io {
                    op: "writing",
                    path: shard.tmp.clone(),
                    source,
                })?;
        }
        shard.samples += 1;
        if shard.samples == self.max_samples {
            self.close_shard()?;
        }
        Ok(())
    }

    /// Closes the last shard and returns every shard written, in order.
    pub fn finish(mut self) -> Result<Vec<ShardInfo>, WriterError> {
        self.close_shard()?;
        Ok(std::mem::take(&mut self.done))
    }

    fn start_shard(&self) -> Result<OpenShard, WriterError> {
        let path = self
            .dir
            .join(Self::shard_name(&self.prefix, self.done.len()));
        let tmp = PathBuf::from(format!("{}.tmp", path.display()));
        let file = File::create(&tmp).map_err(|source| WriterError::Io {
            op: "creating",
            path: tmp.clone(),
            source,
        })?;
        Ok(OpenShard {
            builder: tar::Builder::new(BufWriter::new(file)),
            tmp,
            path,
            samples: 0,
        })
    }

    fn close_shard(&mut self) -> Result<(), WriterError> {
        let Some(shard) = self.open.take() else {
            return Ok(());
        };
        let io = |op, source| WriterError::Io {
            op,
            path: shard.tmp.clone(),
            source,
        };
        // `into_inner` writes the tar end-of-archive blocks; the flush and sync make the rename
        // below publish a complete file.
        let mut buf = shard.builder.into_inner().map_err(|e| io("finishing", e))?;
        buf.flush().map_err(|e| io("flushing", e))?;
        buf.get_ref().sync_all().map_err(|e| io("syncing", e))?;
        drop(buf);
        fs::rename(&shard.tmp, &shard.path).map_err(|e| io("renaming", e))?;
        self.done.push(ShardInfo {
            path: shard.path,
            samples: shard.samples,
        });
        Ok(())
    }
}

impl Drop for ShardWriter {
    /// A writer dropped without `finish` (an error mid-way) leaves no partial `.tmp` behind.
    fn drop(&mut self) {
        if let Some(shard) = self.open.take() {
            drop(shard.builder);
            let _ = fs::remove_file(&shard.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn read_members(path: &Path) -> Vec<(String, Vec<u8>, u32, u64)> {
        let mut archive = tar::Archive::new(File::open(path).unwrap());
        archive
            .entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let name = e.path().unwrap().display().to_string();
                let mode = e.header().mode().unwrap();
                let mtime = e.header().mtime().unwrap();
                let mut data = Vec::new();
                e.read_to_end(&mut data).unwrap();
                (name, data, mode, mtime)
            })
            .collect()
    }

    #[test]
    fn splits_at_the_sample_limit_and_leaves_no_tmp() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = ShardWriter::new(dir.path(), "part", 3).unwrap();
        for i in 0..7 {
            let key = format!("{i:09}");
            w.write(&key, &[("txt", b"hello"), ("cls", b"1")]).unwrap();
        }
        let shards = w.finish().unwrap();
        let counts: Vec<usize> = shards.iter().map(|s| s.samples).collect();
        assert_eq!(counts, [3, 3, 1]);
        let mut names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["part-000000.tar", "part-000001.tar", "part-000002.tar"]
        );
        let members = read_members(&shards[2].path);
        assert_eq!(members.len(), 2);
        assert_eq!(members[0].0, "000000006.txt");
        assert_eq!(members[0].1, b"hello");
        assert_eq!((members[0].2, members[0].3), (0o644, 0));
        assert_eq!(members[1].0, "000000006.cls");
    }

    #[test]
    fn exact_multiple_gives_no_empty_shard() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = ShardWriter::new(dir.path(), "x", 2).unwrap();
        for i in 0..4 {
            w.write(&format!("{i:09}"), &[("txt", b"a")]).unwrap();
        }
        assert_eq!(w.finish().unwrap().len(), 2);
        let w = ShardWriter::new(dir.path(), "empty", 2).unwrap();
        assert!(w.finish().unwrap().is_empty());
    }

    #[test]
    fn output_is_byte_deterministic() {
        let write = |dir: &Path| {
            let mut w = ShardWriter::new(dir, "d", 10).unwrap();
            w.write("000000001", &[("txt", b"same")]).unwrap();
            fs::read(&w.finish().unwrap()[0].path).unwrap()
        };
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        assert_eq!(write(a.path()), write(b.path()));
    }

    #[test]
    fn rejects_bad_keys_and_dropped_writer_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            ShardWriter::new(dir.path(), "p", 0),
            Err(WriterError::ZeroShardSize)
        ));
        let mut w = ShardWriter::new(dir.path(), "p", 5).unwrap();
        assert!(matches!(
            w.write("a.b", &[("txt", b"x")]),
            Err(WriterError::InvalidKey(_))
        ));
        assert!(matches!(
            w.write("ab", &[("", b"x")]),
            Err(WriterError::InvalidExtension { .. })
        ));
        w.write("ok", &[("txt", b"x")]).unwrap();
        assert!(dir.path().join("p-000000.tar.tmp").exists());
        drop(w);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
