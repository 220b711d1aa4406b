//! Fused attention inputs. OpenCLIP's `attn.in_proj_*` and timm's `attn.qkv` stack q, k and v
//! into one `[3w, ...]` tensor where Hugging Face (and so cliptrain) keep
//! `self_attn.{q,k,v}_proj`; every name map splits and fuses them here.
use std::collections::BTreeMap;
use tch::Tensor;

/// Our three projections, in the order they are stacked.
const PROJECTIONS: [&str; 3] = ["q_proj", "k_proj", "v_proj"];

/// The three names a fused q/k/v of the layer `base` (`...layers.3.`) splits into, for
/// `kind` = `weight` or `bias`.
pub(super) fn names(base: &str, kind: &str) -> [String; 3] {
    PROJECTIONS.map(|p| format!("{base}self_attn.{p}.{kind}"))
}

/// A fused `[3w, ...]` tensor as our three, or `None` when its first axis does not split in
/// three (it then stays fused, and a load reports it as unexpected).
pub(super) fn split(base: &str, kind: &str, fused: &Tensor) -> Option<Vec<(String, Tensor)>> {
    let rows = *fused.size().first()?;
    if rows % 3 != 0 {
        return None;
    }
    let parts = fused.chunk(3, 0).into_iter().map(|p| p.contiguous());
    Some(names(base, kind).into_iter().zip(parts).collect())
}

/// A fused `[3w, ...]` shape's share per projection.
pub(super) fn split_shape(fused: &[u64]) -> Vec<u64> {
    let mut part = fused.to_vec();
    if let Some(rows) = part.first_mut() {
        *rows /= 3;
    }
    part
}

/// Our q, k and v of the layer `base` stacked into one tensor (from our own model, which has
/// all three).
pub(super) fn fuse(by_name: &BTreeMap<&str, &Tensor>, base: &str, kind: &str) -> Tensor {
    let parts = names(base, kind).map(|n| by_name[n.as_str()]);
    Tensor::cat(&parts, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_then_fuse_is_the_identity_and_an_unsplittable_shape_stays_fused() {
        let fused = Tensor::arange(6 * 4, (tch::Kind::Float, tch::Device::Cpu)).view([6, 4]);
        let parts = split("m.layers.0.", "weight", &fused).unwrap();
        let names: Vec<&str> = parts.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "m.layers.0.self_attn.q_proj.weight",
                "m.layers.0.self_attn.k_proj.weight",
                "m.layers.0.self_attn.v_proj.weight"
            ]
        );
        assert_eq!(parts[1].1.size(), [2, 4]);
        assert_eq!(
            parts[1].1.double_value(&[0, 0]),
            8.0,
            "k is the second third"
        );
        let by_name: BTreeMap<&str, &Tensor> = parts.iter().map(|(n, t)| (n.as_str(), t)).collect();
        assert!(fuse(&by_name, "m.layers.0.", "weight").equal(&fused));
        assert_eq!(split_shape(&[6, 4]), [2, 4]);
        let odd = Tensor::zeros([4, 2], (tch::Kind::Float, tch::Device::Cpu));
        assert!(split("m.", "bias", &odd).is_none());
    }
}
