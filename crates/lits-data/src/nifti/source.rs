//! Getting a file's bytes: gzip detected from the content (not the name), the header
//! checked and the sizes it promises weighed against the file and the free memory before
//! anything large is allocated, then one fast decompression.
//!
//! Decompression uses libdeflate (whole buffer at once, the fastest measured; see
//! docs/benchmarks.md) when the gzip trailer announces enough bytes, and flate2 otherwise
//! (several gzip members, streams over 4 GiB) and to word the errors of damaged files.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use super::header::Header;
use crate::buffer::{volume_buffer, Region};
use crate::{Error, Result};

/// Deflate cannot expand data by more than about 1032:1; a header promising more than this
/// from a compressed file is lying, and is refused before allocating.
const MAX_DEFLATE_RATIO: u64 = 1032;
/// Bytes read to parse a header (NIfTI-1 needs 348; NIfTI-2's 540 lets it be named).
const HEAD_BYTES: usize = 540;

/// A checked header and, unless only the header was asked for, the voxel bytes.
pub(crate) struct Loaded {
    pub header: Header,
    buf: Vec<u8>,
    start: usize,
}

impl Loaded {
    /// The voxel bytes, exactly as many as the header promises.
    pub fn data(&self) -> &[u8] {
        &self.buf[self.start..self.start + self.header.data_bytes() as usize]
    }
}

fn is_gzip(head: &[u8]) -> bool {
    head.len() >= 2 && head[0] == 0x1f && head[1] == 0x8b
}

/// Read the header of `path` and, with `data`, its voxel bytes. `out_bytes_per_voxel` is
/// what the caller will allocate per voxel for its result, counted in the memory check.
pub(crate) fn load(path: &Path, data: bool, out_bytes_per_voxel: u64) -> Result<Loaded> {
    if !data {
        return Ok(open(path, false, out_bytes_per_voxel)?.0);
    }
    Ok(load_with(path, out_bytes_per_voxel, |_| ())?.0)
}

/// Read the header and voxel bytes of `path`, running `during` with the checked header on
/// the other core while the voxels are read and decompressed (a caller prepares its output
/// buffer there); `out_bytes_per_voxel` as for [`load`].
pub(crate) fn load_with<R: Send>(path: &Path, out_bytes_per_voxel: u64, during: impl FnOnce(&Header) -> R + Send) -> Result<(Loaded, R)> {
    let (mut loaded, pending) = open(path, true, out_bytes_per_voxel)?;
    let Some(pending) = pending else { unreachable!("open with data returns the pending read") };
    let header = &loaded.header;
    let (buf, r) = rayon::join(|| pending.finish(path, header), || during(header));
    loaded.buf = buf?;
    Ok((loaded, r))
}

/// The voxel read still to be done after [`open`].
enum Pending {
    /// Decompress `comp`, of which `need` bytes are the header, extension and voxels.
    Gzip { comp: Vec<u8>, need: u64 },
    /// Read `n` bytes from `file` at its current position.
    Raw { file: File, n: usize },
}

impl Pending {
    fn finish(self, path: &Path, header: &Header) -> Result<Vec<u8>> {
        match self {
            Pending::Gzip { comp, need } => gunzip(path, &comp, need),
            Pending::Raw { mut file, n } => {
                let mut buf = volume_buffer::<u8>(n);
                file.read_exact(&mut buf).map_err(|e| {
                    Error::io(path, std::io::Error::new(e.kind(), format!("reading {} voxel bytes: {e}", header.data_bytes())))
                })?;
                Ok(buf)
            }
        }
    }
}

/// Read and check the header of `path`, weigh the sizes it promises against the file and
/// the free memory, and, with `data`, return what is left to do to get the voxels.
fn open(path: &Path, data: bool, out_bytes_per_voxel: u64) -> Result<(Loaded, Option<Pending>)> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if meta.is_dir() {
        return Err(Error::invalid(path, "is a directory, not a NIfTI file"));
    }
    let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut first = Vec::with_capacity(HEAD_BYTES);
    (&mut file).take(HEAD_BYTES as u64).read_to_end(&mut first).map_err(|e| Error::io(path, e))?;
    if is_gzip(&first) {
        if !data {
            // Only the header: decompress no more than its bytes.
            let head = gunzip_prefix(path, std::io::Cursor::new(first).chain(file))?;
            let header = Header { gzip: true, ..Header::parse(path, &head)? };
            check_gzip_capacity(path, &header, meta.len())?;
            return Ok((Loaded { header, buf: Vec::new(), start: 0 }, None));
        }
        // The whole compressed file, read into a buffer of its size (no regrowing).
        let mut comp = volume_buffer::<u8>((meta.len() as usize).max(first.len()));
        comp[..first.len()].copy_from_slice(&first);
        file.read_exact(&mut comp[first.len()..]).map_err(|e| Error::io(path, e))?;
        let head = gunzip_prefix(path, &comp[..])?;
        let header = Header { gzip: true, ..Header::parse(path, &head)? };
        let need = check_gzip_capacity(path, &header, comp.len() as u64)?;
        check_memory(path, &header, need + comp.len() as u64, out_bytes_per_voxel)?;
        let start = header.vox_offset;
        Ok((Loaded { header, buf: Vec::new(), start }, Some(Pending::Gzip { comp, need })))
    } else {
        let header = Header::parse(path, &first)?;
        // Saturating: a vox_offset near the top of f32's range is refused below, not an overflow.
        let need = (header.vox_offset as u64).saturating_add(header.data_bytes());
        if meta.len() < need {
            return Err(Error::invalid(
                path,
                format!(
                    "data shorter than the header says: shape {:?} of {} needs {} bytes after offset {} ({need} in all), the file has {}",
                    header.shape,
                    header.datatype.name(),
                    header.data_bytes(),
                    header.vox_offset,
                    meta.len()
                ),
            ));
        }
        if !data {
            return Ok((Loaded { header, buf: Vec::new(), start: 0 }, None));
        }
        check_memory(path, &header, header.data_bytes(), out_bytes_per_voxel)?;
        let n = header.data_bytes() as usize;
        file.seek(SeekFrom::Start(header.vox_offset as u64)).map_err(|e| Error::io(path, e))?;
        Ok((Loaded { header, buf: Vec::new(), start: 0 }, Some(Pending::Raw { file, n })))
    }
}

/// Bytes the header needs from the decompressed stream, refused when a gzip file of
/// `comp_len` bytes cannot possibly hold them.
fn check_gzip_capacity(path: &Path, header: &Header, comp_len: u64) -> Result<u64> {
    let need = (header.vox_offset as u64).saturating_add(header.data_bytes());
    let most = comp_len.saturating_mul(MAX_DEFLATE_RATIO);
    if need > most {
        return Err(Error::invalid(
            path,
            format!(
                "header promises {} of data (shape {:?}, {}) but {} of gzip data cannot hold more than {}",
                human(need),
                header.shape,
                header.datatype.name(),
                human(comp_len),
                human(most)
            ),
        ));
    }
    Ok(need)
}

/// The first bytes of the decompressed stream, enough for a header.
fn gunzip_prefix(path: &Path, comp: impl Read) -> Result<Vec<u8>> {
    let mut head = Vec::with_capacity(HEAD_BYTES);
    flate2::read::MultiGzDecoder::new(comp)
        .take(HEAD_BYTES as u64)
        .read_to_end(&mut head)
        .map_err(|e| Error::invalid(path, format!("truncated or corrupt gzip data in the header: {e}")))?;
    Ok(head)
}

/// The decompressed file, at least `need` bytes of it.
fn gunzip(path: &Path, comp: &[u8], need: u64) -> Result<Vec<u8>> {
    // The gzip trailer's ISIZE is the last member's size modulo 2^32; when it covers what
    // the header needs it is very likely the whole, single-member stream.
    if comp.len() >= 18 {
        let isize = u32::from_le_bytes(comp[comp.len() - 4..].try_into().expect("4 bytes")) as u64;
        if isize >= need && isize <= comp.len() as u64 * MAX_DEFLATE_RATIO {
            let mut out = volume_buffer::<u8>(isize as usize);
            // Fault the pages in on another thread, ahead of the decompressor.
            let region = Region::of(&out);
            let (done, ()) = rayon::join(|| libdeflater::Decompressor::new().gzip_decompress(comp, &mut out), || region.populate());
            if let Ok(n) = done {
                if n as u64 == isize {
                    return Ok(out);
                }
            }
        }
    }
    let mut out = volume_buffer::<u8>(need as usize);
    let mut dec = flate2::read::MultiGzDecoder::new(comp);
    let mut filled = 0;
    while filled < out.len() {
        match dec.read(&mut out[filled..]) {
            Ok(0) => {
                return Err(Error::invalid(path, format!("data shorter than the header says: {filled} of {need} bytes in the gzip stream")))
            }
            Ok(n) => filled += n,
            Err(e) => return Err(Error::invalid(path, format!("truncated or corrupt gzip data after {filled} of {need} bytes: {e}"))),
        }
    }
    // Read to the end so that a damaged tail (checksum, truncation) is not let through.
    std::io::copy(&mut dec, &mut std::io::sink())
        .map_err(|e| Error::invalid(path, format!("truncated or corrupt gzip data after the voxels: {e}")))?;
    Ok(out)
}

/// Refuse a read whose buffers would not fit in the memory available.
fn check_memory(path: &Path, header: &Header, input_bytes: u64, out_bytes_per_voxel: u64) -> Result<()> {
    let want = input_bytes.saturating_add(header.voxels().saturating_mul(out_bytes_per_voxel));
    let avail = available_memory();
    if want > avail.unwrap_or(u64::MAX) || want > isize::MAX as u64 {
        return Err(Error::invalid(
            path,
            format!(
                "shape {:?} of {} needs {} of memory to read, only {} is available",
                header.shape,
                header.datatype.name(),
                human(want),
                human(avail.unwrap_or(isize::MAX as u64))
            ),
        ));
    }
    Ok(())
}

/// `MemAvailable` from /proc/meminfo, where there is one.
fn available_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// A byte count for people: `"1.5 GiB"`.
pub(crate) fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} bytes")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}
