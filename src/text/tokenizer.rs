//! [`TextTokenizer`]: a Hugging Face `tokenizer.json` that encodes captions into fixed-length
//! id rows exactly as `open_clip.tokenize` does.

use super::{TextError, clean::clean_text};
use rayon::prelude::*;
use std::path::Path;
use tokenizers::{PostProcessorWrapper, Tokenizer};

/// Names the start/end-of-text tokens go by: OpenAI/Hugging Face, then open_clip's.
const SOT_NAMES: [&str; 2] = ["<|startoftext|>", "<start_of_text>"];
const EOT_NAMES: [&str; 2] = ["<|endoftext|>", "<end_of_text>"];

/// Caption encoder for the text tower.
///
/// Rows are `[SOT] tokens [EOT] 0 0 ...` of `context_length` ids; text too long for the row is
/// cut so that EOT still sits in the last slot, and padding is id 0 (open_clip's convention).
/// Captions are cleaned first ([`clean_text`]). The file's own truncation, padding and
/// post-processor settings are ignored, so the rows depend only on its vocab, merges,
/// normalizer and pre-tokenizer.
#[derive(Clone)]
pub struct TextTokenizer {
    /// As loaded; what [`TextTokenizer::save`] writes, so other readers keep the file's settings.
    original: Tokenizer,
    /// The same with truncation, padding and post-processing off: we place SOT/EOT ourselves.
    bare: Tokenizer,
    sot: u32,
    eot: u32,
    context_length: usize,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("sot", &self.sot)
            .field("eot", &self.eot)
            .field("context_length", &self.context_length)
            .finish()
    }
}

impl TextTokenizer {
    /// Loads a `tokenizer.json` (CLIP's from `scripts/make_clip_tokenizer.py`, or one from
    /// `cliptrain tokenizer train`) for rows of `context_length` ids.
    pub fn from_file(path: impl AsRef<Path>, context_length: usize) -> Result<Self, TextError> {
        let path = path.as_ref();
        let tokenizer = Tokenizer::from_file(path).map_err(|source| TextError::Load {
            path: path.to_path_buf(),
            source,
        })?;
        Self::new(tokenizer, context_length, path)
    }

    /// Wraps an already-built tokenizer; `origin` names it in errors (usually its file).
    pub fn new(
        tokenizer: Tokenizer,
        context_length: usize,
        origin: &Path,
    ) -> Result<Self, TextError> {
        if context_length < 2 {
            return Err(TextError::ContextLength(context_length));
        }
        let find = |names: &[&str]| names.iter().find_map(|n| tokenizer.token_to_id(n));
        let missing = |names: [&str; 2]| TextError::MissingSpecial {
            path: origin.to_path_buf(),
            names: names.join("` or `"),
        };
        let sot = find(&SOT_NAMES).ok_or_else(|| missing(SOT_NAMES))?;
        let eot = find(&EOT_NAMES).ok_or_else(|| missing(EOT_NAMES))?;

        let mut bare = tokenizer.clone();
        bare.with_truncation(None)
            .map_err(|source| TextError::Configure {
                path: origin.to_path_buf(),
                source,
            })?
            .with_padding(None)
            .with_post_processor(None::<PostProcessorWrapper>);
        // Caption text that spells a special token (`<|endoftext|>`) is encoded as plain text:
        // an EOT in the middle of a row would end the caption early for argmax-EOT pooling.
        // open_clip differs here (it splits the string differently, and turns its own
        // `<end_of_text>` spelling into a real EOT); such captions are junk either way.
        bare.set_encode_special_tokens(true);
        Ok(Self {
            original: tokenizer,
            bare,
            sot,
            eot,
            context_length,
        })
    }

    /// Start-of-text id, the first id of every row.
    pub fn sot_id(&self) -> u32 {
        self.sot
    }

    /// End-of-text id; CLIP pools the text features at its position.
    pub fn eot_id(&self) -> u32 {
        self.eot
    }

    /// Number of ids, added tokens included; the text tower's embedding table needs this many.
    pub fn vocab_size(&self) -> usize {
        self.original.get_vocab_size(true)
    }

    /// Ids per row.
    pub fn context_length(&self) -> usize {
        self.context_length
    }

    /// Token ids of one cleaned caption, without SOT/EOT and without truncation.
    pub fn encode_tokens(&self, text: &str) -> Result<Vec<u32>, TextError> {
        let cleaned = clean_text(text);
        let encoding = self
            .bare
            .encode_fast(cleaned.as_str(), false)
            .map_err(|source| TextError::Encode {
                text: preview(text),
                source,
            })?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Encodes captions in parallel into a row-major `[texts.len(), context_length]` id matrix.
    pub fn encode_batch(&self, texts: &[&str]) -> Result<Vec<i64>, TextError> {
        let mut out = vec![0i64; texts.len() * self.context_length];
        out.par_chunks_mut(self.context_length)
            .zip(texts.par_iter())
            .try_for_each(|(row, text)| {
                let ids = self.encode_tokens(text)?;
                self.fill_row(row, &ids);
                Ok::<(), TextError>(())
            })?;
        Ok(out)
    }

    /// `[SOT] ids [EOT] 0...`; when too long, the last slot is overwritten with EOT, as
    /// open_clip does (it keeps `context_length - 2` text tokens).
    fn fill_row(&self, row: &mut [i64], ids: &[u32]) {
        let kept = ids.len().min(self.context_length - 2);
        row[0] = i64::from(self.sot);
        for (slot, &id) in row[1..=kept].iter_mut().zip(ids) {
            *slot = i64::from(id);
        }
        row[kept + 1] = i64::from(self.eot);
        row[kept + 2..].fill(0);
    }

    /// Writes the tokenizer (as loaded, with its own settings) to `path` as `tokenizer.json`.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), TextError> {
        let path = path.as_ref();
        self.original
            .save(path, true)
            .map_err(|source| TextError::Save {
                path: path.to_path_buf(),
                source,
            })
    }

    /// The wrapped Hugging Face tokenizer, as loaded.
    pub fn inner(&self) -> &Tokenizer {
        &self.original
    }
}

/// Enough of a caption to recognise it in an error message.
fn preview(text: &str) -> String {
    const MAX: usize = 60;
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_owned(),
    }
}
