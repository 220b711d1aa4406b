//! `hf:ORG/NAME[@REVISION]` against a local stand-in for the Hub (`common/hub_server.rs`,
//! started by `tiny_hub`): download into a fresh cache, cache hits, offline use, revisions,
//! OpenCLIP's spelling, errors for what is missing, an interrupted transfer, and
//! `model.init_from = "hf:..."`.
use crate::common;
use crate::common::hub_server::{Hub, MAIN, Revision, V1, etag, fixtures, tiny_hub};
use crate::common::{cliptrain, ok};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The error of a run that must have failed.
fn err(out: Output) -> String {
    assert!(!out.status.success(), "succeeded: {}", stderr(&out));
    stderr(&out)
}

fn snapshot(cache: &Path, commit: &str) -> PathBuf {
    cache.join("models--org--tiny/snapshots").join(commit)
}

#[test]
fn a_model_is_downloaded_once_then_read_from_the_cache_online_and_offline() {
    let hub = tiny_hub();
    let server = &hub.server;
    // The cache under HF_HOME (`HF_HOME/hub`), and a token.
    let home = hub.path().join("home");
    let env = [
        ("HF_HOME", home.to_str().unwrap()),
        ("HF_ENDPOINT", server.endpoint.as_str()),
        ("HF_TOKEN", "hf_test_token"),
    ];
    let out = ok(hub.run_env(&["download", "hf:org/tiny"], &env));
    let cache = home.join("hub");
    let snap = snapshot(&cache, MAIN);
    assert_eq!(out.trim(), snap.to_str().unwrap());

    // The Hugging Face folder's files only, each a link into blobs/ named by its etag, as
    // huggingface_hub lays the cache out; refs/main records the commit.
    let hf = fixtures().join("hf");
    let mut names: Vec<String> = std::fs::read_dir(&snap)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut expected: Vec<String> = std::fs::read_dir(&hf)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    expected.sort();
    assert_eq!(names, expected);
    for name in &names {
        let bytes = std::fs::read(hf.join(name)).unwrap();
        assert_eq!(std::fs::read(snap.join(name)).unwrap(), bytes, "{name}");
        let link = std::fs::read_link(snap.join(name)).unwrap();
        assert_eq!(link, Path::new("../../blobs").join(etag(&bytes)), "{name}");
    }
    let refs = cache.join("models--org--tiny/refs");
    assert_eq!(std::fs::read_to_string(refs.join("main")).unwrap(), MAIN);
    assert!(!refs.join(MAIN).exists(), "no ref named by its own commit");
    let first = server.requests();
    assert!(
        first
            .iter()
            .filter(|r| !r.path.starts_with("/cdn/"))
            .all(|r| r.authorization.as_deref() == Some("Bearer hf_test_token")),
        "HF_TOKEN is sent to the Hub: {first:?}"
    );
    let weights_etag = etag(&std::fs::read(hf.join("model.safetensors")).unwrap());
    assert_eq!(
        server
            .body_requests("model.safetensors", &weights_etag)
            .len(),
        1
    );

    // Python's huggingface_hub finds the same files in the same cache, offline, and its cache
    // scan sees one repository and revision with no complaint.
    let py = Command::new(common::venv_python())
        .args([
            "-c",
            "import sys; from huggingface_hub import hf_hub_download as d, scan_cache_dir as s; \
             print(d('org/tiny', 'model.safetensors', cache_dir=sys.argv[1], local_files_only=True)); \
             i = s(sys.argv[1]); r = list(i.repos); \
             print(len(r), [len(x.revisions) for x in r], [str(w) for w in i.warnings])",
            cache.to_str().unwrap(),
        ])
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    let expected = format!("{}\n1 [1] []", snap.join("model.safetensors").display());
    assert_eq!(
        String::from_utf8_lossy(&py.stdout).trim(),
        expected,
        "{}",
        String::from_utf8_lossy(&py.stderr)
    );

    // A second use (loading the model through --checkpoint) only lists the revision.
    ok(hub.run_env(
        &[
            "export",
            "openclip",
            "--checkpoint",
            "hf:org/tiny",
            "--out",
            "oc",
        ],
        &env,
    ));
    let second: Vec<_> = server.requests()[first.len()..].to_vec();
    assert_eq!(second.len(), 1, "{second:?}");
    assert!(
        second[0]
            .path
            .starts_with("/api/models/org/tiny/revision/main")
    );

    // Offline: the cache alone, not a single request; the same folder.
    let offline = [env[0], env[1], ("HF_HUB_OFFLINE", "1")];
    let out = ok(hub.run_env(&["download", "hf:org/tiny"], &offline));
    assert_eq!(out.trim(), snap.to_str().unwrap());
    assert_eq!(server.requests().len(), first.len() + 1);

    // Offline with an empty cache: one error naming the id, the cache and the setting.
    let empty = hub.path().join("empty");
    let offline = [
        ("HF_HUB_CACHE", empty.to_str().unwrap()),
        ("HF_HUB_OFFLINE", "1"),
    ];
    let e = err(hub.run_env(&["download", "hf:org/tiny"], &offline));
    assert!(
        e.contains("hf:org/tiny")
            && e.contains(empty.to_str().unwrap())
            && e.contains("HF_HUB_OFFLINE=1"),
        "{e}"
    );
    // The server down, a cached revision is still used (with a warning).
    let down = [env[0], ("HF_ENDPOINT", "http://127.0.0.1:9")];
    let out = hub.run_env(&["download", "hf:org/tiny"], &down);
    assert_eq!(ok_ref(&out).trim(), snap.to_str().unwrap());
    assert!(
        stderr(&out).contains("using the cached snapshot"),
        "{}",
        stderr(&out)
    );
}

fn ok_ref(out: &Output) -> String {
    assert!(out.status.success(), "stderr: {}", stderr(out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_revision_picks_its_own_snapshot_and_openclip_folders_load() {
    let hub = tiny_hub();
    let (server, cache) = (&hub.server, &hub.cache);
    // The tag v1 holds only OpenCLIP files: `hf:` takes them when there is no HF folder.
    let out = ok(hub.run(&["download", "hf:org/tiny@v1"]));
    let snap = snapshot(cache, V1);
    assert_eq!(out.trim(), snap.to_str().unwrap());
    assert!(snap.join("open_clip_config.json").is_file());
    assert!(!snapshot(cache, MAIN).exists());
    let refs = cache.join("models--org--tiny/refs");
    assert_eq!(std::fs::read_to_string(refs.join("v1")).unwrap(), V1);

    // The same weights through both folders: exported from hf:...@v1 (OpenCLIP, spelled
    // OpenCLIP's way) and from hf:... (Hugging Face) they are equal.
    for (id, out) in [
        ("hf-hub:org/tiny@v1", "from-oc"),
        ("hf:org/tiny", "from-hf"),
    ] {
        ok(hub.run(&["export", "hf", "--checkpoint", id, "--out", out]));
    }
    let a = tch::Tensor::read_safetensors(hub.path().join("from-oc/model.safetensors")).unwrap();
    let mut b =
        tch::Tensor::read_safetensors(hub.path().join("from-hf/model.safetensors")).unwrap();
    assert_eq!(a.len(), b.len());
    for (name, t) in &a {
        let i = b.iter().position(|(n, _)| n == name).expect(name);
        let (_, u) = b.swap_remove(i);
        assert!(t.equal(&u), "{name}");
    }

    // A commit hash names its snapshot: no ref is written, and once cached no request is made.
    let pinned = format!("hf:org/tiny@{MAIN}");
    let before = server.requests().len();
    let out = ok(hub.run(&["download", &pinned]));
    assert_eq!(out.trim(), snapshot(cache, MAIN).to_str().unwrap());
    assert!(!refs.join(MAIN).exists());
    assert_eq!(server.requests().len(), before);

    let e = err(hub.run(&["download", "hf:org/tiny@v9"]));
    assert!(
        e.contains("hf:org/tiny@v9")
            && e.contains("no revision \"v9\"")
            && e.contains(&server.endpoint),
        "{e}"
    );
}

#[test]
fn what_is_missing_or_malformed_is_named() {
    let d = tempfile::tempdir().unwrap();
    let pickle = d.path().join("pickle");
    std::fs::create_dir(&pickle).unwrap();
    std::fs::copy(
        fixtures().join("hf/config.json"),
        pickle.join("config.json"),
    )
    .unwrap();
    std::fs::write(pickle.join("pytorch_model.bin"), b"not read").unwrap();
    let hub = Hub::start_in(
        d,
        vec![
            (
                "org/tiny",
                vec![Revision {
                    names: vec!["main".into()],
                    commit: MAIN.into(),
                    dir: fixtures().join("hf"),
                }],
            ),
            (
                "org/pickle",
                vec![
                    Revision {
                        names: vec!["main".into()],
                        commit: V1.into(),
                        dir: pickle,
                    },
                    Revision {
                        names: vec!["refs/pr/7".into()],
                        commit: MAIN.into(),
                        dir: fixtures().join("hf"),
                    },
                ],
            ),
        ],
    );
    let (server, cache, env) = (&hub.server, &hub.cache, hub.env());
    let e = err(hub.run(&["download", "hf:org/absent"]));
    assert!(
        e.contains("no model repository org/absent") && e.contains(&server.endpoint),
        "{e}"
    );
    // PyTorch weights are fetched like safetensors; a file that is not one is named on load.
    ok(hub.run(&["download", "hf:org/pickle"]));
    let e = err(hub.run(&[
        "export",
        "hf",
        "--checkpoint",
        "hf:org/pickle",
        "--out",
        "p",
    ]));
    assert!(
        e.contains("pytorch_model.bin") && e.contains("not a zip archive"),
        "{e}"
    );
    // Another revision of the same repository has its own snapshot.
    ok(hub.run(&[
        "export",
        "hf",
        "--checkpoint",
        "hf:org/pickle@refs/pr/7",
        "--out",
        "pr7",
    ]));
    let refs = cache.join("models--org--pickle/refs/refs/pr/7");
    assert_eq!(std::fs::read_to_string(refs).unwrap(), MAIN);
    // Listed but not served: the id, the file and the server are named.
    server.hide("model.safetensors");
    let e = err(hub.run(&["export", "hf", "--checkpoint", "hf:org/tiny", "--out", "z"]));
    assert!(
        e.contains("hf:org/tiny")
            && e.contains("model.safetensors")
            && e.contains(&server.endpoint)
            && e.contains("404"),
        "{e}"
    );
    // No server at all.
    let down = [env[0], ("HF_ENDPOINT", "http://127.0.0.1:9")];
    let e = err(hub.run_env(&["download", "hf:org/tiny"], &down));
    assert!(
        e.contains("could not reach http://127.0.0.1:9") && e.contains("HF_HUB_OFFLINE=1"),
        "{e}"
    );
    // Malformed ids: one line each, from the command and from `config check`.
    let e = err(hub.run(&["download", "hf:clip"]));
    assert!(e.contains("\"clip\" is not ORG/NAME"), "{e}");
    std::fs::write(
        hub.path().join("c.toml"),
        "[model]\ninit_from = \"hf:org/x y\"\n",
    )
    .unwrap();
    let e = err(hub.run(&["config", "check", "c.toml"]));
    assert!(
        e.contains("model.init_from = \"hf:org/x y\" must be a Hub id hf:ORG/NAME"),
        "{e}"
    );
}

#[test]
fn an_interrupted_or_damaged_download_is_completed_and_checked() {
    let hub = tiny_hub();
    let (server, cache, env) = (&hub.server, &hub.cache, hub.env());
    let weights = std::fs::read(fixtures().join("hf/model.safetensors")).unwrap();
    let tag = etag(&weights);
    let half = weights.len() / 2;
    // The connection drops halfway: the transfer continues from the bytes it has.
    server.cut_next("model.safetensors", half);
    let out = ok(hub.run(&["download", "hf:org/tiny"]));
    let file = PathBuf::from(out.trim()).join("model.safetensors");
    assert_eq!(std::fs::read(&file).unwrap(), weights);
    let bodies = server.body_requests("model.safetensors", &tag);
    let ranges: Vec<_> = bodies.iter().map(|r| r.range.clone()).collect();
    assert_eq!(
        ranges,
        vec![Some("bytes=0-".to_string()), Some(format!("bytes={half}-"))]
    );
    // A blob damaged in the cache (cut short) is found by its size and fetched again.
    let blob = cache.join("models--org--tiny/blobs").join(&tag);
    std::fs::write(&blob, &weights[..100]).unwrap();
    ok(hub.run(&["download", "hf:org/tiny"]));
    assert_eq!(std::fs::read(&file).unwrap(), weights);
    assert_eq!(server.body_requests("model.safetensors", &tag).len(), 3);
    // A server whose file does not match its listing: refused after a second try, nothing kept.
    server.misstate_size("tokenizer.json");
    let fresh = hub.path().join("fresh");
    let e = err(hub.run_env(
        &["download", "hf:org/tiny"],
        &[("HF_HUB_CACHE", fresh.to_str().unwrap()), env[1]],
    ));
    assert!(
        e.contains("tokenizer.json") && e.contains("the Hub lists") && e.contains("twice"),
        "{e}"
    );
    assert!(!snapshot(&fresh, MAIN).join("tokenizer.json").exists());
}

#[test]
fn a_hub_model_is_evaluated_and_starts_a_run() {
    let hub = tiny_hub();
    let cache = &hub.cache;
    ok(cliptrain(
        &[
            "data",
            "synth",
            "--out",
            "syn",
            "--train",
            "16",
            "--eval",
            "8",
            "--image-size",
            "32",
        ],
        hub.path(),
    ));
    std::fs::write(
        hub.path().join("ft.toml"),
        r#"
[run]
name = "ft"
output_dir = "runs"
device = "cpu"
threads = 1
[data]
train = "syn/train-000000.tar"
workers = 1
shuffle_buffer = 8
[model]
init_from = "hf:org/tiny"
[optim]
steps = 1
batch_size = 8
warmup_steps = 0
[checkpoint]
every = 0
[log]
tensorboard = false
progress = "plain"
"#,
    )
    .unwrap();
    let eval = ok(hub.run(&[
        "eval",
        "zeroshot",
        "--checkpoint",
        "hf:org/tiny",
        "--data",
        "syn/eval-000000.tar",
        "--classnames",
        "syn/classnames.txt",
    ]));
    assert!(eval.contains("| all |"), "{eval}");
    let out = hub.run(&["train", "--config", "ft.toml"]);
    let log = stderr(&out);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("model.init_from = hf:org/tiny"), "{log}");
    // The run's model is the Hub model's: its saved config has the source's dimensions and
    // tokenizer (from the snapshot).
    let saved = std::fs::read_to_string(hub.path().join("runs/ft/latest/config.toml")).unwrap();
    assert!(saved.contains("vocab_size = 600"), "{saved}");
    assert!(
        saved.contains(
            snapshot(cache, MAIN)
                .join("tokenizer.json")
                .to_str()
                .unwrap()
        ),
        "{saved}"
    );
}

#[test]
fn a_cache_python_filled_is_read_offline() {
    // Python's huggingface_hub downloads from the stand-in as from the Hub (which also checks
    // the stand-in), and cliptrain reads that cache with HF_HUB_OFFLINE=1.
    let hub = tiny_hub();
    let (server, cache) = (&hub.server, &hub.cache);
    let py = Command::new(common::venv_python())
        .args([
            "-c",
            "import sys; from huggingface_hub import snapshot_download as s; \
             print(s('org/tiny', cache_dir=sys.argv[1]))",
            cache.to_str().unwrap(),
        ])
        .env("HF_ENDPOINT", &server.endpoint)
        .env("HF_HUB_DISABLE_TELEMETRY", "1")
        .env_remove("HF_HUB_OFFLINE")
        .output()
        .unwrap();
    let snap = snapshot(cache, MAIN);
    assert_eq!(
        String::from_utf8_lossy(&py.stdout).trim(),
        snap.to_str().unwrap(),
        "{}",
        String::from_utf8_lossy(&py.stderr)
    );
    let before = server.requests().len();
    let env = [hub.env()[0], hub.env()[1], ("HF_HUB_OFFLINE", "1")];
    let out = ok(hub.run_env(&["download", "hf:org/tiny"], &env));
    assert_eq!(out.trim(), snap.to_str().unwrap());
    ok(hub.run_env(
        &[
            "export",
            "openclip",
            "--checkpoint",
            "hf:org/tiny",
            "--out",
            "oc",
        ],
        &env,
    ));
    assert_eq!(server.requests().len(), before, "offline asks nothing");
    // A cached snapshot without the weights is named, with what it has.
    std::fs::remove_file(snap.join("model.safetensors")).unwrap();
    let e = err(hub.run_env(&["download", "hf:org/tiny"], &env));
    assert!(
        e.contains("has no model cliptrain reads") && e.contains("config.json, "),
        "{e}"
    );
}

#[test]
fn a_download_another_process_holds_is_waited_for_not_repeated() {
    // Each rank of a job opens the same model.init_from: while one downloads a blob (here this
    // test, holding the blob's lock), the others wait and then use its file.
    use std::os::fd::AsRawFd;
    let hub = tiny_hub();
    let (server, cache) = (&hub.server, &hub.cache);
    let weights = std::fs::read(fixtures().join("hf/model.safetensors")).unwrap();
    let tag = etag(&weights);
    let blobs = cache.join("models--org--tiny/blobs");
    std::fs::create_dir_all(&blobs).unwrap();
    let lock = std::fs::File::create(blobs.join(format!("{tag}.lock"))).unwrap();
    // SAFETY: flock on a file descriptor this test owns.
    assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);
    let mut cmd = hub.command(&["download", "hf:org/tiny"]);
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    // No timing assumptions: the lock stays held until cliptrain has exited. Once cliptrain
    // says it waits, the "other process" puts the
    // finished blob in place (renamed, so it is never seen half-written); cliptrain must find
    // it and link it without downloading.
    let (said, waiting) = std::sync::mpsc::channel();
    let pipe = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut log = String::new();
        for line in std::io::BufReader::new(pipe).lines() {
            let line = line.unwrap_or_default();
            if line.contains("another process is downloading model.safetensors") {
                said.send(()).ok();
            }
            log.push_str(&line);
            log.push('\n');
        }
        log
    });
    let waited = waiting.recv_timeout(std::time::Duration::from_secs(300));
    let part = blobs.join("finished-elsewhere.tmp");
    std::fs::write(&part, &weights).unwrap();
    std::fs::rename(&part, blobs.join(&tag)).unwrap();
    let status = child.wait().unwrap();
    drop(lock);
    let log = reader.join().unwrap();
    assert!(
        waited.is_ok(),
        "cliptrain never said it waits for the lock:\n{log}"
    );
    assert!(status.success(), "{log}");
    let snap = snapshot(cache, MAIN);
    assert_eq!(
        std::fs::read(snap.join("model.safetensors")).unwrap(),
        weights
    );
    assert!(server.body_requests("model.safetensors", &tag).is_empty());
}
