//! Experiment tracking in an MLflow tracking server, over its REST API.
//!
//! Tracking is off unless a server is named (`--tracking-uri`, `MLFLOW_TRACKING_URI`). The
//! run directory is the source of truth either way: every record the trainer hands to the
//! [`Tracker`] is appended to `RUN_DIR/tracking/outbox.jsonl` before anything is sent. With a
//! server, a background thread follows that journal and sends the records in order (params
//! and tags, per-epoch metrics with step and timestamp through `runs/log-batch` within
//! MLflow's limits, artifacts through the server's artifact proxy, the final status),
//! retrying with backoff, and notes in `RUN_DIR/tracking/state.json` which server run they
//! went to and how many the server acknowledged. The trainer's calls only append a line and
//! nudge the sender, so a server that is down, slow or answering errors never stops or
//! slows training; it costs one warning. [`sync`] uploads what is missing later, comparing
//! with what the server holds, so running it twice adds nothing twice.
#![warn(missing_docs)]

mod auth;
mod client;
mod error;
mod journal;
mod params;
mod remote;
mod sync;
mod worker;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use auth::Auth;
pub use error::{Error, Result};
pub use journal::{read_state, Num, Record, RunStatus, SyncState, OUTBOX_FILE, STATE_FILE, TRACKING_DIR};
pub use params::{config_hash, flatten_params, git_commit, standard_tags};
pub use sync::{sync, sync_with_auth, SyncReport};

use client::{parse_uri, Client};
use journal::{Outbox, Paths};
use worker::{Shared, Worker, FINISH_WAIT, STALL};

/// Experiment the runs go to when `MLFLOW_EXPERIMENT_NAME` is not set (MLflow's own default).
pub const DEFAULT_EXPERIMENT: &str = "Default";

/// Where a run is tracked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackingConfig {
    /// Tracking server (`http://host:port`); `None` keeps everything in the run directory.
    pub uri: Option<String>,
    /// MLflow experiment, created on the server when missing.
    pub experiment: String,
    /// MLflow run name.
    pub run_name: String,
}

impl TrackingConfig {
    /// The flag wins over `MLFLOW_TRACKING_URI`; the experiment comes from
    /// `MLFLOW_EXPERIMENT_NAME`, else [`DEFAULT_EXPERIMENT`]. Empty values count as unset.
    pub fn from_env_and_flag(flag_uri: Option<String>, run_name: &str) -> Self {
        Self::from_vars(flag_uri, run_name, |k| std::env::var(k).ok())
    }

    /// [`TrackingConfig::from_env_and_flag`] over any variable lookup.
    pub fn from_vars(flag_uri: Option<String>, run_name: &str, get: impl Fn(&str) -> Option<String>) -> Self {
        let get = |k: &str| get(k).filter(|v| !v.trim().is_empty());
        TrackingConfig {
            uri: flag_uri.filter(|u| !u.trim().is_empty()).or_else(|| get("MLFLOW_TRACKING_URI")),
            experiment: get("MLFLOW_EXPERIMENT_NAME").unwrap_or_else(|| DEFAULT_EXPERIMENT.to_owned()),
            run_name: run_name.to_owned(),
        }
    }
}

/// Prints a tracking warning. Tracking never fails training, so its problems are reported,
/// not returned.
pub(crate) fn warn(msg: &str) {
    eprintln!("warning: tracking: {msg}");
}

/// The wait of `LITS_TRACKING_WAIT` (seconds), when set to a number; a value that is not
/// one is reported and ignored.
fn wait_from_env() -> Option<Duration> {
    let v = std::env::var("LITS_TRACKING_WAIT").ok()?;
    match v.trim().parse::<f64>() {
        Ok(s) if s.is_finite() && s >= 0.0 => Some(Duration::from_secs_f64(s.min(86_400.0))),
        _ => {
            warn(&format!("LITS_TRACKING_WAIT={v:?} is not a number of seconds; waiting the usual {} s", FINISH_WAIT.as_secs()));
            None
        }
    }
}

/// Unix time in milliseconds (0 before 1970), the clock of every record lits keeps.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// The handle a training run logs through. Every call appends to the run's journal and
/// returns; sending happens on a background thread. Nothing here fails or blocks training:
/// problems become one warning each.
#[derive(Debug)]
pub struct Tracker {
    run_dir: PathBuf,
    outbox: Option<Mutex<Outbox>>,
    sender: Option<Sender>,
    write_failed: AtomicBool,
}

#[derive(Debug)]
struct Sender {
    uri: String,
    shared: Arc<Shared>,
    wake: SyncSender<()>,
    // In a Mutex only so that a Tracker can be shared between threads.
    done: Mutex<Receiver<()>>,
}

impl Sender {
    /// Waits until the sender has delivered everything, at most `wait`. Gives up at once
    /// when the server is known to be unavailable, and as soon as one call has been waiting
    /// for an answer longer than [`STALL`]: a server that does not answer would otherwise
    /// hold the end of training for the whole `wait`.
    fn drained(&self, wait: Duration, stall: Duration) -> bool {
        let deadline = Instant::now() + wait;
        let Ok(done) = self.done.lock() else { return false };
        loop {
            if self.shared.down.load(Ordering::SeqCst) || self.shared.offline.load(Ordering::SeqCst) {
                return false;
            }
            let started = self.shared.call_started_ms.load(Ordering::SeqCst);
            if started != 0 && now_ms() - started > stall.as_millis() as i64 {
                return false;
            }
            if Instant::now() >= deadline {
                return false;
            }
            if done.recv_timeout(Duration::from_millis(10)).is_ok() {
                return true;
            }
        }
    }
}

impl Tracker {
    /// Starts tracking a run whose directory is `run_dir`, with credentials from the
    /// environment ([`Auth::from_env`]). Appends a `start` record (a run directory that
    /// already has a journal is a resumed run: it continues the same server run).
    pub fn start(run_dir: &Path, cfg: &TrackingConfig, tags: &[(String, String)], params: &[(String, String)]) -> Tracker {
        Tracker::start_with_auth(run_dir, cfg, Auth::from_env(), tags, params)
    }

    /// [`Tracker::start`] with explicit credentials.
    pub fn start_with_auth(
        run_dir: &Path,
        cfg: &TrackingConfig,
        auth: Auth,
        tags: &[(String, String)],
        params: &[(String, String)],
    ) -> Tracker {
        let paths = Paths::new(run_dir);
        let existing = std::fs::read(&paths.outbox).map_or(0, |b| b.iter().filter(|&&c| c == b'\n').count());
        let outbox = match Outbox::open(&paths) {
            Ok(o) => Some(Mutex::new(o)),
            Err(e) => {
                warn(&format!("cannot write the tracking journal ({e}); this run is not tracked"));
                None
            }
        };
        let mut tracker = Tracker { run_dir: run_dir.to_owned(), outbox, sender: None, write_failed: AtomicBool::new(false) };
        tracker.append(Record::Start {
            time_ms: now_ms(),
            experiment: cfg.experiment.clone(),
            run_name: cfg.run_name.clone(),
            tags: tags.iter().cloned().collect(),
            params: params.iter().cloned().collect(),
        });
        if let (Some(uri), Some(_)) = (&cfg.uri, &tracker.outbox) {
            tracker.sender = tracker.spawn(uri, auth, existing + 1);
        }
        tracker
    }

    fn spawn(&self, uri: &str, auth: Auth, written: usize) -> Option<Sender> {
        let client = match parse_uri(uri).and_then(|_| Client::new(uri, auth)) {
            Ok(c) => c,
            Err(e) => {
                warn(&format!("{e}; this run stays in {} (`lits sync` uploads it later)", self.run_dir.display()));
                return None;
            }
        };
        let shared = Arc::new(Shared::default());
        shared.written.store(written, Ordering::SeqCst);
        // Capacity 1: a wake-up already waiting says all there is to say.
        let (wake_tx, wake_rx) = sync_channel(1);
        let (done_tx, done_rx) = sync_channel(1);
        let uri = client.uri().to_owned();
        let worker = Worker { client, run_dir: self.run_dir.clone(), shared: Arc::clone(&shared), wake: wake_rx, done: done_tx };
        match std::thread::Builder::new().name("lits-tracking".into()).spawn(move || worker.run()) {
            Ok(_) => Some(Sender { uri, shared, wake: wake_tx, done: Mutex::new(done_rx) }),
            Err(e) => {
                warn(&format!("cannot start the tracking thread ({e}); this run stays in the run directory"));
                None
            }
        }
    }

    fn append(&self, record: Record) {
        let Some(outbox) = &self.outbox else { return };
        let result = outbox.lock().map_err(|_| ()).and_then(|mut o| {
            o.append(&record).map_err(|e| {
                if !self.write_failed.swap(true, Ordering::SeqCst) {
                    warn(&format!("cannot append to the tracking journal: {e}"));
                }
            })
        });
        if result.is_ok() {
            if let Some(s) = &self.sender {
                s.shared.written.fetch_add(1, Ordering::SeqCst);
                // Full means a wake-up is already pending; the record is in the journal either way.
                let _ = s.wake.try_send(());
            }
        }
    }

    /// Logs the metrics of one step (epoch). `timestamp_ms` is when they were measured,
    /// milliseconds since the Unix epoch.
    pub fn log_metrics(&self, step: i64, timestamp_ms: i64, metrics: &[(String, f64)]) {
        let values: BTreeMap<String, Num> = metrics.iter().map(|(k, v)| (k.clone(), Num(*v))).collect();
        self.append(Record::Metrics { step, timestamp_ms, values });
    }

    /// Stores a file (or every file below a folder) with the run, under `artifact_subdir`
    /// ("" for the top). The content is read when it is sent, so log a file once it is
    /// complete; logging the same path again uploads its new content.
    pub fn log_artifact(&self, path: &Path, artifact_subdir: &str) {
        self.append(Record::Artifact { path: self.journal_path(path), dir: artifact_subdir.trim_matches('/').to_owned() });
    }

    /// Inside the run directory a path is kept relative, so the directory can move.
    fn journal_path(&self, path: &Path) -> String {
        let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_owned());
        let (file, dir) = (canon(path), canon(&self.run_dir));
        file.strip_prefix(&dir).map_or(file.clone(), Path::to_owned).to_string_lossy().into_owned()
    }

    /// The server run's records not yet acknowledged; 0 when tracking is off.
    pub fn unsent(&self) -> usize {
        self.sender.as_ref().map_or(0, |s| s.shared.written.load(Ordering::SeqCst).saturating_sub(s.shared.acked.load(Ordering::SeqCst)))
    }

    /// Whether a background sender is working for this run (a server was named and it has
    /// not refused the run for good).
    pub fn is_online(&self) -> bool {
        self.sender.as_ref().is_some_and(|s| !s.shared.offline.load(Ordering::SeqCst))
    }

    /// Records the end of the run and gives the sender a few seconds to deliver what is
    /// left; returns at once when the server is known to be unavailable, and after a couple
    /// of seconds when it stopped answering. What is not sent stays in the journal for
    /// `lits sync`.
    ///
    /// With `LITS_TRACKING_WAIT=SECONDS` in the environment it waits up to that long
    /// instead, however slowly the server answers (for a slow or distant server, or a CI
    /// job that must end with everything on the server).
    pub fn finish(self, status: RunStatus) {
        match wait_from_env() {
            Some(wait) => self.finish_bounded(status, wait, wait),
            None => self.finish_within(status, FINISH_WAIT),
        }
    }

    /// [`Tracker::finish`] with another bound on the wait.
    pub fn finish_within(self, status: RunStatus, wait: Duration) {
        self.finish_bounded(status, wait, STALL);
    }

    fn finish_bounded(mut self, status: RunStatus, wait: Duration, stall: Duration) {
        self.append(Record::End { time_ms: now_ms(), status });
        let Some(s) = self.sender.take() else { return };
        s.shared.finishing.store(true, Ordering::SeqCst);
        let _ = s.wake.try_send(());
        if !s.drained(wait, stall) {
            s.shared.stop.store(true, Ordering::SeqCst);
        }
        let left = s.shared.written.load(Ordering::SeqCst).saturating_sub(s.shared.acked.load(Ordering::SeqCst));
        if left > 0 {
            warn(&format!(
                "{left} record(s) of this run not sent to {}; they are kept in {} and `lits sync {}` uploads them",
                s.uri,
                Paths::new(&self.run_dir).outbox.display(),
                self.run_dir.display()
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn cfg(flag: Option<&str>, vars: &[(&str, &str)]) -> TrackingConfig {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        TrackingConfig::from_vars(flag.map(str::to_owned), "r1", |k| map.get(k).cloned())
    }

    #[test]
    fn tracking_is_off_by_default_and_the_flag_wins() {
        assert_eq!(cfg(None, &[]).uri, None);
        assert_eq!(cfg(None, &[]).experiment, DEFAULT_EXPERIMENT);
        let env = [("MLFLOW_TRACKING_URI", "http://env:1"), ("MLFLOW_EXPERIMENT_NAME", "liver")];
        assert_eq!(cfg(None, &env).uri.as_deref(), Some("http://env:1"));
        assert_eq!(cfg(Some("http://flag:2"), &env).uri.as_deref(), Some("http://flag:2"));
        assert_eq!(cfg(Some(""), &env).uri.as_deref(), Some("http://env:1"));
        assert_eq!(cfg(None, &env).experiment, "liver");
        assert_eq!(cfg(None, &env).run_name, "r1");
    }

    #[test]
    fn untracked_run_still_journals_everything() {
        let dir = tempfile::tempdir().unwrap();
        let t = Tracker::start(dir.path(), &cfg(None, &[]), &[("t".into(), "1".into())], &[("p".into(), "2".into())]);
        assert!(!t.is_online());
        t.log_metrics(0, 10, &[("loss".into(), 0.5)]);
        std::fs::write(dir.path().join("config.json"), "{}").unwrap();
        t.log_artifact(&dir.path().join("config.json"), "");
        t.finish(RunStatus::Finished);
        let records = journal::read_outbox(&Paths::new(dir.path()).outbox).unwrap();
        assert_eq!(records.len(), 4);
        assert!(matches!(&records[0], Record::Start { params, .. } if params["p"] == "2"));
        assert_eq!(records[2], Record::Artifact { path: "config.json".into(), dir: String::new() });
        assert!(matches!(records[3], Record::End { status: RunStatus::Finished, .. }));
        assert_eq!(read_state(dir.path()).unwrap(), None);
    }

    #[test]
    fn unusable_uri_warns_and_stays_local() {
        let dir = tempfile::tempdir().unwrap();
        let t = Tracker::start(dir.path(), &cfg(Some("file:///tmp/mlruns"), &[]), &[], &[]);
        assert!(!t.is_online());
        t.log_metrics(0, 10, &[("loss".into(), 0.5)]);
        t.finish(RunStatus::Failed);
        assert_eq!(journal::read_outbox(&Paths::new(dir.path()).outbox).unwrap().len(), 3);
    }
}
