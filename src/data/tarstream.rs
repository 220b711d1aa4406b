//! Reading WebDataset samples out of a tar stream.
//!
//! A small tar reader of our own rather than the `tar` crate: its entry iterator borrows the
//! archive (so a reader cannot be kept open across calls in a resumable stream), and we need to
//! tell apart the ways a web-scale shard breaks — a header cut short, a bad checksum, a member cut
//! short — to count them. Understands ustar, GNU long names and pax `path` records.
use super::SkipReason;
use std::collections::VecDeque;
use std::io::{self, Read};

const BLOCK: usize = 512;
/// A single member larger than this is skipped (its sample is dropped), never buffered.
pub const MAX_MEMBER_BYTES: u64 = 512 << 20;

/// The members of one sample: every file `KEY.EXT` sharing a key, extensions lower-cased.
#[derive(Debug, Clone, Default)]
pub struct RawSample {
    pub key: String,
    pub members: Vec<(String, Vec<u8>)>,
}

impl RawSample {
    pub fn member(&self, ext: &str) -> Option<&[u8]> {
        self.members
            .iter()
            .find(|(e, _)| e == ext)
            .map(|(_, b)| b.as_slice())
    }
}

/// What the sample iterator yields: a sample, or a problem that cost one sample (or the rest
/// of the shard, for errors after which the stream cannot be trusted).
#[derive(Debug)]
pub enum TarEvent {
    Sample(RawSample),
    /// A sample was dropped; reading continues.
    Skipped(SkipReason),
    /// The shard cannot be read further; the reason says why.
    Broken(SkipReason, String),
}

/// Groups consecutive tar members into samples.
pub struct SampleReader<R: Read> {
    input: R,
    pending: Option<RawSample>,
    pending_bad: Option<SkipReason>,
    queued: VecDeque<TarEvent>,
    done: bool,
}

impl<R: Read> SampleReader<R> {
    pub fn new(input: R) -> Self {
        Self {
            input,
            pending: None,
            pending_bad: None,
            queued: VecDeque::new(),
            done: false,
        }
    }

    pub fn into_inner(self) -> R {
        self.input
    }

    /// The next sample or problem; `None` at the end of the shard.
    pub fn next_event(&mut self) -> Option<TarEvent> {
        loop {
            if let Some(ev) = self.queued.pop_front() {
                return Some(ev);
            }
            if self.done {
                return self.flush();
            }
            let member = match read_member(&mut self.input) {
                Ok(Some(m)) => m,
                Ok(None) => {
                    self.done = true;
                    continue;
                }
                Err(MemberError::Broken(reason, msg)) => {
                    // Members read in full so far still form a sample (decoding decides whether
                    // it has what it needs); the member that broke is lost with the shard.
                    self.done = true;
                    let last = self.flush();
                    self.queued.extend(last);
                    self.queued.push_back(TarEvent::Broken(reason, msg));
                    continue;
                }
                Err(MemberError::TooLarge(name)) => {
                    let (key, _) = split_name(&name).unwrap_or((name.clone(), String::new()));
                    if let Some(ev) = self.start_key(&key) {
                        self.pending_bad = Some(SkipReason::MemberTooLarge);
                        return Some(ev);
                    }
                    self.pending_bad = Some(SkipReason::MemberTooLarge);
                    continue;
                }
            };
            let Some((key, ext)) = split_name(&member.0) else {
                continue;
            };
            let flushed = self.start_key(&key);
            let sample = self.pending.as_mut().expect("start_key opened a sample");
            if !sample.members.iter().any(|(e, _)| *e == ext) {
                sample.members.push((ext, member.1));
            }
            if let Some(ev) = flushed {
                return Some(ev);
            }
        }
    }

    /// Makes `key` the sample being assembled; returns the previous sample when it ends here.
    fn start_key(&mut self, key: &str) -> Option<TarEvent> {
        if self.pending.as_ref().is_some_and(|p| p.key == key) {
            return None;
        }
        let prev = self.flush();
        self.pending = Some(RawSample {
            key: key.to_string(),
            members: Vec::new(),
        });
        prev
    }

    fn flush(&mut self) -> Option<TarEvent> {
        let sample = self.pending.take();
        let bad = self.pending_bad.take();
        match (sample, bad) {
            (Some(_), Some(reason)) | (None, Some(reason)) => Some(TarEvent::Skipped(reason)),
            (Some(s), None) => Some(TarEvent::Sample(s)),
            (None, None) => None,
        }
    }
}

impl<R: Read> Iterator for SampleReader<R> {
    type Item = TarEvent;
    fn next(&mut self) -> Option<TarEvent> {
        self.next_event()
    }
}

/// WebDataset's key/extension split: the key is the path up to the first '.' of the file name.
fn split_name(name: &str) -> Option<(String, String)> {
    let base_start = name.rfind('/').map_or(0, |i| i + 1);
    let dot = name[base_start..].find('.')? + base_start;
    let (key, ext) = (&name[..dot], &name[dot + 1..]);
    if key.is_empty() || ext.is_empty() || name[base_start..].starts_with("__") {
        return None;
    }
    Some((key.to_string(), ext.to_ascii_lowercase()))
}

enum MemberError {
    Broken(SkipReason, String),
    TooLarge(String),
}

/// Reads the next regular file (name, bytes), skipping directories, links and metadata entries.
fn read_member<R: Read>(r: &mut R) -> Result<Option<(String, Vec<u8>)>, MemberError> {
    let mut long_name: Option<String> = None;
    loop {
        let mut header = [0u8; BLOCK];
        match read_full(r, &mut header) {
            Ok(0) => return Ok(None),
            Ok(n) if n < BLOCK => {
                return Err(MemberError::Broken(
                    SkipReason::TruncatedShard,
                    format!("tar ends inside a header ({n} of 512 bytes)"),
                ));
            }
            Ok(_) => {}
            Err(e) => {
                return Err(MemberError::Broken(
                    SkipReason::UnreadableShard,
                    e.to_string(),
                ));
            }
        }
        if header.iter().all(|&b| b == 0) {
            return Ok(None); // end-of-archive marker
        }
        if !checksum_ok(&header) {
            return Err(MemberError::Broken(
                SkipReason::CorruptShard,
                "tar header checksum mismatch".into(),
            ));
        }
        let size = parse_size(&header[124..136]).ok_or_else(|| {
            MemberError::Broken(
                SkipReason::CorruptShard,
                "unreadable size in tar header".into(),
            )
        })?;
        let kind = header[156];
        let name = long_name.take().unwrap_or_else(|| header_name(&header));
        let padded = size.div_ceil(BLOCK as u64) * BLOCK as u64;
        match kind {
            b'0' | 0 | b'7' => {
                if size > MAX_MEMBER_BYTES {
                    skip(r, padded)?;
                    return Err(MemberError::TooLarge(name));
                }
                let data = read_data(r, size, padded)?;
                return Ok(Some((name, data)));
            }
            b'L' => {
                let data = read_data(r, size.min(1 << 16), padded)?;
                long_name = Some(cstr(&data));
            }
            b'x' => {
                let data = read_data(r, size.min(1 << 20), padded)?;
                long_name = pax_path(&data).or(long_name);
            }
            _ => skip(r, padded)?,
        }
    }
}

fn read_data<R: Read>(r: &mut R, size: u64, padded: u64) -> Result<Vec<u8>, MemberError> {
    let mut data = vec![0u8; size as usize];
    let n = read_full(r, &mut data)
        .map_err(|e| MemberError::Broken(SkipReason::UnreadableShard, e.to_string()))?;
    if n < data.len() {
        return Err(MemberError::Broken(
            SkipReason::TruncatedMember,
            format!("member cut short ({n} of {size} bytes)"),
        ));
    }
    skip(r, padded - size)?;
    Ok(data)
}

fn skip<R: Read>(r: &mut R, n: u64) -> Result<(), MemberError> {
    let copied = io::copy(&mut r.take(n), &mut io::sink())
        .map_err(|e| MemberError::Broken(SkipReason::UnreadableShard, e.to_string()))?;
    if copied < n {
        return Err(MemberError::Broken(
            SkipReason::TruncatedMember,
            "member cut short".into(),
        ));
    }
    Ok(())
}

/// Like read_exact, but reports how much was read at EOF instead of failing.
fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

fn checksum_ok(h: &[u8; BLOCK]) -> bool {
    let Some(stored) = parse_octal(&h[148..156]) else {
        return false;
    };
    let unsigned: u64 = h
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                b as u64
            }
        })
        .sum();
    let signed: i64 = h
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                b as i8 as i64
            }
        })
        .sum();
    stored == unsigned || stored as i64 == signed
}

fn parse_size(field: &[u8]) -> Option<u64> {
    if field[0] & 0x80 != 0 {
        // GNU base-256 for sizes >= 8 GiB.
        return Some(
            field[1..]
                .iter()
                .fold(0u64, |acc, &b| (acc << 8) | b as u64),
        );
    }
    parse_octal(field)
}

fn parse_octal(field: &[u8]) -> Option<u64> {
    let s: String = field
        .iter()
        .take_while(|&&b| b != 0)
        .map(|&b| b as char)
        .collect();
    let s = s.trim();
    if s.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(s, 8).ok()
}

fn header_name(h: &[u8; BLOCK]) -> String {
    let name = cstr(&h[0..100]);
    let prefix = if &h[257..262] == b"ustar" {
        cstr(&h[345..500])
    } else {
        String::new()
    };
    if prefix.is_empty() {
        name
    } else {
        format!("{prefix}/{name}")
    }
}

fn cstr(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// The `path` record of a pax extended header ("LEN path=VALUE\n" records).
fn pax_path(data: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(data);
    let mut rest: &str = &text;
    while let Some((len, _)) = rest.split_once(' ') {
        let n: usize = len.parse().ok()?;
        let record = rest.get(..n)?;
        if let Some(v) = record
            .split_once(' ')
            .and_then(|(_, kv)| kv.strip_prefix("path="))
        {
            return Some(v.trim_end_matches('\n').to_string());
        }
        rest = &rest[n..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, name, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn events(bytes: &[u8]) -> Vec<TarEvent> {
        SampleReader::new(bytes).collect()
    }

    #[test]
    fn groups_members_by_key() {
        let t = tar_of(&[
            ("d/0001.jpg", b"J1"),
            ("d/0001.txt", b"T1"),
            ("d/0002.JPG", b"J2"),
            ("d/0002.cls", b"3"),
            ("README", b"x"),
        ]);
        let ev = events(&t);
        assert_eq!(ev.len(), 2);
        let TarEvent::Sample(s) = &ev[0] else {
            panic!()
        };
        assert_eq!(s.key, "d/0001");
        assert_eq!(s.member("txt"), Some(&b"T1"[..]));
        let TarEvent::Sample(s) = &ev[1] else {
            panic!()
        };
        assert_eq!(
            s.member("jpg"),
            Some(&b"J2"[..]),
            "extensions are lower-cased"
        );
    }

    #[test]
    fn dotted_extensions_and_long_names() {
        let long = format!("{}/abc.seg.png", "x".repeat(150));
        let t = tar_of(&[(&long, b"P")]);
        let TarEvent::Sample(s) = &events(&t)[0] else {
            panic!()
        };
        assert_eq!(s.key, format!("{}/abc", "x".repeat(150)));
        assert_eq!(s.members[0].0, "seg.png");
    }

    #[test]
    fn truncation_inside_a_member_drops_that_sample_and_ends_the_shard() {
        let t = tar_of(&[
            ("a.jpg", &[1; 600]),
            ("a.txt", b"x"),
            ("b.jpg", &[2; 2000]),
            ("b.txt", b"y"),
        ]);
        // Cut in the middle of b.jpg's data.
        let cut = &t[..512 * 5 + 700];
        let ev = events(cut);
        assert!(matches!(&ev[0], TarEvent::Sample(s) if s.key == "a"));
        assert!(
            matches!(&ev[1], TarEvent::Broken(SkipReason::TruncatedMember, _)),
            "{ev:?}"
        );
        assert_eq!(ev.len(), 2);
    }

    #[test]
    fn truncated_header_and_bad_checksum_are_told_apart() {
        let t = tar_of(&[("a.jpg", b"1"), ("a.txt", b"x"), ("b.jpg", b"2")]);
        let ev = events(&t[..512 * 4 + 100]);
        assert!(
            matches!(
                ev.last(),
                Some(TarEvent::Broken(SkipReason::TruncatedShard, _))
            ),
            "{ev:?}"
        );

        let mut bad = t.clone();
        bad[512 * 4 + 3] ^= 0x55; // corrupt b.jpg's header name
        let ev = events(&bad);
        assert_eq!(ev.len(), 2, "{ev:?}");
        assert!(
            matches!(&ev[0], TarEvent::Sample(s) if s.key == "a" && s.members.len() == 2),
            "{ev:?}"
        );
        assert!(
            matches!(&ev[1], TarEvent::Broken(SkipReason::CorruptShard, _)),
            "{ev:?}"
        );
    }
}
