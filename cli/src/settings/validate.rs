//! Checks a configuration change before it reaches the DCS: known Patroni settings with the
//! right type, PostgreSQL parameters that exist on the leader (`pg_settings`) with a value of
//! their type inside their range, none that pgctl sets itself, and Patroni's timing rule
//! `loop_wait + 2 * retry_timeout <= ttl` on the result.

use serde::Serialize;
use std::collections::BTreeMap;

/// The Patroni settings pgctl manages in hosts.toml `[cluster.patroni]`, with their kind.
pub const PATRONI_KEYS: [(&str, Kind); 6] = [
    ("ttl", Kind::Seconds),
    ("loop_wait", Kind::Seconds),
    ("retry_timeout", Kind::Seconds),
    ("maximum_lag_on_failover", Kind::Bytes),
    ("synchronous_mode", Kind::Bool),
    ("synchronous_mode_strict", Kind::Bool),
];

/// Parameters pgctl writes into every member's own patroni.yml (which wins over the DCS), or
/// that Patroni itself controls: a DCS value would be ignored or break replication.
const MANAGED: [(&str, &str); 12] = [
    ("archive_mode", "the backup engine's archiving (hosts.toml [backup])"),
    ("archive_command", "the backup engine's archiving (hosts.toml [backup])"),
    ("archive_timeout", "the backup engine's archiving (hosts.toml [backup])"),
    ("restore_command", "the backup engine (hosts.toml [backup])"),
    ("password_encryption", "pgctl: SCRAM only"),
    ("unix_socket_directories", "pgctl: Patroni and pgctl connect over the socket"),
    ("listen_addresses", "Patroni (postgresql.listen)"),
    ("port", "Patroni (postgresql.listen)"),
    ("hba_file", "Patroni (pg_hba from hosts.toml)"),
    ("data_directory", "Patroni"),
    ("cluster_name", "Patroni"),
    ("primary_conninfo", "Patroni"),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Kind {
    Seconds,
    Bytes,
    Bool,
}

/// A key of the dynamic configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Key {
    Patroni(String),
    /// `postgresql.parameters.<name>`.
    Parameter(String),
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Key::Patroni(k) => write!(f, "{k}"),
            Key::Parameter(p) => write!(f, "{p}"),
        }
    }
}

impl Key {
    /// `ttl`, `postgresql.parameters.work_mem` or just `work_mem`.
    pub fn parse(text: &str) -> Key {
        let text = text.trim();
        if let Some(p) = text.strip_prefix("postgresql.parameters.") {
            return Key::Parameter(p.to_lowercase());
        }
        if PATRONI_KEYS.iter().any(|(k, _)| *k == text) {
            return Key::Patroni(text.to_string());
        }
        Key::Parameter(text.to_lowercase())
    }
}

/// One validated change: `value` None removes the key (back to PostgreSQL's or Patroni's default).
#[derive(Debug, Clone, Serialize)]
pub struct Change {
    pub key: Key,
    pub from: Option<String>,
    pub value: Option<String>,
    /// A PostgreSQL parameter of context `postmaster`: it applies at the next restart.
    pub needs_restart: bool,
}

impl Change {
    /// The value as Patroni's PATCH /config takes it (null removes).
    pub fn json_value(&self) -> serde_json::Value {
        match &self.value {
            None => serde_json::Value::Null,
            Some(v) => match (&self.key, v.parse::<i64>(), v.as_str()) {
                (_, Ok(n), _) => n.into(),
                (Key::Patroni(_), _, "true" | "false") => (v == "true").into(),
                _ => v.clone().into(),
            },
        }
    }

    /// The value as hosts.toml writes it.
    pub fn toml_value(&self) -> toml_edit::Value {
        let v = self.value.clone().unwrap_or_default();
        match (&self.key, v.parse::<i64>(), v.as_str()) {
            (_, Ok(n), _) => n.into(),
            (Key::Patroni(_), _, "true" | "false") => (v == "true").into(),
            _ => v.into(),
        }
    }
}

/// One row of the leader's pg_settings.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Setting {
    pub vartype: String,
    pub context: String,
    pub unit: Option<String>,
    pub min: Option<String>,
    pub max: Option<String>,
    pub enumvals: Option<Vec<String>>,
}

/// The query that reads `Setting`s as one JSON object keyed by name.
pub const SETTINGS_SQL: &str = "SELECT json_object_agg(name, json_build_object('vartype', vartype, 'context', context, \
     'unit', unit, 'min', min_val, 'max', max_val, 'enumvals', enumvals)) FROM pg_settings";

/// `KEY=VALUE` (or `KEY=` to remove) from the command line.
pub fn parse_assignment(text: &str) -> Result<(Key, Option<String>), String> {
    let (k, v) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}`: expected KEY=VALUE (KEY= removes the key)"))?;
    if k.trim().is_empty() {
        return Err(format!("`{text}`: the key is empty"));
    }
    let v = v.trim();
    Ok((Key::parse(k), (!v.is_empty()).then(|| v.trim_matches('\'').to_string())))
}

/// Text of a value as PostgreSQL reads it, for comparing two spellings.
pub fn normalized(v: &str) -> String {
    let v = v.trim().trim_matches('\'').to_lowercase();
    match v.as_str() {
        "on" | "true" | "yes" | "1" => "on".into(),
        "off" | "false" | "no" | "0" => "off".into(),
        _ => v,
    }
}

/// A number with an optional unit in the parameter's base `unit` (`8kB`, `kB`, `MB`, `ms`,
/// `s`, `min`), as PostgreSQL converts it.
pub fn in_base_units(value: &str, unit: Option<&str>) -> Result<f64, String> {
    let v = value.trim();
    let split = v
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == '+'))
        .unwrap_or(v.len());
    let (number, suffix) = (&v[..split], v[split..].trim());
    let n: f64 = number.parse().map_err(|_| format!("`{value}` is not a number"))?;
    if suffix.is_empty() {
        return Ok(n);
    }
    let Some(unit) = unit.filter(|u| !u.is_empty()) else {
        return Err(format!("`{value}`: this parameter takes no unit"));
    };
    let bytes = |u: &str| -> Option<f64> {
        let (mult, base) = match u.find(|c: char| c.is_ascii_alphabetic()) {
            Some(0) | None => (1.0, u),
            Some(i) => (u[..i].parse().ok()?, &u[i..]),
        };
        let b = match base {
            "B" => 1.0,
            "kB" => 1024.0,
            "MB" => 1024.0 * 1024.0,
            "GB" => 1024.0 * 1024.0 * 1024.0,
            "TB" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
            _ => return None,
        };
        Some(mult * b)
    };
    let millis = |u: &str| -> Option<f64> {
        Some(match u {
            "us" => 0.001,
            "ms" => 1.0,
            "s" => 1000.0,
            "min" => 60_000.0,
            "h" => 3_600_000.0,
            "d" => 86_400_000.0,
            _ => return None,
        })
    };
    match (bytes(suffix), bytes(unit), millis(suffix), millis(unit)) {
        (Some(s), Some(u), _, _) => Ok(n * s / u),
        (_, _, Some(s), Some(u)) => Ok(n * s / u),
        _ => Err(format!(
            "`{value}`: unit `{suffix}` does not fit this parameter (its unit is {unit}; memory: B, kB, MB, GB, TB; time: us, ms, s, min, h, d)"
        )),
    }
}

/// Checks one PostgreSQL parameter's value against its pg_settings row.
pub fn check_parameter(name: &str, value: &str, s: &Setting) -> Result<(), String> {
    match s.vartype.as_str() {
        "bool" => {
            let ok = ["on", "off", "true", "false", "yes", "no", "1", "0"].contains(&value.to_lowercase().as_str());
            if !ok {
                return Err(format!("{name} = `{value}`: expected on or off"));
            }
        }
        "enum" => {
            let allowed = s.enumvals.clone().unwrap_or_default();
            if !allowed.iter().any(|a| a.eq_ignore_ascii_case(value)) {
                return Err(format!("{name} = `{value}`: expected one of {}", allowed.join(", ")));
            }
        }
        "integer" | "real" => {
            let n = in_base_units(value, s.unit.as_deref()).map_err(|e| format!("{name}: {e}"))?;
            let bound = |b: &Option<String>| b.as_deref().and_then(|x| x.parse::<f64>().ok());
            let (min, max) = (bound(&s.min), bound(&s.max));
            if min.is_some_and(|m| n < m) || max.is_some_and(|m| n > m) {
                let unit = s.unit.clone().unwrap_or_default();
                return Err(format!(
                    "{name} = `{value}`: out of range {} .. {} {unit}",
                    s.min.clone().unwrap_or_default(),
                    s.max.clone().unwrap_or_default()
                ));
            }
        }
        _ => {}
    }
    Ok(())
}

fn check_patroni(key: &str, value: &str) -> Result<(), String> {
    let kind = PATRONI_KEYS.iter().find(|(k, _)| *k == key).map(|(_, k)| *k);
    match kind {
        Some(Kind::Bool) if !["true", "false"].contains(&value) => Err(format!("{key} = `{value}`: expected true or false")),
        Some(Kind::Seconds | Kind::Bytes) if value.parse::<u64>().is_err() => Err(format!(
            "{key} = `{value}`: expected a whole number of {}",
            if kind == Some(Kind::Bytes) { "bytes" } else { "seconds" }
        )),
        Some(_) => Ok(()),
        None => Err(format!(
            "{key}: not a Patroni setting pgctl manages ({})",
            PATRONI_KEYS.map(|(k, _)| k).join(", ")
        )),
    }
}

/// Validates `wanted` against the live configuration and the leader's settings; every problem
/// at once, each naming its key.
pub fn check(
    wanted: &[(Key, Option<String>)],
    live: &(BTreeMap<String, String>, BTreeMap<String, String>),
    settings: &BTreeMap<String, Setting>,
) -> Result<Vec<Change>, Vec<String>> {
    let mut problems = Vec::new();
    let mut changes = Vec::new();
    let (mut patroni, parameters) = live.clone();
    for (key, value) in wanted {
        let (from, needs_restart) = match key {
            Key::Patroni(k) => {
                if let Some(v) = value {
                    if let Err(e) = check_patroni(k, v) {
                        problems.push(e);
                    }
                    patroni.insert(k.clone(), v.clone());
                } else {
                    problems.push(format!("{k}: cannot be removed (set a value)"));
                }
                (live.0.get(k).cloned(), false)
            }
            Key::Parameter(p) => {
                if let Some((_, owner)) = MANAGED.iter().find(|(m, _)| m == p) {
                    problems.push(format!("{p}: set by {owner}, not through the dynamic configuration"));
                    continue;
                }
                let Some(s) = settings.get(p) else {
                    // A custom setting of an extension (`pg_stat_statements.max`) is only known once loaded.
                    if !p.contains('.') {
                        problems.push(format!("{p}: not a PostgreSQL parameter of this server (see pg_settings)"));
                        continue;
                    }
                    changes.push(Change {
                        key: key.clone(),
                        from: parameters.get(p).cloned(),
                        value: value.clone(),
                        needs_restart: false,
                    });
                    continue;
                };
                if let Some(v) = value {
                    if let Err(e) = check_parameter(p, v, s) {
                        problems.push(e);
                    }
                }
                if s.context == "internal" {
                    problems.push(format!("{p}: fixed when PostgreSQL was built or initialized; it cannot be set"));
                }
                (parameters.get(p).cloned(), s.context == "postmaster")
            }
        };
        if from.as_deref().map(normalized) == value.as_deref().map(normalized) {
            continue; // already so
        }
        changes.push(Change {
            key: key.clone(),
            from,
            value: value.clone(),
            needs_restart,
        });
    }
    let num = |k: &str| patroni.get(k).and_then(|v| v.parse::<u64>().ok());
    if let (Some(ttl), Some(loop_wait), Some(retry)) = (num("ttl"), num("loop_wait"), num("retry_timeout")) {
        if loop_wait + 2 * retry > ttl {
            problems.push(format!(
                "ttl {ttl}, loop_wait {loop_wait}, retry_timeout {retry}: Patroni needs loop_wait + 2 * retry_timeout <= ttl ({} > {ttl})",
                loop_wait + 2 * retry
            ));
        }
    }
    if problems.is_empty() {
        Ok(changes)
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setting(vartype: &str, unit: Option<&str>, min: &str, max: &str, context: &str) -> Setting {
        Setting {
            vartype: vartype.into(),
            context: context.into(),
            unit: unit.map(str::to_string),
            min: Some(min.into()),
            max: Some(max.into()),
            enumvals: None,
        }
    }

    fn settings() -> BTreeMap<String, Setting> {
        BTreeMap::from([
            ("work_mem".to_string(), setting("integer", Some("kB"), "64", "2147483647", "user")),
            (
                "shared_buffers".to_string(),
                setting("integer", Some("8kB"), "16", "1073741823", "postmaster"),
            ),
            ("max_connections".to_string(), setting("integer", None, "1", "262143", "postmaster")),
            (
                "statement_timeout".to_string(),
                setting("integer", Some("ms"), "0", "2147483647", "user"),
            ),
            (
                "wal_level".to_string(),
                Setting {
                    enumvals: Some(vec!["minimal".into(), "replica".into(), "logical".into()]),
                    ..setting("enum", None, "", "", "postmaster")
                },
            ),
        ])
    }

    fn live() -> (BTreeMap<String, String>, BTreeMap<String, String>) {
        let patroni = [("ttl", "30"), ("loop_wait", "10"), ("retry_timeout", "10")]
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .into();
        (patroni, BTreeMap::from([("max_connections".to_string(), "200".to_string())]))
    }

    fn wanted(items: &[&str]) -> Vec<(Key, Option<String>)> {
        items.iter().map(|i| parse_assignment(i).unwrap()).collect()
    }

    #[test]
    fn units_convert_to_the_base_unit() {
        assert_eq!(in_base_units("4MB", Some("kB")).unwrap(), 4096.0);
        assert_eq!(in_base_units("1GB", Some("8kB")).unwrap(), 131072.0);
        assert_eq!(in_base_units("2min", Some("ms")).unwrap(), 120000.0);
        assert_eq!(in_base_units("300", Some("ms")).unwrap(), 300.0);
        assert!(in_base_units("4MB", Some("ms")).is_err());
        assert!(in_base_units("many", Some("kB")).is_err());
    }

    #[test]
    fn good_changes_pass_and_say_what_needs_a_restart() {
        let changes = check(
            &wanted(&["work_mem=8MB", "max_connections=120", "shared_buffers=256MB"]),
            &live(),
            &settings(),
        )
        .unwrap();
        let restart: Vec<String> = changes.iter().filter(|c| c.needs_restart).map(|c| c.key.to_string()).collect();
        assert_eq!(restart, ["max_connections", "shared_buffers"]);
        assert_eq!(changes[1].from.as_deref(), Some("200"));
        assert_eq!(changes[1].json_value(), serde_json::json!(120));
    }

    #[test]
    fn an_unchanged_value_is_no_change() {
        assert!(check(&wanted(&["max_connections=200"]), &live(), &settings()).unwrap().is_empty());
    }

    #[test]
    fn every_problem_names_its_key() {
        let problems = check(
            &wanted(&[
                "work_mem=10",
                "no_such_thing=1",
                "wal_level=archive",
                "archive_command=true",
                "statement_timeout=5MB",
            ]),
            &live(),
            &settings(),
        )
        .unwrap_err();
        assert_eq!(problems.len(), 5, "{problems:?}");
        for (p, key) in problems
            .iter()
            .zip(["work_mem", "no_such_thing", "wal_level", "archive_command", "statement_timeout"])
        {
            assert!(p.starts_with(key), "{p}");
        }
        assert!(problems[0].contains("out of range"), "{}", problems[0]);
    }

    #[test]
    fn the_timing_rule_holds_on_the_result() {
        let problems = check(&wanted(&["retry_timeout=15"]), &live(), &settings()).unwrap_err();
        assert!(problems[0].contains("loop_wait + 2 * retry_timeout <= ttl"), "{problems:?}");
        assert!(check(&wanted(&["ttl=40", "retry_timeout=15"]), &live(), &settings()).is_ok());
        assert!(check(&wanted(&["synchronous_mode=maybe"]), &live(), &settings()).is_err());
    }
}
