//! When schedules run: cron expressions parsed by the `croner` crate (5 fields, or 6 with
//! seconds first), plus `@hourly`, `@daily`, `@weekly`, `@monthly` and `@yearly` with a stable
//! per-schedule jitter, as Jenkins' `H`: the minute (and hour, weekday, day) is derived from a
//! hash of the schedule's name, so a hundred `@daily` schedules do not all freeze their targets
//! at midnight, and one schedule keeps its time across restarts and hosts.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

#[derive(Debug, Clone)]
pub struct Spec {
    /// The expression croner parses: the @-forms with their jitter filled in.
    pub effective: String,
    cron: Cron,
}

/// A number in `0..n` from the schedule's name and a salt (one per field).
fn hashed(name: &str, salt: &str, n: u64) -> u64 {
    let d = Sha256::digest(format!("{salt}:{name}").as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    u64::from_be_bytes(b) % n
}

/// The 5-field form of an @-expression for schedule `name`; None for anything else.
fn expand_macro(expr: &str, name: &str) -> Option<Result<String>> {
    if !expr.starts_with('@') {
        return None;
    }
    let m = hashed(name, "minute", 60);
    let h = hashed(name, "hour", 24);
    let dow = hashed(name, "weekday", 7);
    // 1-28: a day every month has.
    let dom = hashed(name, "day", 28) + 1;
    let mon = hashed(name, "month", 12) + 1;
    let e = match expr {
        "@hourly" => format!("{m} * * * *"),
        "@daily" | "@midnight" => format!("{m} {h} * * *"),
        "@weekly" => format!("{m} {h} * * {dow}"),
        "@monthly" => format!("{m} {h} {dom} * *"),
        "@yearly" | "@annually" => format!("{m} {h} {dom} {mon} *"),
        other if other.starts_with('@') => {
            return Some(Err(Error::invalid(format!(
                "unknown cron shorthand {other:?}; ckptd knows @hourly, @daily, @weekly, \
                 @monthly and @yearly"
            ))))
        }
        _ => return None,
    };
    Some(Ok(e))
}

/// Expressions parsed before, by their effective text. The clock reads every schedule on each
/// pass and every schedule event shows its next run, and croner's parse of `* * * * *` cost
/// 30-40 us here: with 1,000 schedules a minute it was 7% of the runtime workers' CPU
/// (BENCHMARKS.md, "Cost growth"). Only expressions that parsed are kept, at most
/// `PARSED_MAX` of them (then the cache starts again).
static PARSED: std::sync::LazyLock<std::sync::Mutex<HashMap<String, Cron>>> =
    std::sync::LazyLock::new(Default::default);
const PARSED_MAX: usize = 4096;

pub fn parse(expr: &str, name: &str) -> Result<Spec> {
    let effective = match expand_macro(expr, name) {
        Some(e) => e?,
        None => expr.to_owned(),
    };
    let cached = PARSED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&effective)
        .cloned();
    if let Some(cron) = cached {
        return Ok(Spec { effective, cron });
    }
    let spec = parse_effective(expr, effective)?;
    let mut kept = PARSED.lock().unwrap_or_else(|e| e.into_inner());
    if kept.len() >= PARSED_MAX {
        kept.clear();
    }
    kept.insert(spec.effective.clone(), spec.cron.clone());
    Ok(spec)
}

/// `parse` of the expression croner is given (`effective`), `expr` as the caller wrote it.
fn parse_effective(expr: &str, effective: String) -> Result<Spec> {
    // openapi.yaml's `Cron`: fields of these characters separated by single spaces.
    let lexical = effective.split(' ').all(|f| {
        !f.is_empty()
            && f.chars().all(|c| {
                c.is_ascii_alphanumeric() || matches!(c, '*' | ',' | '/' | '#' | '?' | '+' | '-')
            })
    });
    if !lexical {
        return Err(Error::invalid(format!(
            "invalid cron {expr:?}: fields are separated by single spaces and made of digits, \
             letters and * , / - # ? +"
        )));
    }
    let fields = effective.split(' ').count();
    if !(5..=6).contains(&fields) {
        return Err(Error::invalid(format!(
            "invalid cron {expr:?}: {fields} fields; give 5 (minute hour day month weekday), \
             6 (seconds first) or @hourly/@daily/@weekly/@monthly"
        )));
    }
    let cron = CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build()
        .parse(&effective)
        .map_err(|e| Error::invalid(format!("invalid cron {expr:?}: {e}")))?;
    let spec = Spec { effective, cron };
    // An expression that never matches (`0 0 31 2 *`) would make a schedule that never runs.
    if spec.next_after(&Utc::now()).is_none() {
        return Err(Error::invalid(format!(
            "cron {expr:?} never matches a date; check its day and month fields"
        )));
    }
    Ok(spec)
}

impl Spec {
    /// The first slot strictly after `t`.
    pub fn next_after(&self, t: &DateTime<Utc>) -> Option<DateTime<Utc>> {
        // From the whole second: the first slot after it is after `t` too (slots are whole
        // seconds), and croner would carry a fraction into the slot it finds.
        self.cron.find_next_occurrence(&whole_second(t), false).ok()
    }

    /// The newest slot at or before `t`.
    pub fn latest_until(&self, t: &DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_previous_occurrence(&whole_second(t), true)
            .ok()
    }
}

/// `t` without its fraction of a second.
fn whole_second(t: &DateTime<Utc>) -> DateTime<Utc> {
    use chrono::SubsecRound;
    t.trunc_subsecs(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn five_and_six_fields() {
        let five = parse("*/15 * * * *", "a").unwrap();
        assert_eq!(
            five.next_after(&at("2026-11-27T10:07:30Z")),
            Some(at("2026-11-27T10:15:00Z"))
        );
        let six = parse("*/5 * * * * *", "a").unwrap();
        assert_eq!(
            six.next_after(&at("2026-11-27T10:07:31Z")),
            Some(at("2026-11-27T10:07:35Z"))
        );
        assert_eq!(
            six.latest_until(&at("2026-11-27T10:07:35Z")),
            Some(at("2026-11-27T10:07:35Z"))
        );
        let weekdays = parse("30 2 * * 1-5", "a").unwrap();
        // 2026-11-28 is a Saturday: the next weekday 02:30 is Monday the 30th.
        assert_eq!(
            weekdays.next_after(&at("2026-11-27T03:00:00Z")),
            Some(at("2026-11-30T02:30:00Z"))
        );
    }

    /// A slot is a whole second: a time with a fraction (a schedule's anchor is the moment it
    /// was made or last run) must not carry it into the slots. croner keeps the fraction it is
    /// given, so every schedule had a slot of its own a few ms apart and the clock read all of
    /// them once per run (BENCHMARKS.md, "Cost growth").
    #[test]
    fn slots_are_whole_seconds() {
        let minutely = parse("* * * * *", "a").unwrap();
        assert_eq!(
            minutely.next_after(&at("2026-11-27T10:07:00.071571Z")),
            Some(at("2026-11-27T10:08:00Z"))
        );
        assert_eq!(
            minutely.next_after(&at("2026-11-27T10:07:59.999Z")),
            Some(at("2026-11-27T10:08:00Z"))
        );
        assert_eq!(
            minutely.latest_until(&at("2026-11-27T10:08:00.5Z")),
            Some(at("2026-11-27T10:08:00Z"))
        );
        let secondly = parse("* * * * * *", "a").unwrap();
        assert_eq!(
            secondly.next_after(&at("2026-11-27T10:07:00.5Z")),
            Some(at("2026-11-27T10:07:01Z"))
        );
        assert_eq!(
            secondly.latest_until(&at("2026-11-27T10:07:00.5Z")),
            Some(at("2026-11-27T10:07:00Z"))
        );
    }

    #[test]
    fn macros_have_stable_jitter() {
        let a = parse("@daily", "db-nightly").unwrap();
        let again = parse("@daily", "db-nightly").unwrap();
        assert_eq!(a.effective, again.effective);
        let fields: Vec<u32> = a
            .effective
            .split(' ')
            .take(2)
            .map(|f| f.parse().unwrap())
            .collect();
        assert!(fields[0] < 60 && fields[1] < 24, "{}", a.effective);
        // Different names spread over the hour.
        let minutes: std::collections::HashSet<String> = (0..50)
            .map(|i| parse("@hourly", &format!("s{i}")).unwrap().effective)
            .collect();
        assert!(minutes.len() > 20, "{minutes:?}");
        let m = parse("@monthly", "x").unwrap();
        let dom: u32 = m.effective.split(' ').nth(2).unwrap().parse().unwrap();
        assert!((1..=28).contains(&dom));
        let next = m.next_after(&Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap());
        assert!(next.is_some());
    }

    #[test]
    fn refusals() {
        for bad in [
            "",
            "* * * *",
            "* * * * * * *",
            "61 * * * *",
            "@reboot",
            "@every 5m",
            "x y z a b",
            "@DAILY",
            " * * * * *",
            "*  * * * *",
            "*\t* * * *",
        ] {
            let e = parse(bad, "a").unwrap_err();
            assert!(e.message.contains("cron"), "{bad}: {}", e.message);
        }
        assert!(parse("0 0 31 2 *", "a")
            .unwrap_err()
            .message
            .contains("never"));
    }

    /// A parse comes from the cache the second time, and is the same; a refused expression is
    /// refused again (only what parsed is kept).
    #[test]
    fn parsed_expressions_are_kept_and_refusals_are_not() {
        let t = at("2026-11-27T10:07:30Z");
        let first = parse("*/7 3 * * *", "kept").unwrap();
        assert!(PARSED.lock().unwrap().contains_key("*/7 3 * * *"));
        let again = parse("*/7 3 * * *", "other").unwrap();
        assert_eq!(again.effective, first.effective);
        assert_eq!(again.next_after(&t), first.next_after(&t));
        assert_eq!(again.next_after(&t), Some(at("2026-11-28T03:00:00Z")));
        for _ in 0..2 {
            assert!(parse("0 0 30 2 *", "a").is_err());
        }
        assert!(!PARSED.lock().unwrap().contains_key("0 0 30 2 *"));
        // Each @-form's jitter is its schedule's: two names, two entries.
        let (a, b) = (
            parse("@hourly", "n1").unwrap(),
            parse("@hourly", "n2").unwrap(),
        );
        assert_eq!(parse("@hourly", "n1").unwrap().effective, a.effective);
        assert_eq!(parse("@hourly", "n2").unwrap().effective, b.effective);
    }
}
