//! Fetching a model's files from the Hub into the cache. The revision is listed once
//! (`/api/models/.../revision/` with blob sizes and etags); files the snapshot already has are
//! skipped, a blob another revision already fetched is linked instead of downloaded again, and
//! each missing file is transferred into `blobs/<etag>.part` (continued from its length after
//! an interrupted run, or after a dropped connection within the retries), under a lock per
//! blob, then renamed and linked from the snapshot — the layout `huggingface_hub` writes.
//!
//! What the server says is checked before it touches the disk: the commit and every etag are
//! names by the cache's rules ([`cache::check_commit`], [`cache::check_etag`]), a body stops at
//! the listed size (longer is an error), free space is checked against it first, and every
//! request has timeouts and bounded redirects ([`http`]).
use super::cache::{self, Choice, RepoCache};
use super::http::{self, Client, Failure};
use super::{HubError, HubId, HubSettings};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// Retries of a transfer that broke off; each continues from the bytes already on disk.
const RETRIES: usize = 3;
/// The largest revision listing read: ~100 bytes a file, so about two million files.
const MAX_LISTING: u64 = 256 << 20;

/// The revision's listing: its commit and files (`?blobs=true` adds sizes and etags).
#[derive(Debug, serde::Deserialize)]
struct Listing {
    sha: String,
    siblings: Vec<Sibling>,
}

#[derive(Debug, serde::Deserialize)]
struct Sibling {
    rfilename: String,
    size: Option<u64>,
    #[serde(rename = "blobId")]
    blob_id: Option<String>,
    lfs: Option<Lfs>,
}

#[derive(Debug, serde::Deserialize)]
struct Lfs {
    sha256: String,
    size: u64,
}

impl Sibling {
    /// The blob's name in the cache: the LFS object's SHA-256, else the git blob id (what the
    /// Hub sends as `X-Linked-Etag` / `ETag`).
    fn etag(&self) -> Option<&str> {
        self.lfs
            .as_ref()
            .map(|l| l.sha256.as_str())
            .or(self.blob_id.as_deref())
    }

    fn size(&self) -> Option<u64> {
        self.lfs.as_ref().map(|l| l.size).or(self.size)
    }
}

/// One file as the listing gives it, its names checked.
struct Wanted<'a> {
    name: &'a str,
    etag: &'a str,
    size: u64,
}

/// Where the downloads of one resolve go, and how they are reported.
struct Fetch<'a> {
    id: &'a HubId,
    settings: &'a HubSettings,
    cache: RepoCache,
    client: Client,
    commit: String,
}

/// Downloads what `id`'s revision needs that the cache lacks, and returns its snapshot folder.
pub(super) fn fetch(id: &HubId, settings: &HubSettings) -> Result<PathBuf, HubError> {
    let listing = list(id, settings)?;
    let names: Vec<&str> = listing
        .siblings
        .iter()
        .map(|s| s.rfilename.as_str())
        .collect();
    let Choice::Fetch(wanted) = cache::choose(&names, id.openclip) else {
        return Err(HubError::NoWeights {
            id: Box::new(id.clone()),
            endpoint: settings.endpoint.clone(),
            found: cache::listed(&names),
        });
    };
    // Every name is checked before the first byte is written.
    let wanted = wanted
        .iter()
        .map(|name| wanted_file(id, settings, &listing, name))
        .collect::<Result<Vec<_>, _>>()?;
    let f = Fetch {
        id,
        settings,
        cache: RepoCache::new(&settings.cache_dir, &id.repo),
        client: Client::new(settings, settings.download_timeout),
        commit: listing.sha.clone(),
    };
    for file in &wanted {
        f.ensure(file)?;
    }
    if id.revision() != f.commit {
        f.cache
            .write_ref(id.revision(), &f.commit)
            .map_err(super::io("writing", &f.cache.ref_path(id.revision())))?;
    }
    Ok(f.cache.snapshot(&f.commit))
}

/// The revision's commit and files, from the Hub's API; the commit checked as a name.
fn list(id: &HubId, s: &HubSettings) -> Result<Listing, HubError> {
    let what = "the file list";
    let url = format!(
        "{}/api/models/{}/revision/{}?blobs=true",
        s.endpoint,
        id.repo,
        http::segment(id.revision())
    );
    let answer = Client::new(s, s.etag_timeout)
        .get(&url, None)
        .map_err(|f| failure(id, s, what, f))?;
    let text = http::read_text(answer.response, MAX_LISTING).map_err(|e| http(id, s, what, e))?;
    let listing: Listing = serde_json::from_str(&text).map_err(|e| {
        http(
            id,
            s,
            what,
            format!("the answer is not the Hub's revision listing ({e}); is HF_ENDPOINT a Hub?"),
        )
    })?;
    cache::check_commit(&listing.sha).map_err(|rule| HubError::BadName {
        id: Box::new(id.clone()),
        what: "the commit (`sha`) of the revision listing".into(),
        value: cache::shown(&listing.sha),
        endpoint: s.endpoint.clone(),
        rule,
    })?;
    Ok(listing)
}

/// `name` as the listing gives it: its etag (a checked blob name) and size.
fn wanted_file<'a>(
    id: &HubId,
    s: &HubSettings,
    listing: &'a Listing,
    name: &'a str,
) -> Result<Wanted<'a>, HubError> {
    let bad = |what: String, value: &str, rule: String| HubError::BadName {
        id: Box::new(id.clone()),
        what,
        value: cache::shown(value),
        endpoint: s.endpoint.clone(),
        rule,
    };
    cache::check_repo_path(name).map_err(|rule| bad("the file name".into(), name, rule))?;
    let sibling = listing.siblings.iter().find(|x| x.rfilename == name);
    let (Some(etag), Some(size)) = (
        sibling.and_then(Sibling::etag),
        sibling.and_then(Sibling::size),
    ) else {
        return Err(http(
            id,
            s,
            name,
            "the listing gives no size or etag for it (a Hub lists both with ?blobs=true); is \
             HF_ENDPOINT a Hugging Face Hub?"
                .into(),
        ));
    };
    cache::check_etag(etag).map_err(|rule| bad(format!("the etag of {name}"), etag, rule))?;
    Ok(Wanted { name, etag, size })
}

/// Why one transfer attempt did not give the listed file.
enum Trouble {
    /// Nothing to retry: the error as the user sees it.
    Fatal(HubError),
    /// The server's answer contradicts the listing; the file is fetched once more.
    Mismatch(String),
}

impl Fetch<'_> {
    /// Makes `snapshots/<commit>/<name>` a complete file: already there, linked to a blob the
    /// cache has, or downloaded — and in the last case checked against the listing, with one
    /// fresh download when the first one does not match.
    fn ensure(&self, file: &Wanted) -> Result<(), HubError> {
        let (name, size) = (file.name, file.size);
        let pointer = self.cache.snapshot(&self.commit).join(name);
        match std::fs::metadata(&pointer) {
            Ok(m) if m.len() == size => return Ok(()),
            Ok(m) => {
                tracing::warn!(
                    "{}: the cached {name} has {} bytes, the Hub lists {size}; downloading it \
                     again",
                    self.id,
                    m.len(),
                );
                self.discard(&pointer, file.etag);
            }
            Err(_) => {
                // A dangling link (its blob deleted) is replaced below.
                std::fs::remove_file(&pointer).ok();
            }
        }
        let blob = self.cache.blob(file.etag);
        if self.complete(&blob, size) {
            return self.link(&blob, &pointer);
        }
        let _lock = match self.lock(file, &blob)? {
            Some(lock) => lock,
            // Another process finished it while this one waited.
            None => return self.link(&blob, &pointer),
        };
        let mut problem = String::new();
        for attempt in 0..2 {
            if attempt > 0 {
                tracing::warn!("{}: {name} {problem}; downloading it again", self.id);
            }
            match self.download(file, &blob) {
                Ok(()) => return self.link(&blob, &pointer),
                Err(Trouble::Fatal(e)) => return Err(e),
                Err(Trouble::Mismatch(p)) => {
                    problem = p;
                    self.discard(&pointer, file.etag);
                }
            }
        }
        Err(HubError::Corrupt {
            id: Box::new(self.id.clone()),
            file: name.to_string(),
            endpoint: self.settings.endpoint.clone(),
            detail: problem,
        })
    }

    fn complete(&self, blob: &Path, size: u64) -> bool {
        std::fs::metadata(blob).is_ok_and(|m| m.len() == size)
    }

    /// The blob's lock (`blobs/<etag>.lock`, an `flock` as `hf-hub` takes it), or `None` when
    /// the blob became complete while another process held it.
    ///
    /// Each rank of a job opens the same `model.init_from`: one downloads, the others wait and
    /// link its blob. The kernel frees a dead holder's lock, so waiting ends.
    fn lock(&self, file: &Wanted, blob: &Path) -> Result<Option<std::fs::File>, HubError> {
        let dir = blob.parent().expect("a blob is in blobs/");
        std::fs::create_dir_all(dir).map_err(super::io("creating", dir))?;
        let path = blob.with_extension("lock");
        let lock = std::fs::File::create(&path).map_err(super::io("creating", &path))?;
        let mut waiting = false;
        loop {
            match try_lock(&lock) {
                Ok(true) => {
                    return Ok(if self.complete(blob, file.size) {
                        None
                    } else {
                        Some(lock)
                    });
                }
                Ok(false) => {}
                Err(e) => return Err(super::io("locking", &path)(e)),
            }
            if !waiting {
                tracing::info!(
                    "{}: another process is downloading {} (it holds {}); waiting for it",
                    self.id,
                    file.name,
                    path.display()
                );
                waiting = true;
            }
            std::thread::sleep(std::time::Duration::from_secs(1));
            if self.complete(blob, file.size) {
                return Ok(None);
            }
        }
    }

    /// One file, at the listed commit (so every file is of one snapshot), into `blob`: the
    /// body appended to `blob.part`, continued after a broken connection up to [`RETRIES`]
    /// times, never past the listed size; renamed to `blob` once complete and as listed.
    fn download(&self, file: &Wanted, blob: &Path) -> Result<(), Trouble> {
        tracing::info!(
            "{}: downloading {} ({}) from {}",
            self.id,
            file.name,
            indicatif::HumanBytes(file.size),
            self.settings.endpoint
        );
        let part = blob.with_extension("part");
        // A `.part` as long as the file or longer cannot be continued: it starts over.
        if std::fs::metadata(&part).is_ok_and(|m| m.len() >= file.size) {
            std::fs::remove_file(&part)
                .map_err(|e| Trouble::Fatal(super::io("removing", &part)(e)))?;
        }
        let url = format!(
            "{}/{}/resolve/{}/{}",
            self.settings.endpoint, self.id.repo, self.commit, file.name
        );
        let bar = Bar::new(file.name, file.size);
        let mut retries = 0;
        loop {
            match self.append(file, &url, &part, &bar) {
                Ok(()) => break,
                Err(Interrupted(detail)) if retries < RETRIES => {
                    retries += 1;
                    tracing::warn!(
                        "{}: {} broke off ({detail}); continuing (retry {retries} of {RETRIES})",
                        self.id,
                        file.name
                    );
                    std::thread::sleep(std::time::Duration::from_millis(300 << retries));
                }
                Err(Interrupted(detail)) => {
                    return Err(Trouble::Fatal(unreachable(
                        self.id,
                        self.settings,
                        file.name,
                        format!(
                            "{detail} (after {RETRIES} retries; run again to continue where it \
                             stopped)"
                        ),
                    )));
                }
                Err(Stop(trouble)) => {
                    if let Trouble::Mismatch(_) = trouble {
                        // What arrived is not the listed file: nothing of it is continued.
                        std::fs::remove_file(&part).ok();
                    }
                    return Err(trouble);
                }
            }
        }
        bar.0.finish_and_clear();
        let len = std::fs::metadata(&part)
            .map_err(|e| Trouble::Fatal(super::io("reading", &part)(e)))?
            .len();
        if len != file.size {
            std::fs::remove_file(&part).ok();
            return Err(Trouble::Mismatch(format!(
                "arrived with {len} bytes, the Hub lists {}",
                file.size
            )));
        }
        std::fs::rename(&part, blob).map_err(|e| Trouble::Fatal(super::io("renaming", &part)(e)))
    }

    /// One request for the bytes `part` lacks, appended to it.
    fn append(&self, file: &Wanted, url: &str, part: &Path, bar: &Bar) -> Result<(), Attempt> {
        let fatal = |e: HubError| Stop(Trouble::Fatal(e));
        let have = std::fs::metadata(part).map_or(0, |m| m.len());
        let dir = part.parent().expect("a blob is in blobs/");
        let needed = file.size - have;
        if let Some(free) = crate::runtime::disk_free(dir)
            && free < needed
        {
            return Err(fatal(HubError::NoSpace {
                id: Box::new(self.id.clone()),
                file: file.name.to_string(),
                dir: dir.to_path_buf(),
                needed,
                free,
            }));
        }
        let range = format!("bytes={have}-");
        let answer = match self.client.get(url, Some(&range)) {
            Ok(a) => a,
            Err(Failure::Unreachable(detail)) => return Err(Interrupted(detail)),
            Err(other) => return Err(fatal(failure(self.id, self.settings, file.name, other))),
        };
        let mismatch = |m: String| Err(Stop(Trouble::Mismatch(m)));
        if let Some(served) = &answer.etag
            && served != file.etag
        {
            return mismatch(format!(
                "arrived as blob {}, the Hub lists {}",
                cache::shown(served),
                file.etag
            ));
        }
        if let Some(commit) = &answer.commit
            && *commit != self.commit
        {
            return mismatch(format!(
                "came from commit {}, the listing is of {}",
                cache::shown(commit),
                self.commit
            ));
        }
        let response = answer.response;
        let start = match response.status() {
            206 => {
                let range = response.header("content-range").unwrap_or("");
                match content_range(range) {
                    Some((start, total)) if start == have && total == file.size => have,
                    _ => {
                        return mismatch(format!(
                            "was answered with Content-Range {} for {range}, the Hub lists {} \
                             bytes",
                            cache::shown(range),
                            file.size
                        ));
                    }
                }
            }
            // The whole file (a server that ignores Range): written from the start.
            200 => 0,
            status => {
                return mismatch(format!("was answered with HTTP {status} for {range}"));
            }
        };
        let mut out = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(start == 0)
            .append(start > 0)
            .open(part)
            .map_err(|e| fatal(super::io("writing", part)(e)))?;
        bar.0.set_position(start);
        let allowed = file.size - start;
        let mut body = response.into_reader().take(allowed + 1);
        let mut buf = vec![0u8; 1 << 16];
        let mut written = 0u64;
        loop {
            let n = match body.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) if http::is_timeout(&e) => {
                    return Err(Interrupted(format!("no data for {}", self.client.limit())));
                }
                Err(e) => return Err(Interrupted(e.to_string())),
            };
            written += n as u64;
            if written > allowed {
                return mismatch(format!(
                    "is longer than the {} bytes the Hub lists (stopped reading there)",
                    file.size
                ));
            }
            out.write_all(&buf[..n])
                .map_err(|e| fatal(super::io("writing", part)(e)))?;
            bar.0.inc(n as u64);
        }
    }

    /// Removes a snapshot file and the blob behind it, so the next attempt starts clean.
    fn discard(&self, pointer: &Path, etag: &str) {
        if let Ok(target) = std::fs::canonicalize(pointer)
            && target.starts_with(&self.cache.dir)
        {
            std::fs::remove_file(target).ok();
        }
        std::fs::remove_file(self.cache.blob(etag)).ok();
        std::fs::remove_file(pointer).ok();
    }

    /// `pointer` → `blob` as a relative link, as `huggingface_hub` makes them (already there
    /// when another process linked it first).
    fn link(&self, blob: &Path, pointer: &Path) -> Result<(), HubError> {
        let parent = pointer.parent().expect("a snapshot file has a folder");
        std::fs::create_dir_all(parent).map_err(super::io("creating", parent))?;
        let name = blob.file_name().expect("a blob has a name");
        // One `..` for each folder of the file's path, two for `snapshots/<commit>`.
        let depth = pointer
            .strip_prefix(self.cache.snapshot(&self.commit))
            .map_or(1, |p| p.components().count());
        let mut target = PathBuf::new();
        for _ in 0..depth + 1 {
            target.push("..");
        }
        let target = target.join("blobs").join(name);
        match std::os::unix::fs::symlink(&target, pointer) {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && pointer.is_file() => Ok(()),
            other => other.map_err(super::io("linking", pointer)),
        }
    }
}

/// How one request of a transfer ended, when not with the rest of the file.
enum Attempt {
    /// The connection failed or broke off: worth continuing from what arrived.
    Interrupted(String),
    /// Anything else.
    Stop(Trouble),
}
use Attempt::{Interrupted, Stop};

/// An exclusive `flock` without waiting: `false` when another process holds it. (The kernel
/// releases it when the file closes or the process ends.)
fn try_lock(file: &std::fs::File) -> std::io::Result<bool> {
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a descriptor this process owns for the call's duration.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    if e.kind() == std::io::ErrorKind::WouldBlock {
        Ok(false)
    } else {
        Err(e)
    }
}

/// `bytes S-E/T` → `(S, T)`.
fn content_range(value: &str) -> Option<(u64, u64)> {
    let (span, total) = value.strip_prefix("bytes ")?.split_once('/')?;
    let (start, _) = span.split_once('-')?;
    Some((start.parse().ok()?, total.parse().ok()?))
}

/// Downloads show a byte progress bar on a terminal (nothing otherwise).
struct Bar(ProgressBar);

impl Bar {
    fn new(name: &str, size: u64) -> Self {
        let bar = ProgressBar::with_draw_target(Some(size), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "{msg} [{elapsed_precise}] [{wide_bar}] {bytes}/{total_bytes} {bytes_per_sec} ({eta})",
            )
            .expect("a valid template"),
        );
        bar.set_message(name.to_string());
        Self(bar)
    }
}

fn http(id: &HubId, s: &HubSettings, what: &str, detail: String) -> HubError {
    HubError::Http {
        id: Box::new(id.clone()),
        what: what.to_string(),
        endpoint: s.endpoint.clone(),
        detail,
    }
}

fn unreachable(id: &HubId, s: &HubSettings, what: &str, detail: String) -> HubError {
    HubError::Unreachable {
        id: Box::new(id.clone()),
        what: what.to_string(),
        endpoint: s.endpoint.clone(),
        detail,
    }
}

/// A failed request: the Hub's own error code (`X-Error-Code`) when it sent one, the status
/// otherwise; no answer at all is [`HubError::Unreachable`].
fn failure(id: &HubId, s: &HubSettings, what: &str, f: Failure) -> HubError {
    let (status, response) = match f {
        Failure::Status(status, response) => (status, response),
        Failure::Unreachable(detail) => return unreachable(id, s, what, detail),
        Failure::Broken(detail) => return http(id, s, what, detail),
    };
    let code = response.header("x-error-code").unwrap_or("").to_string();
    let message = response.header("x-error-message").map(str::to_string);
    let endpoint = s.endpoint.clone();
    match (status, code.as_str()) {
        (_, "RevisionNotFound") => HubError::RevisionNotFound {
            id: Box::new(id.clone()),
            endpoint,
        },
        (_, "GatedRepo") | (401 | 403, "") => HubError::Denied {
            id: Box::new(id.clone()),
            endpoint,
            status,
        },
        (_, "RepoNotFound") | (404, "") if what == "the file list" => HubError::RepoNotFound {
            id: Box::new(id.clone()),
            endpoint,
        },
        _ => http(
            id,
            s,
            what,
            format!(
                "HTTP {status} {}{}",
                response.status_text(),
                message.map(|m| format!(": {m}")).unwrap_or_default()
            ),
        ),
    }
}
