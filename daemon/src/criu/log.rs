//! Turns a CRIU log into what a user needs: the `Error` lines that matter (`log_tail`), the
//! cause, whether the disk filled up, and, where the cause is recognised, a `hint` that says what
//! to do about it. Every error built from a CRIU log is built here (`failure`), and every "the
//! disk filled up during a dump" is decided here (`no_space`, `full_disk`).

use std::path::Path;

use ckptd_api::{Advice, CriuOption};

use crate::error::{Error, ErrorKind, Hint};
use crate::sys;

/// How many CRIU error lines a failure quotes.
pub const TAIL_LINES: usize = 12;

/// The file a dump's CRIU log is written to, in the checkpoint's directory.
pub const DUMP_LOG: &str = "dump.log";

/// The line CRIU logs only once a dump has fully succeeded (after the final state switch and
/// the statistics).
pub const DUMP_DONE: &str = "Dumping finished successfully";

/// Lines CRIU logs as errors on every run on hosts without CAP_SYS_RESOURCE; never the cause.
const HARMLESS: &[&str] = &["Can't setup RLIMIT_NOFILE"];

/// The last `max` error lines of a CRIU log (CRIU tags them `Error (file:line):`).
pub fn error_lines(log: &str, max: usize) -> Vec<String> {
    let mut lines: Vec<String> = log
        .lines()
        .filter(|l| l.contains("Error (") || l.starts_with("Error"))
        .filter(|l| !HARMLESS.iter().any(|h| l.contains(h)))
        .map(|l| l.trim().to_owned())
        .collect();
    if lines.len() > max {
        lines.drain(..lines.len() - max);
    }
    lines
}

/// The error lines a failure quotes (`log_tail`): the last `TAIL_LINES` of them.
/// When CRIU seized (froze) the first task, in seconds after it started: its log's first
/// `Seized task` line, whose `(SS.ffffff)` prefix is CRIU's own clock.
pub fn first_seize(log: &str) -> Option<f64> {
    let line = log.lines().find(|l| l.contains("Seized task"))?;
    let stamp = line.strip_prefix('(')?.split(')').next()?;
    stamp.trim().parse().ok()
}

pub fn tail(log: &str) -> Vec<String> {
    error_lines(log, TAIL_LINES)
}

/// The first line of `tail` that says why (not CRIU giving up: "FAILED", "criu failed: type"),
/// as its bare message.
pub fn cause(tail: &[String]) -> Option<String> {
    tail.iter()
        .find(|l| !l.contains("FAILED") && !l.contains("criu failed: type"))
        .map(|l| message_of(l))
}

/// Whether CRIU failed because the filesystem it wrote to was full.
pub fn no_space(log: &str) -> bool {
    log.contains("No space left on device")
}

/// The error of a program that drove CRIU and failed: `what` failed, because of the log's cause
/// (or `fallback` when the log names none); `log_tail` quotes CRIU's error lines (or, when there
/// are none, `other_lines`: the runtime's own output); a full disk is `insufficient_storage`.
/// The hint is the recognised cause's, else where to read the whole log.
pub fn failure(
    what: &str,
    log: &str,
    other_lines: &[String],
    fallback: &str,
    log_path: &Path,
) -> Error {
    let mut lines = tail(log);
    if lines.is_empty() {
        lines = other_lines
            .iter()
            .filter(|l| !l.trim().is_empty())
            .cloned()
            .collect();
    }
    let cause = cause(&lines).unwrap_or_else(|| fallback.to_owned());
    let kind = if no_space(log) {
        ErrorKind::InsufficientStorage
    } else {
        ErrorKind::CriuFailed
    };
    let err = Error::new(kind, format!("{what}: {cause}"))
        .with("log_tail", lines)
        .with("log", log_path.display().to_string());
    match recognise(log) {
        Some((id, h)) => err.with("cause", id).with_any_hint(h),
        None => err.with_any_hint(Hint::Advice(Advice::ReadLog {
            path: log_path.display().to_string(),
        })),
    }
}

/// A restore that failed on a full filesystem: CRIU could not write even its restore log (it
/// is empty or missing) or said ENOSPC, and the images' filesystem has (almost) no room left.
/// That is `insufficient_storage`, saying where, instead of a CRIU failure whose log tail is
/// empty and whose hint names a log that could not be written.
pub fn full_disk_at_restore(e: Error, images: &crate::sys::Folder, log_name: &str) -> Error {
    if e.kind != ErrorKind::CriuFailed {
        return e;
    }
    let log = images
        .read_tail(log_name, crate::sys::MAX_LOG_READ)
        .map(|(t, _)| t)
        .unwrap_or_default();
    let said_enospc = log.contains("No space left on device");
    let free = sys::free_bytes(&images.path()).unwrap_or(u64::MAX);
    if !(said_enospc || (log.trim().is_empty() && free < sys::SPACE_MARGIN)) {
        return e;
    }
    let mut full = Error::new(
        ErrorKind::InsufficientStorage,
        format!(
            "the filesystem holding {} is full ({} KiB free): CRIU could not write its restore \
             log there; the checkpoint is unchanged and nothing was restored",
            images.shown().display(),
            free >> 10
        ),
    )
    .with_hint("free space on that filesystem, then restore again");
    for (k, v) in e.details {
        if !matches!(k.as_str(), "hint" | "advice" | "log" | "log_tail") {
            full.details.insert(k, v);
        }
    }
    full.details.insert("criu_message".into(), e.message.into());
    full
}

/// What runc says when the CRIU it drives died under it.
const RUNTIME_LOST_CRIU: [&str; 5] = [
    "connection reset by peer",
    "unexpected EOF",
    ": EOF",
    "signal: killed",
    "broken pipe",
];

/// A failed dump on a filesystem with (almost) no room left failed for lack of space, whatever
/// CRIU managed to log: a full disk can keep it from writing even its log.
pub fn full_disk(e: Error, images: &crate::sys::Folder) -> Error {
    if e.kind == ErrorKind::InsufficientStorage {
        return e;
    }
    // CRIU ends the log of a failed dump with "Dumping FAILED."; a CRIU that exited by itself
    // without writing it could not write its own log: the filesystem filled up (and may have
    // been freed since by another job). A CRIU killed by a signal also leaves its log cut short,
    // and says nothing about the disk.
    let log = images
        .read_tail(DUMP_LOG, crate::sys::MAX_LOG_READ)
        .map(|(t, _)| t)
        .unwrap_or_default();
    // Killed: CRIU itself ended by a signal, or a runtime (runc) reporting that the CRIU it
    // drives dropped their connection (runc's `criu swrk` died: its socket reset or hit EOF),
    // which a CRIU failing on a full disk does not do (it answers with its error).
    let said = |needle: &str| {
        e.message.contains(needle)
            || e.details
                .get("log_tail")
                .and_then(|t| t.as_array())
                .is_some_and(|lines| {
                    lines
                        .iter()
                        .any(|l| l.as_str().is_some_and(|l| l.contains(needle)))
                })
    };
    let killed = e
        .details
        .get("exit_status")
        .and_then(|s| s.as_str())
        .is_some_and(|s| s.contains("signal"))
        || RUNTIME_LOST_CRIU.iter().any(|n| said(n));
    let log_cut = e.kind == ErrorKind::CriuFailed && !killed && !log.contains("FAILED");
    let said_enospc = log.contains("No space left on device");
    match sys::free_bytes(&images.path()) {
        Ok(free) if free < sys::SPACE_MARGIN || log_cut || said_enospc => {
            let mut full = Error::new(
                ErrorKind::InsufficientStorage,
                format!(
                    "the filesystem holding {} filled up or failed during the dump (CRIU could not \
                     finish writing; {} KiB free now); the partial images were removed and the \
                     target left running",
                    images.shown().display(),
                    free >> 10
                ),
            )
            .with_advice(ckptd_api::Advice::MoreSpace);
            for (k, v) in e.details {
                if k != "hint" {
                    full.details.insert(k, v);
                }
            }
            full.details.insert("criu_message".into(), e.message.into());
            full
        }
        _ => e,
    }
}

/// The message of a CRIU log line, without its timestamp and source location.
pub fn message_of(line: &str) -> String {
    line.split_once("): ")
        .map_or(line, |(_, m)| m)
        .trim()
        .to_owned()
}

/// A recognised cause: its short name (the `cause` of an error's details and of the metrics'
/// label: `tcp_established`, `ext_unix_sk`, `pid_in_use`, ...) and what to tell the user to do.
pub fn recognise(log: &str) -> Option<(&'static str, Hint)> {
    let errors: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("Error (") || l.starts_with("Error"))
        .filter(|l| !HARMLESS.iter().any(|h| l.contains(h)))
        .collect();
    let has = |needle: &str| errors.iter().any(|l| l.contains(needle));
    if has("Can't connect inet socket back: Network is unreachable") {
        return Some(("network_unreachable", plain(
            "CRIU could not re-create the tree's TCP connections: their network is not up in the \
             restored network namespace (Docker gives a restored container a new one and brings \
             its network up only after CRIU has run); close the connections before the \
             checkpoint, or run the workload as a runc container, whose restore keeps them"
                .into(),
        )));
    }
    if has("Connected TCP socket") || has("--tcp-established") {
        return Some(("tcp_established", retry(
            CriuOption::TcpEstablished,
            "the process has an established TCP connection",
            None,
            Some("the connection is then restored too, so restore on a host where its address is valid"),
        )));
    }
    if has("External socket is used") || has("ext-unix-sk") || has("unix: Can't dump") {
        return Some((
            "ext_unix_sk",
            retry(
                CriuOption::ExtUnixSk,
                "the process uses a unix socket whose peer is outside the dumped tree",
                Some("checkpoint the peer together with it"),
                None,
            ),
        ));
    }
    if has("Don't have tty to inherit session from") {
        // Retrying with shell_job would not help: it had it.
        return Some(("tty_restore", plain(
            "the tree was checkpointed attached to a terminal (shell_job), and a restore through \
             ckptd has no terminal to give back to it: start such a process detached (setsid, \
             stdio redirected away from the terminal) before checkpointing it, or restore it by \
             hand from a terminal with criu restore --shell-job"
                .into(),
        )));
    }
    if let Some((file, now, was)) = changed_size(&errors) {
        return Some((
            "file_changed",
            plain(format!(
                "the file {file} changed since the checkpoint ({now} bytes now, {was} then); CRIU \
             reopens files as they were: put the file back as it was, or take a new checkpoint"
            )),
        ));
    }
    if has("tty") && (has("shell-job") || has("Can't dump") || has("tty:")) {
        return Some((
            "tty",
            retry(
                CriuOption::ShellJob,
                "the process is attached to a terminal or its session leader is outside the tree",
                Some(
                    "start the target with setsid and its stdio redirected away from the terminal",
                ),
                None,
            ),
        ));
    }
    if has("is outside of tree") || has("session leader") || has("--shell-job") {
        return Some(("session", retry(
            CriuOption::ShellJob,
            "the process belongs to a session or process group led by a process outside the dumped \
             tree",
            Some("start the target with setsid"),
            None,
        )));
    }
    if has("file locks") || has("--file-locks") {
        return Some((
            "file_locks",
            retry(
                CriuOption::FileLocks,
                "the process holds file locks",
                None,
                None,
            ),
        ));
    }
    if has("No space left on device") {
        return Some(("no_space", Hint::Advice(Advice::MoreSpace)));
    }
    if let Some(pid) = pid_in_use(&errors) {
        return Some((
            "pid_in_use",
            plain(format!(
            "pid {pid} is in use, and a restore in place needs the tree's own pids: if that is \
             the checkpointed process still running, end it first (kill {pid}); otherwise stop \
             what holds it (or wait until the original has exited); then restore again"
        )),
        ));
    }
    if has("iptables") || has("nft") && has("lock") || has("Can't lock network") {
        return Some((
            "network_lock",
            plain(
                "CRIU could not lock the network: install iptables (apt-get install iptables) or \
             configure CRIU's nftables network lock"
                    .into(),
            ),
        ));
    }
    if let Some(file) = missing_file(&errors) {
        return Some((
            "missing_file",
            plain(format!(
            "the restored root filesystem has no {file}, which the images need: restore into a \
             bundle whose rootfs holds the same files as the checkpointed one (copy it with cp -a)"
        )),
        ));
    }
    if has("Can't lookup mount=") {
        return Some((
            "external_mount",
            plain(
                "a file descriptor (often stdout or stderr) points at a file opened outside the \
             target's mount namespace (a host file, even one inside the container's rootfs): point \
             its stdio at /dev/null or a pipe, or let the container open its own files"
                    .into(),
            ),
        ));
    }
    if has("Can't get rlimit") && has("Operation not permitted") {
        return Some(("rlimit", plain(
            "CRIU could not read the target's resource limits: dumping a process of another user \
             needs CAP_SYS_RESOURCE, which ckptd (and so CRIU) does not have here; run ckptd with \
             it (systemd: AmbientCapabilities / no CapabilityBoundingSet that drops it)"
                .into(),
        )));
    }
    if has("Operation not permitted") || has("EPERM") {
        return Some(("permission", plain(
            "CRIU was denied a privileged operation: ckptd must run as root with the capabilities \
             CRIU needs (CAP_SYS_ADMIN, CAP_SYS_PTRACE, CAP_CHECKPOINT_RESTORE)"
                .into(),
        )));
    }
    None
}

/// "File tmp/x has bad size 32 (expect 23)": the file, its size now and at the checkpoint.
fn changed_size(errors: &[&str]) -> Option<(String, u64, u64)> {
    errors.iter().find_map(|l| {
        let rest = l.split("File ").nth(1)?;
        let (file, rest) = rest.split_once(" has bad size ")?;
        let (now, rest) = rest.split_once(" (expect ")?;
        let was = rest.split(')').next()?;
        Some((format!("/{file}"), now.parse().ok()?, was.parse().ok()?))
    })
}

fn plain(text: String) -> Hint {
    Hint::Plain(text)
}

fn retry(option: CriuOption, because: &str, or: Option<&str>, note: Option<&str>) -> Hint {
    Hint::Advice(Advice::RetryWith {
        option,
        because: because.into(),
        or: or.map(str::to_owned),
        note: note.map(str::to_owned),
    })
}

/// `Can't open file bin/busybox on restore: No such file or directory`
fn missing_file(errors: &[&str]) -> Option<String> {
    errors.iter().find_map(|l| {
        let rest = l.split("Can't open file ").nth(1)?;
        let (file, tail) = rest.split_once(" on restore")?;
        tail.contains("No such file").then(|| file.to_owned())
    })
}

/// `Can't fork for 4242: File exists` (clone3 with set_tid on a taken pid).
fn pid_in_use(errors: &[&str]) -> Option<i32> {
    errors.iter().find_map(|l| {
        let rest = l.split("Can't fork for ").nth(1)?;
        if !l.contains("File exists") {
            return None;
        }
        rest.split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    })
}

#[cfg(test)]
mod tests {

    #[test]
    fn the_first_seize_is_read_from_crius_clock() {
        let log = "(00.000101) Version: 4.2.1\n(00.033578) Seized task 7898, state 1\n(00.04) Seized task 7899, state 1\n";
        assert_eq!(first_seize(log), Some(0.033578));
        assert_eq!(first_seize("(00.1) nothing"), None);
    }

    use super::*;

    /// The hint `failure` would give for this log.
    fn hint(log: &str) -> Option<Hint> {
        recognise(log).map(|(_, h)| h)
    }

    const TCP_LOG: &str = "\
(00.043573) Error (criu/util.c:1534): rlimit: Can't setup RLIMIT_NOFILE for self: Operation not permitted
(00.050000) Dumping stuff
(00.056034) Error (criu/sk-inet.c:200): inet: Connected TCP socket, consider using --tcp-established option.
(00.056050) Error (criu/cr-dump.c:1545): Dump files (pid: 7066) failed with -1
(00.056856) Error (criu/cr-dump.c:1975): Dumping FAILED.
";

    /// A CRIU killed mid-dump leaves its log cut short, as a full disk does; only the full disk
    /// is insufficient_storage.
    #[test]
    fn a_killed_criu_is_not_a_full_disk() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join(DUMP_LOG), "(00.01) Dumping stuff\n").unwrap();
        let failed = |status: &str| {
            Error::new(ErrorKind::CriuFailed, "CRIU could not dump pid 42")
                .with("exit_status", status.to_owned())
        };
        let folder = crate::sys::Folder::at(d.path()).unwrap();
        let e = full_disk(failed("signal: 9 (SIGKILL)"), &folder);
        assert_eq!(e.kind, ErrorKind::CriuFailed, "{e:?}");
        let e = full_disk(failed("exit status: 1"), &folder);
        assert_eq!(e.kind, ErrorKind::InsufficientStorage, "{e:?}");
        // runc's CRIU killed under it: runc exits 1 and says the connection broke.
        let e = full_disk(
            Error::new(
                ErrorKind::CriuFailed,
                "CRIU (through runc) could not checkpoint container c1: level=error msg=\"CRIU \
                 version check failed: read criu-xprt-cln: connection reset by peer\"",
            )
            .with("exit_status", "exit status: 1".to_owned()),
            &folder,
        );
        assert_eq!(e.kind, ErrorKind::CriuFailed, "{e:?}");
        let e = full_disk(
            Error::new(
                ErrorKind::CriuFailed,
                "CRIU (through runc) could not checkpoint container c1: level=error msg=\"read \
                 unixpacket @->@: EOF\"",
            )
            .with("exit_status", "exit status: 1".to_owned()),
            &folder,
        );
        assert_eq!(e.kind, ErrorKind::CriuFailed, "{e:?}");
        std::fs::write(
            d.path().join(DUMP_LOG),
            "(00.01) Error (criu/image.c:1): write: No space left on device\n(00.02) Error: Dumping FAILED.\n",
        )
        .unwrap();
        let e = full_disk(failed("exit status: 1"), &folder);
        assert_eq!(e.kind, ErrorKind::InsufficientStorage, "{e:?}");
    }

    #[test]
    fn a_changed_file_and_a_lost_terminal_get_their_own_hints() {
        let log = "(00.01) 12: Error (criu/files-reg.c:2120): File tmp/data.txt has bad size 32 (expect 23)\n";
        let h = hint(log).unwrap().api_text();
        assert!(
            h.contains("/tmp/data.txt changed since the checkpoint (32 bytes now, 23 then)"),
            "{h}"
        );
        let log = "(00.01) Error (criu/tty.c:1015): tty: Don't have tty to inherit session from, aborting\n";
        let h = hint(log).unwrap().api_text();
        assert!(
            h.contains("no terminal to give back") && !h.contains("retry"),
            "{h}"
        );
        let log = "(00.01) Error (criu/cr-restore.c:1237): Can't fork for 4242: File exists\n";
        let h = hint(log).unwrap().api_text();
        assert!(
            h.contains("pid 4242 is in use") && !h.contains("container"),
            "{h}"
        );
    }

    #[test]
    fn tcp_failure_gets_tail_and_hint() {
        let tail = error_lines(TCP_LOG, 10);
        assert_eq!(tail.len(), 3, "{tail:?}");
        assert!(tail[0].contains("Connected TCP socket"));
        assert!(hint(TCP_LOG)
            .unwrap()
            .api_text()
            .contains("tcp_established"));
    }

    #[test]
    fn pid_in_use_is_recognised() {
        let log = "(00.066771) Error (criu/cr-restore.c:1237): Can't fork for 6630: File exists\n\
                   (00.066806) Error (criu/cr-restore.c:2331): Restoring FAILED.\n";
        let h = hint(log).unwrap().api_text();
        assert!(h.contains("pid 6630 is in use"), "{h}");
    }

    /// Lines CRIU 4.2.1 logged on this project's machine for each cause.
    #[test]
    fn real_causes_get_their_hints() {
        let cases = [
            ("(00.01) Error (criu/pstree.c:304): The root process 13832 is not a session leader. Consider using --shell-job option", "shell_job"),
            ("(00.01) Error (criu/tty.c:410): tty: Found slave peer index 0 without correspond master peer", "shell_job"),
            ("(00.01) Error (criu/sk-unix.c:874): unix: External socket is used. Consider using --ext-unix-sk option.", "ext_unix_sk"),
            ("(00.06)      1: Error (criu/files-reg.c:2353): Can't open file bin/busybox on restore: No such file or directory", "has no bin/busybox"),
            (
                "(00.02) Error (criu/cr-dump.c:389): Can't get rlimit 0: Operation not permitted",
                "CAP_SYS_RESOURCE",
            ),
            // A Docker restore with tcp_established (Docker 20.10, containerd 1.6, runc 1.1.5).
            (
                "(00.068317)      8: Error (soccr/soccr.c:529): Can't connect inet socket back: Network is unreachable",
                "network is not up",
            ),
        ];
        for (line, want) in cases {
            let log = format!("{line}\n(00.02) Error (criu/cr-dump.c:1975): Dumping FAILED.\n");
            let h = hint(&log).map(|h| h.api_text()).unwrap_or_default();
            assert!(h.contains(want), "{line}: {h}");
        }
    }

    #[test]
    fn the_harmless_rlimit_line_gives_no_hint() {
        let log = "(00.04) Error (criu/util.c:1534): rlimit: Can't setup RLIMIT_NOFILE for self: Operation not permitted\n";
        assert_eq!(hint(log), None);
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        let log: String = (0..50)
            .map(|i| format!("(0.1) Error (x.c:1): e{i}\n"))
            .collect();
        let tail = error_lines(&log, 5);
        assert_eq!(tail.len(), 5);
        assert!(tail[4].ends_with("e49"));
        assert_eq!(hint(&log), None);
    }
}
