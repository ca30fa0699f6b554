//! From the scans of every file under `src/`: the resolved module references, the graph
//! between the top-level modules and, for every module, the graph between its children,
//! and the strongly connected components (cycles) of each graph.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use super::scan::{self, FileScan, RawRef};

pub type ModulePath = Vec<String>;

/// One import or path that makes an edge: where it is and what it names.
#[derive(Clone, Debug)]
pub struct Site {
    pub file: String,
    pub line: usize,
    pub written: String,
    /// The import (its line, or the comment lines right above its statement) says
    /// `cycle:` why this edge of a cycle is the simpler design.
    pub explained: bool,
}

/// A directed graph between the children of one module, each edge with its sites.
#[derive(Default, Debug)]
pub struct Graph {
    pub nodes: BTreeSet<String>,
    pub edges: BTreeMap<(String, String), Vec<Site>>,
}

/// Everything the tests assert on.
#[derive(Default, Debug)]
pub struct Crate {
    pub files_scanned: usize,
    pub test_files_skipped: usize,
    /// Keyed by the parent module: `[]` is the crate root, whose graph is the one between
    /// the top-level modules.
    pub graphs: BTreeMap<ModulePath, Graph>,
}

/// A file's module path from its place under `src/`: `a/b.rs` and `a/b/mod.rs` are
/// `a::b`; `lib.rs` is the root; `main.rs` (the binary) is called `main`.
pub fn module_of_file(relative: &Path) -> ModulePath {
    let mut parts: Vec<String> = relative
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().unwrap_or_default();
    let stem = last.trim_end_matches(".rs").to_string();
    if parts.is_empty() && stem == "lib" {
        return parts;
    }
    if stem != "mod" {
        parts.push(stem);
    }
    parts
}

/// Test-only by name: `tests.rs`, `*_tests.rs`, `test_support.rs`, `testing.rs`, or
/// anything under a `tests/` folder.
pub fn test_only_by_name(relative: &Path) -> bool {
    let name = relative
        .file_name()
        .map_or(String::new(), |n| n.to_string_lossy().into_owned());
    let in_tests_dir = relative
        .parent()
        .is_some_and(|dir| dir.iter().any(|part| part == "tests"));
    in_tests_dir
        || name == "tests.rs"
        || name.ends_with("_tests.rs")
        || name == "test_support.rs"
        || name == "testing.rs"
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .unwrap_or_else(|err| panic!("cannot list {}: {err}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

struct ScannedFile {
    relative: String,
    module: ModulePath,
    scan: FileScan,
    comments: BTreeMap<usize, String>,
}

/// Whether the import at `line` (statement starting at `statement_line`) carries a
/// `cycle:` comment: on that line, on the statement's first line, or in the comment
/// lines right above the statement.
fn explained(comments: &BTreeMap<usize, String>, line: usize, statement_line: usize) -> bool {
    let says = |l: usize| comments.get(&l).is_some_and(|c| c.contains("cycle:"));
    if says(line) || says(statement_line) {
        return true;
    }
    let mut above = statement_line.saturating_sub(1);
    while above > 0 && comments.contains_key(&above) {
        if says(above) {
            return true;
        }
        above -= 1;
    }
    false
}

fn resolve(r: &RawRef, known: &BTreeSet<ModulePath>, alias: &str) -> Option<ModulePath> {
    let first = r.path.first()?.as_str();
    let mut path = if first == "crate" || first == alias {
        r.path[1..].to_vec()
    } else if first == "super" {
        let ups = r.path.iter().take_while(|s| *s == "super").count();
        let mut base = r.from.get(..r.from.len().checked_sub(ups)?)?.to_vec();
        base.extend(r.path[ups..].iter().cloned());
        base
    } else if first == "self" {
        let mut base = r.from.clone();
        base.extend(r.path[1..].iter().cloned());
        base
    } else if r.in_use && known.contains(&[r.from.clone(), vec![first.to_string()]].concat()) {
        [r.from.clone(), r.path.clone()].concat()
    } else {
        return None;
    };
    path.retain(|s| s != "self");
    Some(path)
}

/// The module a resolved path lands in: its longest prefix that is a module, or for a
/// macro exported at the crate root, the module that defines it.
fn landing_module(
    path: &[String],
    known: &BTreeSet<ModulePath>,
    macros: &BTreeMap<String, ModulePath>,
) -> ModulePath {
    if let [name] = path
        && let Some(home) = macros.get(name)
    {
        return home.clone();
    }
    (0..=path.len())
        .rev()
        .map(|n| path[..n].to_vec())
        .find(|prefix| known.contains(prefix))
        .unwrap_or_default()
}

fn scan_all(src: &Path) -> (Vec<ScannedFile>, usize) {
    let mut paths = Vec::new();
    rust_files(src, &mut paths);
    let mut files = Vec::new();
    let mut skipped = 0;
    for path in paths {
        let relative = path.strip_prefix(src).expect("under src").to_path_buf();
        if test_only_by_name(&relative) {
            skipped += 1;
            continue;
        }
        let text = fs::read_to_string(&path)
            .unwrap_or_else(|err| panic!("cannot read {}: {err}", path.display()));
        let lexed = scan::lex(&text);
        let module = module_of_file(&relative);
        let alias = if module == ["main"] {
            "troika"
        } else {
            "crate"
        };
        let scan = scan::scan(&lexed, module.clone(), alias);
        files.push(ScannedFile {
            relative: format!("src/{}", relative.display()),
            module,
            scan,
            comments: lexed.comments,
        });
    }
    (files, skipped)
}

pub fn build(src: &Path) -> Crate {
    let (mut files, mut skipped) = scan_all(src);
    let test_modules: Vec<ModulePath> = files
        .iter()
        .flat_map(|f| f.scan.test_children.iter().cloned())
        .collect();
    let before = files.len();
    files.retain(|f| !f.scan.test_only && !test_modules.iter().any(|t| f.module.starts_with(t)));
    skipped += before - files.len();
    let mut known: BTreeSet<ModulePath> = files.iter().map(|f| f.module.clone()).collect();
    known.extend(
        files
            .iter()
            .flat_map(|f| f.scan.inline_modules.iter().cloned()),
    );
    let macros: BTreeMap<String, ModulePath> = files
        .iter()
        .flat_map(|f| {
            f.scan
                .exported_macros
                .iter()
                .map(|m| (m.clone(), f.module.clone()))
        })
        .collect();

    let mut krate = Crate {
        files_scanned: files.len(),
        test_files_skipped: skipped,
        ..Crate::default()
    };
    for file in &files {
        let alias = if file.module == ["main"] {
            "troika"
        } else {
            "crate"
        };
        for r in &file.scan.refs {
            let Some(path) = resolve(r, &known, alias) else {
                continue;
            };
            let to = landing_module(&path, &known, &macros);
            let common = r.from.iter().zip(&to).take_while(|(a, b)| a == b).count();
            if common == r.from.len() || common == to.len() {
                continue;
            }
            let parent = r.from[..common].to_vec();
            let (a, b) = (r.from[common].clone(), to[common].clone());
            let graph = krate.graphs.entry(parent).or_default();
            graph.nodes.insert(a.clone());
            graph.nodes.insert(b.clone());
            graph.edges.entry((a, b)).or_default().push(Site {
                file: file.relative.clone(),
                line: r.line,
                written: r.path.join("::"),
                explained: explained(&file.comments, r.line, r.statement_line),
            });
        }
    }
    for module in &known {
        if let Some((name, parent)) = module.split_last() {
            let graph = krate.graphs.entry(parent.to_vec()).or_default();
            graph.nodes.insert(name.clone());
        }
    }
    krate
}

/// The strongly connected components of more than one node (Tarjan), over the edges that
/// `keep` accepts. Each component is sorted; the list is sorted.
pub fn cycles(graph: &Graph, keep: impl Fn(&[Site]) -> bool) -> Vec<Vec<String>> {
    let nodes: Vec<&String> = graph.nodes.iter().collect();
    let index_of: BTreeMap<&String, usize> =
        nodes.iter().enumerate().map(|(i, n)| (*n, i)).collect();
    let mut next: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
    for ((a, b), sites) in &graph.edges {
        if keep(sites) {
            next[index_of[a]].push(index_of[b]);
        }
    }
    let mut tarjan = Tarjan {
        next: &next,
        index: vec![None; nodes.len()],
        low: vec![0; nodes.len()],
        on_stack: vec![false; nodes.len()],
        stack: Vec::new(),
        counter: 0,
        components: Vec::new(),
    };
    for v in 0..nodes.len() {
        if tarjan.index[v].is_none() {
            tarjan.visit(v);
        }
    }
    let mut out: Vec<Vec<String>> = tarjan
        .components
        .into_iter()
        .filter(|c| c.len() > 1)
        .map(|c| {
            let mut names: Vec<String> = c.into_iter().map(|i| nodes[i].clone()).collect();
            names.sort();
            names
        })
        .collect();
    out.sort();
    out
}

struct Tarjan<'a> {
    next: &'a [Vec<usize>],
    index: Vec<Option<usize>>,
    low: Vec<usize>,
    on_stack: Vec<bool>,
    stack: Vec<usize>,
    counter: usize,
    components: Vec<Vec<usize>>,
}

impl Tarjan<'_> {
    fn visit(&mut self, v: usize) {
        self.index[v] = Some(self.counter);
        self.low[v] = self.counter;
        self.counter += 1;
        self.stack.push(v);
        self.on_stack[v] = true;
        for &w in &self.next[v] {
            match self.index[w] {
                None => {
                    self.visit(w);
                    self.low[v] = self.low[v].min(self.low[w]);
                }
                Some(iw) if self.on_stack[w] => self.low[v] = self.low[v].min(iw),
                Some(_) => {}
            }
        }
        if Some(self.low[v]) == self.index[v] {
            let mut component = Vec::new();
            while let Some(w) = self.stack.pop() {
                self.on_stack[w] = false;
                component.push(w);
                if w == v {
                    break;
                }
            }
            self.components.push(component);
        }
    }
}
