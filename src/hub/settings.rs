//! Where the cache is, which server, which token, online or not: read from the same
//! environment variables Python's `huggingface_hub` reads, so both share one cache.
use std::path::PathBuf;
use std::time::Duration;

/// The public Hub.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";
/// `huggingface_hub`'s defaults for both timeouts, in seconds.
const DEFAULT_TIMEOUT_S: f64 = 10.0;
/// A day: a longer wait is a typo, not a slow network.
const MAX_TIMEOUT_S: f64 = 86_400.0;

/// How [`super::resolve_with`] reaches the Hub and where it keeps files.
#[derive(Clone, PartialEq, Eq)]
pub struct HubSettings {
    /// The hub cache (`models--ORG--NAME/{blobs,snapshots,refs}` inside).
    pub cache_dir: PathBuf,
    /// The server, without a trailing `/`.
    pub endpoint: String,
    /// Sent as `Authorization: Bearer` (private and gated repositories).
    pub token: Option<String>,
    /// Use the cache only; never open a connection.
    pub offline: bool,
    /// How long a file transfer may wait for the connection or for its next bytes
    /// (`HF_HUB_DOWNLOAD_TIMEOUT`).
    pub download_timeout: Duration,
    /// How long a listing or metadata request may wait (`HF_HUB_ETAG_TIMEOUT`).
    pub etag_timeout: Duration,
}

impl std::fmt::Debug for HubSettings {
    // Never print the token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubSettings")
            .field("cache_dir", &self.cache_dir)
            .field("endpoint", &self.endpoint)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("offline", &self.offline)
            .field("download_timeout", &self.download_timeout)
            .field("etag_timeout", &self.etag_timeout)
            .finish()
    }
}

/// Why the environment gives no usable Hub settings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    #[error(
        "no Hugging Face cache folder: HOME is not set; set HF_HOME (the cache is HF_HOME/hub) \
         or HF_HUB_CACHE"
    )]
    NoCacheDir,
    #[error(
        "{var}={value:?} is not a timeout: write a number of seconds above 0 and at most \
         {MAX_TIMEOUT_S} (huggingface_hub's default is {DEFAULT_TIMEOUT_S}), or unset it"
    )]
    BadTimeout { var: &'static str, value: String },
}

impl HubSettings {
    /// From this process's environment (see [`HubSettings::from_vars`]).
    pub fn from_env() -> Result<Self, SettingsError> {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    /// From the variables `var` returns, as `huggingface_hub` reads them:
    /// - the cache: `HF_HUB_CACHE`, else `HF_HOME/hub`, else `$XDG_CACHE_HOME/huggingface/hub`,
    ///   else `~/.cache/huggingface/hub` (`HUGGINGFACE_HUB_CACHE`, the old name, is honoured);
    /// - the server: `HF_ENDPOINT`, else the public Hub;
    /// - the token: `HF_TOKEN` (or the old `HUGGING_FACE_HUB_TOKEN`), else the file
    ///   `HF_TOKEN_PATH`, else `HF_HOME/token` (where `huggingface-cli login` writes it);
    /// - offline: `HF_HUB_OFFLINE` (or `TRANSFORMERS_OFFLINE`) is 1, ON, YES or TRUE;
    /// - timeouts in seconds: `HF_HUB_DOWNLOAD_TIMEOUT` (a transfer's connection and each read)
    ///   and `HF_HUB_ETAG_TIMEOUT` (listings), 10 unless set.
    ///
    /// Empty values count as unset.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self, SettingsError> {
        let get = |k: &str| var(k).filter(|v| !v.trim().is_empty());
        let home = match get("HF_HOME") {
            Some(h) => Some(PathBuf::from(h)),
            None => get("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| get("HOME").map(|h| PathBuf::from(h).join(".cache")))
                .map(|c| c.join("huggingface")),
        };
        let cache_dir = match get("HF_HUB_CACHE").or_else(|| get("HUGGINGFACE_HUB_CACHE")) {
            Some(c) => PathBuf::from(c),
            None => home.as_ref().ok_or(SettingsError::NoCacheDir)?.join("hub"),
        };
        let endpoint = get("HF_ENDPOINT")
            .map(|e| e.trim().trim_end_matches('/').to_string())
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
        let token_file = get("HF_TOKEN_PATH")
            .map(PathBuf::from)
            .or_else(|| home.map(|h| h.join("token")));
        let token = get("HF_TOKEN")
            .or_else(|| get("HUGGING_FACE_HUB_TOKEN"))
            .or_else(|| token_file.and_then(|f| std::fs::read_to_string(f).ok()))
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty());
        let truthy = |k: &str| {
            get(k).is_some_and(|v| {
                matches!(
                    v.trim().to_ascii_uppercase().as_str(),
                    "1" | "ON" | "YES" | "TRUE"
                )
            })
        };
        let offline = truthy("HF_HUB_OFFLINE") || truthy("TRANSFORMERS_OFFLINE");
        let timeout = |var: &'static str| match get(var) {
            None => Ok(Duration::from_secs_f64(DEFAULT_TIMEOUT_S)),
            Some(value) => match value.trim().parse::<f64>() {
                Ok(s) if s > 0.0 && s <= MAX_TIMEOUT_S => Ok(Duration::from_secs_f64(s)),
                _ => Err(SettingsError::BadTimeout { var, value }),
            },
        };
        Ok(Self {
            cache_dir,
            endpoint,
            token,
            offline,
            download_timeout: timeout("HF_HUB_DOWNLOAD_TIMEOUT")?,
            etag_timeout: timeout("HF_HUB_ETAG_TIMEOUT")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(vars: &[(&str, &str)]) -> Result<HubSettings, SettingsError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        HubSettings::from_vars(|k| vars.get(k).cloned())
    }

    #[test]
    fn the_cache_folder_follows_huggingface_hub() {
        let s = settings(&[("HOME", "/h")]).unwrap();
        assert_eq!(s.cache_dir, PathBuf::from("/h/.cache/huggingface/hub"));
        assert_eq!(s.endpoint, DEFAULT_ENDPOINT);
        assert!(!s.offline);
        assert_eq!(s.token, None);
        let s = settings(&[("HOME", "/h"), ("XDG_CACHE_HOME", "/x")]).unwrap();
        assert_eq!(s.cache_dir, PathBuf::from("/x/huggingface/hub"));
        let s = settings(&[("HOME", "/h"), ("HF_HOME", "/hf")]).unwrap();
        assert_eq!(s.cache_dir, PathBuf::from("/hf/hub"));
        let s = settings(&[("HF_HOME", "/hf"), ("HF_HUB_CACHE", "/c")]).unwrap();
        assert_eq!(s.cache_dir, PathBuf::from("/c"));
        let s = settings(&[("HUGGINGFACE_HUB_CACHE", "/old"), ("HF_HUB_CACHE", "")]).unwrap();
        assert_eq!(s.cache_dir, PathBuf::from("/old"));
        assert_eq!(settings(&[]), Err(SettingsError::NoCacheDir));
    }

    #[test]
    fn endpoint_token_and_offline_come_from_their_variables() {
        let s = settings(&[
            ("HOME", "/h"),
            ("HF_ENDPOINT", "http://127.0.0.1:9/"),
            ("HF_TOKEN", " hf_abc\n"),
            ("HF_HUB_OFFLINE", "yes"),
        ])
        .unwrap();
        assert_eq!(s.endpoint, "http://127.0.0.1:9");
        assert_eq!(s.token.as_deref(), Some("hf_abc"));
        assert!(s.offline);
        assert!(!format!("{s:?}").contains("hf_abc"));
        for (v, offline) in [
            ("1", true),
            ("ON", true),
            ("true", true),
            ("0", false),
            ("no", false),
        ] {
            let s = settings(&[("HOME", "/h"), ("HF_HUB_OFFLINE", v)]).unwrap();
            assert_eq!(s.offline, offline, "{v}");
        }
        let s = settings(&[("HOME", "/h"), ("TRANSFORMERS_OFFLINE", "1")]).unwrap();
        assert!(s.offline);
    }

    #[test]
    fn timeouts_default_to_ten_seconds_and_nonsense_is_refused_by_name() {
        let s = settings(&[("HOME", "/h")]).unwrap();
        assert_eq!(s.download_timeout, Duration::from_secs(10));
        assert_eq!(s.etag_timeout, Duration::from_secs(10));
        let s = settings(&[("HOME", "/h"), ("HF_HUB_DOWNLOAD_TIMEOUT", "0.5")]).unwrap();
        assert_eq!(s.download_timeout, Duration::from_millis(500));
        for bad in ["0", "-1", "ten", "inf", "NaN", "1e9"] {
            let e = settings(&[("HOME", "/h"), ("HF_HUB_ETAG_TIMEOUT", bad)]).unwrap_err();
            assert!(e.to_string().contains("HF_HUB_ETAG_TIMEOUT"), "{bad}: {e}");
        }
    }

    #[test]
    fn the_token_file_is_read_when_no_variable_names_a_token() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("token"), "hf_file\n").unwrap();
        let home = d.path().to_str().unwrap();
        let s = settings(&[("HF_HOME", home)]).unwrap();
        assert_eq!(s.token.as_deref(), Some("hf_file"));
        let s = settings(&[("HF_HOME", home), ("HF_TOKEN", "hf_var")]).unwrap();
        assert_eq!(s.token.as_deref(), Some("hf_var"));
        let other = d.path().join("elsewhere");
        std::fs::write(&other, "hf_path").unwrap();
        let s = settings(&[
            ("HF_HOME", home),
            ("HF_TOKEN_PATH", other.to_str().unwrap()),
        ])
        .unwrap();
        assert_eq!(s.token.as_deref(), Some("hf_path"));
    }
}
