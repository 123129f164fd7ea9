//! The server run that a journal goes to, and the operations the background sender and
//! `sync` share: open or create the run, bring params and tags up to date, send metrics
//! within MLflow's batch limits, upload artifacts, set the final status.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::client::{
    ArtifactRoot, Client, KeyValue, Metric, MAX_METRICS_PER_BATCH, MAX_PARAMS_TAGS_PER_BATCH, MAX_PARAM_VALUE_LEN, MAX_TAG_VALUE_LEN,
};
use super::error::{Error, Result};
use super::journal::{write_state, Paths, Record, RunStatus, SyncState};

/// What bringing params and tags up to date did.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct ParamOutcome {
    pub params_sent: usize,
    pub tags_sent: usize,
    /// Params the server already holds with another value (MLflow never changes a param).
    pub conflicts: Vec<String>,
}

/// A run on the tracking server plus the local state that records it.
pub(crate) struct Remote {
    pub client: Client,
    pub state: SyncState,
    pub created: bool,
    paths: Paths,
    run_dir: PathBuf,
    root: Option<ArtifactRoot>,
}

/// Experiment, run name and start time of the first `start` record.
pub(crate) fn first_start(records: &[Record]) -> Option<(&str, &str, i64)> {
    records.iter().find_map(|r| match r {
        Record::Start { experiment, run_name, time_ms, .. } => Some((experiment.as_str(), run_name.as_str(), *time_ms)),
        _ => None,
    })
}

impl Remote {
    /// Continues the run named in `state` when it is on this server and still there,
    /// otherwise creates a new run (and forgets what `state` says was acknowledged).
    pub fn open(client: Client, run_dir: &Path, state: Option<SyncState>, start: (&str, &str, i64)) -> Result<Remote> {
        let paths = Paths::new(run_dir);
        if let Some(state) = state.filter(|s| s.uri == client.uri() && !s.run_id.is_empty()) {
            if let Some(run) = client.get_run(&state.run_id)? {
                if run.info.lifecycle_stage != "deleted" {
                    let state = SyncState { artifact_uri: run.info.artifact_uri, ..state };
                    return Ok(Remote { client, state, created: false, paths, run_dir: run_dir.to_owned(), root: None });
                }
            }
        }
        let (experiment, run_name, start_time) = start;
        let experiment_id = client.ensure_experiment(experiment)?;
        let info = client.create_run(&experiment_id, run_name, start_time, &[])?;
        let state = SyncState {
            uri: client.uri().to_owned(),
            experiment_id: info.experiment_id,
            run_id: info.run_id,
            artifact_uri: info.artifact_uri,
            acked: 0,
            artifacts: BTreeMap::new(),
        };
        let remote = Remote { client, state, created: true, paths, run_dir: run_dir.to_owned(), root: None };
        remote.save()?;
        Ok(remote)
    }

    pub fn save(&self) -> Result<()> {
        write_state(&self.paths, &self.state)
    }

    /// Sends the tags that differ from the server's and the params it lacks.
    pub fn update_params(&self, tags: &BTreeMap<String, String>, params: &BTreeMap<String, String>) -> Result<ParamOutcome> {
        let run = self.client.get_run(&self.state.run_id)?.ok_or_else(|| self.gone())?;
        let have_tags: BTreeMap<_, _> = run.data.tags.into_iter().map(|kv| (kv.key, kv.value)).collect();
        let have_params: BTreeMap<_, _> = run.data.params.into_iter().map(|kv| (kv.key, kv.value)).collect();
        let mut out = ParamOutcome::default();
        let tags: Vec<KeyValue> = tags
            .iter()
            .map(|(k, v)| KeyValue { key: k.clone(), value: truncate(v, MAX_TAG_VALUE_LEN) })
            .filter(|kv| have_tags.get(&kv.key) != Some(&kv.value))
            .collect();
        let mut new_params = Vec::new();
        for (k, v) in params {
            let value = truncate(v, MAX_PARAM_VALUE_LEN);
            match have_params.get(k) {
                None => new_params.push(KeyValue { key: k.clone(), value }),
                Some(old) if *old != value => out.conflicts.push(format!("{k} (server {old:?}, run {value:?})")),
                Some(_) => {}
            }
        }
        let batches = tags.len().max(new_params.len()).div_ceil(MAX_PARAMS_TAGS_PER_BATCH);
        for b in 0..batches {
            let range = |len: usize| (b * MAX_PARAMS_TAGS_PER_BATCH).min(len)..((b + 1) * MAX_PARAMS_TAGS_PER_BATCH).min(len);
            self.client.log_batch(&self.state.run_id, &[], &new_params[range(new_params.len())], &tags[range(tags.len())])?;
        }
        out.params_sent = new_params.len();
        out.tags_sent = tags.len();
        Ok(out)
    }

    /// Sends metric points in batches of at most MLflow's limit.
    pub fn send_metrics(&self, points: &[Metric]) -> Result<()> {
        for chunk in points.chunks(MAX_METRICS_PER_BATCH) {
            self.client.log_batch(&self.state.run_id, chunk, &[], &[])?;
        }
        Ok(())
    }

    fn gone(&self) -> Error {
        Error::Rejected {
            uri: self.client.uri().to_owned(),
            what: "runs/get".to_owned(),
            message: format!("run {} is no longer on the server", self.state.run_id),
        }
    }

    fn root(&mut self) -> Result<ArtifactRoot> {
        if self.root.is_none() {
            self.root = Some(self.client.artifact_root(&self.state.artifact_uri)?);
        }
        Ok(self.root.clone().expect("set above"))
    }

    /// The local files an `artifact` record names (a folder stands for every file below
    /// it) with their paths among the run's artifacts. A missing file is an `Io` error.
    pub fn artifact_files(&self, path: &str, dir: &str) -> Result<Vec<(PathBuf, String)>> {
        let local = self.run_dir.join(path);
        let meta = std::fs::metadata(&local).map_err(|e| Error::io(&local, e))?;
        let name = local.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let top = join_rel(dir, &name);
        if !meta.is_dir() {
            return Ok(vec![(local, top)]);
        }
        let mut files = Vec::new();
        let mut stack = vec![(local, top)];
        while let Some((folder, rel)) = stack.pop() {
            let entries = std::fs::read_dir(&folder).map_err(|e| Error::io(&folder, e))?;
            for entry in entries {
                let entry = entry.map_err(|e| Error::io(&folder, e))?;
                let child = (entry.path(), join_rel(&rel, &entry.file_name().to_string_lossy()));
                if entry.file_type().map_err(|e| Error::io(entry.path(), e))?.is_dir() {
                    stack.push(child);
                } else {
                    files.push(child);
                }
            }
        }
        files.sort_by(|a, b| a.1.cmp(&b.1));
        Ok(files)
    }

    /// Uploads one file unless `skip_if_same` and the server already holds this content
    /// (same SHA-256 recorded at upload, same size in the server's listing). Returns
    /// whether it uploaded.
    pub fn upload(&mut self, local: &Path, rel: &str, skip_if_same: bool) -> Result<bool> {
        let bytes = std::fs::read(local).map_err(|e| Error::io(local, e))?;
        let sha = format!("{:x}", Sha256::digest(&bytes));
        let root = self.root()?;
        if skip_if_same && self.state.artifacts.get(rel) == Some(&sha) {
            let (parent, name) = rel.rsplit_once('/').unwrap_or(("", rel));
            let listing = self.client.list_artifacts(&root, parent)?;
            let on_server =
                listing.iter().any(|f| !f.is_dir && f.path.rsplit('/').next() == Some(name) && f.file_size == Some(bytes.len() as i64));
            if on_server {
                return Ok(false);
            }
        }
        self.client.upload_artifact(&root, rel, bytes)?;
        self.state.artifacts.insert(rel.to_owned(), sha);
        Ok(true)
    }

    /// Sets the run's final status; returns whether the server's differed.
    pub fn end(&self, time_ms: i64, status: RunStatus, only_if_different: bool) -> Result<bool> {
        if only_if_different {
            let run = self.client.get_run(&self.state.run_id)?.ok_or_else(|| self.gone())?;
            if run.info.status == status.as_mlflow() && run.info.end_time == Some(time_ms) {
                return Ok(false);
            }
        }
        self.client.update_run(&self.state.run_id, status.as_mlflow(), Some(time_ms))?;
        Ok(true)
    }

    /// Marks the run running again (a resumed run after an `end`).
    pub fn reopen(&self) -> Result<()> {
        self.client.update_run(&self.state.run_id, "RUNNING", None)
    }
}

fn join_rel(dir: &str, name: &str) -> String {
    let dir = dir.trim_matches('/');
    if dir.is_empty() {
        name.to_owned()
    } else {
        format!("{dir}/{name}")
    }
}

/// Cuts a value to MLflow's limit (on a character boundary).
fn truncate(v: &str, max: usize) -> String {
    match v.char_indices().nth(max) {
        Some((i, _)) => v[..i].to_owned(),
        None => v.to_owned(),
    }
}

/// Metric points of `metrics` records, in journal order.
pub(crate) fn metric_points<'a>(records: impl IntoIterator<Item = &'a Record>) -> Vec<Metric> {
    let mut points = Vec::new();
    for r in records {
        if let Record::Metrics { step, timestamp_ms, values } = r {
            points.extend(values.iter().map(|(k, v)| Metric { key: k.clone(), value: *v, timestamp: *timestamp_ms, step: *step }));
        }
    }
    points
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_respects_char_boundaries() {
        assert_eq!(truncate("abc", 5), "abc");
        assert_eq!(truncate("äöü", 2), "äö");
    }

    #[test]
    fn rel_paths_join_without_stray_slashes() {
        assert_eq!(join_rel("", "a.json"), "a.json");
        assert_eq!(join_rel("/plots/", "a.png"), "plots/a.png");
    }
}
