//! The Hugging Face cache layout, shared with Python's `huggingface_hub`:
//! `CACHE/models--ORG--NAME/blobs/<etag>` holds each file's bytes once,
//! `snapshots/<commit>/<file>` links to its blob, and `refs/<branch or tag>` holds the commit a
//! revision pointed at when it was last fetched. Also: which files the model-folder loader
//! needs, so a download fetches only those.
use std::path::{Path, PathBuf};

/// A Hugging Face CLIP (or SigLIP) folder: its config and weights, which must be there.
const HF_REQUIRED: [&str; 2] = ["config.json", "model.safetensors"];
/// ... and what the loader also reads when present: processor (image size, mean/std) and
/// tokenizer files; SigLIP repositories have a SentencePiece `spiece.model` instead of a
/// `tokenizer.json`.
const HF_OPTIONAL: [&str; 6] = [
    "preprocessor_config.json",
    "processor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "spiece.model",
];
/// An OpenCLIP folder (`hf-hub:` in OpenCLIP): `model_cfg` + `preprocess_cfg`, and weights.
const OPENCLIP_REQUIRED: [&str; 2] = ["open_clip_config.json", "open_clip_model.safetensors"];
const OPENCLIP_OPTIONAL: [&str; 3] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
];
/// Weights in PyTorch's pickle format, which cliptrain does not read.
const PICKLE_WEIGHTS: [&str; 2] = ["pytorch_model.bin", "open_clip_pytorch_model.bin"];

/// What to fetch from a repository that lists `files`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Choice {
    /// The files of one complete model folder (required first).
    Fetch(Vec<&'static str>),
    /// Only pickle weights: cliptrain needs them converted.
    PickleOnly,
    /// Neither kind of model folder.
    NotAModel,
}

/// The files of the first complete kind of folder, Hugging Face first unless `openclip_first`;
/// a repository with both kinds yields only the preferred one's (no weights fetched twice).
pub(crate) fn choose(files: &[&str], openclip_first: bool) -> Choice {
    let hf = (&HF_REQUIRED[..], &HF_OPTIONAL[..]);
    let oc = (&OPENCLIP_REQUIRED[..], &OPENCLIP_OPTIONAL[..]);
    let order = if openclip_first { [oc, hf] } else { [hf, oc] };
    for (required, optional) in order {
        if required.iter().all(|f| files.contains(f)) {
            let mut wanted: Vec<&'static str> = required.to_vec();
            wanted.extend(optional.iter().filter(|f| files.contains(f)));
            return Choice::Fetch(wanted);
        }
    }
    if PICKLE_WEIGHTS.iter().any(|f| files.contains(f)) {
        Choice::PickleOnly
    } else {
        Choice::NotAModel
    }
}

/// Whether `dir` holds a complete model folder of either kind.
pub(crate) fn loadable(dir: &Path) -> bool {
    [&HF_REQUIRED, &OPENCLIP_REQUIRED]
        .iter()
        .any(|req| req.iter().all(|f| dir.join(f).is_file()))
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

/// What to tell someone whose repository has only pickle weights.
pub(crate) fn convert_advice(repo: &str) -> String {
    format!(
        "cliptrain reads safetensors only: convert the weights and pass the folder instead \
         (transformers: CLIPModel.from_pretrained(\"{repo}\").save_pretrained(DIR) writes \
         model.safetensors; OpenCLIP: safetensors.torch.save_file(model.state_dict(), \
         \"DIR/open_clip_model.safetensors\") beside its open_clip_config.json), or use a \
         revision of the repository that has safetensors (e.g. the Hub's conversion pull \
         request: hf:{repo}@refs/pr/N)"
    )
}

/// One repository's folder in the cache.
pub(crate) struct RepoCache {
    pub dir: PathBuf,
}

impl RepoCache {
    pub fn new(cache_dir: &Path, repo: &str) -> Self {
        let folder = hf_hub::Repo::model(repo.to_string()).folder_name();
        Self {
            dir: cache_dir.join(folder),
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
    /// its ref recorded. `None` when neither is there.
    pub fn lookup(&self, revision: &str) -> Option<PathBuf> {
        if super::id::is_commit(revision) && self.snapshot(revision).is_dir() {
            return Some(self.snapshot(revision));
        }
        let commit = std::fs::read_to_string(self.ref_path(revision)).ok()?;
        let snapshot = self.snapshot(commit.trim());
        snapshot.is_dir().then_some(snapshot)
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
        assert_eq!(
            choose(&["config.json", "pytorch_model.bin"], false),
            Choice::PickleOnly
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
        assert_eq!(cache.lookup("main"), None);
        std::fs::create_dir_all(cache.snapshot(commit)).unwrap();
        assert_eq!(cache.lookup(commit), Some(cache.snapshot(commit)));
        assert_eq!(cache.lookup("main"), None);
        cache.write_ref("main", commit).unwrap();
        cache.write_ref("refs/pr/1", commit).unwrap();
        assert_eq!(cache.lookup("main"), Some(cache.snapshot(commit)));
        assert_eq!(cache.lookup("refs/pr/1"), Some(cache.snapshot(commit)));
        assert_eq!(
            std::fs::read_to_string(cache.dir.join("refs/main")).unwrap(),
            commit
        );
    }
}
