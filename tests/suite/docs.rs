//! The documentation cannot drift from the code: every `cliptrain ...` line in README.md,
//! docs/ and configs/README.md parses with the binary's own argument parser, every TOML block
//! marked `<!-- check: config -->` is a valid run config, every relative link and anchor
//! resolves, and docs/commands.md is what the CLI definitions generate.
//!
//! To regenerate docs/commands.md after changing a command:
//! `CLIPTRAIN_BLESS=1 cargo test --release --test suite docs::` (or the test named below).

// The binary's command-line definitions, compiled here as they are in `src/main.rs`, so the
// parser that checks the docs is the one users run. Only the definitions are used.
#[allow(dead_code, unused_imports)]
#[path = "../../src/cli/mod.rs"]
mod cli;

use clap::CommandFactory;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The Markdown files the checks cover.
fn pages() -> Vec<PathBuf> {
    let mut pages = vec![repo().join("README.md"), repo().join("configs/README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(repo().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    pages.extend(docs);
    pages
}

fn rel(p: &Path) -> String {
    p.strip_prefix(repo()).unwrap_or(p).display().to_string()
}

/// A fenced code block: its info string, first line number (1-based, the line after the
/// fence), its lines, and whether a `<!-- check: config -->` marker stands right before it.
struct Block {
    info: String,
    first_line: usize,
    lines: Vec<String>,
    config: bool,
}

/// The fenced blocks of `text` and its prose lines (with their numbers) outside them.
fn split_markdown(text: &str) -> (Vec<Block>, Vec<(usize, String)>) {
    let mut blocks = Vec::new();
    let mut prose = Vec::new();
    let mut open: Option<(String, Block)> = None;
    let mut previous = String::new();
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if let Some((fence, block)) = &mut open {
            if trimmed.starts_with(fence.as_str()) && trimmed.trim_end() == fence.as_str() {
                let (_, block) = open.take().unwrap();
                blocks.push(block);
            } else {
                block.lines.push(line.to_string());
            }
        } else if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
            let fence: String = trimmed
                .chars()
                .take_while(|c| *c == '`' || *c == '~')
                .collect();
            let info = trimmed[fence.len()..].trim().to_string();
            let block = Block {
                info,
                first_line: i + 2,
                lines: vec![],
                config: previous.trim() == "<!-- check: config -->",
            };
            open = Some((fence, block));
        } else {
            prose.push((i + 1, line.to_string()));
        }
        if !line.trim().is_empty() {
            previous = line.to_string();
        }
    }
    (blocks, prose)
}

/// Splits a shell line into words: single and double quotes, backslash escapes, and a `#`
/// comment after whitespace.
fn shell_words(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => w.push(c),
                        None => return Err("unclosed single quote".into()),
                    }
                }
            }
            '"' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => w.extend(chars.next()),
                        Some(c) => w.push(c),
                        None => return Err("unclosed double quote".into()),
                    }
                }
            }
            '\\' => word.get_or_insert_with(String::new).extend(chars.next()),
            '#' if word.is_none() => break,
            c if c.is_whitespace() => words.extend(word.take()),
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    Ok(words)
}

/// The `cliptrain` invocations of a shell block: (line number, words after `cliptrain`).
/// Continuation lines are joined; a `$ ` prompt and leading `VAR=value` assignments are
/// skipped; the command after `cliptrain launch ... --` is checked as a second invocation.
fn invocations(block: &Block) -> Vec<(usize, Result<Vec<String>, String>)> {
    let mut out = Vec::new();
    let mut joined = String::new();
    let mut start = block.first_line;
    for (i, line) in block.lines.iter().enumerate() {
        if joined.is_empty() {
            start = block.first_line + i;
        }
        match line.trim_end().strip_suffix('\\') {
            Some(head) => {
                joined.push_str(head);
                joined.push(' ');
                continue;
            }
            None => joined.push_str(line),
        }
        let text = std::mem::take(&mut joined);
        let text = text.trim_start();
        let text = text.strip_prefix("$ ").unwrap_or(text);
        let words = match shell_words(text) {
            Ok(w) => w,
            Err(e) => {
                if text.contains("cliptrain") {
                    out.push((start, Err(e)));
                }
                continue;
            }
        };
        let mut words = words.into_iter().skip_while(|w| is_assignment(w));
        if words.next().as_deref() != Some("cliptrain") {
            continue;
        }
        let args: Vec<String> = words.collect();
        if args.first().map(String::as_str) == Some("launch")
            && let Some(dash) = args.iter().position(|w| w == "--")
            && args.get(dash + 1).map(String::as_str) == Some("cliptrain")
        {
            out.push((start, Ok(args[dash + 2..].to_vec())));
        }
        out.push((start, Ok(args)));
    }
    out
}

fn is_assignment(word: &str) -> bool {
    word.split_once('=').is_some_and(|(name, _)| {
        !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_uppercase() || c == '_' || c.is_ascii_digit())
    })
}

const SHELL_FENCES: [&str; 5] = ["", "sh", "bash", "shell", "console"];

#[test]
fn every_command_line_in_the_docs_parses_with_the_cli() {
    let mut checked = 0;
    let mut bad = Vec::new();
    for page in pages() {
        let (blocks, _) = split_markdown(&std::fs::read_to_string(&page).unwrap());
        for block in blocks
            .iter()
            .filter(|b| SHELL_FENCES.contains(&b.info.as_str()))
        {
            for (line, words) in invocations(block) {
                checked += 1;
                let words = match words {
                    Ok(w) => w,
                    Err(e) => {
                        bad.push(format!("{}:{line}: {e}", rel(&page)));
                        continue;
                    }
                };
                let argv = std::iter::once("cliptrain".to_string()).chain(words.iter().cloned());
                if let Err(e) = <cli::Cli as clap::Parser>::try_parse_from(argv) {
                    use clap::error::ErrorKind::{DisplayHelp, DisplayVersion};
                    if !matches!(e.kind(), DisplayHelp | DisplayVersion) {
                        let first = e.to_string().lines().next().unwrap_or("").to_string();
                        bad.push(format!(
                            "{}:{line}: cliptrain {}: {first}",
                            rel(&page),
                            words.join(" ")
                        ));
                    }
                }
            }
        }
    }
    assert!(
        checked > 40,
        "only {checked} command lines found: is the fence rule right?"
    );
    assert!(
        bad.is_empty(),
        "{} of {checked} command lines do not parse:\n{}",
        bad.len(),
        bad.join("\n")
    );
}

#[test]
fn every_config_block_in_the_docs_is_a_valid_config() {
    let mut checked = 0;
    let mut bad = Vec::new();
    for page in pages() {
        let (blocks, _) = split_markdown(&std::fs::read_to_string(&page).unwrap());
        for block in blocks.iter().filter(|b| b.config) {
            checked += 1;
            if block.info != "toml" {
                bad.push(format!(
                    "{}:{}: a config marker on a ```{} block",
                    rel(&page),
                    block.first_line,
                    block.info
                ));
                continue;
            }
            // `extends` resolves from the working directory, the repository root in tests.
            if let Err(e) = cliptrain::config::load_str(&block.lines.join("\n"), &[]) {
                bad.push(format!("{}:{}: {e}", rel(&page), block.first_line));
            }
        }
    }
    assert!(checked >= 5, "only {checked} config blocks marked");
    assert!(
        bad.is_empty(),
        "config blocks that do not load:\n{}",
        bad.join("\n")
    );
}

/// GitHub's anchor for a heading: lowercase, spaces to `-`, other punctuation but `-` and `_`
/// dropped.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

fn anchors(page: &Path) -> BTreeSet<String> {
    let text = std::fs::read_to_string(page).unwrap_or_default();
    let (_, prose) = split_markdown(&text);
    let mut seen = BTreeSet::new();
    for (_, line) in prose {
        let Some(heading) = line.strip_prefix('#') else {
            continue;
        };
        let heading = heading.trim_start_matches('#').replace('`', "");
        let base = slug(&heading);
        // Repeated headings get -1, -2, ... as on GitHub.
        let mut name = base.clone();
        let mut n = 0;
        while !seen.insert(name.clone()) {
            n += 1;
            name = format!("{base}-{n}");
        }
    }
    seen
}

/// `[text](target)` link targets of a prose line (inline code spans left out).
fn link_targets(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut outside_code = String::new();
    for (i, part) in line.split('`').enumerate() {
        if i % 2 == 0 {
            outside_code.push_str(part);
        }
        outside_code.push(' ');
    }
    let mut rest = outside_code.as_str();
    while let Some(i) = rest.find("](") {
        rest = &rest[i + 2..];
        if let Some(end) = rest.find(')') {
            out.push(rest[..end].trim().to_string());
            rest = &rest[end..];
        }
    }
    out
}

#[test]
fn every_relative_link_and_anchor_in_the_docs_resolves() {
    let mut checked = 0;
    let mut bad = Vec::new();
    for page in pages() {
        let (_, prose) = split_markdown(&std::fs::read_to_string(&page).unwrap());
        for (n, line) in prose {
            for target in link_targets(&line) {
                if target.contains("://") || target.starts_with("mailto:") {
                    continue;
                }
                checked += 1;
                let (file, anchor) = match target.split_once('#') {
                    Some((f, a)) => (f, Some(a)),
                    None => (target.as_str(), None),
                };
                let dest = if file.is_empty() {
                    page.clone()
                } else {
                    page.parent().unwrap().join(file)
                };
                if !dest.exists() {
                    bad.push(format!("{}:{n}: {target}: no such file", rel(&page)));
                    continue;
                }
                if let Some(anchor) = anchor
                    && dest.extension().is_some_and(|e| e == "md")
                    && !anchors(&dest).contains(anchor)
                {
                    bad.push(format!(
                        "{}:{n}: {target}: no heading with that anchor in {}",
                        rel(&page),
                        rel(&dest)
                    ));
                }
            }
        }
    }
    assert!(checked > 20, "only {checked} relative links found");
    assert!(bad.is_empty(), "broken links:\n{}", bad.join("\n"));
}

/// The command reference, from the CLI definitions: every command and subcommand with its
/// description, usage and options.
fn command_reference() -> String {
    let mut out = String::from(
        "# Command reference\n\n\
         Every `cliptrain` command, generated from the command-line definitions in `src/cli/`\n\
         (a test fails when this page and the code differ; regenerate it with\n\
         `CLIPTRAIN_BLESS=1 cargo test --release --test suite docs::`). Every command also\n\
         takes `-v`/`-q` (more or less log output on stderr; `CLIPTRAIN_LOG=debug` takes a full\n\
         filter) and `--help`. The topic pages explain what each does: [training](training.md),\n\
         [data](data.md), [evaluation](evaluation.md), [fine-tuning](finetuning.md),\n\
         [distributed training](distributed.md).\n",
    );
    let mut root = cli::Cli::command();
    root.build();
    let mut index = String::from("\n| command | what it does |\n|---|---|\n");
    let mut body = String::new();
    for sub in root.get_subcommands() {
        render(sub, "cliptrain", &mut index, &mut body);
    }
    out.push_str(&index);
    out.push_str(&body);
    out
}

fn render(cmd: &clap::Command, parent: &str, index: &mut String, body: &mut String) {
    if cmd.get_name() == "help" {
        return;
    }
    let name = format!("{parent} {}", cmd.get_name());
    let about = cmd.get_about().map(|a| a.to_string()).unwrap_or_default();
    let long = cmd
        .get_long_about()
        .map(|a| a.to_string())
        .unwrap_or_else(|| about.clone());
    if cmd.has_subcommands() {
        body.push_str(&format!("\n## `{name}`\n\n{long}\n"));
        for sub in cmd.get_subcommands() {
            render(sub, &name, index, body);
        }
        return;
    }
    let first = about.lines().next().unwrap_or("").trim_end_matches('.');
    index.push_str(&format!("| [`{name}`](#{}) | {first} |\n", slug(&name)));
    let usage = cmd.clone().render_usage().to_string();
    let usage = usage.trim_start_matches("Usage: ");
    body.push_str(&format!(
        "\n### `{name}`\n\n{long}\n\n```text\n{usage}\n```\n"
    ));
    let args: Vec<&clap::Arg> = cmd
        .get_arguments()
        .filter(|a| {
            !a.is_hide_set()
                && !["help", "version", "verbose", "quiet"].contains(&a.get_id().as_str())
        })
        .collect();
    if args.is_empty() {
        return;
    }
    body.push('\n');
    for a in args {
        let value = a.get_value_names().map(|v| {
            v.iter()
                .map(|n| format!("<{n}>"))
                .collect::<Vec<_>>()
                .join(" ")
        });
        let flag = match (a.get_long(), a.get_short()) {
            (Some(l), Some(s)) => format!("-{s}, --{l}"),
            (Some(l), None) => format!("--{l}"),
            (None, Some(s)) => format!("-{s}"),
            (None, None) => value
                .clone()
                .unwrap_or_else(|| a.get_id().to_string().to_uppercase()),
        };
        let takes = a.get_num_args().is_some_and(|n| n.takes_values()) && a.get_long().is_some();
        let flag = match (&value, takes) {
            (Some(v), true) => format!("{flag} {v}"),
            _ => flag,
        };
        let help = a
            .get_long_help()
            .or(a.get_help())
            .map(|h| h.to_string())
            .unwrap_or_default();
        let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
        let defaults: Vec<String> = a
            .get_default_values()
            .iter()
            .map(|v| v.to_string_lossy().into_owned())
            .collect();
        let default = if defaults.is_empty() || !takes {
            String::new()
        } else {
            format!(" (default: `{}`)", defaults.join(", "))
        };
        body.push_str(&format!("- `{flag}`: {help}{default}\n"));
    }
}

#[test]
fn the_command_reference_is_what_the_cli_definitions_generate() {
    let path = repo().join("docs/commands.md");
    let want = command_reference();
    if std::env::var_os("CLIPTRAIN_BLESS").is_some() {
        std::fs::write(&path, &want).unwrap();
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        have == want,
        "docs/commands.md differs from the CLI definitions; regenerate it with \
         CLIPTRAIN_BLESS=1 cargo test --release --test suite docs:: and review the diff"
    );
}

#[test]
fn the_checks_see_what_they_claim_to() {
    // The parser refuses a flag that does not exist, so a renamed flag fails the suite.
    let bad =
        <cli::Cli as clap::Parser>::try_parse_from(["cliptrain", "train", "--confg", "x.toml"]);
    assert!(bad.is_err());
    let block = Block {
        info: "sh".into(),
        first_line: 1,
        lines: vec![
            "$ HF_HUB_OFFLINE=1 cliptrain eval zeroshot \\".into(),
            "    --checkpoint 'runs/a b/latest' --data d  # a comment".into(),
            "cliptrain launch --nproc-per-node 2 -- cliptrain train --config c.toml".into(),
            "scripts/demo.sh".into(),
        ],
        config: false,
    };
    let found: Vec<Vec<String>> = invocations(&block)
        .into_iter()
        .map(|(_, w)| w.unwrap())
        .collect();
    assert_eq!(found.len(), 3, "{found:?}");
    assert_eq!(
        found[0],
        [
            "eval",
            "zeroshot",
            "--checkpoint",
            "runs/a b/latest",
            "--data",
            "d"
        ]
    );
    assert_eq!(found[1], ["train", "--config", "c.toml"]);
    assert_eq!(
        slug("Start from a `pretrained` model (HF, OpenCLIP)"),
        "start-from-a-pretrained-model-hf-openclip"
    );
    assert_eq!(link_targets("see [a](b.md#c) and `[x](y)`"), ["b.md#c"]);
}
