//! docs/invariants.md names, for each invariant, the tests that would fail
//! if it broke (`file::function`). Fails when a named test no longer
//! exists anywhere in the workspace, so the document cannot keep pointing
//! at a renamed or deleted guard.

use std::collections::BTreeSet;
use std::path::Path;

const INVARIANTS: &str = include_str!("../../../docs/invariants.md");

/// Every `file::name` in backticks: the function part. `Type::item`
/// paths (fields and methods the mechanisms cite) and the document's own
/// `file::function` placeholder and library paths are not test names.
fn named_functions(doc: &str) -> BTreeSet<&str> {
    doc.split('`')
        .skip(1)
        .step_by(2)
        .filter(|code| *code != "file::function")
        // Library paths the mechanisms cite (`tokio::time::timeout`).
        .filter(|code| !["std::", "tokio::", "actix::", "core::"].iter().any(|lib| code.starts_with(lib)))
        .filter_map(|code| code.rsplit_once("::"))
        .filter(|(path, _)| !path.rsplit("::").next().unwrap_or("").starts_with(|c: char| c.is_ascii_uppercase()))
        .map(|(_, f)| f)
        .filter(|f| !f.is_empty() && f.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
        .collect()
}

/// The text of every `.rs` file under `dir`, `target` directories left out.
fn sources(dir: &Path, out: &mut String) {
    for entry in std::fs::read_dir(dir).expect("readable directory").flatten() {
        let path = entry.path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n != "target" && n != ".git") {
                sources(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push_str(&std::fs::read_to_string(&path).unwrap_or_default());
        }
    }
}

#[test]
fn every_test_the_invariants_name_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut all = String::new();
    for dir in ["crates", "integration-tests"] {
        sources(&root.join(dir), &mut all);
    }
    let named = named_functions(INVARIANTS);
    assert!(named.len() > 50, "found only {} test names: {named:?}", named.len());
    let missing: Vec<&str> = named.iter().copied().filter(|f| !all.contains(&format!("fn {f}("))).collect();
    assert!(missing.is_empty(), "docs/invariants.md names tests that do not exist: {missing:?}");
}
