#[path = "../../build/torch_link.rs"]
mod torch_link;

fn main() {
    let libtorch = torch_link::emit();
    for f in ["csrc/backend.cpp", "csrc/dist.cpp", "csrc/gloo"] {
        println!("cargo:rerun-if-changed={f}");
    }
    cc::Build::new()
        .cpp(true)
        .pic(true)
        .std("c++17")
        .include(libtorch.join("include"))
        .include(libtorch.join("include/torch/csrc/api/include"))
        // The torch wheel ships the c10d headers but not Gloo's, which they include.
        .include("csrc/gloo")
        .define("USE_C10D_GLOO", None)
        .define("_GLIBCXX_USE_CXX11_ABI", "1")
        .flag("-w")
        .file("csrc/backend.cpp")
        .file("csrc/dist.cpp")
        .compile("lits_backend");
    println!("cargo:rustc-link-lib=dl");
}
