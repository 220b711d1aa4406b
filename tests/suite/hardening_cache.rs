//! Caches and outputs that outlive a command: the probes' feature cache must not serve a set
//! rewritten in place or an entry that does not fit the model, and an export or a data build
//! stopped by a signal must leave nothing half-written under a final name (issue 27, items 11,
//! 14 and 23).
use crate::common::{self, cliptrain, ok, small_synth};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tch::Tensor;

fn fixture() -> PathBuf {
    common::repo().join("tests/fixtures/checkpoint-per-tensor-adamw/step-0000003")
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Every name in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut n: Vec<String> = std::fs::read_dir(dir)
        .map(|e| {
            e.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    n.sort();
    n
}

/// The one entry in the cache folder, rewritten with its features replaced by `edit`'s (its
/// labels and key kept, so only the check under test can refuse it).
fn edit_entry(cache: &Path, edit: impl Fn(&Tensor) -> Tensor) {
    let entries = names(cache);
    assert_eq!(entries.len(), 1, "{entries:?}");
    let path = cache.join(&entries[0]);
    let mut tensors = Tensor::read_safetensors(&path).unwrap();
    for (name, t) in &mut tensors {
        if name == "features" {
            *t = edit(t).contiguous();
        }
    }
    Tensor::write_safetensors(&tensors, &path).unwrap();
}

#[test]
fn a_benchmark_rewritten_in_place_or_a_bad_cache_entry_is_encoded_again_with_a_warning() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    small_synth(d, 8, 48, 48);
    common::benchmark::build(d);
    let fixture = fixture();
    // k-NN of the test split among itself: one cache entry, no fitting.
    let knn = || {
        cliptrain(
            &[
                "eval",
                "knn",
                "--checkpoint",
                fixture.to_str().unwrap(),
                "--data",
                "bench/cls",
                "--train-split",
                "test",
                "--split",
                "test",
                "--k",
                "1",
                "--cache-dir",
                "cache",
                "--json",
                "knn.json",
            ],
            d,
        )
    };
    let test_samples = || -> u64 {
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(d.join("knn.json")).unwrap()).unwrap();
        v["knn"][0]["test_samples"].as_u64().unwrap()
    };
    let first = knn();
    assert!(
        stderr(&first).contains("48 images encoded"),
        "{}",
        stderr(&first)
    );
    let again = knn();
    assert!(
        stderr(&again).contains("48 images, from the cache"),
        "{}",
        stderr(&again)
    );

    // Same path, other images: the second shard now holds the train split's 4 samples.
    std::fs::copy(
        d.join("bench/cls/train/0.tar"),
        d.join("bench/cls/test/1.tar"),
    )
    .unwrap();
    // Each run below must warn once, naming the entry and `why`, and encode the set again.
    let encoded_again = |why: &str| {
        let out = knn();
        let err = stderr(&out);
        assert!(out.status.success() && !err.contains("panicked"), "{err}");
        // The rewritten set covers 24 of the 48 classes, which the k-NN warns about on its own.
        let warnings: Vec<&str> = err
            .lines()
            .filter(|l| l.contains("WARN") && l.contains("feature cache"))
            .collect();
        assert!(
            warnings.len() == 1
                && warnings[0].contains(why)
                && warnings[0].contains("feature cache cache/")
                && warnings[0].contains("encoding bench/cls (test) again"),
            "{err}"
        );
        assert!(err.contains("28 images encoded"), "{err}");
    };
    encoded_again("is stale: the data's files (names, sizes or modification times) changed");
    assert_eq!(test_samples(), 28, "the rewritten set, not the cached one");
    assert_eq!(
        names(&d.join("cache")).len(),
        1,
        "the stale entry was overwritten"
    );

    // An entry of another width (7 for this 16-wide model) or with NaN: a warning, a rebuild,
    // never a libtorch panic.
    edit_entry(&d.join("cache"), |x| x.narrow(1, 0, 7));
    encoded_again("holds 7-wide features, but the model's embedding width is 16");
    edit_entry(&d.join("cache"), |x| x * f64::NAN);
    encoded_again("holds 448 non-finite (NaN or infinite) feature values");
    let entries = names(&d.join("cache"));
    assert!(
        entries.len() == 1 && !entries[0].starts_with(".tmp"),
        "written by rename, no temporary left: {entries:?}"
    );
    let cached = knn();
    assert!(
        stderr(&cached).contains("28 images, from the cache"),
        "{}",
        stderr(&cached)
    );
}

/// Starts `cliptrain args` in `d`; output is kept for [`finish`].
fn spawn(args: &[&str], d: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_cliptrain"))
        .args(args)
        .current_dir(d)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits (up to a minute) until `ready(child)`; false if the child ended first.
fn wait_for_child(child: &mut Child, ready: impl Fn(&Child) -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(60) {
        if ready(child) {
            return true;
        }
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    panic!("timed out waiting for the command");
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: signals a child of this test by its pid.
    unsafe { libc::kill(child.id() as i32, sig) };
}

/// Whether `child`'s `.tmp-build-PID` folder in `out` holds a finished shard: it is writing.
fn mid_build(out: &Path, child: &Child) -> bool {
    let staging = out.join(format!(".tmp-build-{}", child.id()));
    names(&staging).iter().any(|s| s.ends_with(".tar"))
}

/// Whether `child`'s `.tmp-export-PID` folder is in `out`: its handler is installed and it is
/// writing (or about to publish).
fn mid_export(out: &Path, child: &Child) -> bool {
    out.join(format!(".tmp-export-{}", child.id())).is_dir()
}

#[test]
fn a_data_build_stopped_mid_write_leaves_no_final_name_and_the_rerun_starts_clean() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    // 400 images of 128 px, each re-encoded at 64 px on one thread: slow enough to stop.
    ok(cliptrain(
        &[
            "data",
            "synth",
            "--out",
            "raw",
            "--layout",
            "folder",
            "--train",
            "400",
            "--eval",
            "8",
            "--image-size",
            "128",
        ],
        d,
    ));
    let build = |out: &str| {
        spawn(
            &[
                "data",
                "build",
                "--images",
                "raw/images",
                "--captions",
                "raw/captions.csv",
                "--out",
                out,
                "--shard-size",
                "20",
                "--max-side",
                "64",
                "--threads",
                "1",
            ],
            d,
        )
    };

    // SIGTERM: the build stops between rows and removes what it staged.
    let out = d.join("built");
    let mut child = build("built");
    assert!(
        wait_for_child(&mut child, |c| mid_build(&out, c)),
        "finished too soon"
    );
    signal(&child, libc::SIGTERM);
    let stopped = child.wait_with_output().unwrap();
    let err = stderr(&stopped);
    assert_eq!(stopped.status.code(), Some(1), "{err}");
    assert!(
        err.contains("of 400 rows; the unfinished build was removed and nothing was written")
            && !err.contains("panicked"),
        "{err}"
    );
    assert_eq!(
        names(&out),
        Vec::<String>::new(),
        "no shard, no .tmp, no stats.json"
    );

    // SIGKILL cannot be caught: the staging folder stays, hidden, and only it.
    let mut child = build("built");
    assert!(
        wait_for_child(&mut child, |c| mid_build(&out, c)),
        "finished too soon"
    );
    signal(&child, libc::SIGKILL);
    child.wait().unwrap();
    let left = names(&out);
    assert!(
        left.len() == 1 && left[0].starts_with(".tmp-build-"),
        "{left:?}"
    );
    // The rerun removes it, says so, and builds the whole set.
    let rerun = build("built").wait_with_output().unwrap();
    let err = stderr(&rerun);
    assert!(rerun.status.success(), "{err}");
    assert!(
        err.contains(&format!("removed built/{}", left[0]))
            && err.contains("the unfinished build of a process that was stopped"),
        "{err}"
    );
    let stats: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("stats.json")).unwrap()).unwrap();
    assert_eq!(stats["written"], 400);
    let shards = names(&out);
    assert_eq!(shards.len(), 21, "20 shards and stats.json: {shards:?}");
    assert!(shards.iter().all(|n| !n.contains("tmp")), "{shards:?}");
}

#[test]
fn an_export_killed_at_any_point_leaves_nothing_or_the_whole_set_and_a_rerun_succeeds() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let fixture = fixture();
    let export = |force: bool| {
        let mut a = vec!["export", "hf", "--checkpoint", fixture.to_str().unwrap()];
        a.extend(["--out", "out"]);
        if force {
            a.push("--force");
        }
        spawn(&a, d)
    };
    let out = d.join("out");
    let final_names = [
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
        "special_tokens_map.json",
        "tokenizer.json",
        "tokenizer_config.json",
    ];
    // A complete export, kept to compare the --force exports with.
    ok(export(false).wait_with_output().unwrap());
    let complete: Vec<Vec<u8>> = final_names
        .iter()
        .map(|n| std::fs::read(out.join(n)).unwrap())
        .collect();
    // --force over it, killed as soon as its staging folder appears (so mid-write, or just
    // after): every file under a final name is complete (old or new, byte-identical here),
    // never a truncated one.
    let mut caught = 0;
    for sig in [libc::SIGTERM, libc::SIGKILL, libc::SIGINT] {
        let mut child = export(true);
        caught += usize::from(wait_for_child(&mut child, |c| mid_export(&out, c)));
        signal(&child, sig);
        let end = child.wait_with_output().unwrap();
        for (n, bytes) in final_names.iter().zip(&complete) {
            assert_eq!(&std::fs::read(out.join(n)).unwrap(), bytes, "{n}");
        }
        if sig != libc::SIGKILL {
            // Caught: the export removed its staging itself, and said why it stopped (or it
            // had published already).
            let err = stderr(&end);
            assert!(
                names(&out).iter().all(|n| !n.starts_with(".tmp-export-")),
                "{:?}",
                names(&out)
            );
            assert!(
                end.status.success() || err.contains("stopped before the export was complete"),
                "{err}"
            );
        }
    }
    eprintln!("{caught} of 3 exports were stopped with their staging folder present");
    // Into a fresh folder: killed, then a plain rerun (no --force) must succeed.
    std::fs::remove_dir_all(&out).unwrap();
    let mut child = export(false);
    wait_for_child(&mut child, |c| mid_export(&out, c));
    signal(&child, libc::SIGKILL);
    child.wait().unwrap();
    let left = names(&out);
    let have = left
        .iter()
        .filter(|n| final_names.contains(&n.as_str()))
        .count();
    assert!(
        have == 0 || have == final_names.len(),
        "a partial set: {left:?}"
    );
    // Nothing under a final name: a plain export is not refused (and clears the staging).
    ok(export(have > 0).wait_with_output().unwrap());
    assert_eq!(names(&out), final_names, "no staging left");
}
