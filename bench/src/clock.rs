//! CPU clocks for the bench's measuring programs (`ckptd-floor`, `ckptd-handoff`).

/// CPU time so far by `clock` (`CLOCK_THREAD_CPUTIME_ID`: this thread's;
/// `CLOCK_PROCESS_CPUTIME_ID`: every thread's), in microseconds: the scheduler's own count, to
/// the nanosecond (`getrusage`'s user and system split is scaled from ticks, too coarse for a
/// step).
pub fn cpu_us(clock: libc::clockid_t) -> f64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the struct it is given.
    unsafe { libc::clock_gettime(clock, &mut t) };
    t.tv_sec as f64 * 1e6 + t.tv_nsec as f64 / 1e3
}
