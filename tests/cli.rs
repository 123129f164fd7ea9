//! End-to-end tests of the `lits` binary.

use std::process::Command;

fn lits() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lits"));
    // The binary must find libtorch by itself, from any directory.
    c.env_remove("LD_LIBRARY_PATH").current_dir("/");
    c
}

#[test]
fn env_json_names_libtorch_from_any_directory() {
    let out = lits().args(["env", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["libtorch"], "2.11.0");
    assert_eq!(v["lits_version"], env!("CARGO_PKG_VERSION"));
    assert!(v["threads"].as_u64().unwrap() >= 1);
    assert!(v["cuda_available"].is_boolean());
}

#[test]
fn version_flag_prints_the_crate_version() {
    let out = lits().arg("--version").output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("lits {}", env!("CARGO_PKG_VERSION")));
}

#[test]
fn unknown_subcommand_fails() {
    let out = lits().arg("frobnicate").output().unwrap();
    assert!(!out.status.success());
}
