//! What a restore recovers to, checked against what the repository holds before anything stops.

use super::list::{Backup, Listing};
use anyhow::{bail, Context, Result};
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::OffsetDateTime;

#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// Everything the archive holds.
    Latest,
    Time(OffsetDateTime),
    Lsn(String),
    /// A restore point (`pg_create_restore_point`).
    Name(String),
    /// The end of the base backup: the earliest consistent state (verification).
    EndOfBackup,
}

impl Target {
    pub fn from_flags(time: Option<&str>, lsn: Option<&str>, name: Option<&str>) -> Result<Target> {
        match (time, lsn, name) {
            (None, None, None) => Ok(Target::Latest),
            (Some(t), None, None) => Ok(Target::Time(parse_time(t)?)),
            (None, Some(l), None) => Ok(Target::Lsn(parse_lsn(l)?)),
            (None, None, Some(n)) if !n.is_empty() && !n.contains('\'') => Ok(Target::Name(n.to_string())),
            (None, None, Some(n)) => bail!("--target-name `{n}`: a restore point name must be non-empty and without quotes"),
            _ => bail!("give at most one of --target-time, --target-lsn, --target-name"),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Target::Latest => "the latest WAL in the archive".into(),
            Target::Time(t) => format!("time {}", pg_time(*t)),
            Target::Lsn(l) => format!("LSN {l}"),
            Target::Name(n) => format!("restore point `{n}`"),
            Target::EndOfBackup => "the end of the backup".into(),
        }
    }

    /// postgresql.auto.conf lines for engines whose fetch writes no recovery settings (WAL-G).
    pub fn recovery_conf(&self, restore_command: &str, timeline: &str) -> String {
        let mut lines = vec![format!("restore_command = '{}'", restore_command.replace('\'', "''"))];
        let target = match self {
            Target::Latest => None,
            Target::Time(t) => Some(format!("recovery_target_time = '{}'", pg_time(*t))),
            Target::Lsn(l) => Some(format!("recovery_target_lsn = '{l}'")),
            Target::Name(n) => Some(format!("recovery_target_name = '{n}'")),
            Target::EndOfBackup => Some("recovery_target = 'immediate'".into()),
        };
        if let Some(t) = target {
            lines.push(t);
            lines.push("recovery_target_action = 'promote'".into());
        }
        if *self != Target::EndOfBackup {
            lines.push(format!("recovery_target_timeline = '{timeline}'"));
        }
        lines.join("\n")
    }
}

/// A time with its zone: `2026-05-17 10:00:00+03`, `...+03:00`, `...Z`, `... UTC`, RFC 3339.
/// A time without a zone is refused: the server's zone and the operator's may differ.
pub fn parse_time(text: &str) -> Result<OffsetDateTime> {
    let t = text.trim();
    if let Ok(v) = OffsetDateTime::parse(t, &Rfc3339) {
        return Ok(v);
    }
    let mut s = t.to_string();
    if s.get(10..11) == Some("T") {
        s.replace_range(10..11, " ");
    }
    for utc in [" UTC", "Z", "z", " utc"] {
        if let Some(stripped) = s.strip_suffix(utc) {
            s = format!("{stripped}+00:00");
        }
    }
    // +03 and +0300 become +03:00.
    if let Some(pos) = s.rfind(['+', '-']).filter(|p| *p > 10) {
        let (head, zone) = s.split_at(pos);
        let digits = &zone[1..];
        let zone = match digits.len() {
            2 => format!("{}{digits}:00", &zone[..1]),
            4 if !digits.contains(':') => format!("{}{}:{}", &zone[..1], &digits[..2], &digits[2..]),
            _ => zone.to_string(),
        };
        s = format!("{head}{zone}");
    } else {
        bail!("--target-time `{text}` has no time zone: write it with one, e.g. `2026-05-17 10:00:00+03` or `2026-05-17 07:00:00 UTC`");
    }
    let with_fraction =
        format_description!("[year]-[month]-[day] [hour]:[minute]:[second].[subsecond][offset_hour sign:mandatory]:[offset_minute]");
    let plain = format_description!("[year]-[month]-[day] [hour]:[minute]:[second][offset_hour sign:mandatory]:[offset_minute]");
    OffsetDateTime::parse(&s, &with_fraction)
        .or_else(|_| OffsetDateTime::parse(&s, &plain))
        .with_context(|| format!("--target-time `{text}`: expected e.g. `2026-05-17 10:00:00+03`"))
}

fn parse_lsn(text: &str) -> Result<String> {
    let ok = text.split_once('/').is_some_and(|(a, b)| {
        !a.is_empty() && !b.is_empty() && a.len() <= 8 && b.len() <= 8 && (a.to_string() + b).chars().all(|c| c.is_ascii_hexdigit())
    });
    if !ok {
        bail!("--target-lsn `{text}`: expected an LSN such as `0/3000060`");
    }
    Ok(text.to_uppercase())
}

/// PostgreSQL's timestamptz input in UTC, microseconds kept.
pub fn pg_time(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    let f = format_description!("[year]-[month]-[day] [hour]:[minute]:[second].[subsecond digits:6]+00");
    t.format(&f).expect("formatting a UTC time")
}

pub fn unix_time(secs: i64) -> String {
    OffsetDateTime::from_unix_timestamp(secs)
        .map(|t| {
            let f = format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC");
            t.format(&f).unwrap_or_default()
        })
        .unwrap_or_else(|_| secs.to_string())
}

/// The restorable window as the repository states it, for messages.
pub fn window(listing: &Listing) -> String {
    let earliest = listing.earliest_restorable.map(unix_time).unwrap_or("none (no backup)".into());
    let latest = listing.latest_restorable.map(unix_time).unwrap_or("unknown".into());
    format!("restorable window: from {earliest} (end of the oldest backup) to about {latest} (newest archived WAL)")
}

/// Picks the base backup for `target` (`pinned`, or the newest one that ends before the target)
/// and refuses a target outside the restorable window. Nothing has been changed when this fails.
pub fn choose_backup<'a>(listing: &'a Listing, target: &Target, pinned: Option<&str>) -> Result<&'a Backup> {
    if listing.backups.is_empty() {
        bail!("the repository holds no backup: nothing to restore from ({})", window(listing));
    }
    if let Some(name) = pinned {
        let b = listing.backups.iter().find(|b| b.name == name).with_context(|| {
            format!(
                "--backup {name}: no such backup; the repository holds: {}",
                listing.backups.iter().map(|b| b.name.as_str()).collect::<Vec<_>>().join(", ")
            )
        })?;
        if let Target::Time(t) = target {
            if t.unix_timestamp() < b.stop {
                bail!(
                    "--backup {name} ended at {}, after the target {}: a backup can only be rolled forward",
                    unix_time(b.stop),
                    target.describe()
                );
            }
        }
        return Ok(b);
    }
    let newest = listing.backups.iter().max_by_key(|b| b.stop).expect("not empty");
    match target {
        Target::Time(t) => {
            let at = t.unix_timestamp();
            if let Some(latest) = listing.latest_restorable.filter(|l| at > *l) {
                bail!(
                    "target {} is after the newest archived WAL ({}): the archive cannot reach it. {}",
                    target.describe(),
                    unix_time(latest),
                    window(listing)
                );
            }
            listing
                .backups
                .iter()
                .filter(|b| b.stop <= at)
                .max_by_key(|b| b.stop)
                .with_context(|| {
                    format!(
                        "target {} is before the end of the oldest backup. {}",
                        target.describe(),
                        window(listing)
                    )
                })
        }
        _ => Ok(newest),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_need_a_zone() {
        let want = OffsetDateTime::from_unix_timestamp(1_779_001_200).unwrap(); // 2026-05-17 07:00:00 UTC
        for ok in [
            "2026-05-17 10:00:00+03",
            "2026-05-17 10:00:00+03:00",
            "2026-05-17 10:00:00+0300",
            "2026-05-17T07:00:00Z",
            "2026-05-17 07:00:00 UTC",
            "2026-05-17 02:00:00-05",
        ] {
            assert_eq!(parse_time(ok).unwrap(), want, "{ok}");
        }
        assert_eq!(
            pg_time(parse_time("2026-05-17 10:00:00.25+03").unwrap()),
            "2026-05-17 07:00:00.250000+00"
        );
        let err = parse_time("2026-05-17 10:00:00").unwrap_err().to_string();
        assert!(err.contains("no time zone"), "{err}");
        assert!(parse_time("yesterday+03").is_err());
        assert!(parse_time("2026-13-17 10:00:00+03").is_err());
    }

    #[test]
    fn flags_make_one_target() {
        assert_eq!(Target::from_flags(None, None, None).unwrap(), Target::Latest);
        assert_eq!(
            Target::from_flags(None, Some("0/3000060"), None).unwrap(),
            Target::Lsn("0/3000060".into())
        );
        assert!(Target::from_flags(None, Some("3000060"), None).is_err());
        assert!(Target::from_flags(Some("2026-05-17 10:00:00+03"), Some("0/1"), None).is_err());
        assert!(Target::from_flags(None, None, Some("it's")).is_err());
        let t = Target::from_flags(Some("2026-05-17 10:00:00+03"), None, None).unwrap();
        let conf = t.recovery_conf("wal-g wal-fetch %f %p", "latest");
        assert!(
            conf.contains("recovery_target_time = '2026-05-17 07:00:00.000000+00'") && conf.contains("recovery_target_action = 'promote'")
        );
    }

    fn backup(name: &str, stop: i64) -> Backup {
        Backup {
            name: name.into(),
            kind: "full".into(),
            start: stop - 10,
            stop,
            size_bytes: 1,
            wal_start: String::new(),
            wal_stop: String::new(),
            pg_major: Some(15),
        }
    }

    #[test]
    fn backup_choice_and_window() {
        let listing = Listing {
            backups: vec![backup("A", 1000), backup("B", 2000)],
            earliest_restorable: Some(1000),
            latest_restorable: Some(3000),
            wal_max: None,
        };
        let at = |s: i64| Target::Time(OffsetDateTime::from_unix_timestamp(s).unwrap());
        assert_eq!(choose_backup(&listing, &at(1500), None).unwrap().name, "A");
        assert_eq!(choose_backup(&listing, &at(2500), None).unwrap().name, "B");
        assert_eq!(choose_backup(&listing, &Target::Latest, None).unwrap().name, "B");
        let before = choose_backup(&listing, &at(900), None).unwrap_err().to_string();
        assert!(
            before.contains("before the end of the oldest backup") && before.contains("restorable window"),
            "{before}"
        );
        let after = choose_backup(&listing, &at(3100), None).unwrap_err().to_string();
        assert!(after.contains("after the newest archived WAL"), "{after}");
        assert_eq!(choose_backup(&listing, &at(2500), Some("A")).unwrap().name, "A");
        assert!(
            choose_backup(&listing, &at(1500), Some("B")).is_err(),
            "a pinned backup after the target"
        );
        assert!(choose_backup(&listing, &at(1500), Some("C")).is_err());
    }
}
