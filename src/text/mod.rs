//! Text side of CLIP: caption cleaning, the tokenizer that turns captions into fixed-length id
//! rows for the text tower (any `tokenizer.json`; [`TokenizerOptions`] and the file decide which
//! tokens start, end and pad a row), and training a CLIP BPE on our own captions.
//!
//! Everything goes through Hugging Face `tokenizer.json` files, so a tokenizer trained here is
//! readable by `transformers`, and OpenAI CLIP's own (from `scripts/make_clip_tokenizer.py`)
//! gives the same ids as `open_clip.tokenize` (checked by `tests/suite/tokenizer_parity.rs`).

mod bpe;
mod clean;
mod export;
mod specials;
pub mod spm;
mod tokenizer;

pub use bpe::{TrainedBpe, train_bpe};
pub use clean::{clean_caption, clean_text};
pub use specials::{NO_SOT, SIDECAR_FILES, Specials, TextClean, TokenizerOptions};
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
    #[error(
        "tokenizer {} names no end-of-text token: not in its post-processor, not as eos_token \
         in a tokenizer_config.json / special_tokens_map.json beside it, and it has neither of \
         CLIP's `<|endoftext|>` / `<end_of_text>`. Its special tokens: {present}. Choose with \
         data.eot_token (and data.sot_token, \"none\" for no start token, and data.pad_token)",
        path.display()
    )]
    MissingSpecial { path: PathBuf, present: String },
    #[error(
        "{key} = {token:?} is not a token of tokenizer {}; its special tokens: {present}",
        path.display()
    )]
    UnknownSpecial {
        path: PathBuf,
        key: &'static str,
        token: String,
        present: String,
    },
    #[error("{}: {reason}", path.display())]
    Sidecar { path: PathBuf, reason: String },
    #[error("cannot read tokenizer {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("SentencePiece model {} {reason}", path.display())]
    SentencePiece { path: PathBuf, reason: String },
    #[error(
        "context_length = {context_length} leaves no room for the start and end tokens (needs \
         at least {needed})"
    )]
    ContextLength {
        context_length: usize,
        needed: usize,
    },
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
mod specials_tests;
#[cfg(test)]
mod tests;
