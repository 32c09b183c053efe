//! A process's resource use read from /proc: CPU time, resident memory, open descriptors and threads. The load
//! generator reads Parley's figures from Parley's process alone, and its own side's separately.

/// Clock ticks per second of /proc's CPU times (`USER_HZ`, 100 on Linux).
pub const CLOCK_TICKS_PER_SEC: f64 = 100.0;

/// One reading of a process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcSample {
    /// User + system CPU time, in clock ticks.
    pub cpu_ticks: u64,
    /// Resident memory, KiB.
    pub rss_kib: u64,
    /// Open file descriptors (`/proc/<pid>/fd` entries).
    pub fds: u64,
    /// Threads (`/proc/<pid>/task` entries).
    pub threads: u64,
}

/// Reads process `pid` ("self" for this one); `None` if it is gone or /proc is unreadable.
pub fn sample(pid: &str) -> Option<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let (cpu_ticks, rss_kib) = parse(&stat, &status)?;
    Some(ProcSample {
        cpu_ticks,
        rss_kib,
        fds: count_entries(&format!("/proc/{pid}/fd")),
        threads: count_entries(&format!("/proc/{pid}/task")),
    })
}

/// CPU ticks (utime + stime) from `/proc/<pid>/stat` and `VmRSS` from `/proc/<pid>/status`.
fn parse(stat: &str, status: &str) -> Option<(u64, u64)> {
    // The command name may hold spaces and parentheses; the fields after its closing one are fixed.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let rss = status.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()?;
    Some((ticks, rss))
}

fn count_entries(dir: &str) -> u64 {
    std::fs::read_dir(dir).map(|entries| entries.count() as u64).unwrap_or(0)
}

/// CPU used between two samples as a percentage of one core over `seconds`.
pub fn cpu_percent(before: &ProcSample, after: &ProcSample, seconds: f64) -> f64 {
    if seconds <= 0.0 {
        return f64::NAN;
    }
    after.cpu_ticks.saturating_sub(before.cpu_ticks) as f64 / CLOCK_TICKS_PER_SEC / seconds * 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_and_status_are_read() {
        let stat = "1234 (tokio (rt) x) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 37 0 0 20 0 9 0 500 1000 300";
        let status = "Name:\tparley\nVmPeak:\t  99999 kB\nVmRSS:\t   45678 kB\nThreads:\t9\n";
        assert_eq!(parse(stat, status), Some((287, 45678)));
        assert_eq!(parse("garbage", status), None);
    }

    #[test]
    fn this_process_can_be_read() {
        let me = sample("self").expect("/proc/self");
        assert!(me.rss_kib > 0 && me.fds > 0 && me.threads > 0);
    }
}
