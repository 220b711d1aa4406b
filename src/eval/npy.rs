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

/// The values of a 1-D (or `1 × n`) array, as f64.
pub fn read_vector(bytes: &[u8]) -> Result<Vec<f64>, NpyError> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(err("is not a NumPy .npy file (no \\x93NUMPY magic)"));
    }
    let (header_len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        v => return Err(err(format!("has an unknown .npy version {v}"))),
    };
    let header = bytes
        .get(start..start + header_len)
        .and_then(|h| std::str::from_utf8(h).ok())
        .ok_or_else(|| err("has a cut-short or non-text header"))?;
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
    let (order, kind) = descr.split_at(1);
    if order == ">" && !kind.ends_with('1') {
        return Err(err(format!(
            "is big-endian ({descr}); save it little-endian"
        )));
    }
    let size: usize = kind[1..]
        .parse()
        .map_err(|_| err(format!("has an unsupported dtype {descr}")))?;
    let data = &bytes[start + header_len..];
    if data.len() < n * size {
        return Err(err(format!(
            "is cut short: {n} values of {size} bytes need {} bytes, it has {}",
            n * size,
            data.len()
        )));
    }
    let value = |c: &[u8]| -> Option<f64> {
        Some(match (&kind[..1], size) {
            ("b", 1) | ("u", 1) => c[0] as f64,
            ("i", 1) => c[0] as i8 as f64,
            ("i", 2) => i16::from_le_bytes(c.try_into().ok()?) as f64,
            ("u", 2) => u16::from_le_bytes(c.try_into().ok()?) as f64,
            ("i", 4) => i32::from_le_bytes(c.try_into().ok()?) as f64,
            ("u", 4) => u32::from_le_bytes(c.try_into().ok()?) as f64,
            ("i", 8) => i64::from_le_bytes(c.try_into().ok()?) as f64,
            ("u", 8) => u64::from_le_bytes(c.try_into().ok()?) as f64,
            ("f", 4) => f32::from_le_bytes(c.try_into().ok()?) as f64,
            ("f", 8) => f64::from_le_bytes(c.try_into().ok()?),
            _ => return None,
        })
    };
    data[..n * size]
        .chunks(size)
        .map(|c| value(c).ok_or_else(|| err(format!("has an unsupported dtype {descr}"))))
        .collect()
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
}
