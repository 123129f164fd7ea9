//! Weights as safetensors files under PyTorch `state_dict` names.
//!
//! A file holds every variable of the var store, BatchNorm running statistics and
//! `num_batches_tracked` included, so `safetensors.torch.load_file` followed by
//! `model.load_state_dict(..., strict=True)` accepts it, and the reverse direction works
//! for the original's weights (`scripts/convert_weights.py` turns `.pt`/`.ckpt` files into
//! safetensors). Loading checks the whole file before it changes anything.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use tch::{nn, Kind, Tensor};

use crate::error::{Error, Result};

/// Key prefix a PyTorch Lightning module puts before the network's own names.
const LIGHTNING_PREFIX: &str = "model.";

/// Writes every variable of `vs` to `path` as safetensors, named as in PyTorch.
///
/// The file is written next to `path` under a temporary name and renamed into place, so a
/// failure leaves no partial file behind.
pub fn save_safetensors(vs: &nn::VarStore, path: &Path) -> Result<()> {
    let named: Vec<(String, Tensor)> = {
        let mut v: Vec<_> =
            vs.variables().into_iter().map(|(name, t)| (name, t.detach().to_device(tch::Device::Cpu).contiguous())).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    let file_name = path.file_name().ok_or_else(|| Error::weights(path, "not a file name"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(file_name);
    tmp_name.push(".partial");
    let tmp = path.with_file_name(tmp_name);
    let written = Tensor::write_safetensors(&named, &tmp)
        .map_err(|e| Error::weights(path, format!("cannot write safetensors: {e}")))
        .and_then(|()| std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e)));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Reads the named tensors of a safetensors file.
pub fn read_safetensors(path: &Path) -> Result<Vec<(String, Tensor)>> {
    if let Err(e) = std::fs::metadata(path) {
        return Err(Error::io(path, e));
    }
    Tensor::read_safetensors(path).map_err(|e| Error::weights(path, format!("not a readable safetensors file: {e}")))
}

fn describe(t: &Tensor) -> String {
    format!("{:?} {:?}", t.kind(), t.size())
}

fn is_float(k: Kind) -> bool {
    matches!(k, Kind::Float | Kind::Double | Kind::Half | Kind::BFloat16)
}

/// Loads `path` into the variables of `vs`.
///
/// Names must match exactly; a file whose names all start with `model.` (a Lightning
/// module's `state_dict`) is accepted with that prefix removed. Floating-point tensors are
/// converted to the variable's precision; integer and float are never mixed. When any name
/// is missing, unexpected or of the wrong shape or kind, nothing is loaded and the error
/// lists every offending name with the expected and found shapes.
pub fn load_safetensors(vs: &mut nn::VarStore, path: &Path) -> Result<()> {
    let mut file: HashMap<String, Tensor> = read_safetensors(path)?.into_iter().collect();
    if !file.is_empty() && file.keys().all(|k| k.starts_with(LIGHTNING_PREFIX)) {
        file = file.into_iter().map(|(k, t)| (k[LIGHTNING_PREFIX.len()..].to_owned(), t)).collect();
    }
    let vars = vs.variables();
    // BTreeMap keeps the report sorted by name.
    let mut problems: BTreeMap<&str, String> = BTreeMap::new();
    for (name, var) in &vars {
        match file.get(name) {
            None => {
                problems.insert(name, format!("missing (expected {})", describe(var)));
            }
            Some(t) if t.size() != var.size() || is_float(t.kind()) != is_float(var.kind()) => {
                problems.insert(name, format!("mis-shaped: expected {}, found {}", describe(var), describe(t)));
            }
            Some(_) => {}
        }
    }
    for (name, t) in &file {
        if !vars.contains_key(name) {
            problems.insert(name, format!("unexpected (found {})", describe(t)));
        }
    }
    if !problems.is_empty() {
        let list: Vec<String> = problems.iter().map(|(n, p)| format!("  {n}: {p}")).collect();
        return Err(Error::weights(
            path,
            format!("weights do not fit the model ({} offending tensor(s)):\n{}", problems.len(), list.join("\n")),
        ));
    }
    tch::no_grad(|| {
        for (name, var) in &vars {
            let src = file[name].to_kind(var.kind()).to_device(var.device());
            var.shallow_clone().f_copy_(&src).map_err(|e| Error::weights(path, format!("{name}: {e}")))?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::unet::{UNet3d, UNetConfig};
    use tch::Device;

    fn small(base: i64) -> (nn::VarStore, UNet3d) {
        let vs = nn::VarStore::new(Device::Cpu);
        let net = UNet3d::new(&vs.root(), &UNetConfig { base_channels: base, ..Default::default() });
        (vs, net)
    }

    #[test]
    fn round_trip_keeps_every_value() {
        tch::manual_seed(1);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        let (vs, _net) = small(2);
        tch::no_grad(|| {
            let _ = vs.variables()["mid.batch_norm_1.running_var"].shallow_clone().fill_(3.5);
            let _ = vs.variables()["mid.batch_norm_1.num_batches_tracked"].shallow_clone().fill_(7);
        });
        save_safetensors(&vs, &path).unwrap();
        let (mut other, _n) = small(2);
        load_safetensors(&mut other, &path).unwrap();
        let (a, b) = (vs.variables(), other.variables());
        for (name, t) in &a {
            assert!(t.equal(&b[name]), "{name} differs");
        }
        assert_eq!(b["mid.batch_norm_1.num_batches_tracked"].kind(), Kind::Int64);
        assert_eq!(b["mid.batch_norm_1.num_batches_tracked"].int64_value(&[]), 7);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary left");
    }

    #[test]
    fn mismatches_are_listed_together_and_nothing_is_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        let (vs, _net) = small(2);
        let mut named: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
        named.retain(|(n, _)| n != "outc.conv_1.bias");
        for (n, t) in named.iter_mut() {
            if n == "mid.conv_1.weight" {
                *t = Tensor::zeros([3, 3], (Kind::Float, Device::Cpu));
            }
        }
        named.push(("extra.weight".into(), Tensor::zeros([2], (Kind::Float, Device::Cpu))));
        Tensor::write_safetensors(&named, &path).unwrap();

        let (mut other, _n) = small(2);
        let before = other.variables()["inc.conv_block_1.conv_1.weight"].copy();
        let e = load_safetensors(&mut other, &path).unwrap_err().to_string();
        assert!(e.contains("3 offending"), "{e}");
        assert!(e.contains("outc.conv_1.bias: missing (expected Float [3])"), "{e}");
        assert!(e.contains("mid.conv_1.weight: mis-shaped: expected Float [8, 8, 3, 3, 3], found Float [3, 3]"), "{e}");
        assert!(e.contains("extra.weight: unexpected"), "{e}");
        assert!(e.contains("w.safetensors"), "{e}");
        assert!(before.equal(&other.variables()["inc.conv_block_1.conv_1.weight"]));
    }

    #[test]
    fn lightning_prefix_is_accepted_and_garbage_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        let (vs, _net) = small(2);
        let named: Vec<(String, Tensor)> = vs.variables().into_iter().map(|(n, t)| (format!("model.{n}"), t)).collect();
        Tensor::write_safetensors(&named, &path).unwrap();
        let (mut other, _n) = small(2);
        load_safetensors(&mut other, &path).unwrap();

        std::fs::write(&path, b"not safetensors").unwrap();
        let e = load_safetensors(&mut other, &path).unwrap_err().to_string();
        assert!(e.contains("w.safetensors") && e.contains("not a readable safetensors"), "{e}");
        let e = load_safetensors(&mut other, &dir.path().join("absent.safetensors")).unwrap_err();
        assert!(matches!(e, Error::Data(lits_data::Error::Io { .. })));
    }
}
