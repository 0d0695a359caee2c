//! Which of a schedule's checkpoints stay: restic's `forget` policy, applied to ready
//! checkpoints.
//!
//! Newest first, each rule keeps a checkpoint when it opens a bucket the rule has not seen yet
//! and the rule still has count left: `keep_last` (every checkpoint is its own bucket),
//! `keep_hourly` / `keep_daily` / `keep_weekly` (ISO weeks) / `keep_monthly` (UTC calendar
//! buckets). As in restic (>= 0.15), a rule with count left also keeps the oldest checkpoint, to
//! make the kept history as long as the counts allow. `keep_within` keeps everything strictly
//! newer than the newest ready checkpoint minus the duration. The rules are ORed; the newest
//! ready checkpoint always stays; no rule at all keeps everything.
//!
//! Besides ready checkpoints: pending and running ones stay (their job has not ended); a failed
//! one stays only while it is the schedule's latest run (its log explains the failure) and goes
//! once a newer checkpoint supersedes it; a missing one (images gone from disk) goes.

use chrono::{DateTime, TimeDelta, Utc};
use ckptd_api::{CheckpointStatus, Retention, RetentionItem};

use crate::error::Result;
use crate::service::validate;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rules {
    pub last: u32,
    pub hourly: u32,
    pub daily: u32,
    pub weekly: u32,
    pub monthly: u32,
    pub within: Option<(TimeDelta, String)>,
}

impl Rules {
    pub fn from_api(r: &Retention) -> Result<Rules> {
        Ok(Rules {
            last: r.keep_last.unwrap_or(0),
            hourly: r.keep_hourly.unwrap_or(0),
            daily: r.keep_daily.unwrap_or(0),
            weekly: r.keep_weekly.unwrap_or(0),
            monthly: r.keep_monthly.unwrap_or(0),
            within: r
                .keep_within
                .as_deref()
                .map(|w| {
                    Ok::<_, crate::error::Error>((
                        validate::duration("keep_within", w)?,
                        w.to_owned(),
                    ))
                })
                .transpose()?,
        })
    }

    fn is_empty(&self) -> bool {
        self.last + self.hourly + self.daily + self.weekly + self.monthly == 0
            && self.within.is_none()
    }
}

/// One calendar rule while the plan is made.
struct Bucket {
    count: u32,
    last: Option<String>,
    label: &'static str,
    /// chrono format of the bucket (None: each checkpoint is its own, as keep_last).
    format: Option<&'static str>,
}

/// Splits `items` (any order) into what stays and what goes, each newest first, every item with
/// its reasons.
pub fn plan(
    mut items: Vec<RetentionItem>,
    rules: &Rules,
) -> (Vec<RetentionItem>, Vec<RetentionItem>) {
    // Newest first; equal times are ordered by name so that a plan is deterministic.
    items.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.name.cmp(&a.name)));
    let mut keep = Vec::new();
    let mut prune = Vec::new();
    if rules.is_empty() {
        for mut it in items {
            it.reasons = vec!["no retention rules: everything is kept".into()];
            keep.push(it);
        }
        return (keep, prune);
    }
    let newest_ready: Option<DateTime<Utc>> = items
        .iter()
        .find(|i| i.status == CheckpointStatus::Ready)
        .map(|i| i.created_at);
    let ready_count = items
        .iter()
        .filter(|i| i.status == CheckpointStatus::Ready)
        .count();
    let mut buckets = [
        Bucket {
            count: rules.last,
            last: None,
            label: "last",
            format: None,
        },
        Bucket {
            count: rules.hourly,
            last: None,
            label: "hourly",
            format: Some("%Y-%m-%d %H:00"),
        },
        Bucket {
            count: rules.daily,
            last: None,
            label: "daily",
            format: Some("%Y-%m-%d"),
        },
        Bucket {
            count: rules.weekly,
            last: None,
            label: "weekly",
            format: Some("%G-W%V"),
        },
        Bucket {
            count: rules.monthly,
            last: None,
            label: "monthly",
            format: Some("%Y-%m"),
        },
    ];
    let mut ready_seen = 0;
    let mut newer_exists = false;
    for mut it in items {
        let mut reasons = Vec::new();
        let stays = match it.status {
            CheckpointStatus::Pending | CheckpointStatus::Running => {
                reasons.push("its job has not ended".to_owned());
                true
            }
            CheckpointStatus::Missing => {
                reasons.push("its images are gone from disk".to_owned());
                false
            }
            CheckpointStatus::Failed if !newer_exists => {
                reasons.push("the latest run failed: kept for its log".to_owned());
                true
            }
            CheckpointStatus::Failed => {
                reasons.push("failed, and a newer checkpoint supersedes it".to_owned());
                false
            }
            CheckpointStatus::Ready => {
                ready_seen += 1;
                if Some(it.created_at) == newest_ready && ready_seen == 1 {
                    reasons.push("newest ready checkpoint".to_owned());
                }
                let oldest = ready_seen == ready_count;
                for b in buckets.iter_mut().filter(|b| b.count > 0) {
                    let value = match b.format {
                        Some(f) => it.created_at.format(f).to_string(),
                        None => ready_seen.to_string(),
                    };
                    if b.last.as_deref() != Some(value.as_str()) || oldest {
                        reasons.push(match b.format {
                            Some(_) => format!("{} checkpoint ({value})", b.label),
                            None => "last checkpoint".to_owned(),
                        });
                        b.last = Some(value);
                        b.count -= 1;
                    }
                }
                if let (Some((within, text)), Some(newest)) = (&rules.within, newest_ready) {
                    if newest
                        .checked_sub_signed(*within)
                        .is_none_or(|from| it.created_at > from)
                    {
                        reasons.push(format!("within {text} of the newest"));
                    }
                }
                if reasons.is_empty() {
                    reasons.push("no rule keeps it".to_owned());
                    false
                } else {
                    true
                }
            }
        };
        if it.status != CheckpointStatus::Pending && it.status != CheckpointStatus::Running {
            newer_exists = true;
        }
        it.reasons = reasons;
        if stays {
            keep.push(it);
        } else {
            prune.push(it);
        }
    }
    (keep, prune)
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn item(t: &str, status: CheckpointStatus) -> RetentionItem {
        RetentionItem {
            checkpoint_id: Uuid::new_v4(),
            name: format!("s-{t}"),
            created_at: at(t),
            status,
            reasons: vec![],
        }
    }

    fn ready(times: &[&str]) -> Vec<RetentionItem> {
        times
            .iter()
            .map(|t| item(t, CheckpointStatus::Ready))
            .collect()
    }

    fn kept(items: Vec<RetentionItem>, rules: Rules) -> Vec<String> {
        let (keep, _) = plan(items, &rules);
        keep.into_iter()
            .map(|i| i.created_at.format("%Y-%m-%dT%H:%M").to_string())
            .collect()
    }

    #[test]
    fn keep_last() {
        let items = ready(&[
            "2026-11-27T10:00:00Z",
            "2026-11-27T10:00:05Z",
            "2026-11-27T10:00:10Z",
            "2026-11-27T10:00:15Z",
        ]);
        let (keep, prune) = plan(
            items,
            &Rules {
                last: 2,
                ..Default::default()
            },
        );
        assert_eq!(keep.len(), 2);
        assert_eq!(keep[0].created_at, at("2026-11-27T10:00:15Z"));
        assert_eq!(
            keep[0].reasons,
            ["newest ready checkpoint", "last checkpoint"]
        );
        assert_eq!(keep[1].created_at, at("2026-11-27T10:00:10Z"));
        assert_eq!(prune.len(), 2);
        assert_eq!(prune[0].reasons, ["no rule keeps it"]);
    }

    #[test]
    fn hourly_buckets_keep_the_newest_of_each_hour() {
        let items = ready(&[
            "2026-11-27T08:10:00Z",
            "2026-11-27T08:50:00Z",
            "2026-11-27T09:05:00Z",
            "2026-11-27T09:55:00Z",
            "2026-11-27T10:20:00Z",
            "2026-11-27T10:40:00Z",
        ]);
        assert_eq!(
            kept(
                items,
                Rules {
                    hourly: 2,
                    ..Default::default()
                }
            ),
            ["2026-11-27T10:40", "2026-11-27T09:55"]
        );
    }

    #[test]
    fn a_rule_with_count_left_keeps_the_oldest() {
        // Three buckets asked for, two exist: restic also keeps the oldest checkpoint.
        let items = ready(&[
            "2026-11-27T09:05:00Z",
            "2026-11-27T09:55:00Z",
            "2026-11-27T10:40:00Z",
        ]);
        let (keep, _) = plan(
            items,
            &Rules {
                hourly: 3,
                ..Default::default()
            },
        );
        let times: Vec<_> = keep.iter().map(|i| i.created_at).collect();
        assert_eq!(
            times,
            [
                at("2026-11-27T10:40:00Z"),
                at("2026-11-27T09:55:00Z"),
                at("2026-11-27T09:05:00Z")
            ]
        );
        assert_eq!(keep[1].reasons, ["hourly checkpoint (2026-11-27 09:00)"]);
    }

    #[test]
    fn daily_weekly_monthly() {
        // Two per day over five weeks spanning a month boundary.
        let mut times = Vec::new();
        let start = at("2026-10-20T06:00:00Z");
        for d in 0..35 {
            for h in [6, 18] {
                times.push(start + TimeDelta::days(d) + TimeDelta::hours(h - 6));
            }
        }
        let items: Vec<_> = times
            .iter()
            .map(|t| RetentionItem {
                checkpoint_id: Uuid::new_v4(),
                name: t.to_rfc3339(),
                created_at: *t,
                status: CheckpointStatus::Ready,
                reasons: vec![],
            })
            .collect();
        // Newest: 2026-11-23T18:00.
        assert_eq!(
            kept(
                items.clone(),
                Rules {
                    daily: 3,
                    ..Default::default()
                }
            ),
            ["2026-11-23T18:00", "2026-11-22T18:00", "2026-11-21T18:00"]
        );
        // ISO weeks: 2026-11-23 is a Monday (W48); W47 ends Sunday the 22nd.
        assert_eq!(
            kept(
                items.clone(),
                Rules {
                    weekly: 3,
                    ..Default::default()
                }
            ),
            ["2026-11-23T18:00", "2026-11-22T18:00", "2026-11-15T18:00"]
        );
        assert_eq!(
            kept(
                items.clone(),
                Rules {
                    monthly: 2,
                    ..Default::default()
                }
            ),
            ["2026-11-23T18:00", "2026-10-31T18:00"]
        );
        // ORed: daily 2 + monthly 2 overlap on the newest.
        assert_eq!(
            kept(
                items,
                Rules {
                    daily: 2,
                    monthly: 2,
                    ..Default::default()
                }
            ),
            ["2026-11-23T18:00", "2026-11-22T18:00", "2026-10-31T18:00"]
        );
    }

    #[test]
    fn keep_within_counts_from_the_newest_checkpoint_not_now() {
        let items = ready(&[
            "2026-01-01T00:00:00Z",
            "2026-01-02T00:00:00Z",
            "2026-01-02T12:00:00Z",
            "2026-01-03T00:00:00Z",
        ]);
        let rules = Rules::from_api(&Retention {
            keep_within: Some("1d".into()),
            ..Default::default()
        })
        .unwrap();
        // Strictly within: the one exactly 1 d older goes, as in restic.
        assert_eq!(kept(items, rules), ["2026-01-03T00:00", "2026-01-02T12:00"]);
    }

    #[test]
    fn ties_are_ordered_by_name() {
        let mut a = item("2026-11-27T10:00:00Z", CheckpointStatus::Ready);
        let mut b = a.clone();
        a.name = "s-a".into();
        b.name = "s-b".into();
        b.checkpoint_id = Uuid::new_v4();
        let (keep, prune) = plan(
            vec![a, b],
            &Rules {
                last: 1,
                ..Default::default()
            },
        );
        assert_eq!(keep[0].name, "s-b");
        assert_eq!(prune[0].name, "s-a");
        // Same answer whatever the input order.
        let (keep2, _) = plan(
            vec![prune[0].clone(), keep[0].clone()],
            &Rules {
                last: 1,
                ..Default::default()
            },
        );
        assert_eq!(keep2[0].name, "s-b");
    }

    #[test]
    fn newest_ready_stays_and_failures_are_superseded() {
        let items = vec![
            item("2026-11-27T10:00:00Z", CheckpointStatus::Failed),
            item("2026-11-27T10:01:00Z", CheckpointStatus::Ready),
            item("2026-11-27T10:02:00Z", CheckpointStatus::Missing),
            item("2026-11-27T10:03:00Z", CheckpointStatus::Failed),
            item("2026-11-27T10:04:00Z", CheckpointStatus::Running),
        ];
        // keep_within far in the past of the newest: only the newest-ready rule holds it.
        let (keep, prune) = plan(
            items,
            &Rules {
                hourly: 1,
                ..Default::default()
            },
        );
        let k: Vec<_> = keep
            .iter()
            .map(|i| (i.status, i.reasons[0].as_str()))
            .collect();
        assert_eq!(
            k,
            [
                (CheckpointStatus::Running, "its job has not ended"),
                (
                    CheckpointStatus::Failed,
                    "the latest run failed: kept for its log"
                ),
                (CheckpointStatus::Ready, "newest ready checkpoint"),
            ]
        );
        let p: Vec<_> = prune.iter().map(|i| i.status).collect();
        assert_eq!(p, [CheckpointStatus::Missing, CheckpointStatus::Failed]);
    }

    #[test]
    fn no_rules_keep_everything() {
        let items = ready(&["2026-11-27T10:00:00Z", "2026-11-27T10:01:00Z"]);
        let (keep, prune) = plan(items, &Rules::default());
        assert_eq!(keep.len(), 2);
        assert!(prune.is_empty());
    }
}
