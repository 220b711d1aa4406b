//! `model.init_from` at another resolution or a shorter text context: the run's config wrote
//! `model.vision.image_size` (or `model.text.context_length`) and it differs from the source's,
//! so the source's position embeddings are made to fit — the patch grid resampled bicubically
//! with the class token's row kept, as OpenCLIP's `resize_pos_embed` (and timm's
//! `resample_abs_pos_embed`) do; the text rows truncated. Every other dimension still comes
//! from the source.
use super::SourceError;
use crate::config::ModelConfig;
use crate::model::ModelSpec;
use std::path::Path;
use tch::{Tensor, nn};

/// HF's name of the image tower's `[1 + grid², width]` position embedding.
const VISION_POS: &str = "vision_model.embeddings.position_embedding.weight";
/// HF's name of the text tower's `[context, width]` position embedding.
const TEXT_POS: &str = "text_model.embeddings.position_embedding.weight";

/// Refuses what resampling cannot do, naming both values: a written `model.vision.patch_size`
/// other than the source's (the patch embedding itself would change), and a written
/// `model.text.context_length` longer than the source's (there are no rows to add).
pub(crate) fn check(run: &ModelConfig, source: &ModelSpec, path: &Path) -> Result<(), SourceError> {
    let bad = |reason: String| SourceError::BadConfig {
        path: path.to_path_buf(),
        reason,
    };
    let (patch, src_patch) = (run.vision.patch_size, source.vision.patch_size);
    if run.written.patch_size && patch != src_patch {
        return Err(bad(format!(
            "model.vision.patch_size = {patch} but the source's patch size is {src_patch}: \
             model.init_from can change the image size, not the patch size; set \
             model.vision.patch_size = {src_patch} or remove it"
        )));
    }
    let (ctx, src_ctx) = (run.text.context_length, source.text.context_length);
    if run.written.context_length && ctx > src_ctx {
        return Err(bad(format!(
            "model.text.context_length = {ctx} is longer than the source's context length \
             {src_ctx}: model.init_from can shorten the text context (its position embeddings \
             are truncated), not lengthen it; set model.text.context_length to at most {src_ctx} \
             or remove it"
        )));
    }
    Ok(())
}

/// One line per position embedding the run's model changes, for the log.
pub(crate) fn notes(run: &ModelConfig, source: &ModelSpec) -> Vec<String> {
    let mut notes = Vec::new();
    let (v, sv) = (&run.vision, &source.vision);
    if v.image_size != sv.image_size {
        let (g, sg) = (
            grid(v.image_size, v.patch_size),
            grid(sv.image_size, sv.patch_size),
        );
        notes.push(format!(
            "model.vision.image_size = {} (the source's is {}): position embeddings resampled \
             bicubically from a {sg}x{sg} to a {g}x{g} patch grid (a class token kept)",
            v.image_size, sv.image_size
        ));
    }
    let (c, sc) = (run.text.context_length, source.text.context_length);
    if c != sc {
        notes.push(format!(
            "model.text.context_length = {c} (the source's is {sc}): text position embeddings \
             truncated to the first {c}"
        ));
    }
    notes
}

fn grid(image_size: usize, patch_size: usize) -> usize {
    image_size / patch_size.max(1)
}

/// Makes the source's position embeddings in `tensors` fit the variables of `vs` where only the
/// grid (square, same width) or a shorter text context differs; anything else is left for the
/// loader to report. Returns how many tensors changed.
pub(crate) fn fit_positions(tensors: &mut [(String, Tensor)], vs: &nn::VarStore) -> usize {
    let vars = vs.variables();
    let mut changed = 0;
    for (name, t) in tensors.iter_mut() {
        let Some(var) = vars.get(name.as_str()) else {
            continue;
        };
        let (want, have) = (var.size(), t.size());
        if want == have || want.len() != 2 || have.len() != 2 || want[1] != have[1] {
            continue;
        }
        let fitted = match name.as_str() {
            // CLIP's table has a class-token row first; SigLIP's is the grid alone (a square
            // plus one is never a square, so the two cannot be confused).
            VISION_POS => match (square_grid(have[0] - 1), square_grid(want[0] - 1)) {
                (Some(from), Some(to)) => Some(resample_grid(t, from, to, 1)),
                _ => match (square_grid(have[0]), square_grid(want[0])) {
                    (Some(from), Some(to)) => Some(resample_grid(t, from, to, 0)),
                    _ => None,
                },
            },
            TEXT_POS if want[0] < have[0] => Some(t.narrow(0, 0, want[0]).contiguous()),
            _ => None,
        };
        if let Some(f) = fitted {
            *t = f;
            changed += 1;
        }
    }
    changed
}

/// The side of an `n`-cell square grid, when `n` is a positive square.
fn square_grid(n: i64) -> Option<i64> {
    let side = (n.max(0) as f64).sqrt().round() as i64;
    (n > 0 && side * side == n).then_some(side)
}

/// `[c + from², w]` position embeddings (`c` = 1 class-token row first, or 0 for SigLIP, then
/// the grid row-major) resampled to `[c + to², w]`: `F.interpolate(mode="bicubic",
/// align_corners=False, antialias=True)` over the grid, OpenCLIP's `resize_pos_embed`
/// defaults, computed in f32.
pub(crate) fn resample_grid(pos: &Tensor, from: i64, to: i64, c: i64) -> Tensor {
    let w = pos.size()[1];
    let kind = pos.kind();
    let pos = pos.to_kind(tch::Kind::Float);
    let cls = pos.narrow(0, 0, c);
    let grid = pos
        .narrow(0, c, from * from)
        .view([1, from, from, w])
        .permute([0, 3, 1, 2]);
    let resized = grid
        .internal_upsample_bicubic2d_aa([to, to], false, None, None)
        .permute([0, 2, 3, 1])
        .reshape([to * to, w]);
    Tensor::cat(&[cls, resized], 0).to_kind(kind)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn a_constant_grid_stays_constant_and_the_class_row_is_kept() {
        let cls = Tensor::from_slice(&[7.0f32, -7.0]).view([1, 2]);
        let grid = Tensor::ones([16, 2], (Kind::Float, Device::Cpu)) * 0.5;
        let pos = Tensor::cat(&[&cls, &grid], 0);
        for to in [2, 4, 7] {
            let r = resample_grid(&pos, 4, to, 1);
            assert_eq!(r.size(), [1 + to * to, 2]);
            assert!(r.narrow(0, 0, 1).equal(&cls));
            let dev = (r.narrow(0, 1, to * to) - 0.5)
                .abs()
                .max()
                .double_value(&[]);
            assert!(dev < 1e-6, "to {to}: {dev}");
        }
        assert!(resample_grid(&pos, 4, 4, 1).allclose(&pos, 1e-6, 1e-6, false));
    }

    #[test]
    fn square_grids_only() {
        assert_eq!(square_grid(16), Some(4));
        assert_eq!(square_grid(196), Some(14));
        assert_eq!(square_grid(15), None);
        assert_eq!(square_grid(0), None);
    }

    /// SigLIP's table is the grid alone: fitted without a class row.
    #[test]
    fn a_siglip_grid_is_resampled_without_a_class_row() {
        let vs = nn::VarStore::new(Device::Cpu);
        let pos = vs.root() / "vision_model" / "embeddings" / "position_embedding";
        let _var = pos.zeros("weight", &[4, 2]);
        let grid = Tensor::ones([16, 2], (Kind::Float, Device::Cpu)) * 0.5;
        let mut tensors = vec![(VISION_POS.to_string(), grid)];
        assert_eq!(fit_positions(&mut tensors, &vs), 1);
        assert_eq!(tensors[0].1.size(), [4, 2]);
        let dev = (&tensors[0].1 - 0.5).abs().max().double_value(&[]);
        assert!(dev < 1e-6, "{dev}");
    }
}
