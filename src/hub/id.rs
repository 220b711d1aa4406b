//! `hf:ORG/NAME[@REVISION]` (and OpenCLIP's `hf-hub:` spelling): what a model id on the Hub
//! looks like, checked before anything touches the network.
use std::fmt;

/// The prefix cliptrain documents.
pub const PREFIX: &str = "hf:";
/// OpenCLIP's spelling (`open_clip.create_model('hf-hub:ORG/NAME')`), accepted as well; it
/// prefers the repository's OpenCLIP files when it has both kinds.
pub const OPENCLIP_PREFIX: &str = "hf-hub:";

/// The Hub's own limit on a repository name (`ORG/NAME` without the prefix).
const MAX_REPO_LEN: usize = 96;

/// A model repository on the Hub and the revision wanted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubId {
    /// `ORG/NAME`.
    pub repo: String,
    /// A branch, a tag or a commit hash; `None` is the default branch (`main`).
    pub revision: Option<String>,
    /// Written `hf-hub:`: the repository's OpenCLIP files are preferred over its Hugging Face
    /// ones when it has both.
    pub openclip: bool,
}

/// Why a string that starts like a Hub id is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct IdError {
    pub reason: String,
}

impl HubId {
    /// `Ok(None)` when `location` is not written as a Hub id (a local path); an error when it
    /// starts with `hf:` or `hf-hub:` but the rest is not `ORG/NAME[@REVISION]`.
    pub fn parse(location: &str) -> Result<Option<HubId>, IdError> {
        let (rest, openclip) = if let Some(rest) = location.strip_prefix(PREFIX) {
            (rest, false)
        } else if let Some(rest) = location.strip_prefix(OPENCLIP_PREFIX) {
            (rest, true)
        } else {
            return Ok(None);
        };
        let bad = |reason: String| Err(IdError { reason });
        let (repo, revision) = match rest.split_once('@') {
            Some((repo, rev)) => (repo, Some(rev)),
            None => (rest, None),
        };
        if let Err(reason) = check_repo(repo) {
            return bad(reason);
        }
        if let Some(rev) = revision
            && let Err(reason) = check_revision(rev)
        {
            return bad(reason);
        }
        Ok(Some(HubId {
            repo: repo.to_string(),
            revision: revision.map(str::to_string),
            openclip,
        }))
    }

    /// The revision asked for, `main` when none was.
    pub fn revision(&self) -> &str {
        self.revision.as_deref().unwrap_or("main")
    }

    /// Whether the revision is a full commit hash, which names one snapshot forever.
    pub fn pins_commit(&self) -> bool {
        is_commit(self.revision())
    }
}

impl fmt::Display for HubId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let prefix = if self.openclip {
            OPENCLIP_PREFIX
        } else {
            PREFIX
        };
        write!(f, "{prefix}{}", self.repo)?;
        if let Some(rev) = &self.revision {
            write!(f, "@{rev}")?;
        }
        Ok(())
    }
}

/// A full git commit hash (40 lowercase hex digits), as the Hub and its cache spell them.
pub(crate) fn is_commit(rev: &str) -> bool {
    rev.len() == 40
        && rev
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The Hub's rule for repository ids: `ORG/NAME`, each part letters, digits, `-`, `_`, `.`,
/// not starting or ending with `-` or `.`, no `--` or `..`, at most 96 characters.
fn check_repo(repo: &str) -> Result<(), String> {
    let parts: Vec<&str> = repo.split('/').collect();
    if parts.len() != 2 || parts.iter().any(|p| p.is_empty()) {
        return Err(format!("{repo:?} is not ORG/NAME"));
    }
    if repo.len() > MAX_REPO_LEN {
        return Err(format!(
            "{repo:?} is longer than the Hub's {MAX_REPO_LEN} characters"
        ));
    }
    for part in parts {
        if let Some(c) = part
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
        {
            return Err(format!(
                "{part:?} has {c:?}; Hub names use letters, digits, '-', '_' and '.'"
            ));
        }
        if part.starts_with(['-', '.']) || part.ends_with(['-', '.']) {
            return Err(format!(
                "{part:?} starts or ends with '-' or '.', which Hub names do not"
            ));
        }
        if part.contains("--") || part.contains("..") {
            return Err(format!("{part:?} has '--' or '..', which Hub names do not"));
        }
    }
    Ok(())
}

/// A branch, tag or commit: not empty, no whitespace or control characters, no `..` (it
/// becomes a path in the cache's `refs/`), not starting or ending with `/`.
fn check_revision(rev: &str) -> Result<(), String> {
    if rev.is_empty() {
        return Err(
            "the revision after '@' is empty; write hf:ORG/NAME@REVISION (a branch, \
                    a tag or a commit hash) or leave out the '@'"
                .into(),
        );
    }
    if rev.chars().any(|c| c.is_whitespace() || c.is_control()) || rev.contains("..") {
        return Err(format!(
            "the revision {rev:?} has spaces, control characters or '..'"
        ));
    }
    if rev.starts_with('/') || rev.ends_with('/') || rev.contains('@') || rev.contains('\\') {
        return Err(format!(
            "the revision {rev:?} is not a branch, a tag or a commit hash"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_parse_with_and_without_a_revision() {
        let id = HubId::parse("hf:openai/clip-vit-base-patch32")
            .unwrap()
            .unwrap();
        assert_eq!(id.repo, "openai/clip-vit-base-patch32");
        assert_eq!(id.revision(), "main");
        assert!(!id.openclip);
        assert_eq!(id.to_string(), "hf:openai/clip-vit-base-patch32");

        let id = HubId::parse("hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K@refs/pr/3")
            .unwrap()
            .unwrap();
        assert!(id.openclip);
        assert_eq!(id.revision(), "refs/pr/3");
        assert!(!id.pins_commit());
        let sha = "a".repeat(40);
        let id = HubId::parse(&format!("hf:o/n@{sha}")).unwrap().unwrap();
        assert!(id.pins_commit());
    }

    #[test]
    fn paths_are_not_ids() {
        for path in ["runs/demo", "/abs/hf:x", "hf/clip", "./hf:o/n", ""] {
            assert_eq!(HubId::parse(path), Ok(None), "{path}");
        }
    }

    #[test]
    fn malformed_ids_say_what_is_wrong() {
        for (id, says) in [
            ("hf:", "not ORG/NAME"),
            ("hf:clip", "not ORG/NAME"),
            ("hf:a/b/c", "not ORG/NAME"),
            ("hf:/name", "not ORG/NAME"),
            ("hf:org/na me", "has ' '"),
            ("hf:org/-name", "starts or ends"),
            ("hf:org/na--me", "'--'"),
            ("hf:org/name@", "is empty"),
            ("hf:org/name@a b", "spaces"),
            ("hf:org/name@../x", "'..'"),
            ("hf:org/name@v1@v2", "not a branch"),
        ] {
            let err = HubId::parse(id).expect_err(id);
            assert!(err.reason.contains(says), "{id}: {}", err.reason);
        }
        let long = format!("hf:org/{}", "n".repeat(100));
        assert!(HubId::parse(&long).unwrap_err().reason.contains("96"));
    }
}
