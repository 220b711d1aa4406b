//! One preflight: `cliptrain config check` refuses exactly what `cliptrain train` refuses before
//! its first step, with the same words — every start-up refusal the code has, by table — and
//! lists several problems at once.
use crate::common::tiny::{setup, tiny};
use crate::common::{cliptrain, ok};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Command, Output};

/// A start-up refusal: the config changes, extra arguments (for both commands) and environment
/// that cause it, and words both commands must print.
struct Case {
    name: &'static str,
    sets: &'static [&'static str],
    args: &'static [&'static str],
    env: &'static [(&'static str, &'static str)],
    says: &'static [&'static str],
}

const TORCHRUN_3: &[(&str, &str)] = &[
    ("WORLD_SIZE", "3"),
    ("RANK", "0"),
    ("LOCAL_RANK", "0"),
    ("LOCAL_WORLD_SIZE", "3"),
    ("MASTER_ADDR", "127.0.0.1"),
    ("MASTER_PORT", "29999"),
];

const CASES: &[Case] = &[
    Case {
        name: "vocab",
        sets: &["model.text.vocab_size=100"],
        args: &[],
        env: &[],
        says: &["has 600 ids but model.text.vocab_size = 100"],
    },
    Case {
        name: "device",
        sets: &[r#"run.device="cuda:7""#],
        args: &[],
        env: &[],
        says: &["run.device = cuda:7 is not on this host"],
    },
    Case {
        name: "memory",
        sets: &["optim.batch_size=1000000000000"],
        args: &[],
        env: &[],
        says: &["optim.batch_size x (data.prefetch + 4)", "% of the"],
    },
    Case {
        name: "outdir",
        sets: &[r#"run.output_dir="afile""#],
        args: &[],
        env: &[],
        says: &["run.output_dir = afile: cannot write in afile/outdir"],
    },
    Case {
        name: "notok",
        sets: &[r#"data.tokenizer="nope.json""#],
        args: &[],
        env: &[],
        says: &[r#"data.tokenizer = "nope.json": no such file"#],
    },
    Case {
        name: "emptytok",
        sets: &[r#"data.tokenizer="""#],
        args: &[],
        env: &[],
        says: &["data.tokenizer is empty"],
    },
    Case {
        name: "argmax",
        sets: &[
            r#"data.tokenizer="eot-first.json""#,
            r#"model.text.pooling="argmax""#,
        ],
        args: &[],
        env: &[],
        says: &["pools at a row's largest id", "use pooling = \"eot\""],
    },
    Case {
        name: "notrain",
        sets: &[r#"data.train="""#],
        args: &[],
        env: &[],
        says: &["data.train is empty"],
    },
    Case {
        name: "strict",
        sets: &["data.strict=true", r#"data.train="gone-{0..1}.tar""#],
        args: &[],
        env: &[],
        says: &["data.strict = true and 2 shard file(s) of data.train"],
    },
    Case {
        name: "classnames",
        sets: &[
            r#"eval.zeroshot="syn/eval-000000.tar""#,
            r#"eval.classnames="none.txt""#,
        ],
        args: &[],
        env: &[],
        says: &[r#"eval.classnames = "none.txt": no such file"#],
    },
    Case {
        name: "initfrom",
        sets: &[r#"model.init_from="nowhere""#],
        args: &[],
        env: &[],
        says: &["nowhere: no such file or folder"],
    },
    Case {
        name: "ranks",
        sets: &[],
        args: &[],
        env: TORCHRUN_3,
        says: &["optim.batch_size = 8 must be divisible by the number of processes (3)"],
    },
    Case {
        name: "rankenv",
        sets: &[],
        args: &[],
        env: &[
            ("WORLD_SIZE", "two"),
            ("RANK", "0"),
            ("LOCAL_RANK", "0"),
            ("LOCAL_WORLD_SIZE", "1"),
            ("MASTER_ADDR", "127.0.0.1"),
            ("MASTER_PORT", "29999"),
        ],
        says: &[r#"WORLD_SIZE = "two": must be a non-negative integer"#],
    },
    Case {
        name: "existing",
        sets: &[r#"run.name="done""#],
        args: &[],
        env: &[],
        says: &["already has checkpoints; continue it with `--resume auto`"],
    },
    Case {
        name: "changed",
        sets: &[r#"run.name="done""#, "optim.lr=0.5"],
        args: &["--resume", "auto"],
        env: &[],
        says: &[
            "was trained with a different config",
            "optim.lr: ",
            "0.5 now",
        ],
    },
    Case {
        name: "tokchanged",
        sets: &[r#"run.name="done""#, r#"data.tokenizer="eot-first.json""#],
        args: &["--resume", "auto"],
        env: &[],
        says: &["data.tokenizer = eot-first.json is not the tokenizer"],
    },
    Case {
        name: "badstate",
        sets: &[],
        args: &["--resume", "auto"],
        env: &[],
        says: &[
            "badstate/step-0000000/state.json holds 1 value(s) no run could have saved",
            "ranks[0].cursor = 1000000000: rank 0 of 1 reads 3 of the 3 shard(s)",
        ],
    },
    Case {
        name: "emptyclasses",
        sets: &[
            r#"eval.zeroshot="syn/eval-000000.tar""#,
            r#"eval.classnames="empty.txt""#,
        ],
        args: &[],
        env: &[],
        says: &["empty.txt is empty: it needs one class name per line"],
    },
    Case {
        name: "resumefrom",
        sets: &[],
        args: &["--resume", "no-such-run"],
        env: &[],
        says: &["no-such-run"],
    },
    Case {
        name: "locked",
        sets: &[r#"run.name="held""#],
        args: &[],
        env: &[],
        says: &["is in use by another cliptrain process (pid 4242)"],
    },
    Case {
        name: "several",
        sets: &[
            "model.text.vocab_size=100",
            r#"data.train="""#,
            r#"run.device="cuda:7""#,
        ],
        args: &[],
        env: &[],
        says: &[
            "3 start-up problems",
            "run.device = cuda:7 is not on this host",
            "but model.text.vocab_size = 100",
            "data.train is empty",
        ],
    },
];

fn run(d: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cliptrain"))
        .args(args)
        .envs(env.iter().copied())
        .current_dir(d)
        .output()
        .unwrap()
}

/// A tokenizer whose end token is not its largest id (argmax pooling would miss it).
fn eot_first_tokenizer(path: &Path) {
    let tokenizer = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": null, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null,
        "decoder": null,
        "model": {"type": "WordLevel", "unk_token": "x",
                  "vocab": {"x": 0, "<|endoftext|>": 1, "<|startoftext|>": 2, "y": 3}},
    });
    std::fs::write(path, tokenizer.to_string()).unwrap();
}

#[test]
fn config_check_refuses_every_start_up_refusal_of_train_in_the_same_words() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    std::fs::write(d.join("afile"), "").unwrap();
    std::fs::write(d.join("empty.txt"), "").unwrap();
    eot_first_tokenizer(&d.join("eot-first.json"));
    // A run with a checkpoint (step 0) for the resume cases, and one whose lock is held.
    tiny().set(r#"run.name="done""#).write(d.join("done.toml"));
    ok(cliptrain(
        &["train", "--config", "done.toml", "--stop-at-step", "0"],
        d,
    ));
    // A copy of it whose state.json was edited to a data position past its shards.
    crate::hardening_state::edited_checkpoint(
        &d.join("runs/done/step-0000000"),
        &d.join("runs/badstate"),
        |state| state["ranks"][0]["cursor"] = 1_000_000_000u64.into(),
    );
    std::fs::create_dir_all(d.join("runs/held")).unwrap();
    let lock = std::fs::File::create(d.join("runs/held/.lock")).unwrap();
    std::fs::write(d.join("runs/held/.lock"), "4242\n").unwrap();
    // SAFETY: flock on a descriptor this test owns; released when `lock` drops.
    assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);

    let mut failures = Vec::new();
    for case in CASES {
        let file = format!("{}.toml", case.name);
        tiny()
            .set(&format!("run.name={:?}", case.name))
            .sets(case.sets)
            .write(d.join(&file));
        let check: Vec<&str> = ["config", "check", file.as_str()]
            .into_iter()
            .chain(case.args.iter().copied())
            .collect();
        let train: Vec<&str> = ["train", "--config", file.as_str()]
            .into_iter()
            .chain(case.args.iter().copied())
            .collect();
        for (command, args) in [("config check", check), ("train", train)] {
            let out = run(d, &args, case.env);
            let stderr = String::from_utf8_lossy(&out.stderr);
            let said_all = case.says.iter().all(|s| stderr.contains(s));
            if out.status.code() != Some(1) || !said_all || stderr.contains("panicked") {
                failures.push(format!(
                    "{}: `cliptrain {command}` exited {:?}, wanted 1 and {:?}:\n{stderr}",
                    case.name,
                    out.status.code(),
                    case.says
                ));
            }
            if command == "config check" && !out.stdout.is_empty() {
                failures.push(format!(
                    "{}: config check printed a config for a refused run",
                    case.name
                ));
            }
        }
        // Refused before anything was written: no checkpoint, no log.
        let run_dir = d.join("runs").join(case.name);
        if run_dir.join("metrics.jsonl").exists() || run_dir.join("latest").exists() {
            failures.push(format!(
                "{}: train wrote into {} before refusing",
                case.name,
                run_dir.display()
            ));
        }
    }
    drop(lock);
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn config_check_describes_the_plan_train_would_follow() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    let out = run(d, &["config", "check", "tiny.toml"], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    for line in [
        "device: Cpu",
        "tokenizer: syn/tok.json (600 ids",
        "M parameters",
        "starts a fresh run in runs/t",
    ] {
        assert!(stderr.contains(line), "{line:?} missing from:\n{stderr}");
    }
    let effective: toml::Table = String::from_utf8(out.stdout).unwrap().parse().unwrap();
    assert_eq!(
        effective["model"]["text"]["vocab_size"].as_integer(),
        Some(600)
    );
    assert!(
        !d.join("runs/t").exists(),
        "config check creates no run folder"
    );
}
