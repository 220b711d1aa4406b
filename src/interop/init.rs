//! Training's `model.init_from`: the source decides the model's dimensions (and fills in its
//! tokenizer and normalisation), then its weights initialise the run's model.
use super::{ModelSource, SourceError, resize};
use crate::config::{self, Config};
use crate::model::{LoadMode, LoadReport, ModelError};
use std::path::Path;
use tch::nn;

/// Opens `cfg.model.init_from` when set and returns the config the run really uses: the
/// source's model dimensions (and tokenizer, normalisation) applied — except a written image
/// size or shorter text context, whose position embeddings [`init_weights`] fits — each change
/// logged, and validated again.
pub fn prepare(cfg: &Config) -> Result<(Config, Option<ModelSource>), SourceError> {
    if cfg.model.init_from.is_empty() {
        return Ok((cfg.clone(), None));
    }
    let path = Path::new(&cfg.model.init_from);
    let source = ModelSource::open(path)?;
    resize::check(&cfg.model, &source.spec, path)?;
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
    for note in resize::notes(&effective.model, &source.spec) {
        tracing::info!("  kept from the config: {note}");
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
/// and what was left out. Position embeddings whose grid or (shorter) context differs from the
/// model's are resampled or truncated first (see [`prepare`]).
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
    let (path, mut tensors) = source.tensors()?;
    let fitted = resize::fit_positions(&mut tensors, vs);
    if fitted > 0 {
        tracing::info!("fitted {fitted} position embedding(s) of the source to the model");
    }
    let report = crate::model::load_named(vs, tensors, mode, &path).map_err(|e| match e {
        m @ ModelError::Mismatch { .. } => SourceError::InitMismatch(m),
        other => SourceError::Model(other),
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
                // A checkpoint's tokenizer comes with the keys that chose its specials.
                if let Some(saved) = &self.saved {
                    let d = &saved.data;
                    cfg.data.sot_token.clone_from(&d.sot_token);
                    cfg.data.eot_token.clone_from(&d.eot_token);
                    cfg.data.pad_token.clone_from(&d.pad_token);
                    cfg.data.text_clean = d.text_clean;
                }
                // An OpenCLIP folder's stated cleaning goes with its tokenizer.
                if let Some(clean) = self.text_clean {
                    cfg.data.text_clean = clean;
                    let name = format!("{clean:?}").to_lowercase();
                    notes.push(format!("data.text_clean = {name} (from the source)"));
                }
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
        if let Some(rule) = self.image_resize
            && rule != cfg.data.resize_rule()
        {
            let d = &mut cfg.data;
            d.image_resize = rule.mode;
            d.image_resize_size = rule.size;
            d.image_interpolation = rule.filter;
            d.image_fill = rule.fill;
            let name = |v: &dyn std::fmt::Debug| format!("{v:?}").to_lowercase();
            notes.push(format!(
                "data.image_resize = {}, data.image_resize_size = {}, data.image_interpolation = \
                 {}, data.image_fill = {} (from the source)",
                name(&rule.mode),
                rule.size,
                name(&rule.filter),
                rule.fill
            ));
        }
        notes
    }
}
