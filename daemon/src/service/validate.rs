//! Checks on what a client sends, made before anything is created.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use ckptd_api::Target;

use crate::error::{Error, Result};

pub const MAX_LABELS: usize = 64;

/// Names that are routes under /v1/checkpoints/ and so cannot name a checkpoint.
pub const RESERVED_NAMES: [&str; 2] = ["import", "adopt"];

/// Names: `[A-Za-z0-9][A-Za-z0-9_.-]{0,127}`, and not a UUID (ids are UUIDs; `{ref}` takes both).
pub fn name(name: &str) -> Result<()> {
    let ok = name.len() <= 128
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !ok {
        return Err(Error::invalid(format!(
            "invalid checkpoint name {name:?}: a name is 1-128 characters of letters, digits, \
             '_', '.' and '-', starting with a letter or digit"
        )));
    }
    if RESERVED_NAMES.contains(&name) {
        return Err(Error::invalid(format!(
            "invalid checkpoint name {name:?}: it is a route (/v1/checkpoints/{name}); choose another"
        )));
    }
    if uuid::Uuid::parse_str(name).is_ok() {
        return Err(Error::invalid(format!(
            "invalid checkpoint name {name:?}: a name may not be a UUID, which would be mistaken \
             for a checkpoint id"
        )));
    }
    Ok(())
}

/// A valid name made from any text (a command, a container id, a directory name): other
/// characters become `-`, at most 100 characters (room for a suffix), `prefix` put in front when it
/// would not start with a letter or digit.
pub fn name_from(text: &str, prefix: &str) -> String {
    let base: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '-'
            }
        })
        .take(100)
        .collect();
    if base.starts_with(|c: char| c.is_ascii_alphanumeric()) && name(&base).is_ok() {
        base
    } else {
        format!("{prefix}{base}")
    }
}

pub fn labels(labels: &BTreeMap<String, String>) -> Result<()> {
    if labels.len() > MAX_LABELS {
        return Err(Error::invalid(format!(
            "too many labels ({}); at most {MAX_LABELS}",
            labels.len()
        )));
    }
    for (k, v) in labels {
        let key_ok = (1..=63).contains(&k.len())
            && k.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '/'));
        if !key_ok {
            return Err(Error::invalid(format!(
                "invalid label key {k:?}: 1-63 characters of letters, digits, '_', '.', '-', '/', \
                 starting with a letter or digit"
            )));
        }
        if v.len() > 256 || v.chars().any(char::is_control) {
            return Err(Error::invalid(format!(
                "invalid value for label {k:?}: at most 256 characters, no control characters"
            )));
        }
    }
    Ok(())
}

/// `checkpoint_dir` (Docker's `--checkpoint-dir`) as written: an absolute path without `..`,
/// normalized (`.` and repeated slashes dropped). Nothing on disk is looked at here: the caller is
/// authorized on this path first, then `resolve_dir` checks what is there.
pub fn checkpoint_dir(dir: &str) -> Result<PathBuf> {
    let path = Path::new(dir);
    if !path.is_absolute() || dir.contains('\0') {
        return Err(Error::invalid(format!(
            "checkpoint_dir {dir:?} is not an absolute path"
        )));
    }
    if path.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(Error::invalid(format!(
            "checkpoint_dir {dir:?} contains a '..' component; give the directory's real path"
        )));
    }
    Ok(path.components().collect())
}

/// The existing directory a normalized `checkpoint_dir` names, reached without any symlink: the
/// path the catalog stores and every later step opens without following one.
pub fn resolve_dir(path: &Path) -> Result<PathBuf> {
    let dir = path.display();
    // What the directory is like on disk is world state, as a pid's process is: 422.
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(
                Error::target_unavailable(format!("checkpoint_dir {dir} does not exist"))
                    .with_hint(format!("create it first: mkdir -m 0700 {dir}")),
            )
        }
        Err(e) => {
            return Err(Error::target_unavailable(format!(
                "checkpoint_dir {dir} cannot be read: {e}"
            )))
        }
        Ok(md) if md.file_type().is_symlink() => {
            return Err(Error::target_unavailable(format!(
                "checkpoint_dir {dir} is a symlink; give the directory it points to"
            )))
        }
        Ok(md) if !md.is_dir() => {
            return Err(Error::target_unavailable(format!(
                "checkpoint_dir {dir} is not a directory"
            )))
        }
        Ok(_) => {}
    }
    let real = path.canonicalize().map_err(|e| {
        Error::target_unavailable(format!("checkpoint_dir {dir} cannot be resolved: {e}"))
    })?;
    if real != path {
        return Err(Error::target_unavailable(format!(
            "checkpoint_dir {dir} is reached through a symlink (it is {}); ckptd follows no \
             symlink in a checkpoint's path",
            real.display()
        ))
        .with_hint(format!("give the real path: {}", real.display())));
    }
    Ok(real)
}

/// A duration as ckptd's API writes them: a number (at most 6 digits) and a unit, or a sum of
/// up to four such (`90s`, `30m`, `12h`, `7d`, `2w`, `1d12h`); openapi.yaml's `Duration`.
/// `field` names it in the error.
pub fn duration(field: &str, text: &str) -> Result<chrono::TimeDelta> {
    let bad = |why: &str| {
        Error::invalid(format!(
            "invalid {field} {text:?}: {why}; write a number and a unit s, m (minutes), h, d or \
             w, or a sum of up to four such as 1d12h"
        ))
    };
    let mut total: i64 = 0;
    let mut parts = 0;
    let mut digits = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            if digits.len() > 6 {
                return Err(bad("a number has at most 6 digits"));
            }
            continue;
        }
        let unit: i64 = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 7 * 86_400,
            _ => return Err(bad(&format!("unknown unit {c:?}"))),
        };
        if digits.is_empty() {
            return Err(bad("a unit needs a number before it"));
        }
        // At most 999999 weeks each: no overflow.
        total += digits.parse::<i64>().unwrap_or(0) * unit;
        digits.clear();
        parts += 1;
        if parts > 4 {
            return Err(bad("at most four parts"));
        }
    }
    if !digits.is_empty() || parts == 0 {
        return Err(bad("a number needs a unit after it"));
    }
    Ok(chrono::TimeDelta::seconds(total))
}

/// `t + d`, or the last moment of year 9999 (timestamps stay four-digit years, which sort as
/// text in the catalog).
pub fn add_capped(
    t: chrono::DateTime<chrono::Utc>,
    d: chrono::TimeDelta,
) -> chrono::DateTime<chrono::Utc> {
    let max = chrono::DateTime::<chrono::Utc>::from_timestamp(253_402_300_799, 0).unwrap_or(t);
    t.checked_add_signed(d).map_or(max, |v| v.min(max))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        for (t, secs) in [
            ("90s", 90),
            ("30m", 1800),
            ("7d", 604_800),
            ("1d12h", 129_600),
            ("2w", 1_209_600),
            ("0s", 0),
            ("1s1s1s1s", 4),
        ] {
            assert_eq!(duration("x", t).unwrap().num_seconds(), secs, "{t}");
        }
        let far = duration("x", "999999w999999w999999w999999w").unwrap();
        let now = chrono::Utc::now();
        assert_eq!(
            add_capped(now, far).to_rfc3339(),
            "9999-12-31T23:59:59+00:00"
        );
        for bad in [
            "",
            "7",
            "d",
            "7y",
            "1.5h",
            "-1d",
            "1234567w",
            "1 d",
            "1s1s1s1s1s",
            " 1d",
        ] {
            let e = duration("expires_in", bad).unwrap_err();
            assert!(e.message.contains("expires_in"), "{bad}: {}", e.message);
        }
    }

    #[test]
    fn names() {
        for ok in ["a", "looper-20261127T101500Z", "A.b_c-1", &"x".repeat(128)] {
            name(ok).unwrap();
        }
        for bad in ["", "-a", ".a", "a b", "a/b", "ä", &"x".repeat(129), "../x"] {
            assert!(name(bad).is_err(), "{bad:?} accepted");
        }
        let e = name("6f1c1b0e-8a44-4d3f-a5a5-0a0b0c0d0e0f").unwrap_err();
        assert!(e.message.contains("UUID"));
    }

    #[test]
    fn checkpoint_dirs() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().to_str().unwrap();
        assert_eq!(checkpoint_dir(p).unwrap(), d.path());
        assert_eq!(checkpoint_dir(&format!("{p}/./")).unwrap(), d.path());
        assert_eq!(resolve_dir(d.path()).unwrap(), d.path());
        assert!(checkpoint_dir("relative/x")
            .unwrap_err()
            .message
            .contains("absolute"));
        assert!(checkpoint_dir(&format!("{p}/../x"))
            .unwrap_err()
            .message
            .contains(".."));
        assert!(resolve_dir(&d.path().join("nope"))
            .unwrap_err()
            .message
            .contains("does not exist"));
        let link = d.path().join("link");
        std::os::unix::fs::symlink(d.path(), &link).unwrap();
        assert!(resolve_dir(&link).unwrap_err().message.contains("symlink"));
        // The attack of a trailing "/.": the link is still followed, and refused.
        let through = checkpoint_dir(&format!("{}/.", link.display())).unwrap();
        assert!(resolve_dir(&through)
            .unwrap_err()
            .message
            .contains("is a symlink"));
        std::fs::create_dir(d.path().join("sub")).unwrap();
        assert!(resolve_dir(&link.join("sub"))
            .unwrap_err()
            .message
            .contains("reached through a symlink"));
    }

    #[test]
    fn label_rules() {
        labels(&BTreeMap::from([
            ("app".into(), "web".into()),
            ("k8s.io/x".into(), "".into()),
        ]))
        .unwrap();
        assert!(labels(&BTreeMap::from([("".into(), "v".into())])).is_err());
        assert!(labels(&BTreeMap::from([("a".into(), "x\ny".into())])).is_err());
    }
}

/// The schedule a checkpoint name belongs to when it has the form its runs use
/// (`SCHEDULE-YYYYMMDDTHHMMSSZ`, maybe with `-N`), else None.
pub fn scheduled_name(name: &str) -> Option<&str> {
    fn is_stamp(s: &str) -> bool {
        let b = s.as_bytes();
        b.len() == 16
            && b[..8].iter().all(u8::is_ascii_digit)
            && b[8] == b'T'
            && b[9..15].iter().all(u8::is_ascii_digit)
            && b[15] == b'Z'
    }
    fn split(n: &str) -> Option<(&str, &str)> {
        n.rsplit_once('-')
            .filter(|(s, t)| !s.is_empty() && is_stamp(t))
    }
    if let Some((schedule, _)) = split(name) {
        return Some(schedule);
    }
    let (rest, n) = name.rsplit_once('-')?;
    if n.is_empty() || !n.bytes().all(|c| c.is_ascii_alphanumeric()) {
        return None;
    }
    split(rest).map(|(schedule, _)| schedule)
}

#[cfg(test)]
mod scheduled_name_tests {
    use super::scheduled_name;

    #[test]
    fn the_form_of_scheduled_runs_is_recognised() {
        assert_eq!(scheduled_name("db-20261205T093000Z"), Some("db"));
        assert_eq!(scheduled_name("db-20261205T093000Z-2"), Some("db"));
        assert_eq!(
            scheduled_name("my-app-20261205T093000Z-1a2b3c4d"),
            Some("my-app")
        );
        assert_eq!(scheduled_name("db-2026"), None);
        assert_eq!(scheduled_name("20261205T093000Z"), None);
        assert_eq!(scheduled_name("looper1"), None);
    }
}

/// Hooks a checkpoint (or a restore: `restore`) of `target` can run: valid commands, and a
/// target whose namespaces ckptd can enter (a process, a runc container).
pub fn hooks(h: &ckptd_api::Hooks, target: &Target, restore: bool) -> Result<()> {
    crate::runtime::hooks::validate(h, restore)?;
    match target {
        Target::Process { .. }
        | Target::Container {
            runtime: ckptd_api::Runtime::Runc,
            ..
        } => Ok(()),
        Target::Container { runtime, .. } if !h.is_empty() => {
            Err(Error::target_unavailable(format!(
                "hooks are offered for processes and runc containers, whose namespaces ckptd \
                 enters; not for {runtime} containers"
            )))
        }
        Target::Container { .. } => Ok(()),
        Target::Group { .. } if !h.is_empty() => Err(Error::target_unavailable(
            "hooks run in one target's namespaces; a group checkpoint takes none (give each \
             member's application its own way to flush, or checkpoint the members one by one)",
        )),
        Target::Group { .. } => Ok(()),
    }
}
