// Shared by the build scripts of every crate that links libtorch (included with `#[path]`).
//
// It bakes the torch library folder into each binary's run path, so `lits` and the test
// binaries start from any directory with no `LD_LIBRARY_PATH`, and it keeps
// `libtorch_cuda.so` linked even though no Rust code names one of its symbols: without
// `--no-as-needed` the linker drops it and CUDA is silently unavailable at run time.
//
// Two build options, for installs that move the libraries (the Docker images):
// - `LITS_TORCH_CUDA=0` leaves `libtorch_cuda.so` out, for a CPU-only install that ships
//   only `libtorch_cpu` and `libc10` (tch needs nothing of CUDA to run on the CPU).
// - `LITS_TORCH_RPATH=DIR` bakes DIR into the run path instead of the build's library folder.

use std::path::PathBuf;

/// Emits the link arguments; returns the libtorch folder (the one holding `lib/`).
pub fn emit() -> PathBuf {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    let root = PathBuf::from(
        std::env::var("LIBTORCH")
            .unwrap_or_else(|_| fail("LIBTORCH is not set: build inside the lits workspace, after running scripts/setup.sh")),
    );
    let root = match root.canonicalize() {
        Ok(r) if r.join("lib").is_dir() => r,
        _ => fail(&format!("libtorch not found at {}: run scripts/setup.sh first (it installs torch into .venv)", root.display())),
    };
    let lib = root.join("lib");
    // Re-run (and fail with the message above) when the set-up is removed or redone.
    println!("cargo:rerun-if-changed={}", lib.join("libtorch_cpu.so").display());
    println!("cargo:rerun-if-env-changed=LITS_TORCH_RPATH");
    println!("cargo:rerun-if-env-changed=LITS_TORCH_CUDA");
    let rpath = std::env::var_os("LITS_TORCH_RPATH").map_or_else(|| lib.clone(), PathBuf::from);
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", rpath.display());
    let cuda = std::env::var("LITS_TORCH_CUDA").as_deref() != Ok("0");
    if cuda && lib.join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-search=native={}", lib.display());
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-ltorch_cuda");
        println!("cargo:rustc-link-arg=-Wl,--as-needed");
    }
    root
}

fn fail(msg: &str) -> ! {
    eprintln!("error: {msg}");
    std::process::exit(1)
}
