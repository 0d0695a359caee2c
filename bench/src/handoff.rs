//! `ckptd-handoff [ROUNDS]`: what handing work from one thread to another and back costs on
//! this machine, for BENCHMARKS.md's schedules goal (issue 31). A daemon built on an async
//! runtime hands each step of a job between threads (a runtime worker, SQLite's thread, the
//! blocking pool), where `ckptd-floor` does all of a run on one thread; this measures one such
//! round trip alone: two threads passing a number back and forth through rendezvous channels
//! (each pass a futex wake-up of a sleeping thread), ROUNDS times (default 20,000), the
//! process's CPU clock (both threads) and the wall clock around them.
//!
//! - `same_cpu`: both threads pinned to CPU 0, back to back;
//! - `two_cpus`: pinned to CPUs 0 and 1, back to back;
//! - `two_cpus_idle`: pinned to CPUs 0 and 1, each round after a 200 us pause (the other CPU
//!   idle when it is woken, as between a job's steps), less a loop of the pause alone;
//! - `free_idle`: the same with the scheduler choosing the CPUs.
//!
//! Prints `RESULT handoff <CPU us a round trip: same_cpu two_cpus two_cpus_idle free_idle>
//! <wall us a round trip, the same four>`; a machine with one CPU prints `nan` for the pinned
//! pairs it cannot make.

use std::sync::mpsc::sync_channel;
use std::time::{Duration, Instant};

#[path = "clock.rs"]
mod clock;

/// The process's CPU time so far (both threads'), in microseconds.
fn cpu() -> f64 {
    clock::cpu_us(libc::CLOCK_PROCESS_CPUTIME_ID)
}

/// Pins the calling thread to `cpu`; false if it cannot be.
fn pin(cpu: usize) -> bool {
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET and sched_setaffinity take it by
    // reference, for the calling thread (pid 0).
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    }
}

/// (CPU us, wall us) a round of `rounds`: a round trip to another thread when `peer`, the
/// pause alone otherwise; the threads pinned to `cpus` when given.
fn rounds(
    rounds: usize,
    cpus: Option<(usize, usize)>,
    pause: Option<Duration>,
    peer: bool,
) -> Option<(f64, f64)> {
    let (to_peer, peer_rx) = sync_channel::<usize>(0);
    let (peer_tx, back) = sync_channel::<usize>(0);
    let echo = std::thread::spawn(move || {
        if let Some((_, b)) = cpus {
            if !pin(b) {
                return false;
            }
        }
        while let Ok(v) = peer_rx.recv() {
            if peer_tx.send(v).is_err() {
                break;
            }
        }
        true
    });
    let pinned = cpus.is_none_or(|(a, _)| pin(a));
    let (c0, t0) = (cpu(), Instant::now());
    for i in 0..rounds {
        if !pinned {
            break;
        }
        if let Some(p) = pause {
            std::thread::sleep(p);
        }
        if peer && (to_peer.send(i).is_err() || back.recv().is_err()) {
            break;
        }
    }
    let (c, w) = (cpu() - c0, t0.elapsed().as_secs_f64() * 1e6);
    drop(to_peer);
    let echoed = echo.join().unwrap_or(false);
    // Unpinned again for the next measurement.
    // SAFETY: as in `pin`, with every CPU of the machine in the set.
    unsafe {
        let mut all: libc::cpu_set_t = std::mem::zeroed();
        for i in 0..libc::CPU_SETSIZE as usize {
            libc::CPU_SET(i, &mut all);
        }
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &all);
    }
    (pinned && echoed).then(|| (c / rounds as f64, w / rounds as f64))
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("ROUNDS is a number"))
        .unwrap_or(20_000);
    let pause = Some(Duration::from_micros(200));
    let same = rounds(n, Some((0, 0)), None, true);
    let two = rounds(n, Some((1, 0)), None, true);
    let two_idle = rounds(n / 4, Some((1, 0)), pause, true);
    let two_pause = rounds(n / 4, Some((1, 0)), pause, false);
    let free_idle = rounds(n / 4, None, pause, true);
    let free_pause = rounds(n / 4, None, pause, false);
    let less = |a: Option<(f64, f64)>, b: Option<(f64, f64)>| {
        a.zip(b).map(|(a, b)| (a.0 - b.0, a.1 - b.1))
    };
    let all = [
        same,
        two,
        less(two_idle, two_pause),
        less(free_idle, free_pause),
    ];
    let show = |f: fn(&(f64, f64)) -> f64| {
        all.iter()
            .map(|r| {
                r.as_ref()
                    .map_or("nan".to_owned(), |r| format!("{:.1}", f(r)))
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    println!("RESULT handoff {} {}", show(|r| r.0), show(|r| r.1));
}
