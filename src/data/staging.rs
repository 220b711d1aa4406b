//! A set of files published into a folder at once, as checkpoints are: written into a hidden
//! staging folder inside it (`OUT/.tmp-WHAT-PID`, on the same filesystem, so renames are
//! atomic), then renamed over their final names only once every one of them is complete. A
//! process stopped mid-write (a signal, a full disk, a crash) leaves nothing under a final name
//! and the files of an earlier set there untouched; what it left in staging is removed by the
//! next process to stage the same kind of set into that folder, which says so.
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum StagingError {
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{} was not written, so nothing of the set was moved into {}",
        file.display(),
        out.display()
    )]
    Incomplete { file: PathBuf, out: PathBuf },
}

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StagingError {
    let path = path.to_path_buf();
    move |source| StagingError::Io { op, path, source }
}

/// The staging folder of one set; removed with what it holds when dropped unpublished.
#[derive(Debug)]
pub struct Staging {
    out: PathBuf,
    dir: PathBuf,
    published: bool,
}

impl Staging {
    /// Creates `out` if missing and a fresh staging folder in it for a set of kind `what`
    /// (`export`, `build`), after removing what stopped processes left of that kind there.
    pub fn new(out: &Path, what: &str) -> Result<Self, StagingError> {
        std::fs::create_dir_all(out).map_err(io("creating", out))?;
        remove_leftovers(out, what)?;
        let dir = out.join(format!(".tmp-{what}-{}", std::process::id()));
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(io("removing", &dir))?;
        }
        std::fs::create_dir(&dir).map_err(io("creating", &dir))?;
        Ok(Self {
            out: out.to_path_buf(),
            dir,
            published: false,
        })
    }

    /// Where the set is written.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Renames `files` (names in the staging folder) into the output folder, in this order —
    /// the file that marks the set as present (a config, `stats.json`) goes last — once every
    /// one is there; then removes the staging folder. Returns the final paths.
    pub fn publish(mut self, files: &[String]) -> Result<Vec<PathBuf>, StagingError> {
        if let Some(missing) = files.iter().find(|f| !self.dir.join(f).is_file()) {
            return Err(StagingError::Incomplete {
                file: self.dir.join(missing),
                out: self.out.clone(),
            });
        }
        let mut done = Vec::with_capacity(files.len());
        for f in files {
            let (from, to) = (self.dir.join(f), self.out.join(f));
            std::fs::rename(&from, &to).map_err(io("moving into place", &to))?;
            done.push(to);
        }
        self.published = true;
        std::fs::remove_dir_all(&self.dir).map_err(io("removing", &self.dir))?;
        Ok(done)
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.published {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Removes `out/.tmp-WHAT-PID` folders whose process is gone; a live one's (two writers into
/// one folder) is left alone.
fn remove_leftovers(out: &Path, what: &str) -> Result<(), StagingError> {
    let prefix = format!(".tmp-{what}-");
    let entries = std::fs::read_dir(out).map_err(io("listing", out))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(&prefix)
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == std::process::id() || alive(pid) {
            continue;
        }
        let path = entry.path();
        std::fs::remove_dir_all(&path).map_err(io("removing", &path))?;
        tracing::warn!(
            "removed {}: the unfinished {what} of a process that was stopped (pid {pid}); \
             nothing of it was under a final name",
            path.display()
        );
    }
    Ok(())
}

/// Whether process `pid` exists (signal 0 checks without sending anything).
fn alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: kill with signal 0 has no effect beyond the existence and permission check.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut n: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        n.sort();
        n
    }

    #[test]
    fn nothing_reaches_a_final_name_until_the_whole_set_is_published() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out");
        std::fs::create_dir_all(&out).unwrap();
        std::fs::write(out.join("a.json"), "old a").unwrap();
        std::fs::write(out.join("mine.txt"), "the user's").unwrap();
        let files = ["b.bin".to_string(), "a.json".to_string()];

        // A set that fails half-way: the old file is intact, nothing new is visible, no
        // staging is left.
        let s = Staging::new(&out, "export").unwrap();
        std::fs::write(s.dir().join("b.bin"), "new b").unwrap();
        assert_eq!(
            names(&out).len(),
            3,
            "the staging folder is the only new entry"
        );
        let err = s.publish(&files).unwrap_err();
        assert!(err.to_string().contains("a.json was not written"), "{err}");
        assert_eq!(names(&out), ["a.json", "mine.txt"]);
        assert_eq!(
            std::fs::read_to_string(out.join("a.json")).unwrap(),
            "old a"
        );

        // A complete set replaces the old file and leaves the user's.
        let s = Staging::new(&out, "export").unwrap();
        std::fs::write(s.dir().join("b.bin"), "new b").unwrap();
        std::fs::write(s.dir().join("a.json"), "new a").unwrap();
        assert_eq!(
            std::fs::read_to_string(out.join("a.json")).unwrap(),
            "old a"
        );
        let done = s.publish(&files).unwrap();
        assert_eq!(done, [out.join("b.bin"), out.join("a.json")]);
        assert_eq!(names(&out), ["a.json", "b.bin", "mine.txt"]);
        assert_eq!(
            std::fs::read_to_string(out.join("a.json")).unwrap(),
            "new a"
        );
    }

    #[test]
    fn what_a_stopped_process_left_is_removed_by_the_next_and_a_live_ones_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path();
        // No process has pid 2^22 + 1 (above Linux's pid_max limit of 2^22).
        let dead = out.join(format!(".tmp-build-{}", (1 << 22) + 1));
        std::fs::create_dir_all(&dead).unwrap();
        std::fs::write(dead.join("train-000003.tar.tmp"), "half").unwrap();
        let live = out.join(".tmp-build-1"); // init
        std::fs::create_dir_all(&live).unwrap();
        let other_kind = out.join(format!(".tmp-export-{}", (1 << 22) + 1));
        std::fs::create_dir_all(&other_kind).unwrap();
        let s = Staging::new(out, "build").unwrap();
        assert!(!dead.exists());
        assert!(live.exists() && other_kind.exists());
        drop(s);
        let left = [
            ".tmp-build-1".to_string(),
            format!(".tmp-export-{}", (1 << 22) + 1),
        ];
        assert_eq!(names(out), left);
    }
}
