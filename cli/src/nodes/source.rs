//! Where a new replica's data comes from: a pg_basebackup from the leader, or the newest backup
//! in S3 plus the WAL archived since (the leader is then not read from). `auto` follows Spilo's
//! rule: the backup, unless the WAL written since it exceeds 10 GiB or 30% of the database.

use crate::backup::list::Backup;
use crate::layout::WAL_SEGMENT_BYTES;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReplicaFrom {
    /// The backup when it is recent enough (see `choose`), else the leader
    Auto,
    /// pg_basebackup from the leader
    Leader,
    /// The newest backup in S3 (falls back to the leader if the fetch fails)
    Backup,
}

/// WAL since the backup beyond which a basebackup is the cheaper copy (Spilo's thresholds).
const MAX_WAL_BYTES: u64 = 10 * 1024 * 1024 * 1024;
const MAX_WAL_SHARE: f64 = 0.30;

/// What the leader says about itself, for the choice.
#[derive(Debug, Clone)]
pub struct LeaderFacts {
    pub lsn: u64,
    pub database_bytes: u64,
    pub timeline: u32,
    /// The leader's timeline history: (timeline, the LSN where it ended).
    pub history: Vec<(u32, u64)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "from", rename_all = "lowercase")]
pub enum Source {
    Leader,
    Backup { name: String },
}

#[derive(Debug, Clone, Serialize)]
pub struct Choice {
    #[serde(flatten)]
    pub source: Source,
    pub reason: String,
}

/// The byte position a WAL segment name starts at (timeline ignored: positions continue
/// across timelines).
pub fn segment_start(name: &str) -> Option<u64> {
    if name.len() < 24 {
        return None;
    }
    let log = u64::from_str_radix(&name[8..16], 16).ok()?;
    let seg = u64::from_str_radix(&name[16..24], 16).ok()?;
    Some(log * 0x1_0000_0000 + seg * WAL_SEGMENT_BYTES)
}

fn timeline_of(name: &str) -> Option<u32> {
    u32::from_str_radix(name.get(..8)?, 16).ok()
}

/// Parses a PostgreSQL timeline history file (`<parent tli>\t<switch lsn>\t<reason>` lines).
pub fn parse_history(text: &str) -> Vec<(u32, u64)> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let tli = f.next()?.parse().ok()?;
            Some((tli, parse_lsn(f.next()?)?))
        })
        .collect()
}

pub fn parse_lsn(text: &str) -> Option<u64> {
    let (hi, lo) = text.trim().split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) + u64::from_str_radix(lo, 16).ok()?)
}

/// Whether a replica restored from `b` can follow the leader: the backup's WAL, to the end of
/// its last segment, lies on the leader's current timeline or on an ancestor before it branched.
fn on_leader_history(b: &Backup, leader: &LeaderFacts) -> bool {
    let (Some(tli), Some(stop)) = (timeline_of(&b.wal_stop), segment_start(&b.wal_stop)) else {
        return false;
    };
    let end = stop + WAL_SEGMENT_BYTES;
    tli == leader.timeline || leader.history.iter().any(|(t, switched)| *t == tli && *switched >= end)
}

fn mib(bytes: u64) -> String {
    crate::output::size(bytes)
}

/// The source for a new replica. `Err` (the message) when `backup` was asked for and no backup
/// can serve: refusing keeps the leader unloaded, as asked.
pub fn choose(asked: ReplicaFrom, backups: &[Backup], leader: &LeaderFacts) -> Result<Choice, String> {
    if asked == ReplicaFrom::Leader {
        return Ok(Choice {
            source: Source::Leader,
            reason: "--replica-from leader".into(),
        });
    }
    let newest = backups.iter().filter(|b| on_leader_history(b, leader)).max_by_key(|b| b.stop);
    let Some(b) = newest else {
        let why = if backups.is_empty() {
            "the repository holds no backup".to_string()
        } else {
            format!("none of the {} backup(s) lies on the leader's timeline history", backups.len())
        };
        return match asked {
            ReplicaFrom::Backup => Err(format!(
                "--replica-from backup: {why}; take one with `pgctl backup now`, or use --replica-from leader"
            )),
            _ => Ok(Choice {
                source: Source::Leader,
                reason: why,
            }),
        };
    };
    let since = leader.lsn.saturating_sub(segment_start(&b.wal_start).unwrap_or(0));
    let share = since as f64 / leader.database_bytes.max(1) as f64;
    let numbers = format!(
        "backup {}: {} of WAL since it, {:.0}% of the {} database",
        b.name,
        mib(since),
        share * 100.0,
        mib(leader.database_bytes)
    );
    if asked == ReplicaFrom::Auto && (since > MAX_WAL_BYTES || share > MAX_WAL_SHARE) {
        return Ok(Choice {
            source: Source::Leader,
            reason: format!("{numbers}: over 10 GiB or 30%, so a basebackup copies less"),
        });
    }
    Ok(Choice {
        source: Source::Backup { name: b.name.clone() },
        reason: if asked == ReplicaFrom::Auto {
            format!("{numbers}: within 10 GiB and 30%")
        } else {
            numbers
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backup(name: &str, wal_start: &str, wal_stop: &str, stop: i64) -> Backup {
        Backup {
            name: name.into(),
            kind: "full".into(),
            start: stop - 5,
            stop,
            size_bytes: 1,
            wal_start: wal_start.into(),
            wal_stop: wal_stop.into(),
            pg_major: Some(15),
        }
    }

    fn leader(lsn: &str, db: u64, timeline: u32, history: &str) -> LeaderFacts {
        LeaderFacts {
            lsn: parse_lsn(lsn).unwrap(),
            database_bytes: db,
            timeline,
            history: parse_history(history),
        }
    }

    const GIB: u64 = 1024 * 1024 * 1024;

    #[test]
    fn positions_and_history() {
        assert_eq!(
            segment_start("000000020000000100000003"),
            Some(0x1_0000_0000 + 3 * WAL_SEGMENT_BYTES)
        );
        assert_eq!(parse_lsn("1/3000060"), Some(0x1_0300_0060));
        assert_eq!(
            parse_history("1\t0/5000000\tno recovery target specified\n\n"),
            vec![(1, 0x500_0000)]
        );
    }

    #[test]
    fn auto_takes_a_recent_backup_and_the_leader_for_an_old_one() {
        let b = [backup("base_1", "000000010000000000000010", "000000010000000000000011", 100)];
        // 0x20 segments = 512 MiB since the backup, of a 4 GiB database: 12.5%.
        let l = leader("0/30000000", 4 * GIB, 1, "");
        let c = choose(ReplicaFrom::Auto, &b, &l).unwrap();
        assert_eq!(c.source, Source::Backup { name: "base_1".into() });
        assert!(c.reason.contains("within"), "{}", c.reason);
        // The same WAL against a 1 GiB database is 50%: the leader.
        let l = leader("0/30000000", GIB, 1, "");
        let c = choose(ReplicaFrom::Auto, &b, &l).unwrap();
        assert_eq!(c.source, Source::Leader);
        assert!(c.reason.contains("30%"), "{}", c.reason);
        // More than 10 GiB since, whatever the size: the leader.
        let l = leader("3/0", 1000 * GIB, 1, "");
        assert_eq!(choose(ReplicaFrom::Auto, &b, &l).unwrap().source, Source::Leader);
        // Asked for explicitly, the backup is used anyway.
        let l = leader("3/0", GIB, 1, "");
        assert_eq!(
            choose(ReplicaFrom::Backup, &b, &l).unwrap().source,
            Source::Backup { name: "base_1".into() }
        );
    }

    #[test]
    fn a_backup_off_the_leaders_history_is_not_used() {
        // Backed up on timeline 2, but timeline 3 branched from 1 (a restore to before it).
        let b = [backup("base_2", "000000020000000000000030", "000000020000000000000031", 200)];
        let l = leader("0/40000000", 4 * GIB, 3, "1\t0/20000000\tbefore\n");
        assert_eq!(choose(ReplicaFrom::Auto, &b, &l).unwrap().source, Source::Leader);
        assert!(choose(ReplicaFrom::Backup, &b, &l).unwrap_err().contains("timeline history"));
        // Timeline 2 ended after the backup's end: usable.
        let l = leader("0/40000000", 4 * GIB, 3, "1\t0/20000000\tx\n2\t0/38000000\ty\n");
        assert_eq!(
            choose(ReplicaFrom::Auto, &b, &l).unwrap().source,
            Source::Backup { name: "base_2".into() }
        );
        // Nothing at all.
        assert_eq!(choose(ReplicaFrom::Auto, &[], &l).unwrap().source, Source::Leader);
        assert!(choose(ReplicaFrom::Backup, &[], &l).unwrap_err().contains("no backup"));
    }
}
