//! Which ids start, end and pad a row, for any `tokenizer.json`: [`TokenizerOptions`] (the run
//! config's choices) over what the file says (its post-processor, the `tokenizer_config.json` /
//! `special_tokens_map.json` beside it), over CLIP's token names.
use super::TextError;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::Path;
use tokenizers::Tokenizer;

/// Names the start/end-of-text tokens go by: OpenAI/Hugging Face, then open_clip's.
pub(super) const SOT_NAMES: [&str; 2] = ["<|startoftext|>", "<start_of_text>"];
pub(super) const EOT_NAMES: [&str; 2] = ["<|endoftext|>", "<end_of_text>"];

/// The files beside a `tokenizer.json` that may name its specials, read in this order.
pub const SIDECAR_FILES: [&str; 2] = ["tokenizer_config.json", "special_tokens_map.json"];

/// The `data.sot_token` value that means rows have no start token.
pub const NO_SOT: &str = "none";

/// How captions are cleaned before the tokenizer (and its own normalizer) sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TextClean {
    /// `clip` for CLIP's BPE (an end token named `<|endoftext|>` or `<end_of_text>`),
    /// `whitespace` for any other tokenizer, whose own normalizer does the rest.
    #[default]
    Auto,
    /// open_clip's `lower`: ftfy-style fixes, HTML unescaping, whitespace collapsed, lower case.
    Clip,
    /// open_clip's `whitespace`: the same without lower-casing.
    Whitespace,
    /// open_clip's `canonicalize` (its SigLIP tokenizers): `whitespace`, then `_` as a space,
    /// ASCII punctuation removed, lower case.
    Canonicalize,
    /// transformers' `SiglipTokenizer` (chosen by `tokenizer_class` in `tokenizer_config.json`):
    /// `▁` as a space, lower case, ASCII punctuation removed, whitespace collapsed and
    /// stripped; no ftfy fixes or HTML unescaping.
    Siglip,
    /// The same without lower-casing (`SiglipTokenizer` with `do_lower_case: false`).
    SiglipCased,
}

/// Choices about a tokenizer made outside its file: the run config's `data.*_token` and
/// `data.text_clean` keys, and the model's context length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenizerOptions {
    /// Ids per row.
    pub context_length: usize,
    /// The start token's string; empty = the file's; [`NO_SOT`] = rows have no start token.
    pub sot_token: String,
    /// The end token's string; empty = the file's.
    pub eot_token: String,
    /// The padding token's string; empty = the file's (0 for CLIP's BPE, as open_clip pads).
    pub pad_token: String,
    pub clean: TextClean,
}

impl TokenizerOptions {
    /// Everything from the file, rows of `context_length` ids.
    pub fn new(context_length: usize) -> Self {
        Self {
            context_length,
            sot_token: String::new(),
            eot_token: String::new(),
            pad_token: String::new(),
            clean: TextClean::Auto,
        }
    }
}

/// The ids a [`super::TextTokenizer`] lays its rows out with, and the cleaning it applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Specials {
    /// `None`: rows start with the first text token (SigLIP's T5-style tokenizers).
    pub sot: Option<u32>,
    pub eot: u32,
    pub pad: u32,
    /// Resolved: never [`TextClean::Auto`].
    pub clean: TextClean,
}

/// One special token: its string and id.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Tok {
    name: String,
    id: u32,
}

/// The start and end tokens one source of the file names.
type Pair = (Option<Tok>, Tok);

/// Resolves the specials of `tok` (read from `origin`, whose folder may hold
/// `tokenizer_config.json` / `special_tokens_map.json`) under `opts`.
pub(super) fn resolve(
    tok: &Tokenizer,
    opts: &TokenizerOptions,
    origin: &Path,
) -> Result<Specials, TextError> {
    let lookup = |name: &str| {
        tok.token_to_id(name).map(|id| Tok {
            name: name.into(),
            id,
        })
    };
    let sidecar = Sidecar::read(origin)?;
    let from_file = from_post_processor(tok)
        .or_else(|| sidecar.pair(&lookup))
        .or_else(|| clip_pair(&lookup));
    let (mut sot, mut eot) = match from_file {
        Some((sot, eot)) => (sot, Some(eot)),
        None => (None, None),
    };
    let by_key = |key: &'static str, token: &str| {
        lookup(token).ok_or_else(|| TextError::UnknownSpecial {
            path: origin.to_path_buf(),
            key,
            token: token.into(),
            present: present_specials(tok),
        })
    };
    match opts.sot_token.as_str() {
        "" => {}
        NO_SOT => sot = None,
        t => sot = Some(by_key("data.sot_token", t)?),
    }
    if !opts.eot_token.is_empty() {
        eot = Some(by_key("data.eot_token", &opts.eot_token)?);
    }
    let eot = eot.ok_or_else(|| TextError::MissingSpecial {
        path: origin.to_path_buf(),
        present: present_specials(tok),
    })?;
    let clip = EOT_NAMES.contains(&eot.name.as_str());
    let pad = if !opts.pad_token.is_empty() {
        by_key("data.pad_token", &opts.pad_token)?.id
    } else if clip {
        // open_clip pads CLIP's rows with 0 whatever the file says; existing ids stay as they were.
        0
    } else if let Some(p) = tok.get_padding() {
        p.pad_id
    } else {
        sidecar.pad.as_deref().and_then(&lookup).map_or(0, |t| t.id)
    };
    let clean = match opts.clean {
        TextClean::Auto if clip => TextClean::Clip,
        // transformers runs SigLIP's tokenizer with its own cleaning, whatever file it reads.
        TextClean::Auto if sidecar.class.as_deref() == Some("SiglipTokenizer") => {
            match sidecar.lower_case {
                Some(false) => TextClean::SiglipCased,
                _ => TextClean::Siglip,
            }
        }
        TextClean::Auto => TextClean::Whitespace,
        other => other,
    };
    Ok(Specials {
        sot: sot.map(|t| t.id),
        eot: eot.id,
        pad,
        clean,
    })
}

/// CLIP's names, when the vocabulary has both.
fn clip_pair(lookup: &impl Fn(&str) -> Option<Tok>) -> Option<Pair> {
    let sot = SOT_NAMES.iter().find_map(|n| lookup(n))?;
    let eot = EOT_NAMES.iter().find_map(|n| lookup(n))?;
    Some((Some(sot), eot))
}

/// The tokens the post-processor puts around a single sequence: a `TemplateProcessing`
/// `single` template (the special token right before `$A` starts, the one right after ends),
/// or `RobertaProcessing`/`BertProcessing`'s `cls`/`sep`; the first that names an end token in
/// a `Sequence` of processors.
fn from_post_processor(tok: &Tokenizer) -> Option<Pair> {
    let json = serde_json::to_value(tok.get_post_processor()?).ok()?;
    pair_of_processor(&json)
}

fn pair_of_processor(p: &Value) -> Option<Pair> {
    let named = |v: &Value| -> Option<Tok> {
        // `["</s>", 2]`
        let a = v.as_array()?;
        Some(Tok {
            name: a.first()?.as_str()?.into(),
            id: u32::try_from(a.get(1)?.as_u64()?).ok()?,
        })
    };
    match p.get("type")?.as_str()? {
        "RobertaProcessing" | "BertProcessing" => {
            Some((p.get("cls").and_then(named), named(p.get("sep")?)?))
        }
        "TemplateProcessing" => template_pair(p),
        "Sequence" => p
            .get("processors")?
            .as_array()?
            .iter()
            .find_map(pair_of_processor),
        _ => None,
    }
}

/// `single` is a list of `{"SpecialToken": {"id": name}}` and `{"Sequence": {"id": "A"}}`;
/// `special_tokens[name].ids` holds a special's ids (used only when it is one id).
fn template_pair(p: &Value) -> Option<Pair> {
    let single = p.get("single")?.as_array()?;
    let specials = p.get("special_tokens");
    let special = |piece: &Value| -> Option<Tok> {
        let name = piece.get("SpecialToken")?.get("id")?.as_str()?;
        let ids = specials?.get(name)?.get("ids")?.as_array()?;
        match ids.as_slice() {
            [id] => Some(Tok {
                name: name.into(),
                id: u32::try_from(id.as_u64()?).ok()?,
            }),
            _ => None,
        }
    };
    let a = single
        .iter()
        .position(|piece| piece.get("Sequence").is_some())?;
    let sot = a.checked_sub(1).and_then(|i| special(&single[i]));
    let eot = special(single.get(a + 1)?)?;
    Some((sot, eot))
}

/// What `tokenizer_config.json`, then `special_tokens_map.json`, in the tokenizer's folder say.
#[derive(Debug, Default)]
struct Sidecar {
    bos: Option<String>,
    eos: Option<String>,
    pad: Option<String>,
    /// `tokenizer_class` and `do_lower_case` of `tokenizer_config.json`.
    class: Option<String>,
    lower_case: Option<bool>,
}

impl Sidecar {
    fn read(origin: &Path) -> Result<Self, TextError> {
        let mut out = Self::default();
        let Some(dir) = origin.parent() else {
            return Ok(out);
        };
        for file in SIDECAR_FILES {
            let path = dir.join(file);
            if !path.is_file() {
                continue;
            }
            let bad = |reason: String| TextError::Sidecar {
                path: path.clone(),
                reason,
            };
            let text = std::fs::read_to_string(&path).map_err(|e| bad(e.to_string()))?;
            let json: Value =
                serde_json::from_str(&text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
            if !json.is_object() {
                return Err(bad("must be a JSON object".into()));
            }
            // A token is `"</s>"` or `{"content": "</s>", ...}` (transformers' AddedToken).
            let token = |key: &str| match json.get(key)? {
                Value::String(s) => Some(s.clone()),
                v => v.get("content")?.as_str().map(String::from),
            };
            out.bos = out
                .bos
                .or_else(|| token("bos_token").or_else(|| token("cls_token")));
            out.eos = out
                .eos
                .or_else(|| token("eos_token").or_else(|| token("sep_token")));
            out.pad = out.pad.or_else(|| token("pad_token"));
            if file == SIDECAR_FILES[0] {
                out.class = json["tokenizer_class"].as_str().map(String::from);
                out.lower_case = json["do_lower_case"].as_bool();
            }
        }
        Ok(out)
    }

    /// Start (`bos_token`, else `cls_token`) and end (`eos_token`, else `sep_token`), when the
    /// end token is in the vocabulary.
    fn pair(&self, lookup: &impl Fn(&str) -> Option<Tok>) -> Option<Pair> {
        let eot = lookup(self.eos.as_deref()?)?;
        Some((self.bos.as_deref().and_then(lookup), eot))
    }
}

/// The file's special added tokens (all added tokens when none is marked special), by id, for
/// error messages.
fn present_specials(tok: &Tokenizer) -> String {
    const MAX: usize = 20;
    let added = tok.get_added_tokens_decoder();
    let mut tokens: Vec<(u32, &str, bool)> = added
        .iter()
        .map(|(id, t)| (*id, t.content.as_str(), t.special))
        .collect();
    if tokens.iter().any(|t| t.2) {
        tokens.retain(|t| t.2);
    }
    tokens.sort_unstable();
    if tokens.is_empty() {
        return "none (the file has no added tokens)".into();
    }
    let mut shown: Vec<String> = tokens
        .iter()
        .take(MAX)
        .map(|(id, name, _)| format!("`{name}` ({id})"))
        .collect();
    if tokens.len() > MAX {
        shown.push(format!("and {} more", tokens.len() - MAX));
    }
    shown.join(", ")
}
