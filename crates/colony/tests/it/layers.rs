//! The runtime's layers hold: every `crate::…` path of each module of `colony` names a
//! module that the table "Modules of `colony`" in ARCHITECTURE.md lets it use, and two
//! modules use each other only where that page says why.
//!
//! The table is the rule: change the code or the table (with a reason), never this test.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Graph = BTreeMap<String, BTreeSet<String>>;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The "may use" column of the module table, by module.
fn rules(architecture: &str) -> Graph {
    let section = architecture
        .split("\n## ")
        .find(|s| s.starts_with("Modules of `colony`"))
        .expect("ARCHITECTURE.md has a section \"Modules of `colony`\"");
    let mut lines = section.lines().filter(|l| l.starts_with('|'));
    let header: Vec<&str> = lines.next().expect("a table").split('|').collect();
    let column = header
        .iter()
        .position(|h| h.trim() == "may use")
        .expect("the table has a column \"may use\"");
    let mut rules = Graph::new();
    for line in lines.filter(|l| !l.starts_with("|--") && !l.starts_with("|-")) {
        let cells: Vec<&str> = line.split('|').collect();
        let module = ticked(cells[1]).into_iter().next().expect("a module name");
        let allowed = cells.get(column).map(|c| ticked(c)).unwrap_or_default();
        rules.insert(module, allowed.into_iter().collect());
    }
    rules
}

/// The words in backticks in `cell`.
fn ticked(cell: &str) -> Vec<String> {
    cell.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

/// The modules each module of `src` uses through `crate::` (and `super::` at the top).
fn imports(src: &Path) -> Graph {
    let mut graph = Graph::new();
    let mut files = Vec::new();
    collect(src, &mut files);
    for file in files {
        let rel = file.strip_prefix(src).expect("under src");
        let parts: Vec<String> = rel
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        if parts == ["lib.rs"] || parts.last().is_some_and(|p| p == "tests.rs") {
            continue;
        }
        let module = parts[0].trim_end_matches(".rs").to_owned();
        let top = parts.len() == 1 || (parts.len() == 2 && parts[1] == "mod.rs");
        let text = std::fs::read_to_string(&file).expect("readable");
        let code = without_tests_and_comments(&text);
        let uses = graph.entry(module.clone()).or_default();
        for path in paths(&code, "crate::") {
            uses.insert(path);
        }
        if top {
            for path in paths(&code, "super::") {
                uses.insert(path);
            }
        }
        uses.remove(&module);
    }
    // What the crate root re-exports counts as the module it comes from.
    for uses in graph.values_mut() {
        let named: Vec<String> = uses.iter().cloned().collect();
        for name in named {
            let real = match name.as_str() {
                "Result" | "Error" | "CallError" | "ServiceError" | "ErrorKind" | "FailedCall"
                | "HttpError" => "error",
                "main" => "app",
                "microservice" | "self" => "",
                _ => continue,
            };
            uses.remove(&name);
            if !real.is_empty() {
                uses.insert(real.to_owned());
            }
        }
    }
    graph
}

fn collect(dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("a directory") {
        let path = entry.expect("an entry").path();
        if path.is_dir() {
            collect(&path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
}

/// The code of a file without its inline test module and without comments (doc links do
/// not make a dependency).
fn without_tests_and_comments(text: &str) -> String {
    let code = match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => text,
    };
    code.lines()
        .map(|line| match line.trim_start() {
            l if l.starts_with("//") => "",
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The first segment of every path that starts with `prefix` (`crate::a::b`, and each
/// branch of `crate::{a::b, c}`).
fn paths(code: &str, prefix: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find(prefix) {
        let before = rest[..at].chars().next_back();
        rest = &rest[at + prefix.len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 1;
            let mut branch = String::new();
            let mut branches = Vec::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    _ => {}
                }
                if depth == 0 {
                    break;
                }
                if depth == 1 && c == ',' {
                    branches.push(std::mem::take(&mut branch));
                } else {
                    branch.push(c);
                }
            }
            branches.push(branch);
            found.extend(branches.iter().filter_map(|b| first_segment(b.trim())));
        } else {
            found.extend(first_segment(rest));
        }
    }
    found
}

fn first_segment(path: &str) -> Option<String> {
    let name: String = path
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    (!name.is_empty()).then_some(name)
}

#[test]
fn every_import_is_one_the_architecture_allows() {
    let architecture =
        std::fs::read_to_string(root().join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    let rules = rules(&architecture);
    let graph = imports(&root().join("crates/colony/src"));
    let mut broken = Vec::new();
    for (module, uses) in &graph {
        let Some(allowed) = rules.get(module) else {
            broken.push(format!("`{module}` has no row in the table"));
            continue;
        };
        for used in uses.difference(allowed) {
            broken.push(format!(
                "`{module}` uses `{used}`, which its row does not allow"
            ));
        }
    }
    for module in rules.keys() {
        if !graph.contains_key(module) {
            broken.push(format!(
                "the table has a row for `{module}`, which is no module"
            ));
        }
    }
    assert!(
        broken.is_empty(),
        "the module rules of ARCHITECTURE.md (\"Modules of `colony`\") are broken:\n  {}\n\
         Move the code to a module that may use what it needs, or change the table and say why.",
        broken.join("\n  ")
    );
}

#[test]
fn modules_use_each_other_only_where_the_architecture_says_why() {
    let architecture =
        std::fs::read_to_string(root().join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    let rules = rules(&architecture);
    // Every loop of the table's graph, found as the strongly connected components.
    let mut loops = Vec::new();
    for component in components(&rules) {
        if component.len() < 2 {
            continue;
        }
        let named = component
            .iter()
            .map(|m| format!("`{m}`"))
            .collect::<Vec<_>>()
            .join(" ↔ ");
        if !architecture.contains(&format!("**Loop: {named}.**")) {
            loops.push(named);
        }
    }
    assert!(
        loops.is_empty(),
        "the module table lets these modules use each other in a loop, and ARCHITECTURE.md \
         does not say why (a line with **Loop: `a` ↔ `b`.** and the reason): {}",
        loops.join("; ")
    );
}

/// Tarjan's strongly connected components, each sorted, members in name order.
fn components(graph: &Graph) -> Vec<Vec<String>> {
    struct State<'a> {
        graph: &'a Graph,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        let i = s.index.len();
        s.index.insert(v, i);
        s.low.insert(v, i);
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in s.graph.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !s.graph.contains_key(w) {
                continue;
            }
            if !s.index.contains_key(w) {
                visit(s, w);
                let low = s.low[v].min(s.low[w]);
                s.low.insert(v, low);
            } else if s.on_stack.contains(w) {
                let low = s.low[v].min(s.index[w]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.push(w.to_owned());
                if w == v {
                    break;
                }
            }
            component.sort();
            s.out.push(component);
        }
    }
    let mut state = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !state.index.contains_key(v.as_str()) {
            visit(&mut state, v);
        }
    }
    state.out
}

#[test]
fn the_path_reader_sees_groups_and_ignores_comments() {
    let code = without_tests_and_comments(
        "use crate::{a::X, b, c::{d, e}};\n// crate::nope\nfn f() { crate::g::h(); x_crate::no(); }\n",
    );
    let mut found = paths(&code, "crate::");
    found.sort();
    assert_eq!(found, ["a", "b", "c", "g"]);
}
