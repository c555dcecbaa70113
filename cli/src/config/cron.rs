//! Validation of 5-field cron expressions (minute hour day-of-month month day-of-week),
//! the syntax cron(8) accepts in a crontab, so a schedule in hosts.toml fails in `pgctl check`
//! rather than silently never firing inside a container.
//!
//! Why not a cron crate (croner, cron): they accept more than Debian's cron(8) does (seconds
//! fields, `L`, `W`, `#`, `?`), and a schedule one of them accepts but cron(8) does not would
//! pass `pgctl check` and then never run. What matters is exactly cron(8)'s grammar, which is
//! small; this module checks that and nothing else.

const FIELDS: [(&str, u32, u32); 5] = [
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day of month", 1, 31),
    ("month", 1, 12),
    ("day of week", 0, 7),
];
const MONTHS: [&str; 12] = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"];
const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

/// Checks a cron expression; the error says which field is wrong and what it allows.
pub fn validate(expr: &str) -> Result<(), String> {
    let expr = expr.trim();
    if let Some(macro_name) = expr.strip_prefix('@') {
        return match macro_name {
            "yearly" | "annually" | "monthly" | "weekly" | "daily" | "midnight" | "hourly" => Ok(()),
            _ => Err(format!(
                "unknown macro `@{macro_name}` (allowed: @hourly @daily @weekly @monthly @yearly)"
            )),
        };
    }
    let parts: Vec<&str> = expr.split_whitespace().collect();
    if parts.len() != 5 {
        return Err(format!(
            "expected 5 fields (minute hour day-of-month month day-of-week), found {}",
            parts.len()
        ));
    }
    for (i, (part, (name, lo, hi))) in parts.iter().zip(FIELDS).enumerate() {
        // Names count from 1 for months (jan = 1) and from 0 for days (sun = 0).
        let names: (&[&str], u32) = match i {
            3 => (&MONTHS, 1),
            4 => (&DAYS, 0),
            _ => (&[], 0),
        };
        validate_field(part, lo, hi, names).map_err(|e| format!("{name} field `{part}`: {e} (allowed {lo}-{hi})"))?;
    }
    Ok(())
}

fn validate_field(field: &str, lo: u32, hi: u32, names: (&[&str], u32)) -> Result<(), String> {
    for item in field.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => (r, Some(s)),
            None => (item, None),
        };
        if let Some(step) = step {
            let step: u32 = step.parse().map_err(|_| format!("step `{step}` is not a number"))?;
            if step == 0 || step > hi {
                return Err(format!("step {step} out of range"));
            }
        }
        if range == "*" {
            continue;
        }
        let (a, b) = match range.split_once('-') {
            Some((a, b)) => (value(a, names)?, value(b, names)?),
            None => {
                let v = value(range, names)?;
                (v, v)
            }
        };
        for v in [a, b] {
            if v < lo || v > hi {
                return Err(format!("{v} out of range"));
            }
        }
        if a > b {
            return Err(format!("range {a}-{b} is backwards"));
        }
    }
    Ok(())
}

fn value(s: &str, (names, base): (&[&str], u32)) -> Result<u32, String> {
    if let Ok(v) = s.parse() {
        return Ok(v);
    }
    names
        .iter()
        .position(|n| n.eq_ignore_ascii_case(s))
        .map(|p| p as u32 + base)
        .ok_or_else(|| format!("`{s}` is not a number"))
}

#[cfg(test)]
mod tests {
    use super::validate;

    #[test]
    fn accepts_common_schedules() {
        for ok in [
            "20 5 * * *",
            "*/15 * * * *",
            "0 0 1,15 * mon-fri",
            "0 3 * jan sun",
            "@daily",
            "0-59/5 1-3 * * 0,7",
        ] {
            assert!(validate(ok).is_ok(), "{ok}: {:?}", validate(ok));
        }
    }

    #[test]
    fn rejects_bad_schedules() {
        for bad in [
            "",
            "* * * *",
            "60 * * * *",
            "* 24 * * *",
            "* * 0 * *",
            "* * * 13 *",
            "*/0 * * * *",
            "a * * * *",
            "5-1 * * * *",
            "@sometimes",
            "* * * * * *",
        ] {
            assert!(validate(bad).is_err(), "{bad} should be rejected");
        }
    }
}
