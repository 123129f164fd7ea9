//! The run directory's tracking journal: what was logged (`tracking/outbox.jsonl`, one JSON
//! record a line, append-only) and what the server acknowledged (`tracking/state.json`).
//!
//! The outbox is written before anything is sent, so it holds the whole tracked history of
//! the run whatever the server did; the state says which server run the records went to.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::error::{Error, Result};

/// Folder of the journal inside a run directory.
pub const TRACKING_DIR: &str = "tracking";
/// Append-only record of everything logged.
pub const OUTBOX_FILE: &str = "outbox.jsonl";
/// Server run and acknowledgement state.
pub const STATE_FILE: &str = "state.json";

/// How a run ended, as MLflow names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RunStatus {
    /// Completed normally.
    Finished,
    /// Stopped by an error.
    Failed,
    /// Stopped from outside (signal, user).
    Killed,
}

impl RunStatus {
    /// MLflow's name of the status.
    pub fn as_mlflow(self) -> &'static str {
        match self {
            RunStatus::Finished => "FINISHED",
            RunStatus::Failed => "FAILED",
            RunStatus::Killed => "KILLED",
        }
    }
}

/// A metric value. JSON has no NaN or infinities, so those are written as the strings
/// `"NaN"`, `"Infinity"` and `"-Infinity"`, which is also how MLflow's JSON API spells them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Num(pub f64);

impl Num {
    /// Equality that treats NaN as equal to NaN (a logged NaN is still the same point).
    pub fn same(self, other: Num) -> bool {
        self.0 == other.0 || (self.0.is_nan() && other.0.is_nan())
    }
}

impl Serialize for Num {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let v = self.0;
        if v.is_nan() {
            s.serialize_str("NaN")
        } else if v.is_infinite() {
            s.serialize_str(if v > 0.0 { "Infinity" } else { "-Infinity" })
        } else {
            s.serialize_f64(v)
        }
    }
}

impl<'de> Deserialize<'de> for Num {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Num, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(f64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Number(v) => Ok(Num(v)),
            Raw::Text(t) => match t.as_str() {
                "NaN" => Ok(Num(f64::NAN)),
                "Infinity" => Ok(Num(f64::INFINITY)),
                "-Infinity" => Ok(Num(f64::NEG_INFINITY)),
                other => other.parse().map(Num).map_err(serde::de::Error::custom),
            },
        }
    }
}

/// Reads an integer written either as a JSON number or as a string (protobuf's JSON form
/// of int64).
pub(crate) fn de_i64<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Number(i64),
        Text(String),
    }
    match Raw::deserialize(d)? {
        Raw::Number(v) => Ok(v),
        Raw::Text(t) => t.parse().map_err(serde::de::Error::custom),
    }
}

/// One line of the outbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "record", rename_all = "snake_case")]
pub enum Record {
    /// The run started (or resumed: a later `start` continues the same server run).
    Start {
        /// Wall-clock start, milliseconds since the Unix epoch.
        time_ms: i64,
        /// MLflow experiment name.
        experiment: String,
        /// MLflow run name.
        run_name: String,
        /// Run tags.
        tags: BTreeMap<String, String>,
        /// Run parameters.
        params: BTreeMap<String, String>,
    },
    /// Metrics of one step (an epoch).
    Metrics {
        /// Step (epoch) number.
        step: i64,
        /// When they were measured, milliseconds since the Unix epoch.
        timestamp_ms: i64,
        /// Metric name to value.
        values: BTreeMap<String, Num>,
    },
    /// A file to store with the run.
    Artifact {
        /// The file: relative to the run directory when it lies inside it, else absolute.
        path: String,
        /// Folder among the run's artifacts ("" for the top).
        dir: String,
    },
    /// The run ended.
    End {
        /// Wall-clock end, milliseconds since the Unix epoch.
        time_ms: i64,
        /// How it ended.
        status: RunStatus,
    },
}

/// What `tracking/state.json` holds: the server run the outbox goes to and how far it got.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SyncState {
    /// Tracking server (credentials removed).
    pub uri: String,
    /// MLflow experiment id.
    pub experiment_id: String,
    /// MLflow run id.
    pub run_id: String,
    /// The run's artifact root as the server reported it.
    pub artifact_uri: String,
    /// Number of outbox records (from the top) the server acknowledged.
    pub acked: usize,
    /// Artifact path on the server to the SHA-256 of the content uploaded there.
    #[serde(default)]
    pub artifacts: BTreeMap<String, String>,
}

/// Paths of the journal of a run directory.
#[derive(Debug, Clone)]
pub(crate) struct Paths {
    pub dir: PathBuf,
    pub outbox: PathBuf,
    pub state: PathBuf,
}

impl Paths {
    pub fn new(run_dir: &Path) -> Paths {
        let dir = run_dir.join(TRACKING_DIR);
        Paths { outbox: dir.join(OUTBOX_FILE), state: dir.join(STATE_FILE), dir }
    }
}

/// Reads `tracking/state.json` of a run directory; `None` when the run never reached a server.
pub fn read_state(run_dir: &Path) -> Result<Option<SyncState>> {
    let path = Paths::new(run_dir).state;
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(path, e)),
    };
    lits_data::json::from_slice(text.as_bytes()).map(Some).map_err(|message| Error::Journal { path, line: 1, message })
}

/// Writes the state atomically, so a crash leaves the old or the new state, never half of one.
pub(crate) fn write_state(paths: &Paths, state: &SyncState) -> Result<()> {
    lits_data::json::write(&paths.state, state).map_err(|e| match e {
        lits_data::Error::Io { path, source } => Error::io(path, source),
        e => Error::Journal { path: paths.state.clone(), line: 1, message: e.to_string() },
    })
}

/// Appends records to the outbox.
#[derive(Debug)]
pub(crate) struct Outbox {
    file: File,
    path: PathBuf,
}

impl Outbox {
    pub fn open(paths: &Paths) -> Result<Outbox> {
        std::fs::create_dir_all(&paths.dir).map_err(|e| Error::io(&paths.dir, e))?;
        let file = OpenOptions::new().create(true).append(true).open(&paths.outbox).map_err(|e| Error::io(&paths.outbox, e))?;
        Ok(Outbox { file, path: paths.outbox.clone() })
    }

    /// Appends one record as one `write` of a whole line, so a reader never sees half a
    /// record followed by another.
    pub fn append(&mut self, record: &Record) -> Result<()> {
        // Metric values that JSON cannot hold are written as MLflow's "NaN"/"Infinity" strings
        // (`Num`); anything else non-finite is refused here, not when the outbox is read.
        let mut line = lits_data::json::to_vec(record).map_err(|message| Error::Journal { path: self.path.clone(), line: 0, message })?;
        line.push(b'\n');
        self.file.write_all(&line).map_err(|e| Error::io(&self.path, e))
    }
}

/// Reads the outbox incrementally while it is being written.
#[derive(Debug)]
pub(crate) struct OutboxReader {
    path: PathBuf,
    pos: u64,
    line: usize,
    partial: Vec<u8>,
}

impl OutboxReader {
    pub fn new(path: &Path) -> OutboxReader {
        OutboxReader { path: path.to_owned(), pos: 0, line: 0, partial: Vec::new() }
    }

    /// Complete records appended since the last call. A line still being written stays
    /// for the next call.
    pub fn read_new(&mut self) -> Result<Vec<Record>> {
        let mut file = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(&self.path, e)),
        };
        file.seek(SeekFrom::Start(self.pos)).map_err(|e| Error::io(&self.path, e))?;
        let mut buf = Vec::new();
        file.read_to_end(&mut buf).map_err(|e| Error::io(&self.path, e))?;
        self.pos += buf.len() as u64;
        self.partial.extend_from_slice(&buf);
        let Some(end) = self.partial.iter().rposition(|&b| b == b'\n') else { return Ok(Vec::new()) };
        let complete: Vec<u8> = self.partial.drain(..=end).collect();
        let mut records = Vec::new();
        for raw in complete.split(|&b| b == b'\n') {
            if raw.is_empty() {
                continue;
            }
            self.line += 1;
            records.push(parse_line(&self.path, self.line, raw)?);
        }
        Ok(records)
    }
}

fn parse_line(path: &Path, line: usize, raw: &[u8]) -> Result<Record> {
    serde_json::from_slice(raw).map_err(|e| Error::Journal { path: path.to_owned(), line, message: format!("not a tracking record: {e}") })
}

/// All complete records of an outbox. A last line without its newline is a record cut
/// short by a crash and is left out; a bad line anywhere else is an error.
pub(crate) fn read_outbox(path: &Path) -> Result<Vec<Record>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let complete = match bytes.iter().rposition(|&b| b == b'\n') {
        Some(end) => &bytes[..=end],
        None => &bytes[..0],
    };
    complete.split(|&b| b == b'\n').enumerate().filter(|(_, raw)| !raw.is_empty()).map(|(i, raw)| parse_line(path, i + 1, raw)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics(step: i64, v: f64) -> Record {
        Record::Metrics { step, timestamp_ms: 1000 + step, values: BTreeMap::from([("loss".to_owned(), Num(v))]) }
    }

    #[test]
    fn non_finite_values_round_trip_as_mlflow_strings() {
        for v in [0.25, -3.0e-9, f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let json = serde_json::to_string(&Num(v)).unwrap();
            let back: Num = serde_json::from_str(&json).unwrap();
            assert!(back.same(Num(v)), "{v} -> {json} -> {}", back.0);
        }
        assert_eq!(serde_json::to_string(&Num(f64::NAN)).unwrap(), "\"NaN\"");
        assert_eq!(serde_json::to_string(&Num(f64::NEG_INFINITY)).unwrap(), "\"-Infinity\"");
    }

    #[test]
    fn reader_returns_only_complete_lines() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path());
        let mut outbox = Outbox::open(&paths).unwrap();
        let mut reader = OutboxReader::new(&paths.outbox);
        assert!(reader.read_new().unwrap().is_empty());
        outbox.append(&metrics(0, 1.0)).unwrap();
        outbox.append(&metrics(1, f64::NAN)).unwrap();
        assert_eq!(reader.read_new().unwrap().len(), 2);
        // Half a line (as a writer mid-write would leave it) waits for the rest.
        let line = serde_json::to_string(&metrics(2, 0.5)).unwrap();
        let (a, b) = line.split_at(10);
        std::fs::OpenOptions::new().append(true).open(&paths.outbox).unwrap().write_all(a.as_bytes()).unwrap();
        assert!(reader.read_new().unwrap().is_empty());
        std::fs::OpenOptions::new().append(true).open(&paths.outbox).unwrap().write_all(format!("{b}\n").as_bytes()).unwrap();
        assert_eq!(reader.read_new().unwrap(), vec![metrics(2, 0.5)]);
        assert_eq!(read_outbox(&paths.outbox).unwrap().len(), 3);
    }

    #[test]
    fn read_outbox_drops_a_torn_last_line_but_rejects_bad_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.jsonl");
        let good = serde_json::to_string(&metrics(0, 1.0)).unwrap();
        std::fs::write(&path, format!("{good}\n{{\"record\":\"met")).unwrap();
        assert_eq!(read_outbox(&path).unwrap().len(), 1);
        std::fs::write(&path, format!("{good}\nnot json\n{good}\n")).unwrap();
        let err = read_outbox(&path).unwrap_err().to_string();
        assert!(err.contains("line 2") && err.contains("outbox.jsonl"), "{err}");
    }

    #[test]
    fn state_is_written_atomically_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path());
        assert_eq!(read_state(dir.path()).unwrap(), None);
        std::fs::create_dir_all(&paths.dir).unwrap();
        let state = SyncState { uri: "http://127.0.0.1:5000".into(), run_id: "abc".into(), acked: 3, ..Default::default() };
        write_state(&paths, &state).unwrap();
        assert_eq!(read_state(dir.path()).unwrap(), Some(state));
        assert!(!paths.dir.join("state.json.tmp").exists());
    }
}
