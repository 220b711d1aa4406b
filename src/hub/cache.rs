//! The Hugging Face cache layout, shared with Python's `huggingface_hub`:
//! `CACHE/models--ORG--NAME/blobs/<etag>` holds each file's bytes once,
//! `snapshots/<commit>/<file>` links to its blob, and `refs/<branch or tag>` holds the commit a
//! revision pointed at when it was last fetched. Also: which files the model-folder loader
//! needs, so a download fetches only those.
//!
//! Every name that becomes a path here and comes from outside (a commit or etag a server sent,
//! a ref file's content) passes one of the `check_*` rules first: a hostile or broken server
//! (or a damaged cache) must not choose where files are written or read.
use std::path::{Path, PathBuf};

/// The longest etag taken as a blob name (the Hub's are 40 or 64 hex digits).
const MAX_ETAG_LEN: usize = 128;
/// How much of a refused value a message shows.
const SHOWN: usize = 100;

/// A commit as the cache names snapshots: 40 lowercase hex digits.
pub(crate) fn check_commit(value: &str) -> Result<(), String> {
    if super::id::is_commit(value) {
        Ok(())
    } else {
        Err("a commit hash is 40 lowercase hex digits".into())
    }
}

/// An etag as the cache names blobs: 1 to 128 letters, digits, `-` or `_` (no `/`, `.`, NUL).
pub(crate) fn check_etag(value: &str) -> Result<(), String> {
    let token = !value.is_empty()
        && value.len() <= MAX_ETAG_LEN
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if token {
        Ok(())
    } else {
        Err(format!(
            "an etag is 1 to {MAX_ETAG_LEN} letters, digits, '-' or '_'"
        ))
    }
}

/// A file's path inside a repository: relative, `/`-separated, no empty, `.` or `..` part, no
/// NUL or backslash, at most 1,024 bytes.
pub(crate) fn check_repo_path(value: &str) -> Result<(), String> {
    let parts_ok = value
        .split('/')
        .all(|p| !p.is_empty() && p != "." && p != "..");
    if value.len() <= 1024 && parts_ok && !value.contains(['\0', '\\']) {
        Ok(())
    } else {
        Err("a file in a repository is a relative path without '..', '.' or empty parts".into())
    }
}

/// `value` as a message shows it: quoted, escaped, cut to 100 characters.
pub(crate) fn shown(value: &str) -> String {
    if value.chars().count() <= SHOWN {
        format!("{value:?}")
    } else {
        let cut: String = value.chars().take(SHOWN).collect();
        format!("{cut:?}... ({} bytes)", value.len())
    }
}

/// A Hugging Face CLIP (or SigLIP) folder: its config, and its weights in one of two formats
/// (safetensors preferred, as transformers prefers it).
const HF_CONFIG: &str = "config.json";
const HF_WEIGHTS: [&str; 2] = ["model.safetensors", "pytorch_model.bin"];
/// ... and what the loader also reads when present: processor (image size, mean/std) and
/// tokenizer files; SigLIP repositories have a SentencePiece `spiece.model` instead of a
/// `tokenizer.json`.
const HF_OPTIONAL: [&str; 8] = [
    "preprocessor_config.json",
    "processor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "spiece.model",
    "sentencepiece.bpe.model",
    "tokenizer.model",
];
/// An OpenCLIP folder (`hf-hub:` in OpenCLIP): `model_cfg` + `preprocess_cfg`, and weights.
const OPENCLIP_CONFIG: &str = "open_clip_config.json";
const OPENCLIP_WEIGHTS: [&str; 2] = ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"];
const OPENCLIP_OPTIONAL: [&str; 3] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
];

/// What to fetch from a repository that lists `files`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Choice {
    /// The files of one complete model folder (config and weights first).
    Fetch(Vec<&'static str>),
    /// Neither kind of model folder.
    NotAModel,
}

/// The kinds of folder, in the order they are tried.
fn kinds(openclip_first: bool) -> [(&'static str, [&'static str; 2], &'static [&'static str]); 2] {
    let hf = (HF_CONFIG, HF_WEIGHTS, &HF_OPTIONAL[..]);
    let oc = (OPENCLIP_CONFIG, OPENCLIP_WEIGHTS, &OPENCLIP_OPTIONAL[..]);
    if openclip_first { [oc, hf] } else { [hf, oc] }
}

/// The files of the first complete kind of folder, Hugging Face first unless `openclip_first`;
/// one weights file only (safetensors when listed), and a repository with both kinds yields
/// only the preferred one's (no weights fetched twice).
pub(crate) fn choose(files: &[&str], openclip_first: bool) -> Choice {
    for (config, weights, optional) in kinds(openclip_first) {
        let Some(w) = weights.iter().find(|w| files.contains(w)) else {
            continue;
        };
        if files.contains(&config) {
            let mut wanted = vec![config, *w];
            wanted.extend(optional.iter().filter(|f| files.contains(f)));
            return Choice::Fetch(wanted);
        }
    }
    Choice::NotAModel
}

/// Whether `dir` holds a complete model folder of either kind.
pub(crate) fn loadable(dir: &Path) -> bool {
    kinds(false).iter().any(|(config, weights, _)| {
        dir.join(config).is_file() && weights.iter().any(|w| dir.join(w).is_file())
    })
}

/// File names for a message: the first 20, and how many more (a listing may have 10^5).
pub(crate) fn listed(names: &[&str]) -> String {
    const SHOWN_NAMES: usize = 20;
    let mut text = names
        .iter()
        .take(SHOWN_NAMES)
        .copied()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > SHOWN_NAMES {
        text.push_str(&format!(" and {} more", names.len() - SHOWN_NAMES));
    }
    text
}

/// The file names in `dir`, sorted (for messages).
pub(crate) fn file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// One repository's folder in the cache.
pub(crate) struct RepoCache {
    pub dir: PathBuf,
}

impl RepoCache {
    /// `repo` is a checked [`super::HubId`] repository (`ORG/NAME`, no `..`).
    pub fn new(cache_dir: &Path, repo: &str) -> Self {
        Self {
            dir: cache_dir.join(format!("models--{}", repo.replace('/', "--"))),
        }
    }

    pub fn snapshot(&self, commit: &str) -> PathBuf {
        self.dir.join("snapshots").join(commit)
    }

    pub fn blob(&self, etag: &str) -> PathBuf {
        self.dir.join("blobs").join(etag)
    }

    pub fn ref_path(&self, revision: &str) -> PathBuf {
        self.dir.join("refs").join(revision)
    }

    /// The snapshot folder `revision` names in the cache: a commit hash's own, or the commit
    /// its ref recorded. `None` when neither is there; an error when the ref file holds
    /// something other than a commit (it would name a folder outside the snapshots).
    pub fn lookup(&self, revision: &str) -> Result<Option<PathBuf>, super::HubError> {
        if super::id::is_commit(revision) && self.snapshot(revision).is_dir() {
            return Ok(Some(self.snapshot(revision)));
        }
        let path = self.ref_path(revision);
        // A ref is one line of 41 bytes at most; more is not read.
        let Ok(file) = std::fs::File::open(&path) else {
            return Ok(None);
        };
        let mut text = String::new();
        use std::io::Read;
        if file.take(256).read_to_string(&mut text).is_err() {
            text = "(not UTF-8 text)".into();
        }
        let commit = text.trim();
        check_commit(commit).map_err(|rule| super::HubError::BadCacheFile {
            path: path.clone(),
            reason: format!("it holds {} where {rule}", shown(commit)),
        })?;
        let snapshot = self.snapshot(commit);
        Ok(snapshot.is_dir().then_some(snapshot))
    }

    /// Records that `revision` (a branch or tag) now points at `commit`, as
    /// `huggingface_hub` does; written beside and renamed, so a reader never sees half.
    pub fn write_ref(&self, revision: &str, commit: &str) -> std::io::Result<()> {
        let path = self.ref_path(revision);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
        std::fs::write(&tmp, commit)?;
        std::fs::rename(&tmp, &path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_preferred_complete_folder_is_fetched_and_nothing_else() {
        let both = [
            "README.md",
            "config.json",
            "model.safetensors",
            "pytorch_model.bin",
            "tokenizer.json",
            "preprocessor_config.json",
            "open_clip_config.json",
            "open_clip_model.safetensors",
            "open_clip_pytorch_model.bin",
        ];
        assert_eq!(
            choose(&both, false),
            Choice::Fetch(vec![
                "config.json",
                "model.safetensors",
                "preprocessor_config.json",
                "tokenizer.json"
            ])
        );
        assert_eq!(
            choose(&both, true),
            Choice::Fetch(vec![
                "open_clip_config.json",
                "open_clip_model.safetensors",
                "tokenizer.json"
            ])
        );
        // Asked for the Hugging Face kind, a repository with only OpenCLIP files gives those.
        let oc_only = ["open_clip_config.json", "open_clip_model.safetensors"];
        assert_eq!(choose(&oc_only, false), Choice::Fetch(oc_only.to_vec()));
        // PyTorch weights when there are no safetensors.
        assert_eq!(
            choose(&["config.json", "pytorch_model.bin"], false),
            Choice::Fetch(vec!["config.json", "pytorch_model.bin"])
        );
        assert_eq!(
            choose(
                &["open_clip_config.json", "open_clip_pytorch_model.bin"],
                false
            ),
            Choice::Fetch(vec!["open_clip_config.json", "open_clip_pytorch_model.bin"])
        );
        assert_eq!(
            choose(&["config.json", "README.md"], false),
            Choice::NotAModel
        );
    }

    #[test]
    fn revisions_are_looked_up_through_refs_or_as_commits() {
        let d = tempfile::tempdir().unwrap();
        let cache = RepoCache::new(d.path(), "org/name");
        assert!(cache.dir.ends_with("models--org--name"));
        let commit = "0123456789abcdef0123456789abcdef01234567";
        let found = |rev: &str| cache.lookup(rev).unwrap();
        assert_eq!(found("main"), None);
        std::fs::create_dir_all(cache.snapshot(commit)).unwrap();
        assert_eq!(found(commit), Some(cache.snapshot(commit)));
        assert_eq!(found("main"), None);
        cache.write_ref("main", commit).unwrap();
        cache.write_ref("refs/pr/1", commit).unwrap();
        assert_eq!(found("main"), Some(cache.snapshot(commit)));
        assert_eq!(found("refs/pr/1"), Some(cache.snapshot(commit)));
        assert_eq!(
            std::fs::read_to_string(cache.dir.join("refs/main")).unwrap(),
            commit
        );
    }

    #[test]
    fn a_ref_that_is_not_a_commit_is_refused_naming_its_file() {
        let d = tempfile::tempdir().unwrap();
        let cache = RepoCache::new(d.path(), "org/name");
        std::fs::create_dir_all(cache.dir.join("snapshots")).unwrap();
        for content in [
            "../..",
            "/etc",
            "../../../../etc\n",
            "",
            "x".repeat(10_000).as_str(),
        ] {
            std::fs::create_dir_all(cache.dir.join("refs")).unwrap();
            std::fs::write(cache.ref_path("main"), content).unwrap();
            let e = cache.lookup("main").unwrap_err().to_string();
            assert!(
                e.contains("refs/main") && e.contains("40 lowercase hex"),
                "{e}"
            );
            assert!(e.len() < 600, "{e}");
        }
    }

    #[test]
    fn names_from_servers_follow_the_cache_rules() {
        assert!(check_commit(&"a".repeat(40)).is_ok());
        for bad in [
            "/etc/passwd",
            "../../../x",
            &"A".repeat(40),
            &"a".repeat(41),
            "",
        ] {
            assert!(check_commit(bad).is_err(), "{bad}");
        }
        assert!(check_etag(&"0f".repeat(32)).is_ok());
        for bad in ["/tmp/x", "../x", "a/b", "a.b", "", "a\0b", &"a".repeat(129)] {
            assert!(check_etag(bad).is_err(), "{bad}");
        }
        assert!(check_repo_path("config.json").is_ok());
        assert!(check_repo_path("sub/dir/file.bin").is_ok());
        for bad in ["/abs", "../up", "a/../b", "a//b", "./a", "a\0", "a\\b", ""] {
            assert!(check_repo_path(bad).is_err(), "{bad}");
        }
    }
}
