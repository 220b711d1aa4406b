//! A tiny CLIP_benchmark-layout tree made from a synthetic eval shard, as
//! `clip_benchmark_export_wds` lays it out: classification (webp and png images, `.cls`, two
//! test shards and a train split), retrieval (`.txt` with two captions per image) and
//! multilabel (`.npy` multi-hot vectors).
use cliptrain::data::tarstream::{SampleReader, TarEvent};
use cliptrain::data::writer::ShardWriter;
use std::path::Path;

type Members = Vec<(String, Vec<u8>)>;
/// A sample to write: key and `(extension, bytes)` members.
type Row = (String, Vec<(&'static str, Vec<u8>)>);

fn read_samples(shard: &Path) -> Vec<(String, Members)> {
    let mut r = SampleReader::new(std::fs::File::open(shard).unwrap());
    let mut out = Vec::new();
    while let Some(ev) = r.next_event() {
        if let TarEvent::Sample(s) = ev {
            out.push((s.key, s.members));
        }
    }
    out
}

fn get<'a>(m: &'a Members, ext: &str) -> &'a [u8] {
    &m.iter().find(|(e, _)| e == ext).unwrap().1
}

/// The jpg re-encoded losslessly, so every decoder sees the very same pixels.
fn reencode(jpg: &[u8], format: image::ImageFormat) -> Vec<u8> {
    let img = image::load_from_memory(jpg).unwrap().to_rgb8();
    let mut out = std::io::Cursor::new(Vec::new());
    match format {
        image::ImageFormat::WebP => {
            image::codecs::webp::WebPEncoder::new_lossless(&mut out)
                .encode(
                    img.as_raw(),
                    img.width(),
                    img.height(),
                    image::ExtendedColorType::Rgb8,
                )
                .unwrap();
        }
        _ => img.write_to(&mut out, format).unwrap(),
    }
    out.into_inner()
}

/// `split/0.tar ..` with `per_shard` samples each, and `split/nshards.txt`.
fn write_split(dir: &Path, rows: &[Row], per_shard: usize) {
    std::fs::create_dir_all(dir).unwrap();
    let chunks: Vec<_> = rows.chunks(per_shard).collect();
    for (i, chunk) in chunks.iter().enumerate() {
        let tmp = dir.join(format!("w{i}"));
        std::fs::create_dir_all(&tmp).unwrap();
        let mut w = ShardWriter::new(&tmp, "s", usize::MAX).unwrap();
        for (key, members) in chunk.iter() {
            let m: Vec<(&str, &[u8])> = members.iter().map(|(e, b)| (*e, b.as_slice())).collect();
            w.write(key, &m).unwrap();
        }
        w.finish().unwrap();
        std::fs::rename(
            tmp.join(ShardWriter::shard_name("s", 0)),
            dir.join(format!("{i}.tar")),
        )
        .unwrap();
        std::fs::remove_dir_all(tmp).unwrap();
    }
    std::fs::write(dir.join("nshards.txt"), format!("{}\n", chunks.len())).unwrap();
}

/// From `syn/eval-000000.tar`, `syn/classnames.txt` and `syn/templates.txt` in `d`:
/// `bench/cls` (classification), `bench/ret` (retrieval), `bench/ml` (multilabel: each image's
/// own class and the next one are positive).
pub fn build(d: &Path) {
    let samples = read_samples(&d.join("syn/eval-000000.tar"));
    let classnames = std::fs::read_to_string(d.join("syn/classnames.txt")).unwrap();
    let classes = classnames.lines().count();
    let templates: String = std::fs::read_to_string(d.join("syn/templates.txt"))
        .unwrap()
        .replace("{}", "{c}");
    let bench = d.join("bench");
    for set in ["cls", "ml"] {
        std::fs::create_dir_all(bench.join(set)).unwrap();
        std::fs::write(bench.join(set).join("classnames.txt"), &classnames).unwrap();
        let t = bench
            .join(set)
            .join("zeroshot_classification_templates.txt");
        std::fs::write(t, &templates).unwrap();
    }
    let cls: Vec<Row> = samples
        .iter()
        .enumerate()
        .map(|(i, (_, m))| {
            let (ext, format) = if i % 2 == 0 {
                ("webp", image::ImageFormat::WebP)
            } else {
                ("png", image::ImageFormat::Png)
            };
            let image = reencode(get(m, "jpg"), format);
            (
                format!("s{i:07}"),
                vec![(ext, image), ("cls", get(m, "cls").to_vec())],
            )
        })
        .collect();
    write_split(&bench.join("cls/test"), &cls, cls.len().div_ceil(2));
    write_split(&bench.join("cls/train"), &cls[..4], 4);

    let ret: Vec<Row> = samples
        .iter()
        .enumerate()
        .map(|(i, (_, m))| {
            let caption = String::from_utf8(get(m, "txt").to_vec()).unwrap();
            let txt = format!("{}\na picture.\n", caption.trim()).into_bytes();
            (
                format!("s{i:07}"),
                vec![("jpg", get(m, "jpg").to_vec()), ("txt", txt)],
            )
        })
        .collect();
    write_split(&bench.join("ret/test"), &ret, ret.len());
    std::fs::write(bench.join("ret/dataset_type.txt"), "retrieval\n").unwrap();

    let ml: Vec<Row> = samples
        .iter()
        .enumerate()
        .map(|(i, (_, m))| {
            let label: usize = String::from_utf8_lossy(get(m, "cls"))
                .trim()
                .parse()
                .unwrap();
            let mut hot = vec![0f32; classes];
            hot[label] = 1.0;
            hot[(label + 1) % classes] = 1.0;
            let npy = cliptrain::eval::npy::write_f32_vector(&hot);
            (
                format!("s{i:07}"),
                vec![("jpg", get(m, "jpg").to_vec()), ("npy", npy)],
            )
        })
        .collect();
    write_split(&bench.join("ml/test"), &ml, ml.len());
    std::fs::write(bench.join("ml/dataset_type.txt"), "multilabel\n").unwrap();
}
