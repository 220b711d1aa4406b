//! PyTorch `torch.save` files (issue 22, part 1): written by torch in the reference venv, read
//! by cliptrain without Python, compared bit for bit with what `torch.load(weights_only=True)`
//! gives; hostile and damaged files refused by name with nothing run.
use crate::common::{self, hub_server::fixtures};
use cliptrain::interop::torch_file;
use std::path::Path;
use tch::Tensor;

/// Writes the test files into `dir`: each `NAME.bin` beside `NAME.safetensors`, the tensors
/// torch itself loads from it (made contiguous, since safetensors stores no strides).
const WRITE: &str = r#"
import os, sys, zipfile, collections, torch
from safetensors.torch import save_file
d = sys.argv[1]
g = torch.Generator().manual_seed(0)
base = torch.randn(6, 8, generator=g)
cases = {
    "dtypes": {"f32": torch.randn(3, 4, generator=g), "f16": torch.randn(5, generator=g).half(),
               "bf16": torch.randn(2, 3, generator=g).bfloat16(), "f64": torch.randn(2, generator=g).double(),
               "i64": torch.arange(7), "i32": torch.arange(3, dtype=torch.int32),
               "u8": torch.arange(9, dtype=torch.uint8), "bool": torch.tensor([True, False]),
               "scalar": torch.tensor(2.5), "empty": torch.zeros(0, 4)},
    # Views of one storage: a transpose, an offset slice, a strided column, the whole.
    "shared": collections.OrderedDict([("whole", base), ("t", base.t()), ("rows", base[2:5]),
               ("col", base[:, 3]), ("every_other", base[::2, 1::3])]),
    # A training checkpoint: the state dict nested, DDP's prefix, other entries beside it.
    "nested": {"epoch": 3, "name": "run", "state_dict": {"module.a.weight": torch.randn(2, 2, generator=g),
               "module.b.bias": torch.randn(3, generator=g)},
               "optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "params": [0, 1]}]}},
    # nn.Module.state_dict(): an OrderedDict with _metadata; parameters as Parameters.
    "module": torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3)).state_dict(),
    "parameters": {"p": torch.nn.Parameter(torch.randn(4, generator=g)), "q": torch.nn.Parameter(torch.randn(2, 2, generator=g).half(), requires_grad=False)},
}
for name, obj in cases.items():
    path = os.path.join(d, name + ".bin")
    torch.save(obj, path)
    loaded = torch.load(path, weights_only=True)
    if "state_dict" in loaded:
        loaded = {k[len("module."):]: v for k, v in loaded["state_dict"].items()}
    save_file({k: v.contiguous().clone() for k, v in loaded.items()}, os.path.join(d, name + ".safetensors"))
# A pickle whose __reduce__ would run a command.
class Exploit:
    def __reduce__(self):
        return (os.system, ("touch " + os.path.join(d, "EXPLOITED"),))
torch.save({"w": torch.zeros(2), "x": Exploit()}, os.path.join(d, "exploit.bin"))
assert not os.path.exists(os.path.join(d, "EXPLOITED"))
# Damaged copies: cut short; a storage entry with fewer bytes than its tensor needs.
data = open(os.path.join(d, "dtypes.bin"), "rb").read()
open(os.path.join(d, "cut.bin"), "wb").write(data[: len(data) // 2])
with zipfile.ZipFile(os.path.join(d, "dtypes.bin")) as src, zipfile.ZipFile(os.path.join(d, "short.bin"), "w") as dst:
    for info in src.infolist():
        body = src.read(info)
        dst.writestr(info, body[: len(body) // 2] if info.filename.endswith("/data/0") else body)
# The legacy (pre-1.6) format.
torch.save({"w": torch.zeros(2)}, os.path.join(d, "legacy.bin"), _use_new_zipfile_serialization=False)
# A Hugging Face folder with PyTorch weights: the fixture's safetensors, saved by torch.
from safetensors.torch import load_file
hf = sys.argv[2]
os.makedirs(os.path.join(d, "hf-bin"))
for f in os.listdir(hf):
    if f != "model.safetensors":
        open(os.path.join(d, "hf-bin", f), "wb").write(open(os.path.join(hf, f), "rb").read())
torch.save(load_file(os.path.join(hf, "model.safetensors")), os.path.join(d, "hf-bin", "pytorch_model.bin"))
# An OpenCLIP folder whose weights are an OpenCLIP training checkpoint (DDP names, nested).
oc = sys.argv[3]
os.makedirs(os.path.join(d, "oc-bin"))
for f in os.listdir(oc):
    if f != "open_clip_model.safetensors":
        open(os.path.join(d, "oc-bin", f), "wb").write(open(os.path.join(oc, f), "rb").read())
sd = {"module." + k: v for k, v in load_file(os.path.join(oc, "open_clip_model.safetensors")).items()}
torch.save({"epoch": 32, "name": "run", "state_dict": sd}, os.path.join(d, "oc-bin", "open_clip_pytorch_model.bin"))
# Weights files named directly: an OpenCLIP training checkpoint and a fine-tuned HF state dict
# beside their folders' own weights (every value doubled, so which was read shows); one alone.
torch.save({"epoch": 2, "name": "run", "state_dict": {k: v * 2 for k, v in sd.items()},
            "optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "params": [0]}]}},
           os.path.join(d, "oc-bin", "epoch_2.pt"))
hf_sd = load_file(os.path.join(hf, "model.safetensors"))
torch.save({k: v * 2 for k, v in hf_sd.items()}, os.path.join(d, "hf-bin", "finetuned.pth"))
os.makedirs(os.path.join(d, "lone"))
torch.save(hf_sd, os.path.join(d, "lone", "finetuned.pt"))
"#;

/// The test files, written once for every test here.
fn written() -> &'static Path {
    static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let d = tempfile::tempdir().unwrap();
        let out = std::process::Command::new(common::venv_python())
            .args(["-c", WRITE])
            .arg(d.path())
            .arg(fixtures().join("hf"))
            .arg(fixtures().join("openclip"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        d
    })
    .path()
}

fn sorted(mut t: Vec<(String, Tensor)>) -> Vec<(String, Tensor)> {
    t.sort_by(|a, b| a.0.cmp(&b.0));
    t
}

/// Same names, dtypes, shapes and bytes.
fn assert_identical(ours: Vec<(String, Tensor)>, torch: Vec<(String, Tensor)>, what: &str) {
    let (ours, torch) = (sorted(ours), sorted(torch));
    let names = |t: &[(String, Tensor)]| t.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(names(&ours), names(&torch), "{what}");
    for ((name, a), (_, b)) in ours.iter().zip(&torch) {
        assert_eq!(a.kind(), b.kind(), "{what}: {name}");
        assert_eq!(a.size(), b.size(), "{what}: {name}");
        // torch.equal: same shape and every element equal (no NaN among these).
        assert!(a.equal(b), "{what}: {name}");
    }
}

#[test]
fn torch_save_files_load_bit_identical_to_torch_weights_only() {
    let d = written();
    for case in ["dtypes", "shared", "nested", "module", "parameters"] {
        let ours = torch_file::read(&d.join(format!("{case}.bin"))).unwrap();
        let torch = Tensor::read_safetensors(d.join(format!("{case}.safetensors"))).unwrap();
        assert_identical(ours, torch, case);
    }
    // Views keep sharing their storage, as torch loads them.
    let shared = torch_file::read(&d.join("shared.bin")).unwrap();
    let ptr = |n: &str| shared.iter().find(|(k, _)| k == n).unwrap().1.data_ptr() as usize;
    assert_eq!(ptr("whole"), ptr("t"));
    assert_eq!(ptr("rows"), ptr("whole") + 2 * 8 * 4);
}

#[test]
fn hostile_damaged_and_legacy_files_are_refused_by_name_and_run_nothing() {
    let d = written();
    let err = |name: &str| torch_file::read(&d.join(name)).unwrap_err().to_string();
    let e = err("exploit.bin");
    assert!(
        e.contains("exploit.bin") && e.contains("posix.system") && e.contains("nothing was run"),
        "{e}"
    );
    assert!(!d.join("EXPLOITED").exists());
    let e = err("cut.bin");
    assert!(e.contains("cut.bin") && e.contains("damaged"), "{e}");
    let e = err("short.bin");
    assert!(e.contains("short.bin") && e.contains("bytes"), "{e}");
    let e = err("legacy.bin");
    assert!(
        e.contains("legacy.bin") && e.contains("PyTorch before 1.6"),
        "{e}"
    );
}

/// `cliptrain export hf` of `folder` into a fresh folder: its tensors.
fn exported(folder: &Path) -> Vec<(String, Tensor)> {
    let out = tempfile::tempdir().unwrap();
    let to = out.path().join("hf");
    common::ok(common::cliptrain(
        &[
            "export",
            "hf",
            "--checkpoint",
            folder.to_str().unwrap(),
            "--out",
            to.to_str().unwrap(),
        ],
        out.path(),
    ));
    Tensor::read_safetensors(to.join("model.safetensors")).unwrap()
}

#[test]
fn folders_with_pytorch_weights_open_like_their_safetensors_twins() {
    let d = written();
    let original = Tensor::read_safetensors(fixtures().join("hf/model.safetensors")).unwrap();
    assert_identical(exported(&d.join("hf-bin")), original, "hf-bin");
    assert_identical(
        exported(&d.join("oc-bin")),
        exported(&fixtures().join("openclip")),
        "oc-bin",
    );
}

/// `--checkpoint FILE.pt`: that file read with its folder's config instead of the folder's own
/// weights; a file without a config beside it, or one that is no weights file, refused by name.
#[test]
fn a_weights_file_named_directly_is_read_with_its_folders_config() {
    let d = written();
    let doubled = |named: &str, folder: &str| {
        let ours = sorted(exported(&d.join(named)));
        let base = sorted(exported(&d.join(folder)));
        assert_eq!(ours.len(), base.len(), "{named}");
        for ((n, a), (_, b)) in ours.iter().zip(&base) {
            assert!(a.equal(&(b * 2)), "{named}: {n} is not the named file's");
        }
    };
    doubled("oc-bin/epoch_2.pt", "oc-bin");
    doubled("hf-bin/finetuned.pth", "hf-bin");

    let refused = |path: &Path| {
        let out = common::cliptrain(
            &[
                "export",
                "hf",
                "--checkpoint",
                path.to_str().unwrap(),
                "--out",
                "x",
            ],
            d,
        );
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let e = refused(&d.join("lone/finetuned.pt"));
    assert!(
        e.contains("lone/finetuned.pt")
            && e.contains("open_clip_config.json")
            && e.contains("params.txt"),
        "{e}"
    );
    let e = refused(&d.join("hf-bin/config.json"));
    assert!(e.contains("config.json: not a weights file"), "{e}");
}
