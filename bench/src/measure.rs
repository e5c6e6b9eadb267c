//! Measuring a phase: this thread's CPU time and the wall clock around the
//! measured work only, and the process's peak resident memory.

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
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmHWM:"))
                .and_then(|value| {
                    value
                        .trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<f64>()
                        .ok()
                })
        })
        .map_or(f64::NAN, |kib| kib * 1024.0 / 1e6)
}

/// MB per second (10^6 bytes).
pub fn mb_per_second(bytes: usize, seconds: f64) -> f64 {
    bytes as f64 / 1e6 / seconds
}
