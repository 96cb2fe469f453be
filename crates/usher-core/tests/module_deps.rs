//! The crate's layering, checked on the source: every `crate::X` a
//! top-level module names (`src/X.rs` and `src/X/**`) must be an edge of
//! [`LAYERS`], and the edges must not form a cycle. So dependencies keep
//! running one way: nothing but `admin` and `run` reaches into `broker`,
//! and `broker` knows nothing of the admin API.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Each top-level module and the modules it may use.
const LAYERS: &[(&str, &[&str])] = &[
    ("ids", &[]),
    ("net", &[]),
    ("notify", &[]),
    ("routing", &[]),
    ("config", &["routing"]),
    ("extension", &["admission", "backend", "config", "ids", "notify", "session"]),
    ("proxy_protocol", &["config", "net"]),
    ("admission", &["config", "ids", "net", "notify"]),
    ("backend", &["config", "ids", "notify", "proxy_protocol"]),
    ("session", &["admission", "backend", "config", "ids", "net", "proxy_protocol", "routing"]),
    ("observe", &["admission", "backend", "config", "ids", "session"]),
    ("spawn", &["admission", "backend", "config", "ids"]),
    ("discovery", &["config"]),
    (
        "broker",
        &[
            "admission",
            "backend",
            "config",
            "discovery",
            "extension",
            "ids",
            "net",
            "notify",
            "observe",
            "proxy_protocol",
            "routing",
            "session",
            "spawn",
        ],
    ),
    ("admin", &["admission", "backend", "broker", "cluster", "config", "discovery", "ids", "observe", "spawn"]),
    ("cluster", &["broker", "config"]),
    ("run", &["admin", "broker", "cluster", "config", "extension", "observe"]),
];

/// A `crate::X` reference: who names whom, and where.
struct Edge {
    from: String,
    to: String,
    file: PathBuf,
}

#[test]
fn modules_depend_one_way_as_layered() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let modules = top_level_modules(&src);
    let allowed: BTreeMap<&str, BTreeSet<&str>> =
        LAYERS.iter().map(|(module, uses)| (*module, uses.iter().copied().collect())).collect();
    let mut problems = Vec::new();
    for module in &modules {
        if !allowed.contains_key(module.as_str()) {
            problems.push(format!("module {module} is missing from the layering table"));
        }
    }
    let edges = edges(&src, &modules);
    for edge in &edges {
        let ok = allowed.get(edge.from.as_str()).is_some_and(|uses| uses.contains(edge.to.as_str()));
        if !ok {
            problems.push(format!(
                "{} -> {} is not in the layering table ({})",
                edge.from,
                edge.to,
                edge.file.display()
            ));
        }
    }
    let graph: BTreeMap<&str, BTreeSet<&str>> = edges.iter().fold(BTreeMap::new(), |mut graph, e| {
        graph.entry(e.from.as_str()).or_default().insert(e.to.as_str());
        graph
    });
    if let Some(cycle) = find_cycle(&graph) {
        let files: Vec<String> = cycle
            .windows(2)
            .filter_map(|pair| edges.iter().find(|e| e.from == pair[0] && e.to == pair[1]))
            .map(|e| format!("{} -> {} ({})", e.from, e.to, e.file.display()))
            .collect();
        problems.push(format!("cycle {}: {}", cycle.join(" -> "), files.join(", ")));
    }
    assert!(problems.is_empty(), "module layering broken:\n{}", problems.join("\n"));
}

#[test]
fn references_are_found_in_paths_and_groups_but_not_in_comments() {
    let modules: BTreeSet<String> = ["a", "b", "c", "d"].into_iter().map(str::to_owned).collect();
    let text = "use crate::a::X;\n// crate::b\n/* crate::b */ let s = \"crate::b\";\n\
                use crate::{c::{Y, Z}, d};\nconst N: usize = crate::MAILBOX;\n";
    assert_eq!(references(text, &modules), ["a", "c", "d"].into_iter().map(str::to_owned).collect());
}

/// `src/X.rs` and `src/X/` name module X (`lib.rs` is the root).
fn top_level_modules(src: &Path) -> BTreeSet<String> {
    std::fs::read_dir(src)
        .expect("read src")
        .map(|entry| entry.expect("entry").path())
        .filter_map(|path| {
            let stem = path.file_stem()?.to_str()?.to_owned();
            let module = path.is_dir() || path.extension().is_some_and(|e| e == "rs");
            (module && stem != "lib").then_some(stem)
        })
        .collect()
}

fn edges(src: &Path, modules: &BTreeSet<String>) -> Vec<Edge> {
    let mut edges = Vec::new();
    for module in modules {
        let mut files = vec![src.join(format!("{module}.rs"))];
        rust_files(&src.join(module), &mut files);
        for file in files.into_iter().filter(|f| f.is_file()) {
            let text = std::fs::read_to_string(&file).expect("read source");
            for to in references(&text, modules) {
                if to != *module {
                    let shown = file.strip_prefix(src.parent().unwrap_or(src)).unwrap_or(&file).to_path_buf();
                    edges.push(Edge { from: module.clone(), to, file: shown });
                }
            }
        }
    }
    edges
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level modules `text` names as `crate::X` or `crate::{X, ...}`,
/// outside comments and string literals.
fn references(text: &str, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let code = strip_comments_and_strings(text);
    let mut found = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        let names = match rest.strip_prefix('{') {
            Some(group) => group_heads(group),
            None => vec![ident(rest)],
        };
        found.extend(names.into_iter().filter(|n| modules.contains(*n)).map(str::to_owned));
    }
    found
}

/// The first identifier of every item of a `{...}` group (its text after `{`).
fn group_heads(group: &str) -> Vec<&str> {
    let mut heads = vec![ident(group.trim_start())];
    let mut depth = 0;
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => heads.push(ident(group[i + 1..].trim_start())),
            _ => {}
        }
    }
    heads
}

fn ident(text: &str) -> &str {
    let end = text.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(text.len());
    &text[..end]
}

/// `text` with comments and the contents of string literals blanked out.
fn strip_comments_and_strings(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, chars.peek()) {
            ('/', Some('/')) => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            ('/', Some('*')) => {
                chars.next();
                let mut depth = 1;
                while depth > 0 {
                    match (chars.next(), chars.peek()) {
                        (Some('*'), Some('/')) => {
                            chars.next();
                            depth -= 1;
                        }
                        (Some('/'), Some('*')) => {
                            chars.next();
                            depth += 1;
                        }
                        (None, _) => break,
                        _ => {}
                    }
                }
                out.push(' ');
            }
            ('"', _) => {
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => {
                            chars.next();
                        }
                        '"' => break,
                        _ => {}
                    }
                }
                out.push_str("\"\"");
            }
            // A character literal of a quote must not open a string.
            ('\'', Some('"')) => {
                chars.next();
                chars.next();
            }
            _ => out.push(c),
        }
    }
    out
}

/// A cycle in `graph`, as the path of modules that closes it.
fn find_cycle<'a>(graph: &BTreeMap<&'a str, BTreeSet<&'a str>>) -> Option<Vec<&'a str>> {
    fn visit<'a>(
        node: &'a str,
        graph: &BTreeMap<&'a str, BTreeSet<&'a str>>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Option<Vec<&'a str>> {
        if let Some(start) = path.iter().position(|n| *n == node) {
            let mut cycle = path[start..].to_vec();
            cycle.push(node);
            return Some(cycle);
        }
        if !done.insert(node) {
            return None;
        }
        path.push(node);
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    graph.keys().find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}
