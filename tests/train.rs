//! End-to-end tests of `lits train`: repeatability, crash-safe resume, bad configs.
//! Each uses a tiny configuration (a few small phantoms, a 4-channel U-Net, 16³ patches)
//! so it runs in seconds on two cores.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sha2::{Digest, Sha256};

mod common;
use common::lits;

fn tiny_config(dir: &Path, seed: u64, epochs: u32) -> PathBuf {
    let p = dir.join(format!("tiny-{seed}-{epochs}.json"));
    std::fs::write(&p, serde_json::to_vec_pretty(&common::tiny_config(seed, epochs, 3, 2)).unwrap()).unwrap();
    p
}

fn run(cmd: &mut Command) -> Output {
    let o = cmd.output().unwrap();
    assert!(
        o.status.success(),
        "lits failed ({}):\n{}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

fn sha256(path: &Path) -> String {
    let d = Sha256::digest(std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())));
    d.iter().map(|b| format!("{b:02x}")).collect()
}

fn train(cache: &Path, cfg: &Path, out: &Path) -> Output {
    run(lits(cache).args(["train", "--config"]).arg(cfg).arg("--out").arg(out))
}

#[test]
fn same_seed_same_bytes_other_seed_other_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let cfg0 = tiny_config(tmp.path(), 0, 2);
    let cfg1 = tiny_config(tmp.path(), 1, 2);
    let (a, b, c) = (tmp.path().join("a"), tmp.path().join("b"), tmp.path().join("c"));
    train(&cache, &cfg0, &a);
    train(&cache, &cfg0, &b);
    train(&cache, &cfg1, &c);
    for f in ["checkpoints/last.ckpt", "last.safetensors", "best.safetensors", "metrics.jsonl", "split.json", "plans.json"] {
        assert_eq!(sha256(&a.join(f)), sha256(&b.join(f)), "{f} differs between two runs with the same seed");
    }
    assert_ne!(sha256(&a.join("last.safetensors")), sha256(&c.join("last.safetensors")));
    // The run describes itself.
    for f in ["config.json", "env.json", "timing.jsonl", "plots/loss.png", "plots/dice.png"] {
        assert!(a.join(f).is_file(), "{f} missing from the run directory");
    }
    let metrics = std::fs::read_to_string(a.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 2);
    assert!(metrics.lines().last().unwrap().contains("liver_dice"));
}

/// One run of `cfg` per value, each set by `set`, in `tmp/VALUE`.
fn train_each(
    tmp: &Path,
    cache: &Path,
    cfg: serde_json::Value,
    values: &[&str],
    set: impl Fn(&mut serde_json::Value, &str),
) -> Vec<PathBuf> {
    values
        .iter()
        .map(|v| {
            let mut c = cfg.clone();
            set(&mut c, v);
            let p = tmp.join(format!("{v}.json"));
            std::fs::write(&p, serde_json::to_vec_pretty(&c).unwrap()).unwrap();
            let out = tmp.join(v);
            train(cache, &p, &out);
            out
        })
        .collect()
}

#[test]
fn best_by_last_keeps_the_last_epoch_and_changes_no_weight() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let runs = train_each(tmp.path(), &cache, common::tiny_config(3, 3, 3, 1), &["val_dice", "last"], |c, v| c["best_by"] = v.into());
    for f in ["last.safetensors", "metrics.jsonl"] {
        assert_eq!(sha256(&runs[0].join(f)), sha256(&runs[1].join(f)), "{f}: the choice of the best epoch changed the training");
    }
    assert_eq!(sha256(&runs[1].join("best.safetensors")), sha256(&runs[1].join("last.safetensors")));
}

#[test]
fn disk_and_memory_stores_train_to_the_same_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let runs = train_each(tmp.path(), &cache, common::tiny_config(4, 2, 3, 1), &["disk", "memory"], |c, v| c["data"]["store"] = v.into());
    // Validated after each epoch, so the held-out case was streamed from the cache twice.
    for f in ["last.safetensors", "best.safetensors", "metrics.jsonl", "split.json"] {
        assert_eq!(sha256(&runs[0].join(f)), sha256(&runs[1].join(f)), "{f} differs between the disk and the memory store");
    }
    // The plans agree but for the memory they estimate: one case on disk, every case in memory.
    let plan = |run: &Path| -> serde_json::Value { serde_json::from_slice(&std::fs::read(run.join("plans.json")).unwrap()).unwrap() };
    let (mut disk, mut memory) = (plan(&runs[0]), plan(&runs[1]));
    let bytes = |p: &serde_json::Value| p["estimate"]["prepared_bytes"].as_u64().unwrap();
    assert!(bytes(&disk) < bytes(&memory), "disk {} memory {}", bytes(&disk), bytes(&memory));
    disk["estimate"]["prepared_bytes"] = 0.into();
    memory["estimate"]["prepared_bytes"] = 0.into();
    assert_eq!(disk, memory, "plans.json differs between the disk and the memory store");
    let config = |run: &Path| std::fs::read_to_string(run.join("config.json")).unwrap();
    assert!(!config(&runs[0]).contains("\"store\"") && config(&runs[1]).contains("\"store\": \"memory\""));
}

#[test]
fn killed_runs_resume_to_the_same_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let cfg = tiny_config(tmp.path(), 3, 4);
    let whole = tmp.path().join("whole");
    train(&cache, &cfg, &whole);

    // Stopped cleanly after one epoch, then killed in the middle of the third epoch's
    // checkpoint write, then resumed to the end.
    let cut = tmp.path().join("cut");
    run(lits(&cache).args(["train", "--stop-after", "1", "--config"]).arg(&cfg).arg("--out").arg(&cut));
    let o = lits(&cache).args(["train", "--resume"]).arg(&cut).env("LITS_FAILPOINT", "checkpoint-write:3").output().unwrap();
    assert!(!o.status.success(), "the failpoint should have killed the run");
    let torn = |d: &Path| -> Vec<String> {
        std::fs::read_dir(d.join("checkpoints"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".last.ckpt.") && n.ends_with(".tmp"))
            .collect()
    };
    assert_eq!(torn(&cut).len(), 1, "the torn write's temporary file");
    // The checkpoint on disk is still the complete one of epoch 2; the torn file goes.
    run(lits(&cache).args(["train", "--resume"]).arg(&cut));
    assert_eq!(torn(&cut), Vec::<String>::new());
    assert_eq!(sha256(&whole.join("checkpoints/last.ckpt")), sha256(&cut.join("checkpoints/last.ckpt")));
    assert_eq!(sha256(&whole.join("last.safetensors")), sha256(&cut.join("last.safetensors")));
    assert_eq!(sha256(&whole.join("metrics.jsonl")), sha256(&cut.join("metrics.jsonl")));
}

#[test]
fn sigkill_mid_epoch_then_resume_matches() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let cfg = tiny_config(tmp.path(), 5, 4);
    let whole = tmp.path().join("whole");
    train(&cache, &cfg, &whole);
    let cut = tmp.path().join("cut");
    let mut child = lits(&cache)
        .args(["train", "--config"])
        .arg(&cfg)
        .arg("--out")
        .arg(&cut)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait for the first epoch to be logged, then kill without warning.
    let log = cut.join("metrics.jsonl");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !std::fs::read_to_string(&log).is_ok_and(|t| t.lines().count() >= 1) {
        assert!(std::time::Instant::now() < deadline, "no epoch finished");
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let _ = child.kill(); // SIGKILL
    let _ = child.wait();
    // The kill landed before the run finished (it has four epochs; one was logged).
    let logged = std::fs::read_to_string(&log).map_or(0, |t| t.lines().count());
    assert!(logged < 4, "the run finished before it was killed ({logged} epochs logged)");
    run(lits(&cache).args(["train", "--resume"]).arg(&cut));
    assert_eq!(sha256(&whole.join("last.safetensors")), sha256(&cut.join("last.safetensors")));
    assert_eq!(sha256(&whole.join("metrics.jsonl")), sha256(&cut.join("metrics.jsonl")));
}

fn fails_with(cache: &Path, args: &[&str], cfg: Option<&Path>, needle: &str) {
    let mut c = lits(cache);
    c.arg("train");
    if let Some(p) = cfg {
        c.arg("--config").arg(p);
    }
    let o = c.args(args).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "expected failure for {args:?}");
    assert!(err.contains(needle), "stderr lacks `{needle}`:\n{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn bad_configs_fail_before_any_work() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let base = tiny_config(tmp.path(), 0, 1);
    let edit = |name: &str, f: &dyn Fn(&mut serde_json::Value)| {
        let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&base).unwrap()).unwrap();
        f(&mut v);
        let p = tmp.path().join(name);
        std::fs::write(&p, serde_json::to_vec(&v).unwrap()).unwrap();
        p
    };
    let unknown = edit("unknown.json", &|v| v["learning_rate"] = 0.1.into());
    fails_with(&cache, &["--out", tmp.path().join("o1").to_str().unwrap()], Some(&unknown), "learning_rate");
    let neg = edit("neg.json", &|v| v["optimizer"]["lr"] = (-0.001).into());
    fails_with(&cache, &["--out", tmp.path().join("o2").to_str().unwrap()], Some(&neg), "optimizer.lr");
    // The U-Net halves a patch twice, so every side must be a multiple of 4.
    let odd = edit("odd.json", &|v| v["patches"]["patch"] = serde_json::json!([16, 18, 16]));
    fails_with(&cache, &["--out", tmp.path().join("o3").to_str().unwrap()], Some(&odd), "patches.patch[1]");
    // Larger than every phantom once resampled: refused from the config alone, before the
    // phantoms are generated.
    let big = edit("big.json", &|v| v["patches"]["patch"] = serde_json::json!([128, 128, 128]));
    fails_with(&cache, &["--out", tmp.path().join("o5").to_str().unwrap()], Some(&big), "larger than every volume");
    fails_with(
        &cache,
        &["--data", "/nonexistent/lits", "--out", tmp.path().join("o4").to_str().unwrap()],
        Some(&base),
        "/nonexistent/lits",
    );
    fails_with(&cache, &["--out", "/proc/lits-run"], Some(&base), "/proc/lits-run");
    let missing = tmp.path().join("nope.json");
    fails_with(&cache, &[], Some(&missing), "nope.json");
    // A flag that makes the config invalid: refused before a run directory is announced.
    let o6 = tmp.path().join("o6");
    fails_with(&cache, &["--epochs", "0", "--out", o6.to_str().unwrap()], Some(&base), "epochs");
    let o = lits(&cache).args(["train", "--epochs", "0", "--config"]).arg(&base).output().unwrap();
    assert!(!String::from_utf8_lossy(&o.stderr).contains("run directory:"), "{}", String::from_utf8_lossy(&o.stderr));
    // Nothing was generated or trained for any of them.
    assert!(["o1", "o2", "o3", "o4", "o5", "o6"].iter().all(|o| !tmp.path().join(o).exists()));
    assert!(!cache.exists(), "phantoms were generated for a config that cannot train");
}

#[test]
fn every_bad_case_is_reported_before_training_and_good_cases_are_kept_prepared() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let data = tmp.path().join("data");
    run(lits(&cache).args(["synth", "--cases", "4", "--seed", "7", "--out"]).arg(&data));
    let seg = |id: u32| ["nii.gz", "nii"].iter().map(|e| data.join(format!("segmentation-{id}.{e}"))).find(|p| p.exists()).unwrap();
    let (garbage, other_grid) = (seg(0), seg(1));
    std::fs::write(&garbage, b"not a NIfTI file").unwrap();
    // A label of another case: another shape (phantom sizes vary), not this image's grid.
    std::fs::copy(seg(2), &other_grid).unwrap();
    let cfg = tiny_config(tmp.path(), 0, 1);
    let out = tmp.path().join("run");
    let o = lits(&cache).args(["train", "--config"]).arg(&cfg).arg("--data").arg(&data).arg("--out").arg(&out).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(err.contains("2 bad case(s)"), "{err}");
    assert!(err.contains(&garbage.display().to_string()) && err.contains(&other_grid.display().to_string()), "{err}");
    assert!(!out.exists(), "a run that failed before its first step left {}", out.display());
    // The good cases were prepared once and are kept for the next run.
    let prepared: Vec<PathBuf> = std::fs::read_dir(cache.join("prepared")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(prepared.len(), 1, "{prepared:?}");
    let mut cases: Vec<String> =
        std::fs::read_dir(prepared[0].join("cases")).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    cases.sort();
    assert_eq!(cases, ["case-2", "case-3"]);
}
