//! [`TextTokenizer`]: a Hugging Face `tokenizer.json` that encodes captions into fixed-length
//! id rows exactly as `open_clip.tokenize` does.

use super::specials::{self, Specials, TokenizerOptions};
use super::{TextError, clean::clean_caption};
use rayon::prelude::*;
use std::path::Path;
use tokenizers::{PostProcessorWrapper, Tokenizer};

/// Caption encoder for the text tower.
///
/// Rows are `[SOT] tokens [EOT] PAD PAD ...` of `context_length` ids (no SOT when the tokenizer
/// has no start token); text too long for the row is cut so that EOT still sits in the last
/// slot. The specials come from [`TokenizerOptions`], else the file (see [`Specials`]); for
/// CLIP's BPE, PAD is 0 (open_clip's convention). Captions are cleaned first
/// ([`super::TextClean`]). The file's own truncation, padding and post-processor settings are
/// not applied, so the rows depend only on its vocab, merges, normalizer and pre-tokenizer.
#[derive(Clone)]
pub struct TextTokenizer {
    /// As loaded; what [`TextTokenizer::save`] writes, so other readers keep the file's settings.
    original: Tokenizer,
    /// The same with truncation, padding and post-processing off: we place SOT/EOT ourselves.
    bare: Tokenizer,
    specials: Specials,
    context_length: usize,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("specials", &self.specials)
            .field("context_length", &self.context_length)
            .finish()
    }
}

impl TextTokenizer {
    /// Loads a `tokenizer.json` for rows of `context_length` ids, every special from the file
    /// ([`TextTokenizer::load`] with [`TokenizerOptions::new`]).
    pub fn from_file(path: impl AsRef<Path>, context_length: usize) -> Result<Self, TextError> {
        Self::load(path, &TokenizerOptions::new(context_length))
    }

    /// Loads a `tokenizer.json` (CLIP's from `scripts/make_clip_tokenizer.py`, one from
    /// `cliptrain tokenizer train`, or any Hugging Face one), or a SentencePiece model file
    /// (`*.model`, see [`super::spm`]), with the choices of `opts`; the
    /// `tokenizer_config.json` / `special_tokens_map.json` in its folder are read too.
    pub fn load(path: impl AsRef<Path>, opts: &TokenizerOptions) -> Result<Self, TextError> {
        let path = path.as_ref();
        let tokenizer = if super::spm::is_sentencepiece(path) {
            super::spm::load(path)?
        } else {
            Tokenizer::from_file(path).map_err(|source| TextError::Load {
                path: path.to_path_buf(),
                source,
            })?
        };
        Self::new(tokenizer, opts, path)
    }

    /// Wraps an already-built tokenizer; `origin` names it in errors (usually its file) and its
    /// folder is where `tokenizer_config.json` / `special_tokens_map.json` are looked for.
    pub fn new(
        tokenizer: Tokenizer,
        opts: &TokenizerOptions,
        origin: &Path,
    ) -> Result<Self, TextError> {
        let specials = specials::resolve(&tokenizer, opts, origin)?;
        let needed = 1 + usize::from(specials.sot.is_some());
        if opts.context_length < needed {
            return Err(TextError::ContextLength {
                context_length: opts.context_length,
                needed,
            });
        }
        let mut bare = tokenizer.clone();
        bare.with_truncation(None)
            .map_err(|source| TextError::Configure {
                path: origin.to_path_buf(),
                source,
            })?
            .with_padding(None)
            .with_post_processor(None::<PostProcessorWrapper>);
        // Caption text that spells a special token (`<|endoftext|>`) is encoded as plain text:
        // an EOT in the middle of a row would end the caption early for EOT pooling.
        // open_clip differs here (it splits the string differently, and turns its own
        // `<end_of_text>` spelling into a real EOT); such captions are junk either way.
        bare.set_encode_special_tokens(true);
        Ok(Self {
            original: tokenizer,
            bare,
            specials,
            context_length: opts.context_length,
        })
    }

    /// Start-of-text id, the first id of every row; `None` when rows have no start token.
    pub fn sot_id(&self) -> Option<u32> {
        self.specials.sot
    }

    /// End-of-text id; CLIP pools the text features at its first position.
    pub fn eot_id(&self) -> u32 {
        self.specials.eot
    }

    /// The id rows are padded with after EOT.
    pub fn pad_id(&self) -> u32 {
        self.specials.pad
    }

    /// Start, end and pad ids and the caption cleaning, as resolved.
    pub fn specials(&self) -> Specials {
        self.specials
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
        let cleaned = clean_caption(text, self.specials.clean);
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
        let mut out = vec![i64::from(self.specials.pad); texts.len() * self.context_length];
        out.par_chunks_mut(self.context_length)
            .zip(texts.par_iter())
            .try_for_each(|(row, text)| {
                let ids = self.encode_tokens(text)?;
                self.fill_row(row, &ids);
                Ok::<(), TextError>(())
            })?;
        Ok(out)
    }

    /// `[SOT] ids [EOT] PAD...`; when too long, the last slot is overwritten with EOT, as
    /// open_clip does (it keeps `context_length - 2` text tokens, one more without SOT).
    fn fill_row(&self, row: &mut [i64], ids: &[u32]) {
        let start = usize::from(self.specials.sot.is_some());
        if let Some(sot) = self.specials.sot {
            row[0] = i64::from(sot);
        }
        let kept = ids.len().min(self.context_length - start - 1);
        for (slot, &id) in row[start..start + kept].iter_mut().zip(ids) {
            *slot = i64::from(id);
        }
        row[start + kept] = i64::from(self.specials.eot);
        row[start + kept + 1..].fill(i64::from(self.specials.pad));
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
