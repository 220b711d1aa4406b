//! The streaming data path on shards these tests write themselves: ordering modes, rank splits,
//! shuffling, exact resume, and every kind of bad input skipped and counted.
use cliptrain::data::buffers::HostMemory;
use cliptrain::data::device::DeviceBatches;
use cliptrain::data::loader::{Batch, Loader, LoaderOptions, Tokenize};
use cliptrain::data::mixture::{Component, SampleStream, TrainShards};
use cliptrain::data::resize::{Interpolation, ResizeRule};
use cliptrain::data::sample::{CaptionDraw, SampleKeys};
use cliptrain::data::spec::{Shard, parse_spec};
use cliptrain::data::stream::{Order, ShardStream, StreamOptions, StreamSample, StreamState};
use cliptrain::data::transform::{Augment, ImageTransform};
use cliptrain::data::{DataError, SkipReason};
use image::ImageEncoder;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

type Members = Vec<(String, Vec<u8>)>;

fn jpeg(seed: u8, w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([seed.wrapping_mul(37), (x * 9) as u8, (y * 7) as u8 ^ seed])
    });
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
        .write_image(img.as_raw(), w, h, image::ExtendedColorType::Rgb8)
        .unwrap();
    out
}

fn good(key: &str, i: u8) -> (String, Members) {
    (
        key.to_string(),
        vec![
            ("jpg".into(), jpeg(i, 24, 20)),
            ("txt".into(), format!("caption of {key}").into_bytes()),
        ],
    )
}

fn write_tar(path: &Path, samples: &[(String, Members)]) {
    let mut b = tar::Builder::new(std::fs::File::create(path).unwrap());
    for (key, members) in samples {
        for (ext, data) in members {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, format!("{key}.{ext}"), data.as_slice())
                .unwrap();
        }
    }
    b.finish().unwrap();
}

/// `n` shards of `per` good samples, keys "s{shard}-{i}".
fn good_shards(dir: &Path, n: usize, per: usize) -> Vec<Shard> {
    (0..n)
        .map(|s| {
            let p = dir.join(format!("good-{s:03}.tar"));
            let samples: Vec<_> = (0..per)
                .map(|i| good(&format!("s{s}-{i:03}"), (s * per + i) as u8))
                .collect();
            write_tar(&p, &samples);
            Shard::File(p.display().to_string())
        })
        .collect()
}

fn opts(order: Order, buffer: usize, seed: u64) -> StreamOptions {
    StreamOptions {
        order,
        shuffle_buffer: buffer,
        seed,
        rank: 0,
        world_size: 1,
    }
}

fn keys(stream: &mut ShardStream, n: usize) -> Vec<String> {
    (0..n)
        .map(|_| {
            stream
                .next_sample()
                .unwrap()
                .expect("endless stream")
                .raw
                .key
        })
        .collect()
}

fn shard_of(key: &str) -> &str {
    key.split('-').next().unwrap()
}

#[test]
fn brace_specs_expand_to_the_files_written() {
    let dir = tempfile::tempdir().unwrap();
    good_shards(dir.path(), 3, 2);
    let spec = format!(
        "{d}/good-{{000..001}}.tar::pipe:cat {d}/good-002.tar",
        d = dir.path().display()
    );
    let shards = parse_spec(&spec).unwrap();
    assert_eq!(shards.len(), 3);
    let mut s = ShardStream::new(shards, opts(Order::Once, 0, 0)).unwrap();
    let mut got = vec![];
    while let Some(x) = s.next_sample().unwrap() {
        got.push(x.raw.key);
    }
    assert_eq!(
        got,
        ["s0-000", "s0-001", "s1-000", "s1-001", "s2-000", "s2-001"],
        "the pipe: shard is read too"
    );
}

#[test]
fn epoch_mode_covers_every_sample_once_per_epoch_in_a_new_shard_order() {
    let dir = tempfile::tempdir().unwrap();
    let shards = good_shards(dir.path(), 6, 4);
    let mut s = ShardStream::new(shards.clone(), opts(Order::Epoch, 0, 3)).unwrap();
    let all = keys(&mut s, 24 * 3);
    let mut orders = vec![];
    for epoch in all.chunks(24) {
        assert_eq!(
            epoch.iter().collect::<BTreeSet<_>>().len(),
            24,
            "each epoch sees every sample once"
        );
        let mut order: Vec<&str> = epoch.iter().map(|k| shard_of(k)).collect();
        order.dedup();
        orders.push(order);
    }
    assert!(
        orders[0] != orders[1] || orders[1] != orders[2],
        "shard order is reshuffled per epoch: {orders:?}"
    );

    let mut again = ShardStream::new(shards.clone(), opts(Order::Epoch, 0, 3)).unwrap();
    assert_eq!(keys(&mut again, 72), all, "deterministic from the seed");
    let mut other = ShardStream::new(shards, opts(Order::Epoch, 0, 4)).unwrap();
    assert_ne!(keys(&mut other, 72), all, "another seed, another order");
}

#[test]
fn resampled_mode_draws_shards_with_replacement() {
    let dir = tempfile::tempdir().unwrap();
    let shards = good_shards(dir.path(), 4, 2);
    let mut s = ShardStream::new(shards.clone(), opts(Order::Resampled, 0, 1)).unwrap();
    let draws: Vec<String> = keys(&mut s, 2 * 400)
        .chunks(2)
        .map(|c| shard_of(&c[0]).to_string())
        .collect();
    // In epoch mode every block of 4 reads is a permutation; with replacement some block repeats a shard.
    assert!(
        draws
            .chunks(4)
            .any(|b| b.iter().collect::<HashSet<_>>().len() < 4)
    );
    let used: HashSet<&String> = draws.iter().collect();
    assert_eq!(used.len(), 4, "all shards get drawn eventually");

    let mut rank1 = ShardStream::new(
        shards,
        StreamOptions {
            rank: 1,
            world_size: 2,
            ..opts(Order::Resampled, 0, 1)
        },
    )
    .unwrap();
    let draws1: Vec<String> = keys(&mut rank1, 40)
        .chunks(2)
        .map(|c| shard_of(&c[0]).to_string())
        .collect();
    assert_ne!(draws1, draws[..20], "ranks draw independently");
}

#[test]
fn ranks_see_disjoint_shards_that_cover_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let shards = good_shards(dir.path(), 5, 3);
    for order in [Order::Once, Order::Epoch] {
        let mut seen: Vec<BTreeSet<String>> = vec![];
        for rank in 0..2 {
            let o = StreamOptions {
                rank,
                world_size: 2,
                ..opts(order, 0, 9)
            };
            let mut s = ShardStream::new(shards.clone(), o).unwrap();
            let n = if rank == 0 { 9 } else { 6 }; // 3 + 2 shards of 3 samples
            seen.push(keys(&mut s, n).into_iter().collect());
        }
        assert!(seen[0].is_disjoint(&seen[1]), "{order:?}");
        assert_eq!(seen[0].len() + seen[1].len(), 15, "{order:?}");
    }
    let err = ShardStream::new(
        shards,
        StreamOptions {
            rank: 0,
            world_size: 6,
            ..opts(Order::Epoch, 0, 0)
        },
    )
    .err()
    .unwrap();
    assert!(
        err.to_string()
            .contains("5 shard(s) cannot be split over 6 ranks"),
        "{err}"
    );
}

#[test]
fn shuffle_buffer_mixes_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let shards = good_shards(dir.path(), 3, 10);
    let mut s = ShardStream::new(shards, opts(Order::Once, 8, 5)).unwrap();
    let mut got = vec![];
    while let Some(x) = s.next_sample().unwrap() {
        got.push(x.raw.key);
    }
    let mut sorted = got.clone();
    sorted.sort();
    assert_eq!(sorted.len(), 30);
    assert_eq!(sorted.iter().collect::<BTreeSet<_>>().len(), 30);
    assert_ne!(got, sorted, "shuffled");
}

#[test]
fn stream_resume_continues_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let mut shards = good_shards(dir.path(), 3, 10);
    shards[1] = Shard::Pipe(format!("cat {}", shards[1].url())); // resume through a pipe: shard too
    for (order, buffer) in [(Order::Epoch, 7), (Order::Resampled, 5), (Order::Epoch, 0)] {
        let reference = keys(
            &mut ShardStream::new(shards.clone(), opts(order, buffer, 11)).unwrap(),
            75,
        );
        for cut in [1, 23, 40] {
            let mut first = ShardStream::new(shards.clone(), opts(order, buffer, 11)).unwrap();
            let mut got = keys(&mut first, cut);
            let json = serde_json::to_string(&first.state()).unwrap();
            drop(first);
            let state: StreamState = serde_json::from_str(&json).unwrap();
            let mut resumed =
                ShardStream::restore(shards.clone(), opts(order, buffer, 11), &state).unwrap();
            got.extend(keys(&mut resumed, 75 - cut));
            assert_eq!(got, reference, "{order:?} buffer {buffer} cut {cut}");
        }
    }
    let mut s = ShardStream::new(shards.clone(), opts(Order::Epoch, 7, 11)).unwrap();
    keys(&mut s, 5);
    let err = ShardStream::restore(shards, opts(Order::Epoch, 7, 12), &s.state())
        .err()
        .unwrap();
    assert!(
        matches!(err, DataError::Resume(_)),
        "a changed seed is refused: {err}"
    );
}

/// Captions as bytes, for tests that need no real tokenizer.
struct ByteTokenizer;
impl Tokenize for ByteTokenizer {
    fn context_length(&self) -> usize {
        16
    }
    fn encode(&self, captions: &[&str]) -> Result<Vec<i64>, String> {
        Ok(captions
            .iter()
            .flat_map(|c| (0..16).map(move |i| c.as_bytes().get(i).map_or(0, |&b| b as i64)))
            .collect())
    }
}

fn loader_opts(batch: usize, augment: Augment) -> LoaderOptions {
    LoaderOptions {
        batch_size: batch,
        transform: ImageTransform {
            size: 16,
            augment,
            max_pixels: 50_000_000,
            seed: 4,
        },
        keys: SampleKeys {
            image: vec!["jpg".into(), "png".into()],
            text: "txt".into(),
            json_caption_field: None,
            label: false,
            all_captions: false,
            image_only: false,
            draw: CaptionDraw::First,
        },
        workers: 2,
        prefetch: 2,
        memory: HostMemory::Pageable,
    }
}

fn batches(loader: &mut Loader, n: usize) -> Vec<Batch> {
    (0..n)
        .map(|_| loader.next_batch().unwrap().expect("batch"))
        .collect()
}

#[test]
fn loader_batches_are_ready_tensors_and_resume_bit_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let shards = good_shards(dir.path(), 3, 9);
    let o = opts(Order::Epoch, 6, 2);
    // Every augmentation on: its draws are a function of the sample's position, so the
    // resumed batches are still bit-exact.
    let train = Augment::Train {
        scale: [0.5, 1.0],
        filter: Interpolation::Bicubic,
        augment: cliptrain::config::AugmentConfig {
            hflip: 0.5,
            color_jitter_prob: 0.8,
            grayscale_prob: 0.2,
            erasing_prob: 0.25,
            ..Default::default()
        },
        fill: [122, 117, 104],
    };
    let mut l = Loader::start(
        ShardStream::new(shards.clone(), o.clone()).unwrap(),
        Arc::new(ByteTokenizer),
        loader_opts(5, train),
    )
    .unwrap();
    let reference = batches(&mut l, 8);
    drop(l);
    let b = &reference[0];
    assert_eq!(b.images.size(), [5, 3, 16, 16]);
    assert_eq!(b.images.kind(), tch::Kind::Uint8);
    assert_eq!(b.tokens.size(), [5, 16]);
    assert_eq!(
        b.tokens.int64_value(&[0, 0]),
        b.captions[0].as_bytes()[0] as i64
    );
    let max = b.images.max().double_value(&[]);
    assert!(max > 0.0, "pixels written: {max}");

    let mut l = Loader::start(
        ShardStream::new(shards.clone(), o.clone()).unwrap(),
        Arc::new(ByteTokenizer),
        loader_opts(5, train),
    )
    .unwrap();
    let head = batches(&mut l, 3);
    let state = head[2].state.clone();
    drop(l);
    let mut l = Loader::start(
        ShardStream::restore(shards, o, &state).unwrap(),
        Arc::new(ByteTokenizer),
        loader_opts(5, train),
    )
    .unwrap();
    for (i, b) in batches(&mut l, 5).iter().enumerate() {
        let r = &reference[3 + i];
        assert_eq!(b.keys, r.keys, "batch {}", 3 + i);
        assert!(
            b.images.equal(&r.images),
            "augmentation resumes identically (batch {})",
            3 + i
        );
        assert!(b.tokens.equal(&r.tokens));
    }
}

fn png_bomb() -> Vec<u8> {
    // A valid 1×1 PNG whose IHDR then claims 30000×30000 (CRC fixed up): a decompression bomb header.
    let mut png = Vec::new();
    image::codecs::png::PngEncoder::new(&mut png)
        .write_image(&[0, 0, 0], 1, 1, image::ExtendedColorType::Rgb8)
        .unwrap();
    png[16..20].copy_from_slice(&30000u32.to_be_bytes());
    png[20..24].copy_from_slice(&30000u32.to_be_bytes());
    let mut crc = flate2::Crc::new();
    crc.update(&png[12..29]);
    png[29..33].copy_from_slice(&crc.sum().to_be_bytes());
    png
}

fn bad_input_shards(dir: &Path) -> Vec<Shard> {
    let m = |pairs: &[(&str, &[u8])]| -> Members {
        pairs
            .iter()
            .map(|(e, b)| (e.to_string(), b.to_vec()))
            .collect()
    };
    let img = jpeg(1, 24, 20);
    let mixed: Vec<(String, Members)> = vec![
        good("a-00", 1),
        (
            "a-01".into(),
            m(&[("jpg", b""), ("txt", b"zero-byte image")]),
        ),
        (
            "a-02".into(),
            m(&[("jpg", b"not a jpeg at all"), ("txt", b"undecodable")]),
        ),
        ("a-03".into(), m(&[("jpg", &img)])),
        ("a-04".into(), m(&[("txt", b"caption without image")])),
        ("a-05".into(), m(&[("jpg", &img), ("txt", b" \n\t ")])),
        (
            "a-06".into(),
            m(&[("jpg", &img), ("txt", &[0xff, 0xfe, 0x41])]),
        ),
        ("a-07".into(), m(&[("png", &png_bomb()), ("txt", b"bomb")])),
        good("a-08", 2),
    ];
    let p = |n: &str| dir.join(n);
    write_tar(&p("mixed.tar"), &mixed);
    // Truncated inside the third sample's image.
    write_tar(
        &p("full.tar"),
        &(0..4)
            .map(|i| good(&format!("t-{i}"), i))
            .collect::<Vec<_>>(),
    );
    let full = std::fs::read(p("full.tar")).unwrap();
    // Bytes of sample i in the tar: image header + padded image + caption header + padded caption.
    let member_len = |i: usize| jpeg(i as u8, 24, 20).len().div_ceil(512) * 512 + 512 + 512 + 512;
    let cut = member_len(0) + member_len(1) + 512 + 100; // two samples, a header, part of the next image
    std::fs::write(p("truncated.tar"), &full[..cut]).unwrap();
    // A corrupt header checksum on the second member of the second sample.
    let mut corrupt = full.clone();
    let at = member_len(0) + jpeg(1, 24, 20).len().div_ceil(512) * 512 + 512;
    corrupt[at + 1] ^= 0x41;
    std::fs::write(p("corrupt.tar"), &corrupt).unwrap();
    ["mixed.tar", "truncated.tar", "corrupt.tar", "missing.tar"]
        .iter()
        .map(|n| Shard::File(p(n).display().to_string()))
        .collect()
}

#[test]
fn every_kind_of_bad_input_is_skipped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let shards = bad_input_shards(dir.path());
    let mut l = Loader::start(
        ShardStream::new(shards, opts(Order::Once, 0, 0)).unwrap(),
        Arc::new(ByteTokenizer),
        loader_opts(3, Augment::Eval(ResizeRule::default())),
    )
    .unwrap();
    let mut keys = vec![];
    let mut last = None;
    while let Some(b) = l.next_batch().unwrap() {
        keys.extend(b.keys.clone());
        last = Some(b.skipped);
    }
    let skipped = last.unwrap();
    // mixed: a-00, a-08; truncated: t-0, t-1 (t-2's image is cut); corrupt: t-0 (t-1's caption
    // header is bad, so t-1 keeps only its image and is counted as missing a caption).
    assert_eq!(
        keys,
        ["a-00", "a-08", "t-0", "t-1", "t-0"],
        "skipped: {skipped}"
    );
    for (reason, n) in [
        (SkipReason::EmptyImage, 1),
        (SkipReason::UndecodableImage, 1),
        (SkipReason::MissingCaption, 2),
        (SkipReason::MissingImage, 1),
        (SkipReason::EmptyCaption, 1),
        (SkipReason::InvalidUtf8, 1),
        (SkipReason::ImageTooLarge, 1),
        (SkipReason::TruncatedMember, 1),
        (SkipReason::CorruptShard, 1),
        (SkipReason::UnreadableShard, 1),
    ] {
        assert_eq!(skipped.get(reason), n, "{reason}: {skipped}");
    }
    assert_eq!(skipped.total(), 11, "{skipped}");
}

#[test]
fn captions_from_a_json_field_and_labels_from_cls() {
    let dir = tempfile::tempdir().unwrap();
    let img = jpeg(3, 24, 20);
    let samples: Vec<(String, Members)> = vec![
        (
            "k0".into(),
            vec![
                ("jpg".into(), img.clone()),
                ("json".into(), br#"{"caption": "from json"}"#.to_vec()),
                ("cls".into(), b"7".to_vec()),
            ],
        ),
        (
            "k1".into(),
            vec![
                ("jpg".into(), img),
                ("json".into(), br#"{"other": 1}"#.to_vec()),
                ("cls".into(), b"2".to_vec()),
            ],
        ),
    ];
    let p = dir.path().join("j.tar");
    write_tar(&p, &samples);
    let mut o = loader_opts(2, Augment::Eval(ResizeRule::default()));
    o.keys.json_caption_field = Some("caption".into());
    o.keys.label = true;
    let mut l = Loader::start(
        ShardStream::new(
            vec![Shard::File(p.display().to_string())],
            opts(Order::Once, 0, 0),
        )
        .unwrap(),
        Arc::new(ByteTokenizer),
        o,
    )
    .unwrap();
    let b = l.next_batch().unwrap().unwrap();
    assert_eq!(b.captions, ["from json"]);
    assert_eq!(b.labels, Some(vec![7]));
    assert_eq!(b.skipped.get(SkipReason::BadJson), 1);
    assert!(l.next_batch().unwrap().is_none());
}

#[test]
fn entirely_bad_data_stops_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let samples: Vec<(String, Members)> = (0..5)
        .map(|i| (format!("n-{i}"), vec![("jpg".into(), jpeg(i, 8, 8))]))
        .collect();
    let mut shards = vec![];
    for s in 0..3 {
        let p = dir.path().join(format!("nocap-{s}.tar"));
        write_tar(&p, &samples);
        shards.push(Shard::File(p.display().to_string()));
    }
    for order in [Order::Epoch, Order::Resampled, Order::Once] {
        let mut l = Loader::start(
            ShardStream::new(shards.clone(), opts(order, 4, 0)).unwrap(),
            Arc::new(ByteTokenizer),
            loader_opts(4, Augment::Eval(ResizeRule::default())),
        )
        .unwrap();
        let err = l
            .next_batch()
            .err()
            .unwrap_or_else(|| panic!("{order:?}: expected an error"));
        let msg = err.to_string();
        assert!(
            msg.contains("no usable sample") && msg.contains("missing_caption"),
            "{order:?}: {msg}"
        );
    }
    let missing: Vec<Shard> = (0..2)
        .map(|i| {
            Shard::File(
                PathBuf::from(format!("/no/such/{i}.tar"))
                    .display()
                    .to_string(),
            )
        })
        .collect();
    let mut l = Loader::start(
        ShardStream::new(missing, opts(Order::Epoch, 4, 0)).unwrap(),
        Arc::new(ByteTokenizer),
        loader_opts(4, Augment::Eval(ResizeRule::default())),
    )
    .unwrap();
    let msg = l.next_batch().err().unwrap().to_string();
    assert!(
        msg.contains("no shard yielded any sample") && msg.contains("unreadable_shard"),
        "{msg}"
    );
}

#[test]
fn recycled_batch_buffers_never_overwrite_a_batch_still_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let shards = good_shards(dir.path(), 2, 8);
    let mut l = Loader::start(
        ShardStream::new(shards, opts(Order::Epoch, 4, 1)).unwrap(),
        Arc::new(ByteTokenizer),
        loader_opts(4, Augment::Eval(ResizeRule::default())),
    )
    .unwrap();
    let held = l.next_batch().unwrap().unwrap();
    let held_copy = held.images.copy();
    let viewed = l.next_batch().unwrap().unwrap();
    let viewed_copy = viewed.images.copy();
    let view = viewed.images.narrow(0, 1, 2); // a view keeps the storage alive too
    drop(viewed);
    for _ in 0..12 {
        // Dropped at once, so their buffers are recycled.
        l.next_batch().unwrap().unwrap();
    }
    assert!(
        held.images.equal(&held_copy),
        "a buffer still held by a batch was reused"
    );
    assert!(
        view.equal(&viewed_copy.narrow(0, 1, 2)),
        "a buffer still referenced by a view was reused"
    );
}

/// The copy-ahead wrapper hands out the loader's batches in order, each with the stream state
/// the loader attached to it (so a checkpoint saved after training on batch k resumes at batch
/// k + 1), and ends with the stream: its last batch first, then `None`.
#[test]
fn device_batches_keep_each_batch_paired_with_its_stream_state() {
    let dir = tempfile::tempdir().unwrap();
    let shards = good_shards(dir.path(), 3, 9);
    let o = opts(Order::Epoch, 6, 2);
    let train = Augment::Train {
        scale: [0.5, 1.0],
        filter: Interpolation::Bicubic,
        augment: Default::default(),
        fill: [0; 3],
    };
    let start = |stream: ShardStream| {
        Loader::start(stream, Arc::new(ByteTokenizer), loader_opts(5, train)).unwrap()
    };
    let mut plain = start(ShardStream::new(shards.clone(), o.clone()).unwrap());
    let reference = batches(&mut plain, 8);
    drop(plain);

    let mut ahead = DeviceBatches::new(
        start(ShardStream::new(shards.clone(), o.clone()).unwrap()),
        tch::Device::Cpu,
    );
    for (i, r) in reference.iter().take(4).enumerate() {
        let b = ahead.next_batch().unwrap().expect("batch");
        assert_eq!(b.keys, r.keys, "batch {i}");
        assert_eq!(b.state, r.state, "batch {i} carries its own state");
        assert!(b.images.equal(&r.images) && b.tokens.equal(&r.tokens));
    }
    drop(ahead); // one batch was already fetched ahead: it must not leak into the state

    // Resuming from the state of the 4th batch trained on continues at the 5th.
    let state = reference[3].state.clone();
    let mut resumed = DeviceBatches::new(
        start(ShardStream::restore(shards.clone(), o, &state).unwrap()),
        tch::Device::Cpu,
    );
    for (i, r) in reference.iter().enumerate().skip(4) {
        let b = resumed.next_batch().unwrap().expect("batch");
        assert_eq!(b.keys, r.keys, "resumed batch {i}");
        assert_eq!(b.state, r.state, "resumed batch {i}");
        assert!(b.images.equal(&r.images), "resumed batch {i}");
    }

    // A single pass of 27 samples: five full batches, a partial one, then the end, every time.
    let mut once = DeviceBatches::new(
        start(ShardStream::new(shards, opts(Order::Once, 0, 0)).unwrap()),
        tch::Device::Cpu,
    );
    let sizes: Vec<i64> = std::iter::from_fn(|| once.next_batch().unwrap())
        .map(|b| b.images.size()[0])
        .collect();
    assert_eq!(sizes, [5, 5, 5, 5, 5, 2]);
    assert!(once.next_batch().unwrap().is_none());
}

/// `n` shards of `per` good samples in `dir/<prefix>/`, keys "{prefix}{shard}-{i}".
fn prefixed_shards(dir: &Path, prefix: &str, n: usize, per: usize) -> Vec<Shard> {
    let dir = dir.join(prefix);
    std::fs::create_dir_all(&dir).unwrap();
    (0..n)
        .map(|s| {
            let p = dir.join(format!("{s:03}.tar"));
            let samples: Vec<_> = (0..per)
                .map(|i| good(&format!("{prefix}{s}-{i:03}"), (s * per + i) as u8))
                .collect();
            write_tar(&p, &samples);
            Shard::File(p.display().to_string())
        })
        .collect()
}

#[test]
fn a_three_to_one_mixture_draws_three_quarters_from_the_first_source_and_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let sources = TrainShards::Mixture(vec![
        Component {
            name: "a".into(),
            shards: prefixed_shards(dir.path(), "a", 4, 6),
            weight: 3.0,
        },
        Component {
            name: "b".into(),
            shards: prefixed_shards(dir.path(), "b", 3, 5),
            weight: 1.0,
        },
    ]);
    let o = opts(Order::Resampled, 4, 7);
    let train = Augment::Train {
        scale: [0.5, 1.0],
        filter: Interpolation::Bicubic,
        augment: Default::default(),
        fill: [0; 3],
    };
    let start = |state: Option<&StreamState>| {
        let stream = SampleStream::open(&sources, o.clone(), state).unwrap();
        Loader::start(stream, Arc::new(ByteTokenizer), loader_opts(8, train)).unwrap()
    };
    let reference = batches(&mut start(None), 40);
    let keys: Vec<&String> = reference.iter().flat_map(|b| &b.keys).collect();
    let from_a = keys.iter().filter(|k| k.starts_with('a')).count();
    let share = from_a as f64 / keys.len() as f64;
    eprintln!(
        "{from_a} of {} samples from source a ({share:.3})",
        keys.len()
    );
    assert!(
        (share - 0.75).abs() <= 0.03,
        "share of the first source {share}"
    );
    // Both sources are interleaved, not taken in runs.
    assert!(
        reference[..4]
            .iter()
            .any(|b| b.keys.iter().any(|k| k.starts_with('b')))
    );

    // Stopped after batch 13 and resumed (through JSON, as a checkpoint would) ...
    let json = serde_json::to_string(&reference[12].state).unwrap();
    let state: StreamState = serde_json::from_str(&json).unwrap();
    assert_eq!(state.sources.len(), 2, "{json}");
    let resumed = batches(&mut start(Some(&state)), 10);
    for (i, b) in resumed.iter().enumerate() {
        let r = &reference[13 + i];
        assert_eq!(b.keys, r.keys, "batch {}", 13 + i);
        assert!(
            b.images.equal(&r.images),
            "augmentation of batch {}",
            13 + i
        );
    }
    // ... but not as a single stream, nor with other weights.
    let single = TrainShards::Single(prefixed_shards(dir.path(), "c", 2, 3));
    assert!(SampleStream::open(&single, o.clone(), Some(&state)).is_err());
    let TrainShards::Mixture(mut reweighted) = sources.clone() else {
        unreachable!()
    };
    reweighted[1].weight = 2.0;
    let err = SampleStream::open(&TrainShards::Mixture(reweighted), o.clone(), Some(&state))
        .err()
        .unwrap();
    assert!(matches!(err, DataError::Resume(_)), "{err}");
}

fn sample(stream: &mut ShardStream) -> StreamSample {
    stream.next_sample().unwrap().expect("endless stream")
}

/// Streams of a job of `world` ranks continuing `old` (the states of every old rank), each
/// through a JSON round trip as a checkpoint would.
fn resized(
    shards: &[Shard],
    o: &StreamOptions,
    old: &[StreamState],
    world: usize,
) -> Vec<ShardStream> {
    (0..world)
        .map(|rank| {
            let o = StreamOptions {
                rank,
                world_size: world,
                ..o.clone()
            };
            let state =
                SampleStream::resized(&TrainShards::Single(shards.to_vec()), &o, old, 9).unwrap();
            let state: StreamState =
                serde_json::from_str(&serde_json::to_string(&state).unwrap()).unwrap();
            ShardStream::restore(shards.to_vec(), o, &state).unwrap()
        })
        .collect()
}

/// Epoch mode, with a shuffle buffer: a job stopped mid-epoch and resumed with another number
/// of ranks — and changed again in the middle of draining — reads every sample of the epoch
/// exactly once, then continues with the next epoch; a stop during the drain resumes exactly.
#[test]
fn an_elastic_resume_reads_the_rest_of_the_epoch_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let shards = good_shards(dir.path(), 6, 4);
    let o = opts(Order::Epoch, 3, 5);
    let all: Vec<String> = (0..6)
        .flat_map(|s| (0..4).map(move |i| format!("s{s}-{i:03}")))
        .collect();
    for (from, to, again, cut) in [(2, 3, 2, 5), (2, 1, 3, 7), (1, 2, 1, 10), (3, 2, 4, 1)] {
        let case = format!("{from} -> {to} -> {again} ranks, {cut} samples each first");
        // (key, epoch) of every sample read, by whichever rank of whichever job.
        let mut seen: BTreeMap<(String, u64), u32> = BTreeMap::new();
        let mut note =
            |s: &StreamSample| *seen.entry((s.raw.key.clone(), s.pos.epoch)).or_default() += 1;
        let old: Vec<StreamState> = (0..from)
            .map(|rank| {
                let mut s = ShardStream::new(
                    shards.clone(),
                    StreamOptions {
                        rank,
                        world_size: from,
                        ..o.clone()
                    },
                )
                .unwrap();
                (0..cut).for_each(|_| note(&sample(&mut s)));
                s.state()
            })
            .collect();
        let mut middle = resized(&shards, &o, &old, to);
        let mut states = vec![];
        for s in &mut middle {
            note(&sample(s));
            states.push(s.state());
        }
        // A stop in the middle of the drain, resumed with the same number of ranks, is exact.
        let mut twin = ShardStream::restore(
            shards.clone(),
            StreamOptions {
                rank: 0,
                world_size: to,
                ..o.clone()
            },
            &states[0],
        )
        .unwrap();
        for _ in 0..12 {
            let (a, b) = (sample(&mut middle[0]), sample(&mut twin));
            assert_eq!((a.raw.key, a.pos), (b.raw.key, b.pos), "{case}");
        }
        // A second change of the world size in the middle of the drain.
        for mut s in resized(&shards, &o, &states, again) {
            let mut own_epochs = vec![];
            for _ in 0..40 {
                let x = sample(&mut s);
                if !x.pos.carried {
                    own_epochs.push(x.pos.epoch);
                }
                note(&x);
            }
            // After the drain, the rank goes on with an epoch after every one it drained (the
            // next one, or the one after when the middle job had started reading it).
            let first = *own_epochs.first().expect("the drain ends");
            assert!(
                first == 1 || first == 2,
                "{case}: continues at epoch {first}"
            );
            assert!(own_epochs.iter().all(|e| *e >= first), "{case}");
        }
        for key in &all {
            assert_eq!(seen.get(&(key.clone(), 0)), Some(&1), "{case}: {key}");
        }
        let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
        assert!(twice.is_empty(), "{case}: read twice {twice:?}");
    }
}

#[test]
fn an_elastic_resume_in_resampled_mode_re_derives_each_rank_deterministically() {
    let dir = tempfile::tempdir().unwrap();
    let shards = good_shards(dir.path(), 5, 4);
    let o = opts(Order::Resampled, 4, 5);
    let old: Vec<StreamState> = (0..2)
        .map(|rank| {
            let mut s = ShardStream::new(
                shards.clone(),
                StreamOptions {
                    rank,
                    world_size: 2,
                    ..o.clone()
                },
            )
            .unwrap();
            keys(&mut s, 7);
            s.state()
        })
        .collect();
    let run = |old: &[StreamState]| -> Vec<Vec<String>> {
        resized(&shards, &o, old, 3)
            .iter_mut()
            .map(|s| keys(s, 20))
            .collect()
    };
    let a = run(&old);
    assert_eq!(a, run(&old), "deterministic");
    assert_ne!(a[0], a[1], "ranks draw differently");
    // A changed seed is still refused.
    let other = opts(Order::Resampled, 4, 6);
    let single = TrainShards::Single(shards.clone());
    let err = SampleStream::resized(&single, &other, &old, 9)
        .err()
        .unwrap();
    assert!(matches!(err, DataError::Resume(_)), "{err}");

    // A mixture too: every source re-derived, and the new state resumes exactly.
    let mixture = TrainShards::Mixture(vec![
        Component {
            name: "a".into(),
            shards: prefixed_shards(dir.path(), "a", 3, 4),
            weight: 2.0,
        },
        Component {
            name: "b".into(),
            shards: prefixed_shards(dir.path(), "b", 2, 4),
            weight: 1.0,
        },
    ]);
    let ranked = |rank, world| StreamOptions {
        rank,
        world_size: world,
        ..o.clone()
    };
    let old: Vec<StreamState> = (0..2)
        .map(|rank| {
            let mut m = SampleStream::open(&mixture, ranked(rank, 2), None).unwrap();
            for _ in 0..9 {
                m.next_sample().unwrap().unwrap();
            }
            m.state()
        })
        .collect();
    let state = SampleStream::resized(&mixture, &ranked(0, 1), &old, 9).unwrap();
    let twice = SampleStream::resized(&mixture, &ranked(0, 1), &old, 9).unwrap();
    assert_eq!(state, twice, "deterministic");
    assert_eq!(state.sources.len(), 2);
    let draw = |m: &mut SampleStream| m.next_sample().unwrap().unwrap().raw.key;
    let mut m = SampleStream::open(&mixture, ranked(0, 1), Some(&state)).unwrap();
    let head: Vec<String> = (0..6).map(|_| draw(&mut m)).collect();
    assert!(head.iter().any(|k| k.starts_with('a')), "{head:?}");
    let mut again = SampleStream::open(&mixture, ranked(0, 1), Some(&m.state())).unwrap();
    for _ in 0..10 {
        assert_eq!(draw(&mut m), draw(&mut again));
    }
}
