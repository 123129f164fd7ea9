//! Tracking against a real MLflow server (started once for this test binary through
//! `scripts/mlflow_server.sh`), read back with MLflow's own Python client.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::OnceLock;

use lits_tracking::{config_hash, flatten_params, read_state, standard_tags, sync_with_auth, Auth, RunStatus, Tracker, TrackingConfig};
use support::{journal, local_history, now_ms, readback, readback_skipping, server_history, sha256_file, write_run_files, MlflowServer};

fn server() -> &'static MlflowServer {
    static SERVER: OnceLock<MlflowServer> = OnceLock::new();
    SERVER.get_or_init(MlflowServer::start)
}

fn config(uri: Option<&str>, experiment: &str, run_name: &str) -> TrackingConfig {
    TrackingConfig { uri: uri.map(str::to_owned), experiment: experiment.to_owned(), run_name: run_name.to_owned() }
}

/// A configuration with more fields than one log-batch may carry (MLflow allows 100 params).
fn big_config() -> serde_json::Value {
    let mut extra = serde_json::Map::new();
    for i in 0..140 {
        extra.insert(format!("f{i:03}"), serde_json::json!(i as f64 / 7.0));
    }
    serde_json::json!({"seed": 0, "optimizer": {"lr": 1e-4, "betas": [0.9, 0.999]}, "extra": extra})
}

/// Logs `epochs` epochs of a few scalar metrics (the loss is NaN at epoch 2).
fn log_epochs(t: &Tracker, epochs: std::ops::Range<i64>) {
    for epoch in epochs {
        let m = vec![
            ("train_loss".to_owned(), if epoch == 2 { f64::NAN } else { 1.0 / (epoch as f64 + 1.0) }),
            ("iou_liver".to_owned(), 0.5 + epoch as f64 * 0.01),
            ("lr".to_owned(), 1e-4),
        ];
        t.log_metrics(epoch, now_ms() + epoch, &m);
    }
}

/// More values in one step than one log-batch may carry (MLflow allows 1000 metrics).
const WIDE: &str = "wide/";
fn wide_metrics() -> Vec<(String, f64)> {
    (0..1001).map(|i| (format!("{WIDE}k{i:04}"), i as f64 * 0.5)).collect()
}

fn wait_until_sent(t: &Tracker) {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while t.unsent() > 0 && std::time::Instant::now() < until {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// The server's metric histories equal the journal's (keys starting with `WIDE` are
/// compared by their latest value only).
fn assert_history_matches(run_dir: &Path, back: &serde_json::Value) {
    let (wide, local): (BTreeMap<_, _>, BTreeMap<_, _>) = local_history(run_dir).into_iter().partition(|(k, _)| k.starts_with(WIDE));
    let remote = server_history(back);
    assert_eq!(local.keys().collect::<Vec<_>>(), remote.keys().collect::<Vec<_>>(), "metric keys differ");
    for (key, points) in &local {
        assert_eq!(Some(points), remote.get(key), "history of {key}");
    }
    for (key, points) in &wide {
        assert_eq!(back["latest"][key], points.last().unwrap()[2], "latest {key}");
    }
    let latest = back["latest"].as_object().unwrap();
    assert_eq!(latest.len(), local.len() + wide.len(), "number of metric keys on the server");
}

#[test]
fn a_tracked_run_reads_back_with_mlflows_client() {
    let srv = server();
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path();
    let files = write_run_files(run_dir);
    let cfg = big_config();
    let params = flatten_params(&cfg);
    assert!(params.len() > 100);
    let tags = standard_tags(Some("0123456789abcdef0123456789abcdef01234567"), &config_hash(&cfg));
    let t = Tracker::start_with_auth(run_dir, &config(Some(&srv.uri), "lits-tests", "quick"), Auth::None, &tags, &params);
    assert!(t.is_online());
    t.log_metrics(0, now_ms(), &wide_metrics());
    log_epochs(&t, 0..6);
    t.log_artifact(&files[0], "");
    t.log_artifact(&run_dir.join("plots"), "");
    t.log_artifact(&files[2], "weights");
    wait_until_sent(&t);
    t.finish(RunStatus::Finished);

    let state = read_state(run_dir).unwrap().expect("the run reached the server");
    assert_eq!(state.acked, journal(run_dir).len(), "every record acknowledged");
    let back = readback_skipping(&srv.uri, &state.run_id, Some(WIDE));
    assert_eq!(back["run_name"], "quick");
    assert_eq!(back["experiment"], "lits-tests");
    assert_eq!(back["status"], "FINISHED");
    let server_params = back["params"].as_object().unwrap();
    assert_eq!(server_params.len(), params.len());
    for (k, v) in &params {
        assert_eq!(server_params[k], *v, "param {k}");
    }
    for (k, v) in &tags {
        assert_eq!(back["tags"][k], *v, "tag {k}");
    }
    assert_history_matches(run_dir, &back);
    assert_eq!(back["metrics"]["train_loss"][2][2], "nan", "a NaN loss stays NaN");
    let artifacts = back["artifacts"].as_object().unwrap();
    assert_eq!(artifacts.len(), 3, "{artifacts:?}");
    assert_eq!(artifacts["config.json"], sha256_file(&files[0]));
    assert_eq!(artifacts["plots/loss.svg"], sha256_file(&files[1]));
    assert_eq!(artifacts["weights/best.safetensors"], sha256_file(&files[2]));

    // The background sender left nothing for sync to do.
    let report = sync_with_auth(run_dir, None, Auth::None).unwrap();
    assert_eq!((report.run_id.as_str(), report.created_run), (state.run_id.as_str(), false));
    assert_eq!((report.params_sent, report.tags_sent, report.metrics_sent, report.artifacts_sent), (0, 0, 0, 0));
    assert_eq!(report.status_set, None);
}

#[test]
fn a_resumed_run_continues_the_same_server_run() {
    let srv = server();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(Some(&srv.uri), "lits-tests", "resumed");
    let params = vec![("epochs".to_owned(), "4".to_owned())];
    let t = Tracker::start_with_auth(dir.path(), &cfg, Auth::None, &[], &params);
    log_epochs(&t, 0..2);
    wait_until_sent(&t);
    t.finish(RunStatus::Killed);
    let first = read_state(dir.path()).unwrap().unwrap();
    assert_eq!(readback(&srv.uri, &first.run_id)["status"], "KILLED");

    let t = Tracker::start_with_auth(dir.path(), &cfg, Auth::None, &[], &params);
    log_epochs(&t, 2..4);
    wait_until_sent(&t);
    t.finish(RunStatus::Finished);
    let second = read_state(dir.path()).unwrap().unwrap();
    assert_eq!(second.run_id, first.run_id);
    let back = readback(&srv.uri, &second.run_id);
    assert_eq!(back["status"], "FINISHED");
    assert_eq!(back["metrics"]["iou_liver"].as_array().unwrap().len(), 4);
    assert_history_matches(dir.path(), &back);
}

#[test]
fn an_untracked_run_syncs_later_and_only_once() {
    let srv = server();
    let dir = tempfile::tempdir().unwrap();
    let files = write_run_files(dir.path());
    let t = Tracker::start(dir.path(), &config(None, "lits-offline", "offline"), &[], &[("seed".into(), "0".into())]);
    assert!(!t.is_online());
    log_epochs(&t, 0..3);
    t.log_metrics(3, now_ms(), &wide_metrics());
    t.log_artifact(&files[0], "");
    t.finish(RunStatus::Finished);
    assert_eq!(read_state(dir.path()).unwrap(), None, "nothing went to a server");

    let first = sync_with_auth(dir.path(), Some(srv.uri.clone()), Auth::None).unwrap();
    assert!(first.created_run);
    assert_eq!((first.params_sent, first.metrics_sent, first.artifacts_sent), (1, first.metrics_total, 1));
    assert_eq!(first.status_set.as_deref(), Some("FINISHED"));
    // The second sync finds the server run in the state and has nothing to add.
    let second = sync_with_auth(dir.path(), None, Auth::None).unwrap();
    assert_eq!(second.run_id, first.run_id);
    assert_eq!((second.params_sent, second.tags_sent, second.metrics_sent, second.artifacts_sent), (0, 0, 0, 0));
    let back = readback_skipping(&srv.uri, &first.run_id, Some(WIDE));
    assert_eq!(back["experiment"], "lits-offline");
    assert_eq!(back["status"], "FINISHED");
    assert_history_matches(dir.path(), &back);
    assert_eq!(back["artifacts"]["config.json"], sha256_file(&files[0]));
}
