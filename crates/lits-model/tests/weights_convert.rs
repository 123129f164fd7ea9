//! Weights move between lits and PyTorch: `scripts/convert_weights.py` turns a plain
//! `state_dict` and a Lightning checkpoint of the original into safetensors that lits
//! loads, and lits' files back into both; broken inputs fail with the file named.

mod common;

use std::path::Path;

use lits_model::unet::{UNet3d, UNetConfig};
use lits_model::weights::{load_safetensors, save_safetensors};
use tch::{nn, Device};

fn model() -> (nn::VarStore, UNet3d) {
    let vs = nn::VarStore::new(Device::Cpu);
    let net = UNet3d::new(&vs.root(), &UNetConfig { base_channels: 4, ..Default::default() });
    (vs, net)
}

fn loaded(path: &Path) -> nn::VarStore {
    let (mut vs, _net) = model();
    load_safetensors(&mut vs, path).unwrap();
    vs
}

fn assert_same(a: &nn::VarStore, b: &nn::VarStore) {
    let (a, b) = (a.variables(), b.variables());
    assert_eq!(a.len(), b.len());
    for (name, t) in &a {
        assert!(t.equal(&b[name]), "{name} differs");
    }
}

fn convert(args: &[&str]) {
    common::python("convert_weights.py", args);
}

#[test]
fn pytorch_state_dicts_and_lightning_checkpoints_load_after_conversion() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).to_str().unwrap().to_owned();
    // The reference writes the same seeded weights as safetensors and as PyTorch files.
    common::python("reference/parity.py", &["save", "--base", "4", "--seed", "5", "--out", &p("ref")]);
    let want = loaded(&dir.path().join("ref.safetensors"));

    convert(&["to-safetensors", &p("ref.pt"), &p("plain.safetensors")]);
    assert_same(&want, &loaded(Path::new(&p("plain.safetensors"))));
    convert(&["to-safetensors", &p("ref.ckpt"), &p("ckpt.safetensors")]);
    assert_same(&want, &loaded(Path::new(&p("ckpt.safetensors"))));
}

#[test]
fn lits_weights_go_to_pytorch_and_back_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).to_str().unwrap().to_owned();
    tch::manual_seed(6);
    let (want, _net) = model();
    tch::no_grad(|| {
        for (name, t) in want.variables() {
            if name.ends_with("running_var") || name.ends_with("num_batches_tracked") {
                let _ = t.shallow_clone().fill_(if name.ends_with("var") { 1.5 } else { 9.0 });
            }
        }
    });
    save_safetensors(&want, Path::new(&p("lits.safetensors"))).unwrap();
    convert(&["to-pytorch", &p("lits.safetensors"), &p("back.pt")]);
    convert(&["to-pytorch", &p("lits.safetensors"), &p("back.ckpt"), "--lightning"]);
    convert(&["to-safetensors", &p("back.pt"), &p("again.safetensors")]);
    assert_same(&want, &loaded(Path::new(&p("again.safetensors"))));
    convert(&["to-safetensors", &p("back.ckpt"), &p("again2.safetensors")]);
    assert_same(&want, &loaded(Path::new(&p("again2.safetensors"))));
}

#[test]
fn broken_inputs_fail_naming_the_file_and_leave_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.pt");
    std::fs::write(&bad, b"this is not a pickle").unwrap();
    let out = dir.path().join("out.safetensors");
    let run = std::process::Command::new(common::PYTHON)
        .arg(common::script("convert_weights.py"))
        .args(["to-safetensors", bad.to_str().unwrap(), out.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "{err}");
    assert!(err.contains("bad.pt") && err.contains("cannot read"), "{err}");
    assert!(!err.contains("Traceback"), "{err}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "nothing written");
}
