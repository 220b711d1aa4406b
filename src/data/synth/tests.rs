//! Whole-dataset checks on tiny outputs: determinism, shard layout, the held-out split and the
//! pixels themselves.
use super::*;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::Path;

fn tiny(out: &Path, seed: u64, image_size: u32) -> SynthOptions {
    SynthOptions {
        out: out.to_path_buf(),
        train: 200,
        eval: 100,
        image_size,
        seed,
        shard_size: 80,
        ..SynthOptions::default()
    }
}

/// Every sample of a split as key -> (extension -> bytes), in order of appearance.
fn read_split(shards: &[ShardInfo]) -> BTreeMap<String, BTreeMap<String, Vec<u8>>> {
    let mut samples: BTreeMap<String, BTreeMap<String, Vec<u8>>> = BTreeMap::new();
    for shard in shards {
        let mut archive = tar::Archive::new(fs::File::open(&shard.path).unwrap());
        let mut in_shard = BTreeSet::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let name = entry.path().unwrap().display().to_string();
            let (key, ext) = name.split_once('.').unwrap();
            in_shard.insert(key.to_string());
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).unwrap();
            let prev = samples
                .entry(key.to_string())
                .or_default()
                .insert(ext.to_string(), bytes);
            assert!(prev.is_none(), "{name} appears twice");
        }
        assert_eq!(in_shard.len(), shard.samples, "{}", shard.path.display());
    }
    samples
}

fn shard_bytes(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tar"))
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            (name, fs::read(e.path()).unwrap())
        })
        .collect()
}

#[test]
fn same_seed_gives_identical_bytes_and_another_seed_differs() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    for (dir, seed) in dirs.iter().zip([5, 5, 6]) {
        generate(&tiny(dir.path(), seed, 32)).unwrap();
    }
    let [a, b, c] = [0, 1, 2].map(|i| shard_bytes(dirs[i].path()));
    assert_eq!(a.len(), 5, "3 train + 2 eval shards");
    // Plain `assert!`: a byte-vector diff would flood the output.
    assert!(a == b, "same seed gave different shards");
    assert_eq!(a.keys().collect::<Vec<_>>(), c.keys().collect::<Vec<_>>());
    for (name, bytes) in &a {
        assert!(bytes != &c[name], "{name} did not change with the seed");
    }
    // stats.json names its folder in the brace specs; otherwise it is identical too.
    let stats = |d: &Path| {
        let text = fs::read_to_string(d.join("stats.json")).unwrap();
        text.replace(&d.display().to_string(), "DIR")
    };
    assert_eq!(stats(dirs[0].path()), stats(dirs[1].path()));
}

#[test]
fn shards_hold_complete_samples_and_respect_the_held_out_split() {
    let dir = tempfile::tempdir().unwrap();
    let summary = generate(&tiny(dir.path(), 0, 48)).unwrap();
    let classes = class_names(Domain::Shapes);
    let heldout = heldout_names(Domain::Shapes);
    assert_eq!((classes.len(), heldout.len()), (48, 8));

    // Layout: split at 80 samples, final names only, brace spec and side files.
    let counts = |s: &SplitSummary| s.shards.iter().map(|i| i.samples).collect::<Vec<_>>();
    assert_eq!(counts(&summary.train), [80, 80, 40]);
    assert_eq!(counts(&summary.eval), [80, 20]);
    let names: BTreeSet<String> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
    for f in [
        "train-000002.tar",
        "eval-000001.tar",
        "classnames.txt",
        "templates.txt",
    ] {
        assert!(names.contains(f), "{f} missing from {names:?}");
    }
    let spec = dir.path().join("train-{000000..000002}.tar");
    assert_eq!(summary.train.spec, spec.display().to_string());
    let lines = |f: &str| {
        let text = fs::read_to_string(dir.path().join(f)).unwrap();
        text.lines().map(String::from).collect::<Vec<_>>()
    };
    assert_eq!(lines("classnames.txt"), classes);
    assert_eq!(lines("classes_heldout.txt"), heldout);
    assert_eq!(lines("classes_seen.txt").len(), 40);
    assert!(lines("templates.txt").iter().all(|t| t.contains("{}")));
    let stats: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.path().join("stats.json")).unwrap()).unwrap();
    assert_eq!(stats["train"]["spec"], summary.train.spec.as_str());
    assert_eq!(stats["heldout"].as_array().unwrap().len(), 8);

    // Training: jpg + txt only, right size, no held-out combination anywhere in a caption.
    let train = read_split(&summary.train.shards);
    assert_eq!(train.len(), 200);
    let mut words = BTreeSet::new();
    for (key, members) in &train {
        let exts: Vec<&str> = members.keys().map(String::as_str).collect();
        assert_eq!(exts, ["jpg", "txt"], "{key}");
        let img = image::load_from_memory(&members["jpg"]).unwrap();
        assert_eq!((img.width(), img.height()), (48, 48), "{key}");
        let caption = std::str::from_utf8(&members["txt"]).unwrap();
        assert!(
            caption.is_ascii() && caption == caption.to_lowercase(),
            "{caption}"
        );
        for h in &heldout {
            assert!(
                !caption.contains(h.as_str()),
                "{key}: {caption:?} names {h}"
            );
        }
        words.extend(caption.split([' ', ',']).map(String::from));
    }
    for word in COLOURS
        .map(|c| c.0)
        .into_iter()
        .chain(Shape::ALL.map(Shape::name))
    {
        assert!(words.contains(word), "{word} never appears in training");
    }
    assert!(
        summary.train.two_object > 10,
        "{}",
        summary.train.two_object
    );

    // Eval: jpg + txt + cls, labels in range and named by the caption; every class present.
    let eval = read_split(&summary.eval.shards);
    let mut labels = BTreeSet::new();
    for (key, members) in &eval {
        let exts: Vec<&str> = members.keys().map(String::as_str).collect();
        assert_eq!(exts, ["cls", "jpg", "txt"], "{key}");
        let label: usize = std::str::from_utf8(&members["cls"])
            .unwrap()
            .parse()
            .unwrap();
        assert!(label < classes.len(), "{key}: label {label}");
        let caption = std::str::from_utf8(&members["txt"]).unwrap();
        assert!(
            caption.contains(classes[label].as_str()),
            "{key}: {caption:?} vs {label}"
        );
        labels.insert(label);
    }
    assert_eq!(
        labels.len(),
        48,
        "every class, held-out ones included, is in eval"
    );
}

/// Colour distance, max over channels.
fn dist(a: [f32; 3], b: [u8; 3]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y as f32).abs())
        .fold(0.0, f32::max)
}

#[test]
fn drawn_objects_show_their_named_colour_after_jpeg() {
    let side = 64u32;
    for (domain, index) in [Domain::Shapes, Domain::Symbols]
        .into_iter()
        .flat_map(|d| (0..96).map(move |i| (d, i)))
    {
        let mut rng = sample_rng(3, Split::Eval, index);
        let sample = eval_sample(domain, index, side, &mut rng);
        let label = sample.label.unwrap();
        let enc = encode(Split::Eval, index, sample).unwrap();
        let mut rng = sample_rng(3, Split::Eval, index);
        let obj = eval_sample(domain, index, side, &mut rng).objects.remove(0);
        let img = image::load_from_memory(&enc.jpg).unwrap().to_rgb8();
        // Mean over pixels well inside the shape: the pixel and its 4 neighbours all inside.
        let r = obj.size * side as f32 / 2.0;
        let inside = |x: f32, y: f32| {
            obj.shape.contains(
                (x - obj.cx * side as f32) / r,
                (y - obj.cy * side as f32) / r,
            )
        };
        let (mut sum, mut n) = ([0f32; 3], 0);
        for (x, y, px) in img.enumerate_pixels() {
            let (fx, fy) = (x as f32 + 0.5, y as f32 + 0.5);
            let core = [(0.0, 0.0), (1.0, 0.0), (-1.0, 0.0), (0.0, 1.0), (0.0, -1.0)]
                .iter()
                .all(|(dx, dy)| inside(fx + dx, fy + dy));
            if core {
                for (s, c) in sum.iter_mut().zip(px.0) {
                    *s += c as f32;
                }
                n += 1;
            }
        }
        assert!(n >= 4, "sample {index}: only {n} core pixels");
        let mean = sum.map(|s| s / n as f32);
        let (colour, _) = split_label(label);
        let nearest = (0..COLOURS.len())
            .min_by(|&a, &b| dist(mean, COLOURS[a].1).total_cmp(&dist(mean, COLOURS[b].1)))
            .unwrap();
        assert_eq!(
            nearest,
            colour,
            "sample {index} ({}): mean {mean:?} over {n} px",
            label_name(domain, label)
        );
        assert!(
            dist(mean, COLOURS[colour].1) < 40.0,
            "sample {index}: {mean:?}"
        );
    }
}

#[test]
fn training_scenes_never_draw_a_held_out_combination() {
    let seen: Vec<usize> = (0..num_classes()).filter(|&l| !is_heldout(l)).collect();
    let mut pairs = 0;
    for index in 0..1000 {
        let mut rng = sample_rng(11, Split::Train, index);
        let sample = train_sample(Domain::Shapes, &seen, 32, &mut rng);
        pairs += usize::from(sample.objects.len() == 2);
        for obj in &sample.objects {
            // Colour jitter is small, so the nearest palette entry is the colour drawn.
            let rgb = obj.rgb.map(f32::from);
            let colour = (0..COLOURS.len())
                .min_by(|&a, &b| dist(rgb, COLOURS[a].1).total_cmp(&dist(rgb, COLOURS[b].1)))
                .unwrap();
            let shape = Shape::ALL.iter().position(|&s| s == obj.shape).unwrap();
            assert!(!HELDOUT.contains(&(colour, shape)), "train sample {index}");
        }
    }
    assert!(
        (100..300).contains(&pairs),
        "{pairs} two-object scenes in 1000"
    );
}

#[test]
fn rejects_bad_options_and_replaces_stale_shards() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = tiny(dir.path(), 0, 32);
    opts.shard_size = 0;
    assert!(matches!(generate(&opts), Err(SynthError::Options(_))));
    opts.shard_size = 80;
    opts.image_size = 8;
    assert!(matches!(generate(&opts), Err(SynthError::Options(_))));
    opts.image_size = 32;
    generate(&opts).unwrap();
    assert!(dir.path().join("train-000002.tar").exists());
    opts.train = 50;
    let summary = generate(&opts).unwrap();
    assert_eq!(
        summary.train.spec,
        dir.path().join("train-000000.tar").display().to_string()
    );
    assert!(
        !dir.path().join("train-000002.tar").exists(),
        "stale shard left behind"
    );
}

#[test]
fn folder_layout_writes_images_captions_and_an_image_folder() {
    let dir = tempfile::tempdir().unwrap();
    let opts = SynthOptions {
        layout: Layout::Folder,
        domain: Domain::Symbols,
        ..tiny(dir.path(), 5, 32)
    };
    generate(&opts).unwrap();
    let csv = fs::read_to_string(dir.path().join("captions.csv")).unwrap();
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(rows[0], "file,caption");
    assert_eq!(rows.len(), 1 + opts.train);
    for row in &rows[1..] {
        let file = row.split(',').next().unwrap();
        assert!(dir.path().join("images").join(file).is_file(), "{row}");
    }
    let classes = class_names(Domain::Symbols);
    assert!(classes.contains(&"blue star".to_string()));
    let mut eval_files = 0;
    for class in fs::read_dir(dir.path().join("eval")).unwrap() {
        let class = class.unwrap();
        let name = class.file_name().to_string_lossy().replace('_', " ");
        assert!(classes.contains(&name), "{name}");
        eval_files += fs::read_dir(class.path()).unwrap().count();
    }
    assert_eq!(eval_files, opts.eval);
    // A second run into the same folder refuses rather than mixing runs.
    let err = generate(&opts).unwrap_err().to_string();
    assert!(err.contains("already exists"), "{err}");
}
