//! `cliptrain tokenizer ...`: train a BPE tokenizer on captions, and show how text encodes.
use anyhow::Context;
use clap::{Args, Subcommand};
use cliptrain::config::DataConfig;
use cliptrain::data::{self, sample::SampleKeys};
use cliptrain::text::{TextTokenizer, train_bpe};
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;

#[derive(Debug, Subcommand)]
pub enum TokenizerCommand {
    /// Train a CLIP-style byte-level BPE on captions and write its tokenizer.json.
    Train(TrainArgs),
    /// Print the ids TEXT encodes to (one row of --context-length ids per TEXT).
    Encode(EncodeArgs),
}

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Text files with one caption per line (blank lines are skipped).
    #[arg(long, num_args = 1.., value_name = "FILE", required_unless_present = "data")]
    pub captions: Vec<PathBuf>,
    /// WebDataset shards to read captions from (brace ranges, `::` lists, `pipe:`).
    #[arg(long, value_name = "SPEC")]
    pub data: Option<String>,
    /// Caption member extension in the shards.
    #[arg(long, default_value = "txt")]
    pub text_key: String,
    /// Ids in the tokenizer, specials included (at least 514).
    #[arg(long, default_value_t = 49408)]
    pub vocab_size: usize,
    /// Where to write tokenizer.json.
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct EncodeArgs {
    /// The tokenizer.json to use (default with --config: its `data.tokenizer`).
    #[arg(long, required_unless_present = "config")]
    pub tokenizer: Option<PathBuf>,
    /// A run config whose `data.sot_token`, `data.eot_token`, `data.pad_token` and
    /// `data.text_clean` choose the specials and cleaning, as in training.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Ids per row (default: the config's `model.text.context_length`, else 77).
    #[arg(long)]
    pub context_length: Option<usize>,
    /// Print `[[ids...], ...]` as JSON instead of one line of ids per text.
    #[arg(long)]
    pub json: bool,
    /// Captions to encode.
    #[arg(required = true)]
    pub text: Vec<String>,
}

pub fn run(cmd: TokenizerCommand) -> anyhow::Result<()> {
    match cmd {
        TokenizerCommand::Train(args) => train(args),
        TokenizerCommand::Encode(args) => encode(args),
    }
}

fn train(args: TrainArgs) -> anyhow::Result<()> {
    // Open every file up front so a typo fails before a long read.
    let readers = args
        .captions
        .iter()
        .map(|path| {
            File::open(path)
                .map(|f| (path.clone(), BufReader::new(f)))
                .with_context(|| format!("opening captions file {}", path.display()))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let read_error = std::sync::Mutex::new(None);
    let from_shards = match &args.data {
        Some(spec) => {
            let d = DataConfig {
                text_key: args.text_key.clone(),
                ..DataConfig::default()
            };
            Some(data::sample::captions(
                data::spec::parse_spec(spec)?,
                SampleKeys::from_config(&d),
            )?)
        }
        None => None,
    };
    let captions = caption_lines(readers, &read_error).chain(from_shards.into_iter().flatten());
    let trained = train_bpe(captions, args.vocab_size, &args.out)
        .with_context(|| format!("training a tokenizer into {}", args.out.display()))?;
    if let Some(err) = read_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(err);
    }
    tracing::info!(
        "wrote {}: {} ids ({} merges) from {} captions",
        args.out.display(),
        trained.vocab_size,
        trained.merges,
        trained.captions
    );
    if trained.vocab_size < args.vocab_size {
        tracing::warn!(
            "asked for {} ids but the captions only support {}",
            args.vocab_size,
            trained.vocab_size
        );
    }
    Ok(())
}

/// Non-blank lines of the files, streamed. The first read error stops the stream and is kept
/// in `error` (the trainer takes a plain iterator of captions).
fn caption_lines<'a>(
    readers: Vec<(PathBuf, BufReader<File>)>,
    error: &'a std::sync::Mutex<Option<anyhow::Error>>,
) -> impl Iterator<Item = String> + Send + 'a {
    readers
        .into_iter()
        .flat_map(|(path, reader)| reader.lines().map(move |line| (path.clone(), line)))
        .map_while(move |(path, line)| match line {
            Ok(line) => Some(line),
            Err(err) => {
                let err = anyhow::Error::new(err)
                    .context(format!("reading captions file {}", path.display()));
                *error.lock().unwrap_or_else(|p| p.into_inner()) = Some(err);
                None
            }
        })
        .filter(|line| !line.trim().is_empty())
}

fn encode(args: EncodeArgs) -> anyhow::Result<()> {
    let cfg = match &args.config {
        Some(path) => cliptrain::config::load(path, &[])?,
        None => cliptrain::config::Config::default(),
    };
    let path = match (&args.tokenizer, &args.config) {
        (Some(p), _) => p.clone(),
        (None, Some(_)) if !cfg.data.tokenizer.is_empty() => PathBuf::from(&cfg.data.tokenizer),
        (None, _) => anyhow::bail!("the config's data.tokenizer is empty; pass --tokenizer"),
    };
    let ctx = match (args.context_length, &args.config) {
        (Some(n), _) => n,
        (None, Some(_)) => cfg.model.text.context_length,
        (None, None) => 77,
    };
    let opts = cfg.data.tokenizer_options(ctx);
    let tokenizer = TextTokenizer::load(&path, &opts)
        .with_context(|| format!("loading tokenizer {}", path.display()))?;
    let texts: Vec<&str> = args.text.iter().map(String::as_str).collect();
    let ids = tokenizer.encode_batch(&texts)?;
    let rows: Vec<&[i64]> = ids.chunks(tokenizer.context_length()).collect();
    if args.json {
        println!("{}", serde_json::to_string(&rows)?);
    } else {
        for row in rows {
            let line: Vec<String> = row.iter().map(i64::to_string).collect();
            println!("{}", line.join(" "));
        }
    }
    Ok(())
}
