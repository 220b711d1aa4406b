//! One writer per run folder: an exclusive `flock` on `RUN/.lock`, held while the run lives and
//! released by the kernel however the process ends (a crash or `kill -9` included), so a lock
//! is never stale. The file holds the holder's pid, which a second process names when it is
//! refused. With the lock held, temporaries left by an interrupted checkpoint write are known
//! to be dead and are removed.
use super::{CheckpointError, io};
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

const LOCK_FILE: &str = ".lock";

/// Prefixes of the temporaries a checkpoint write makes in the run folder.
pub(super) const TEMP_PREFIXES: [&str; 2] = [".tmp-", ".latest-"];

/// The exclusive right to write a run folder, until dropped.
#[derive(Debug)]
pub struct RunLock {
    _file: std::fs::File,
}

impl RunLock {
    /// Locks `run_dir` (creating it) for this process, or fails at once naming the process
    /// that holds it. Then removes what interrupted checkpoint writes left behind.
    pub fn acquire(run_dir: &Path) -> Result<Self, CheckpointError> {
        std::fs::create_dir_all(run_dir).map_err(io("creating", run_dir))?;
        let path = run_dir.join(LOCK_FILE);
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io("opening", &path))?;
        // SAFETY: flock on a descriptor this function owns.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(io("locking", &path)(err));
            }
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            return Err(CheckpointError::Locked {
                dir: run_dir.to_path_buf(),
                holder: holder.trim().to_string(),
            });
        }
        file.set_len(0)
            .and_then(|_| file.rewind())
            .and_then(|_| writeln!(file, "{}", std::process::id()))
            .map_err(io("writing", &path))?;
        for stale in remove_temporaries(run_dir)? {
            tracing::warn!(
                "removed {}, left by an interrupted checkpoint write",
                stale.display()
            );
        }
        Ok(Self { _file: file })
    }

    /// Whether [`acquire`](Self::acquire) would succeed now, creating nothing: refused as it
    /// would be while another process holds `run_dir`'s lock (`cliptrain config check`).
    pub fn check_free(run_dir: &Path) -> Result<(), CheckpointError> {
        let path = run_dir.join(LOCK_FILE);
        let Ok(mut file) = std::fs::File::open(&path) else {
            return Ok(());
        };
        // SAFETY: flock on a descriptor this function owns; closing it releases the probe.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) } == 0 {
            return Ok(());
        }
        let mut holder = String::new();
        let _ = file.read_to_string(&mut holder);
        Err(CheckpointError::Locked {
            dir: run_dir.to_path_buf(),
            holder: holder.trim().to_string(),
        })
    }
}

/// Removes every checkpoint-write temporary in `run_dir`; returns what was removed.
fn remove_temporaries(run_dir: &Path) -> Result<Vec<PathBuf>, CheckpointError> {
    let mut removed = vec![];
    for entry in std::fs::read_dir(run_dir).map_err(io("listing", run_dir))? {
        let entry = entry.map_err(io("listing", run_dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !TEMP_PREFIXES.iter().any(|p| name.starts_with(p)) {
            continue;
        }
        let path = entry.path();
        remove_any(&path)?;
        removed.push(path);
    }
    Ok(removed)
}

/// Removes a file, a link or a folder with its content.
pub(super) fn remove_any(path: &Path) -> Result<(), CheckpointError> {
    let is_dir = std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir());
    let removed = if is_dir {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    };
    match removed {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io("removing", path)(e)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_a_run_folder_is_refused_naming_the_holder_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        std::fs::create_dir_all(run.join(".tmp-step-0000004-77/x")).unwrap();
        std::os::unix::fs::symlink("step-0000004", run.join(".latest-77")).unwrap();
        std::fs::create_dir_all(run.join("step-0000002")).unwrap();
        let first = RunLock::acquire(&run).unwrap();
        let left: Vec<String> = std::fs::read_dir(&run)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != LOCK_FILE)
            .collect();
        assert_eq!(
            left,
            ["step-0000002"],
            "temporaries removed, checkpoints kept"
        );
        // flock belongs to the open file, so a second open in this process is refused too.
        let err = RunLock::acquire(&run).unwrap_err();
        let pid = std::process::id().to_string();
        assert!(matches!(&err, CheckpointError::Locked { holder, .. } if *holder == pid));
        assert!(err.to_string().contains(&format!("pid {pid}")), "{err}");
        assert!(matches!(
            RunLock::check_free(&run),
            Err(CheckpointError::Locked { .. })
        ));
        drop(first);
        RunLock::check_free(&run).expect("free once the holder is gone");
        RunLock::acquire(&run).expect("free again once the holder is gone");
    }
}
