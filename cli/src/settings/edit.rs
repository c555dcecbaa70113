//! `pgctl config edit`: the dynamic configuration as a TOML document for $EDITOR, and what the
//! user changed in it as the same (key, value) list `config set` takes.

use super::Key;
use anyhow::Result;
use std::collections::BTreeMap;

type Flat = BTreeMap<String, String>;

/// A TOML value for a flattened setting: numbers and booleans bare, everything else a string.
fn value(v: &str) -> toml_edit::Value {
    match (v.parse::<i64>(), v) {
        (Ok(n), _) => n.into(),
        (_, "true" | "false") => (v == "true").into(),
        _ => v.to_string().into(),
    }
}

/// The document the editor opens: `[patroni]` and `[postgresql_parameters]`.
pub fn document(scope: &str, patroni: &Flat, parameters: &Flat) -> String {
    let table = |m: &Flat| {
        let mut t = toml_edit::Table::new();
        for (k, v) in m {
            t.insert(k, toml_edit::Item::Value(value(v)));
        }
        t
    };
    let mut doc = toml_edit::DocumentMut::new();
    doc.insert("patroni", toml_edit::Item::Table(table(patroni)));
    doc.insert("postgresql_parameters", toml_edit::Item::Table(table(parameters)));
    format!(
        "# pgctl config edit: the dynamic configuration of cluster `{scope}`. Change values, add or delete\n\
         # parameters, save and quit; the changes are validated, shown and confirmed before they apply.\n{doc}"
    )
}

/// What differs between the live settings and the edited document: changed or added keys with
/// their value, deleted ones with none.
pub fn changes(patroni: &Flat, parameters: &Flat, edited: &str) -> Result<Vec<(Key, Option<String>)>> {
    let edited: toml::Value = toml::from_str(edited)?;
    let text = |v: &toml::Value| match v {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mut wanted = Vec::new();
    for (section, before, to_key) in [
        ("patroni", patroni, (|k: &str| Key::Patroni(k.to_string())) as fn(&str) -> Key),
        ("postgresql_parameters", parameters, |k: &str| Key::Parameter(k.to_string())),
    ] {
        let after: Flat = edited
            .get(section)
            .and_then(|t| t.as_table())
            .map(|t| t.iter().map(|(k, v)| (k.clone(), text(v))).collect())
            .unwrap_or_default();
        for (k, v) in &after {
            if before.get(k) != Some(v) {
                wanted.push((to_key(k), Some(v.clone())));
            }
        }
        for k in before.keys().filter(|k| !after.contains_key(*k)) {
            wanted.push((to_key(k), None));
        }
    }
    Ok(wanted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flat(items: &[(&str, &str)]) -> Flat {
        items.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn an_unchanged_document_changes_nothing_and_edits_are_found() {
        let patroni = flat(&[("ttl", "30"), ("synchronous_mode", "true")]);
        let parameters = flat(&[("work_mem", "4MB"), ("max_connections", "200")]);
        let doc = document("main", &patroni, &parameters);
        assert!(changes(&patroni, &parameters, &doc).unwrap().is_empty(), "{doc}");
        let edited = doc
            .replace("ttl = 30", "ttl = 40")
            .replace("work_mem = \"4MB\"", "")
            .replace("max_connections = 200", "max_connections = 200\nshared_buffers = \"1GB\"");
        let got = changes(&patroni, &parameters, &edited).unwrap();
        assert_eq!(
            got,
            vec![
                (Key::Patroni("ttl".into()), Some("40".into())),
                (Key::Parameter("shared_buffers".into()), Some("1GB".into())),
                (Key::Parameter("work_mem".into()), None),
            ]
        );
        assert!(changes(&patroni, &parameters, "not [toml").is_err());
    }
}
