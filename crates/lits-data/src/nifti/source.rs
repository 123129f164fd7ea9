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
            return Ok(Loaded { header, buf: Vec::new(), start: 0 });
        }
        let mut comp = first;
        file.read_to_end(&mut comp).map_err(|e| Error::io(path, e))?;
        let head = gunzip_prefix(path, &comp[..])?;
        let header = Header { gzip: true, ..Header::parse(path, &head)? };
        let need = check_gzip_capacity(path, &header, comp.len() as u64)?;
        check_memory(path, &header, need + comp.len() as u64, out_bytes_per_voxel)?;
        let buf = gunzip(path, &comp, need)?;
        Ok(Loaded { start: header.vox_offset, header, buf })
    } else {
        let header = Header::parse(path, &first)?;
        let need = header.vox_offset as u64 + header.data_bytes();
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
            return Ok(Loaded { header, buf: Vec::new(), start: 0 });
        }
        check_memory(path, &header, header.data_bytes(), out_bytes_per_voxel)?;
        let n = header.data_bytes() as usize;
        let mut buf = volume_buffer::<u8>(n);
        file.seek(SeekFrom::Start(header.vox_offset as u64)).map_err(|e| Error::io(path, e))?;
        file.read_exact(&mut buf).map_err(|e| Error::io(path, e))?;
        Ok(Loaded { header, buf, start: 0 })
    }
}

/// Bytes the header needs from the decompressed stream, refused when a gzip file of
/// `comp_len` bytes cannot possibly hold them.
fn check_gzip_capacity(path: &Path, header: &Header, comp_len: u64) -> Result<u64> {
    let need = header.vox_offset as u64 + header.data_bytes();
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
            if let Ok(n) = libdeflater::Decompressor::new().gzip_decompress(comp, &mut out) {
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
                return Err(Error::invalid(
                    path,
                    format!("data shorter than the header says: {filled} of {need} bytes in the gzip stream"),
                ))
            }
            Ok(n) => filled += n,
            Err(e) => {
                return Err(Error::invalid(
                    path,
                    format!("truncated or corrupt gzip data after {filled} of {need} bytes: {e}"),
                ))
            }
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

/// A zero-filled buffer of `n` values for a whole volume. On Linux its pages are marked for
/// transparent huge pages before first use: filling a few hundred MiB then takes a few
/// hundred page faults instead of tens of thousands (measured: about 3x faster to fill
/// 200 MiB on the benchmark machine).
pub(crate) fn volume_buffer<T: Clone + Default>(n: usize) -> Vec<T> {
    // vec! of a zero value is calloc: fresh, untouched pages, no memset.
    let v = vec![T::default(); n];
    #[cfg(target_os = "linux")]
    {
        const PAGE: usize = 4096;
        let bytes = n * std::mem::size_of::<T>();
        if bytes >= 1 << 21 {
            let p = v.as_ptr() as usize;
            let start = (p + PAGE - 1) & !(PAGE - 1);
            let end = (p + bytes) & !(PAGE - 1);
            // SAFETY: madvise only advises the kernel about a page-aligned range inside this
            // live allocation; it does not change the contents or validity of the memory.
            // A refusal (e.g. THP disabled) is harmless, so its result is ignored.
            unsafe {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
            }
        }
    }
    v
}
