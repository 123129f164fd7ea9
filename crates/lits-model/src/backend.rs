//! The libtorch backend: versions, devices, threads and the determinism switches.
//!
//! tch does not expose `at::globalContext()`'s determinism flags nor the libtorch version
//! it was built from, so a small C++ shim (`csrc/backend.cpp`) compiled against the same
//! libtorch provides them.

use std::ffi::{c_char, c_int, c_long, CStr};

use serde::{Deserialize, Serialize};

extern "C" {
    fn lits_torch_version() -> *const c_char;
    fn lits_has_cuda() -> bool;
    fn lits_has_cudnn() -> bool;
    fn lits_cuda_runtime_version() -> c_long;
    fn lits_cudnn_version() -> c_long;
    fn lits_cuda_device_name(index: c_int, out: *mut c_char, len: usize) -> bool;
    fn lits_set_deterministic(on: bool);
    fn lits_deterministic_algorithms() -> bool;
    fn lits_deterministic_cudnn() -> bool;
    fn lits_benchmark_cudnn() -> bool;
}

/// The libtorch version the binary was compiled against, e.g. `2.11.0`.
pub fn torch_version() -> String {
    // SAFETY: returns a pointer to a static NUL-terminated string literal.
    unsafe { CStr::from_ptr(lits_torch_version()) }.to_string_lossy().into_owned()
}

/// Whether CUDA can be used (libtorch_cuda loaded and at least one device present).
pub fn cuda_available() -> bool {
    // SAFETY: plain query of the global context.
    unsafe { lits_has_cuda() }
}

/// Turns deterministic algorithms on (cuDNN deterministic, cuDNN benchmark off) or off.
///
/// With determinism on, an operation that has no deterministic implementation raises an
/// error instead of silently giving run-to-run differences. On CUDA the caller must also
/// have set `CUBLAS_WORKSPACE_CONFIG` before the first CUDA call (see [`set_cublas_workspace`]).
pub fn set_deterministic(on: bool) {
    // SAFETY: sets flags of the global context; no pointers involved.
    unsafe { lits_set_deterministic(on) }
}

/// Sets `CUBLAS_WORKSPACE_CONFIG=:4096:8` unless the user set it, as cuBLAS requires for
/// reproducible results. Must run before CUDA initialises, i.e. before any tensor touches
/// a CUDA device.
pub fn set_cublas_workspace() {
    if std::env::var_os("CUBLAS_WORKSPACE_CONFIG").is_none() {
        std::env::set_var("CUBLAS_WORKSPACE_CONFIG", ":4096:8");
    }
}

/// The determinism flags as libtorch currently has them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Determinism {
    /// `torch.use_deterministic_algorithms`.
    pub algorithms: bool,
    /// `torch.backends.cudnn.deterministic`.
    pub cudnn_deterministic: bool,
    /// `torch.backends.cudnn.benchmark`.
    pub cudnn_benchmark: bool,
}

/// Reads the determinism flags from libtorch.
pub fn determinism() -> Determinism {
    // SAFETY: plain queries of the global context.
    unsafe {
        Determinism {
            algorithms: lits_deterministic_algorithms(),
            cudnn_deterministic: lits_deterministic_cudnn(),
            cudnn_benchmark: lits_benchmark_cudnn(),
        }
    }
}

/// Formats a CUDA-style integer version (`13000` → `13.0`, cuDNN `91900` → `9.19.0`).
fn cuda_version(v: c_long) -> Option<String> {
    (v > 0).then(|| format!("{}.{}", v / 1000, (v % 1000) / 10))
}

fn cudnn_version(v: c_long) -> Option<String> {
    (v > 0).then(|| format!("{}.{}.{}", v / 10000, (v % 10000) / 100, v % 100))
}

/// One CUDA device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CudaDevice {
    /// Device index as libtorch numbers it.
    pub index: usize,
    /// Marketing name, e.g. `NVIDIA H100 80GB HBM3`.
    pub name: String,
}

/// What the backend offers on this machine: the report behind `lits env`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackendReport {
    /// libtorch version compiled against.
    pub libtorch: String,
    /// Whether CUDA is usable.
    pub cuda_available: bool,
    /// CUDA runtime version libtorch was built with, when libtorch has CUDA support.
    pub cuda_version: Option<String>,
    /// Whether cuDNN is usable.
    pub cudnn_available: bool,
    /// cuDNN version, when libtorch has CUDA support.
    pub cudnn_version: Option<String>,
    /// CUDA devices present.
    pub cuda_devices: Vec<CudaDevice>,
    /// Intra-op threads libtorch uses on the CPU.
    pub threads: usize,
    /// Current determinism flags.
    pub determinism: Determinism,
}

impl BackendReport {
    /// Queries libtorch.
    pub fn collect() -> Self {
        let cuda_available = cuda_available();
        let n = if cuda_available { tch::Cuda::device_count().max(0) as usize } else { 0 };
        let cuda_devices = (0..n)
            .map(|index| {
                let mut buf = [0 as c_char; 256];
                // SAFETY: the buffer is valid for `buf.len()` bytes and NUL-terminated on success.
                let ok = unsafe { lits_cuda_device_name(index as c_int, buf.as_mut_ptr(), buf.len()) };
                let name = if ok {
                    // SAFETY: NUL-terminated by the shim.
                    unsafe { CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().into_owned()
                } else {
                    "unknown".to_owned()
                };
                CudaDevice { index, name }
            })
            .collect();
        // SAFETY: plain queries; they return -1 when libtorch has no CUDA support.
        let (cudart, cudnn, has_cudnn) = unsafe { (lits_cuda_runtime_version(), lits_cudnn_version(), lits_has_cudnn()) };
        BackendReport {
            libtorch: torch_version(),
            cuda_available,
            cuda_version: cuda_version(cudart),
            cudnn_available: cuda_available && has_cudnn,
            cudnn_version: cudnn_version(cudnn),
            cuda_devices,
            threads: tch::get_num_threads().max(0) as usize,
            determinism: determinism(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_formatted_like_pytorch() {
        assert_eq!(cuda_version(13000).as_deref(), Some("13.0"));
        assert_eq!(cuda_version(12080).as_deref(), Some("12.8"));
        assert_eq!(cudnn_version(91900).as_deref(), Some("9.19.0"));
        assert_eq!(cuda_version(-1), None);
    }

    #[test]
    fn libtorch_version_is_the_pinned_one() {
        assert_eq!(torch_version(), "2.11.0");
    }

    #[test]
    fn determinism_switch_round_trips() {
        set_deterministic(true);
        let d = determinism();
        assert!(d.algorithms && d.cudnn_deterministic && !d.cudnn_benchmark);
        set_deterministic(false);
        let d = determinism();
        assert!(!d.algorithms && !d.cudnn_deterministic && d.cudnn_benchmark);
    }
}
