//! Reading a config: TOML files chained by `extends`, then `--set key=value` overrides, then
//! typed deserialization and validation.
//!
//! Files are merged as plain TOML tables first (a child's keys replace its parent's, tables merge
//! key by key), remembering which file or override supplied each key, so that an unknown key or a
//! wrongly typed value is reported with the place the user has to edit.
use super::{Config, validate};
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use toml::{Table, Value};

/// Everything that can be wrong with a config; each message names the file, key and value.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("TOML syntax error in {path}:\n{message}")]
    Syntax { path: PathBuf, message: String },
    #[error("{path}: `extends` must be a file name string, found {found}")]
    ExtendsType { path: PathBuf, found: String },
    #[error("{path}: `extends` cycle: {chain}")]
    ExtendsCycle { path: PathBuf, chain: String },
    #[error("--set {arg}: {reason}")]
    BadOverride { arg: String, reason: String },
    /// One line per problem: unknown keys, wrong types, broken rules.
    #[error("{} problem{}:\n  {}", .0.len(), if .0.len() == 1 { "" } else { "s" }, .0.join("\n  "))]
    Invalid(Vec<String>),
}

/// Where a key's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    File(PathBuf),
    Override(String),
    /// A key given programmatically (tests, `load_str`).
    Inline,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File(p) => write!(f, "{}", p.display()),
            Origin::Override(arg) => write!(f, "--set {arg}"),
            Origin::Inline => f.write_str("the inline config"),
        }
    }
}

/// Loads `path` (following `extends`), applies `overrides` (`section.key=value`), and validates.
pub fn load(path: &Path, overrides: &[String]) -> Result<Config, ConfigError> {
    let mut layers = Layers::default();
    layers.add_file(path, &mut Vec::new())?;
    finish(layers, overrides)
}

/// Like [`load`] for TOML text that is not in a file (`extends` is resolved against the
/// working directory).
pub fn load_str(text: &str, overrides: &[String]) -> Result<Config, ConfigError> {
    let mut layers = Layers::default();
    let table = parse(text, Path::new("<inline>"))?;
    layers.add_table(table, Path::new("."), Origin::Inline, &mut Vec::new())?;
    finish(layers, overrides)
}

/// The rule problems of a config whose unknown or mistyped keys were dropped (so it has their
/// defaults), leaving out every rule that names a dropped key: those would blame a default the
/// user never wrote.
fn rules_apart_from(config: &Config, removed: &[String]) -> Vec<String> {
    let mentions = |msg: &str, key: &str| {
        msg.match_indices(key).any(|(i, _)| {
            let after = msg[i + key.len()..].chars().next();
            !matches!(after, Some(c) if c.is_alphanumeric() || c == '_')
        })
    };
    validate(config)
        .into_iter()
        .filter(|msg| !removed.iter().any(|key| mentions(msg, key)))
        .collect()
}

fn finish(mut layers: Layers, overrides: &[String]) -> Result<Config, ConfigError> {
    for arg in overrides {
        layers.add_override(arg)?;
    }
    let written = |key: &str| layers.get(key).is_some();
    let written = super::WrittenDims {
        image_size: written("model.vision.image_size"),
        patch_size: written("model.vision.patch_size"),
        context_length: written("model.text.context_length"),
    };
    let mut config = layers.deserialize()?;
    config.model.written = written;
    let problems = validate(&config);
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(ConfigError::Invalid(problems))
    }
}

/// The merged table and the origin of every leaf key (dotted path).
#[derive(Default)]
struct Layers {
    table: Table,
    origins: HashMap<String, Origin>,
}

impl Layers {
    fn add_file(&mut self, path: &Path, chain: &mut Vec<PathBuf>) -> Result<(), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.to_path_buf(),
            error,
        })?;
        let table = parse(&text, path)?;
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let canonical = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
        if chain.contains(&canonical) {
            let mut names: Vec<String> = chain.iter().map(|p| p.display().to_string()).collect();
            names.push(canonical.display().to_string());
            return Err(ConfigError::ExtendsCycle {
                path: path.to_path_buf(),
                chain: names.join(" -> "),
            });
        }
        chain.push(canonical);
        self.add_table(table, &dir, Origin::File(path.to_path_buf()), chain)?;
        chain.pop();
        Ok(())
    }

    /// Applies the parent named by `extends` first, then `table` on top of it.
    fn add_table(
        &mut self,
        mut table: Table,
        dir: &Path,
        origin: Origin,
        chain: &mut Vec<PathBuf>,
    ) -> Result<(), ConfigError> {
        if let Some(parent) = table.remove("extends") {
            let Value::String(name) = parent else {
                let path = match &origin {
                    Origin::File(p) => p.clone(),
                    _ => PathBuf::from("<inline>"),
                };
                return Err(ConfigError::ExtendsType {
                    path,
                    found: parent.to_string(),
                });
            };
            self.add_file(&dir.join(name), chain)?;
        }
        merge(&mut self.table, table, "", &origin, &mut self.origins);
        Ok(())
    }

    /// `section.key=value`: the value is read as TOML (numbers, booleans, arrays, quoted strings)
    /// and falls back to a plain string, so `--set run.name=demo` needs no quotes.
    fn add_override(&mut self, arg: &str) -> Result<(), ConfigError> {
        let bad = |reason: &str| ConfigError::BadOverride {
            arg: arg.into(),
            reason: reason.into(),
        };
        let (key, raw) = arg
            .split_once('=')
            .ok_or_else(|| bad("expected section.key=value"))?;
        let key = key.trim();
        let parts: Vec<&str> = key.split('.').collect();
        let valid_part = |p: &&str| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        };
        if parts.len() < 2 || !parts.iter().all(valid_part) {
            return Err(bad(
                "the key must be a dotted path such as run.seed or model.vision.width",
            ));
        }
        let value = parse_value(raw.trim());
        let mut table = &mut self.table;
        for (i, part) in parts[..parts.len() - 1].iter().enumerate() {
            let entry = table
                .entry(part.to_string())
                .or_insert_with(|| Value::Table(Table::new()));
            table = entry.as_table_mut().ok_or_else(|| {
                bad(&format!(
                    "`{}` is a value, not a section",
                    parts[..=i].join(".")
                ))
            })?;
        }
        table.insert(parts[parts.len() - 1].to_string(), value);
        self.origins
            .retain(|k, _| k != key && !k.starts_with(&format!("{key}.")));
        self.origins
            .insert(key.to_string(), Origin::Override(arg.to_string()));
        Ok(())
    }

    /// Deserializes the merged table into a [`Config`], collecting every unknown key and wrongly
    /// typed value (each is removed and deserialization retried) instead of stopping at the first.
    fn deserialize(mut self) -> Result<Config, ConfigError> {
        let mut problems = Vec::new();
        let mut retried_as_string = Vec::new();
        // Bounded: every round removes or rewrites one key.
        let mut removed: Vec<String> = Vec::new();
        for _ in 0..256 {
            let value = Value::Table(self.table.clone());
            let err = match serde_path_to_error::deserialize::<_, Config>(value) {
                Ok(config) if problems.is_empty() => return Ok(config),
                Ok(config) => {
                    problems.extend(rules_apart_from(&config, &removed));
                    break;
                }
                Err(err) => err,
            };
            let parent = err.path().to_string();
            let message = err.inner().to_string();
            if let Some(field) = unknown_field(&message) {
                // The path may or may not already end in the unknown field, depending on where
                // serde stopped; make it the full dotted key either way.
                let key = if parent == field || parent.ends_with(&format!(".{field}")) {
                    parent
                } else {
                    join(&parent, &field)
                };
                let origin = self.origin_of(&key);
                let expected = message
                    .split_once(", ")
                    .map(|(_, e)| first_line(e))
                    .unwrap_or("no keys here");
                let hint = closest(&field, expected)
                    .map(|s| format!("did you mean `{s}`? "))
                    .unwrap_or_default();
                problems.push(format!(
                    "unknown key `{key}` in {origin} ({hint}{expected})"
                ));
                if !self.remove(&key) {
                    break; // cannot make progress past this error
                }
                removed.push(key);
                continue;
            }
            // An element of an array (`targets[0]`): the key is the array, which is what the
            // file spells and what can be removed to go on.
            let key = match parent.find('[') {
                Some(i) => parent[..i].to_string(),
                None => parent,
            };
            let origin = self.origin_of(&key);
            // A --set value that parsed as a number/bool where the field is a string: retry as text.
            if let (Origin::Override(arg), Some(v)) = (&origin, self.get(&key))
                && !v.is_str()
                && !retried_as_string.contains(&key)
            {
                let raw = arg
                    .split_once('=')
                    .map(|(_, r)| r.trim().to_string())
                    .unwrap_or_default();
                retried_as_string.push(key.clone());
                self.set(&key, Value::String(raw));
                continue;
            }
            let shown = self.get(&key).map(|v| v.to_string()).unwrap_or_default();
            problems.push(format!(
                "{key} = {shown} in {origin}: {}",
                strip_serde_noise(first_line(&message))
            ));
            if !self.remove(&key) {
                break; // cannot make progress past this error
            }
            removed.push(key);
        }
        Err(ConfigError::Invalid(problems))
    }

    fn origin_of(&self, key: &str) -> Origin {
        if let Some(o) = self.origins.get(key) {
            return o.clone();
        }
        let prefix = format!("{key}.");
        let mut under: Vec<(&String, &Origin)> = self
            .origins
            .iter()
            .filter(|(k, _)| k.starts_with(&prefix))
            .collect();
        under.sort_by(|a, b| a.0.cmp(b.0));
        under
            .first()
            .map(|(_, o)| (*o).clone())
            .unwrap_or(Origin::Inline)
    }

    fn get(&self, key: &str) -> Option<&Value> {
        let mut parts = key.split('.');
        let mut v = self.table.get(parts.next()?)?;
        for p in parts {
            v = v.as_table()?.get(p)?;
        }
        Some(v)
    }

    fn parent_table(&mut self, key: &str) -> Option<(&mut Table, String)> {
        let (parents, last) = match key.rsplit_once('.') {
            Some((p, l)) => (Some(p), l),
            None => (None, key),
        };
        let mut table = &mut self.table;
        for p in parents.into_iter().flat_map(|p| p.split('.')) {
            table = table.get_mut(p)?.as_table_mut()?;
        }
        Some((table, last.to_string()))
    }

    fn remove(&mut self, key: &str) -> bool {
        self.parent_table(key)
            .and_then(|(t, last)| t.remove(&last))
            .is_some()
    }

    fn set(&mut self, key: &str, value: Value) {
        if let Some((t, last)) = self.parent_table(key) {
            t.insert(last, value);
        }
    }
}

fn parse(text: &str, path: &Path) -> Result<Table, ConfigError> {
    text.parse::<Table>().map_err(|e| ConfigError::Syntax {
        path: path.to_path_buf(),
        message: e.to_string().trim_end().to_string(),
    })
}

fn parse_value(raw: &str) -> Value {
    format!("v = {raw}")
        .parse::<Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| Value::String(raw.to_string()))
}

/// Deep-merges `src` into `dst`; leaves record their origin under their dotted path.
fn merge(
    dst: &mut Table,
    src: Table,
    prefix: &str,
    origin: &Origin,
    origins: &mut HashMap<String, Origin>,
) {
    for (k, v) in src {
        let path = join(prefix, &k);
        match (dst.get_mut(&k), v) {
            (Some(Value::Table(d)), Value::Table(s)) => merge(d, s, &path, origin, origins),
            (_, v) => {
                origins.retain(|key, _| key != &path && !key.starts_with(&format!("{path}.")));
                record_leaves(&v, &path, origin, origins);
                dst.insert(k, v);
            }
        }
    }
}

fn record_leaves(v: &Value, path: &str, origin: &Origin, origins: &mut HashMap<String, Origin>) {
    match v {
        Value::Table(t) if !t.is_empty() => {
            for (k, v) in t {
                record_leaves(v, &join(path, k), origin, origins);
            }
        }
        _ => {
            origins.insert(path.to_string(), origin.clone());
        }
    }
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() || prefix == "." {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

/// The message without the location lines toml appends (our own message names the key).
fn first_line(message: &str) -> &str {
    message.lines().next().unwrap_or_default().trim_end()
}

/// The field name in serde's "unknown field `x`, expected ..." message.
fn unknown_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    Some(rest.split_once('`')?.0.to_string())
}

/// The backticked name in `expected` nearest to `field`, when it is a plausible typo.
fn closest<'a>(field: &str, expected: &'a str) -> Option<&'a str> {
    expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(|name| (edit_distance(field, name), name))
        .filter(|(d, name)| *d <= 2.max(name.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, name)| name)
}

/// Levenshtein distance over chars.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// serde's messages mention Rust types ("u64", "usize"); say what a TOML user writes instead.
fn strip_serde_noise(message: &str) -> String {
    message
        .replace("expected u64", "expected a non-negative integer")
        .replace("expected usize", "expected a non-negative integer")
        .replace("expected u32", "expected a non-negative integer")
        .replace("expected f64", "expected a number")
        .replace("expected a boolean", "expected true or false")
}
