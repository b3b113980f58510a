//! The shape of the code, checked: which of the server's modules may use which. Reads the `crate::…` paths of
//! every source file under `src/` (test modules, which sit at the end of a file after `#[cfg(test)]`, are left
//! out) and fails on an import circle between top-level modules, on a transport that reaches into the engine or
//! the tracker, and on an engine or the hub that knows HTTP.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

/// A file's code without its test module.
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    match text.find("#[cfg(test)]") {
        Some(at) => text[..at].to_string(),
        None => text,
    }
}

/// The top-level modules each top-level module names through `crate::`.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in sources(&src) {
        let relative = file.strip_prefix(&src).unwrap();
        let top = relative.components().next().unwrap().as_os_str().to_string_lossy();
        let module = top.trim_end_matches(".rs").to_string();
        if ["lib", "main", "cli"].contains(&module.as_str()) {
            continue; // The crate root and the binary sit above everything.
        }
        let code = code(&file);
        let used = edges.entry(module.clone()).or_default();
        for (at, _) in code.match_indices("crate::") {
            let name: String =
                code[at + "crate::".len()..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            if !name.is_empty() && name != module {
                used.insert(name);
            }
        }
    }
    edges
}

/// Every circle of the graph, each as the path that closes it.
fn circles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    fn walk(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        found: &mut BTreeSet<Vec<String>>,
    ) {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut circle = path[at..].to_vec();
            // One rotation per circle: start at its smallest name.
            let start = circle.iter().enumerate().min_by_key(|(_, n)| *n).map(|(i, _)| i).unwrap();
            circle.rotate_left(start);
            found.insert(circle);
            return;
        }
        path.push(node.to_string());
        for next in edges.get(node).into_iter().flatten() {
            walk(next, edges, path, found);
        }
        path.pop();
    }
    let mut found = BTreeSet::new();
    for node in edges.keys() {
        walk(node, edges, &mut Vec::new(), &mut found);
    }
    found.into_iter().collect()
}

#[test]
fn no_module_imports_a_module_that_imports_it() {
    assert_eq!(circles(&graph()), Vec::<Vec<String>>::new(), "import circles between top-level modules");
}

#[test]
fn the_configuration_is_plain_data_that_imports_no_module_interpreting_it() {
    let config = graph().remove("config").unwrap_or_default();
    assert!(config.is_empty(), "config imports {config:?}");
}

#[test]
fn transports_reach_the_engine_only_through_the_hub() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/transport");
    for file in sources(&src) {
        let code = code(&file);
        assert!(!code.contains("crate::engine"), "{} imports the engine", file.display());
        assert!(!code.contains("Tracker"), "{} follows channels itself", file.display());
    }
}

#[test]
fn the_hub_and_the_engines_know_nothing_of_http() {
    for module in ["hub", "engine", "encoded.rs"] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join(module);
        let files = if path.is_dir() { sources(&path) } else { vec![path] };
        for file in files {
            let code = code(&file);
            for http in ["axum", "hyper", "crate::http", "crate::transport", "crate::server"] {
                assert!(!code.contains(http), "{} uses {http}", file.display());
            }
        }
    }
}

#[test]
fn the_checker_finds_a_circle() {
    let edges: BTreeMap<String, BTreeSet<String>> = [
        ("a".to_string(), BTreeSet::from(["b".to_string()])),
        ("b".to_string(), BTreeSet::from(["c".to_string()])),
        ("c".to_string(), BTreeSet::from(["a".to_string()])),
        ("d".to_string(), BTreeSet::from(["a".to_string()])),
    ]
    .into();
    assert_eq!(circles(&edges), [vec!["a".to_string(), "b".to_string(), "c".to_string()]]);
}
