//! The shape `ARCHITECTURE.md` describes, checked:
//! - no circle of imports between the files of `lifecycle/src` (a file
//!   uses another when it names it through `crate::`, `super::`, `self::`
//!   or a child module, following `pub use` re-exports to the file that
//!   defines the item);
//! - every path `ARCHITECTURE.md` names exists.

#![allow(clippy::unwrap_used)] // test code: a panic is how a test reports failure

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use harness::workspace_root;

/// A source file's module path (`cluster/nodes/mod.rs` → `cluster::nodes`).
fn module_of(relative: &str) -> Vec<String> {
    let stem = relative.trim_end_matches(".rs");
    let mut parts: Vec<String> = stem.split('/').map(String::from).collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    parts
}

/// The source without comments, string literals and test modules.
fn code_only(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let mut chars = source.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            // A char literal ('x', '\'', '\u{..}'), not a lifetime ('a).
            '\'' => {
                let mut ahead = chars.clone();
                match (ahead.next(), ahead.next()) {
                    (Some('\\'), _) => {
                        chars.next();
                        chars.next();
                        for c in chars.by_ref() {
                            if c == '\'' {
                                break;
                            }
                        }
                    }
                    (Some(_), Some('\'')) => {
                        chars.next();
                        chars.next();
                    }
                    _ => out.push(c),
                }
            }
            '"' => {
                let mut escaped = false;
                for c in chars.by_ref() {
                    if escaped {
                        escaped = false;
                    } else if c == '\\' {
                        escaped = true;
                    } else if c == '"' {
                        break;
                    }
                }
                out.push_str("\"\"");
            }
            _ => out.push(c),
        }
    }
    match out.find("#[cfg(test)]") {
        Some(at)
            if out[at..]
                .trim_start_matches("#[cfg(test)]")
                .trim_start()
                .starts_with("mod ") =>
        {
            out[..at].to_string()
        }
        _ => out,
    }
}

/// `a::{b, c::{d as e}}` → `[a,b]`, `[a,c,d]`.
fn expand_use(tree: &str) -> Vec<Vec<String>> {
    fn rec(prefix: &[String], tree: &str, out: &mut Vec<Vec<String>>) {
        let tree = tree.trim();
        if tree.is_empty() {
            return;
        }
        let Some(open) = tree.find('{') else {
            let mut path = prefix.to_vec();
            let tree = tree.split(" as ").next().unwrap_or(tree);
            path.extend(
                tree.split("::")
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty()),
            );
            out.push(path);
            return;
        };
        let mut head = prefix.to_vec();
        head.extend(
            tree[..open]
                .split("::")
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty()),
        );
        let body = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
        let mut depth = 0;
        let mut start = 0;
        for (i, c) in body.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    rec(&head, &body[start..i], out);
                    start = i + 1;
                }
                _ => {}
            }
        }
        rec(&head, &body[start..], out);
    }
    let mut out = Vec::new();
    rec(&[], tree, &mut out);
    out
}

/// A path a file names: whether it is a `pub use`, and its segments.
type NamedPath = (bool, Vec<String>);

/// Paths a file names.
fn named_paths(module: &[String], code: &str, modules: &BTreeSet<Vec<String>>) -> Vec<NamedPath> {
    let mut out = Vec::new();
    for line_start in code.split(';') {
        let t = line_start.trim_start();
        let (public, rest) = if let Some(r) = t.strip_prefix("pub use ") {
            (true, r)
        } else if let Some(r) = t.strip_prefix("pub(crate) use ") {
            (true, r)
        } else if let Some(r) = t
            .split_once("\nuse ")
            .map(|(_, r)| r)
            .or_else(|| t.strip_prefix("use "))
        {
            (false, r)
        } else {
            continue;
        };
        for mut path in expand_use(rest) {
            // `use child::x` (2018 paths) names a child module.
            let mut child = module.to_vec();
            child.push(path[0].clone());
            if !matches!(path[0].as_str(), "crate" | "self" | "super") && modules.contains(&child) {
                path.insert(0, "self".to_string());
            }
            out.push((public, path));
        }
    }
    // Inline paths: `crate::a::b`, `super::x`, or `child::item`.
    let bytes = code.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let boundary = i == 0
            || !(bytes[i - 1].is_ascii_alphanumeric()
                || bytes[i - 1] == b'_'
                || bytes[i - 1] == b':');
        if boundary && (c.is_ascii_lowercase() || c == b'_') {
            let end = code[i..]
                .find(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '_' || ch == ':'))
                .map_or(code.len(), |e| i + e);
            let path: Vec<String> = code[i..end]
                .split("::")
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect();
            if path.len() > 1 {
                let first = path[0].as_str();
                let mut child = module.to_vec();
                child.push(first.to_string());
                if matches!(first, "crate" | "super" | "self") {
                    out.push((false, path));
                } else if modules.contains(&child) {
                    let mut p = vec!["self".to_string()];
                    p.extend(path);
                    out.push((false, p));
                }
            }
            i = end.max(i + 1);
        } else {
            i += 1;
        }
    }
    out
}

/// The edges `file → file` of `files` (relative path → source).
fn import_edges(files: &BTreeMap<String, String>) -> BTreeMap<String, BTreeSet<String>> {
    let modules: BTreeMap<Vec<String>, String> =
        files.keys().map(|f| (module_of(f), f.clone())).collect();
    let module_set: BTreeSet<Vec<String>> = modules.keys().cloned().collect();
    let named: BTreeMap<String, (Vec<String>, Vec<NamedPath>)> = files
        .iter()
        .map(|(f, src)| {
            let m = module_of(f);
            let paths = named_paths(&m, &code_only(src), &module_set);
            (f.clone(), (m, paths))
        })
        .collect();
    // `pub use` re-exports: (module, name) → module that defines it.
    let mut reexports: BTreeMap<(Vec<String>, String), Vec<String>> = BTreeMap::new();
    let resolve = |current: &[String],
                   path: &[String],
                   reexports: &BTreeMap<(Vec<String>, String), Vec<String>>|
     -> Option<Vec<String>> {
        let (mut base, rest): (Vec<String>, &[String]) = match path.first()?.as_str() {
            "crate" => (Vec::new(), &path[1..]),
            "self" => (current.to_vec(), &path[1..]),
            "super" => {
                let mut base = current.to_vec();
                let mut rest = path;
                while rest.first().map(String::as_str) == Some("super") {
                    base.pop();
                    rest = &rest[1..];
                }
                (base, rest)
            }
            _ => return None,
        };
        for seg in rest {
            let mut next = base.clone();
            next.push(seg.clone());
            if module_set.contains(&next) {
                base = next;
            } else {
                if let Some(target) = reexports.get(&(base.clone(), seg.clone())) {
                    return Some(target.clone());
                }
                break;
            }
        }
        Some(base)
    };
    for _ in 0..4 {
        for (module, paths) in named.values() {
            for (public, path) in paths {
                if *public
                    && let (Some(target), Some(name)) =
                        (resolve(module, path, &reexports), path.last())
                {
                    reexports.insert((module.clone(), name.clone()), target);
                }
            }
        }
    }
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (file, (module, paths)) in &named {
        for (_, path) in paths {
            if let Some(target) = resolve(module, path, &reexports).and_then(|m| modules.get(&m))
                && target != file
            {
                edges
                    .entry(file.clone())
                    .or_default()
                    .insert(target.clone());
            }
        }
    }
    edges
}

/// A cycle in `edges`, if there is one (as the list of files on it).
fn find_cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        marks: &mut BTreeMap<String, Mark>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        marks.insert(node.to_string(), Mark::Open);
        stack.push(node.to_string());
        for next in edges.get(node).into_iter().flatten() {
            match marks.get(next.as_str()) {
                Some(Mark::Open) => {
                    let at = stack.iter().position(|s| s == next).unwrap_or(0);
                    let mut cycle = stack[at..].to_vec();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                Some(Mark::Done) => {}
                None => {
                    if let Some(c) = visit(next, edges, marks, stack) {
                        return Some(c);
                    }
                }
            }
        }
        stack.pop();
        marks.insert(node.to_string(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for node in edges.keys() {
        if !marks.contains_key(node)
            && let Some(c) = visit(node, edges, &mut marks, &mut Vec::new())
        {
            return Some(c);
        }
    }
    None
}

fn library_files() -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path.strip_prefix(root).unwrap().display().to_string();
                out.insert(rel, std::fs::read_to_string(&path).unwrap());
            }
        }
    }
    let root = workspace_root().join("lifecycle/src");
    let mut out = BTreeMap::new();
    walk(&root, &root, &mut out);
    out
}

#[test]
fn no_file_of_the_library_imports_itself_through_others() {
    let files = library_files();
    let edges = import_edges(&files);
    let count: usize = edges.values().map(BTreeSet::len).sum();
    assert!(
        count > 200,
        "only {count} imports found: the scanner is broken"
    );
    assert!(
        edges["config.rs"]
            .iter()
            .all(|t| t.starts_with("values/") || t == "error/class.rs"),
        "config.rs must depend only on the value types: {:?}",
        edges["config.rs"]
    );
    assert!(
        !edges.contains_key("error/class.rs")
            && edges["values/mod.rs"]
                .iter()
                .all(|t| t.starts_with("values/")),
        "the leaves import nothing from the crate"
    );
    if let Some(cycle) = find_cycle(&edges) {
        panic!("import cycle: {}", cycle.join(" → "));
    }
}

#[test]
fn the_scanner_finds_cycles_through_children_super_and_re_exports() {
    let files: BTreeMap<String, String> = [
        ("lib.rs", "pub mod a;\npub mod b;\npub use a::Thing;\n"),
        (
            "a/mod.rs",
            "mod inner;\npub use inner::Thing;\nfn f() { inner::go(); }\n",
        ),
        ("a/inner.rs", "use crate::b::Other;\npub struct Thing;\n"),
        (
            "b.rs",
            "use crate::Thing;\npub struct Other;\n// use crate::nothing;\n",
        ),
    ]
    .into_iter()
    .map(|(f, s)| (f.to_string(), s.to_string()))
    .collect();
    let edges = import_edges(&files);
    assert!(edges["b.rs"].contains("a/inner.rs"), "{edges:?}");
    assert!(edges["a/mod.rs"].contains("a/inner.rs"), "{edges:?}");
    let cycle = find_cycle(&edges).expect("a → b → a");
    assert!(cycle.contains(&"b.rs".to_string()) && cycle.contains(&"a/inner.rs".to_string()));

    let acyclic: BTreeMap<String, String> = [
        ("lib.rs", "pub mod a;\npub mod b;\n"),
        (
            "a.rs",
            "use super::b::X;\n#[cfg(test)]\nmod tests { use super::*; use crate::a::y; }\n",
        ),
        (
            "b.rs",
            "pub struct X<'a>(&'a str); const S: &str = \"crate::a::z\"; const Q: [char; 2] = ['\"', '\\''];\n#[cfg(test)]\nmod tests { use crate::a::y; }\n",
        ),
    ]
    .into_iter()
    .map(|(f, s)| (f.to_string(), s.to_string()))
    .collect();
    assert_eq!(find_cycle(&import_edges(&acyclic)), None);
}

#[test]
fn every_path_the_architecture_names_exists() {
    let text = std::fs::read_to_string(workspace_root().join("ARCHITECTURE.md")).unwrap();
    let mut checked = 0;
    for (i, part) in text.split('`').enumerate() {
        // Inside backticks, a repository path: has a slash or a file ending.
        let looks_like_path = i % 2 == 1
            && !part.contains(' ')
            && (part.contains('/') || part.ends_with(".rs") || part.ends_with(".md"))
            && !part.starts_with('/')
            && !part.contains("://")
            && !part.contains('<');
        if !looks_like_path {
            continue;
        }
        let path = part.trim_end_matches('/');
        let candidates = [
            workspace_root().join(path),
            workspace_root().join("lifecycle/src").join(path),
        ];
        assert!(
            candidates.iter().any(|c| c.exists()),
            "ARCHITECTURE.md names `{part}`, which does not exist"
        );
        checked += 1;
    }
    assert!(checked >= 20, "only {checked} paths named");
}
