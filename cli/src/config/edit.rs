//! Changes pgctl makes to hosts.toml itself (it stays the source of truth for `up`): one value
//! replaced in place, comments and layout kept, the previous file kept beside it.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// `text` with `key = ...` of table `[table]` set to the string `value`; `None` when that
/// table has no such key written out.
pub fn with_string_value(text: &str, table: &str, key: &str, value: &str) -> Option<String> {
    let escaped = value.replace('\\', "\\\\").replace('"', "\\\"");
    with_raw_value(text, table, key, &format!("\"{escaped}\""))
}

/// `with_string_value` for a number.
pub fn with_number_value(text: &str, table: &str, key: &str, value: u32) -> Option<String> {
    with_raw_value(text, table, key, &value.to_string())
}

/// `key = <raw TOML value>` in `[table]`.
fn with_raw_value(text: &str, table: &str, key: &str, raw: &str) -> Option<String> {
    let mut current = String::new();
    let mut done = false;
    let mut out: Vec<String> = Vec::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('[') {
            current = trimmed.trim_matches(|c| c == '[' || c == ']').trim().to_string();
        }
        let is_key = trimmed
            .split_once('=')
            .is_some_and(|(k, _)| k.trim() == key && !trimmed.starts_with('#'));
        if !done && current == table && is_key {
            let indent = &line[..line.len() - line.trim_start().len()];
            out.push(format!("{indent}{key} = {raw}"));
            done = true;
        } else {
            out.push(line.to_string());
        }
    }
    let mut joined = out.join("\n");
    if text.ends_with('\n') {
        joined.push('\n');
    }
    done.then_some(joined)
}

/// Sets `[table] key = "value"` in the hosts file at `path`; the previous text is kept as
/// `<path>.<suffix>` (returned).
pub fn set_string(path: &Path, table: &str, key: &str, value: &str, suffix: &str) -> Result<PathBuf> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let Some(changed) = with_string_value(&text, table, key, value) else {
        bail!("{}: no `{key} = ...` line in [{table}] to change", path.display());
    };
    let kept = PathBuf::from(format!("{}.{suffix}", path.display()));
    std::fs::write(&kept, &text).with_context(|| format!("writing {}", kept.display()))?;
    std::fs::write(path, changed).with_context(|| format!("writing {}", path.display()))?;
    Ok(kept)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# the cluster\n[cluster]\nname = \"main\"\n  image = \"reg/pg:1\" # pinned\n\n[backup]\nimage = \"x\"\n";

    #[test]
    fn replaces_only_the_key_of_that_table() {
        let out = with_string_value(TEXT, "cluster", "image", "reg/pg:2").unwrap();
        assert_eq!(
            out,
            "# the cluster\n[cluster]\nname = \"main\"\n  image = \"reg/pg:2\"\n\n[backup]\nimage = \"x\"\n"
        );
        let parsed: toml::Value = toml::from_str(&out).unwrap();
        assert_eq!(parsed["cluster"]["image"].as_str(), Some("reg/pg:2"));
        assert_eq!(parsed["backup"]["image"].as_str(), Some("x"));
    }

    #[test]
    fn numbers_are_written_bare() {
        let out = with_number_value("[cluster]\npostgres_major = 15\n", "cluster", "postgres_major", 17).unwrap();
        assert_eq!(out, "[cluster]\npostgres_major = 17\n");
        let quoted = with_string_value("[a]\nk = \"x\"\n", "a", "k", "say \"hi\"").unwrap();
        assert_eq!(
            toml::from_str::<toml::Value>(&quoted).unwrap()["a"]["k"].as_str(),
            Some("say \"hi\"")
        );
    }

    #[test]
    fn a_missing_key_changes_nothing() {
        assert!(with_string_value(TEXT, "cluster", "postgres_major", "17").is_none());
        assert!(with_string_value("[cluster]\n# image = \"a\"\n", "cluster", "image", "b").is_none());
    }
}
