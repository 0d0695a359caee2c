//! What `ckpt` prints: tables and text for people, JSON for scripts, events as one line each, and
//! errors with their hint in `ckpt`'s own words.

use std::io::Write;

use ckptd_api::{Advice, Checkpoint, ClientError, Event, Job, Retention, Schedule, Target};

use crate::table::{human_bytes, Table};

pub fn print_json<T: serde::Serialize>(v: &T) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).unwrap_or_else(|e| format!("\"{e}\""))
    );
}

pub fn target_text(t: &Target) -> String {
    match t {
        Target::Process { pid } => format!("pid {pid}"),
        Target::Container { id, runtime, .. } => format!("{runtime} {id}"),
        Target::Group { targets } => format!(
            "group of {}",
            targets
                .iter()
                .map(target_text)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// A target in a sentence: "pid 42", "container web" (without its runtime, as `ckpt`'s
/// messages about one target name it), a group's members.
pub fn target_words(t: &Target) -> String {
    match t {
        Target::Process { pid } => format!("pid {pid}"),
        Target::Container { id, .. } => format!("container {id}"),
        Target::Group { targets } => format!(
            "group of {}",
            targets
                .iter()
                .map(target_words)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// "3m ago", or "in 5s" for a time to come.
pub fn ago(t: &chrono::DateTime<chrono::Utc>) -> String {
    let ms = (chrono::Utc::now() - *t).num_milliseconds();
    if ms < 0 {
        // Round up: a run due in 0.4 s is "in 1s", not "0s ago".
        format!("in {}", short_secs((-ms + 999) / 1000))
    } else {
        format!("{} ago", short_secs(ms / 1000))
    }
}

/// A time where one is read alone (`inspect`, event lines): RFC 3339 in UTC, to the second,
/// with its zone (`2026-12-05T14:31:44Z`). Tables say how long ago (`ago`); `--json` has the
/// API's own RFC 3339.
pub fn when(t: &chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

pub fn short_secs(s: i64) -> String {
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        3600..=86_399 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

/// An id as tables show it: its first 8 characters, or whole with `--wide`.
pub fn short_id(id: &uuid::Uuid, wide: bool) -> String {
    let id = id.to_string();
    if wide {
        id
    } else {
        id[..8].to_owned()
    }
}

pub fn checkpoint_table(items: &[Checkpoint], wide: bool) -> Table {
    let mut t = Table::new(&["NAME", "TARGET", "STATUS", "SIZE", "CREATED", "ID"]);
    for c in items {
        t.row(vec![
            c.name.clone(),
            target_text(&c.target),
            c.status.as_str().to_owned(),
            human_bytes(c.size_bytes),
            ago(&c.created_at),
            short_id(&c.id, wide),
        ]);
    }
    t
}

pub fn job_outcome(j: &Job) -> String {
    if let Some(e) = &j.error {
        return e.to_string();
    }
    match &j.result {
        Some(r) => result_text(r),
        None => String::new(),
    }
}

/// A job's result in a few words: the restored pid and container, a group's members each.
fn result_text(r: &ckptd_api::JobResult) -> String {
    let mut parts = Vec::new();
    if let Some(pid) = r.pid {
        parts.push(format!("pid {pid}"));
    }
    if let Some(c) = &r.container {
        parts.push(format!("container {c}"));
    }
    if !r.members.is_empty() {
        let members: Vec<String> = r.members.iter().map(result_text).collect();
        parts.push(format!("group of {}", members.join("; ")));
    }
    parts.join(", ")
}

/// The CRIU options that are on, by their API names; `-` for none.
fn options_text(o: &ckptd_api::CheckpointOptions) -> String {
    let on: Vec<&str> = [
        (o.leave_running, "leave_running"),
        (o.tcp_established, "tcp_established"),
        (o.ext_unix_sk, "ext_unix_sk"),
        (o.file_locks, "file_locks"),
        (o.shell_job, "shell_job"),
    ]
    .iter()
    .filter(|(on, _)| *on)
    .map(|(_, n)| *n)
    .collect();
    if on.is_empty() {
        "-".into()
    } else {
        on.join(", ")
    }
}

pub fn inspect_text(c: &Checkpoint) -> String {
    let mut out = Vec::new();
    let mut kv = |k: &str, v: String| out.push(format!("{k:<14}{v}"));
    kv("Name:", c.name.clone());
    kv("ID:", c.id.to_string());
    kv("Target:", target_text(&c.target));
    kv("Status:", c.status.as_str().to_owned());
    kv(
        "Created:",
        format!("{} ({})", when(&c.created_at), ago(&c.created_at)),
    );
    if let Some(t) = c.completed_at {
        kv("Completed:", when(&t));
    }
    if let Some(t) = c.expires_at {
        kv("Expires:", format!("{} ({})", when(&t), ago(&t)));
    }
    kv("Directory:", c.dir.clone());
    kv("Size:", human_bytes(c.size_bytes));
    for l in &c.locations {
        match l {
            ckptd_api::Location::Local { dir } => kv("Location:", format!("here, {dir}")),
            ckptd_api::Location::Remote(r) => kv(
                "Location:",
                format!(
                    "remote {}: {} ({}{}, pushed {})",
                    r.remote,
                    r.key,
                    human_bytes(r.size_bytes),
                    if r.encrypted { ", encrypted" } else { "" },
                    when(&r.pushed_at)
                ),
            ),
        }
    }
    if c.status == ckptd_api::CheckpointStatus::Ready && !c.is_local() {
        kv(
            "",
            "images only in remotes: `ckpt restore` pulls them first".into(),
        );
    }
    kv("Options:", options_text(&c.options));
    if !c.labels.is_empty() {
        let l: Vec<String> = c.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        kv("Labels:", l.join(", "));
    }
    if let Some(v) = &c.criu_version {
        kv("CRIU:", v.clone());
    }
    if let Some(s) = &c.stats {
        kv(
            "Frozen:",
            format!(
                "{:.3} s ({} pages written)",
                s.frozen_time_us as f64 / 1e6,
                s.pages_written
            ),
        );
    }
    if let Some(r) = c.container.as_ref().filter(|r| !r.bundle.is_empty()) {
        kv("Bundle:", r.bundle.clone());
    }
    // A group's members, each with its own dump's figures and images' folder.
    for (i, m) in c.members.iter().enumerate() {
        let mut line = target_text(&m.target);
        if let Some(s) = &m.stats {
            line.push_str(&format!(
                ": dumped in {:.3} s, {} pages",
                s.frozen_time_us as f64 / 1e6,
                s.pages_written
            ));
        }
        if let Some(r) = m.container.as_ref().filter(|r| !r.bundle.is_empty()) {
            line.push_str(&format!(", bundle {}", r.bundle));
        }
        line.push_str(&format!(", images in {}/{i}", c.dir));
        kv(&format!("Member {i}:"), line);
    }
    if let Some(o) = &c.origin {
        let mut from = format!("{} container {}", o.engine, o.container);
        if let (Some(p), Some(n)) = (&o.pod, &o.namespace) {
            from.push_str(&format!(" in pod {p} (namespace {n})"));
        }
        if let Some(i) = &o.image {
            from.push_str(&format!(", image {i}"));
        }
        kv("Origin:", from);
    }
    if let Some(e) = &c.error {
        kv("Error:", e.to_string());
        for l in e.log_tail() {
            out.push(format!("              {l}"));
        }
    }
    out.join("\n")
}

/// A checkpoint's process tree, as `checkpointctl inspect --ps-tree` draws it: each process under
/// its parent, with its pid and command.
pub fn process_tree_text(processes: &[ckptd_api::CheckpointProcess]) -> String {
    fn walk(
        all: &[ckptd_api::CheckpointProcess],
        p: &ckptd_api::CheckpointProcess,
        prefix: &str,
        last: bool,
        root: bool,
        out: &mut Vec<String>,
    ) {
        let mut line = String::from(prefix);
        if !root {
            line.push_str(if last { "└── " } else { "├── " });
        }
        line.push_str(&format!("[{}] {}", p.pid, p.command));
        if p.threads > 1 {
            line.push_str(&format!(" ({} threads)", p.threads));
        }
        if p.zombie {
            line.push_str(" (zombie)");
        }
        out.push(line);
        let children: Vec<_> = all
            .iter()
            .filter(|c| c.ppid == p.pid && c.pid != p.pid)
            .collect();
        let next = if root {
            prefix.to_owned()
        } else {
            format!("{prefix}{}", if last { "    " } else { "│   " })
        };
        for (i, c) in children.iter().enumerate() {
            walk(all, c, &next, i + 1 == children.len(), false, out);
        }
    }
    let mut out = Vec::new();
    let pids: Vec<i32> = processes.iter().map(|p| p.pid).collect();
    for root in processes.iter().filter(|p| !pids.contains(&p.ppid)) {
        walk(processes, root, "", true, true, &mut out);
    }
    out.join("\n")
}

/// A schedule's last run: its status and when, and its error.
fn last_run_text(s: &Schedule) -> String {
    match &s.last_run {
        Some(r) => {
            let mut l = format!("{:?} {}", r.status, ago(&r.at)).to_lowercase();
            if let Some(e) = &r.error {
                l.push_str(&format!(": {}", e.message));
            }
            l
        }
        None => "-".into(),
    }
}

/// Whether a schedule is enabled, and when ckptd disabled it, why.
fn enabled_text(s: &Schedule) -> String {
    match (&s.enabled, &s.disabled_reason) {
        (true, _) => "yes".into(),
        (false, Some(why)) => format!("no: {why}"),
        (false, None) => "no".into(),
    }
}

pub fn schedule_table(items: &[Schedule]) -> Table {
    let mut t = Table::new(&["NAME", "TARGET", "CRON", "ENABLED", "NEXT", "LAST", "KEEP"]);
    for s in items {
        let last = last_run_text(s);
        t.row(vec![
            s.name.clone(),
            target_text(&s.target),
            s.effective_cron.clone(),
            enabled_text(s),
            s.next_run_at.map(|t| ago(&t)).unwrap_or_else(|| "-".into()),
            last,
            retention_text(&s.retention),
        ]);
    }
    t
}

/// `ckpt schedule inspect`: one field per line, like `ckpt inspect`.
pub fn schedule_text(s: &Schedule) -> String {
    let mut out = Vec::new();
    let mut kv = |k: &str, v: String| out.push(format!("{k:<16}{v}"));
    kv("Name:", s.name.clone());
    kv("ID:", s.id.to_string());
    kv("Target:", target_text(&s.target));
    if s.cron == s.effective_cron {
        kv("Cron:", format!("{} (UTC)", s.cron));
    } else {
        kv(
            "Cron:",
            format!("{} (runs as {}, UTC)", s.cron, s.effective_cron),
        );
    }
    kv("Enabled:", enabled_text(s));
    kv(
        "Next run:",
        s.next_run_at
            .map(|t| format!("{} ({})", when(&t), ago(&t)))
            .unwrap_or_else(|| "-".into()),
    );
    kv("Last run:", last_run_text(s));
    if let Some(r) = &s.last_run {
        if let Some(c) = &r.checkpoint_name {
            kv("", format!("checkpoint {c}"));
        }
        if let Some(h) = r.error.as_ref().and_then(hint) {
            kv("", format!("hint: {h}"));
        }
    }
    kv("Failures:", format!("{} in a row", s.consecutive_failures));
    for (k, t) in [
        ("Last success:", s.last_success_at),
        ("Last failure:", s.last_failure_at),
    ] {
        if let Some(t) = t {
            kv(k, format!("{} ({})", when(&t), ago(&t)));
        }
    }
    kv("Keep:", retention_text(&s.retention));
    let o = &s.options;
    kv("Options:", options_text(&o.criu()));
    if let Some(d) = &o.checkpoint_dir {
        kv("Directory:", d.clone());
    }
    if !o.labels.is_empty() {
        let l: Vec<String> = o.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        kv("Labels:", l.join(", "));
    }
    if let Some(e) = &o.expires_in {
        kv("Expires in:", e.clone());
    }
    if let Some(r) = &o.push_to {
        kv(
            "Push to:",
            format!(
                "{r}{}",
                if o.keep_local {
                    ""
                } else {
                    " (local images dropped)"
                }
            ),
        );
    }
    kv("Created:", when(&s.created_at));
    kv("Updated:", when(&s.updated_at));
    out.join("\n")
}

pub fn retention_text(r: &Retention) -> String {
    let mut parts = Vec::new();
    for (n, label) in [
        (r.keep_last, "last"),
        (r.keep_hourly, "hourly"),
        (r.keep_daily, "daily"),
        (r.keep_weekly, "weekly"),
        (r.keep_monthly, "monthly"),
    ] {
        if let Some(n) = n.filter(|n| *n > 0) {
            parts.push(format!("{label}={n}"));
        }
    }
    if let Some(w) = &r.keep_within {
        parts.push(format!("within={w}"));
    }
    if parts.is_empty() {
        "all".into()
    } else {
        parts.join(",")
    }
}

/// One line for an event: time, type, and what it is about.
/// One event as a line; a job's names its checkpoint when `checkpoint` is known.
pub fn event_line(ev: &Event, checkpoint: Option<&str>) -> String {
    let about = if let Some(j) = &ev.job {
        let id = j.id.to_string();
        match checkpoint {
            Some(c) => format!("{} of {c} (job {})", j.kind.as_str(), &id[..8]),
            None => format!("job {id} ({})", j.kind.as_str()),
        }
    } else if let Some(c) = &ev.checkpoint {
        format!("checkpoint {}", c.name)
    } else if let Some(r) = &ev.refusal {
        format!(
            "{} {} (uid {}): {}: {}",
            r.method, r.path, r.uid, r.error.code, r.error.message
        )
    } else if let Some(s) = &ev.schedule {
        let mut t = format!("schedule {}", s.name);
        if let Some(e) = s.last_run.as_ref().and_then(|r| r.error.as_ref()) {
            t.push_str(&format!(": {}", e.message));
        }
        t
    } else {
        String::new()
    };
    format!("{}  {:<20} {about}", when(&ev.time), ev.kind)
}

/// The advice of an error in `ckpt`'s words: commands and flags, not routes and JSON fields.
pub fn advice(a: &Advice) -> Option<String> {
    a.text(ckptd_api::Caller::Cli)
}

/// An error's hint in `ckpt`'s words; the daemon's own words when it gave no advice this CLI
/// knows.
pub fn hint(err: &ckptd_api::ErrorInfo) -> Option<String> {
    err.advice()
        .as_ref()
        .and_then(advice)
        .or(err.hint().map(str::to_owned))
}

/// An error on stderr for a command run with `--json`: `{"error": {code, message, details}}`
/// as the API gives it (`details.hint` in `ckpt`'s words); `unreachable` and the message when
/// no daemon answered.
pub fn report_json(e: &ClientError) {
    let error = match e.api_error() {
        Some((_, err)) => {
            let mut err = err.clone();
            if let Some(h) = hint(&err) {
                err.details.insert("hint".into(), h.into());
            }
            serde_json::to_value(&err).unwrap_or_default()
        }
        None => serde_json::json!({
            "code": "unreachable",
            "message": e.to_string(),
            "details": {},
        }),
    };
    eprintln!("{}", serde_json::json!({ "error": error }));
    let _ = std::io::stderr().flush();
}

/// An error on stderr: the daemon's code and message, the hint in `ckpt`'s words (the daemon's
/// own words when it gave no advice this CLI knows), and CRIU's error lines.
/// Control characters are shown escaped: a message can quote what a caller or an archive
/// supplied (a hostile archive's tar header bytes, a CRIU log line), and a terminal would act
/// on an escape sequence in it.
pub fn report(e: &ClientError) {
    match e.api_error() {
        Some((_, err)) => {
            eprintln!("ckpt: {}: {}", err.code, inert(&err.message));
            if let Some(h) = hint(err) {
                eprintln!("hint: {}", inert(&h));
            }
            for l in err.log_tail() {
                eprintln!("  {}", inert(&l));
            }
        }
        None => eprintln!("ckpt: {}", inert(&e.to_string())),
    }
    let _ = std::io::stderr().flush();
}

/// `s` with its control characters escaped (`\u{1b}`, `\n`), tabs kept.
fn inert(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(|c| c.is_control() && c != '\t') {
        return s.into();
    }
    s.chars()
        .map(|c| {
            if c.is_control() && c != '\t' {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect::<String>()
        .into()
}

#[cfg(test)]
mod tests {
    use super::inert;

    #[test]
    fn control_characters_in_a_message_are_shown_escaped() {
        assert_eq!(inert("plain: a\tb é"), "plain: a\tb é");
        assert!(matches!(inert("plain"), std::borrow::Cow::Borrowed(_)));
        assert_eq!(
            inert("bad \u{1b}]0;owned\u{7} field \u{10}\nnext"),
            "bad \\u{1b}]0;owned\\u{7} field \\u{10}\\nnext"
        );
    }
}
