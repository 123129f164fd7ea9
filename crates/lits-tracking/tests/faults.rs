//! A tracking server that fails must not hold training up: against fake servers on the
//! loopback interface (answering 500, never answering, refusing credentials, or absent), the
//! trainer's calls return at once and the journal keeps every record.
//!
//! The bounds below are generous (tens of milliseconds for a call that appends one line to
//! a file): they check that the calls never wait on the network, not how fast they are.

mod support;

use std::time::{Duration, Instant};

use lits_tracking::{read_state, Auth, Record, RunStatus, Tracker, TrackingConfig};
use support::{journal, now_ms, Behaviour, FakeServer};

const CALL_BOUND: Duration = Duration::from_millis(50);

fn cfg(uri: &str) -> TrackingConfig {
    TrackingConfig { uri: Some(uri.to_owned()), experiment: "lits-tests".into(), run_name: "faulty".into() }
}

/// Logs `epochs` epochs plus an artifact, asserting that no call waits; returns the
/// slowest call.
fn log_run(t: &Tracker, run_dir: &std::path::Path, epochs: i64) -> Duration {
    let config = run_dir.join("config.json");
    std::fs::write(&config, "{}").unwrap();
    let mut slowest = Duration::ZERO;
    for epoch in 0..epochs {
        let started = Instant::now();
        t.log_metrics(epoch, now_ms(), &[("train_loss".into(), 1.0 / (epoch + 1) as f64), ("lr".into(), 1e-4)]);
        if epoch == 0 {
            t.log_artifact(&config, "");
        }
        slowest = slowest.max(started.elapsed());
        // Give the sender time to hit the failure while "training" goes on.
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(slowest < CALL_BOUND, "a tracking call took {slowest:?}");
    slowest
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
    let started = Instant::now();
    let t = Tracker::start_with_auth(dir.path(), &cfg(&fake.uri), Auth::None, &[], &[]);
    assert!(started.elapsed() < CALL_BOUND, "start waited on the server");
    log_run(&t, dir.path(), 20);
    assert!(t.unsent() > 0);
    let finishing = Instant::now();
    t.finish(RunStatus::Finished);
    // The sender already knows the server is failing: finish does not wait for it.
    assert!(finishing.elapsed() < Duration::from_millis(500), "finish took {:?}", finishing.elapsed());
    assert!(!fake.requests.lock().unwrap().is_empty(), "the fake server was asked");
    assert_journal_complete(dir.path(), 20);
    assert_eq!(read_state(dir.path()).unwrap(), None);
}

#[test]
fn hanging_server_never_blocks_and_finish_is_bounded() {
    let fake = FakeServer::start(Behaviour::Hang);
    let dir = tempfile::tempdir().unwrap();
    let t = Tracker::start_with_auth(dir.path(), &cfg(&fake.uri), Auth::None, &[], &[]);
    log_run(&t, dir.path(), 20);
    let finishing = Instant::now();
    t.finish(RunStatus::Finished);
    // The first call has had no answer since the start: finish gives up once it has waited
    // about two seconds, not the full five it grants a server that answers.
    let took = finishing.elapsed();
    assert!(took < Duration::from_secs(3), "finish took {took:?}");
    assert_journal_complete(dir.path(), 20);
}

#[test]
fn refused_credentials_go_offline_and_the_token_is_sent_as_bearer() {
    let fake = FakeServer::start(Behaviour::Status(401));
    let dir = tempfile::tempdir().unwrap();
    let t = Tracker::start_with_auth(dir.path(), &cfg(&fake.uri), Auth::Bearer("wrong-token".into()), &[], &[]);
    let until = Instant::now() + Duration::from_secs(5);
    while t.is_online() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!t.is_online(), "401 should take the run offline");
    log_run(&t, dir.path(), 5);
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
    let t = Tracker::start_with_auth(dir.path(), &cfg(&format!("http://127.0.0.1:{port}")), Auth::None, &[], &[]);
    log_run(&t, dir.path(), 10);
    let finishing = Instant::now();
    t.finish(RunStatus::Failed);
    assert!(finishing.elapsed() < Duration::from_millis(500), "finish took {:?}", finishing.elapsed());
    assert_journal_complete(dir.path(), 10);
}
