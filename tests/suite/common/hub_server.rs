//! A stand-in for the Hugging Face Hub on 127.0.0.1, serving repositories from fixture
//! folders the way the Hub does: `/api/models/ORG/NAME/revision/REV` lists a revision's files
//! (sizes and etags with `?blobs=true`; `/tree/REV` lists them as huggingface_hub asks), `/ORG/NAME/resolve/REV/FILE` answers with `ETag` and
//! `X-Repo-Commit` (Range requests: 206 + `Content-Range`), and `*.safetensors` / `*.bin` are
//! "LFS" files redirected (302, `X-Linked-Etag`, `X-Linked-Size`) to `/cdn/ETAG` on a second
//! port, like the Hub's CDN. Every request is logged so tests can count downloads.
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// One revision of a repository: the branch/tag names pointing at `commit`, and its files.
pub struct Revision {
    pub names: Vec<String>,
    pub commit: String,
    pub dir: PathBuf,
}

/// A request as the server saw it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub range: Option<String>,
    pub authorization: Option<String>,
}

#[derive(Default)]
struct State {
    repos: HashMap<String, Vec<Revision>>,
    log: Vec<Request>,
    /// The next body sent for this file name stops after this many bytes (the connection drops).
    cut: Option<(String, usize)>,
    /// Files the listing names but `resolve` answers 404 for.
    hidden: Vec<String>,
    /// Files whose listed size is one byte more than what is served.
    misstated: Vec<String>,
}

/// The running server; it lives as long as the test process (one thread per connection).
#[derive(Clone)]
pub struct HubServer {
    pub endpoint: String,
    /// The "CDN" LFS files are redirected to: another origin (port), as the Hub's is another
    /// host, so clients treat the redirect as leaving the Hub.
    pub cdn: String,
    state: Arc<Mutex<State>>,
}

/// The etag of `bytes` (any stable name serves; the Hub's are SHA-256 / git blob ids).
pub fn etag(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}{:024x}", bytes.len())
}

fn is_lfs(name: &str) -> bool {
    name.ends_with(".safetensors") || name.ends_with(".bin")
}

impl HubServer {
    pub fn start(repos: Vec<(&str, Vec<Revision>)>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let cdn_listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let cdn = format!("http://{}", cdn_listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(State {
            repos: repos
                .into_iter()
                .map(|(name, revs)| (name.to_string(), revs))
                .collect(),
            ..State::default()
        }));
        let server = Self {
            endpoint,
            cdn,
            state,
        };
        for listener in [listener, cdn_listener] {
            let s = server.clone();
            std::thread::spawn(move || {
                for stream in listener.incoming().flatten() {
                    let s = s.clone();
                    std::thread::spawn(move || s.serve(stream));
                }
            });
        }
        server
    }

    pub fn requests(&self) -> Vec<Request> {
        self.state.lock().unwrap().log.clone()
    }

    /// Requests for `file`'s bytes (not the `bytes=0-0` probes for its etag).
    pub fn body_requests(&self, file: &str, etag: &str) -> Vec<Request> {
        self.requests()
            .into_iter()
            .filter(|r| r.method == "GET" && r.range.as_deref() != Some("bytes=0-0"))
            .filter(|r| r.path.ends_with(&format!("/{file}")) || r.path == format!("/cdn/{etag}"))
            .filter(|r| !is_lfs(file) || r.path.starts_with("/cdn/"))
            .collect()
    }

    pub fn cut_next(&self, file: &str, after: usize) {
        self.state.lock().unwrap().cut = Some((file.to_string(), after));
    }

    pub fn hide(&self, file: &str) {
        self.state.lock().unwrap().hidden.push(file.to_string());
    }

    pub fn misstate_size(&self, file: &str) {
        self.state.lock().unwrap().misstated.push(file.to_string());
    }

    fn serve(&self, stream: TcpStream) {
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let target = parts.next().unwrap_or("").to_string();
        let mut headers = HashMap::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
        let path = target.split('?').next().unwrap().to_string();
        let request = Request {
            method: method.clone(),
            path: path.clone(),
            range: headers.get("range").cloned(),
            authorization: headers.get("authorization").cloned(),
        };
        self.state.lock().unwrap().log.push(request.clone());
        let reply = self.route(&request);
        reply.send(stream, &method, request.range.as_deref());
    }

    fn route(&self, r: &Request) -> Reply {
        let path = r.path.replace("%2F", "/");
        if let Some(rest) = path.strip_prefix("/api/models/") {
            if let Some((repo, rev)) = rest.split_once("/tree/") {
                return self.listing(repo, rev, true);
            }
            let Some((repo, rev)) = rest.split_once("/revision/") else {
                return Reply::status(404, "");
            };
            return self.listing(repo, rev, false);
        }
        if let Some(etag) = path.strip_prefix("/cdn/") {
            return self.blob(etag, r.range.as_deref());
        }
        let Some((repo, rest)) = path.trim_start_matches('/').split_once("/resolve/") else {
            return Reply::status(404, "");
        };
        self.resolve(repo, rest, r.range.as_deref())
    }

    /// The revision named `rev` (a name or its commit) of `repo`, or the 404 the Hub gives.
    fn find<T>(
        &self,
        repo: &str,
        rev: &str,
        f: impl FnOnce(&Revision, &State) -> T,
    ) -> Result<T, Reply> {
        let state = self.state.lock().unwrap();
        let revs = state
            .repos
            .get(repo)
            .ok_or_else(|| Reply::status(404, "RepoNotFound"))?;
        let found = revs
            .iter()
            .find(|v| v.commit == rev || v.names.iter().any(|n| n == rev))
            .ok_or_else(|| Reply::status(404, "RevisionNotFound"))?;
        Ok(f(found, &state))
    }

    /// `/revision/` (an object with `sha` and `siblings`), or `/tree/` (an array of entries,
    /// what huggingface_hub's `snapshot_download` lists).
    fn listing(&self, repo: &str, rev: &str, tree: bool) -> Reply {
        let listed = self.find(repo, rev, |v, state| {
            let mut siblings = Vec::new();
            for name in files(&v.dir) {
                let bytes = std::fs::read(v.dir.join(&name)).unwrap();
                let size = bytes.len() + usize::from(state.misstated.contains(&name));
                let tag = etag(&bytes);
                let mut s = serde_json::json!({"rfilename": name, "size": size});
                if is_lfs(&name) {
                    s["blobId"] = "0".repeat(40).into();
                    s["lfs"] = serde_json::json!({"sha256": tag, "size": size, "pointerSize": 134});
                } else {
                    s["blobId"] = tag.into();
                }
                if tree {
                    s["path"] = s["rfilename"].take();
                    s["oid"] = s["blobId"].take();
                    s["type"] = "file".into();
                    if let Some(lfs) = s.get_mut("lfs") {
                        lfs["oid"] = lfs["sha256"].take();
                    }
                }
                siblings.push(s);
            }
            if tree {
                return serde_json::Value::Array(siblings);
            }
            serde_json::json!({"id": repo, "sha": v.commit, "siblings": siblings})
        });
        match listed {
            Ok(json) => Reply {
                status: 200,
                headers: vec![("Content-Type".into(), "application/json".into())],
                body: json.to_string().into_bytes(),
                full_body: true,
            },
            Err(reply) => reply,
        }
    }

    fn resolve(&self, repo: &str, rest: &str, range: Option<&str>) -> Reply {
        let Some((rev, file)) = rest.rsplit_once('/') else {
            return Reply::status(404, "");
        };
        let cdn = self.cdn.clone();
        let found = self.find(repo, rev, |v, state| {
            if state.hidden.iter().any(|h| h == file) {
                return None;
            }
            let bytes = std::fs::read(v.dir.join(file)).ok()?;
            Some((v.commit.clone(), bytes))
        });
        let (commit, bytes) = match found {
            Ok(Some(found)) => found,
            Ok(None) => return Reply::status(404, "EntryNotFound"),
            Err(reply) => return reply,
        };
        let tag = etag(&bytes);
        let mut headers = vec![("X-Repo-Commit".to_string(), commit)];
        if is_lfs(file) {
            headers.push(("X-Linked-Etag".into(), format!("\"{tag}\"")));
            headers.push(("X-Linked-Size".into(), bytes.len().to_string()));
            headers.push(("ETag".into(), "\"pointer\"".into()));
            headers.push(("Location".into(), format!("{cdn}/cdn/{tag}")));
            return Reply {
                status: 302,
                headers,
                body: Vec::new(),
                full_body: true,
            };
        }
        headers.push(("ETag".into(), format!("\"{tag}\"")));
        self.body(file, bytes, headers, range)
    }

    fn blob(&self, etag_wanted: &str, range: Option<&str>) -> Reply {
        let state = self.state.lock().unwrap();
        for rev in state.repos.values().flatten() {
            for name in files(&rev.dir) {
                let bytes = std::fs::read(rev.dir.join(&name)).unwrap();
                if etag(&bytes) == etag_wanted {
                    drop(state);
                    return self.body(&name, bytes, vec![], range);
                }
            }
        }
        Reply::status(404, "")
    }

    /// A file's bytes, cut short when the test asked for it (never the `bytes=0-0` probe).
    fn body(
        &self,
        name: &str,
        bytes: Vec<u8>,
        headers: Vec<(String, String)>,
        range: Option<&str>,
    ) -> Reply {
        let mut state = self.state.lock().unwrap();
        let mut reply = Reply {
            status: 200,
            headers,
            body: bytes,
            full_body: true,
        };
        if let Some((file, after)) = state.cut.clone()
            && file == name
            && range != Some("bytes=0-0")
        {
            state.cut = None;
            reply.full_body = false;
            reply
                .headers
                .push(("X-Cut-After".into(), after.to_string()));
        }
        reply
    }
}

fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// `false`: the body stops after `X-Cut-After` bytes and the connection closes.
    full_body: bool,
}

impl Reply {
    fn status(status: u16, code: &str) -> Self {
        let mut headers = Vec::new();
        if !code.is_empty() {
            headers.push(("X-Error-Code".to_string(), code.to_string()));
            headers.push(("X-Error-Message".to_string(), format!("{code} (test hub)")));
        }
        Self {
            status,
            headers,
            body: Vec::new(),
            full_body: true,
        }
    }

    /// Writes the answer, honouring a `Range: bytes=S-[E]` on a 200 body.
    fn send(mut self, mut stream: TcpStream, method: &str, range: Option<&str>) {
        let total = self.body.len();
        let cut_after = self
            .headers
            .iter()
            .position(|(k, _)| k == "X-Cut-After")
            .map(|i| self.headers.remove(i).1.parse::<usize>().unwrap());
        if self.status == 200
            && let Some(spec) = range.and_then(|r| r.strip_prefix("bytes="))
        {
            let (start, end) = spec.split_once('-').unwrap();
            let start: usize = start.parse().unwrap();
            let end: usize = if end.is_empty() {
                total.saturating_sub(1)
            } else {
                end.parse::<usize>().unwrap().min(total.saturating_sub(1))
            };
            if start >= total {
                self.status = 416;
                self.headers
                    .push(("Content-Range".into(), format!("bytes */{total}")));
                self.body.clear();
            } else {
                self.status = 206;
                self.headers.push((
                    "Content-Range".into(),
                    format!("bytes {start}-{end}/{total}"),
                ));
                self.body = self.body[start..=end].to_vec();
            }
        }
        let reason = match self.status {
            200 => "OK",
            206 => "Partial Content",
            302 => "Found",
            404 => "Not Found",
            416 => "Range Not Satisfiable",
            _ => "Status",
        };
        let mut head = format!(
            "HTTP/1.1 {} {reason}\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.status,
            self.body.len()
        );
        for (k, v) in &self.headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        if stream.write_all(head.as_bytes()).is_err() || method == "HEAD" {
            return;
        }
        let body = match (self.full_body, cut_after) {
            (false, Some(n)) => &self.body[..n.min(self.body.len())],
            _ => &self.body[..],
        };
        stream.write_all(body).ok();
        stream.flush().ok();
    }
}

/// The commit of `org/tiny`'s `main` (the Hugging Face folder of [`fixtures`]).
pub const MAIN: &str = "1111111111111111111111111111111111111111";
/// The commit of `org/tiny`'s tag `v1` (the OpenCLIP folder of [`fixtures`]).
pub const V1: &str = "2222222222222222222222222222222222222222";

/// The tiny checkpoint in tests/fixtures exported once as a Hugging Face folder (`hf/`) and
/// an OpenCLIP folder (`openclip/`), shared by every Hub test.
pub fn fixtures() -> &'static Path {
    static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let d = tempfile::tempdir().unwrap();
        let ckpt = super::repo().join("tests/fixtures/checkpoint-per-tensor-adamw/step-0000003");
        for kind in ["hf", "openclip"] {
            let out = d.path().join(kind);
            super::ok(super::cliptrain(
                &[
                    "export",
                    kind,
                    "--checkpoint",
                    ckpt.to_str().unwrap(),
                    "--out",
                    out.to_str().unwrap(),
                ],
                d.path(),
            ));
        }
        d
    })
    .path()
}

/// `org/tiny` as the Hub tests serve it: `main` ([`MAIN`]) is the HF folder of [`fixtures`], the
/// tag `v1` ([`V1`]) its OpenCLIP folder.
pub fn tiny_repo() -> (&'static str, Vec<Revision>) {
    (
        "org/tiny",
        vec![
            Revision {
                names: vec!["main".into()],
                commit: MAIN.into(),
                dir: fixtures().join("hf"),
            },
            Revision {
                names: vec!["v1".into()],
                commit: V1.into(),
                dir: fixtures().join("openclip"),
            },
        ],
    )
}

/// The Hub variables a child process could inherit from this one; [`hub_command`] removes them
/// (a proxy setting would send 127.0.0.1 elsewhere).
const HUB_VARS: [&str; 15] = [
    "HF_HOME",
    "HF_HUB_CACHE",
    "HUGGINGFACE_HUB_CACHE",
    "HF_ENDPOINT",
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
    "HF_TOKEN_PATH",
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
];

/// `cliptrain ARGS` in `cwd` with the Hub variables `env` and no others from this process.
pub fn hub_command(args: &[&str], cwd: &Path, env: &[(&str, &str)]) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_cliptrain"));
    cmd.args(args).current_dir(cwd);
    for var in HUB_VARS {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied());
    cmd
}

/// [`hub_command`], run to completion.
pub fn run_with_env(args: &[&str], cwd: &Path, env: &[(&str, &str)]) -> std::process::Output {
    hub_command(args, cwd, env).output().expect("run cliptrain")
}

/// A running stand-in Hub and a fresh folder to use it from, with `cache` (`DIR/cache`, not
/// made yet) as the Hub cache of [`Hub::env`].
pub struct Hub {
    pub server: HubServer,
    pub dir: tempfile::TempDir,
    pub cache: PathBuf,
}

/// The usual Hub of the tests: [`tiny_repo`] only.
pub fn tiny_hub() -> Hub {
    Hub::start(vec![tiny_repo()])
}

impl Hub {
    /// A server for `repos` and a fresh folder.
    pub fn start(repos: Vec<(&str, Vec<Revision>)>) -> Self {
        Self::start_in(tempfile::tempdir().unwrap(), repos)
    }

    /// A server for `repos`, used from `dir` (made before, when `repos` are folders in it).
    pub fn start_in(dir: tempfile::TempDir, repos: Vec<(&str, Vec<Revision>)>) -> Self {
        let cache = dir.path().join("cache");
        Self {
            server: HubServer::start(repos),
            dir,
            cache,
        }
    }

    /// The folder commands run in.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// What a child `cliptrain` needs to use this Hub: `HF_HUB_CACHE` ([`Hub::cache`]) and
    /// `HF_ENDPOINT`.
    pub fn env(&self) -> [(&'static str, &str); 2] {
        [
            ("HF_HUB_CACHE", self.cache.to_str().unwrap()),
            ("HF_ENDPOINT", self.server.endpoint.as_str()),
        ]
    }

    /// `cliptrain ARGS` in [`Hub::path`] with [`Hub::env`] (and no other Hub variables).
    pub fn command(&self, args: &[&str]) -> std::process::Command {
        hub_command(args, self.path(), &self.env())
    }

    /// [`Hub::command`], run to completion.
    pub fn run(&self, args: &[&str]) -> std::process::Output {
        self.command(args).output().expect("run cliptrain")
    }

    /// `cliptrain ARGS` in [`Hub::path`] with `env` instead of [`Hub::env`].
    pub fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
        run_with_env(args, self.path(), env)
    }
}
