//! Training's `model.init_from`: the source decides the model's dimensions (and fills in its
//! tokenizer and normalisation), then its weights initialise the run's model.
use super::{ModelSource, SourceError};
use crate::config::{self, Config};
use crate::model::{LoadMode, LoadReport, ModelError};
use std::path::Path;
use tch::nn;

/// Opens `cfg.model.init_from` when set and returns the config the run really uses: the
/// source's model dimensions (and tokenizer, normalisation) applied, each change logged, and
/// validated again.
pub fn prepare(cfg: &Config) -> Result<(Config, Option<ModelSource>), SourceError> {
    if cfg.model.init_from.is_empty() {
        return Ok((cfg.clone(), None));
    }
    let path = Path::new(&cfg.model.init_from);
    let source = ModelSource::open(path)?;
    let mut effective = cfg.clone();
    let notes = source.apply_to(&mut effective);
    tracing::info!(
        "model.init_from = {}: {:?} weights in {}",
        path.display(),
        source.kind,
        source.dir.display()
    );
    for note in &notes {
        tracing::info!("  taken from the source: {note}");
    }
    let problems = config::validate(&effective);
    if !problems.is_empty() {
        return Err(SourceError::BadConfig {
            path: path.to_path_buf(),
            reason: format!(
                "with the source's model the config is invalid:\n  {}",
                problems.join("\n  ")
            ),
        });
    }
    Ok((effective, Some(source)))
}

/// Loads `source` into `vs` (strict or not, per `model.init_strict`), logging what was loaded
/// and what was left out.
pub fn init_weights(
    source: &ModelSource,
    vs: &mut nn::VarStore,
    strict: bool,
) -> Result<LoadReport, SourceError> {
    let mode = if strict {
        LoadMode::Strict
    } else {
        LoadMode::Lenient
    };
    let report = source.load_into(vs, mode).map_err(|e| match e {
        SourceError::Model(m @ ModelError::Mismatch { .. }) => SourceError::InitMismatch(m),
        other => other,
    })?;
    tracing::info!(
        "initialised {} tensors from {}",
        report.loaded,
        source.dir.display()
    );
    if !report.skipped.is_empty() {
        tracing::warn!(
            "model.init_strict = false: left at their random init or ignored:{}",
            report.skipped
        );
    }
    Ok(report)
}

impl ModelSource {
    /// Makes `cfg` describe the source's model: its dimensions replace the TOML model section,
    /// its tokenizer fills an empty `data.tokenizer`, its normalisation replaces
    /// `data.image_mean/std`. Returns one line per value that changed, for the log.
    pub fn apply_to(&self, cfg: &mut Config) -> Vec<String> {
        let mut notes = Vec::new();
        let model = cfg.model.with_dims_of(&self.spec);
        let (old, new) = (config::flat_keys(&cfg.model), config::flat_keys(&model));
        for (key, value) in &new {
            if old.get(key) != Some(value) {
                let was = old.get(key).map(String::as_str).unwrap_or("unset");
                notes.push(format!(
                    "model.{key} = {value} (from the source; config had {was})"
                ));
            }
        }
        cfg.model = model;
        if let Some(tok) = &self.tokenizer_path {
            if cfg.data.tokenizer.is_empty() {
                cfg.data.tokenizer = tok.display().to_string();
                notes.push(format!("data.tokenizer = {}", tok.display()));
            } else if Path::new(&cfg.data.tokenizer) != tok {
                notes.push(format!(
                    "data.tokenizer = {} is kept although the source has {}",
                    cfg.data.tokenizer,
                    tok.display()
                ));
            }
        }
        if let Some((mean, std)) = self.image_mean_std
            && (mean != cfg.data.image_mean || std != cfg.data.image_std)
        {
            cfg.data.image_mean = mean;
            cfg.data.image_std = std;
            notes.push(format!(
                "data.image_mean = {mean:?}, data.image_std = {std:?}"
            ));
        }
        notes
    }
}
