//! JSON records of lits (configs, plans, splits, checkpoint state, metric logs): one writer
//! and one reader for all of them, so that whatever is written reads back exactly.
//!
//! JSON has no NaN or infinity: serde_json writes them as `null`, which then fails to read
//! back as a number, or reads back as "none". Every write here first walks the value and
//! refuses a non-finite float, naming its field, so such a record is an error when it is
//! written, not when a resumed run reads it. Finite floats read back bit for bit (serde_json's
//! `float_roundtrip`). A record that does not parse is refused naming the field that is
//! wrong (`schedule.best: invalid type: null, expected f64`).

use std::fmt;
use std::io::Write;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::ser::{self, Serialize};

use crate::error::{Error, Result};

/// Refuses a value holding a NaN or infinite float; the message names its field.
pub fn check_finite<T: Serialize + ?Sized>(value: &T) -> std::result::Result<(), String> {
    serde_path_to_error::serialize(value, FiniteCheck).map_err(|e| {
        let path = e.path().to_string();
        let at = if path == "." { String::new() } else { format!("field `{path}`: ") };
        format!("{at}{}", e.inner())
    })
}

/// Compact JSON of `value` (see the module docs for what is refused).
pub fn to_vec<T: Serialize + ?Sized>(value: &T) -> std::result::Result<Vec<u8>, String> {
    check_finite(value)?;
    serde_json::to_vec(value).map_err(|e| e.to_string())
}

/// Indented JSON of `value`, ending in a newline.
pub fn to_vec_pretty<T: Serialize + ?Sized>(value: &T) -> std::result::Result<Vec<u8>, String> {
    check_finite(value)?;
    let mut text = serde_json::to_vec_pretty(value).map_err(|e| e.to_string())?;
    text.push(b'\n');
    Ok(text)
}

/// Parses `bytes`; an error names the field that is wrong.
pub fn from_slice<T: DeserializeOwned>(bytes: &[u8]) -> std::result::Result<T, String> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        if path == "." {
            e.inner().to_string()
        } else {
            format!("{path}: {}", e.inner())
        }
    })?;
    de.end().map_err(|e| e.to_string())?;
    Ok(value)
}

/// Writes `value` to `path` as indented JSON, atomically.
pub fn write<T: Serialize + ?Sized>(path: &Path, value: &T) -> Result<()> {
    let text = to_vec_pretty(value).map_err(|e| Error::invalid(path, format!("cannot be written: {e}")))?;
    crate::atomic::write_atomic(path, &text)
}

/// Reads JSON written by [`write`] (or by a user, for configs).
pub fn read<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    from_slice(&text).map_err(|e| Error::invalid(path, e))
}

/// Appends `value` as one JSON line to `path` and syncs it.
pub fn append_line<T: Serialize + ?Sized>(path: &Path, value: &T) -> Result<()> {
    let mut line = to_vec(value).map_err(|e| Error::invalid(path, format!("cannot be written: {e}")))?;
    line.push(b'\n');
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(|e| Error::io(path, e))?;
    f.write_all(&line).and_then(|_| f.sync_data()).map_err(|e| Error::io(path, e))
}

/// Reads every line of a JSON-lines file (a missing file has none); an error names the line
/// and the field.
pub fn read_lines<T: DeserializeOwned>(path: &Path) -> Result<Vec<T>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(path, e)),
    };
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| from_slice(l.as_bytes()).map_err(|e| Error::invalid(path, format!("line {}: {e}", i + 1))))
        .collect()
}

/// Why [`FiniteCheck`] refused a value.
#[derive(Debug)]
struct NotFinite(String);

impl fmt::Display for NotFinite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NotFinite {}

impl ser::Error for NotFinite {
    fn custom<M: fmt::Display>(msg: M) -> Self {
        NotFinite(msg.to_string())
    }
}

/// A serializer that writes nothing and fails on the first non-finite float.
struct FiniteCheck;

type Check = std::result::Result<(), NotFinite>;

fn float(v: f64) -> Check {
    if v.is_finite() {
        Ok(())
    } else {
        Err(NotFinite(format!("{v} cannot be stored in JSON (only finite numbers can)")))
    }
}

impl ser::Serializer for FiniteCheck {
    type Ok = ();
    type Error = NotFinite;
    type SerializeSeq = FiniteCheck;
    type SerializeTuple = FiniteCheck;
    type SerializeTupleStruct = FiniteCheck;
    type SerializeTupleVariant = FiniteCheck;
    type SerializeMap = FiniteCheck;
    type SerializeStruct = FiniteCheck;
    type SerializeStructVariant = FiniteCheck;

    fn serialize_bool(self, _: bool) -> Check {
        Ok(())
    }
    fn serialize_i8(self, _: i8) -> Check {
        Ok(())
    }
    fn serialize_i16(self, _: i16) -> Check {
        Ok(())
    }
    fn serialize_i32(self, _: i32) -> Check {
        Ok(())
    }
    fn serialize_i64(self, _: i64) -> Check {
        Ok(())
    }
    fn serialize_i128(self, _: i128) -> Check {
        Ok(())
    }
    fn serialize_u8(self, _: u8) -> Check {
        Ok(())
    }
    fn serialize_u16(self, _: u16) -> Check {
        Ok(())
    }
    fn serialize_u32(self, _: u32) -> Check {
        Ok(())
    }
    fn serialize_u64(self, _: u64) -> Check {
        Ok(())
    }
    fn serialize_u128(self, _: u128) -> Check {
        Ok(())
    }
    fn serialize_f32(self, v: f32) -> Check {
        float(f64::from(v))
    }
    fn serialize_f64(self, v: f64) -> Check {
        float(v)
    }
    fn serialize_char(self, _: char) -> Check {
        Ok(())
    }
    fn serialize_str(self, _: &str) -> Check {
        Ok(())
    }
    fn serialize_bytes(self, _: &[u8]) -> Check {
        Ok(())
    }
    fn serialize_none(self) -> Check {
        Ok(())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, v: &T) -> Check {
        v.serialize(self)
    }
    fn serialize_unit(self) -> Check {
        Ok(())
    }
    fn serialize_unit_struct(self, _: &'static str) -> Check {
        Ok(())
    }
    fn serialize_unit_variant(self, _: &'static str, _: u32, _: &'static str) -> Check {
        Ok(())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, _: &'static str, v: &T) -> Check {
        v.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(self, _: &'static str, _: u32, _: &'static str, v: &T) -> Check {
        v.serialize(self)
    }
    fn serialize_seq(self, _: Option<usize>) -> std::result::Result<Self, NotFinite> {
        Ok(self)
    }
    fn serialize_tuple(self, _: usize) -> std::result::Result<Self, NotFinite> {
        Ok(self)
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> std::result::Result<Self, NotFinite> {
        Ok(self)
    }
    fn serialize_tuple_variant(self, _: &'static str, _: u32, _: &'static str, _: usize) -> std::result::Result<Self, NotFinite> {
        Ok(self)
    }
    fn serialize_map(self, _: Option<usize>) -> std::result::Result<Self, NotFinite> {
        Ok(self)
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> std::result::Result<Self, NotFinite> {
        Ok(self)
    }
    fn serialize_struct_variant(self, _: &'static str, _: u32, _: &'static str, _: usize) -> std::result::Result<Self, NotFinite> {
        Ok(self)
    }
}

/// The compound parts of [`FiniteCheck`]: each element goes through the check.
macro_rules! compound {
    ($($trait:ident :: $method:ident ($($name:ty)?)),* $(,)?) => {$(
        impl ser::$trait for FiniteCheck {
            type Ok = ();
            type Error = NotFinite;
            fn $method<T: Serialize + ?Sized>(&mut self, $(_: $name,)? v: &T) -> Check {
                v.serialize(FiniteCheck)
            }
            fn end(self) -> Check {
                Ok(())
            }
        }
    )*};
}

compound!(
    SerializeSeq::serialize_element(),
    SerializeTuple::serialize_element(),
    SerializeTupleStruct::serialize_field(),
    SerializeTupleVariant::serialize_field(),
    SerializeStruct::serialize_field(&'static str),
    SerializeStructVariant::serialize_field(&'static str),
);

impl ser::SerializeMap for FiniteCheck {
    type Ok = ();
    type Error = NotFinite;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, k: &T) -> Check {
        k.serialize(FiniteCheck)
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, v: &T) -> Check {
        v.serialize(FiniteCheck)
    }
    fn end(self) -> Check {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Inner {
        best: Option<f64>,
        lrs: Vec<f32>,
    }

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Outer {
        name: String,
        inner: Inner,
    }

    #[test]
    fn a_non_finite_float_is_refused_naming_its_field() {
        let v = Outer { name: "a".into(), inner: Inner { best: Some(f64::INFINITY), lrs: vec![] } };
        let e = to_vec(&v).unwrap_err();
        assert!(e.contains("field `inner.best`") && e.contains("inf"), "{e}");
        let v = Outer { name: "a".into(), inner: Inner { best: None, lrs: vec![1.0, f32::NAN] } };
        let e = to_vec_pretty(&v).unwrap_err();
        assert!(e.contains("field `inner.lrs[1]`") && e.contains("NaN"), "{e}");
    }

    #[test]
    fn finite_values_read_back_bit_for_bit() {
        // Random bit patterns: serde_json's default float parser reads some of their shortest
        // decimal forms back one unit in the last place off.
        let mut rng = crate::rng::SeededRng::new(11, 0);
        let mut xs = vec![0.1f64, f64::MIN_POSITIVE, 5e-324, f64::MAX, -0.0, 1.0 / 3.0];
        xs.extend((0..20_000).map(|_| f64::from_bits(rng.next_u64())).filter(|x| x.is_finite()));
        for x in xs {
            // An f32 from the f64's low bits: every f32 pattern is reached too.
            let y = f32::from_bits(x.to_bits() as u32);
            let lrs = if y.is_finite() { vec![y] } else { vec![] };
            let v = Outer { name: String::new(), inner: Inner { best: Some(x), lrs: lrs.clone() } };
            let back: Outer = from_slice(&to_vec(&v).unwrap()).unwrap();
            assert_eq!(back.inner.best.unwrap().to_bits(), x.to_bits(), "{x:e}");
            assert_eq!(
                back.inner.lrs.iter().map(|f| f.to_bits()).collect::<Vec<_>>(),
                lrs.iter().map(|f| f.to_bits()).collect::<Vec<_>>(),
                "{y:e}"
            );
        }
    }

    #[test]
    fn a_wrong_field_is_named_when_read() {
        let e = from_slice::<Outer>(br#"{"name": "a", "inner": {"best": "x", "lrs": []}}"#).unwrap_err();
        assert!(e.starts_with("inner.best: invalid type"), "{e}");
        let e = from_slice::<Outer>(br#"{"name": "a", "inner": {"best": null, "lrs": []}} x"#).unwrap_err();
        assert!(e.contains("trailing"), "{e}");
    }

    #[test]
    fn lines_append_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.jsonl");
        assert!(read_lines::<Inner>(&p).unwrap().is_empty());
        let a = Inner { best: Some(0.5), lrs: vec![1.0] };
        append_line(&p, &a).unwrap();
        append_line(&p, &a).unwrap();
        assert_eq!(read_lines::<Inner>(&p).unwrap(), [Inner { best: Some(0.5), lrs: vec![1.0] }, a]);
        let bad = Inner { best: Some(f64::NAN), lrs: vec![] };
        let e = append_line(&p, &bad).unwrap_err().to_string();
        assert!(e.contains("m.jsonl") && e.contains("best"), "{e}");
        assert_eq!(read_lines::<Inner>(&p).unwrap().len(), 2, "a refused record must not be appended");
    }
}
