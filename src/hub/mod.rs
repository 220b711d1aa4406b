//! Models on the Hugging Face Hub: `hf:ORG/NAME[@REVISION]` (or OpenCLIP's `hf-hub:`) wherever
//! a model folder is taken — `model.init_from`, `--checkpoint` — resolves to a snapshot folder
//! of the standard Hugging Face cache, downloaded when missing, so the rest of cliptrain only
//! ever sees a folder.
//!
//! The cache is the one Python's `huggingface_hub` uses (`HF_HOME`, `HF_HUB_CACHE`), files are
//! fetched from `HF_ENDPOINT` with `HF_TOKEN`, and `HF_HUB_OFFLINE=1` reads the cache only (see
//! [`HubSettings::from_vars`]). Only the files the folder loader reads are fetched.
mod cache;
mod download;
mod http;
mod id;
mod settings;

pub use id::{HubId, IdError, OPENCLIP_PREFIX, PREFIX};
pub use settings::{DEFAULT_ENDPOINT, HubSettings, SettingsError};

use std::borrow::Cow;
use std::path::{Path, PathBuf};

/// Why a Hub id could not be turned into a local folder.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error(
        "{spelled:?} is not a Hugging Face Hub model id (hf:ORG/NAME or hf:ORG/NAME@REVISION): \
         {reason}"
    )]
    BadId { spelled: String, reason: String },
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error(
        "{id} is not in the Hugging Face cache {} and HF_HUB_OFFLINE=1 is set: download it once \
         with network access (`cliptrain download {id}`, or `huggingface-cli download {}{}` \
         with the same HF_HOME / HF_HUB_CACHE), or unset HF_HUB_OFFLINE",
        cache_dir.display(), id.repo,
        id.revision.as_ref().map(|r| format!(" --revision {r}")).unwrap_or_default()
    )]
    NotCached { id: Box<HubId>, cache_dir: PathBuf },
    #[error(
        "{id}: the cached snapshot {} has no model cliptrain reads (config.json + \
         model.safetensors or pytorch_model.bin, or open_clip_config.json + \
         open_clip_model.safetensors or open_clip_pytorch_model.bin); it has: {found}; download \
         the model with network access (without HF_HUB_OFFLINE)",
        dir.display()
    )]
    IncompleteSnapshot {
        id: Box<HubId>,
        dir: PathBuf,
        found: String,
    },
    #[error(
        "{id}: {endpoint} has no model repository {} (check the name; a private or gated one \
         also needs HF_TOKEN)",
        id.repo
    )]
    RepoNotFound { id: Box<HubId>, endpoint: String },
    #[error(
        "{id}: {} on {endpoint} has no revision {:?} (a branch, a tag or a full commit hash)",
        id.repo, id.revision()
    )]
    RevisionNotFound { id: Box<HubId>, endpoint: String },
    #[error(
        "{id}: {endpoint} refused access (HTTP {status}): the repository is private or gated; \
         set HF_TOKEN to a token that may read it (for a gated model, accept its terms on the \
         Hub first)"
    )]
    Denied {
        id: Box<HubId>,
        endpoint: String,
        status: u16,
    },
    #[error(
        "{id}: could not reach {endpoint} for {what}: {detail} (HF_ENDPOINT chooses the server; \
         with HF_HUB_OFFLINE=1 a model already in the cache is used without asking it)"
    )]
    Unreachable {
        id: Box<HubId>,
        what: String,
        endpoint: String,
        detail: String,
    },
    #[error("{id}: fetching {what} from {endpoint} failed: {detail}")]
    Http {
        id: Box<HubId>,
        what: String,
        endpoint: String,
        detail: String,
    },
    #[error(
        "{id}: the repository on {endpoint} has no model cliptrain reads (config.json + \
         model.safetensors or pytorch_model.bin, or open_clip_config.json + \
         open_clip_model.safetensors or open_clip_pytorch_model.bin); it has: {found}"
    )]
    NoWeights {
        id: Box<HubId>,
        endpoint: String,
        found: String,
    },
    #[error(
        "{id}: {file} from {endpoint} {detail}, twice; the bad copy was removed (a proxy or \
         mirror that alters files?)"
    )]
    Corrupt {
        id: Box<HubId>,
        file: String,
        endpoint: String,
        detail: String,
    },
    #[error(
        "{id}: refused {what} {value} from {endpoint}: {rule}; nothing was written (is \
         HF_ENDPOINT a Hugging Face Hub, or is a proxy altering its answers?)"
    )]
    BadName {
        id: Box<HubId>,
        what: String,
        value: String,
        endpoint: String,
        rule: String,
    },
    #[error(
        "{}: {reason}; huggingface_hub and cliptrain never write that: delete the file (a \
         download with network access writes it again)",
        path.display()
    )]
    BadCacheFile { path: PathBuf, reason: String },
    #[error(
        "{id}: {file} needs {} on the disk of {}, which has {} free: free space, or point \
         HF_HUB_CACHE (or HF_HOME) at a disk that has it",
        indicatif::HumanBytes(*needed), dir.display(), indicatif::HumanBytes(*free)
    )]
    NoSpace {
        id: Box<HubId>,
        file: String,
        dir: PathBuf,
        needed: u64,
        free: u64,
    },
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> HubError {
    let path = path.to_path_buf();
    move |source| HubError::Io { op, path, source }
}

/// `path` itself, or — when it is written as a Hub id — the local snapshot folder of that
/// model (see [`resolve`]).
pub fn locate(path: &Path) -> Result<Cow<'_, Path>, HubError> {
    let Some(text) = path.to_str() else {
        return Ok(Cow::Borrowed(path));
    };
    match parse(text)? {
        None => Ok(Cow::Borrowed(path)),
        Some(id) => resolve(&id).map(Cow::Owned),
    }
}

/// [`HubId::parse`], its error naming what was written.
pub fn parse(location: &str) -> Result<Option<HubId>, HubError> {
    HubId::parse(location).map_err(|e| HubError::BadId {
        spelled: location.to_string(),
        reason: e.reason,
    })
}

/// [`resolve_with`] the settings of this process's environment.
pub fn resolve(id: &HubId) -> Result<PathBuf, HubError> {
    resolve_with(id, &HubSettings::from_env()?)
}

/// The local snapshot folder of `id`: from the cache alone when offline or when the revision is
/// a commit the cache has; otherwise the revision is listed on the server and what the cache
/// lacks is downloaded (when the server cannot be reached, a cached snapshot of the revision
/// is used with a warning, as `huggingface_hub` does).
pub fn resolve_with(id: &HubId, settings: &HubSettings) -> Result<PathBuf, HubError> {
    let cached = match cache::RepoCache::new(&settings.cache_dir, &id.repo).lookup(id.revision()) {
        Ok(found) => found,
        // Online, the listing names the commit and the ref is written again.
        Err(e) if !settings.offline => {
            tracing::warn!("{e}");
            None
        }
        Err(e) => return Err(e),
    };
    if settings.offline {
        let dir = cached.ok_or_else(|| HubError::NotCached {
            id: Box::new(id.clone()),
            cache_dir: settings.cache_dir.clone(),
        })?;
        return complete(id, dir);
    }
    if let Some(dir) = &cached
        && id.pins_commit()
        && cache::loadable(dir)
    {
        return Ok(dir.clone());
    }
    match download::fetch(id, settings) {
        Err(e @ HubError::Unreachable { .. }) => match cached {
            Some(dir) if cache::loadable(&dir) => {
                tracing::warn!("{e}; using the cached snapshot {}", dir.display());
                Ok(dir)
            }
            _ => Err(e),
        },
        other => other,
    }
}

/// A cached snapshot that holds a model, or the error saying what it holds instead.
fn complete(id: &HubId, dir: PathBuf) -> Result<PathBuf, HubError> {
    if cache::loadable(&dir) {
        return Ok(dir);
    }
    let found = cache::file_names(&dir);
    Err(HubError::IncompleteSnapshot {
        id: Box::new(id.clone()),
        found: if found.is_empty() {
            "no files".into()
        } else {
            cache::listed(&found.iter().map(String::as_str).collect::<Vec<_>>())
        },
        dir,
    })
}
