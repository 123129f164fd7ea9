//! The background sender: follows the outbox as the trainer appends to it and sends each
//! record to the server in order, retrying with backoff while the server is unavailable.
//! It never touches the training thread: the trainer only appends a line and nudges it.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::client::{Client, MAX_METRICS_PER_BATCH};
use super::error::{Error, Result};
use super::journal::{read_state, OutboxReader, Paths, Record};
use super::remote::{first_start, metric_points, Remote};
use super::warn;

/// Once the trainer has finished, the sender gets this long to drain what is left.
pub(crate) const FINISH_WAIT: Duration = Duration::from_secs(5);
/// A call without an answer for this long counts as a stalled server when training ends.
pub(crate) const STALL: Duration = Duration::from_secs(2);
const BACKOFF_FIRST: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// What the trainer's side and the sender share.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    /// Records in the outbox (written by the trainer's side).
    pub written: AtomicUsize,
    /// Records the server acknowledged.
    pub acked: AtomicUsize,
    /// The last call failed and the sender is waiting to retry.
    pub down: AtomicBool,
    /// When the call now waiting for the server began (ms since the Unix epoch); 0 when
    /// none is.
    pub call_started_ms: AtomicI64,
    /// The sender gave up for this run (a permanent error).
    pub offline: AtomicBool,
    /// The trainer has finished: drain and stop.
    pub finishing: AtomicBool,
    /// Stop now, whatever is left.
    pub stop: AtomicBool,
}

pub(crate) struct Worker {
    pub client: Client,
    pub run_dir: PathBuf,
    pub shared: Arc<Shared>,
    pub wake: Receiver<()>,
    pub done: SyncSender<()>,
}

impl Worker {
    pub fn run(self) {
        let shared = Arc::clone(&self.shared);
        // Only permanent errors end up here; after a stop request (the run directory may be
        // gone by then) there is nothing left to say.
        if let Err(e) = self.run_inner() {
            shared.offline.store(true, Ordering::SeqCst);
            if !shared.stop.load(Ordering::SeqCst) {
                warn(&format!(
                    "{e}; no more records go to the server during this run (they stay in {}; `lits sync` uploads them)",
                    Paths::new(&self.run_dir).outbox.display()
                ));
            }
        }
        let _ = self.done.try_send(());
    }

    fn run_inner(&self) -> Result<()> {
        let paths = Paths::new(&self.run_dir);
        let initial_state = read_state(&self.run_dir)?;
        let mut reader = OutboxReader::new(&paths.outbox);
        let mut records: Vec<Record> = Vec::new();
        let mut remote: Option<Remote> = None;
        let mut next = 0usize;
        let mut backoff = BACKOFF_FIRST;
        let mut warned_down = false;
        let mut deadline: Option<Instant> = None;
        loop {
            records.extend(reader.read_new()?);
            if self.shared.stop.load(Ordering::SeqCst) || deadline.is_some_and(|d| Instant::now() > d) {
                return Ok(());
            }
            if self.shared.finishing.load(Ordering::SeqCst) && deadline.is_none() {
                deadline = Some(Instant::now() + FINISH_WAIT);
            }
            let caught_up = next >= records.len() && remote.is_some();
            if caught_up {
                if deadline.is_some() && records.len() >= self.shared.written.load(Ordering::SeqCst) {
                    return Ok(());
                }
                match self.wake.recv_timeout(Duration::from_millis(200)) {
                    Ok(()) | Err(RecvTimeoutError::Timeout) => {}
                    // The Tracker was dropped without `finish`: drain as if it had finished.
                    Err(RecvTimeoutError::Disconnected) => self.shared.finishing.store(true, Ordering::SeqCst),
                }
                continue;
            }
            self.shared.call_started_ms.store(super::now_ms(), Ordering::SeqCst);
            let result = self.step(&mut remote, &records, &mut next, initial_state.as_ref());
            self.shared.call_started_ms.store(0, Ordering::SeqCst);
            match result {
                Ok(()) => {
                    backoff = BACKOFF_FIRST;
                    if self.shared.down.swap(false, Ordering::SeqCst) {
                        eprintln!("tracking: {} reachable again; sending what was kept", self.client.uri());
                    }
                    self.shared.acked.store(next, Ordering::SeqCst);
                }
                Err(e) if e.is_transient() => {
                    if !warned_down {
                        warned_down = true;
                        warn(&format!(
                            "{e}; training goes on, records are kept in {} and sent when the server answers \
                             (or later with `lits sync`)",
                            paths.outbox.display()
                        ));
                    }
                    self.shared.down.store(true, Ordering::SeqCst);
                    self.sleep(backoff, deadline);
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Sleeps for the backoff, cut short by a stop request or the drain deadline.
    fn sleep(&self, d: Duration, deadline: Option<Instant>) {
        let until = deadline.map_or(Instant::now() + d, |dl| dl.min(Instant::now() + d));
        while Instant::now() < until && !self.shared.stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends the next record (or a run of metrics records) and moves `next` past it.
    fn step(
        &self,
        remote: &mut Option<Remote>,
        records: &[Record],
        next: &mut usize,
        initial_state: Option<&super::journal::SyncState>,
    ) -> Result<()> {
        let Some(r) = remote.as_mut() else {
            let start = first_start(records).ok_or_else(|| Error::Journal {
                path: Paths::new(&self.run_dir).outbox,
                line: 1,
                message: "the journal does not begin with a start record".to_owned(),
            })?;
            let opened = Remote::open(self.client.clone(), &self.run_dir, initial_state.cloned(), start)?;
            *next = if opened.created { 0 } else { opened.state.acked.min(records.len()) };
            *remote = Some(opened);
            return Ok(());
        };
        let mut advance = 1;
        match &records[*next] {
            Record::Start { tags, params, .. } => {
                if records[..*next].iter().any(|r| matches!(r, Record::End { .. })) {
                    r.reopen()?;
                }
                let outcome = r.update_params(tags, params)?;
                if !outcome.conflicts.is_empty() {
                    warn(&format!(
                        "the server run already has other values for {}; MLflow keeps a param's first value",
                        outcome.conflicts.join(", ")
                    ));
                }
            }
            Record::Metrics { .. } => {
                // Coalesce consecutive epochs into one batch within MLflow's limit.
                let mut count = 0;
                advance = 0;
                for rec in &records[*next..] {
                    let Record::Metrics { values, .. } = rec else { break };
                    if advance > 0 && count + values.len() > MAX_METRICS_PER_BATCH {
                        break;
                    }
                    count += values.len();
                    advance += 1;
                }
                r.send_metrics(&metric_points(&records[*next..*next + advance]))?;
            }
            Record::Artifact { path, dir } => match r.artifact_files(path, dir) {
                Ok(files) => {
                    for (local, rel) in files {
                        r.upload(&local, &rel, false)?;
                    }
                }
                Err(e @ Error::Io { .. }) => warn(&format!("artifact not uploaded: {e}")),
                Err(e) => return Err(e),
            },
            Record::End { time_ms, status } => {
                r.end(*time_ms, *status, false)?;
            }
        }
        *next += advance;
        r.state.acked = *next;
        r.save()
    }
}
