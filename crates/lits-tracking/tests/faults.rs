//! A tracking server that fails must not hold training up: against fake servers on the
//! loopback interface (answering 500, never answering, refusing credentials, or absent), the
//! trainer's calls return while the server is failing, and the journal keeps every record.
//!
//! Nothing here measures speed: each check is that a call returned at all while the server
//! was (still) failing. A call that waited on the network would wait on a server that never
//! answers; the watchdog turns that hang into a failure instead of a stuck test.

mod support;

use std::sync::mpsc;
use std::time::{Duration, Instant};

use lits_tracking::{read_state, Auth, Record, RunStatus, Tracker, TrackingConfig};
use support::{journal, now_ms, Behaviour, FakeServer};

/// How long the watchdog lets a call run before calling it stuck: far beyond any call
/// that does not wait on the network, on however loaded a machine.
const STUCK: Duration = Duration::from_secs(120);

fn cfg(uri: &str) -> TrackingConfig {
    TrackingConfig { uri: Some(uri.to_owned()), experiment: "lits-tests".into(), run_name: "faulty".into() }
}

/// Runs `f` on another thread and returns its result; fails the test if `f` has not
/// returned after [`STUCK`] (it is then waiting on the server).
fn returns<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(STUCK).unwrap_or_else(|_| panic!("{what} did not return: it waits on the failing server"))
}

/// Logs epochs `first..epochs` plus an artifact, as a training run does between its steps.
fn log_run(t: &Tracker, run_dir: &std::path::Path, first: i64, epochs: i64) {
    let config = run_dir.join("config.json");
    std::fs::write(&config, "{}").unwrap();
    for epoch in first..epochs {
        t.log_metrics(epoch, now_ms(), &[("train_loss".into(), 1.0 / (epoch + 1) as f64), ("lr".into(), 1e-4)]);
        if epoch == first {
            t.log_artifact(&config, "");
        }
        // Give the sender time to hit the failure while "training" goes on.
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts a tracker against `uri`, logs `epochs` epochs and finishes it with `status`,
/// each step under the watchdog. With `fake`, the first epoch is logged, then the server is
/// waited for until it has been asked, so that the rest is logged while it is failing.
fn tracked_run(dir: &std::path::Path, uri: &str, auth: Auth, epochs: i64, status: RunStatus, fake: Option<&FakeServer>) {
    let (dir, uri) = (dir.to_path_buf(), uri.to_owned());
    let t = returns("Tracker::start", {
        let dir = dir.clone();
        move || Tracker::start_with_auth(&dir, &cfg(&uri), auth, &[], &[])
    });
    let t = returns("log_metrics", move || {
        t.log_metrics(0, now_ms(), &[("train_loss".into(), 1.0)]);
        t
    });
    if let Some(fake) = fake {
        until(|| !fake.requests.lock().unwrap().is_empty(), "the fake server is asked");
    }
    let t = returns("log_metrics and log_artifact", move || {
        log_run(&t, &dir, 1, epochs);
        t
    });
    returns("Tracker::finish", move || t.finish(status));
}

/// Polls `done` until it holds; fails the test after [`STUCK`].
fn until(done: impl Fn() -> bool, what: &str) {
    let deadline = Instant::now() + STUCK;
    while !done() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn assert_journal_complete(run_dir: &std::path::Path, epochs: usize) {
    let records = journal(run_dir);
    assert!(matches!(records.first(), Some(Record::Start { .. })));
    assert_eq!(records.iter().filter(|r| matches!(r, Record::Metrics { .. })).count(), epochs);
    assert!(matches!(records.last(), Some(Record::End { .. })));
}

#[test]
fn server_answering_500_never_blocks_and_keeps_the_records() {
    let fake = FakeServer::start(Behaviour::Status(500));
    let dir = tempfile::tempdir().unwrap();
    tracked_run(dir.path(), &fake.uri, Auth::None, 20, RunStatus::Finished, Some(&fake));
    assert_journal_complete(dir.path(), 20);
    assert_eq!(read_state(dir.path()).unwrap(), None, "no server run was acknowledged");
}

#[test]
fn hanging_server_never_blocks_and_finish_returns() {
    // The server reads each request and never answers: every call returned while it held
    // at least one request unanswered.
    let fake = FakeServer::start(Behaviour::Hang);
    let dir = tempfile::tempdir().unwrap();
    tracked_run(dir.path(), &fake.uri, Auth::None, 20, RunStatus::Finished, Some(&fake));
    assert_journal_complete(dir.path(), 20);
    assert_eq!(read_state(dir.path()).unwrap(), None);
}

#[test]
fn answers_that_are_not_mlflows_never_panic_or_block_and_keep_the_records() {
    // Panics on the sender thread would not fail the test by themselves: count them.
    static PANICS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        previous(info);
    }));
    for body in [
        "<html><body>Proxy error</body></html>",
        r#"{"experiment_id": 7}"#,
        r#"{"run": {"info": {"run_id": null}}}"#,
        r#"{"experiments": [{"experiment_id": "#,
        "",
    ] {
        let fake = FakeServer::start(Behaviour::Body(body));
        let dir = tempfile::tempdir().unwrap();
        tracked_run(dir.path(), &fake.uri, Auth::None, 5, RunStatus::Finished, Some(&fake));
        assert_journal_complete(dir.path(), 5);
    }
    assert_eq!(PANICS.load(std::sync::atomic::Ordering::SeqCst), 0, "a server answer made lits panic");
}

#[test]
fn refused_credentials_go_offline_and_the_token_is_sent_as_bearer() {
    let fake = FakeServer::start(Behaviour::Status(401));
    let dir = tempfile::tempdir().unwrap();
    let t = Tracker::start_with_auth(dir.path(), &cfg(&fake.uri), Auth::Bearer("wrong-token".into()), &[], &[]);
    until(|| !t.is_online(), "401 takes the run offline");
    log_run(&t, dir.path(), 0, 5);
    t.finish(RunStatus::Finished);
    let requests = fake.requests.lock().unwrap();
    assert_eq!(requests.len(), 1, "no retries after a refusal: {requests:?}");
    assert!(requests[0].to_ascii_lowercase().contains("authorization: bearer wrong-token"), "{}", requests[0]);
    assert_journal_complete(dir.path(), 5);
}

#[test]
fn absent_server_never_blocks() {
    // A port that was free a moment ago: connections are refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    tracked_run(dir.path(), &format!("http://127.0.0.1:{port}"), Auth::None, 10, RunStatus::Failed, None);
    assert_journal_complete(dir.path(), 10);
}
