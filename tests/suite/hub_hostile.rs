//! A hostile or broken Hub (issue 27, items 1-7): a server on 127.0.0.1 that answers each
//! request with whatever a test scripts — names that are paths, redirect loops, silence,
//! bodies that never end — and a careless cache. Each case must end in one clear error (exit
//! 1), quickly, with nothing outside the cache touched and nothing unbounded written.
use crate::common::hub_server::run_with_env;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A commit and etags in the Hub's spelling.
const COMMIT: &str = "3333333333333333333333333333333333333333";
const CONFIG_ETAG: &str = "c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0";
const WEIGHTS_ETAG: &str = "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a";

/// What the server does with one request.
enum Act {
    /// Sends these bytes (head and body) and closes.
    Send(Vec<u8>),
    /// Reads the request and never answers (the connection stays open a minute).
    Silent,
    /// Sends these bytes, then holds the connection open without another byte.
    Stall(Vec<u8>),
    /// Sends this head, then zeros until the client hangs up.
    Endless(String),
}

/// The server: each request's path (with query) goes to `script`; every path is logged.
struct Hostile {
    endpoint: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl Hostile {
    fn start(script: impl Fn(&str) -> Act + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let log = Arc::new(Mutex::new(Vec::new()));
        let (script, shared) = (Arc::new(script), log.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (script, log) = (script.clone(), shared.clone());
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    let mut line = String::new();
                    reader.read_line(&mut line).ok();
                    loop {
                        let mut h = String::new();
                        if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                            break;
                        }
                    }
                    let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
                    log.lock().unwrap().push(path.clone());
                    let mut stream = stream;
                    match script(&path) {
                        Act::Send(bytes) => {
                            stream.write_all(&bytes).ok();
                        }
                        Act::Silent => std::thread::sleep(Duration::from_secs(60)),
                        Act::Stall(bytes) => {
                            stream.write_all(&bytes).ok();
                            stream.flush().ok();
                            std::thread::sleep(Duration::from_secs(60));
                        }
                        Act::Endless(head) => {
                            stream.write_all(head.as_bytes()).ok();
                            let zeros = vec![0u8; 1 << 16];
                            while stream.write_all(&zeros).is_ok() {}
                        }
                    }
                });
            }
        });
        Self { endpoint, log }
    }

    fn requests(&self) -> usize {
        self.log.lock().unwrap().len()
    }
}

/// An HTTP answer with `headers` and `body`.
fn answer(status: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut head = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// A revision listing of `org/x` at `sha`: a config and the weights, as the Hub lists them.
fn listing(sha: &str, weights_etag: &str, weights_size: u64) -> Vec<u8> {
    let json = serde_json::json!({
        "id": "org/x",
        "sha": sha,
        "siblings": [
            {"rfilename": "config.json", "size": 2, "blobId": CONFIG_ETAG},
            {"rfilename": "model.safetensors", "size": weights_size, "blobId": "0".repeat(40),
             "lfs": {"sha256": weights_etag, "size": weights_size, "pointerSize": 134}},
        ],
    });
    answer(
        "200 OK",
        &[("Content-Type", "application/json")],
        json.to_string().as_bytes(),
    )
}

/// The listing at `/api/...`, `file` for every other request.
fn with_listing(listed: Vec<u8>, file: impl Fn(&str) -> Act + Send + Sync + 'static) -> Hostile {
    Hostile::start(move |path| {
        if path.starts_with("/api/") {
            Act::Send(listed.clone())
        } else {
            file(path)
        }
    })
}

/// A folder with the cache inside and a file beside it that nothing may touch.
struct Scene {
    dir: tempfile::TempDir,
    cache: PathBuf,
    victim: PathBuf,
}

impl Scene {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache");
        let victim = dir.path().join("victim.txt");
        std::fs::write(&victim, "original").unwrap();
        Self { dir, cache, victim }
    }

    /// `cliptrain download hf:org/x` against `server`, timeouts of one second.
    fn download(&self, server: &Hostile, extra: &[(&str, &str)]) -> Output {
        let mut env = vec![
            ("HF_HUB_CACHE", self.cache.to_str().unwrap()),
            ("HF_ENDPOINT", server.endpoint.as_str()),
            ("HF_HUB_DOWNLOAD_TIMEOUT", "1"),
            ("HF_HUB_ETAG_TIMEOUT", "1"),
        ];
        env.extend_from_slice(extra);
        run_with_env(&["download", "hf:org/x"], self.dir.path(), &env)
    }

    /// Nothing beside the cache changed: the victim as written, no other entry.
    fn untouched(&self) {
        assert_eq!(std::fs::read_to_string(&self.victim).unwrap(), "original");
        let mut entries: Vec<String> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        entries.sort();
        entries.retain(|e| e != "cache");
        assert_eq!(entries, ["victim.txt"]);
    }

    /// Every file under the cache, with its length.
    fn cached(&self) -> Vec<(PathBuf, u64)> {
        fn walk(dir: &Path, out: &mut Vec<(PathBuf, u64)>) {
            for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let meta = std::fs::symlink_metadata(e.path()).unwrap();
                if meta.is_dir() {
                    walk(&e.path(), out);
                } else {
                    out.push((e.path(), meta.len()));
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.cache, &mut out);
        out
    }
}

/// The error of a run that must fail with exit 1 (not a panic, not a signal).
fn failed(out: Output) -> String {
    let e = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{e}");
    assert!(!e.contains("panicked"), "{e}");
    e
}

#[test]
fn names_a_server_sends_never_choose_where_files_go() {
    // The listing's commit is an absolute path, then a climb out of the cache.
    for climb in [false, true] {
        let scene = Scene::new();
        let sha = if climb {
            "../../../x".to_string()
        } else {
            scene.victim.to_str().unwrap().to_string()
        };
        let server = with_listing(listing(&sha, WEIGHTS_ETAG, 4), |_| {
            Act::Send(answer("404 Not Found", &[], b""))
        });
        let e = failed(scene.download(&server, &[]));
        assert!(
            e.contains("refused the commit") && e.contains("40 lowercase hex"),
            "{e}"
        );
        assert!(e.contains(&server.endpoint), "{e}");
        scene.untouched();
        assert!(scene.cached().is_empty(), "{:?}", scene.cached());
    }
    // A listed etag that is a path.
    let scene = Scene::new();
    let etag = scene.victim.to_str().unwrap().to_string();
    let server = with_listing(listing(COMMIT, &etag, 4), |_| {
        Act::Send(answer("404 Not Found", &[], b""))
    });
    let e = failed(scene.download(&server, &[]));
    assert!(
        e.contains("refused the etag of model.safetensors") && e.contains("victim.txt"),
        "{e}"
    );
    scene.untouched();
    // An `ETag` header that is a path (the listing is sound): compared, never used as a name.
    let scene = Scene::new();
    let tag = format!("\"{}\"", scene.victim.display());
    let server = with_listing(listing(COMMIT, WEIGHTS_ETAG, 4), move |_| {
        Act::Send(answer(
            "200 OK",
            &[("ETag", &tag), ("X-Repo-Commit", COMMIT)],
            b"{}",
        ))
    });
    let e = failed(scene.download(&server, &[]));
    assert!(
        e.contains("config.json") && e.contains("arrived as blob"),
        "{e}"
    );
    scene.untouched();
}

#[test]
fn an_offline_ref_that_leaves_the_cache_is_refused_naming_the_file() {
    let scene = Scene::new();
    let repo = scene.cache.join("models--org--x");
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::create_dir_all(repo.join("snapshots")).unwrap();
    for content in ["../../../../../../etc", "../.."] {
        std::fs::write(repo.join("refs/main"), content).unwrap();
        let out = run_with_env(
            &["download", "hf:org/x"],
            scene.dir.path(),
            &[
                ("HF_HUB_CACHE", scene.cache.to_str().unwrap()),
                ("HF_HUB_OFFLINE", "1"),
            ],
        );
        let e = failed(out);
        assert!(
            e.contains("refs/main") && e.contains("40 lowercase hex") && e.contains("delete"),
            "{e}"
        );
        // Not a listing of /etc.
        assert!(!e.contains("passwd") && e.len() < 1000, "{e}");
    }
}

#[test]
fn silent_and_stalling_servers_end_in_a_timeout_naming_the_endpoint() {
    // Accepts the connection and never answers.
    let scene = Scene::new();
    let server = Hostile::start(|_| Act::Silent);
    let started = Instant::now();
    let e = failed(scene.download(&server, &[]));
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(
        e.contains(&server.endpoint) && e.contains("no answer within 1s"),
        "{e}"
    );
    assert!(e.contains("HF_HUB_ETAG_TIMEOUT"), "{e}");
    // Sends one byte of the body and stalls: each retry continues, then one error.
    let scene = Scene::new();
    let server = with_listing(listing(COMMIT, WEIGHTS_ETAG, 4), |_| {
        let mut head = answer(
            "200 OK",
            &[
                ("ETag", &format!("\"{CONFIG_ETAG}\"")),
                ("X-Repo-Commit", COMMIT),
            ],
            b"{}",
        );
        head.pop();
        Act::Stall(head)
    });
    let started = Instant::now();
    let e = failed(scene.download(&server, &[]));
    assert!(started.elapsed() < Duration::from_secs(60));
    assert!(
        e.contains("config.json") && e.contains("no data for 1s") && e.contains("retries"),
        "{e}"
    );
    scene.untouched();
}

#[test]
fn redirect_loops_of_every_kind_are_bounded() {
    for absolute in [false, true] {
        let scene = Scene::new();
        let origin = Arc::new(std::sync::OnceLock::<String>::new());
        let known = origin.clone();
        // Each answer sends the client back to the same place, as a path or as a full URL.
        let server = Hostile::start(move |path| {
            let to = match known.get() {
                Some(origin) if absolute => format!("{origin}{path}"),
                _ => path.to_string(),
            };
            Act::Send(answer("302 Found", &[("Location", &to)], b""))
        });
        origin.set(server.endpoint.clone()).unwrap();
        let e = failed(scene.download(&server, &[]));
        assert!(e.contains("more than 10 redirects"), "{e}");
        assert!(server.requests() <= 11, "{} requests", server.requests());
    }
}

#[test]
fn a_body_longer_than_listed_stops_at_the_listed_size_and_space_is_checked_first() {
    let scene = Scene::new();
    let server = with_listing(listing(COMMIT, WEIGHTS_ETAG, 969), |_| {
        Act::Endless(format!(
            "HTTP/1.1 200 OK\r\nETag: \"{CONFIG_ETAG}\"\r\nX-Repo-Commit: {COMMIT}\r\n\r\n"
        ))
    });
    let e = failed(scene.download(&server, &[]));
    assert!(
        e.contains("config.json") && e.contains("longer than the 2 bytes") && e.contains("twice"),
        "{e}"
    );
    assert!(
        scene.cached().iter().all(|(_, len)| *len <= 2),
        "{:?}",
        scene.cached()
    );
    // A listed size no disk has: refused before a byte is asked for.
    let scene = Scene::new();
    let server = with_listing(listing(COMMIT, WEIGHTS_ETAG, 1 << 60), |_| {
        Act::Send(answer(
            "200 OK",
            &[
                ("ETag", &format!("\"{CONFIG_ETAG}\"")),
                ("X-Repo-Commit", COMMIT),
            ],
            b"{}",
        ))
    });
    let e = failed(scene.download(&server, &[]));
    assert!(
        e.contains("model.safetensors needs") && e.contains("free"),
        "{e}"
    );
}

#[test]
fn a_listing_of_over_ten_megabytes_is_read_and_the_error_stays_short() {
    let scene = Scene::new();
    let siblings: Vec<serde_json::Value> = (0..130_000)
        .map(|i| {
            serde_json::json!({"rfilename": format!("images/{i:06}.jpg"), "size": 9_999,
                                     "blobId": CONFIG_ETAG})
        })
        .collect();
    let json = serde_json::json!({"id": "org/x", "sha": COMMIT, "siblings": siblings});
    let body = json.to_string().into_bytes();
    assert!(body.len() > 10 << 20, "{}", body.len());
    let listed = answer("200 OK", &[("Content-Type", "application/json")], &body);
    let server = Hostile::start(move |_| Act::Send(listed.clone()));
    let e = failed(scene.download(&server, &[]));
    assert!(e.contains("has no model cliptrain reads"), "{e}");
    assert!(e.contains("and 129980 more") && e.len() < 2000, "{e}");
}
