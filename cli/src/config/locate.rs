//! Maps a key path (`host[2].address`) back to the line it was written on, so every
//! validation error can name file, line and key even though validation runs on typed structs.

use toml::de::{DeTable, DeValue};

/// One step of a key path: a table key or an index into an array (of tables).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Key(String),
    Index(usize),
}

/// A dotted key path such as `cluster.patroni.ttl` or `host[1].endpoint`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeyPath(pub Vec<Step>);

impl KeyPath {
    pub fn parse(path: &str) -> Self {
        let mut steps = Vec::new();
        for part in path.split('.').filter(|p| !p.is_empty()) {
            match part.split_once('[') {
                Some((key, rest)) => {
                    steps.push(Step::Key(key.to_string()));
                    if let Ok(i) = rest.trim_end_matches(']').parse() {
                        steps.push(Step::Index(i));
                    }
                }
                None => steps.push(Step::Key(part.to_string())),
            }
        }
        KeyPath(steps)
    }
}

impl std::fmt::Display for KeyPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut first = true;
        for step in &self.0 {
            match step {
                Step::Key(k) => {
                    if !first {
                        f.write_str(".")?;
                    }
                    f.write_str(k)?;
                }
                Step::Index(i) => write!(f, "[{i}]")?,
            }
            first = false;
        }
        Ok(())
    }
}

/// 1-based line number of a byte offset.
pub fn line_of(src: &str, offset: usize) -> usize {
    src[..offset.min(src.len())].bytes().filter(|b| *b == b'\n').count() + 1
}

/// Line where the deepest existing prefix of `path` is written (the key itself when present,
/// else its table). `None` only when the document does not parse at all.
pub fn locate(src: &str, path: &KeyPath) -> Option<usize> {
    let root = DeTable::parse(src).ok()?;
    let mut best = None;
    let mut table: Option<&DeTable> = Some(root.get_ref());
    let mut value: Option<&DeValue> = None;
    for step in &path.0 {
        match step {
            Step::Key(k) => {
                let t = match (table, value) {
                    (Some(t), _) => t,
                    (None, Some(DeValue::Table(t))) => t,
                    _ => break,
                };
                let Some((key, v)) = t.iter().find(|(key, _)| key.get_ref().as_ref() == k.as_str()) else {
                    break;
                };
                best = Some(key.span().start);
                table = None;
                value = Some(v.get_ref());
            }
            Step::Index(i) => {
                let Some(DeValue::Array(items)) = value else {
                    break;
                };
                let Some(item) = items.get(*i) else { break };
                best = Some(item.span().start);
                table = None;
                value = Some(item.get_ref());
            }
        }
    }
    best.map(|offset| line_of(src, offset))
}
