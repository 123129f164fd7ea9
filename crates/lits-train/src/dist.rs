//! Data-parallel training across processes and hosts: how a process learns its place in
//! the group (the torchrun environment), the `distributed` section of a config, and
//! `lits train --nproc N`, which starts N local ranks as torchrun would.
//!
//! The collectives themselves are c10d's ([`lits_model::dist`]). Rank 0 owns the run: it
//! plans it (or reads it back to resume), writes every record, and hands the other ranks
//! the resolved config and the checkpoint through the rendezvous store, so the other
//! ranks need neither the config file nor the run directory, only the dataset at the same
//! path. Each rank prepares the cases in its own host's cache and checks that its split and
//! normaliser are rank 0's.

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use lits_data::Problems;
use lits_model::dist::{Group, JoinOptions};

use crate::error::{Error, Result};

/// The collective backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// Gloo on the CPU, NCCL on CUDA (PyTorch's choice).
    #[default]
    Auto,
    /// Gloo (CPU tensors; CUDA tensors go through the host).
    Gloo,
    /// NCCL (CUDA).
    Nccl,
}

/// The `distributed` section of a training config: how ranks work together when the
/// run has several (it changes nothing with one).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DistConfig {
    /// Collective backend.
    pub backend: Backend,
    /// Seconds a collective may wait for the other ranks before the run stops, naming the
    /// ranks that are gone (PyTorch's `timeout` of `init_process_group`). Validation of a
    /// whole volume happens between collectives, so this must exceed one case's validation.
    pub timeout_s: u64,
    /// BatchNorm statistics over the batches of every rank (SyncBatchNorm) instead of each
    /// rank's own batch (the original's BatchNorm per process).
    pub sync_batch_norm: bool,
}

impl Default for DistConfig {
    fn default() -> Self {
        DistConfig { backend: Backend::Auto, timeout_s: 300, sync_batch_norm: false }
    }
}

impl DistConfig {
    /// Whether it is the default (then it is left out of a config's JSON and its hash, so
    /// runs recorded before the section existed still resume).
    pub fn is_default(&self) -> bool {
        *self == DistConfig::default()
    }

    /// Records every value that cannot work.
    pub fn check(&self, p: &mut Problems) {
        p.require((1..=86_400).contains(&self.timeout_s), "timeout_s", || format!("{} must be in 1..=86400 seconds", self.timeout_s));
        p.require(self.backend != Backend::Nccl, "backend", || {
            "nccl is not built into this lits; use gloo (it also carries CUDA tensors) or auto".into()
        });
    }

    /// The collective timeout.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_s)
    }
}

/// This process's place in a group, from the torchrun environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    /// `RANK`.
    pub rank: usize,
    /// `WORLD_SIZE`.
    pub world: usize,
    /// `LOCAL_RANK` (picks the CUDA device on a multi-GPU host).
    pub local_rank: usize,
    /// `MASTER_ADDR`.
    pub master_addr: String,
    /// `MASTER_PORT`.
    pub master_port: u16,
    /// Whether the launcher serves the store there (`TORCHELASTIC_USE_AGENT_STORE=True`,
    /// set by torchrun); otherwise rank 0 serves it.
    pub launcher_store: bool,
    /// The launcher's restart count (`TORCHELASTIC_RESTART_COUNT`, 0 without one).
    pub attempt: u32,
}

impl Launch {
    /// Reads `WORLD_SIZE`, `RANK`, `LOCAL_RANK`, `MASTER_ADDR` and `MASTER_PORT` as torchrun,
    /// SLURM scripts and Kubernetes' PyTorchJob set them. `None` without `WORLD_SIZE` (or with
    /// 1): a single process. A partial or malformed set is an error naming the variable.
    pub fn from_env() -> Result<Option<Launch>> {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    /// [`Launch::from_env`] over any source of variables.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Option<Launch>> {
        let num = |k: &str, required: bool| -> Result<Option<usize>> {
            match var(k) {
                Some(v) => v
                    .trim()
                    .parse::<usize>()
                    .map(Some)
                    .map_err(|_| Error::config(format!("environment {k}"), format!("{v:?} is not a number"))),
                None if required => Err(Error::config(format!("environment {k}"), "is not set, but WORLD_SIZE is")),
                None => Ok(None),
            }
        };
        let world = match num("WORLD_SIZE", false)? {
            None | Some(1) => return Ok(None),
            Some(0) => return Err(Error::config("environment WORLD_SIZE", "must be at least 1")),
            Some(w) => w,
        };
        let rank = num("RANK", true)?.expect("required");
        if rank >= world {
            return Err(Error::config("environment RANK", format!("{rank} is not below WORLD_SIZE {world}")));
        }
        let local_rank = num("LOCAL_RANK", false)?.unwrap_or(0);
        let master_addr = var("MASTER_ADDR").ok_or_else(|| Error::config("environment MASTER_ADDR", "is not set, but WORLD_SIZE is"))?;
        let port = num("MASTER_PORT", true)?.expect("required");
        let master_port = u16::try_from(port)
            .ok()
            .filter(|&p| p > 0)
            .ok_or_else(|| Error::config("environment MASTER_PORT", format!("{port} is not a port")))?;
        let launcher_store = var("TORCHELASTIC_USE_AGENT_STORE").is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let attempt = num("TORCHELASTIC_RESTART_COUNT", false)?.unwrap_or(0) as u32;
        Ok(Some(Launch { rank, world, local_rank, master_addr, master_port, launcher_store, attempt }))
    }

    /// Joins the group (blocks until every rank has).
    pub fn join(&self, cfg: &DistConfig) -> Result<Arc<Group>> {
        let interface = std::env::var("GLOO_SOCKET_IFNAME").ok().filter(|s| !s.is_empty());
        let g = Group::join(&JoinOptions {
            master_addr: self.master_addr.clone(),
            master_port: self.master_port,
            rank: self.rank,
            world: self.world,
            timeout: cfg.timeout(),
            interface,
            launcher_store: self.launcher_store,
            attempt: self.attempt,
        })?;
        Ok(Arc::new(g))
    }
}

/// The group a run trains in (absent with one process).
#[derive(Debug, Clone)]
pub struct Ranks {
    /// The joined group.
    pub group: Arc<Group>,
    /// Where this process stands in it.
    pub launch: Launch,
}

impl Ranks {
    /// Whether this process writes the run's records (rank 0).
    pub fn is_main(&self) -> bool {
        self.launch.rank == 0
    }
}

/// A port free on the loopback interface now, for the store of a local group.
fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| Error::io("127.0.0.1", e))?;
    Ok(l.local_addr().map_err(|e| Error::io("127.0.0.1", e))?.port())
}

/// `lits train --nproc N`: starts `n` copies of this program with `args` (the command line
/// without `--nproc`) as ranks `0..n` of a group on this host, as `torchrun
/// --nproc-per-node N` would, and waits for them. When a rank fails, the others are given
/// `grace` to stop on their own (they report the lost rank themselves) and are then
/// killed. Returns an error naming every rank that failed.
pub fn launch_local(n: usize, args: &[std::ffi::OsString], grace: Duration) -> Result<()> {
    let exe: PathBuf = std::env::current_exe().map_err(|e| Error::io("the lits executable", e))?;
    let port = free_port()?;
    let mut children: Vec<(usize, Child)> = Vec::with_capacity(n);
    for rank in 0..n {
        let mut cmd = Command::new(&exe);
        cmd.args(args)
            .env("WORLD_SIZE", n.to_string())
            .env("RANK", rank.to_string())
            .env("LOCAL_RANK", rank.to_string())
            .env("LOCAL_WORLD_SIZE", n.to_string())
            .env("MASTER_ADDR", "127.0.0.1")
            .env("MASTER_PORT", port.to_string());
        match cmd.spawn() {
            Ok(c) => children.push((rank, c)),
            Err(e) => {
                for (_, c) in &mut children {
                    let _ = c.kill();
                    let _ = c.wait();
                }
                return Err(Error::io(&exe, e));
            }
        }
    }
    let mut failed: Vec<(usize, ExitStatus)> = Vec::new();
    let mut deadline: Option<Instant> = None;
    while !children.is_empty() {
        let mut i = 0;
        while i < children.len() {
            match children[i].1.try_wait() {
                Ok(Some(status)) => {
                    let (rank, _) = children.swap_remove(i);
                    if !status.success() {
                        failed.push((rank, status));
                        deadline.get_or_insert_with(|| Instant::now() + grace);
                    }
                }
                Ok(None) => i += 1,
                Err(e) => return Err(Error::io(&exe, e)),
            }
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            for (rank, c) in &mut children {
                eprintln!("lits: stopping rank {rank}, still running {grace:?} after another rank failed");
                let _ = c.kill();
                if let Ok(status) = c.wait() {
                    failed.push((*rank, status));
                }
            }
            children.clear();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if failed.is_empty() {
        return Ok(());
    }
    failed.sort_by_key(|f| f.0);
    let list: Vec<String> = failed.iter().map(|(r, s)| format!("rank {r} ({s})")).collect();
    Err(Error::RankFailed(format!("{} of {n} rank(s) failed: {}", failed.len(), list.join(", "))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn the_torchrun_environment_is_read_and_bad_values_are_named() {
        assert_eq!(Launch::from_vars(vars(&[])).unwrap(), None);
        assert_eq!(Launch::from_vars(vars(&[("WORLD_SIZE", "1"), ("RANK", "0")])).unwrap(), None);
        let full = [("WORLD_SIZE", "4"), ("RANK", "2"), ("LOCAL_RANK", "0"), ("MASTER_ADDR", "10.0.0.1"), ("MASTER_PORT", "29500")];
        assert_eq!(
            Launch::from_vars(vars(&full)).unwrap(),
            Some(Launch {
                rank: 2,
                world: 4,
                local_rank: 0,
                master_addr: "10.0.0.1".into(),
                master_port: 29500,
                launcher_store: false,
                attempt: 0
            })
        );
        for (drop, name) in [("RANK", "RANK"), ("MASTER_ADDR", "MASTER_ADDR"), ("MASTER_PORT", "MASTER_PORT")] {
            let partial: Vec<(&str, &str)> = full.iter().copied().filter(|(k, _)| *k != drop).collect();
            let e = Launch::from_vars(vars(&partial)).unwrap_err().to_string();
            assert!(e.contains(name) && e.contains("not set"), "{e}");
        }
        let mut bad = full;
        bad[1] = ("RANK", "4");
        assert!(Launch::from_vars(vars(&bad)).unwrap_err().to_string().contains("not below WORLD_SIZE"));
        bad[1] = ("RANK", "x");
        assert!(Launch::from_vars(vars(&bad)).unwrap_err().to_string().contains("RANK"));
        let mut port = full;
        port[4] = ("MASTER_PORT", "70000");
        assert!(Launch::from_vars(vars(&port)).unwrap_err().to_string().contains("not a port"));
    }

    #[test]
    fn the_default_section_is_left_out_of_a_config() {
        assert!(DistConfig::default().is_default());
        let mut p = Problems::new();
        DistConfig { timeout_s: 0, backend: Backend::Nccl, ..Default::default() }.check(&mut p);
        let e = p.into_result().unwrap_err().to_string();
        assert!(e.contains("timeout_s") && e.contains("backend"), "{e}");
    }
}
