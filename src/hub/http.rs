//! Requests to a Hub with the limits a hostile or broken server cannot lift: a timeout on the
//! connection and on every read (a server that accepts and never answers, or stalls mid-body,
//! ends in an error naming it), a bound on redirects of every kind (relative ones included),
//! the token sent to the endpoint's own host only, and bodies read up to a cap.
use super::HubSettings;
use std::io::Read;
use std::time::Duration;

/// Redirects followed for one request; the Hub uses one (to its CDN) or two (a renamed
/// repository, then the CDN).
pub(super) const MAX_REDIRECTS: usize = 10;

/// A client for one kind of request (listing or transfer): the settings' endpoint and token,
/// and one timeout.
pub(super) struct Client {
    agent: ureq::Agent,
    token: Option<String>,
    /// `host:port` of the endpoint, the only place the token goes.
    token_origin: Option<String>,
    timeout: Duration,
}

/// A successful answer, after redirects.
pub(super) struct Answer {
    pub response: ureq::Response,
    /// The `X-Linked-Etag` (else `ETag`) of the first answer that had one: the Hub puts them
    /// on its own answer, before the redirect to a CDN. Quotes and `W/` removed.
    pub etag: Option<String>,
    /// The `X-Repo-Commit` of the first answer that had one.
    pub commit: Option<String>,
}

/// Why a request has no usable answer.
pub(super) enum Failure {
    /// No answer: the connection failed, broke off or timed out.
    Unreachable(String),
    /// An error status (the response carries the Hub's `X-Error-Code`).
    Status(u16, Box<ureq::Response>),
    /// An answer that breaks the rules (a redirect loop, a `Location` that is not a URL).
    Broken(String),
}

impl Client {
    pub fn new(settings: &HubSettings, timeout: Duration) -> Self {
        let agent = ureq::AgentBuilder::new()
            .try_proxy_from_env(true)
            // Followed here, so every kind is bounded and the token stays on its host.
            .redirects(0)
            .timeout_connect(timeout)
            .timeout_read(timeout)
            .timeout_write(timeout)
            .user_agent(concat!("cliptrain/", env!("CARGO_PKG_VERSION")))
            .build();
        Self {
            agent,
            token: settings.token.clone(),
            token_origin: origin(&settings.endpoint),
            timeout,
        }
    }

    /// `GET url` (with `Range` when given), following at most [`MAX_REDIRECTS`] redirects.
    pub fn get(&self, url: &str, range: Option<&str>) -> Result<Answer, Failure> {
        let mut url = url::Url::parse(url).map_err(|e| Failure::Broken(format!("{url}: {e}")))?;
        let (mut etag, mut commit) = (None, None);
        for _ in 0..=MAX_REDIRECTS {
            let mut request = self.agent.request_url("GET", &url);
            if let Some(range) = range {
                // Byte ranges count the file's own bytes, never a compressed body's.
                request = request
                    .set("Range", range)
                    .set("Accept-Encoding", "identity");
            }
            if let Some(token) = &self.token
                && origin(url.as_str()) == self.token_origin
            {
                request = request.set("Authorization", &format!("Bearer {token}"));
            }
            let response = match request.call() {
                Ok(r) => r,
                Err(ureq::Error::Status(status, r)) => {
                    return Err(Failure::Status(status, Box::new(r)));
                }
                Err(ureq::Error::Transport(t)) => {
                    return Err(Failure::Unreachable(self.transport(&url, &t)));
                }
            };
            if etag.is_none() {
                etag = response
                    .header("x-linked-etag")
                    .or(response.header("etag"))
                    .map(normalise_etag);
            }
            if commit.is_none() {
                commit = response.header("x-repo-commit").map(str::to_string);
            }
            if !(300..400).contains(&response.status()) {
                return Ok(Answer {
                    response,
                    etag,
                    commit,
                });
            }
            let location = response.header("location").ok_or_else(|| {
                Failure::Broken(format!(
                    "{url} answered {} without a Location",
                    response.status()
                ))
            })?;
            url = url
                .join(location)
                .map_err(|e| Failure::Broken(format!("{url} redirects to {location:?}: {e}")))?;
        }
        Err(Failure::Broken(format!(
            "more than {MAX_REDIRECTS} redirects (the last to {url}); a redirect loop?"
        )))
    }

    /// A failed connection in words; a timeout says which limit and how to raise it.
    fn transport(&self, url: &url::Url, t: &ureq::Transport) -> String {
        let timed_out = std::error::Error::source(t)
            .and_then(|s| s.downcast_ref::<std::io::Error>())
            .is_some_and(is_timeout);
        if timed_out {
            format!("{url}: no answer within {}", self.limit())
        } else {
            t.to_string()
        }
    }

    /// The timeout in words, with the variables that set it.
    pub fn limit(&self) -> String {
        format!(
            "{:?} (HF_HUB_DOWNLOAD_TIMEOUT sets it for files, HF_HUB_ETAG_TIMEOUT for listings)",
            self.timeout
        )
    }
}

/// Whether a read or connect failed on the timeout rather than on the network.
pub(super) fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
    )
}

/// A whole body as text, refusing one longer than `cap` bytes (read no further).
pub(super) fn read_text(response: ureq::Response, cap: u64) -> Result<String, String> {
    let mut bytes = Vec::new();
    response
        .into_reader()
        .take(cap + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("the answer broke off: {e}"))?;
    if bytes.len() as u64 > cap {
        return Err(format!(
            "the answer is longer than {} (stopped reading there)",
            indicatif::HumanBytes(cap)
        ));
    }
    String::from_utf8(bytes).map_err(|_| "the answer is not UTF-8 text".into())
}

/// An etag as a name: without `W/` and quotes, as `huggingface_hub` normalises them.
fn normalise_etag(raw: &str) -> String {
    raw.trim()
        .trim_start_matches("W/")
        .trim_matches('"')
        .to_string()
}

/// `host:port` of a URL (the port its scheme implies when none is written).
fn origin(url: &str) -> Option<String> {
    let url = url::Url::parse(url).ok()?;
    Some(format!(
        "{}:{}",
        url.host_str()?,
        url.port_or_known_default()?
    ))
}

/// A revision as one path segment of a URL (`refs/pr/1` → `refs%2Fpr%2F1`), as the Hub's
/// clients write it.
pub(super) fn segment(revision: &str) -> String {
    let mut out = String::with_capacity(revision.len());
    for b in revision.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_origins_and_segments() {
        assert_eq!(normalise_etag("W/\"abc\""), "abc");
        assert_eq!(normalise_etag("\"abc\""), "abc");
        assert_eq!(
            origin("https://huggingface.co/x").as_deref(),
            Some("huggingface.co:443")
        );
        assert_eq!(
            origin("http://127.0.0.1:9/a").as_deref(),
            Some("127.0.0.1:9")
        );
        assert_ne!(
            origin("http://127.0.0.1:9/"),
            origin("http://127.0.0.1:10/")
        );
        assert_eq!(segment("refs/pr/1"), "refs%2Fpr%2F1");
        assert_eq!(segment("v1.0"), "v1.0");
    }
}
