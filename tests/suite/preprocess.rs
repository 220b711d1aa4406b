//! Each model's own image preprocessing (issue 22, part 3): the resize rule read from a
//! folder's processor file gives, on non-square images, the pixel values transformers' and
//! open_clip's processors give. References: `scripts/preprocess_parity.py`.
use crate::common::{self, repo};
use cliptrain::data::resize::ResizeRule;
use cliptrain::data::transform::{Augment, ImageTransform};
use cliptrain::interop::preprocess;
use fast_image_resize::Resizer;
use serde_json::Value;
use std::path::Path;

const SIZE: usize = 224;

/// The rule and normalisation a case folder's processor file states.
fn stated(dir: &Path) -> (ResizeRule, [f64; 3], [f64; 3]) {
    let triple = |v: &Value| -> [f64; 3] {
        let a: Vec<f64> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        [a[0], a[1], a[2]]
    };
    let oc = dir.join("open_clip_config.json");
    if oc.is_file() {
        let json: Value = serde_json::from_slice(&std::fs::read(&oc).unwrap()).unwrap();
        let rule = preprocess::read_openclip(&oc, &json, SIZE)
            .unwrap()
            .unwrap();
        let p = &json["preprocess_cfg"];
        return (rule, triple(&p["mean"]), triple(&p["std"]));
    }
    let rule = preprocess::read_hf(dir, SIZE).unwrap().unwrap();
    let json: Value =
        serde_json::from_slice(&std::fs::read(dir.join("preprocessor_config.json")).unwrap())
            .unwrap();
    (
        rule,
        triple(&json["image_mean"]),
        triple(&json["image_std"]),
    )
}

/// The largest difference, in 1/255 steps of the [0, 1] pixel scale, between our pixels of
/// `image` under the case's rule and the reference's, over every channel value; and how many
/// values differ by more than one step.
fn largest_difference(d: &Path, case: &str, image: &str) -> (f64, usize) {
    let (rule, mean, std) = stated(&d.join(case));
    let t = ImageTransform {
        size: SIZE as u32,
        augment: Augment::Eval(rule),
        max_pixels: 1 << 30,
        seed: 0,
    };
    let bytes = std::fs::read(d.join(format!("{image}.png"))).unwrap();
    let ours = t.apply(&bytes, 0, &mut Resizer::new()).unwrap();
    let raw = std::fs::read(d.join(case).join(format!("{image}.f32"))).unwrap();
    let reference: Vec<f32> = raw
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    assert_eq!(reference.len(), 3 * SIZE * SIZE, "{case} {image}");
    let mut worst = 0.0f64;
    let mut over_one = 0;
    for c in 0..3 {
        for i in 0..SIZE * SIZE {
            // The reference's value back on the [0, 1] scale.
            let want = f64::from(reference[c * SIZE * SIZE + i]) * std[c] + mean[c];
            let got = f64::from(ours[i * 3 + c]) / 255.0;
            let diff = (want - got).abs() * 255.0;
            worst = worst.max(diff);
            over_one += usize::from(diff > 1.0 + 1e-3);
        }
    }
    (worst, over_one)
}

#[test]
fn non_square_images_get_the_pixels_of_each_models_own_processor() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let out = std::process::Command::new(common::venv_python())
        .arg(repo().join("scripts/preprocess_parity.py"))
        .arg(d)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "scripts/preprocess_parity.py failed (scripts/bootstrap.sh --ref):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut report = Vec::new();
    let (mut worst_pil, mut worst_torchvision, mut worst_order) = (0.0f64, 0.0f64, 0.0f64);
    let (mut over_pil, mut over_torchvision) = (0, 0);
    for case in [
        "hf-clip",
        "hf-clip-pil",
        "hf-clip-256",
        "hf-siglip",
        "hf-siglip-pil",
        "oc-longest",
        "oc-squash",
    ] {
        for image in ["wide", "tall", "photo", "portrait"] {
            let (diff, over) = largest_difference(d, case, image);
            report.push(format!(
                "{case} {image}: largest {diff:.3}/255, {over} values over 1/255"
            ));
            // transformers' default backends resize with torchvision's kernels; the others
            // (and open_clip, on PIL images) with PIL's.
            // torchvision always resizes width first; Pillow (and cliptrain) height first when
            // the height shrinks by over twice as many pixels, as the portrait's does.
            if matches!(case, "hf-clip" | "hf-siglip") && image == "portrait" {
                worst_order = worst_order.max(diff);
                over_torchvision += over;
            } else if matches!(case, "hf-clip" | "hf-siglip") {
                worst_torchvision = worst_torchvision.max(diff);
                over_torchvision += over;
            } else {
                worst_pil = worst_pil.max(diff);
                over_pil += over;
            }
        }
    }
    let report = report.join("\n");
    println!("{report}");
    // Values per case and image: 3 × 224².
    let per = 3 * SIZE * SIZE;
    println!(
        "PIL: {over_pil} of {} values over 1/255; torchvision: {over_torchvision} of {}",
        20 * per,
        8 * per
    );
    // Measured: PIL 2/255 at one value of 3,010,560 (the two passes' fixed-point rounding),
    // 1/255 elsewhere; torchvision 1/255, and 6/255 at 830 of 301,056 portrait values.
    assert!(worst_pil <= 2.0 + 1e-3 && over_pil <= 3, "{report}");
    assert!(worst_torchvision <= 1.0 + 1e-3, "{report}");
    assert!(worst_order <= 8.0 && over_torchvision <= 3000, "{report}");
}
