//! `[data.augment]` (issue 23 part 2): each colour operation, the flip and the erasing against
//! torchvision's functional ops on the same image and parameters (`scripts/augment_parity.py`),
//! within 2/255.
use crate::common;
use cliptrain::data::augment::{
    adjust_brightness, adjust_contrast, adjust_hue, adjust_saturation, grayscale, hflip,
};
use serde_json::json;
use tch::{Kind, Tensor};

const W: usize = 40;
const H: usize = 32;

/// A colourful test image: gradients in each channel plus a hash of the position, so that
/// every hue and saturation, and pixels near 0 and 255, occur.
fn image(k: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(W * H * 3);
    for y in 0..H {
        for x in 0..W {
            let noise = (((x * 31 + y * 17 + k * 7) * 2654435761usize) >> 7) % 64;
            v.push(((x * 255 / (W - 1)) as u8).saturating_add(noise as u8 / 2));
            v.push(((y * 255 / (H - 1)) as u8).wrapping_add((noise * 3) as u8));
            v.push(((x + y) * 255 / (W + H - 2)) as u8 ^ noise as u8);
        }
    }
    v
}

#[test]
fn colour_ops_flips_and_erasing_match_torchvision() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cases = [
        ("brightness", vec![0.6]),
        ("brightness", vec![1.4]),
        ("contrast", vec![0.6]),
        ("contrast", vec![1.4]),
        ("saturation", vec![0.0]),
        ("saturation", vec![1.6]),
        ("hue", vec![-0.1]),
        ("hue", vec![0.07]),
        ("hue", vec![0.5]),
        ("grayscale", vec![]),
        ("hflip", vec![]),
        ("erase", vec![3.0, 5.0, 10.0, 7.0, 122.0, 117.0, 104.0]),
    ];
    let mut inputs = Vec::new();
    let mut ours = Vec::new();
    for (k, (op, args)) in cases.iter().enumerate() {
        let img = image(k);
        let mut out = img.clone();
        let f = args.first().copied().unwrap_or(0.0) as f32;
        match *op {
            "brightness" => adjust_brightness(&mut out, f),
            "contrast" => adjust_contrast(&mut out, f),
            "saturation" => adjust_saturation(&mut out, f),
            "hue" => adjust_hue(&mut out, f),
            "grayscale" => grayscale(&mut out),
            "hflip" => hflip(&mut out, W),
            _ => {
                let a: Vec<usize> = args.iter().map(|v| *v as usize).collect();
                for y in a[0]..a[0] + a[2] {
                    for x in a[1]..a[1] + a[3] {
                        let at = (y * W + x) * 3;
                        out[at..at + 3].copy_from_slice(&[a[4] as u8, a[5] as u8, a[6] as u8]);
                    }
                }
            }
        }
        let t = |v: &[u8]| Tensor::from_slice(v).view([H as i64, W as i64, 3]);
        inputs.push((format!("image_{k}"), t(&img)));
        ours.push((op, args, t(&out), t(&img)));
    }
    Tensor::write_safetensors(&inputs, d.join("cases.safetensors")).unwrap();
    let spec: Vec<_> = cases.iter().map(|(op, a)| json!([op, a])).collect();
    std::fs::write(d.join("cases.json"), json!(spec).to_string()).unwrap();
    common::reference("augment_parity.py", &[d.to_str().unwrap()]);
    let reference: std::collections::HashMap<String, Tensor> =
        Tensor::read_safetensors(d.join("reference.safetensors"))
            .unwrap()
            .into_iter()
            .collect();
    let diff = |a: &Tensor, b: &Tensor| {
        (a.to_kind(Kind::Int64) - b.to_kind(Kind::Int64))
            .abs()
            .max()
            .int64_value(&[])
    };
    let mut worst = 0;
    for (k, (op, args, out, input)) in ours.iter().enumerate() {
        let want = &reference[&format!("image_{k}")];
        let d = diff(out, want);
        worst = worst.max(d);
        assert!(d <= 2, "{op} {args:?}: differs from torchvision by {d}/255");
        // Every case changes the image, so matching is not matching the input.
        assert!(
            diff(want, input) > 2,
            "{op} {args:?} leaves the image as it was"
        );
    }
    eprintln!(
        "augmentation vs torchvision: max |diff| {worst}/255 over {} cases",
        cases.len()
    );
}
