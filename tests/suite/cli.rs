//! The `cliptrain` binary end to end: how it is linked, `env`, `config check`, and `--help`.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_cliptrain")
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs the binary without LD_LIBRARY_PATH, as a user would: libtorch must come from the rpath.
fn run(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .current_dir(repo())
        .env_remove("LD_LIBRARY_PATH")
        .env_remove("CLIPTRAIN_LOG")
        .output()
        .expect("run cliptrain")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn binary_keeps_libtorch_cuda_linked_and_has_an_rpath() {
    let out = Command::new("readelf")
        .args(["-d", bin()])
        .output()
        .expect("readelf (binutils) is installed");
    assert!(out.status.success());
    let dynamic = text(&out.stdout);
    let needed: Vec<&str> = dynamic
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .filter_map(|l| l.split('[').nth(1)?.split(']').next())
        .collect();
    // libtorch.so depends on libtorch_cuda.so; either in NEEDED keeps the CUDA backend loaded.
    assert!(
        needed
            .iter()
            .any(|n| *n == "libtorch.so" || *n == "libtorch_cuda.so"),
        "rustc's --as-needed dropped libtorch(_cuda).so; NEEDED = {needed:?}"
    );
    let rpath = dynamic
        .lines()
        .find(|l| l.contains("(RUNPATH)") || l.contains("(RPATH)"))
        .and_then(|l| l.split('[').nth(1)?.split(']').next())
        .expect("binary has an RPATH/RUNPATH");
    let has_torch = rpath.split(':').any(|d| {
        Path::new(d).join("libtorch_cpu.so").exists()
            && Path::new(d).join("libtorch_cuda.so").exists()
    });
    assert!(
        has_torch,
        "no rpath entry holds libtorch_cpu.so and libtorch_cuda.so: {rpath}"
    );
}

#[test]
fn env_reports_libtorch_2_11_and_a_loaded_cuda_backend() {
    let out = run(&["env"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["libtorch", "2.11.0"]),
        "{stdout}"
    );
    assert!(
        stdout.contains("CUDA backend    linked (CUDA 13."),
        "{stdout}"
    );

    let out = run(&["env", "--json"]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("env --json prints JSON");
    assert_eq!(v["libtorch_version"], "2.11.0");
    assert!(v["cuda_backend_error"].is_null(), "{v}");
    assert_eq!(
        v["cuda_available"].as_bool(),
        Some(v["cuda_device_count"].as_i64().unwrap() > 0)
    );
    assert!(v["intra_op_threads"].as_i64().unwrap() >= 1);
    // Loaded from the rpath, not from some other libtorch on the system.
    assert_eq!(v["libtorch_lib_loaded"], v["libtorch_lib_built"]);
}

#[test]
fn env_build_config_shows_libtorch_build() {
    let out = run(&["env", "--build-config"]);
    assert!(out.status.success());
    let stdout = text(&out.stdout);
    assert!(stdout.contains("PyTorch built with"), "{stdout}");
    assert!(stdout.contains("ATen/Parallel"), "{stdout}");
}

#[test]
fn config_check_prints_the_effective_config() {
    // The files the demo config names, where it looks for them (relative to the working dir).
    let dir = tempfile::tempdir().unwrap();
    let synth = dir.path().join("data/synth");
    std::fs::create_dir_all(&synth).unwrap();
    // Read as training would read them, so they must be real lists.
    std::fs::write(synth.join("classnames.txt"), "red circle\nblue square\n").unwrap();
    std::fs::write(synth.join("templates.txt"), "a photo of a {}.\n").unwrap();
    // `config check` loads the tokenizer: a minimal one with CLIP's specials.
    let tokenizer = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": null, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null,
        "decoder": null,
        "model": {"type": "WordLevel", "unk_token": "x",
                  "vocab": {"x": 0, "<|startoftext|>": 1, "<|endoftext|>": 2}},
    });
    std::fs::write(synth.join("tokenizer.json"), tokenizer.to_string()).unwrap();
    let demo = repo().join("configs/demo.toml");
    let check = |dir: &Path| {
        let args = [
            "config",
            "check",
            demo.to_str().unwrap(),
            "--set",
            "optim.steps=420",
        ];
        Command::new(bin())
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap()
    };
    let err = text(&check(dir.path()).stderr);
    assert!(
        err.contains("eval.classes_subset = \"data/synth/classes_seen.txt\": no such file"),
        "{err}"
    );
    std::fs::write(synth.join("classes_seen.txt"), "red circle\n").unwrap();
    let out = check(dir.path());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let effective: toml::Table = text(&out.stdout).parse().expect("stdout is TOML");
    assert_eq!(effective["optim"]["steps"].as_integer(), Some(420));
    assert_eq!(effective["run"]["name"].as_str(), Some("demo"));
    // Defaults are filled in, and values from the extended preset are present.
    assert_eq!(effective["optim"]["beta2"].as_float(), Some(0.98));
    assert_eq!(
        effective["model"]["vision"]["patch_size"].as_integer(),
        Some(8)
    );
}

#[test]
fn config_check_fails_cleanly_with_one_line_per_problem() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("bad.toml");
    std::fs::write(
        &f,
        "[model.vision]\nimage_size = 65\npatch_size = 8\n[optim]\nbatch_size = 1\n",
    )
    .unwrap();
    let out = run(&["config", "check", f.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr.contains("is not a valid config: 2 problems"),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "\n  model.vision.image_size = 65 must be divisible by model.vision.patch_size = 8"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("\n  optim.batch_size = 1 must be at least 2"),
        "{stderr}"
    );
    assert!(
        out.stdout.is_empty(),
        "nothing on stdout for an invalid config"
    );

    let out = run(&["config", "check", "does/not/exist.toml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("cannot read config does/not/exist.toml"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn every_subcommand_has_help() {
    for args in [
        vec!["--help"],
        vec!["--version"],
        vec!["env", "--help"],
        vec!["config", "--help"],
        vec!["config", "check", "--help"],
        vec!["download", "--help"],
    ] {
        let out = run(&args);
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        assert!(!out.stdout.is_empty(), "{args:?} printed nothing");
    }
    let out = run(&["no-such-command"]);
    assert_eq!(out.status.code(), Some(2), "clap usage errors exit 2");
}

#[test]
fn plot_draws_every_runs_curves_into_one_png_and_names_a_missing_log() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (name, slope) in [("a", 1.0), ("b", 2.0)] {
        std::fs::create_dir(d.join(name)).unwrap();
        let mut rows = String::new();
        for step in 1..=50 {
            let loss = 5.0 - slope * step as f64 / 50.0;
            rows += &format!(
                "{{\"kind\":\"train\",\"step\":{step},\"loss\":{loss},\"lr\":{},\"temperature\":0.07}}\n",
                1e-3 * step as f64 / 50.0
            );
            if step % 10 == 0 {
                let top1 = slope * step as f64 / 200.0;
                rows +=
                    &format!("{{\"kind\":\"eval\",\"step\":{step},\"zeroshot_top1\":{top1}}}\n");
            }
        }
        std::fs::write(d.join(name).join("metrics.jsonl"), rows).unwrap();
    }
    let png = d.join("curves.png");
    let (a, b, out) = (d.join("a"), d.join("b"), png.to_str().unwrap());
    let res = run(&[
        "plot",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "--out",
        out,
    ]);
    assert!(res.status.success(), "{}", text(&res.stderr));
    let img = image::open(&png).unwrap().to_rgb8();
    // loss, lr, temperature and eval/zeroshot_top1: a row of three panels and one more, under
    // a legend of two runs.
    assert_eq!(img.dimensions(), (3 * 420, 8 + 2 * 16 + 8 + 2 * 270));
    // Both runs' colours (tab10 blue and orange) are drawn, in every panel's lines.
    for colour in [[31u8, 119, 180], [255, 127, 14]] {
        let n = img.pixels().filter(|p| p.0 == colour).count();
        assert!(n > 1000, "{colour:?}: {n} pixels");
    }
    let dark = img.pixels().filter(|p| p.0.iter().all(|&c| c < 60)).count();
    assert!(dark > 2000, "axes, ticks and labels: {dark} dark pixels");

    let res = run(&["plot", d.join("none").to_str().unwrap(), "--out", out]);
    assert_eq!(res.status.code(), Some(1));
    let err = text(&res.stderr);
    assert!(
        err.contains("none/metrics.jsonl") && err.contains("No such file"),
        "{err}"
    );
}
