//! A pickle reader that runs nothing: the opcodes `torch.save` writes (protocol 2, and the
//! framing of 4), into a tree of plain [`Value`]s. Only the globals that
//! `torch.load(weights_only=True)` accepts for a state dict are known — tensor and parameter
//! rebuilds, the storage types, `OrderedDict` — and any other is refused by its name before
//! anything else happens, so a pickle whose `__reduce__` names `os.system` fails here and
//! executes nothing. Every length comes from the pickle's own bytes and is checked against what
//! is left of them before anything is allocated.
use std::collections::HashMap;

/// Containers nest at most this deep (a state dict in a checkpoint is 4 or 5): deeper, a
/// hostile file could overflow the stack of whatever walks or drops the tree.
const MAX_DEPTH: usize = 64;
/// Values copied out of the memo (`BINGET` copies, it does not share) may add up to this many
/// nodes per byte of the pickle, plus a floor: a file cannot make more than that from little.
const COPIES_PER_BYTE: usize = 16;
const COPIES_FLOOR: usize = 1 << 20;

/// A pickled value, as far as a state dict needs them.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    Tuple(Vec<Value>),
    List(Vec<Value>),
    /// Keys in their pickled order (an `OrderedDict` keeps it, so does a `dict`).
    Dict(Vec<(Value, Value)>),
    /// One of the known globals, not yet called.
    Global(Global),
    /// A persistent id (`BINPERSID`): what `torch.save` writes for each storage.
    Persistent(Box<Value>),
    /// A global called with its arguments (`REDUCE`): what the caller makes of it.
    Call(Global, Vec<Value>),
}

/// The globals a state dict may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Global {
    OrderedDict,
    RebuildTensorV2,
    RebuildParameter,
    RebuildFromTypeV2,
    TensorClass,
    ParameterClass,
    /// A typed storage class (`torch.FloatStorage`, ...): the element type, by torch's name.
    Storage(&'static str),
}

/// `module.name` → the global, for what `weights_only=True` allows in a state dict.
fn known(module: &str, name: &str) -> Option<Global> {
    const STORAGES: [&str; 10] = [
        "FloatStorage",
        "HalfStorage",
        "BFloat16Storage",
        "DoubleStorage",
        "LongStorage",
        "IntStorage",
        "ShortStorage",
        "CharStorage",
        "ByteStorage",
        "BoolStorage",
    ];
    Some(match (module, name) {
        ("collections", "OrderedDict") => Global::OrderedDict,
        ("torch._utils", "_rebuild_tensor_v2") => Global::RebuildTensorV2,
        ("torch._utils", "_rebuild_parameter") => Global::RebuildParameter,
        ("torch._tensor", "_rebuild_from_type_v2") => Global::RebuildFromTypeV2,
        ("torch", "Tensor") => Global::TensorClass,
        ("torch.nn.parameter", "Parameter") => Global::ParameterClass,
        ("torch", s) => Global::Storage(STORAGES.iter().find(|k| **k == s)?),
        _ => return None,
    })
}

/// Why a pickle was not read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PickleError {
    #[error(
        "it names the global {0}, which a weights file never needs (torch.load(weights_only=True) \
         refuses it too); nothing was run. If you trust the file, load it in Python and save \
         its state_dict() with safetensors"
    )]
    Forbidden(String),
    #[error("opcode 0x{opcode:02x} at byte {at} is not one torch.save writes for weights")]
    Opcode { opcode: u8, at: usize },
    #[error("the pickle ends inside an opcode at byte {0} (the file is cut short?)")]
    Truncated(usize),
    #[error("malformed pickle at byte {at}: {what}")]
    Malformed { at: usize, what: String },
}

/// The value `bytes` pickle.
pub fn read(bytes: &[u8]) -> Result<Value, PickleError> {
    Machine {
        bytes,
        at: 0,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        copies: 0,
    }
    .run()
}

struct Machine<'a> {
    bytes: &'a [u8],
    at: usize,
    stack: Vec<Value>,
    /// Stack lengths at each `MARK`.
    marks: Vec<usize>,
    memo: HashMap<u32, Value>,
    /// Nodes copied in and out of the memo so far (see [`COPIES_PER_BYTE`]).
    copies: usize,
}

impl<'a> Machine<'a> {
    fn run(mut self) -> Result<Value, PickleError> {
        loop {
            let start = self.at;
            let op = self.take(1)?[0];
            match op {
                0x80 => drop(self.take(1)?),    // PROTO
                0x95 => drop(self.take(8)?),    // FRAME (protocol 4): a length hint
                b'.' => return self.pop(start), // STOP
                b'(' => self.marks.push(self.stack.len()),
                b'}' => self.stack.push(Value::Dict(Vec::new())),
                b']' => self.stack.push(Value::List(Vec::new())),
                b')' => self.stack.push(Value::Tuple(Vec::new())),
                b'N' => self.stack.push(Value::None),
                0x88 => self.stack.push(Value::Bool(true)),
                0x89 => self.stack.push(Value::Bool(false)),
                b't' => {
                    let items = self.pop_mark(start)?;
                    self.nest(&items, start)?;
                    self.stack.push(Value::Tuple(items));
                }
                0x85..=0x87 => {
                    let n = usize::from(op - 0x84);
                    if self.stack.len() < n {
                        return Err(self.malformed(start, "a tuple of more items than the stack"));
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    self.nest(&items, start)?;
                    self.stack.push(Value::Tuple(items));
                }
                b'K' => {
                    let v = self.take(1)?[0];
                    self.stack.push(Value::Int(i64::from(v)));
                }
                b'M' => {
                    let b = self.take(2)?;
                    self.stack
                        .push(Value::Int(i64::from(u16::from_le_bytes([b[0], b[1]]))));
                }
                b'J' => {
                    let v = i32::from_le_bytes(self.array()?);
                    self.stack.push(Value::Int(i64::from(v)));
                }
                0x8a => {
                    // LONG1: a little-endian two's complement integer of n bytes.
                    let n = usize::from(self.take(1)?[0]);
                    if n > 8 {
                        return Err(self.malformed(start, "an integer wider than 64 bits"));
                    }
                    let b = self.take(n)?;
                    let mut v: i64 = 0;
                    for (i, byte) in b.iter().enumerate() {
                        v |= i64::from(*byte) << (8 * i);
                    }
                    if n > 0 && n < 8 && b[n - 1] & 0x80 != 0 {
                        v -= 1i64 << (8 * n);
                    }
                    self.stack.push(Value::Int(v));
                }
                b'G' => {
                    let v = f64::from_be_bytes(self.array()?);
                    self.stack.push(Value::Float(v));
                }
                b'X' | 0x8c | 0x8d => {
                    let n = match op {
                        b'X' => u32::from_le_bytes(self.array()?) as usize,
                        0x8c => usize::from(self.take(1)?[0]),
                        _ => self.length8(start)?,
                    };
                    let text = std::str::from_utf8(self.take(n)?)
                        .map_err(|_| self.malformed(start, "a string that is not UTF-8"))?;
                    self.stack.push(Value::Str(text.to_string()));
                }
                b'U' | b'T' | b'C' | b'B' => {
                    // Byte strings: keys of old pickles, or `bytes` values.
                    let n = match op {
                        b'U' | b'C' => usize::from(self.take(1)?[0]),
                        _ => u32::from_le_bytes(self.array()?) as usize,
                    };
                    let b = self.take(n)?.to_vec();
                    self.stack.push(match (op, String::from_utf8(b.clone())) {
                        (b'U' | b'T', Ok(text)) => Value::Str(text),
                        _ => Value::Bytes(b),
                    });
                }
                b'c' => {
                    let module = self.line(start)?;
                    let name = self.line(start)?;
                    self.stack.push(global(&module, &name)?);
                }
                0x93 => {
                    // STACK_GLOBAL: module and name from the stack.
                    let name = self.pop(start)?;
                    let module = self.pop(start)?;
                    match (module, name) {
                        (Value::Str(m), Value::Str(n)) => self.stack.push(global(&m, &n)?),
                        _ => return Err(self.malformed(start, "a global named by non-strings")),
                    }
                }
                b'q' => {
                    let i = u32::from(self.take(1)?[0]);
                    self.memoize(i, start)?;
                }
                b'r' => {
                    let i = u32::from_le_bytes(self.array()?);
                    self.memoize(i, start)?;
                }
                0x94 => {
                    let i = u32::try_from(self.memo.len())
                        .map_err(|_| self.malformed(start, "too many memo entries"))?;
                    self.memoize(i, start)?;
                }
                b'h' | b'j' => {
                    let i = if op == b'h' {
                        u32::from(self.take(1)?[0])
                    } else {
                        u32::from_le_bytes(self.array()?)
                    };
                    let v = self
                        .memo
                        .get(&i)
                        .cloned()
                        .ok_or_else(|| self.malformed(start, "a memo entry never stored"))?;
                    self.copied(&v, start)?;
                    self.stack.push(v);
                }
                b'Q' => {
                    let id = self.pop(start)?;
                    self.nest([&id], start)?;
                    self.stack.push(Value::Persistent(Box::new(id)));
                }
                b'R' => {
                    let args = self.pop(start)?;
                    let callable = self.pop(start)?;
                    let (Value::Global(g), Value::Tuple(args)) = (callable, args) else {
                        return Err(self.malformed(start, "a call of something not a global"));
                    };
                    self.stack.push(match g {
                        Global::OrderedDict if args.is_empty() => Value::Dict(Vec::new()),
                        _ => Value::Call(g, args),
                    });
                }
                b'b' => {
                    // BUILD: an OrderedDict's or a tensor's state. A dict state adds items; a
                    // tensor's (its Python attributes) carries nothing a weight needs.
                    let state = self.pop(start)?;
                    match (self.stack.last_mut(), state) {
                        (Some(Value::Dict(items)), Value::Dict(more)) => items.extend(more),
                        (Some(Value::Dict(_) | Value::Call(..)), _) => {}
                        _ => return Err(self.malformed(start, "BUILD on an unknown object")),
                    }
                }
                b's' => {
                    let v = self.pop(start)?;
                    let k = self.pop(start)?;
                    self.nest([&k, &v], start)?;
                    self.dict(start)?.push((k, v));
                }
                b'u' => {
                    let items = self.pop_mark(start)?;
                    if items.len() % 2 != 0 {
                        return Err(self.malformed(start, "SETITEMS with an odd count"));
                    }
                    self.nest(&items, start)?;
                    let mut it = items.into_iter();
                    let dict = self.dict(start)?;
                    while let (Some(k), Some(v)) = (it.next(), it.next()) {
                        dict.push((k, v));
                    }
                }
                b'a' => {
                    let v = self.pop(start)?;
                    self.nest([&v], start)?;
                    self.list(start)?.push(v);
                }
                b'e' => {
                    let items = self.pop_mark(start)?;
                    self.nest(&items, start)?;
                    self.list(start)?.extend(items);
                }
                b'0' => drop(self.pop(start)?),
                b'1' => drop(self.pop_mark(start)?),
                b'2' => {
                    let top = self.stack.last().cloned();
                    self.stack
                        .push(top.ok_or_else(|| self.malformed(start, "DUP of nothing"))?);
                }
                opcode => return Err(PickleError::Opcode { opcode, at: start }),
            }
        }
    }

    /// The next `n` bytes, when there are that many.
    fn take(&mut self, n: usize) -> Result<&'a [u8], PickleError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|e| *e <= self.bytes.len())
            .ok_or(PickleError::Truncated(self.at))?;
        let bytes: &'a [u8] = self.bytes;
        self.at = end;
        Ok(&bytes[end - n..end])
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], PickleError> {
        Ok(self.take(N)?.try_into().expect("take gives N bytes"))
    }

    fn length8(&mut self, start: usize) -> Result<usize, PickleError> {
        usize::try_from(u64::from_le_bytes(self.array()?))
            .map_err(|_| self.malformed(start, "a length beyond memory"))
    }

    /// A text line (the `GLOBAL` opcode's arguments), without its newline.
    fn line(&mut self, start: usize) -> Result<String, PickleError> {
        let rest = &self.bytes[self.at..];
        let n = rest
            .iter()
            .take(256)
            .position(|b| *b == b'\n')
            .ok_or_else(|| self.malformed(start, "a global name without its newline"))?;
        let text = String::from_utf8_lossy(&rest[..n]).into_owned();
        self.at += n + 1;
        Ok(text)
    }

    fn pop(&mut self, start: usize) -> Result<Value, PickleError> {
        if self.marks.last().is_some_and(|m| *m >= self.stack.len()) {
            return Err(self.malformed(start, "a pop past a MARK"));
        }
        self.stack
            .pop()
            .ok_or_else(|| self.malformed(start, "a pop from an empty stack"))
    }

    fn pop_mark(&mut self, start: usize) -> Result<Vec<Value>, PickleError> {
        let mark = self
            .marks
            .pop()
            .ok_or_else(|| self.malformed(start, "no MARK to return to"))?;
        Ok(self.stack.split_off(mark.min(self.stack.len())))
    }

    fn memoize(&mut self, i: u32, start: usize) -> Result<(), PickleError> {
        let top = self
            .stack
            .last()
            .cloned()
            .ok_or_else(|| self.malformed(start, "a memo of nothing"))?;
        self.copied(&top, start)?;
        self.memo.insert(i, top);
        Ok(())
    }

    /// Refuses `items` as a container's content when one is already [`MAX_DEPTH`] deep.
    fn nest<'v>(
        &self,
        items: impl IntoIterator<Item = &'v Value>,
        start: usize,
    ) -> Result<(), PickleError> {
        match items.into_iter().any(|v| deeper_than(v, MAX_DEPTH - 1)) {
            true => Err(self.malformed(
                start,
                &format!("containers nested more than {MAX_DEPTH} deep"),
            )),
            false => Ok(()),
        }
    }

    /// Counts a copy of `v` against the pickle's allowance.
    fn copied(&mut self, v: &Value, start: usize) -> Result<(), PickleError> {
        let allowed = self
            .bytes
            .len()
            .saturating_mul(COPIES_PER_BYTE)
            .max(COPIES_FLOOR);
        self.copies = self.copies.saturating_add(nodes(v, allowed));
        match self.copies > allowed {
            true => Err(self.malformed(
                start,
                &format!(
                    "memo copies of more than {allowed} values, which a {}-byte weights file never needs",
                    self.bytes.len()
                ),
            )),
            false => Ok(()),
        }
    }

    fn dict(&mut self, start: usize) -> Result<&mut Vec<(Value, Value)>, PickleError> {
        match self.stack.last_mut() {
            Some(Value::Dict(items)) => Ok(items),
            _ => Err(PickleError::Malformed {
                at: start,
                what: "SETITEM on something not a dict".into(),
            }),
        }
    }

    fn list(&mut self, start: usize) -> Result<&mut Vec<Value>, PickleError> {
        match self.stack.last_mut() {
            Some(Value::List(items)) => Ok(items),
            _ => Err(PickleError::Malformed {
                at: start,
                what: "APPEND on something not a list".into(),
            }),
        }
    }

    fn malformed(&self, at: usize, what: &str) -> PickleError {
        PickleError::Malformed {
            at,
            what: what.into(),
        }
    }
}

/// The children of a container value.
fn children(v: &Value) -> Box<dyn Iterator<Item = &Value> + '_> {
    match v {
        Value::Tuple(items) | Value::List(items) | Value::Call(_, items) => Box::new(items.iter()),
        Value::Dict(items) => Box::new(items.iter().flat_map(|(k, v)| [k, v])),
        Value::Persistent(id) => Box::new(std::iter::once(&**id)),
        _ => Box::new(std::iter::empty()),
    }
}

/// Whether containers nest in `v` more than `limit` deep (a scalar is 0 deep). Trees here are
/// at most [`MAX_DEPTH`] deep, so the recursion is bounded.
fn deeper_than(v: &Value, limit: usize) -> bool {
    let container = matches!(
        v,
        Value::Tuple(_) | Value::List(_) | Value::Dict(_) | Value::Call(..) | Value::Persistent(_)
    );
    container && (limit == 0 || children(v).any(|c| deeper_than(c, limit - 1)))
}

/// The number of values in `v`, counted up to `cap`.
fn nodes(v: &Value, cap: usize) -> usize {
    let mut n = 1;
    for c in children(v) {
        if n >= cap {
            break;
        }
        n += nodes(c, cap - n);
    }
    n
}

fn global(module: &str, name: &str) -> Result<Value, PickleError> {
    known(module, name)
        .map(Value::Global)
        .ok_or_else(|| PickleError::Forbidden(format!("{module}.{name}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dict_of_scalars_and_containers_reads_as_python_wrote_it() {
        // pickle.dumps({'a': 1, 'b': [2.5, None, True], 'c': (-3, 70000, 2**40)}, protocol=2)
        let bytes = b"\x80\x02}q\x00(X\x01\x00\x00\x00aq\x01K\x01X\x01\x00\x00\x00bq\x02]q\x03(G@\x04\x00\x00\x00\x00\x00\x00N\x88eX\x01\x00\x00\x00cq\x04J\xfd\xff\xff\xffJp\x11\x01\x00\x8a\x06\x00\x00\x00\x00\x00\x01\x87q\x05u.";
        let v = read(bytes).unwrap();
        assert_eq!(
            v,
            Value::Dict(vec![
                (Value::Str("a".into()), Value::Int(1)),
                (
                    Value::Str("b".into()),
                    Value::List(vec![Value::Float(2.5), Value::None, Value::Bool(true)])
                ),
                (
                    Value::Str("c".into()),
                    Value::Tuple(vec![Value::Int(-3), Value::Int(70000), Value::Int(1 << 40)])
                ),
            ])
        );
    }

    #[test]
    fn a_global_that_could_run_code_is_refused_by_name() {
        // pickle.dumps of an object whose __reduce__ is (os.system, ('touch x',)), protocol 2.
        let bytes = b"\x80\x02cposix\nsystem\nq\x00X\x07\x00\x00\x00touch xq\x01\x85q\x02Rq\x03.";
        let e = read(bytes).unwrap_err();
        assert_eq!(e, PickleError::Forbidden("posix.system".into()));
        assert!(e.to_string().contains("nothing was run"));
        // The same through STACK_GLOBAL (protocol 4).
        let bytes = b"\x80\x04\x8c\x08builtins\x8c\x04eval\x93.";
        assert_eq!(
            read(bytes).unwrap_err(),
            PickleError::Forbidden("builtins.eval".into())
        );
    }

    #[test]
    fn lengths_beyond_the_bytes_are_refused_before_allocating() {
        for bytes in [
            &b"\x80\x02X\xff\xff\xff\x7fabc"[..],
            &b"\x80\x02\x8d\xff\xff\xff\xff\xff\xff\xff\xffab"[..],
            &b"\x80\x02B\xff\xff\xff\xff"[..],
            &b"\x80\x02K"[..],
        ] {
            assert!(
                matches!(read(bytes), Err(PickleError::Truncated(_))),
                "{bytes:?}"
            );
        }
        assert!(matches!(
            read(b"\x80\x02\x8a\x09123456789."),
            Err(PickleError::Malformed { .. })
        ));
        assert!(matches!(
            read(b"\x80\x02h\x05."),
            Err(PickleError::Malformed { .. })
        ));
        assert!(matches!(
            read(b"\x80\x02\xff"),
            Err(PickleError::Opcode { opcode: 0xff, .. })
        ));
    }

    #[test]
    fn deep_nesting_and_memo_copy_bombs_are_refused_without_the_memory() {
        // A million nested empty lists: `]` then `]a` per level would be a tree a million deep.
        let mut deep = b"\x80\x02]".to_vec();
        for _ in 0..1_000_000 {
            deep.extend_from_slice(b"]");
        }
        deep.extend(std::iter::repeat_n(b'a', 1_000_000));
        deep.push(b'.');
        let err = read(&deep).unwrap_err().to_string();
        assert!(err.contains("nested more than 64 deep"), "{err}");
        // A tuple of the last one twice, 40 times over: 2^40 values from 300 bytes, if copied.
        let mut bomb = b"\x80\x02]q\x00".to_vec();
        for i in 0..40u8 {
            bomb.extend_from_slice(&[b'(', b'h', i, b'h', i, b't', b'q', i + 1]);
        }
        bomb.push(b'.');
        let err = read(&bomb).unwrap_err().to_string();
        assert!(err.contains("memo copies of more than"), "{err}");
    }
}
