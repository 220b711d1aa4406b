//! A mixture's sources watched for one that has stopped giving usable samples: its share of the
//! batches is silently filled by the other sources, so the mixture the run trains on is not the
//! one configured. Counted where samples are decoded (the loader), as only there is a sample
//! known to be unusable.
use super::DataError;

/// Per source, the draws since its last usable sample.
#[derive(Debug)]
pub struct SourceWatch {
    /// `data.sources[i] (name)`, by source.
    names: Vec<String>,
    dry: Vec<u64>,
    /// Whether the current dry spell of each source was reported.
    reported: Vec<bool>,
    /// Draws without a usable sample after which a source is reported: a whole shuffle
    /// buffer's worth (at least [`MIN_DRY_DRAWS`]).
    limit: u64,
    /// `data.strict`: a dry source stops the run instead of a warning.
    strict: bool,
}

/// The fewest draws in a row without a usable sample that report a source, so that a small
/// shuffle buffer does not report a few bad samples in a row.
pub const MIN_DRY_DRAWS: u64 = 16;

impl SourceWatch {
    /// A watch over the sources `names` (by index) of a mixture with `shuffle_buffer`.
    pub fn new(names: Vec<String>, shuffle_buffer: usize, strict: bool) -> Self {
        let n = names.len();
        Self {
            names,
            dry: vec![0; n],
            reported: vec![false; n],
            limit: (shuffle_buffer as u64).max(MIN_DRY_DRAWS),
            strict,
        }
    }

    /// Source `i` gave a usable sample: its dry spell, if any, is over.
    pub fn usable(&mut self, i: usize) {
        if let (Some(d), Some(r)) = (self.dry.get_mut(i), self.reported.get_mut(i)) {
            if *r {
                tracing::info!("{} gives usable samples again", self.names[i]);
            }
            (*d, *r) = (0, false);
        }
    }

    /// Source `i` gave an unusable sample: after `limit` in a row, a warning naming it once per
    /// dry spell, or with `strict` an error.
    pub fn unusable(&mut self, i: usize) -> Result<(), DataError> {
        let Some(d) = self.dry.get_mut(i) else {
            return Ok(());
        };
        *d += 1;
        if *d < self.limit || self.reported[i] {
            return Ok(());
        }
        let (name, draws) = (self.names[i].clone(), *d);
        if self.strict {
            return Err(DataError::SourceDry { name, draws });
        }
        self.reported[i] = true;
        tracing::warn!(
            "{name}: no usable sample in its last {draws} draws (a shuffle buffer's worth); \
             the other sources fill its share of the batches. Check its shards with `cliptrain \
             data inspect`, or set data.strict = true to stop the run instead"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_is_reported_after_a_buffer_of_dry_draws_and_stops_a_strict_run() {
        let names = vec!["data.sources[0] (a)".into(), "data.sources[1] (b)".into()];
        let mut w = SourceWatch::new(names.clone(), 4, false);
        assert_eq!(w.limit, MIN_DRY_DRAWS);
        for _ in 0..100 {
            w.usable(0);
            w.unusable(1).unwrap();
        }
        assert!(w.reported[1] && !w.reported[0]);
        w.usable(1);
        assert_eq!((w.dry[1], w.reported[1]), (0, false));
        let mut strict = SourceWatch::new(names, 20, true);
        for _ in 0..19 {
            strict.unusable(1).unwrap();
        }
        let err = strict.unusable(1).unwrap_err().to_string();
        assert!(
            err.contains("data.sources[1] (b) produced no usable sample in 20 draws in a row"),
            "{err}"
        );
        // A single stream has no sources to watch.
        SourceWatch::new(vec![], 4, true).unusable(0).unwrap();
    }
}
