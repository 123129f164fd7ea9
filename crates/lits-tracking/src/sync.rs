//! `lits sync`: brings a server run up to date with a run directory's journal, after the
//! fact. It compares with what the server holds instead of trusting what was acknowledged,
//! so it is idempotent: metric points are matched on (key, step, timestamp), params and tags
//! on their values, artifacts on content hash and size.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::Path;

use super::auth::Auth;
use super::client::Client;
use super::error::{Error, Result};
use super::journal::{read_outbox, read_state, Paths, Record};
use super::remote::{first_start, metric_points, Remote};

/// What a sync did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SyncReport {
    /// Tracking server.
    pub uri: String,
    /// MLflow experiment id.
    pub experiment_id: String,
    /// MLflow run id.
    pub run_id: String,
    /// Whether the run was created by this sync (the run directory had not reached this
    /// server, or its run was gone).
    pub created_run: bool,
    /// Records in the journal.
    pub records: usize,
    /// Params sent.
    pub params_sent: usize,
    /// Tags sent (new or changed).
    pub tags_sent: usize,
    /// Metric points sent (those the server lacked).
    pub metrics_sent: usize,
    /// Metric points in the journal.
    pub metrics_total: usize,
    /// Artifact files uploaded.
    pub artifacts_sent: usize,
    /// Status set on the server run, when it changed.
    pub status_set: Option<String>,
    /// Artifact files named in the journal that no longer exist locally.
    pub missing_files: Vec<String>,
    /// Params the server holds with another value (MLflow never changes a param).
    pub param_conflicts: Vec<String>,
}

impl fmt::Display for SyncReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "server      {}", self.uri)?;
        writeln!(f, "run         {} (experiment {}{})", self.run_id, self.experiment_id, if self.created_run { ", created" } else { "" })?;
        writeln!(f, "params      {} sent", self.params_sent)?;
        writeln!(f, "tags        {} sent", self.tags_sent)?;
        writeln!(f, "metrics     {} of {} points sent (the server had the rest)", self.metrics_sent, self.metrics_total)?;
        writeln!(f, "artifacts   {} uploaded", self.artifacts_sent)?;
        writeln!(f, "status      {}", self.status_set.as_deref().unwrap_or("unchanged"))?;
        for m in &self.missing_files {
            writeln!(f, "missing     {m} (named in the journal, not found locally)")?;
        }
        for c in &self.param_conflicts {
            writeln!(f, "conflict    param {c}")?;
        }
        Ok(())
    }
}

/// Uploads what the server lacks of the run in `run_dir`, with credentials from the
/// environment. The server is `uri`, else `MLFLOW_TRACKING_URI`, else the one the run
/// last reached (from `tracking/state.json`).
pub fn sync(run_dir: &Path, uri: Option<String>) -> Result<SyncReport> {
    let env_uri = std::env::var("MLFLOW_TRACKING_URI").ok().filter(|u| !u.trim().is_empty());
    sync_with_auth(run_dir, uri.or(env_uri), Auth::from_env())
}

/// [`sync`] with explicit credentials; `uri` falls back only to the run's state.
pub fn sync_with_auth(run_dir: &Path, uri: Option<String>, auth: Auth) -> Result<SyncReport> {
    let paths = Paths::new(run_dir);
    if !paths.outbox.is_file() {
        return Err(Error::NoJournal { path: paths.outbox });
    }
    let records = read_outbox(&paths.outbox)?;
    let state = read_state(run_dir)?;
    let uri = uri.filter(|u| !u.trim().is_empty()).or_else(|| state.as_ref().map(|s| s.uri.clone())).ok_or(Error::NoUri)?;
    let start = first_start(&records).ok_or_else(|| Error::Journal {
        path: paths.outbox.clone(),
        line: 1,
        message: "no start record".to_owned(),
    })?;
    let client = Client::new(&uri, auth)?;
    let mut remote = Remote::open(client, run_dir, state, start)?;
    let mut report = SyncReport {
        uri: remote.client.uri().to_owned(),
        experiment_id: remote.state.experiment_id.clone(),
        run_id: remote.state.run_id.clone(),
        created_run: remote.created,
        records: records.len(),
        ..SyncReport::default()
    };

    // Later start records (a resumed run) win for tags; MLflow keeps the first param value.
    let (mut tags, mut params) = (BTreeMap::new(), BTreeMap::new());
    for r in &records {
        if let Record::Start { tags: t, params: p, .. } = r {
            tags.extend(t.clone());
            for (k, v) in p {
                params.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
    }
    let outcome = remote.update_params(&tags, &params)?;
    report.params_sent = outcome.params_sent;
    report.tags_sent = outcome.tags_sent;
    report.param_conflicts = outcome.conflicts;

    let local = metric_points(&records);
    report.metrics_total = local.len();
    let keys: Vec<&str> = local.iter().map(|m| m.key.as_str()).collect::<std::collections::BTreeSet<_>>().into_iter().collect();
    let mut have: HashSet<(String, i64, i64)> = HashSet::new();
    for key in keys {
        for m in remote.client.metric_history(&remote.state.run_id, key)? {
            have.insert((m.key, m.step, m.timestamp));
        }
    }
    let missing: Vec<_> = local.into_iter().filter(|m| have.insert((m.key.clone(), m.step, m.timestamp))).collect();
    remote.send_metrics(&missing)?;
    report.metrics_sent = missing.len();

    let mut seen = HashSet::new();
    for r in &records {
        let Record::Artifact { path, dir } = r else { continue };
        if !seen.insert((path.clone(), dir.clone())) {
            continue;
        }
        match remote.artifact_files(path, dir) {
            Ok(files) => {
                for (local, rel) in files {
                    report.artifacts_sent += usize::from(remote.upload(&local, &rel, true)?);
                }
            }
            Err(Error::Io { .. }) => report.missing_files.push(path.clone()),
            Err(e) => return Err(e),
        }
    }

    // The last start or end record says whether the run is over.
    let last = records.iter().rev().find(|r| matches!(r, Record::Start { .. } | Record::End { .. }));
    if let Some(Record::End { time_ms, status }) = last {
        if remote.end(*time_ms, *status, true)? {
            report.status_set = Some(status.as_mlflow().to_owned());
        }
    }
    remote.state.acked = records.len();
    remote.save()?;
    Ok(report)
}
