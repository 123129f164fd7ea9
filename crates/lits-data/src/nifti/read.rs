//! Voxel decoding: stored values (any supported datatype, either byte order) scaled as
//! nibabel's `get_fdata(dtype=float32)` does (in f64, then rounded to f32), and moved from
//! NIfTI's file order (first index fastest) into a standard-layout `Array3` indexed
//! `[i, j, k]`, in one parallel pass.

use std::path::Path;

use ndarray::Array3;
use rayon::prelude::*;

use super::geometry::Geometry;
use super::header::{ByteOrder, Datatype, Header};
use super::source::{self, Loaded};
use crate::buffer::populated_buffer;
use crate::{Error, Image, Labels, Result, Volume};

/// One stored value type: its size and how to decode it from bytes.
trait Stored: Copy + Send + Sync {
    const SIZE: usize;
    fn load(b: &[u8], big: bool) -> Self;
    /// The value with its bytes reversed (a big-endian value read as little-endian).
    fn swap(self) -> Self;
    fn to_f64(self) -> f64;
}

macro_rules! stored {
    ($($t:ty),*) => {$(
        impl Stored for $t {
            const SIZE: usize = std::mem::size_of::<$t>();
            #[inline(always)]
            fn load(b: &[u8], big: bool) -> Self {
                let a = b[..Self::SIZE].try_into().expect("element bytes");
                if big { <$t>::from_be_bytes(a) } else { <$t>::from_le_bytes(a) }
            }
            #[inline(always)]
            fn swap(self) -> Self { <$t>::from_ne_bytes({ let mut b = self.to_ne_bytes(); b.reverse(); b }) }
            #[inline(always)]
            fn to_f64(self) -> f64 { self as f64 }
        }
    )*};
}
stored!(u8, i8, u16, i16, u32, i32, f32, f64);

/// Run `transpose_map` into `$out` for the stored type of `$dt`, mapping each value (as
/// f64) with `$f`.
macro_rules! dispatch {
    ($dt:expr, $big:expr, $raw:expr, $shape:expr, $out:expr, $f:expr) => {{
        let f = $f;
        let (big, raw, shape, out) = ($big, $raw, $shape, $out);
        match $dt {
            Datatype::U8 => transpose_map(raw, shape, big, |v: u8| f(v.to_f64()), out),
            Datatype::I8 => transpose_map(raw, shape, big, |v: i8| f(v.to_f64()), out),
            Datatype::U16 => transpose_map(raw, shape, big, |v: u16| f(v.to_f64()), out),
            Datatype::I16 => transpose_map(raw, shape, big, |v: i16| f(v.to_f64()), out),
            Datatype::U32 => transpose_map(raw, shape, big, |v: u32| f(v.to_f64()), out),
            Datatype::I32 => transpose_map(raw, shape, big, |v: i32| f(v.to_f64()), out),
            Datatype::F32 => transpose_map(raw, shape, big, |v: f32| f(v.to_f64()), out),
            Datatype::F64 => transpose_map(raw, shape, big, |v: f64| f(v), out),
        }
    }};
}

/// How to read an image.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReadOptions {
    /// Replace NaN and infinite voxels with this value instead of refusing the file.
    pub replace_non_finite: Option<f32>,
    /// Keep NaN and infinite voxels as they are (for inspecting a file); wins over
    /// `replace_non_finite`.
    pub keep_non_finite: bool,
}

/// Read a scan as f32 with `scl_slope`/`scl_inter` applied; refuses NaN or infinite voxels.
pub fn read_image(path: &Path) -> Result<(Image, Geometry)> {
    read_image_with(path, &ReadOptions::default())
}

/// [`read_image`] with options (replacing NaN and infinite voxels).
pub fn read_image_with(path: &Path, opts: &ReadOptions) -> Result<(Image, Geometry)> {
    let (img, header) = read_image_and_header(path, opts)?;
    Ok((img, header.geometry))
}

/// [`read_image_with`], returning the whole checked header.
pub fn read_image_and_header(path: &Path, opts: &ReadOptions) -> Result<(Image, Header)> {
    // The output buffer's pages are faulted in on the other core while the voxels decompress.
    let (loaded, mut data) = source::load_with(path, 4, |h| populated_buffer::<f32>(h.voxels() as usize))?;
    let h = &loaded.header;
    decode_f32(&loaded, &mut data);
    if may_be_non_finite(h) && !opts.keep_non_finite {
        let (count, first) = count_non_finite(&data);
        if count > 0 {
            match opts.replace_non_finite {
                Some(v) => data.par_iter_mut().filter(|x| !x.is_finite()).for_each(|x| *x = v),
                None => {
                    let s = h.shape;
                    let first = [first / (s[1] * s[2]), first / s[2] % s[1], first % s[2]];
                    return Err(Error::NonFinite { path: path.into(), count, first });
                }
            }
        }
    }
    let img = into_volume(data, h);
    Ok((img, loaded.header))
}

/// Read a label map as u8; refuses a value (after scaling) that is not an integer 0..=255.
pub fn read_labels(path: &Path) -> Result<(Labels, Geometry)> {
    let (loaded, mut data) = source::load_with(path, 1, |h| populated_buffer::<u8>(h.voxels() as usize))?;
    let h = &loaded.header;
    if h.datatype == Datatype::U8 && h.scaling().is_none() {
        transpose_map(loaded.data(), h.shape, false, |v: u8| v, &mut data);
    } else {
        check_labels(path, &loaded)?;
        let big = h.byte_order == ByteOrder::Big;
        let (slope, inter) = scaling_f64(h);
        dispatch!(h.datatype, big, loaded.data(), h.shape, &mut data, |v: f64| (v * slope + inter) as f32 as u8);
    }
    Ok((into_volume(data, h), h.geometry.clone()))
}

/// Read and check only the header of `path` (the checks that need no voxels included).
pub fn read_header(path: &Path) -> Result<Header> {
    Ok(source::load(path, false, 0)?.header)
}

fn into_volume<T>(data: Vec<T>, h: &Header) -> Volume<T> {
    let data = Array3::from_shape_vec(h.shape, data).expect("decoded buffer matches the header's shape");
    Volume { data, spacing: h.geometry.spacing(), affine: h.geometry.affine }
}

/// Whether scaled voxels can be NaN or infinite: floats can be anything; integers only when
/// the scaling takes an extreme of their type beyond f32's range.
fn may_be_non_finite(h: &Header) -> bool {
    let (lo, hi) = match h.datatype {
        Datatype::F32 | Datatype::F64 => return true,
        Datatype::U8 => (0.0, 255.0),
        Datatype::I8 => (-128.0, 127.0),
        Datatype::U16 => (0.0, 65535.0),
        Datatype::I16 => (-32768.0, 32767.0),
        Datatype::U32 => (0.0, 4294967295.0),
        Datatype::I32 => (-2147483648.0, 2147483647.0),
    };
    let (s, i) = scaling_f64(h);
    [lo, hi].iter().any(|&v| !((v * s + i) as f32).is_finite())
}

/// Slope and intercept in f64 (identity when the header asks for no scaling).
fn scaling_f64(h: &Header) -> (f64, f64) {
    h.scaling().map_or((1.0, 0.0), |(s, i)| (f64::from(s), f64::from(i)))
}

/// The scaled voxels as f32 in standard layout, into `out`.
fn decode_f32(loaded: &Loaded, out: &mut [f32]) {
    let h = &loaded.header;
    let big = h.byte_order == ByteOrder::Big;
    let (raw, shape) = (loaded.data(), h.shape);
    match h.scaling() {
        // Without scaling every stored type converts to f32 directly, as numpy's astype.
        None => match h.datatype {
            Datatype::U8 => transpose_map(raw, shape, big, |v: u8| v as f32, out),
            Datatype::I8 => transpose_map(raw, shape, big, |v: i8| v as f32, out),
            Datatype::U16 => transpose_map(raw, shape, big, |v: u16| v as f32, out),
            Datatype::I16 => transpose_map(raw, shape, big, |v: i16| v as f32, out),
            Datatype::U32 => transpose_map(raw, shape, big, |v: u32| v as f32, out),
            Datatype::I32 => transpose_map(raw, shape, big, |v: i32| v as f32, out),
            Datatype::F32 => transpose_map(raw, shape, big, |v: f32| v, out),
            Datatype::F64 => transpose_map(raw, shape, big, |v: f64| v as f32, out),
        },
        Some((s, i)) => {
            let (s, i) = (f64::from(s), f64::from(i));
            // nibabel skips a multiply by 1 and an add of 0; so do we (it matters for -0.0).
            match (s == 1.0, i == 0.0) {
                (true, _) => dispatch!(h.datatype, big, raw, shape, out, |v: f64| (v + i) as f32),
                (_, true) => dispatch!(h.datatype, big, raw, shape, out, |v: f64| (v * s) as f32),
                _ => dispatch!(h.datatype, big, raw, shape, out, |v: f64| (v * s + i) as f32),
            }
        }
    }
}

/// Decode each stored `T` of `raw` (file order: `i` fastest, then `j`, then `k`), map it
/// with `f` and write it into `out` in C order (`k` fastest). Each thread fills blocks of
/// `IB` rows of `i`. Within a block, for each `j` and tile of `KT` values of `k`, the tile
/// is gathered from `KT` contiguous runs of `IB` source values (decoded and mapped there,
/// where the compiler can vectorise) into a small buffer that stays in L1, then written out
/// as `IB` contiguous runs of `KT` values. Tile sizes measured on a 512x512x200 int16
/// volume (docs/benchmarks.md).
fn transpose_map<T, O, F>(raw: &[u8], shape: [usize; 3], big: bool, f: F, out: &mut [O])
where
    T: Stored,
    O: Copy + Default + Send,
    F: Fn(T) -> O + Sync,
{
    let n = shape.iter().product::<usize>();
    assert_eq!(out.len(), n, "output buffer matches the shape");
    assert_eq!(raw.len(), n * T::SIZE, "voxel bytes match the shape");
    // Whether the stored values must be byte-swapped after a native load.
    let swap = big != cfg!(target_endian = "big");
    // SAFETY: every Stored type is a plain integer or float, valid for any bit pattern.
    match unsafe { raw.align_to::<T>() } {
        // The usual case: the values are aligned for plain loads, which vectorise.
        ([], src, []) if swap => tiles(src, shape, |x: T| f(x.swap()), out),
        ([], src, []) => tiles(src, shape, f, out),
        // Bytes at an offset that is not a multiple of the value size (rare): decode them
        // into an aligned copy first.
        _ => {
            let src: Vec<T> = raw.par_chunks_exact(T::SIZE).map(|b| T::load(b, big)).collect();
            tiles(&src, shape, f, out)
        }
    }
}

/// Tile sizes of [`transpose_map`]: `IB` values of `i` read as one run, `KT` values of `k`
/// written as one run.
const IB: usize = 16;
const KT: usize = 16;

/// [`transpose_map`] over typed stored values.
// Index loops over the tile: they compile to the vectorised code measured.
#[allow(clippy::needless_range_loop)]
fn tiles<T, O, F>(src: &[T], shape: [usize; 3], f: F, out: &mut [O])
where
    T: Copy + Sync,
    O: Copy + Default + Send,
    F: Fn(T) -> O + Sync,
{
    let [nx, ny, nz] = shape;
    let row = ny * nz;
    if row == 0 || nx == 0 {
        return;
    }
    out.par_chunks_mut(IB * row).enumerate().for_each(|(blk, chunk)| {
        let i0 = blk * IB;
        let ib = chunk.len() / row;
        let mut tile = [[O::default(); IB]; KT];
        for j in 0..ny {
            for k0 in (0..nz).step_by(KT) {
                let kt = (k0 + KT).min(nz) - k0;
                for dk in 0..kt {
                    let base = i0 + nx * (j + ny * (k0 + dk));
                    let run = &src[base..base + ib];
                    for di in 0..ib {
                        tile[dk][di] = f(run[di]);
                    }
                }
                for di in 0..ib {
                    let start = di * row + j * nz + k0;
                    let dst = &mut chunk[start..start + kt];
                    for dk in 0..kt {
                        dst[dk] = tile[dk][di];
                    }
                }
            }
        }
    });
}

/// How many values are NaN or infinite, and the flat index of the first.
fn count_non_finite(data: &[f32]) -> (usize, usize) {
    let count = data.par_iter().filter(|v| !v.is_finite()).count();
    let first = if count > 0 { data.iter().position(|v| !v.is_finite()).unwrap_or(0) } else { 0 };
    (count, first)
}

/// Refuse a label file holding a value that is not an integer 0..=255 after scaling.
fn check_labels(path: &Path, loaded: &Loaded) -> Result<()> {
    let h = &loaded.header;
    let big = h.byte_order == ByteOrder::Big;
    let (slope, inter) = scaling_f64(h);
    let size = h.datatype.size();
    let value = |b: &[u8]| -> f64 {
        let v = match h.datatype {
            Datatype::U8 => b[0].to_f64(),
            Datatype::I8 => i8::load(b, big).to_f64(),
            Datatype::U16 => u16::load(b, big).to_f64(),
            Datatype::I16 => i16::load(b, big).to_f64(),
            Datatype::U32 => u32::load(b, big).to_f64(),
            Datatype::I32 => i32::load(b, big).to_f64(),
            Datatype::F32 => f32::load(b, big).to_f64(),
            Datatype::F64 => f64::load(b, big),
        };
        // As nibabel's get_fdata(dtype=float32) would hand it over.
        f64::from((v * slope + inter) as f32)
    };
    let ok = |v: f64| v.fract() == 0.0 && (0.0..=255.0).contains(&v);
    let bad = loaded.data().par_chunks_exact(size).filter(|b| !ok(value(b))).count();
    if bad == 0 {
        return Ok(());
    }
    let (pos, v) =
        loaded.data().chunks_exact(size).enumerate().map(|(p, b)| (p, value(b))).find(|&(_, v)| !ok(v)).expect("a bad value was counted");
    let [nx, ny, _] = h.shape;
    Err(Error::invalid(
        path,
        format!("{bad} voxel(s) are not integer labels 0..=255 (first: {v} at [{}, {}, {}])", pos % nx, pos / nx % ny, pos / (nx * ny)),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transpose_map_puts_file_order_into_c_order() {
        // Shapes that leave partial blocks and tiles (i or k not a multiple of 16); both byte
        // orders; bytes aligned for u32 (typed loads) and one byte off (decoded from bytes).
        for shape in [[3, 4, 5], [17, 2, 33], [1, 1, 1], [40, 3, 2], [16, 5, 16], [33, 1, 47]] {
            let [nx, ny, nz] = shape;
            for big in [false, true] {
                for offset in [0, 1] {
                    let mut raw = vec![0u8; offset];
                    for v in 0..(nx * ny * nz) as u32 {
                        raw.extend(if big { v.to_be_bytes() } else { v.to_le_bytes() });
                    }
                    let mut out = vec![0u32; nx * ny * nz];
                    transpose_map(&raw[offset..], shape, big, |v: u32| v, &mut out);
                    for i in 0..nx {
                        for j in 0..ny {
                            for k in 0..nz {
                                assert_eq!(out[(i * ny + j) * nz + k] as usize, i + nx * (j + ny * k), "{shape:?} {big} {offset}");
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn stored_values_decode_in_both_byte_orders() {
        assert_eq!(i16::load(&[0x01, 0x80], false), -32767);
        assert_eq!(i16::load(&[0x80, 0x01], true), -32767);
        assert_eq!(f32::load(&1.5f32.to_be_bytes(), true), 1.5);
        assert_eq!(u32::load(&7u32.to_le_bytes(), false), 7);
    }
}
