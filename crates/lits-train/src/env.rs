//! The environment report (`lits env`), written into every run directory so a run says
//! what produced it.

use serde::{Deserialize, Serialize};

use lits_model::backend::BackendReport;

/// Versions, devices and machine facts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnvReport {
    /// Version of lits itself.
    pub lits_version: String,
    /// What libtorch offers (versions, CUDA, cuDNN, devices, threads, determinism).
    #[serde(flatten)]
    pub backend: BackendReport,
    /// CPU model name, from `/proc/cpuinfo` where available.
    pub cpu_model: Option<String>,
    /// Logical CPUs available to this process.
    pub cpu_count: usize,
    /// Operating system, e.g. `Debian GNU/Linux 12 (bookworm)`.
    pub os: String,
    /// Target architecture, e.g. `x86_64`.
    pub arch: String,
}

impl EnvReport {
    /// Collects the report.
    pub fn collect() -> Self {
        EnvReport {
            lits_version: env!("CARGO_PKG_VERSION").to_owned(),
            backend: BackendReport::collect(),
            cpu_model: cpu_model(),
            cpu_count: std::thread::available_parallelism().map_or(1, |n| n.get()),
            os: os_name(),
            arch: std::env::consts::ARCH.to_owned(),
        }
    }

    /// Human-readable, one fact a line.
    pub fn to_text(&self) -> String {
        let b = &self.backend;
        let or_none = |v: &Option<String>| v.clone().unwrap_or_else(|| "none".to_owned());
        let mut s = String::new();
        let mut line = |k: &str, v: String| s.push_str(&format!("{k:<22} {v}\n"));
        line("lits", self.lits_version.clone());
        line("libtorch", b.libtorch.clone());
        line("cuda available", b.cuda_available.to_string());
        line("cuda version", or_none(&b.cuda_version));
        line("cudnn available", b.cudnn_available.to_string());
        line("cudnn version", or_none(&b.cudnn_version));
        if b.cuda_devices.is_empty() {
            line("cuda devices", "none".to_owned());
        }
        for d in &b.cuda_devices {
            line(&format!("cuda device {}", d.index), d.name.clone());
        }
        line("torch threads", b.threads.to_string());
        line("deterministic algos", b.determinism.algorithms.to_string());
        line("cudnn deterministic", b.determinism.cudnn_deterministic.to_string());
        line("cudnn benchmark", b.determinism.cudnn_benchmark.to_string());
        line("cpu", or_none(&self.cpu_model));
        line("cpu count", self.cpu_count.to_string());
        line("os", format!("{} ({})", self.os, self.arch));
        s
    }
}

fn cpu_model() -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    info.lines().find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, v)| v.trim().to_owned()))
}

fn os_name() -> String {
    std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("PRETTY_NAME=").map(|v| v.trim_matches('"').to_owned())))
        .unwrap_or_else(|| std::env::consts::OS.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_round_trips_through_json() {
        let r = EnvReport::collect();
        assert_eq!(r.backend.libtorch, "2.11.0");
        let json = serde_json::to_string(&r).unwrap();
        let back: EnvReport = serde_json::from_str(&json).unwrap();
        assert_eq!(back, r);
        assert!(r.to_text().contains("libtorch               2.11.0"));
    }
}
