//! Checkpoints: one safetensors file holding the model's variables (`model.<name>`, the
//! original's Lightning naming), the optimiser's state (`optim.<name>.<slot>`) and, in the
//! header's metadata, everything else a resumed run needs as JSON.
//!
//! Written atomically (temporary file, fsync, rename, directory fsync): a run killed at
//! any moment leaves either the previous checkpoint or the new one, never a torn file.
//! Before the rename the temporary file is read back and decoded, and its state and tensors
//! compared with what was meant to be written: a checkpoint that `--resume` could not read
//! is an error when it is written, and the previous one stays in place.

use std::collections::HashMap;
use std::path::Path;

use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use serde::{de::DeserializeOwned, Serialize};
use tch::{Kind, Tensor};

use crate::error::{Error, Result};

const STATE_KEY: &str = "lits_state";

/// Named tensors plus a JSON state, as stored.
#[derive(Debug)]
pub struct Checkpoint<S> {
    /// Tensors by name.
    pub tensors: Vec<(String, Tensor)>,
    /// The rest of the state.
    pub state: S,
}

fn dtype(kind: Kind) -> Result<Dtype> {
    Ok(match kind {
        Kind::Float => Dtype::F32,
        Kind::Double => Dtype::F64,
        Kind::Int64 => Dtype::I64,
        Kind::Int => Dtype::I32,
        Kind::Uint8 => Dtype::U8,
        k => return Err(Error::Checkpoint(format!("cannot store tensors of kind {k:?}"))),
    })
}

fn kind(dtype: Dtype) -> Option<Kind> {
    Some(match dtype {
        Dtype::F32 => Kind::Float,
        Dtype::F64 => Kind::Double,
        Dtype::I64 => Kind::Int64,
        Dtype::I32 => Kind::Int,
        Dtype::U8 => Kind::Uint8,
        _ => return None,
    })
}

/// Raw little-endian bytes of a tensor on the CPU.
pub fn tensor_bytes(t: &Tensor) -> Vec<u8> {
    let t = t.to_device(tch::Device::Cpu).contiguous();
    let numel = t.numel();
    let mut buf = vec![0u8; numel * t.kind().elt_size_in_bytes()];
    t.copy_data_u8(&mut buf, numel);
    buf
}

/// Serialises tensors and state into the bytes of one safetensors file.
pub fn to_bytes<S: Serialize>(tensors: &[(String, Tensor)], state: &S) -> Result<Vec<u8>> {
    let bytes: Vec<(String, Vec<u8>, Dtype, Vec<usize>)> = tensors
        .iter()
        .map(|(n, t)| Ok((n.clone(), tensor_bytes(t), dtype(t.kind())?, t.size().iter().map(|&d| d as usize).collect())))
        .collect::<Result<_>>()?;
    let views = bytes
        .iter()
        .map(|(n, b, d, s)| {
            TensorView::new(*d, s.clone(), b).map(|v| (n.clone(), v)).map_err(|e| Error::Checkpoint(format!("tensor {n}: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let json = lits_data::json::to_vec(state).map_err(|e| Error::Checkpoint(format!("the training state cannot be stored: {e}")))?;
    let json = String::from_utf8(json).map_err(|e| Error::Checkpoint(e.to_string()))?;
    let meta = HashMap::from([(STATE_KEY.to_owned(), json)]);
    safetensors::serialize(views, Some(meta)).map_err(|e| Error::Checkpoint(e.to_string()))
}

/// Writes a checkpoint atomically, after reading it back and comparing (module docs).
pub fn save<S: Serialize + DeserializeOwned>(path: &Path, tensors: &[(String, Tensor)], state: &S) -> Result<()> {
    let bytes = to_bytes(tensors, state)?;
    lits_data::atomic::write_atomic_checked(path, &bytes, |tmp| {
        let written = std::fs::read(tmp).map_err(|e| lits_data::Error::io(tmp, e))?;
        verify(path, &written, &bytes, tensors, state).map_err(|e| lits_data::Error::invalid(path, format!("{e:#}")))
    })?;
    Ok(())
}

/// Checks that `written` (a checkpoint's file, read back) holds `bytes` and decodes to
/// `state` and `tensors`.
fn verify<S: Serialize + DeserializeOwned>(
    path: &Path,
    written: &[u8],
    bytes: &[u8],
    tensors: &[(String, Tensor)],
    state: &S,
) -> Result<()> {
    let failed = |msg: String| Error::Checkpoint(format!("written but not read back as written ({msg}); the previous checkpoint is kept"));
    if written != bytes {
        return Err(failed(format!("{} of {} bytes on disk", written.len(), bytes.len())));
    }
    let back: Checkpoint<S> = decode(path, written).map_err(|e| failed(e.to_string()))?;
    let want = lits_data::json::to_vec(state).map_err(failed)?;
    let got = lits_data::json::to_vec(&back.state).map_err(failed)?;
    if want != got {
        return Err(failed(format!("state reads back as {} instead of {}", String::from_utf8_lossy(&got), String::from_utf8_lossy(&want))));
    }
    if back.tensors.len() != tensors.len() {
        return Err(failed(format!("{} tensors instead of {}", back.tensors.len(), tensors.len())));
    }
    for (name, t) in tensors {
        let same = back
            .tensors
            .iter()
            .find(|(n, _)| n == name)
            .is_some_and(|(_, b)| b.kind() == t.kind() && b.size() == t.size() && tensor_bytes(b) == tensor_bytes(t));
        if !same {
            return Err(failed(format!("tensor {name} differs")));
        }
    }
    Ok(())
}

/// Reads a checkpoint written by [`save`]; a state that does not fit names its field.
pub fn load<S: DeserializeOwned>(path: &Path) -> Result<Checkpoint<S>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    decode(path, &bytes)
}

fn decode<S: DeserializeOwned>(path: &Path, bytes: &[u8]) -> Result<Checkpoint<S>> {
    let bad = |msg: String| Error::invalid(path, format!("not a lits checkpoint: {msg}"));
    let (_, meta) = SafeTensors::read_metadata(bytes).map_err(|e| bad(e.to_string()))?;
    let json = meta.metadata().as_ref().and_then(|m| m.get(STATE_KEY)).ok_or_else(|| bad(format!("no `{STATE_KEY}` metadata")))?;
    let state = lits_data::json::from_slice(json.as_bytes()).map_err(|e| bad(format!("state field {e}")))?;
    let st = SafeTensors::deserialize(bytes).map_err(|e| bad(e.to_string()))?;
    let mut tensors = st
        .tensors()
        .into_iter()
        .map(|(name, v)| {
            let k = kind(v.dtype()).ok_or_else(|| bad(format!("tensor {name} has unsupported dtype {:?}", v.dtype())))?;
            let shape = v
                .shape()
                .iter()
                .map(|&d| i64::try_from(d).map_err(|_| bad(format!("tensor {name} has a dimension of {d}"))))
                .collect::<Result<Vec<i64>>>()?;
            let t = Tensor::f_from_data_size(v.data(), &shape, k).map_err(|e| bad(format!("tensor {name}: {e}")))?;
            Ok((name, t))
        })
        .collect::<Result<Vec<_>>>()?;
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(Checkpoint { tensors, state })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct St {
        epoch: u32,
        note: String,
    }

    #[test]
    fn round_trips_tensors_and_state_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.ckpt");
        let a = Tensor::randn([3, 4], (Kind::Float, tch::Device::Cpu));
        let b = Tensor::from_slice(&[7i64]);
        let st = St { epoch: 3, note: "x".into() };
        save(&p, &[("model.a".into(), a.shallow_clone()), ("model.b".into(), b.shallow_clone())], &st).unwrap();
        let c: Checkpoint<St> = load(&p).unwrap();
        assert_eq!(c.state, st);
        assert_eq!(c.tensors[0].0, "model.a");
        assert_eq!(tensor_bytes(&c.tensors[0].1), tensor_bytes(&a));
        assert_eq!(c.tensors[1].1.int64_value(&[0]), 7);
    }

    #[test]
    fn a_torn_file_is_refused_with_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.ckpt");
        let st = St { epoch: 1, note: String::new() };
        let bytes = to_bytes(&[("w".into(), Tensor::ones([100], (Kind::Float, tch::Device::Cpu)))], &st).unwrap();
        std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
        let e = load::<St>(&p).unwrap_err().to_string();
        assert!(e.contains("c.ckpt") && e.contains("not a lits checkpoint"), "{e}");
    }

    #[test]
    fn a_state_that_does_not_read_back_is_refused_when_written_and_the_earlier_checkpoint_kept() {
        #[derive(Debug, serde::Serialize, serde::Deserialize)]
        struct Lopsided {
            #[serde(rename(serialize = "written", deserialize = "read"))]
            x: u32,
        }
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.ckpt");
        let w = || vec![("w".to_owned(), Tensor::ones([4], (Kind::Float, tch::Device::Cpu)))];
        save(&p, &w(), &St { epoch: 1, note: "earlier".into() }).unwrap();
        let before = std::fs::read(&p).unwrap();
        let e = save(&p, &w(), &Lopsided { x: 2 }).unwrap_err().to_string();
        assert!(e.contains("c.ckpt") && e.contains("read") && e.contains("previous checkpoint is kept"), "{e}");
        assert_eq!(std::fs::read(&p).unwrap(), before);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "a temporary file was left");
    }

    #[test]
    fn an_unreadable_state_names_its_field() {
        // The failure of every poly-schedule run before `Schedule::best` became an Option:
        // a `null` where a number is expected.
        #[derive(Debug, serde::Serialize)]
        struct Written {
            epoch: Option<u32>,
            note: String,
        }
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.ckpt");
        let bytes =
            to_bytes(&[("w".into(), Tensor::ones([1], (Kind::Float, tch::Device::Cpu)))], &Written { epoch: None, note: String::new() })
                .unwrap();
        std::fs::write(&p, bytes).unwrap();
        let e = load::<St>(&p).unwrap_err().to_string();
        assert!(e.contains("c.ckpt") && e.contains("state field epoch: invalid type: null"), "{e}");
    }

    #[test]
    fn a_tensor_dimension_past_i64_is_refused_naming_it() {
        // Empty (so the file holds it in 0 bytes), but libtorch cannot take the dimension.
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.ckpt");
        let view = TensorView::new(Dtype::F32, vec![0, 1 << 63], &[]).unwrap();
        let meta = HashMap::from([(STATE_KEY.to_owned(), r#"{"epoch":1,"note":""}"#.to_owned())]);
        std::fs::write(&p, safetensors::serialize([("w", view)], Some(meta)).unwrap()).unwrap();
        let e = load::<St>(&p).unwrap_err().to_string();
        assert!(e.contains("c.ckpt") && e.contains("tensor w has a dimension of 9223372036854775808"), "{e}");
    }
}
