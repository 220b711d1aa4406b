//! Text side of CLIP: caption cleaning, the BPE tokenizer that turns captions into fixed-length
//! id rows for the text tower, and training such a tokenizer on our own captions.
//!
//! Everything goes through Hugging Face `tokenizer.json` files, so a tokenizer trained here is
//! readable by `transformers`, and OpenAI CLIP's own (from `scripts/make_clip_tokenizer.py`)
//! gives the same ids as `open_clip.tokenize` (checked by `tests/tokenizer_parity.rs`).

mod bpe;
mod clean;
mod tokenizer;

pub use bpe::{TrainedBpe, train_bpe};
pub use clean::clean_text;
pub use tokenizer::TextTokenizer;

use std::path::PathBuf;

/// Start-of-text token of tokenizers trained here (OpenAI's name).
pub const SOT: &str = "<|startoftext|>";
/// End-of-text token of tokenizers trained here (OpenAI's name).
pub const EOT: &str = "<|endoftext|>";

/// Errors from loading, using, training and saving tokenizers.
#[derive(Debug, thiserror::Error)]
pub enum TextError {
    #[error("cannot read tokenizer {}", path.display())]
    Load {
        path: PathBuf,
        #[source]
        source: tokenizers::Error,
    },
    #[error("tokenizer {} has no `{names}` token", path.display())]
    MissingSpecial { path: PathBuf, names: String },
    #[error("context_length = {0} leaves no room for start and end tokens (needs at least 2)")]
    ContextLength(usize),
    #[error("cannot turn off the truncation of tokenizer {}", path.display())]
    Configure {
        path: PathBuf,
        #[source]
        source: tokenizers::Error,
    },
    #[error("cannot encode caption {text:?}")]
    Encode {
        text: String,
        #[source]
        source: tokenizers::Error,
    },
    #[error("cannot write tokenizer {}", path.display())]
    Save {
        path: PathBuf,
        #[source]
        source: tokenizers::Error,
    },
    #[error("vocab_size = {0} is too small: a byte-level BPE needs 512 byte ids plus 2 specials")]
    VocabSize(usize),
    #[error("BPE training failed")]
    Train(#[source] tokenizers::Error),
    #[error("cannot build the trained tokenizer: {0}")]
    Build(String),
}

#[cfg(test)]
mod tests;
