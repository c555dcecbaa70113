//! The crate's modules form layers: commands -> capabilities -> docker/config/render/layout.
//! No module may reach a module that reaches back into it (an import cycle), and only `main`
//! may use `commands`. Read from the sources, so a new cycle fails `cargo test`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Top-level module of a source file (`src/backup/list.rs` -> `backup`).
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel.components().next().unwrap().as_os_str().to_string_lossy().to_string();
    first.trim_end_matches(".rs").to_string()
}

/// The top-level modules a piece of code names through `crate::` paths.
fn crate_refs(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // `crate::{a, b::{c, d}}`: the first identifier of each top-level element.
            let (mut depth, mut end) = (1, 0);
            for (k, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    _ => {}
                }
                if depth == 0 {
                    end = k;
                    break;
                }
            }
            let mut depth = 0;
            let mut element = String::new();
            for c in group[..end].chars().chain([',']) {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        let ident: String = element.trim().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                        if !ident.is_empty() && ident != "self" {
                            out.insert(ident);
                        }
                        element.clear();
                        continue;
                    }
                    _ => {}
                }
                element.push(c);
            }
        } else {
            let ident: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            out.insert(ident);
        }
    }
    out
}

/// Code outside `#[cfg(test)]` modules (tests may reach anywhere).
fn without_tests(code: &str) -> &str {
    code.find("#[cfg(test)]\nmod tests")
        .or(code.find("#[cfg(test)]\npub(crate) mod tests"))
        .map_or(code, |i| &code[..i])
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let module = module_of(&src, &path);
                let code = std::fs::read_to_string(&path).unwrap();
                let refs = crate_refs(without_tests(&code));
                graph
                    .entry(module.clone())
                    .or_default()
                    .extend(refs.into_iter().filter(|r| *r != module));
            }
        }
    }
    graph
}

fn reaches(graph: &BTreeMap<String, BTreeSet<String>>, from: &str, to: &str) -> Option<Vec<String>> {
    let mut seen = BTreeSet::new();
    let mut stack = vec![vec![from.to_string()]];
    while let Some(path) = stack.pop() {
        let last = path.last().unwrap().clone();
        for next in graph.get(&last).into_iter().flatten() {
            if next == to {
                let mut p = path.clone();
                p.push(next.clone());
                return Some(p);
            }
            if seen.insert(next.clone()) {
                let mut p = path.clone();
                p.push(next.clone());
                stack.push(p);
            }
        }
    }
    None
}

#[test]
fn parser_sees_groups_and_paths() {
    let refs = crate_refs("use crate::{docker::{self, Engine}, layout, output};\nlet x = crate::backup::engine(cfg);");
    assert_eq!(refs, ["backup", "docker", "layout", "output"].map(String::from).into());
}

#[test]
fn no_import_cycles() {
    let graph = graph();
    assert!(graph.len() > 10, "modules found: {graph:?}");
    let mut cycles = Vec::new();
    for (module, deps) in &graph {
        for dep in deps {
            if let Some(path) = reaches(&graph, dep, module) {
                cycles.push(format!("{module} -> {}", path.join(" -> ")));
            }
        }
    }
    assert!(cycles.is_empty(), "import cycles:\n  {}", cycles.join("\n  "));
}

#[test]
fn only_main_uses_commands() {
    let graph = graph();
    let users: Vec<_> = graph
        .iter()
        .filter(|(m, deps)| *m != "main" && deps.contains("commands"))
        .map(|(m, _)| m.clone())
        .collect();
    assert!(users.is_empty(), "modules that use commands/: {users:?}");
}
