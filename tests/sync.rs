//! Tracking end to end against a real MLflow server: a `lits train --tracking-uri` run read
//! back with MLflow's Python client; `lits sync` of a run whose server went away in the
//! middle, uploaded after the server came back; and bad input.

#[path = "../crates/lits-tracking/tests/support/mod.rs"]
mod tracking_support;

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use lits_tracking::{read_state, Auth, RunStatus, Tracker, TrackingConfig};
use tracking_support::{local_history, now_ms, readback, server_history, sha256_file, write_run_files, MlflowServer};

fn lits() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lits"));
    for k in ["LITS_TRACKING_WAIT", "MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"]
    {
        c.env_remove(k);
    }
    c
}

#[test]
fn a_tracked_training_run_reads_back_with_mlflows_client() {
    let srv = MlflowServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let (run, stderr) = train_tracked(tmp.path(), &srv.uri, "lits-train-e2e", Some("600"));
    // The end of training waited for the server (LITS_TRACKING_WAIT): everything went
    // there from training itself, nothing is left for `lits sync`.
    assert!(!stderr.contains("not sent to"), "{stderr}");
    let run_id = read_state(&run).unwrap().expect("the run reached the server").run_id;
    assert_run_on_server(&srv.uri, &run_id, &run);
}

#[test]
fn a_run_trained_while_the_server_was_down_is_uploaded_whole_by_sync() {
    // A port that was free a moment ago: the server is down for the whole training.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let tmp = tempfile::tempdir().unwrap();
    let (run, stderr) = train_tracked(tmp.path(), &format!("http://127.0.0.1:{port}"), "lits-train-e2e-offline", None);
    assert!(stderr.contains("not sent to") && stderr.contains("lits sync"), "{stderr}");
    assert_eq!(read_state(&run).unwrap(), None, "no server run exists yet");

    let srv = MlflowServer::start();
    let sync = lits()
        .env("MLFLOW_EXPERIMENT_NAME", "lits-train-e2e-offline")
        .arg("sync")
        .arg(&run)
        .args(["--tracking-uri", &srv.uri])
        .output()
        .unwrap();
    assert!(sync.status.success(), "{}", String::from_utf8_lossy(&sync.stderr));
    let run_id = read_state(&run).unwrap().expect("sync created the server run").run_id;
    assert_run_on_server(&srv.uri, &run_id, &run);
}

/// Trains three epochs of the tiny config in `tmp/run`, tracked to `uri` in `experiment`
/// (`LITS_TRACKING_WAIT` set to `wait` when given); fails the test if training fails,
/// else returns the run directory and what training printed on stderr.
fn train_tracked(tmp: &std::path::Path, uri: &str, experiment: &str, wait: Option<&str>) -> (std::path::PathBuf, String) {
    let cfg = tmp.join("tiny.json");
    std::fs::write(&cfg, serde_json::to_vec(&common::tiny_config(0, 3, 2, 2)).unwrap()).unwrap();
    let run = tmp.join("run");
    let mut c = lits();
    c.env("LITS_CACHE_DIR", tmp.join("cache")).env("MLFLOW_EXPERIMENT_NAME", experiment);
    if let Some(w) = wait {
        c.env("LITS_TRACKING_WAIT", w);
    }
    let out = c.args(["train", "--config"]).arg(&cfg).arg("--out").arg(&run).args(["--tracking-uri", uri]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "training failed (a failing server must not fail it): {stderr}");
    (run, stderr)
}

/// The server's copy of the run in `run`: status, params, tags, every metric point of
/// `metrics.jsonl` and every file, byte for byte.
fn assert_run_on_server(uri: &str, run_id: &str, run: &std::path::Path) {
    let back = readback(uri, run_id);
    assert_eq!(back["status"], "FINISHED");
    assert!(back["experiment"].as_str().is_some_and(|e| e.starts_with("lits-train-e2e")), "{}", back["experiment"]);
    assert_eq!(back["run_name"], "run", "the run directory's name");

    // Every config field is a param.
    let params = back["params"].as_object().unwrap();
    assert_eq!(params["seed"], "0");
    for key in ["optimizer.lr", "patches.patch", "model.base_channels", "data.synth.cases", "epochs"] {
        assert!(params.contains_key(key), "param {key} missing: {params:?}");
    }
    assert!(back["tags"].as_object().unwrap().keys().any(|k| k.contains("version")), "{}", back["tags"]);

    // The full metric history equals the run directory's log, epoch by epoch.
    let log: Vec<serde_json::Value> =
        std::fs::read_to_string(run.join("metrics.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(log.len(), 3);
    let history = server_history(&back);
    let series = |key: &str| -> Vec<(i64, f64)> { history[key].iter().map(|p| (p[0].as_i64().unwrap(), p[2].as_f64().unwrap())).collect() };
    let local = |f: &dyn Fn(&serde_json::Value) -> Option<f64>| -> Vec<(i64, f64)> {
        log.iter().filter_map(|r| f(r).map(|v| (r["epoch"].as_i64().unwrap(), v))).collect()
    };
    assert_eq!(series("train_loss"), local(&|r| r["train_loss"].as_f64()));
    assert_eq!(series("lr"), local(&|r| r["lr"].as_f64()));
    let liver = local(&|r| r["val"]["liver_dice"].as_f64());
    assert_eq!(liver.len(), 2, "validated after epochs 2 and 3");
    assert_eq!(series("val_liver_dice"), liver);
    assert_eq!(series("val_tumor_dice"), local(&|r| r["val"]["tumor_dice"].as_f64()));

    // The run's records, plots and best weights are artifacts, byte for byte.
    for (artifact, local) in [
        ("config.json", "config.json"),
        ("env.json", "env.json"),
        ("split.json", "split.json"),
        ("plans.json", "plans.json"),
        ("metrics.jsonl", "metrics.jsonl"),
        ("plots/loss.png", "plots/loss.png"),
        ("plots/dice.png", "plots/dice.png"),
        ("model/best.safetensors", "best.safetensors"),
    ] {
        assert_eq!(back["artifacts"][artifact], sha256_file(&run.join(local)), "artifact {artifact}");
    }
}

#[test]
fn sync_of_a_directory_without_a_journal_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let out = lits().arg("sync").arg(dir.path()).args(["--tracking-uri", "http://127.0.0.1:9"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("outbox.jsonl") && err.contains("no tracking journal"), "{err}");
    assert!(!dir.path().join("tracking").exists(), "sync wrote into a directory it could not sync");
}

#[test]
fn sync_without_any_server_named_says_how_to_name_one() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = TrackingConfig { uri: None, experiment: "x".into(), run_name: "r".into() };
    Tracker::start(dir.path(), &cfg, &[], &[]).finish(RunStatus::Finished);
    let out = lits().arg("sync").arg(dir.path()).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--tracking-uri") && err.contains("MLFLOW_TRACKING_URI"), "{err}");
}

#[test]
fn server_lost_mid_run_then_sync_makes_history_equal_and_adds_nothing_twice() {
    let srv = MlflowServer::start();
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path();
    let files = write_run_files(run_dir);
    let cfg = TrackingConfig { uri: Some(srv.uri.clone()), experiment: "lits-outage".into(), run_name: "outage".into() };
    let t = Tracker::start_with_auth(run_dir, &cfg, Auth::None, &[("lits.version".into(), "test".into())], &[("seed".into(), "0".into())]);
    let epoch = |e: i64| vec![("train_loss".to_owned(), 1.0 / (e + 1) as f64), ("lr".to_owned(), 1e-4)];
    for e in 0..3 {
        t.log_metrics(e, now_ms() + e, &epoch(e));
    }
    let until = Instant::now() + Duration::from_secs(120);
    while t.unsent() > 0 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(t.unsent(), 0, "the first epochs reached the server");

    srv.stop();
    // Training goes on while the server is gone; the records stay in the journal.
    for e in 3..10 {
        t.log_metrics(e, now_ms() + e, &epoch(e));
        std::thread::sleep(Duration::from_millis(100));
    }
    t.log_artifact(&files[0], "");
    t.log_artifact(&files[2], "model");
    t.finish(RunStatus::Finished);
    let run_id = read_state(run_dir).unwrap().expect("the run reached the server before it went").run_id;

    srv.restart();
    let first = lits().arg("sync").arg(run_dir).args(["--tracking-uri", &srv.uri]).output().unwrap();
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert!(first.status.success(), "{stdout}{}", String::from_utf8_lossy(&first.stderr));
    assert!(stdout.contains(&run_id), "the same server run continues: {stdout}");
    assert!(stdout.contains("status      FINISHED"), "{stdout}");

    let back = readback(&srv.uri, &run_id);
    assert_eq!(server_history(&back), local_history(run_dir), "server history equals the run directory's");
    assert_eq!(back["status"], "FINISHED");
    assert_eq!(back["params"]["seed"], "0");
    assert_eq!(back["artifacts"]["config.json"], sha256_file(&files[0]));
    assert_eq!(back["artifacts"]["model/best.safetensors"], sha256_file(&files[2]));

    // A second sync (the server now from the run's state) finds nothing to add.
    let second = lits().arg("sync").arg(run_dir).output().unwrap();
    let stdout = String::from_utf8_lossy(&second.stdout);
    assert!(second.status.success(), "{stdout}{}", String::from_utf8_lossy(&second.stderr));
    assert!(stdout.contains("metrics     0 of 20 points sent"), "{stdout}");
    assert!(stdout.contains("artifacts   0 uploaded") && stdout.contains("params      0 sent"), "{stdout}");
    assert_eq!(server_history(&readback(&srv.uri, &run_id)), local_history(run_dir), "no duplicates");
}
