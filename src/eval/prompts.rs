//! Where class names and prompt templates come from: a text file (one per line), a CLIP_benchmark
//! folder's own files, or a list compiled into the binary (`builtin:NAME`, see
//! [`BUILTINS`]). Templates use `{}` for the class name; CLIP_benchmark's `{c}` is accepted and
//! rewritten to `{}` when read.
use super::EvalError;
use std::path::Path;

/// The prefix that names a compiled-in list instead of a file.
pub const BUILTIN_PREFIX: &str = "builtin:";

/// A compiled-in set of class names and/or templates. The data files live in
/// `src/eval/builtins/`, each headed by `#` lines saying where the list comes from.
pub struct Builtin {
    pub name: &'static str,
    pub classnames: Option<&'static str>,
    pub templates: Option<&'static str>,
    /// Where the list was taken from, for `cliptrain eval builtins`.
    pub source: &'static str,
}

/// Every compiled-in list. ImageNet's are checked against open_clip's copy by a test.
pub const BUILTINS: [Builtin; 4] = [
    Builtin {
        name: "imagenet1k",
        classnames: Some(include_str!("builtins/imagenet1k_classnames.txt")),
        templates: Some(include_str!("builtins/imagenet1k_templates.txt")),
        source: "OpenAI's ImageNet class names and 80 templates (open_clip zero_shot_metadata)",
    },
    Builtin {
        name: "imagenet1k-7",
        classnames: Some(include_str!("builtins/imagenet1k_classnames.txt")),
        templates: Some(include_str!("builtins/imagenet1k-7_templates.txt")),
        source: "ImageNet class names with the 7-template subset (open_clip SIMPLE_IMAGENET_TEMPLATES)",
    },
    Builtin {
        name: "cifar10",
        classnames: Some(include_str!("builtins/cifar10_classnames.txt")),
        templates: Some(include_str!("builtins/cifar10_templates.txt")),
        source: "openai/CLIP data/prompts.md, CIFAR10",
    },
    Builtin {
        name: "cifar100",
        classnames: Some(include_str!("builtins/cifar100_classnames.txt")),
        templates: Some(include_str!("builtins/cifar100_templates.txt")),
        source: "openai/CLIP data/prompts.md, CIFAR100",
    },
];

/// The lines of a compiled-in data file, its leading `#` header left out.
pub fn builtin_lines(text: &str) -> Vec<String> {
    text.lines()
        .skip_while(|l| l.starts_with('#'))
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

fn builtin(spec: &str, what: &str) -> Result<&'static Builtin, EvalError> {
    let name = &spec[BUILTIN_PREFIX.len()..];
    BUILTINS.iter().find(|b| b.name == name).ok_or_else(|| {
        let names: Vec<&str> = BUILTINS.iter().map(|b| b.name).collect();
        EvalError::Input(format!(
            "{spec}: no built-in {what} of that name; `cliptrain eval builtins` lists them ({})",
            names.join(", ")
        ))
    })
}

/// Class names from `spec`: `builtin:NAME` or a file, one name per line (line i = label i).
/// Names may repeat (OpenAI's ImageNet list has two "missile" and two "sunglasses"): labels
/// index lines, so a repeat is two classes that happen to share a prompt.
pub fn classnames(spec: &str) -> Result<Vec<String>, EvalError> {
    if spec.starts_with(BUILTIN_PREFIX) {
        let b = builtin(spec, "class names")?;
        return b
            .classnames
            .map(builtin_lines)
            .ok_or_else(|| EvalError::Input(format!("{spec} has templates only, no class names")));
    }
    read_lines(Path::new(spec), "class name")
}

/// Templates from `spec`: `builtin:NAME` or a file, one per line with `{}` (or `{c}`) where the
/// class name goes.
pub fn templates(spec: &str) -> Result<Vec<String>, EvalError> {
    if spec.starts_with(BUILTIN_PREFIX) {
        let b = builtin(spec, "templates")?;
        return b
            .templates
            .map(builtin_lines)
            .ok_or_else(|| EvalError::Input(format!("{spec} has class names only, no templates")));
    }
    let path = Path::new(spec);
    let t: Vec<String> = read_lines(path, "template")?
        .iter()
        .map(|t| normalize_template(t))
        .collect();
    if let Some((i, bad)) = t.iter().enumerate().find(|(_, t)| !t.contains("{}")) {
        return Err(EvalError::Input(format!(
            "{} line {}: template \"{bad}\" has no {{}} (or {{c}}) where the class name goes",
            path.display(),
            i + 1
        )));
    }
    Ok(t)
}

/// CLIP_benchmark writes `{c}` for the class name; we fill `{}`.
pub fn normalize_template(t: &str) -> String {
    t.replace("{c}", "{}")
}

/// Non-empty trimmed lines; a blank line in the middle is an error because line numbers are
/// class indices.
pub fn read_lines(path: &Path, what: &str) -> Result<Vec<String>, EvalError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| EvalError::Input(format!("reading {}: {e}", path.display())))?;
    let lines: Vec<&str> = text.trim_end().lines().collect();
    if let Some(i) = lines.iter().position(|l| l.trim().is_empty()) {
        return Err(EvalError::Input(format!(
            "{} line {}: empty; put one {what} per line with no blank lines",
            path.display(),
            i + 1
        )));
    }
    if lines.is_empty() {
        return Err(EvalError::Input(format!(
            "{} is empty: it needs one {what} per line",
            path.display()
        )));
    }
    Ok(lines.iter().map(|l| l.trim().to_string()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_have_the_published_sizes() {
        let sizes: Vec<(usize, usize)> = BUILTINS
            .iter()
            .map(|b| {
                (
                    builtin_lines(b.classnames.unwrap()).len(),
                    builtin_lines(b.templates.unwrap()).len(),
                )
            })
            .collect();
        assert_eq!(sizes, [(1000, 80), (1000, 7), (10, 18), (100, 18)]);
        for b in &BUILTINS {
            let t = builtin_lines(b.templates.unwrap());
            assert!(t.iter().all(|t| t.contains("{}")), "{}", b.name);
        }
        assert_eq!(classnames("builtin:cifar10").unwrap()[0], "airplane");
        assert!(
            templates("builtin:nope")
                .unwrap_err()
                .to_string()
                .contains("cliptrain eval builtins")
        );
    }

    #[test]
    fn clip_benchmark_placeholders_become_ours() {
        assert_eq!(normalize_template("a photo of a {c}."), "a photo of a {}.");
        assert_eq!(normalize_template("a {} photo"), "a {} photo");
    }
}
