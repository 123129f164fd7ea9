//! Shared by the tracking tests: a real MLflow server started through
//! `scripts/mlflow_server.sh`, MLflow's Python client to read runs back, the journal as the
//! expected truth, and small fake servers (500s, hangs, 401) on the loopback interface.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lits_tracking::{Num, Record, OUTBOX_FILE, TRACKING_DIR};
use sha2::{Digest, Sha256};

pub const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
pub const PYTHON: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../.venv/bin/python");
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/mlflow_server.sh");
const READBACK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../lits-tracking/tests/support/readback.py");

/// A real MLflow server with its data in a temporary directory. It is stopped on drop and,
/// should the test process die first, by the script's watcher.
pub struct MlflowServer {
    pub uri: String,
    port: String,
    dir: tempfile::TempDir,
}

impl MlflowServer {
    /// Starts a server on a free port. Panics (fails the test) when it cannot start.
    pub fn start() -> MlflowServer {
        let dir = tempfile::tempdir().unwrap();
        let (uri, port) = Self::launch(dir.path(), "0");
        MlflowServer { uri, port, dir }
    }

    fn launch(dir: &Path, port: &str) -> (String, String) {
        let t = Instant::now();
        let out = Command::new("bash")
            .arg(SCRIPT)
            .arg("start")
            .arg(dir)
            .arg(port)
            .args(["--watch-pid", &std::process::id().to_string()])
            .output()
            .expect("run scripts/mlflow_server.sh");
        assert!(
            out.status.success(),
            "the MLflow server did not start:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let uri = String::from_utf8(out.stdout).unwrap().trim().to_owned();
        let port = uri.rsplit(':').next().unwrap().to_owned();
        eprintln!("mlflow server at {uri} after {:.1} s", t.elapsed().as_secs_f64());
        (uri, port)
    }

    pub fn stop(&self) {
        let out = Command::new("bash").arg(SCRIPT).arg("stop").arg(self.dir.path()).output().unwrap();
        assert!(out.status.success(), "stop failed: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Starts the server again on the same data and port.
    pub fn restart(&self) {
        let (uri, _) = Self::launch(self.dir.path(), &self.port);
        assert_eq!(uri, self.uri);
    }
}

impl Drop for MlflowServer {
    fn drop(&mut self) {
        if self.dir.path().join("server.pid").exists() {
            let _ = Command::new("bash").arg(SCRIPT).arg("stop").arg(self.dir.path()).output();
        }
    }
}

/// A run as MLflow's Python client sees it.
pub fn readback(uri: &str, run_id: &str) -> serde_json::Value {
    readback_skipping(uri, run_id, None)
}

/// [`readback`] without the histories of keys starting with `skip_prefix` (their latest
/// values are still read).
pub fn readback_skipping(uri: &str, run_id: &str, skip_prefix: Option<&str>) -> serde_json::Value {
    let download = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(PYTHON);
    cmd.arg(READBACK).arg(uri).arg(run_id).arg(download.path()).args(skip_prefix);
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "readback failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The journal of a run directory.
pub fn journal(run_dir: &Path) -> Vec<Record> {
    let text = std::fs::read_to_string(run_dir.join(TRACKING_DIR).join(OUTBOX_FILE)).unwrap();
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// A metric value as the readback spells it (Python's names for non-finite values).
pub fn py_value(v: f64) -> serde_json::Value {
    if v.is_nan() {
        serde_json::json!("nan")
    } else if v.is_infinite() {
        serde_json::json!(if v > 0.0 { "inf" } else { "-inf" })
    } else {
        serde_json::json!(v)
    }
}

/// Metric history per key from the journal, in the readback's form: sorted
/// `[step, timestamp, value]` with non-finite values as Python spells them.
pub fn local_history(run_dir: &Path) -> BTreeMap<String, Vec<serde_json::Value>> {
    let mut out: BTreeMap<String, Vec<serde_json::Value>> = BTreeMap::new();
    for r in journal(run_dir) {
        if let Record::Metrics { step, timestamp_ms, values } = r {
            for (k, Num(v)) in values {
                out.entry(k).or_default().push(serde_json::json!([step, timestamp_ms, py_value(v)]));
            }
        }
    }
    for points in out.values_mut() {
        points.sort_by_key(|p| (p[0].as_i64().unwrap(), p[1].as_i64().unwrap()));
    }
    out
}

/// The readback's metric histories in the same form as [`local_history`].
pub fn server_history(readback: &serde_json::Value) -> BTreeMap<String, Vec<serde_json::Value>> {
    readback["metrics"].as_object().unwrap().iter().map(|(k, v)| (k.clone(), v.as_array().unwrap().clone())).collect()
}

pub fn sha256_file(path: &Path) -> String {
    format!("{:x}", Sha256::digest(std::fs::read(path).unwrap()))
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

/// Writes a run directory's files the way a trainer would: config, a plot, "weights".
pub fn write_run_files(run_dir: &Path) -> Vec<PathBuf> {
    std::fs::create_dir_all(run_dir.join("plots")).unwrap();
    let config = run_dir.join("config.json");
    std::fs::write(&config, r#"{"seed":0,"lr":0.0001}"#).unwrap();
    let plot = run_dir.join("plots").join("loss.svg");
    std::fs::write(&plot, "<svg xmlns='http://www.w3.org/2000/svg'/>").unwrap();
    let weights = run_dir.join("best.safetensors");
    // 2 MB of deterministic bytes, big enough to need more than one network read.
    let bytes: Vec<u8> = (0..2_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    std::fs::write(&weights, bytes).unwrap();
    vec![config, plot, weights]
}

/// What a fake server does with each request.
#[derive(Clone, Copy, Debug)]
pub enum Behaviour {
    /// Answers every request with this HTTP status and an MLflow-style error body.
    Status(u16),
    /// Reads the request and never answers.
    Hang,
    /// Answers every request with 200 and this body, whatever was asked (a proxy's page,
    /// a truncated or foreign JSON answer).
    Body(&'static str),
}

/// A fake tracking server on 127.0.0.1, for failures a real one does not produce on demand.
/// Its threads stop when it is dropped.
pub struct FakeServer {
    pub uri: String,
    pub requests: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl FakeServer {
    pub fn start(behaviour: Behaviour) -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let uri = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (reqs, halt) = (Arc::clone(&requests), Arc::clone(&stop));
        std::thread::spawn(move || {
            while !halt.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let (reqs, halt) = (Arc::clone(&reqs), Arc::clone(&halt));
                        std::thread::spawn(move || serve(stream, behaviour, &reqs, &halt));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        FakeServer { uri, requests, stop }
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn serve(mut stream: TcpStream, behaviour: Behaviour, reqs: &Mutex<Vec<String>>, halt: &AtomicBool) {
    stream.set_nonblocking(false).unwrap();
    stream.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    // Read the request head (bodies are small enough to arrive with it or be ignored).
    let deadline = Instant::now() + Duration::from_secs(5);
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && Instant::now() < deadline && !halt.load(Ordering::SeqCst) {
        match stream.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => {}
        }
    }
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n").map_or(buf.len(), |p| p + 4);
    reqs.lock().unwrap().push(String::from_utf8_lossy(&buf[..head_end]).into_owned());
    match behaviour {
        Behaviour::Status(code) => {
            let body = format!(r#"{{"error_code":"INTERNAL_ERROR","message":"fake server says {code}"}}"#);
            let reply = format!(
                "HTTP/1.1 {code} Fake\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(reply.as_bytes());
        }
        Behaviour::Body(body) => {
            let reply = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(reply.as_bytes());
        }
        Behaviour::Hang => {
            // Hold the connection open, answering nothing, until the server is dropped.
            while !halt.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}
