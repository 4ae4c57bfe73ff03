//! The house rules of gateway/src, checked on the sources: a module imports only from
//! its own layer or the layers below it (docs/architecture.md, "Layers"), and no two
//! top-level modules import each other, directly or around a circle. A new import
//! that runs back up fails here with the file and the arrow.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level modules by layer, lowest first. A module missing here fails the test:
/// every new module takes a place in the order.
const LAYERS: &[&[&str]] = &[
    // Leaves: pure functions and types, config, logging plumbing.
    &[
        "config",
        "net",
        "request_id",
        "headers",
        "routing",
        "access_line",
        "telemetry",
        "connections",
        "cli",
        "client",
        "traffic",
    ],
    // The shared store (Redis): what rate limits and certificates share through.
    &["store"],
    // What the snapshot is made of, and the services that keep it current.
    &[
        "ratelimit",
        "policy",
        "compress",
        "upstream",
        "tls",
        "metrics",
        "lifecycle",
    ],
    &["state"],
    // Client connections, below the HTTP layer and ignorant of it.
    &["connection"],
    &["proxy"],
    &["reload", "admin"],
    &["app"],
];

fn layer_of(top: &str) -> usize {
    LAYERS
        .iter()
        .position(|l| l.contains(&top))
        .unwrap_or_else(|| panic!("module `{top}` has no layer in tests/layers.rs"))
}

/// Module path (e.g. ["proxy", "ctx"]) of every source file.
fn modules(src: &Path) -> BTreeMap<Vec<String>, PathBuf> {
    let mut out = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().and_then(|e| e.to_str()) != Some("rs") {
                continue;
            }
            let rel = path.strip_prefix(src).unwrap().with_extension("");
            let mut segs: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if segs.last().map(String::as_str) == Some("mod") {
                segs.pop();
            }
            if segs == ["lib"] || segs == ["main"] {
                segs.clear();
            }
            out.insert(segs, path);
        }
    }
    out
}

/// The code of a file without its unit tests and comments.
fn code(text: &str) -> String {
    let body = text.split("#[cfg(test)]\nmod tests").next().unwrap_or(text);
    body.lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `a::{b, c::{d, e}}` -> `a::b`, `a::c::d`, `a::c::e`.
fn expand(tree: &str) -> Vec<String> {
    let tree = tree.trim();
    let Some(open) = tree.find('{') else {
        return vec![tree.split(" as ").next().unwrap_or("").trim().to_owned()];
    };
    let prefix = tree[..open].trim_end_matches("::");
    let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
    let (mut parts, mut depth, mut cur) = (Vec::new(), 0, String::new());
    for ch in inner.chars() {
        match ch {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(ch);
    }
    parts.push(cur);
    parts
        .iter()
        .filter(|p| !p.trim().is_empty())
        .flat_map(|p| expand(p))
        .map(|e| {
            if prefix.is_empty() {
                e
            } else {
                format!("{prefix}::{e}")
            }
        })
        .collect()
}

/// Every `crate::`/`super::` path a file names, in `use` items and inline.
fn paths(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    // `use` items start a line (after `pub`, `pub(crate)`...) and end at `;`.
    let mut offset = 0;
    for line in code.split_inclusive('\n') {
        let t = line.trim_start();
        let t = t
            .strip_prefix("pub ")
            .or_else(|| {
                t.split_once(") ")
                    .filter(|(v, _)| v.starts_with("pub("))
                    .map(|(_, r)| r)
            })
            .unwrap_or(t);
        if let Some(rest) = t.strip_prefix("use ") {
            let start = offset + (line.len() - rest.len());
            if let Some(end) = code[start..].find(';') {
                out.extend(expand(&code[start..start + end]));
            }
        }
        offset += line.len();
    }
    let bytes = code.as_bytes();
    for start in ["crate::", "super::"] {
        let mut from = 0;
        while let Some(i) = code[from..].find(start) {
            let at = from + i;
            from = at + start.len();
            if at > 0 && (bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_') {
                continue;
            }
            let end = code[at..]
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .map_or(code.len(), |e| at + e);
            out.push(code[at..end].to_owned());
        }
    }
    out
}

fn arrows() -> BTreeSet<(Vec<String>, Vec<String>)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mods = modules(&src);
    let known: BTreeSet<&Vec<String>> = mods.keys().collect();
    let mut edges = BTreeSet::new();
    for (module, file) in &mods {
        let is_dir = file.ends_with("mod.rs") || file.ends_with("lib.rs");
        for path in paths(&code(&std::fs::read_to_string(file).unwrap())) {
            let mut segs: Vec<&str> = path
                .split("::")
                .filter(|s| !s.is_empty() && *s != "self")
                .collect();
            let mut base: Vec<String> = match segs.first() {
                Some(&"crate") => {
                    segs.remove(0);
                    Vec::new()
                }
                Some(&"super") => {
                    let mut b = module.clone();
                    if !is_dir {
                        b.pop();
                    }
                    while segs.first() == Some(&"super") {
                        segs.remove(0);
                        b.pop();
                    }
                    b
                }
                _ => continue,
            };
            base.extend(segs.iter().map(|s| s.to_string()));
            let target = (1..=base.len())
                .rev()
                .map(|n| base[..n].to_vec())
                .find(|p| known.contains(p));
            if let Some(t) = target {
                if &t != module && !module.is_empty() {
                    edges.insert((module.clone(), t));
                }
            }
        }
    }
    edges
}

#[test]
fn no_import_runs_up_a_layer() {
    let edges = arrows();
    assert!(
        edges.len() > 50,
        "the scan found too few imports: {edges:?}"
    );
    let up: Vec<String> = edges
        .iter()
        .filter(|(a, b)| layer_of(&a[0]) < layer_of(&b[0]))
        .map(|(a, b)| format!("{} -> {}", a.join("/"), b.join("/")))
        .collect();
    assert!(up.is_empty(), "imports that run up a layer: {up:#?}");
}

#[test]
fn no_two_folders_import_each_other() {
    let mut adj: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (a, b) in arrows() {
        if a[0] != b[0] {
            adj.entry(a[0].clone()).or_default().insert(b[0].clone());
        }
    }
    let reaches = |from: &str, to: &str| {
        let (mut seen, mut stack) = (BTreeSet::new(), vec![from.to_owned()]);
        while let Some(x) = stack.pop() {
            for y in adj.get(&x).into_iter().flatten() {
                if y == to {
                    return true;
                }
                if seen.insert(y.clone()) {
                    stack.push(y.clone());
                }
            }
        }
        false
    };
    let circles: Vec<String> = adj
        .iter()
        .flat_map(|(a, bs)| bs.iter().map(move |b| (a, b)))
        .filter(|(a, b)| reaches(b, a))
        .map(|(a, b)| format!("{a} -> {b} -> ... -> {a}"))
        .collect();
    assert!(circles.is_empty(), "circles across folders: {circles:#?}");
}

#[test]
fn the_scan_sees_use_trees_and_relative_paths() {
    assert_eq!(
        expand("crate::{a::{b, c as d}, e}"),
        ["crate::a::b", "crate::a::c", "crate::e"]
    );
    let found = paths("use super::x::Y;\nfn f() { crate::z::w(); }\nfn reuse() {}");
    assert_eq!(found, ["super::x::Y", "crate::z::w", "super::x::Y"]);
}
