//! The training store: the cases a run cuts patches from, held in memory or read from the
//! prepared-case cache ([`crate::cache`]) one window at a time.
//!
//! The 131 LiTS volumes are about 30 GB as float32, more than a training machine should
//! hold beside the network. A case on disk keeps only what the sampler needs to choose a
//! patch: its shape, the smallest raw intensity of its prepared image and a strided list of
//! its foreground voxels, all recorded when the cache was built, so opening the store reads
//! no voxel. The voxels of a patch are read when it is cut, row by row with positioned reads
//! of the case's `.npy` files, so resident memory is bounded by the patches in flight, not
//! by the dataset. (Memory-mapping the files would read them implicitly, but mapped pages
//! count as the process's resident memory.) Each read opens the file anew, so hundreds of
//! cases hold no file descriptors, and checks it is still the size and age it was when the
//! store was opened: a case redone or cut short under a running training is an error naming
//! the file, never a patch of another case's voxels.
//!
//! Both stores give the same values bit for bit. Normalisation is elementwise, so a block
//! read raw, padded with the raw minimum and then normalised equals the block of the image
//! normalised whole, padded with the normalised raw minimum; the normaliser is monotone, so
//! that is also the normalised image's minimum, the padding the sampler always used.

use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;

use ndarray::Array3;
use serde::{Deserialize, Serialize};

use crate::crop::{overlap, padded_block, Overlap};
use crate::intensity::Normaliser;
use crate::{Error, Image, Labels, Result, Volume};

/// Foreground voxels kept per class and case to centre patches on (evenly strided).
pub const FOREGROUND_PER_CLASS: usize = 10_000;

/// The classes patches are centred on: liver, then tumor.
pub const FOREGROUND_CLASSES: [u8; 2] = [1, 2];

/// Where a run keeps its training cases.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreKind {
    /// In the prepared-case cache, read a patch at a time: memory bounded by the patches in
    /// flight, whatever the size of the dataset.
    #[default]
    Disk,
    /// Every case loaded into memory when the run starts (fastest cuts; needs the whole
    /// prepared dataset in memory).
    Memory,
}

impl StoreKind {
    /// Whether this is the default, [`StoreKind::Disk`].
    pub fn is_default(&self) -> bool {
        *self == StoreKind::default()
    }
}

/// Per class of [`FOREGROUND_CLASSES`], up to [`FOREGROUND_PER_CLASS`] voxels labelled with
/// it, evenly strided in index order. The cache records this list when it prepares a case,
/// and a case given in memory computes it, so both stores centre patches on the same voxels.
pub fn foreground_voxels(labels: &Array3<u8>) -> Vec<Vec<[u32; 3]>> {
    FOREGROUND_CLASSES
        .iter()
        .map(|&class| {
            let count = labels.iter().filter(|&&l| l == class).count();
            let stride = count.div_ceil(FOREGROUND_PER_CLASS).max(1);
            labels
                .indexed_iter()
                .filter(|(_, &l)| l == class)
                .step_by(stride)
                .map(|((i, j, k), _)| [i as u32, j as u32, k as u32])
                .collect()
        })
        .collect()
}

/// The foreground lists as the rows `(class, i, j, k)` of an `N × 4 × 1` array (the cache's
/// `fg_voxels.npy`).
pub(crate) fn foreground_rows(foreground: &[Vec<[u32; 3]>]) -> Array3<u32> {
    let rows: Vec<u32> = FOREGROUND_CLASSES
        .iter()
        .zip(foreground)
        .flat_map(|(&class, voxels)| voxels.iter().flat_map(move |v| [u32::from(class), v[0], v[1], v[2]]))
        .collect();
    let n = rows.len() / 4;
    Array3::from_shape_vec([n, 4, 1], rows).expect("four values per row")
}

/// [`foreground_rows`] read back, for a case of `shape`; a row of another class or outside
/// the case is an error naming `path`.
pub(crate) fn foreground_from_rows(
    path: &std::path::Path,
    rows: [usize; 3],
    values: &[u32],
    shape: [usize; 3],
) -> Result<Vec<Vec<[u32; 3]>>> {
    if rows[1..] != [4, 1] {
        return Err(Error::invalid(path, format!("shape {rows:?} is not N × 4 × 1 (class, i, j, k)")));
    }
    let mut foreground = vec![Vec::new(); FOREGROUND_CLASSES.len()];
    for row in values.chunks_exact(4) {
        let class = FOREGROUND_CLASSES.iter().position(|&c| u32::from(c) == row[0]);
        let v = [row[1], row[2], row[3]];
        match class {
            Some(c) if (0..3).all(|a| (v[a] as usize) < shape[a]) => foreground[c].push(v),
            _ => return Err(Error::invalid(path, format!("row {row:?} is not a foreground voxel of a case of shape {shape:?}"))),
        }
    }
    Ok(foreground)
}

/// A case to cut training patches from, in memory or in the cache (see the module docs).
/// Cloning shares the data.
#[derive(Debug, Clone)]
pub struct StoreCase {
    shape: [usize; 3],
    /// The smallest raw intensity: the padding of a block read raw from disk.
    raw_min: f32,
    /// What turns raw intensities into the image's (applied as they are read from disk; an
    /// image in memory is normalised already).
    normaliser: Normaliser,
    /// The padding of a block: `raw_min` normalised.
    pad: f32,
    foreground: Arc<Vec<Vec<[u32; 3]>>>,
    source: Source,
}

#[derive(Debug, Clone)]
enum Source {
    Memory(Arc<(Image, Labels)>),
    Disk(Arc<DiskArrays>),
}

/// The image and labels of a cached case, as the store opened them.
#[derive(Debug)]
pub(crate) struct DiskArrays {
    pub image: ArrayFile,
    pub labels: ArrayFile,
    pub spacing: [f64; 3],
    pub affine: [[f64; 4]; 4],
}

/// An `.npy` file of the cache, checked when the store opened it.
#[derive(Debug, Clone)]
pub(crate) struct ArrayFile {
    pub path: PathBuf,
    /// Where the values start, after the header.
    pub offset: u64,
    /// Size in bytes when opened.
    pub size: u64,
    /// Modification time when opened, nanoseconds since 1970.
    pub modified_ns: u64,
}

impl ArrayFile {
    /// The file, opened for a read, after checking it is the one the store opened.
    fn open(&self) -> Result<File> {
        let file = File::open(&self.path).map_err(|e| Error::io(&self.path, e))?;
        let meta = file.metadata().map_err(|e| Error::io(&self.path, e))?;
        let (size, modified_ns) = (meta.len(), crate::cache::modified_ns(&meta));
        if size != self.size || modified_ns != self.modified_ns {
            return Err(Error::invalid(
                &self.path,
                format!(
                    "changed during training ({size} bytes modified at {modified_ns} ns, opened as {} bytes modified at {} ns); resume the run to redo the case",
                    self.size, self.modified_ns
                ),
            ));
        }
        Ok(file)
    }

    /// The `size`-sized block at `start` of this array of `shape` (elements of `N` bytes,
    /// decoded by `decode`), `fill` where the block leaves the array. Each row along the
    /// last axis is one positioned read; rows that span that axis lie one after the other
    /// in the file, so those of a plane are read together.
    fn read_block<T: Copy, const N: usize>(
        &self,
        shape: [usize; 3],
        start: [i64; 3],
        size: [usize; 3],
        fill: T,
        decode: fn([u8; N]) -> T,
    ) -> Result<Array3<T>> {
        let mut block = Array3::from_elem(size, fill);
        let Some(Overlap { src, dst }) = overlap(shape, start, size) else { return Ok(block) };
        let file = self.open()?;
        let row = src[2].1 - src[2].0;
        let rows_per_read = if row == shape[2] { src[1].1 - src[1].0 } else { 1 };
        let mut buf = vec![0u8; rows_per_read * row * N];
        let out = block.as_slice_mut().expect("a new array is contiguous");
        for i in src[0].0..src[0].1 {
            for j in (src[1].0..src[1].1).step_by(rows_per_read) {
                let at = self.offset + (((i * shape[1] + j) * shape[2] + src[2].0) * N) as u64;
                read_at(&file, &mut buf, at).map_err(|e| match e.kind() {
                    std::io::ErrorKind::UnexpectedEof => {
                        Error::invalid(&self.path, "cut short during training; resume the run to redo the case")
                    }
                    _ => Error::io(&self.path, e),
                })?;
                for (r, bytes) in buf.chunks_exact(row * N).enumerate() {
                    let (di, dj) = (i - src[0].0 + dst[0].0, j + r - src[1].0 + dst[1].0);
                    let o = (di * size[1] + dj) * size[2] + dst[2].0;
                    for (x, b) in out[o..o + row].iter_mut().zip(bytes.chunks_exact(N)) {
                        *x = decode(b.try_into().expect("chunks of N bytes"));
                    }
                }
            }
        }
        Ok(block)
    }
}

#[cfg(unix)]
fn read_at(file: &File, buf: &mut [u8], at: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, at)
}

#[cfg(not(unix))]
fn read_at(mut file: &File, buf: &mut [u8], at: u64) -> std::io::Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    file.seek(SeekFrom::Start(at))?;
    file.read_exact(buf)
}

impl StoreCase {
    /// A case held in memory as given (normalised already, or meant to be used raw): its
    /// padding is its smallest intensity and its foreground is found in its labels.
    pub fn in_memory(data: Arc<(Image, Labels)>) -> Result<StoreCase> {
        let (image, labels) = (&data.0, &data.1);
        if image.shape() != labels.shape() {
            return Err(Error::Config {
                field: "cases".into(),
                msg: format!("image {:?} and labels {:?} differ in shape", image.shape(), labels.shape()),
            });
        }
        let min = image.data.iter().copied().fold(f32::INFINITY, f32::min);
        let foreground = foreground_voxels(&labels.data);
        Ok(StoreCase::new(image.shape(), min, Normaliser::IDENTITY, foreground, Source::Memory(data)))
    }

    /// A cached case loaded whole: `image` normalised by `normaliser` from raw values whose
    /// smallest is `raw_min`.
    pub(crate) fn loaded(image: Image, labels: Labels, raw_min: f32, normaliser: Normaliser, foreground: Vec<Vec<[u32; 3]>>) -> StoreCase {
        StoreCase::new(image.shape(), raw_min, normaliser, foreground, Source::Memory(Arc::new((image, labels))))
    }

    /// A cached case read from `arrays` (raw values of `shape`, smallest `raw_min`) and
    /// normalised by `normaliser` as it is read.
    pub(crate) fn on_disk(
        arrays: DiskArrays,
        shape: [usize; 3],
        raw_min: f32,
        normaliser: Normaliser,
        foreground: Vec<Vec<[u32; 3]>>,
    ) -> StoreCase {
        StoreCase::new(shape, raw_min, normaliser, foreground, Source::Disk(Arc::new(arrays)))
    }

    fn new(shape: [usize; 3], raw_min: f32, normaliser: Normaliser, foreground: Vec<Vec<[u32; 3]>>, source: Source) -> StoreCase {
        StoreCase { shape, raw_min, normaliser, pad: normalised(normaliser, raw_min), foreground: Arc::new(foreground), source }
    }

    /// Shape of the image and labels.
    pub fn shape(&self) -> [usize; 3] {
        self.shape
    }

    /// Per class of [`FOREGROUND_CLASSES`], the voxels patches may be centred on.
    pub fn foreground(&self) -> &[Vec<[u32; 3]>] {
        &self.foreground
    }

    /// Whether the case is read from disk.
    pub fn is_on_disk(&self) -> bool {
        matches!(self.source, Source::Disk(_))
    }

    /// The intensity of the padding around the volume.
    pub fn pad_value(&self) -> f32 {
        self.pad
    }

    /// The normalised image and the labels of the `size`-sized block whose first voxel is
    /// `start` (which may lie outside, on either side), padded with [`StoreCase::pad_value`]
    /// and label 0. A file missing, changed or cut short is an error naming it.
    pub fn read_block(&self, start: [i64; 3], size: [usize; 3]) -> Result<(Array3<f32>, Array3<u8>)> {
        match &self.source {
            Source::Memory(data) => {
                Ok((padded_block(data.0.data.view(), start, size, self.pad), padded_block(data.1.data.view(), start, size, 0)))
            }
            Source::Disk(arrays) => {
                let mut image = arrays.image.read_block(self.shape, start, size, self.raw_min, f32::from_le_bytes)?;
                self.normaliser.apply(image.as_slice_mut().expect("a new array is contiguous"));
                let labels = arrays.labels.read_block(self.shape, start, size, 0u8, |[b]| b)?;
                Ok((image, labels))
            }
        }
    }

    /// The whole case, normalised: shared when in memory, read (and dropped by the caller
    /// when done) when on disk.
    pub fn volume(&self) -> Result<Arc<(Image, Labels)>> {
        match &self.source {
            Source::Memory(data) => Ok(data.clone()),
            Source::Disk(arrays) => {
                let (image, labels) = self.read_block([0; 3], self.shape)?;
                let volume = |data| Volume { data, spacing: arrays.spacing, affine: arrays.affine };
                Ok(Arc::new((volume(image), Volume { data: labels, spacing: arrays.spacing, affine: arrays.affine })))
            }
        }
    }
}

/// `value` normalised, exactly as a voxel of a normalised image.
fn normalised(normaliser: Normaliser, value: f32) -> f32 {
    let mut v = [value];
    normaliser.apply(&mut v);
    v[0]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn foreground_is_strided_per_class_and_round_trips_through_its_rows() {
        let mut labels = Array3::<u8>::zeros((30, 30, 30));
        labels.slice_mut(ndarray::s![0..25, .., ..]).fill(1);
        labels[[29, 1, 2]] = 2;
        let fg = foreground_voxels(&labels);
        // 22 500 liver voxels, every third kept; the one tumor voxel.
        assert_eq!((fg[0].len(), fg[0][1]), (7_500, [0, 0, 3]));
        assert_eq!(fg[1], vec![[29, 1, 2]]);
        let rows = foreground_rows(&fg);
        assert_eq!(rows.dim(), (7_501, 4, 1));
        let p = Path::new("fg_voxels.npy");
        let values = rows.as_slice().unwrap();
        assert_eq!(foreground_from_rows(p, [7_501, 4, 1], values, [30; 3]).unwrap(), fg);
        // Another class, a voxel outside the case, another layout: refused, naming the file.
        for (rows, values, shape) in
            [([1, 4, 1], [3, 0, 0, 0], [30; 3]), ([1, 4, 1], [1, 0, 30, 0], [30; 3]), ([2, 2, 1], [1, 0, 0, 0], [30; 3])]
        {
            let e = foreground_from_rows(p, rows, &values, shape).unwrap_err().to_string();
            assert!(e.starts_with("fg_voxels.npy: "), "{e}");
        }
    }

    #[test]
    fn a_case_in_memory_pads_with_its_minimum_and_refuses_labels_of_another_shape() {
        let img = Array3::from_shape_fn((3, 2, 2), |(i, j, k)| (i * 4 + j * 2 + k) as f32 - 3.0);
        let lab = Array3::from_shape_fn((3, 2, 2), |(i, _, _)| u8::from(i == 1));
        let case =
            StoreCase::in_memory(Arc::new((Volume::with_spacing(img.clone(), [1.0; 3]), Volume::with_spacing(lab, [1.0; 3])))).unwrap();
        assert_eq!((case.pad_value(), case.shape(), case.is_on_disk()), (-3.0, [3, 2, 2], false));
        let (b, l) = case.read_block([2, 0, 1], [2, 1, 2]).unwrap();
        assert_eq!(b.iter().copied().collect::<Vec<_>>(), vec![6.0, -3.0, -3.0, -3.0]);
        assert!(l.iter().all(|&v| v == 0));
        let other = Volume::with_spacing(Array3::<u8>::zeros((3, 2, 1)), [1.0; 3]);
        assert!(StoreCase::in_memory(Arc::new((Volume::with_spacing(img, [1.0; 3]), other))).is_err());
    }
}
