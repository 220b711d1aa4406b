//! Fetching a model's files from the Hub into the cache. `hf-hub` (its blocking `ureq` client)
//! does each file's transfer: a `Range: bytes=0-0` probe for the etag and commit, the body
//! appended to `blobs/<etag>.part` (continued from its length after an interrupted run, or
//! after a dropped connection within the retries), a lock per blob, the rename and the
//! snapshot link. Around it, this module lists the revision once (`/api/models/.../revision/`
//! with blob sizes and etags), skips files the snapshot already has, links a blob another
//! revision already fetched instead of downloading it again, checks every file's size and etag
//! against the listing, and turns HTTP failures into errors naming the id, file and server.
use super::cache::{self, Choice, RepoCache};
use super::{HubError, HubId, HubSettings};
use hf_hub::api::Progress;
use hf_hub::api::sync::{Api, ApiBuilder, ApiError};
use hf_hub::{Cache, Repo, RepoType};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::path::{Path, PathBuf};

/// Retries of a transfer that broke off; each continues from the bytes already on disk.
const RETRIES: usize = 3;

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

/// Where the downloads of one resolve go, and how they are reported.
struct Fetch<'a> {
    id: &'a HubId,
    settings: &'a HubSettings,
    cache: RepoCache,
    api: Api,
    commit: String,
}

/// Downloads what `id`'s revision needs that the cache lacks, and returns its snapshot folder.
pub(super) fn fetch(id: &HubId, settings: &HubSettings) -> Result<PathBuf, HubError> {
    let api = ApiBuilder::from_cache(Cache::new(settings.cache_dir.clone()))
        .with_endpoint(settings.endpoint.clone())
        .with_token(settings.token.clone())
        .with_progress(false)
        .with_retries(RETRIES)
        .with_user_agent("cliptrain", env!("CARGO_PKG_VERSION"))
        .build()
        .map_err(|e| http(id, settings, "the client", e.to_string()))?;
    let listing = list(&api, id, settings)?;
    let names: Vec<&str> = listing
        .siblings
        .iter()
        .map(|s| s.rfilename.as_str())
        .collect();
    let wanted = match cache::choose(&names, id.openclip) {
        Choice::Fetch(files) => files,
        choice => {
            return Err(HubError::NoWeights {
                id: Box::new(id.clone()),
                endpoint: settings.endpoint.clone(),
                found: names.join(", "),
                advice: match choice {
                    Choice::PickleOnly => match conversion_pr(id, settings) {
                        Some(n) => format!(
                            "; cliptrain reads safetensors only, and the Hub's conversion of this \
                             model to safetensors is its pull request {n}: use {}{}@refs/pr/{n}",
                            super::PREFIX,
                            id.repo
                        ),
                        None => format!("; {}", cache::convert_advice(&id.repo)),
                    },
                    _ => String::new(),
                },
            });
        }
    };
    let f = Fetch {
        id,
        settings,
        cache: RepoCache::new(&settings.cache_dir, &id.repo),
        api,
        commit: listing.sha.clone(),
    };
    // hf-hub records every download's commit as a ref named by itself; huggingface_hub never
    // writes such a ref, so one this call creates is removed again.
    let sha_ref = f.cache.ref_path(&f.commit);
    let had_sha_ref = sha_ref.exists();
    let result = wanted.iter().try_for_each(|name| {
        let sibling = listing.siblings.iter().find(|s| s.rfilename == *name);
        f.ensure(
            name,
            sibling.and_then(Sibling::etag),
            sibling.and_then(Sibling::size),
        )
    });
    if !had_sha_ref {
        // Absent when nothing was downloaded through hf-hub.
        std::fs::remove_file(&sha_ref).ok();
    }
    result?;
    if id.revision() != f.commit {
        f.cache
            .write_ref(id.revision(), &f.commit)
            .map_err(super::io("writing", &f.cache.ref_path(id.revision())))?;
    }
    Ok(f.cache.snapshot(&f.commit))
}

/// The revision's commit and files, from the Hub's API.
fn list(api: &Api, id: &HubId, s: &HubSettings) -> Result<Listing, HubError> {
    let repo = Repo::with_revision(id.repo.clone(), RepoType::Model, id.revision().to_string());
    let what = "the file list";
    let response = api
        .repo(repo)
        .info_request()
        .query("blobs", "true")
        .call()
        .map_err(|e| request_error(id, s, what, e))?;
    let text = response
        .into_string()
        .map_err(|e| unreachable(id, s, what, e.to_string()))?;
    serde_json::from_str(&text).map_err(|e| {
        http(
            id,
            s,
            what,
            format!("the answer is not the Hub's revision listing ({e}); is HF_ENDPOINT a Hub?"),
        )
    })
}

/// The open pull request in which the Hub's conversion bot added safetensors weights to a
/// repository that has only pickle ones (transformers finds and loads it the same way), if the
/// first page of its discussions has one. Only a hint for the error, so any failure is `None`.
fn conversion_pr(id: &HubId, s: &HubSettings) -> Option<u64> {
    let url = format!("{}/api/models/{}/discussions?p=0", s.endpoint, id.repo);
    let mut request = ureq::AgentBuilder::new()
        .try_proxy_from_env(true)
        .build()
        .get(&url);
    if let Some(token) = &s.token {
        request = request.set("Authorization", &format!("Bearer {token}"));
    }
    let text = request.call().ok()?.into_string().ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    json.get("discussions")?
        .as_array()?
        .iter()
        .find(|d| {
            d["title"] == "Adding `safetensors` variant of this model"
                && d["status"] == "open"
                && d["isPullRequest"] == true
        })?
        .get("num")?
        .as_u64()
}

impl Fetch<'_> {
    /// Makes `snapshots/<commit>/<name>` a complete file: already there, linked to a blob the
    /// cache has, or downloaded — and in the last case checked against the listing, with one
    /// fresh download when the first one does not match.
    fn ensure(&self, name: &str, etag: Option<&str>, size: Option<u64>) -> Result<(), HubError> {
        let pointer = self.cache.snapshot(&self.commit).join(name);
        match std::fs::metadata(&pointer) {
            Ok(m) if size.is_none_or(|s| s == m.len()) => return Ok(()),
            Ok(m) => {
                tracing::warn!(
                    "{}: the cached {name} has {} bytes, the Hub lists {}; downloading it again",
                    self.id,
                    m.len(),
                    size.unwrap_or_default()
                );
                self.discard(&pointer, etag);
            }
            Err(_) => {
                // A dangling link (its blob deleted) is replaced below.
                std::fs::remove_file(&pointer).ok();
            }
        }
        if let Some(etag) = etag {
            let blob = self.cache.blob(etag);
            if std::fs::metadata(&blob).is_ok_and(|m| size.is_none_or(|s| s == m.len())) {
                return self.link(&blob, &pointer);
            }
            // A `.part` as long as the file or longer cannot be continued (hf-hub would ask for
            // bytes past the end, or refuse it): it starts over.
            let part = blob.with_extension("part");
            if std::fs::metadata(&part).is_ok_and(|m| size.is_none_or(|s| m.len() >= s)) {
                std::fs::remove_file(&part).map_err(super::io("removing", &part))?;
            }
        }
        let mut problem = String::new();
        for attempt in 0..2 {
            if attempt > 0 {
                tracing::warn!("{}: {name} {problem}; downloading it again", self.id);
            }
            self.download(name, etag, size)?;
            match self.check(&pointer, etag, size) {
                Ok(()) => return Ok(()),
                Err(p) => {
                    problem = p;
                    self.discard(&pointer, etag);
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

    /// One file through hf-hub, at the listed commit (so every file is of one snapshot).
    ///
    /// Another process downloading the same blob (each rank of a job opening the same
    /// `model.init_from`) holds its lock: this one waits, and links the blob once it is there.
    fn download(&self, name: &str, etag: Option<&str>, size: Option<u64>) -> Result<(), HubError> {
        tracing::info!(
            "{}: downloading {name}{} from {}",
            self.id,
            size.map(|s| format!(" ({})", indicatif::HumanBytes(s)))
                .unwrap_or_default(),
            self.settings.endpoint
        );
        let repo = Repo::with_revision(self.id.repo.clone(), RepoType::Model, self.commit.clone());
        let pointer = self.cache.snapshot(&self.commit).join(name);
        let mut waiting = false;
        loop {
            match self
                .api
                .repo(repo.clone())
                .download_with_progress(name, Bar::new())
            {
                Ok(_) => return Ok(()),
                Err(ApiError::LockAcquisition(lock)) => {
                    if !waiting {
                        tracing::info!(
                            "{}: another process is downloading {name} (it holds {}); waiting \
                             for it",
                            self.id,
                            lock.display()
                        );
                        waiting = true;
                    }
                    // hf-hub gave up after about 5 s; the holder is alive (the kernel frees a
                    // dead process's lock), so its blob arrives or the lock frees.
                    std::thread::sleep(std::time::Duration::from_secs(1));
                    if let Some(etag) = etag {
                        let blob = self.cache.blob(etag);
                        if std::fs::metadata(&blob).is_ok_and(|m| size.is_none_or(|s| s == m.len()))
                        {
                            return self.link(&blob, &pointer);
                        }
                    }
                }
                Err(e) => return Err(api_error(self.id, self.settings, name, e)),
            }
        }
    }

    /// What is wrong with a downloaded file, if anything: its size, or the blob (etag) the
    /// server sent it as.
    fn check(&self, pointer: &Path, etag: Option<&str>, size: Option<u64>) -> Result<(), String> {
        let len = std::fs::metadata(pointer)
            .map_err(|e| format!("is not in the snapshot after the download ({e})"))?
            .len();
        if let Some(size) = size
            && len != size
        {
            return Err(format!("arrived with {len} bytes, the Hub lists {size}"));
        }
        if let Some(etag) = etag {
            let served = std::fs::read_link(pointer)
                .ok()
                .and_then(|t| t.file_name().map(|n| n.to_string_lossy().into_owned()));
            if served.as_deref() != Some(etag) {
                return Err(format!(
                    "arrived as blob {}, the Hub lists {etag}",
                    served.unwrap_or_else(|| "(not a link)".into())
                ));
            }
        }
        Ok(())
    }

    /// Removes a snapshot file and the blob behind it, so the next attempt starts clean.
    fn discard(&self, pointer: &Path, etag: Option<&str>) {
        if let Ok(target) = std::fs::canonicalize(pointer) {
            std::fs::remove_file(target).ok();
        }
        if let Some(etag) = etag {
            std::fs::remove_file(self.cache.blob(etag)).ok();
        }
        std::fs::remove_file(pointer).ok();
    }

    /// `pointer` → `blob` as a relative link, as `huggingface_hub` makes them (already there
    /// when another process linked it first).
    fn link(&self, blob: &Path, pointer: &Path) -> Result<(), HubError> {
        let parent = pointer.parent().expect("a snapshot file has a folder");
        std::fs::create_dir_all(parent).map_err(super::io("creating", parent))?;
        let name = blob.file_name().expect("a blob has a name");
        let target = Path::new("../../blobs").join(name);
        match std::os::unix::fs::symlink(&target, pointer) {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && pointer.is_file() => Ok(()),
            other => other.map_err(super::io("linking", pointer)),
        }
    }
}

/// Downloads show a byte progress bar on a terminal (nothing otherwise).
struct Bar(ProgressBar);

impl Bar {
    fn new() -> Self {
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "{msg} [{elapsed_precise}] [{wide_bar}] {bytes}/{total_bytes} {bytes_per_sec} ({eta})",
            )
            .expect("a valid template"),
        );
        Self(bar)
    }
}

impl Progress for Bar {
    // hf-hub calls `init` again when it continues a file, then reports the bytes already
    // there: each start begins at zero so they are not counted twice.
    fn init(&mut self, size: usize, filename: &str) {
        self.0.set_length(size as u64);
        self.0.set_position(0);
        self.0.set_message(filename.to_string());
    }

    fn update(&mut self, size: usize) {
        self.0.inc(size as u64);
    }

    fn finish(&mut self) {
        self.0.finish_and_clear();
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
fn request_error(id: &HubId, s: &HubSettings, what: &str, e: ureq::Error) -> HubError {
    let (status, response) = match e {
        ureq::Error::Status(status, response) => (status, response),
        ureq::Error::Transport(t) => return unreachable(id, s, what, t.to_string()),
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

/// hf-hub's error for one file, named and explained.
fn api_error(id: &HubId, s: &HubSettings, file: &str, e: ApiError) -> HubError {
    match e {
        ApiError::RequestError(e) => request_error(id, s, file, *e),
        ApiError::TooManyRetries(e) => match api_error(id, s, file, *e) {
            HubError::Unreachable { detail, .. } => unreachable(
                id,
                s,
                file,
                format!(
                    "{detail} (after {RETRIES} retries; run again to continue where it stopped)"
                ),
            ),
            other => other,
        },
        ApiError::IoError(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => unreachable(
            id,
            s,
            file,
            format!("{e} (run again to continue where it stopped)"),
        ),
        ApiError::IoError(e) => HubError::Io {
            op: "downloading into",
            path: s.cache_dir.clone(),
            source: e,
        },
        ApiError::MissingHeader(h) => http(
            id,
            s,
            file,
            format!("the answer has no {h} header; is HF_ENDPOINT a Hugging Face Hub?"),
        ),
        other => http(id, s, file, other.to_string()),
    }
}
