//! The layer rule of `ARCHITECTURE.md`, checked on the source: every module may use
//! modules of its own layer or below, never above, and no two files use each other,
//! directly or around a circle (a folder's `mod.rs` and its own files excepted).
//! References are read from the code outside `#[cfg(test)]` (tests may use fixtures of
//! any layer): `crate::a::b` paths, `use crate::{a, b}` groups and `super::` paths.
//! Commands do not use each other either: what two commands share is an operation in
//! `ops`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The layers, bottom first: the first segment of a module's path under `src/`.
const LAYERS: &[&[&str]] = &[
    &["base"],
    &["sandbox"],
    &["host"],
    &["proxy", "notify"],
    &["state"],
    &["render", "units"],
    &["txn"],
    &["cli"],
    &["ops"],
    &["cmd"],
];

fn layer_of(module: &str) -> Option<usize> {
    let top = module.split("::").next()?;
    LAYERS.iter().position(|l| l.contains(&top))
}

/// One source file: its module path and the code outside its tests.
struct Source {
    module: String,
    /// Whether it is a folder's `mod.rs`.
    is_dir_module: bool,
    code: String,
}

fn module_of(rel: &Path) -> (String, bool) {
    let mut parts: Vec<String> = rel
        .with_extension("")
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let is_dir_module = parts.last().is_some_and(|p| p == "mod");
    if is_dir_module {
        parts.pop();
    }
    (parts.join("::"), is_dir_module)
}

fn sources(root: &Path) -> Vec<Source> {
    let mut out = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for e in std::fs::read_dir(&dir).expect("read src") {
            let path = e.expect("entry").path();
            if path.is_dir() {
                todo.push(path);
            } else if path.extension().is_some_and(|x| x == "rs") {
                let rel = path.strip_prefix(root).expect("under src");
                let name = rel.file_name().and_then(|n| n.to_str()).unwrap_or_default();
                // The crate's root, and test modules kept in files of their own.
                if rel == Path::new("lib.rs")
                    || rel == Path::new("main.rs")
                    || name == "tests.rs"
                    || name.ends_with("_tests.rs")
                {
                    continue;
                }
                let (module, is_dir_module) = module_of(rel);
                let text = std::fs::read_to_string(&path).expect("read source");
                out.push(Source {
                    module,
                    is_dir_module,
                    code: without_tests(&text),
                });
            }
        }
    }
    out.sort_by(|a, b| a.module.cmp(&b.module));
    out
}

/// The text before the file's `#[cfg(test)]` module, without comment lines.
fn without_tests(text: &str) -> String {
    let end = text.find("#[cfg(test)]\nmod tests").unwrap_or(text.len());
    text[..end]
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The path words after `at` in `code`: `a::b::c` of `crate::a::b::c`.
fn path_after(code: &str, at: usize) -> Vec<String> {
    let rest = &code[at..];
    let end = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(rest.len());
    rest[..end]
        .split("::")
        .take_while(|w| !w.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The modules `source` refers to, as paths into `modules` (the longest prefix of each
/// reference that is a module).
fn references(source: &Source, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let code = &source.code;
    let parent = if source.is_dir_module {
        source.module.clone()
    } else {
        source
            .module
            .rsplit_once("::")
            .map_or(String::new(), |(p, _)| p.to_owned())
    };
    let mut paths: Vec<Vec<String>> = Vec::new();
    for (at, _) in code.match_indices("crate::") {
        let before = code[..at].chars().next_back();
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        if code[at + 7..].starts_with('{') {
            let group = &code[at + 8..];
            let group = &group[..group.find('}').unwrap_or(group.len())];
            for item in group.split(',') {
                paths.push(item.trim().split("::").map(str::to_owned).collect());
            }
        } else {
            paths.push(path_after(code, at + 7));
        }
    }
    for (at, _) in code.match_indices("super::") {
        let before = code[..at].chars().next_back();
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        let mut base: Vec<String> = parent
            .split("::")
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        let mut rest = path_after(code, at + 7);
        while rest.first().is_some_and(|w| w == "super") {
            rest.remove(0);
            base.pop();
        }
        base.extend(rest);
        paths.push(base);
    }
    paths
        .into_iter()
        .filter_map(|p| {
            (1..=p.len())
                .rev()
                .map(|n| p[..n].join("::"))
                .find(|m| modules.contains(m))
        })
        .filter(|m| *m != source.module)
        .collect()
}

/// `child` is `parent` or one of its descendants.
fn within(child: &str, parent: &str) -> bool {
    child == parent || child.starts_with(&format!("{parent}::"))
}

/// What breaks the rule in `sources`, one line each.
fn violations(sources: &[Source]) -> Vec<String> {
    let modules: BTreeSet<String> = sources.iter().map(|s| s.module.clone()).collect();
    let mut out = Vec::new();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for s in sources {
        let Some(layer) = layer_of(&s.module) else {
            out.push(format!(
                "{} is in no layer: add its folder to ARCHITECTURE.md and LAYERS",
                s.module
            ));
            continue;
        };
        for r in references(s, &modules) {
            // A folder's module and its own files may use each other.
            if within(&r, &s.module) || within(&s.module, &r) {
                continue;
            }
            match layer_of(&r) {
                Some(l) if l > layer => out.push(format!(
                    "{} ({}) uses {r} ({}), a layer above it",
                    s.module, LAYERS[layer][0], LAYERS[l][0]
                )),
                _ => {}
            }
            if s.module.starts_with("cmd::") && r.starts_with("cmd::") {
                out.push(format!(
                    "{} calls the command {r}: move what they share into ops",
                    s.module
                ));
            }
            graph.entry(s.module.clone()).or_default().insert(r);
        }
    }
    out.extend(circles(&graph));
    out
}

/// Each circle of `graph`, as `a -> b -> a`.
fn circles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let mut out = Vec::new();
    let mut done: BTreeSet<&str> = BTreeSet::new();
    for start in graph.keys() {
        let mut stack: Vec<(&str, Vec<&str>)> = vec![(start, vec![start])];
        while let Some((node, path)) = stack.pop() {
            for next in graph.get(node).into_iter().flatten() {
                if next == start {
                    let mut names = path.clone();
                    names.push(start);
                    out.push(format!("import circle: {}", names.join(" -> ")));
                } else if !path.contains(&next.as_str()) && !done.contains(next.as_str()) {
                    let mut p = path.clone();
                    p.push(next);
                    stack.push((next, p));
                }
            }
        }
        done.insert(start);
    }
    out
}

#[test]
fn every_module_uses_only_its_layer_and_below_without_circles() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let found = violations(&sources(&root));
    assert!(found.is_empty(), "{}", found.join("\n"));
}

/// The checker itself: a use upward, a circle between two files of a layer, a module in
/// no layer and a new command calling a command are each caught; a folder's module and
/// its files using each other, and test code, are not.
#[test]
fn the_layer_check_catches_what_it_should() {
    let src = |module: &str, code: &str| Source {
        module: module.to_owned(),
        is_dir_module: false,
        code: without_tests(code),
    };
    let found = violations(&[
        src("sandbox::settings", "use crate::host::podman;\n"),
        src("host::podman", "fn f() { crate::base::atomic::write(); }\n"),
        src("base::atomic", "use super::escape;\n"),
        src("base::escape", "use crate::base::atomic::write;\n"),
        src("gadgets::x", ""),
        src("cmd::status", "fn f() { super::enable::run(); }\n"),
        src("cmd::enable", ""),
        src(
            "state::mask",
            "use crate::state::{secrets};\n#[cfg(test)]\nmod tests {\n    use crate::cmd::status;\n}\n",
        ),
        src("state::secrets", "use crate::render::model;\n"),
        src("render::model", ""),
    ]);
    let joined = found.join("\n");
    for want in [
        "sandbox::settings (sandbox) uses host::podman (host), a layer above it",
        "import circle: base::atomic -> base::escape -> base::atomic",
        "gadgets::x is in no layer",
        "cmd::status calls the command cmd::enable",
        "state::secrets (state) uses render::model (render), a layer above it",
    ] {
        assert!(joined.contains(want), "missing {want:?} in:\n{joined}");
    }
    assert!(!joined.contains("state::mask (state) uses cmd"), "{joined}");
    assert_eq!(found.len(), 5, "{joined}");
}
