//! Peak resident memory of this process, to report what segmenting one scan cost. Read from
//! Linux's `/proc/self/status` (`VmHWM`); elsewhere nothing is measured.

/// Sets the kernel's peak resident set size of this process ("high water mark") back to the
/// current size, so that [`peak_resident_bytes`] measures from here on. Where the kernel
/// refuses (before Linux 4.0, or not Linux), the peak keeps counting from the process's
/// start, which still bounds what came after.
pub fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// The peak resident set size since the process started or [`reset_peak`] was last called,
/// in bytes; `None` where the system does not say.
pub fn peak_resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_vm_hwm(&status)
}

/// A peak as reported on the terminal: whole MiB rounded up, or `unknown`.
pub fn describe(bytes: Option<u64>) -> String {
    match bytes {
        Some(b) => format!("{} MiB", b.div_ceil(1 << 20)),
        None => "unknown".to_string(),
    }
}

fn parse_vm_hwm(status: &str) -> Option<u64> {
    let line = status.lines().find_map(|l| l.strip_prefix("VmHWM:"))?;
    let kib: u64 = line.trim().strip_suffix("kB")?.trim().parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_high_water_mark() {
        assert_eq!(parse_vm_hwm("VmPeak:\t 3060 kB\nVmHWM:\t    1672 kB\nVmRSS:\t 1000 kB\n"), Some(1672 * 1024));
        assert_eq!(parse_vm_hwm("VmRSS:\t 1000 kB\n"), None);
        assert_eq!((describe(Some((3 << 20) + 1)), describe(None)), ("4 MiB".into(), "unknown".into()));
        if cfg!(target_os = "linux") {
            let before = peak_resident_bytes().expect("Linux reports VmHWM");
            // Touch 64 MiB: the peak must cover it.
            let block = vec![1u8; 64 << 20];
            let after = peak_resident_bytes().unwrap();
            assert!(after >= before.max(64 << 20), "{after} < 64 MiB after touching 64 MiB");
            drop(block);
        }
    }
}
