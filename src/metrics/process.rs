//! This process's CPU time and resident memory, read from Linux's `/proc`.
//!
//! Owns reading `/proc/self/stat` (user + system time) and `/proc/self/status`
//! (`VmRSS`). Elsewhere (no `/proc`) both read as `None` and the figures are
//! left out. Does not own rates (see `crate::stats`, which divides CPU time by
//! wall time between two readings).

use std::time::Duration;

/// Clock ticks per second of `/proc/self/stat`'s times: `USER_HZ`, which
/// Linux fixes at 100 for userspace on every architecture Rust targets
/// (`getconf CLK_TCK`), so no libc call is needed to ask.
const USER_HZ: u64 = 100;

/// CPU time this process has used, user and system.
pub fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    cpu_time_of(&stat)
}

/// The CPU time in a `/proc/{pid}/stat` line.
fn cpu_time_of(stat: &str) -> Option<Duration> {
    // The command name may hold spaces and parentheses: fields are counted
    // from after its closing one (state is the first, utime the 12th, stime
    // the 13th).
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    let ticks = user + system;
    Some(Duration::from_millis(ticks * 1000 / USER_HZ))
}

/// The process's resident memory, in bytes.
pub fn resident_memory() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    resident_memory_of(&status)
}

/// `VmRSS` of a `/proc/{pid}/status` text (given in kB: immune to the page
/// size, unlike `statm`).
fn resident_memory_of(status: &str) -> Option<u64> {
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kilobytes: u64 = line
        .trim_start_matches("VmRSS:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kilobytes * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_is_user_plus_system_ticks() {
        let stat =
            "4242 (rain node (x)) S 1 4242 4242 0 -1 4194560 1591 0 0 0 150 25 0 0 20 0 9 0 123 0";
        assert_eq!(cpu_time_of(stat), Some(Duration::from_millis(1750)));
        assert_eq!(cpu_time_of("garbage"), None);
    }

    #[test]
    fn resident_memory_is_vm_rss_in_bytes() {
        let status = "Name:\train-node\nVmPeak:\t  99999 kB\nVmRSS:\t    5120 kB\nThreads:\t9\n";
        assert_eq!(resident_memory_of(status), Some(5120 * 1024));
        assert_eq!(resident_memory_of("Name:\tx\n"), None);
    }

    #[test]
    fn this_process_has_figures_on_linux() {
        if cfg!(target_os = "linux") {
            assert!(resident_memory().unwrap() > 0);
            assert!(cpu_time().is_some());
        }
    }
}
