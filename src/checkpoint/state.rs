//! `state.json`: everything besides tensors a run needs to continue exactly, in today's layout
//! (one stream position per rank) and read back from the two older ones.
use crate::data::stream::{MAX_COUNT, StreamState};
use serde::{Deserialize, Serialize};

/// Everything besides tensors needed to continue a run exactly.
///
/// `state.json` has held this in two older layouts, both still read: one stream position
/// `data` (one process), and `data` (rank 0's) beside `rank_data` (every rank's) for a job of
/// several processes. Today it is one position per rank, `ranks`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(try_from = "StateFile")]
pub struct TrainState {
    /// Optimizer steps completed.
    pub step: u64,
    /// Samples consumed by those steps.
    pub samples_seen: u64,
    /// Where each rank's data stream continues, by rank: one entry per process of the run
    /// that saved it (its world size).
    pub ranks: Vec<StreamState>,
    /// Consecutive non-finite losses at the time of saving.
    pub bad_steps_in_a_row: u32,
    /// Non-finite losses skipped over the whole run.
    pub bad_steps_total: u64,
    /// `run.seed` of the run.
    pub seed: u64,
    /// The cliptrain version that wrote the state.
    pub cliptrain_version: String,
    /// The fp16 loss scaler's state (fp16 runs only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_scale: Option<crate::precision::LossScaleState>,
}

impl TrainState {
    /// The processes the run that saved this state had (its data is split over them).
    pub fn world_size(&self) -> usize {
        self.ranks.len().max(1)
    }

    /// Every counter no run of global batch `batch_size`, seed `seed` and fp16 growth
    /// interval `growth_interval` could have saved, as `field = value: why` (the data
    /// positions are checked against their shards by `data`: [`StreamState::problems`]).
    pub fn problems(&self, batch_size: usize, seed: u64, growth_interval: u64) -> Vec<String> {
        let mut no = Vec::new();
        if self.step >= MAX_COUNT {
            no.push(format!(
                "step = {}: more than any run reaches (2^53)",
                self.step
            ));
        }
        // Every step takes between one pair and the whole global batch.
        let most = self.step.checked_mul(batch_size as u64);
        if self.samples_seen < self.step || most.is_none_or(|m| self.samples_seen > m) {
            no.push(format!(
                "samples_seen = {}: {} step(s) of at most optim.batch_size = {batch_size} pairs \
                 see between {} and {}",
                self.samples_seen,
                self.step,
                self.step,
                most.map_or("more".into(), |m| m.to_string())
            ));
        }
        if self.bad_steps_total > self.step {
            no.push(format!(
                "bad_steps_total = {}: more skipped steps than the {} step(s) run",
                self.bad_steps_total, self.step
            ));
        }
        if u64::from(self.bad_steps_in_a_row) > self.bad_steps_total {
            no.push(format!(
                "bad_steps_in_a_row = {}: more than bad_steps_total = {}",
                self.bad_steps_in_a_row, self.bad_steps_total
            ));
        }
        if self.seed != seed {
            no.push(format!(
                "seed = {}: the run (and the checkpoint's config.toml) has run.seed = {seed}",
                self.seed
            ));
        }
        if let Some(scale) = &self.loss_scale {
            no.extend(scale.problems(growth_interval));
        }
        no
    }
}

/// `state.json` as any version wrote it (see [`TrainState`]).
#[derive(Deserialize)]
struct StateFile {
    step: u64,
    samples_seen: u64,
    #[serde(default)]
    ranks: Vec<StreamState>,
    /// Before `ranks`: the one process's position, or rank 0's.
    #[serde(default)]
    data: Option<StreamState>,
    /// Before `ranks`: every rank's position in a job of several processes.
    #[serde(default)]
    rank_data: Vec<StreamState>,
    /// Before `ranks`: how many processes `rank_data` is for.
    #[serde(default)]
    world_size: Option<usize>,
    bad_steps_in_a_row: u32,
    bad_steps_total: u64,
    seed: u64,
    cliptrain_version: String,
    #[serde(default)]
    loss_scale: Option<crate::precision::LossScaleState>,
}

impl TryFrom<StateFile> for TrainState {
    type Error = String;

    fn try_from(f: StateFile) -> Result<Self, String> {
        let ranks = if !f.ranks.is_empty() {
            f.ranks
        } else if !f.rank_data.is_empty() {
            f.rank_data
        } else {
            f.data.into_iter().collect()
        };
        if ranks.is_empty() {
            return Err("it holds no data-stream position (`ranks`)".into());
        }
        if let Some(n) = f.world_size.filter(|&n| n != ranks.len()) {
            return Err(format!(
                "it has {} data position(s) for a run of {n} processes",
                ranks.len()
            ));
        }
        Ok(Self {
            step: f.step,
            samples_seen: f.samples_seen,
            ranks,
            bad_steps_in_a_row: f.bad_steps_in_a_row,
            bad_steps_total: f.bad_steps_total,
            seed: f.seed,
            cliptrain_version: f.cliptrain_version,
            loss_scale: f.loss_scale,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_json_of_every_layout_reads_as_one_position_per_rank() {
        let pos = |cursor: u64| {
            format!(
                r#"{{"fingerprint":"x","epoch":0,"cursor":{cursor},"offset":0,"emitted":0,"buffer":[],"skipped":{{}},"empty_run":0}}"#
            )
        };
        let counters =
            r#""bad_steps_in_a_row":0,"bad_steps_total":0,"seed":1,"cliptrain_version":"t""#;
        let read = |body: String| -> Result<TrainState, String> {
            serde_json::from_str(&format!(
                r#"{{"step":3,"samples_seen":12,{counters},{body}}}"#
            ))
            .map_err(|e| e.to_string())
        };
        let cursors = |s: &TrainState| -> Vec<String> {
            s.ranks
                .iter()
                .map(|r| serde_json::to_value(r).unwrap()["cursor"].to_string())
                .collect()
        };
        // One process, before `ranks`.
        let one = read(format!(r#""data":{}"#, pos(5))).unwrap();
        assert_eq!(
            (one.world_size(), cursors(&one)),
            (1, vec!["5".to_string()])
        );
        // Two ranks, before `ranks`: `data` repeated rank 0's position.
        let two = read(format!(
            r#""data":{},"world_size":2,"rank_data":[{},{}]"#,
            pos(1),
            pos(1),
            pos(2)
        ))
        .unwrap();
        assert_eq!(cursors(&two), ["1", "2"]);
        // Today's layout round-trips and writes neither old key.
        let text = serde_json::to_string(&two).unwrap();
        assert!(
            !text.contains("rank_data") && !text.contains(r#""data""#),
            "{text}"
        );
        assert_eq!(serde_json::from_str::<TrainState>(&text).unwrap(), two);
        // A count that disagrees with the positions is refused, naming both.
        let bad = read(format!(
            r#""data":{},"world_size":3,"rank_data":[{},{}]"#,
            pos(1),
            pos(1),
            pos(2)
        ));
        assert!(
            bad.unwrap_err()
                .contains("2 data position(s) for a run of 3")
        );
        assert!(
            read(String::from(r#""ranks":[]"#))
                .unwrap_err()
                .contains("no data-stream position")
        );
    }
}
