//! The layer rule of `src/lib.rs`, checked on the source text.
//!
//! A small hand-written scanner (`layering/scan.rs`) reads every `.rs` file under `src/`
//! and finds each file's references to other modules: `use crate::…` (grouped
//! `use crate::{a::b, c}` and nested braces included), inline paths `crate::x::y`,
//! `super::…` resolved against the file's module path (and any inline `mod x { … }` it
//! sits in), `self::…`, `$crate::…`, the crate-root macros by the module that defines them,
//! and in `main.rs` (the binary, called `main` here) `troika::…`. A reference lands in the
//! longest prefix of its path that is a module; re-exports are not followed.
//!
//! Test code is not read: items under `#[cfg(test)]` (modules, functions, fields,
//! statements), the files of modules declared `#[cfg(test)] mod x;`, and the test-only
//! files by name: `tests.rs`, `*_tests.rs`, `test_support.rs`, `testing.rs` and anything
//! under a `tests/` folder.
//!
//! From the references it builds (a) the graph between the top-level modules of `src/`
//! and (b) for every module, the graph between its children (files and submodules); a
//! reference from `a::b::x` to `a::c::y` is the edge `b → c` in the graph of `a`. It
//! asserts:
//!
//! 1. every edge between top-level modules is allowed by `LAYER_RULE` below, which mirrors
//!    the rule written in `src/lib.rs`;
//! 2. no cycle among the top-level modules;
//! 3. no cycle among the children of any module, except through an edge all of whose
//!    imports carry a comment containing `cycle:` (on the import's line, or in the comment
//!    lines right above its statement) that says why the cycle is the simpler design.
//!
//! Each failure names the file and line of the offending import and the rule it breaks.
//! Run with `--nocapture` to see the counts.

#[path = "layering/graph.rs"]
mod graph;
#[path = "layering/scan.rs"]
mod scan;

use std::path::Path;

use graph::{Crate, Graph, Site};

/// Modules that any layer may use: plain shared types and small helpers with no upward
/// dependency. They may use each other (without cycles), and nothing else.
const LEAVES: &[&str] = &[
    "types",
    "console",
    "fatal",
    "private_files",
    "secrets",
    "clock",
    "poll",
];

/// Which top-level module may use which, besides the leaves; mirrors `src/lib.rs`. A
/// module missing from `src/` (such as `cli` before it lands) is tolerated.
const LAYER_RULE: &[(&str, &[&str])] = &[
    ("hw", &[]),
    ("io", &["hw"]),
    ("layout", &["io", "hw"]),
    ("ssd", &["io", "hw"]),
    ("meta", &["ssd", "layout", "io", "hw"]),
    ("cache", &["meta", "ssd", "layout", "io", "hw"]),
    ("stats", &["cache", "meta", "ssd", "layout", "io", "hw"]),
    ("target", &["cache", "meta", "ssd", "layout", "io", "hw"]),
    (
        "controller",
        &[
            "target", "stats", "cache", "meta", "ssd", "layout", "io", "hw",
        ],
    ),
    (
        "mgmt",
        &[
            "controller",
            "target",
            "stats",
            "cache",
            "meta",
            "ssd",
            "layout",
            "io",
            "hw",
        ],
    ),
    ("cli", &["mgmt"]),
    (
        "node",
        &[
            "mgmt",
            "controller",
            "target",
            "stats",
            "cache",
            "meta",
            "ssd",
            "layout",
            "io",
            "hw",
        ],
    ),
    (
        "main",
        &[
            "cli",
            "node",
            "mgmt",
            "controller",
            "target",
            "stats",
            "cache",
            "meta",
            "ssd",
            "layout",
            "io",
            "hw",
        ],
    ),
];

fn allowed(from: &str, to: &str) -> Result<(), String> {
    if LEAVES.contains(&to) {
        return Ok(());
    }
    if LEAVES.contains(&from) {
        return Err(format!("`{from}` is a leaf: it may use only other leaves"));
    }
    let Some((_, may)) = LAYER_RULE.iter().find(|(m, _)| *m == from) else {
        return Err(format!(
            "`{from}` has no place in the layer rule: add it to src/lib.rs and LAYER_RULE"
        ));
    };
    if may.contains(&to) {
        Ok(())
    } else {
        Err(format!(
            "`{from}` may use only {may:?} and the leaves, not `{to}`"
        ))
    }
}

fn crate_graphs() -> Crate {
    let krate = graph::build(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    assert!(
        krate.files_scanned > 100 && krate.test_files_skipped > 10,
        "the scanner found {} files and skipped {} test files under src/: it is not reading \
         the source tree",
        krate.files_scanned,
        krate.test_files_skipped
    );
    krate
}

fn describe_sites(sites: &[Site]) -> String {
    let mut shown: Vec<String> = sites
        .iter()
        .filter(|s| !s.explained)
        .take(4)
        .map(|s| format!("{}:{} ({})", s.file, s.line, s.written))
        .collect();
    let unexplained = sites.iter().filter(|s| !s.explained).count();
    if unexplained > shown.len() {
        shown.push(format!("and {} more", unexplained - shown.len()));
    }
    shown.join(", ")
}

fn unexplained(sites: &[Site]) -> bool {
    sites.iter().any(|s| !s.explained)
}

/// The cycles of one graph, each with its edges and where they are imported.
fn cycle_report(parent: &str, graph: &Graph, keep: fn(&[Site]) -> bool) -> Vec<String> {
    let mut out = Vec::new();
    for component in graph::cycles(graph, keep) {
        let mut text = format!("cycle among the children of `{parent}`: {component:?}");
        for ((a, b), sites) in &graph.edges {
            if component.contains(a) && component.contains(b) && keep(sites) {
                text += &format!("\n    {a} → {b}: {}", describe_sites(sites));
            }
        }
        out.push(text);
    }
    out
}

fn module_name(path: &[String]) -> String {
    if path.is_empty() {
        "crate".to_string()
    } else {
        format!("crate::{}", path.join("::"))
    }
}

#[test]
fn top_level_imports_follow_the_layer_rule() {
    let krate = crate_graphs();
    let root = &krate.graphs[&Vec::new()];
    assert!(
        root.edges.len() > 20,
        "too few edges between top-level modules: {root:?}"
    );
    let mut breaks = Vec::new();
    for ((from, to), sites) in &root.edges {
        if let Err(rule) = allowed(from, to) {
            for site in sites {
                breaks.push(format!(
                    "{}:{}: `{}` uses `{to}` ({}), which breaks the layer rule in src/lib.rs: {rule}",
                    site.file, site.line, from, site.written
                ));
            }
        }
    }
    println!("imports breaking the layer rule: {}", breaks.len());
    assert!(breaks.is_empty(), "{}", breaks.join("\n"));
}

#[test]
fn no_cycle_between_top_level_modules() {
    let krate = crate_graphs();
    let root = &krate.graphs[&Vec::new()];
    let cycles = cycle_report("crate", root, |_| true);
    println!("cycles between top-level modules: {}", cycles.len());
    assert!(
        cycles.is_empty(),
        "the top-level modules must not import each other in a cycle (layer rule in \
         src/lib.rs):\n{}",
        cycles.join("\n")
    );
}

#[test]
fn no_cycle_between_sibling_files() {
    let krate = crate_graphs();
    let mut cycles = Vec::new();
    let mut explained = 0;
    for (parent, graph) in krate.graphs.iter().filter(|(p, _)| !p.is_empty()) {
        cycles.extend(cycle_report(&module_name(parent), graph, unexplained));
        explained += graph::cycles(graph, |_| true).len();
    }
    println!(
        "cycles between sibling files: {} unexplained ({} counting the edges marked `cycle:`)",
        cycles.len(),
        explained
    );
    assert!(
        cycles.is_empty(),
        "files of one module must not import each other in a cycle unless an import of the \
         cycle carries a `cycle:` comment saying why:\n{}",
        cycles.join("\n")
    );
}

/// The checks themselves, on a made-up tree: an upward import, a cycle between two
/// layers, and a cycle between sibling files are each found; a `cycle:` comment excuses
/// only the sibling cycle it sits on.
#[test]
fn the_checks_catch_an_upward_import_and_cycles_on_a_made_up_tree() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    let write = |file: &str, text: &str| {
        let path = src.join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    write("lib.rs", "pub mod cache;\npub mod layout;\npub mod meta;\n");
    write(
        "cache/mod.rs",
        "mod a;\nmod b;\nuse crate::layout::Stripe;\npub struct Cache;\n",
    );
    write("cache/a.rs", "use super::b::B;\npub struct A;\n");
    write("cache/b.rs", "use super::a::A;\npub struct B;\n");
    write(
        "layout/mod.rs",
        "use crate::cache::Cache;\npub struct Stripe;\n",
    );
    write("meta/mod.rs", "mod c;\nmod d;\n");
    write(
        "meta/c.rs",
        "// cycle: the records and their rules, kept apart on purpose.\nuse super::d::D;\npub struct C;\n",
    );
    write("meta/d.rs", "use super::c::C;\npub struct D;\n");
    let krate = graph::build(src);

    let root = &krate.graphs[&Vec::new()];
    let upward = ("layout".to_string(), "cache".to_string());
    assert!(root.edges.contains_key(&upward), "{root:?}");
    assert!(allowed("layout", "cache").is_err());
    assert!(allowed("cache", "layout").is_ok());
    assert_eq!(cycle_report("crate", root, |_| true).len(), 1, "{root:?}");

    let cache = &krate.graphs[&vec!["cache".to_string()]];
    assert_eq!(
        cycle_report("crate::cache", cache, unexplained).len(),
        1,
        "{cache:?}"
    );
    let meta = &krate.graphs[&vec!["meta".to_string()]];
    assert!(
        cycle_report("crate::meta", meta, unexplained).is_empty(),
        "{meta:?}"
    );
    assert_eq!(graph::cycles(meta, |_| true).len(), 1, "{meta:?}");
}
