//! Data-parallel training on c10d (Gloo on the CPU): repeatable across runs, equal to one
//! process on the same global batch, the same across two hosts (network namespaces) as on
//! one, and a killed rank named by the others, with the run resuming bit-identically.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

mod common;
use common::{lits, ok, text, tiny_config};

/// The files two runs that trained alike must hold the same bytes of.
const SAME: [&str; 4] = ["last.safetensors", "best.safetensors", "metrics.jsonl", "checkpoints/last.ckpt"];

fn write_config(dir: &Path, name: &str, cfg: &Value) -> PathBuf {
    let p = dir.join(format!("{name}.json"));
    std::fs::write(&p, serde_json::to_vec_pretty(cfg).unwrap()).unwrap();
    p
}

/// Three epochs of three steps, a batch of 2 shared by the ranks, one loader thread and one
/// libtorch thread per rank.
fn ddp_config() -> Value {
    let mut c = tiny_config(5, 3, 3, 2);
    c["threads"] = json!(1);
    c["loader_workers"] = json!(1);
    c["distributed"] = json!({ "timeout_s": 30 });
    c
}

fn assert_same(a: &Path, b: &Path, what: &str) {
    for f in SAME {
        assert_eq!(
            std::fs::read(a.join(f)).unwrap_or_else(|e| panic!("{}: {f}: {e}", a.display())),
            std::fs::read(b.join(f)).unwrap_or_else(|e| panic!("{}: {f}: {e}", b.display())),
            "{what}: {f} differs"
        );
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `lits train` as rank `rank` of `world`, placed by torchrun's variables.
fn rank(cache: &Path, rank: usize, world: usize, addr: &str, port: u16) -> Command {
    let mut c = lits(cache);
    c.env("WORLD_SIZE", world.to_string())
        .env("RANK", rank.to_string())
        .env("LOCAL_RANK", rank.to_string())
        .env("MASTER_ADDR", addr)
        .env("MASTER_PORT", port.to_string());
    c
}

/// `lits train --config cfg --out out` as rank `r` of 2 on this host, its stderr captured.
fn local_rank_training(cache: &Path, r: usize, port: u16, cfg: &Path, out: &Path) -> Command {
    let mut c = rank(cache, r, 2, "127.0.0.1", port);
    c.args(["train", "--config"]).arg(cfg).arg("--out").arg(out).stdout(Stdio::null()).stderr(Stdio::piped());
    c
}

/// `outer` (a launcher) running `inner`'s program with `inner`'s environment, the launcher's
/// own arguments `outer_args` first.
fn wrapped(mut outer: Command, inner: &Command, outer_args: &[&str]) -> Command {
    for (k, v) in inner.get_envs() {
        match v {
            Some(v) => outer.env(k, v),
            None => outer.env_remove(k),
        };
    }
    outer.args(outer_args).arg(inner.get_program());
    outer
}

/// Waits for `child`, failing the test if it runs past `limit` (a watchdog, not a timing).
fn wait_or_fail(child: &mut Child, limit: Duration, what: &str) -> std::process::ExitStatus {
    let end = Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if Instant::now() > end {
            let _ = child.kill();
            panic!("{what} still running after {limit:?}: it hangs");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn two_process_runs_repeat_bit_for_bit_and_a_killed_rank_is_named_and_resumed_from() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let cfg = write_config(tmp.path(), "ddp", &ddp_config());
    let nproc2 = |out: &Path| {
        let mut c = lits(&cache);
        c.args(["train", "--nproc", "2", "--config"]).arg(&cfg).arg("--out").arg(out);
        c
    };
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    ok(nproc2(&a).output().unwrap());
    ok(nproc2(&b).output().unwrap());
    assert_same(&a, &b, "two 2-process runs with one seed");
    // PyTorch's own launcher, whose agent serves the store: the same run.
    let t = tmp.path().join("torchrun");
    let torchrun = Path::new(common::PYTHON).with_file_name("torchrun");
    let mut c = wrapped(
        Command::new(torchrun),
        &lits(&cache),
        &["--nproc-per-node", "2", "--master-port", &free_port().to_string(), "--no-python"],
    );
    ok(c.args(["train", "--config"]).arg(&cfg).arg("--out").arg(&t).output().unwrap());
    assert_same(&a, &t, "torchrun against --nproc");
    // The world size is part of the run: a resume with another is refused, naming it.
    let o = lits(&cache).args(["train", "--resume"]).arg(&a).output().unwrap();
    assert!(!o.status.success());
    assert!(text(&o.stderr).contains("--nproc 2"), "{}", text(&o.stderr));

    // Rank 1 is killed (SIGKILL) after step 2 of epoch 2; rank 0 must stop on its own,
    // naming rank 1, before the watchdog.
    let cut = tmp.path().join("cut");
    let port = free_port();
    let start = |r: usize| {
        let mut c = local_rank_training(&cache, r, port, &cfg, &cut);
        if r == 1 {
            c.env("LITS_FAILPOINT", "step:2:2");
        }
        c.spawn().unwrap()
    };
    let mut r0 = start(0);
    let mut r1 = start(1);
    let s1 = wait_or_fail(&mut r1, Duration::from_secs(300), "rank 1");
    assert_eq!(s1.signal(), Some(9), "rank 1 was not killed: {s1}");
    let s0 = wait_or_fail(&mut r0, Duration::from_secs(300), "rank 0 after rank 1 died");
    let err0 = text(&r0.wait_with_output().unwrap().stderr);
    assert!(!s0.success(), "rank 0 went on without rank 1:\n{err0}");
    assert!(err0.contains("lost rank 1 of 2"), "rank 0 does not name the lost rank:\n{err0}");
    // The checkpoint of epoch 1 is intact, and the run resumes from it.
    let logged = std::fs::read_to_string(cut.join("metrics.jsonl")).unwrap();
    assert_eq!(logged.lines().count(), 1, "{logged}");
    let resumed = ok(lits(&cache).args(["train", "--nproc", "2", "--resume"]).arg(&cut).output().unwrap());
    assert_same(&a, &cut, &format!("the resumed run\n{}", text(&resumed.stderr)));
    // The scratch folder of the killed rank went with the next rank 1; no other is left.
    let left: Vec<_> = std::fs::read_dir(cache.join("ranks")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(left.is_empty(), "scratch folders left in the cache: {left:?}");
}

#[test]
fn a_batch_the_ranks_cannot_share_is_refused_naming_the_field_and_leaving_no_run() {
    let tmp = tempfile::tempdir().unwrap();
    let mut c = ddp_config();
    c["patches"]["batch_size"] = json!(3);
    let cfg = write_config(tmp.path(), "odd", &c);
    let run = tmp.path().join("run");
    let o = lits(&tmp.path().join("cache")).args(["train", "--nproc", "2", "--config"]).arg(&cfg).arg("--out").arg(&run).output().unwrap();
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("patches.batch_size") && err.contains("2 processes"), "{err}");
    assert!(err.contains("rank 0"), "the launcher does not name the failed ranks:\n{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(!run.exists(), "a run folder was left behind");
}

#[test]
fn a_hung_rank_stops_the_others_after_the_timeout_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let mut c = ddp_config();
    c["epochs"] = json!(1000);
    c["validation"]["every"] = json!(1000);
    // Short, yet long beside a step of this config even on a loaded machine.
    c["distributed"]["timeout_s"] = json!(10);
    let cfg = write_config(tmp.path(), "hang", &c);
    let run = tmp.path().join("run");
    let port = free_port();
    let start = |r: usize| local_rank_training(&cache, r, port, &cfg, &run).spawn().unwrap();
    let mut r0 = start(0);
    let mut r1 = start(1);
    // Once an epoch is logged, rank 1 freezes (SIGSTOP): alive, silent, holding its sockets.
    let end = Instant::now() + Duration::from_secs(300);
    while std::fs::read_to_string(run.join("metrics.jsonl")).map_or(true, |t| t.is_empty()) {
        assert!(Instant::now() < end, "no epoch logged");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(Command::new("kill").args(["-STOP", &r1.id().to_string()]).status().unwrap().success());
    let s0 = wait_or_fail(&mut r0, Duration::from_secs(300), "rank 0 beside a hung rank 1");
    let err0 = text(&r0.wait_with_output().unwrap().stderr);
    let _ = r1.kill();
    let _ = r1.wait();
    assert!(!s0.success(), "rank 0 went on:\n{err0}");
    assert!(err0.contains("lost rank 1 of 2"), "rank 0 does not name the hung rank:\n{err0}");
}

#[test]
fn two_processes_follow_one_process_on_the_same_global_batch() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    // 20 steps, one per epoch, so that metrics.jsonl holds the loss of every step;
    // statistics and loss over the whole batch: SyncBatchNorm, no dropout.
    let mut c = ddp_config();
    c["epochs"] = json!(20);
    c["steps_per_epoch"] = json!(1);
    c["validation"]["every"] = json!(20);
    c["model"]["dropout"] = json!(0.0);
    c["model"]["updown_dropout"] = json!(0.0);
    // Batch Dice and class-weighted cross-entropy: both are the whole batch's, their sums
    // gathered over the ranks.
    c["loss"] = json!({ "kind": "dice_ce", "batch_dice": true, "class_weights": [1.0, 1.0, 2.0] });
    c["distributed"]["sync_batch_norm"] = json!(true);
    // SGD with momentum (nnU-Net's): its update is linear in the gradient, so the last-bit
    // differences of the sums stay last-bit. Adam divides each gradient by its own running
    // magnitude, and in its first steps turns a rounding in a near-zero gradient into a
    // whole step of the learning rate, in any data-parallel implementation.
    c["optimizer"] = json!({ "kind": "sgd", "lr": 0.001, "momentum": 0.9 });
    let cfg = write_config(tmp.path(), "sync", &c);
    let one = tmp.path().join("one");
    let two = tmp.path().join("two");
    ok(lits(&cache).args(["train", "--config"]).arg(&cfg).arg("--out").arg(&one).output().unwrap());
    ok(lits(&cache).args(["train", "--nproc", "2", "--config"]).arg(&cfg).arg("--out").arg(&two).output().unwrap());
    let losses = |run: &Path| -> Vec<f64> {
        std::fs::read_to_string(run.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap()["train_loss"].as_f64().unwrap())
            .collect()
    };
    let (l1, l2) = (losses(&one), losses(&two));
    assert_eq!(l1.len(), 20);
    assert_eq!(l2.len(), 20);
    for (step, (a, b)) in l1.iter().zip(&l2).enumerate() {
        assert!((a - b).abs() <= 1e-5 * a.abs(), "step {}: one process {a}, two {b}", step + 1);
    }
    // Not the same bytes: the sums run in another order.
    assert_ne!(l1, l2, "two processes gave the very same floats: were both runs one process?");
}

/// Runs `args` as root's `ip`, failing the test with its stderr.
fn ip(args: &[&str]) {
    let o = Command::new("ip").args(args).output().expect("run ip");
    assert!(o.status.success(), "ip {}: {}", args.join(" "), text(&o.stderr));
}

/// Two network namespaces joined by a veth pair, removed on drop.
struct Hosts {
    names: [String; 2],
}

impl Hosts {
    /// `None` where namespaces cannot be made (not root): the test is skipped then, unless
    /// `LITS_REQUIRE_NETNS=1` (CI) makes that a failure.
    fn new() -> Option<Hosts> {
        let id = std::process::id();
        let names = [format!("lits-a-{id}"), format!("lits-b-{id}")];
        let made = Command::new("ip").args(["netns", "add", &names[0]]).output().is_ok_and(|o| o.status.success());
        if !made {
            assert!(std::env::var("LITS_REQUIRE_NETNS").as_deref() != Ok("1"), "cannot make a network namespace (needs root and iproute2)");
            eprintln!("skipped: cannot make a network namespace here (needs root and iproute2)");
            return None;
        }
        let hosts = Hosts { names };
        let [a, b] = &hosts.names;
        ip(&["netns", "add", b]);
        let (va, vb) = (format!("lv{id}a"), format!("lv{id}b"));
        ip(&["link", "add", &va, "netns", a, "type", "veth", "peer", "name", &vb, "netns", b]);
        for (ns, dev, addr) in [(a, &va, "10.213.7.1/24"), (b, &vb, "10.213.7.2/24")] {
            ip(&["-n", ns, "addr", "add", addr, "dev", dev]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        Some(hosts)
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = Command::new("ip").args(["netns", "del", n]).output();
        }
    }
}

#[test]
fn two_hosts_train_as_two_local_processes() {
    let Some(hosts) = Hosts::new() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write_config(tmp.path(), "ddp", &ddp_config());
    let local = tmp.path().join("local");
    ok(lits(&tmp.path().join("cache-local"))
        .args(["train", "--nproc", "2", "--config"])
        .arg(&cfg)
        .arg("--out")
        .arg(&local)
        .output()
        .unwrap());

    // One rank in each namespace, each with a cache of its own, as on two machines.
    let remote = tmp.path().join("remote");
    let children: Vec<Child> = (0..2)
        .map(|r| {
            let inner = rank(&tmp.path().join(format!("cache-{r}")), r, 2, "10.213.7.1", 29511);
            let mut c = wrapped(Command::new("ip"), &inner, &["netns", "exec", &hosts.names[r]]);
            c.args(["train", "--config"]).arg(&cfg).arg("--out").arg(&remote).stdout(Stdio::piped()).stderr(Stdio::piped());
            c.spawn().unwrap()
        })
        .collect();
    for (r, mut child) in children.into_iter().enumerate() {
        let s = wait_or_fail(&mut child, Duration::from_secs(300), &format!("rank {r}"));
        let o = child.wait_with_output().unwrap();
        assert!(s.success(), "rank {r} failed ({s}):\n{}", text(&o.stderr));
    }
    assert_same(&local, &remote, "two hosts against two local processes");
}
