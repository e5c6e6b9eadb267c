//! Measuring a phase: this thread's CPU time and the wall clock around the
//! measured work only, and the process's peak resident memory; and what a
//! child process spent (its CPU seconds and peak RSS, from /proc or wait4).

use std::time::Instant;

/// CPU time and wall time accumulated over measured sections.
#[derive(Debug, Clone, Copy, Default)]
pub struct Timer {
    pub cpu_seconds: f64,
    pub wall_seconds: f64,
}

impl Timer {
    /// Runs `work`, adding its CPU and wall time.
    pub fn time<T>(&mut self, work: impl FnOnce() -> T) -> T {
        let (cpu, wall) = (thread_cpu_seconds(), Instant::now());
        let result = work();
        self.cpu_seconds += thread_cpu_seconds() - cpu;
        self.wall_seconds += wall.elapsed().as_secs_f64();
        result
    }
}

/// This thread's CPU time: unlike the wall clock, it does not count the
/// time other processes on a shared machine take from it.
pub fn thread_cpu_seconds() -> f64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec to a valid pointer.
    let status = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    assert_eq!(status, 0, "CLOCK_THREAD_CPUTIME_ID is available on Linux");
    now.tv_sec as f64 + now.tv_nsec as f64 / 1e9
}

/// The process's peak resident set (VmHWM) in MB, from /proc.
pub fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| status_peak_rss_mb(&status))
        .unwrap_or(f64::NAN)
}

/// MB per second (10^6 bytes).
pub fn mb_per_second(bytes: usize, seconds: f64) -> f64 {
    bytes as f64 / 1e6 / seconds
}

/// What one child process spent: its own CPU seconds (user + system, every
/// thread of it, nothing of the processes it talks to) and its peak
/// resident set.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcessUsage {
    pub cpu_seconds: f64,
    pub peak_rss_mb: f64,
}

/// The CPU seconds in a `/proc/<pid>/stat` line: `utime` plus `stime`
/// (fields 14 and 15, in clock ticks), counted after the command name's
/// closing parenthesis since the name itself may hold spaces.
pub fn stat_cpu_seconds(stat: &str, ticks_per_second: f64) -> Option<f64> {
    let (_, after_name) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // After the name: state is field 3, so utime (14) is the 12th.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / ticks_per_second)
}

/// The peak resident set (`VmHWM`) in MB (10^6 B) in a `/proc/<pid>/status`.
pub fn status_peak_rss_mb(status: &str) -> Option<f64> {
    let value = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))?;
    let kib: f64 = value.trim().strip_suffix("kB")?.trim().parse().ok()?;
    Some(kib * 1024.0 / 1e6)
}

/// What the running process `pid` has spent so far, from /proc. Read it
/// while the process lives (a function waiting for its next event): once
/// it exits and is reaped, /proc forgets it.
pub fn process_usage(pid: u32) -> Result<ProcessUsage, String> {
    let read = |file: &str| {
        std::fs::read_to_string(format!("/proc/{pid}/{file}"))
            .map_err(|error| format!("/proc/{pid}/{file}: {error}"))
    };
    // SAFETY: sysconf only reads a system constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let stat = read("stat")?;
    let cpu_seconds = stat_cpu_seconds(&stat, ticks as f64)
        .ok_or_else(|| format!("/proc/{pid}/stat has no utime and stime: {stat}"))?;
    let status = read("status")?;
    let peak_rss_mb =
        status_peak_rss_mb(&status).ok_or_else(|| format!("/proc/{pid}/status has no VmHWM"))?;
    Ok(ProcessUsage {
        cpu_seconds,
        peak_rss_mb,
    })
}

/// Runs `command` to its end and returns what it spent, from `wait4`'s
/// resource usage of that one child (not of any other child of ours).
pub fn run_measured(command: &mut std::process::Command) -> Result<ProcessUsage, String> {
    let child = command
        .spawn()
        .map_err(|error| format!("{command:?}: {error}"))?;
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: rusage is plain data that wait4 fills in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: pid is our own unreaped child; both pointers are valid. The
    // std `Child` is dropped without waiting, so nothing reaps it twice.
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    drop(child);
    if reaped != pid {
        return Err(format!(
            "{command:?}: wait4: {}",
            std::io::Error::last_os_error()
        ));
    }
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        return Err(format!("{command:?} failed (wait status {status})"));
    }
    let seconds = |time: libc::timeval| time.tv_sec as f64 + time.tv_usec as f64 / 1e6;
    Ok(ProcessUsage {
        cpu_seconds: seconds(usage.ru_utime) + seconds(usage.ru_stime),
        // ru_maxrss is in KiB on Linux.
        peak_rss_mb: usage.ru_maxrss as f64 * 1024.0 / 1e6,
    })
}

/// The median of `values` (the mean of the middle two for an even count);
/// NaN for none.
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_seconds_are_utime_plus_stime_after_the_name() {
        // A name with spaces and a parenthesis, as /proc prints it.
        let stat = "4242 (tokio (rt) x) S 1 4242 4242 0 -1 4194560 2931 0 0 0 \
                    137 25 0 0 20 0 3 0 123456 1000000 2000 18446744073709551615";
        assert_eq!(stat_cpu_seconds(stat, 100.0), Some(1.62));
        assert_eq!(stat_cpu_seconds("4242 (short) S 1 2", 100.0), None);
        assert_eq!(stat_cpu_seconds("no name here", 100.0), None);
    }

    #[test]
    fn peak_rss_is_vm_hwm_in_mb() {
        let status =
            "Name:\tbatcher\nVmPeak:\t  300000 kB\nVmHWM:\t   51200 kB\nVmRSS:\t 40000 kB\n";
        assert_eq!(status_peak_rss_mb(status), Some(51200.0 * 1024.0 / 1e6));
        assert_eq!(status_peak_rss_mb("Name:\tx\nVmRSS:\t1 kB\n"), None);
        assert_eq!(status_peak_rss_mb("VmHWM:\tlots\n"), None);
    }

    #[test]
    fn this_process_reads_as_itself() {
        let usage = process_usage(std::process::id()).unwrap();
        assert!(
            usage.cpu_seconds >= 0.0 && usage.peak_rss_mb > 0.0,
            "{usage:?}"
        );
        let error = process_usage(u32::MAX).unwrap_err();
        assert!(error.contains("/proc/4294967295/stat"), "{error}");
    }

    #[test]
    fn a_measured_child_must_succeed() {
        let usage = run_measured(&mut std::process::Command::new("true")).unwrap();
        assert!(usage.cpu_seconds >= 0.0, "{usage:?}");
        let error = run_measured(&mut std::process::Command::new("false")).unwrap_err();
        assert!(
            error.contains("false") && error.contains("failed"),
            "{error}"
        );
        let error = run_measured(&mut std::process::Command::new("/nonexistent/gzip")).unwrap_err();
        assert!(error.contains("/nonexistent/gzip"), "{error}");
    }

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(&[]).is_nan());
    }
}
