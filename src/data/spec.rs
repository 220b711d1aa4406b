//! Shard specs as users write them for WebDataset: brace ranges and alternatives
//! (`data/cc-{000000..000099}.tar`, `{train,extra}-{0..3}.tar`), several specs joined with `::`,
//! local paths and `pipe:` commands whose stdout is a tar stream (`pipe:aws s3 cp s3://b/x.tar -`).
use super::DataError;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::process::{Child, Command, Stdio};

/// One tar shard: a local file or a shell command writing the tar to stdout.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Shard {
    File(String),
    Pipe(String),
}

impl Shard {
    /// The spec text this shard came from (`pipe:` kept), used in messages and resume state.
    pub fn url(&self) -> String {
        match self {
            Shard::File(p) => p.clone(),
            Shard::Pipe(c) => format!("pipe:{c}"),
        }
    }

    /// Opens the shard for sequential reading.
    pub fn open(&self) -> Result<ShardInput, DataError> {
        match self {
            Shard::File(p) => {
                let f = File::open(p).map_err(|e| DataError::ShardOpen {
                    shard: self.url(),
                    reason: e.to_string(),
                })?;
                Ok(ShardInput {
                    inner: Box::new(BufReader::with_capacity(1 << 20, f)),
                    child: None,
                    url: self.url(),
                })
            }
            Shard::Pipe(cmd) => {
                let mut child = Command::new("sh")
                    .arg("-c")
                    .arg(cmd)
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .map_err(|e| DataError::ShardOpen {
                        shard: self.url(),
                        reason: format!("cannot start: {e}"),
                    })?;
                let out = child.stdout.take().expect("stdout was piped");
                Ok(ShardInput {
                    inner: Box::new(BufReader::with_capacity(1 << 20, out)),
                    child: Some(child),
                    url: self.url(),
                })
            }
        }
    }
}

/// A shard opened for reading. For `pipe:` shards, [`ShardInput::finish`] reports a command
/// that failed, so a broken download is not mistaken for a short shard.
pub struct ShardInput {
    inner: Box<dyn Read + Send>,
    child: Option<Child>,
    url: String,
}

impl Read for ShardInput {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf)
    }
}

impl ShardInput {
    /// Ends reading: for a pipe, kills the command if it is still running (we may stop early)
    /// and returns its error when it exited with a failure on its own.
    pub fn finish(mut self, read_to_end: bool) -> Result<(), DataError> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        if !read_to_end {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(());
        }
        drop(std::mem::replace(&mut self.inner, Box::new(io::empty())));
        let mut stderr = String::new();
        if let Some(e) = child.stderr.take() {
            let _ = e.take(4096).read_to_string(&mut stderr);
        }
        let status = child.wait().map_err(|e| DataError::ShardOpen {
            shard: self.url.clone(),
            reason: e.to_string(),
        })?;
        if status.success() {
            Ok(())
        } else {
            Err(DataError::ShardOpen {
                shard: self.url.clone(),
                reason: format!("command exited with {status}: {}", stderr.trim()),
            })
        }
    }
}

impl Drop for ShardInput {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Expands a spec into its shards, in the order written.
pub fn parse_spec(spec: &str) -> Result<Vec<Shard>, DataError> {
    let mut shards = Vec::new();
    for part in spec.split("::").map(str::trim) {
        if part.is_empty() {
            return Err(DataError::Spec {
                spec: spec.into(),
                reason: "empty entry between '::' separators".into(),
            });
        }
        for url in expand_braces(part).map_err(|reason| DataError::Spec {
            spec: spec.into(),
            reason,
        })? {
            shards.push(match url.strip_prefix("pipe:") {
                Some(cmd) => Shard::Pipe(cmd.to_string()),
                None => Shard::File(url),
            });
        }
    }
    Ok(shards)
}

/// Bash-style brace expansion: `{a,b}` alternatives and `{003..010}` numeric ranges (zero
/// padding taken from the wider bound, descending ranges allowed), nested and repeated.
pub fn expand_braces(s: &str) -> Result<Vec<String>, String> {
    let Some(open) = s.find('{') else {
        if s.contains('}') {
            return Err(format!("unmatched '}}' in \"{s}\""));
        }
        return Ok(vec![s.to_string()]);
    };
    let close = matching_close(s, open).ok_or_else(|| format!("unmatched '{{' in \"{s}\""))?;
    let (head, body, tail) = (&s[..open], &s[open + 1..close], &s[close + 1..]);
    let alternatives = match range(body)? {
        Some(items) => items,
        None => split_top_level(body)
            .into_iter()
            .map(str::to_string)
            .collect(),
    };
    let tails = expand_braces(tail)?;
    let mut out = Vec::new();
    for alt in alternatives {
        for mid in expand_braces(&format!("{head}{alt}"))? {
            for t in &tails {
                out.push(format!("{mid}{t}"));
            }
        }
    }
    Ok(out)
}

fn matching_close(s: &str, open: usize) -> Option<usize> {
    let mut depth = 0;
    for (i, c) in s.char_indices().skip_while(|(i, _)| *i < open) {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

fn split_top_level(body: &str) -> Vec<&str> {
    let (mut parts, mut depth, mut start) = (Vec::new(), 0, 0);
    for (i, c) in body.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&body[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&body[start..]);
    parts
}

/// `a..b` with integer bounds, or None when the body is not a range.
fn range(body: &str) -> Result<Option<Vec<String>>, String> {
    let Some((a, b)) = body.split_once("..") else {
        return Ok(None);
    };
    let digits = |x: &str| !x.is_empty() && x.chars().all(|c| c.is_ascii_digit());
    if !digits(a) || !digits(b) {
        return Ok(None);
    }
    let (lo, hi): (u64, u64) = (
        a.parse().map_err(|_| format!("bad range {body}"))?,
        b.parse().map_err(|_| format!("bad range {body}"))?,
    );
    let width = if a.starts_with('0') || b.starts_with('0') {
        a.len().max(b.len())
    } else {
        0
    };
    let n = lo.abs_diff(hi) + 1;
    if n > 10_000_000 {
        return Err(format!(
            "range {{{body}}} has {n} items; that is not a shard list"
        ));
    }
    let items: Vec<u64> = if lo <= hi {
        (lo..=hi).collect()
    } else {
        (hi..=lo).rev().collect()
    };
    Ok(Some(
        items.into_iter().map(|i| format!("{i:0width$}")).collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_ranges_keep_zero_padding() {
        assert_eq!(
            expand_braces("s-{000008..000011}.tar").unwrap(),
            [
                "s-000008.tar",
                "s-000009.tar",
                "s-000010.tar",
                "s-000011.tar"
            ]
        );
        assert_eq!(expand_braces("{8..10}").unwrap(), ["8", "9", "10"]);
        assert_eq!(expand_braces("{3..1}").unwrap(), ["3", "2", "1"]);
    }

    #[test]
    fn alternatives_nesting_and_products() {
        assert_eq!(
            expand_braces("{a,b}-{0..1}").unwrap(),
            ["a-0", "a-1", "b-0", "b-1"]
        );
        assert_eq!(
            expand_braces("x{a,b{1,2}}y").unwrap(),
            ["xay", "xb1y", "xb2y"]
        );
        assert_eq!(expand_braces("plain.tar").unwrap(), ["plain.tar"]);
        assert_eq!(
            expand_braces("{a..z}").unwrap(),
            ["a..z"],
            "non-numeric range is a single alternative"
        );
    }

    #[test]
    fn malformed_braces_are_errors() {
        assert!(
            expand_braces("a{0..3.tar")
                .unwrap_err()
                .contains("unmatched '{'")
        );
        assert!(expand_braces("a}b").unwrap_err().contains("unmatched '}'"));
    }

    #[test]
    fn specs_join_with_double_colon_and_know_pipes() {
        let s = parse_spec("d/a-{0..1}.tar::pipe:cat d/b.tar").unwrap();
        assert_eq!(
            s,
            [
                Shard::File("d/a-0.tar".into()),
                Shard::File("d/a-1.tar".into()),
                Shard::Pipe("cat d/b.tar".into())
            ]
        );
        assert_eq!(s[2].url(), "pipe:cat d/b.tar");
        assert!(parse_spec("a.tar::").is_err());
    }

    #[test]
    fn failing_pipe_is_reported_with_its_shard() {
        let shard = Shard::Pipe("echo oops >&2; exit 3".into());
        let mut input = shard.open().unwrap();
        let mut buf = Vec::new();
        input.read_to_end(&mut buf).unwrap();
        let err = input.finish(true).unwrap_err().to_string();
        assert!(
            err.contains("pipe:echo oops") && err.contains("oops"),
            "{err}"
        );
        assert!(Shard::File("/no/such/shard.tar".into()).open().is_err());
    }
}
