#[path = "../../build/torch_link.rs"]
mod torch_link;

fn main() {
    let libtorch = torch_link::emit();
    println!("cargo:rerun-if-changed=csrc/backend.cpp");
    cc::Build::new()
        .cpp(true)
        .pic(true)
        .std("c++17")
        .include(libtorch.join("include"))
        .include(libtorch.join("include/torch/csrc/api/include"))
        .define("_GLIBCXX_USE_CXX11_ABI", "1")
        .flag("-w")
        .file("csrc/backend.cpp")
        .compile("lits_backend");
    println!("cargo:rustc-link-lib=dl");
}
