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

/// `lits --help` describes lits and lists every command clap knows; the README's table of
/// commands names the same ones, so neither goes stale when a command is added.
#[test]
fn help_lists_every_command_and_the_readme_names_the_same() {
    let out = lits().arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout).into_owned();
    let (header, rest) = help.split_once("Usage:").expect("a usage line");
    assert!(header.contains("segmentation of CT"), "the help does not say what lits is:\n{help}");
    let commands: std::collections::BTreeSet<String> = rest
        .split_once("Commands:")
        .expect("a command list")
        .1
        .lines()
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .filter(|c| c != "help")
        .collect();
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let documented: std::collections::BTreeSet<String> =
        readme.lines().filter_map(|l| l.strip_prefix("| `lits ")).filter_map(|l| l.split([' ', '`']).next().map(str::to_string)).collect();
    assert!(commands.len() >= 10, "{commands:?}");
    assert_eq!(commands, documented, "commands of `lits --help` against the README's table");
    // A header that enumerates commands goes stale: it must not name most of them.
    let named = commands.iter().filter(|c| header.contains(&format!("{c},"))).count();
    assert!(named < 3, "the help's description lists commands:\n{header}");
}
