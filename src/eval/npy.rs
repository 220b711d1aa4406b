//! Just enough of NumPy's `.npy` format to read a multilabel target: one vector (or a `1 × n`
//! array) of bools, integers or floats, little-endian or byte-sized, C order.
use std::fmt;

#[derive(Debug, PartialEq)]
pub struct NpyError(String);

impl fmt::Display for NpyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn err(m: impl Into<String>) -> NpyError {
    NpyError(m.into())
}

/// The header value of `key` in the header dict, e.g. `'descr': '<f4'` → `'<f4'`.
fn field<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let at = header.find(&format!("'{key}'"))? + key.len() + 2;
    let rest = header[at..].trim_start().strip_prefix(':')?.trim_start();
    let end = if rest.starts_with('(') {
        rest.find(')')? + 1
    } else {
        rest.find([',', '}'])?
    };
    Some(rest[..end].trim())
}

/// A label dtype: its kind letter (`b`ool, `i`nt, `u`int, `f`loat) and width in bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Dtype {
    kind: u8,
    size: usize,
}

/// Parses a `descr` such as `'<f4'` or `'|b1'`. The header is not trusted: anything but the
/// byte order, one kind letter and one of the widths NumPy uses for that kind is refused
/// (`'<'`, `''`, `'<f0'`, `'é4'` included), so nothing below slices or chunks by a bad value.
fn dtype(descr: &str) -> Result<Dtype, NpyError> {
    let unsupported = || {
        err(format!(
            "has an unsupported dtype '{descr}'; save the labels as bool, integer or float \
             (e.g. numpy.save(f, labels.astype(\"<f4\")))"
        ))
    };
    let [order, kind, width @ ..] = descr.as_bytes() else {
        return Err(unsupported());
    };
    let size: usize = std::str::from_utf8(width)
        .ok()
        .filter(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|w| w.parse().ok())
        .ok_or_else(unsupported)?;
    let known = match kind {
        b'b' => size == 1,
        b'i' | b'u' => matches!(size, 1 | 2 | 4 | 8),
        b'f' => matches!(size, 4 | 8),
        _ => false,
    };
    if !known || !matches!(order, b'<' | b'|' | b'=' | b'>') {
        return Err(unsupported());
    }
    if *order == b'>' && size > 1 {
        return Err(err(format!(
            "is big-endian ('{descr}'); save it little-endian"
        )));
    }
    Ok(Dtype { kind: *kind, size })
}

/// The value of one element of `t` (`c` holds exactly `t.size` bytes).
fn value(t: Dtype, c: &[u8]) -> f64 {
    let le = |n: usize| -> [u8; 8] {
        let mut b = [0u8; 8];
        b[..n].copy_from_slice(&c[..n]);
        b
    };
    match (t.kind, t.size) {
        (b'b' | b'u', 1) => f64::from(c[0]),
        (b'i', 1) => f64::from(c[0] as i8),
        (b'i', 2) => f64::from(i16::from_le_bytes([c[0], c[1]])),
        (b'u', 2) => f64::from(u16::from_le_bytes([c[0], c[1]])),
        (b'i', 4) => f64::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        (b'u', 4) => f64::from(u32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        (b'i', 8) => i64::from_le_bytes(le(8)) as f64,
        (b'u', 8) => u64::from_le_bytes(le(8)) as f64,
        (b'f', 4) => f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        (b'f', 8) => f64::from_le_bytes(le(8)),
        _ => unreachable!("dtype() admits only the pairs above"),
    }
}

/// The values of a 1-D (or `1 × n`) array, as f64. Every size the header gives is checked
/// against the bytes that follow it (exactly: a longer or shorter body is refused).
pub fn read_vector(bytes: &[u8]) -> Result<Vec<f64>, NpyError> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(err("is not a NumPy .npy file (no \\x93NUMPY magic)"));
    }
    let (header_len, start): (usize, usize) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        v => return Err(err(format!("has an unknown .npy version {v}"))),
    };
    let body = start
        .checked_add(header_len)
        .filter(|&end| end <= bytes.len())
        .ok_or_else(|| {
            err(format!(
                "has a cut-short header: it says {header_len} bytes, the file holds {}",
                bytes.len() - start
            ))
        })?;
    let header =
        std::str::from_utf8(&bytes[start..body]).map_err(|_| err("has a non-text header"))?;
    let descr = field(header, "descr")
        .map(|d| d.trim_matches(|c| c == '\'' || c == '"'))
        .ok_or_else(|| err("header lacks 'descr'"))?;
    // `fortran_order` does not matter: a vector reads the same in either order.
    let shape = field(header, "shape").ok_or_else(|| err("header lacks 'shape'"))?;
    let dims: Vec<usize> = shape
        .trim_matches(|c| c == '(' || c == ')')
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .map_err(|_| err(format!("has a bad shape {shape}")))
        })
        .collect::<Result<_, _>>()?;
    let n = match dims.as_slice() {
        [n] | [1, n] | [n, 1] => *n,
        _ => {
            return Err(err(format!(
                "has shape {shape}; a label vector has one dimension"
            )));
        }
    };
    let t = dtype(descr)?;
    let data = &bytes[body..];
    // A shape such as 2^62 + 48 must not wrap to a small byte count and pass.
    let need = n.checked_mul(t.size).ok_or_else(|| {
        err(format!(
            "has shape {shape}: {n} values of {} bytes overflow any file size",
            t.size
        ))
    })?;
    if data.len() != need {
        return Err(err(format!(
            "{}: shape {shape} of '{descr}' needs {need} data bytes, the file holds {}",
            if data.len() < need {
                "is cut short"
            } else {
                "has bytes beyond its shape"
            },
            data.len()
        )));
    }
    Ok(data.chunks_exact(t.size).map(|c| value(t, c)).collect())
}

/// A `.npy` file of one float32 vector, as `numpy.save` writes it (tests and the synthetic
/// CLIP_benchmark fixture).
pub fn write_f32_vector(values: &[f32]) -> Vec<u8> {
    let mut header = format!(
        "{{'descr': '<f4', 'fortran_order': False, 'shape': ({},), }}",
        values.len()
    );
    // Data starts on a 64-byte boundary, the header ends in a newline.
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in values {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_it_writes_and_numpy_layouts() {
        let v = [0.0f32, 1.0, 0.0, 1.0];
        assert_eq!(
            read_vector(&write_f32_vector(&v)).unwrap(),
            [0.0, 1.0, 0.0, 1.0]
        );
        // `np.save(f, np.array([[1, 0, 2]], dtype=np.int64))`, version 1 header.
        let mut header = "{'descr': '<i8', 'fortran_order': False, 'shape': (1, 3), }".to_string();
        while (10 + header.len() + 1) % 64 != 0 {
            header.push(' ');
        }
        header.push('\n');
        let mut b = b"\x93NUMPY\x01\x00".to_vec();
        b.extend_from_slice(&(header.len() as u16).to_le_bytes());
        b.extend_from_slice(header.as_bytes());
        for x in [1i64, 0, 2] {
            b.extend_from_slice(&x.to_le_bytes());
        }
        assert_eq!(read_vector(&b).unwrap(), [1.0, 0.0, 2.0]);
        assert!(read_vector(b"not numpy").unwrap_err().0.contains("magic"));
        let cut = &b[..b.len() - 3];
        assert!(read_vector(cut).unwrap_err().0.contains("cut short"));
    }

    /// A version-1 `.npy` with header dict `dict` and `data` after it.
    fn npy(dict: &str, data: &[u8]) -> Vec<u8> {
        let mut b = b"\x93NUMPY\x01\x00".to_vec();
        let header = format!("{dict}\n");
        b.extend_from_slice(&(header.len() as u16).to_le_bytes());
        b.extend_from_slice(header.as_bytes());
        b.extend_from_slice(data);
        b
    }

    fn refused(dict: &str, data: &[u8]) -> String {
        match read_vector(&npy(dict, data)) {
            Err(e) => e.0,
            Ok(v) => panic!("{dict}: accepted as {} values", v.len()),
        }
    }

    #[test]
    fn hostile_descrs_are_refused_not_panicked_on() {
        let data = [0u8; 16];
        for d in [
            "<", "", "<f0", "\u{e9}4", "<f", "<fx", "<f+4", "<f16", "<c8", "<U4", "x\u{e9}",
        ] {
            let e = refused(&format!("{{'descr': '{d}', 'shape': (4,), }}"), &data);
            assert!(e.contains("unsupported dtype"), "{d:?}: {e}");
        }
        let e = refused("{'descr': '>f4', 'shape': (4,), }", &data);
        assert!(e.contains("big-endian"), "{e}");
        // Byte-sized kinds read in any byte order; bools and small ints as numbers.
        let b = npy("{'descr': '|b1', 'shape': (3,), }", &[1, 0, 1]);
        assert_eq!(read_vector(&b).unwrap(), [1.0, 0.0, 1.0]);
        let b = npy("{'descr': '>i1', 'shape': (2,), }", &[0xff, 2]);
        assert_eq!(read_vector(&b).unwrap(), [-1.0, 2.0]);
    }

    #[test]
    fn sizes_from_the_header_are_checked_not_wrapped() {
        // 2^62 + 48 float32 values: 4 × that wraps to 192 bytes, which once passed.
        let n = (1u64 << 62) + 48;
        let e = refused(
            &format!("{{'descr': '<f4', 'shape': ({n},), }}"),
            &[0u8; 192],
        );
        assert!(e.contains("overflow"), "{e}");
        let e = refused(
            &format!("{{'descr': '<f8', 'shape': ({},), }}", u64::MAX),
            &[],
        );
        assert!(e.contains("overflow"), "{e}");
        let e = refused(
            "{'descr': '<f4', 'shape': (99999999999999999999999,), }",
            &[],
        );
        assert!(e.contains("bad shape"), "{e}");
        // The body must be exactly what the shape says.
        let e = refused("{'descr': '<f4', 'shape': (2,), }", &[0u8; 12]);
        assert!(
            e.contains("beyond its shape") && e.contains("needs 8"),
            "{e}"
        );
        let e = refused("{'descr': '<f4', 'shape': (4,), }", &[0u8; 12]);
        assert!(e.contains("cut short"), "{e}");
        // A header length running past the file.
        let mut b = npy("{'descr': '<f4', 'shape': (1,), }", &[0u8; 4]);
        b[8] = 0xff;
        b[9] = 0xff;
        assert!(read_vector(&b).unwrap_err().0.contains("cut-short header"));
        // Version 2's four-byte length, at its largest.
        let mut b = b"\x93NUMPY\x02\x00\xff\xff\xff\xff".to_vec();
        b.extend_from_slice(b"{}");
        assert!(read_vector(&b).unwrap_err().0.contains("cut-short header"));
        // An empty vector is a valid file (the caller compares its length to the classes).
        let b = npy("{'descr': '<f4', 'shape': (0,), }", &[]);
        assert_eq!(read_vector(&b).unwrap(), Vec::<f64>::new());
    }
}
