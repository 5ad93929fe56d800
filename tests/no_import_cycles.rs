//! The modules of each crate form layers: no module imports a module that imports it back, directly or
//! around a longer loop. Read from the source text: every `crate::…` and `super::…` path outside comments
//! and test modules is an edge from the file's module to the module the path names. Edges are compared
//! between siblings (two files of one folder, or two folders of one crate): a module using its own parent or
//! child is how Rust nests modules, not a loop.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};

/// A module path inside a crate: `["ops", "conv2d", "direct"]`.
type Module = Vec<String>;

/// Every `.rs` file under `src`, with its module path.
fn modules(src: &Path) -> Vec<(Module, PathBuf)> {
    let mut found = Vec::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let relative = path.strip_prefix(src).unwrap().with_extension("");
            let mut module: Module = relative.iter().map(|s| s.to_string_lossy().into_owned()).collect();
            if matches!(module.last().map(String::as_str), Some("mod" | "lib")) {
                module.pop();
            }
            found.push((module, path));
        }
    }
    found.sort();
    found
}

/// The code of a file without comments, string contents and its inline `#[cfg(test)] mod tests`.
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => text,
    };
    let mut out = String::new();
    for line in text.lines() {
        let line = line.split("//").next().unwrap_or("");
        let mut in_string = false;
        for c in line.chars() {
            if c == '"' {
                in_string = !in_string;
            } else if !in_string {
                out.push(c);
            }
        }
        out.push('\n');
    }
    out
}

/// The paths a file's code names, as segments after `crate` (resolved from `super`): `use` groups
/// (`use crate::a::{b, c::D}`) expanded, and paths written inline in the code.
fn named_paths(module: &Module, code: &str) -> Vec<Module> {
    // `super` in a.rs or a/mod.rs of module [x, a] means [x].
    let base: Module = module.iter().take(module.len().saturating_sub(1)).cloned().collect();
    let mut paths = Vec::new();
    let bytes: Vec<char> = code.chars().collect();
    let mut i = 0;
    while i < bytes.len() {
        let rest: String = bytes[i..bytes.len().min(i + 7)].iter().collect();
        let start = (rest.starts_with("crate::") || rest.starts_with("super::"))
            && (i == 0 || !(bytes[i - 1].is_alphanumeric() || bytes[i - 1] == '_' || bytes[i - 1] == ':'));
        if !start {
            i += 1;
            continue;
        }
        let mut prefix: Module = if rest.starts_with("crate::") { Vec::new() } else { base.clone() };
        let mut j = i + 7;
        // Further `super::` steps up.
        while bytes[j..].iter().take(7).collect::<String>() == "super::" {
            prefix.pop();
            j += 7;
        }
        let (found, end) = expand(&bytes, j, &prefix);
        paths.extend(found);
        i = end.max(i + 1);
    }
    paths
}

/// The paths of a (possibly grouped) path tree starting at `at`, each prefixed by `prefix`; and where the
/// tree ends.
fn expand(chars: &[char], mut at: usize, prefix: &Module) -> (Vec<Module>, usize) {
    let mut segments = prefix.clone();
    loop {
        let ident: String = chars[at..].iter().take_while(|c| c.is_alphanumeric() || **c == '_').collect();
        if ident.is_empty() {
            if chars.get(at) == Some(&'{') {
                // A group: expand each comma-separated tree inside the braces.
                let mut out = Vec::new();
                at += 1;
                loop {
                    while chars.get(at).is_some_and(|c| c.is_whitespace() || *c == ',') {
                        at += 1;
                    }
                    if chars.get(at).is_none_or(|c| *c == '}') {
                        return (out, at + 1);
                    }
                    let (inner, end) = expand(chars, at, &segments);
                    out.extend(inner);
                    at = end;
                }
            }
            return (vec![segments], at);
        }
        if ident != "self" {
            segments.push(ident.clone());
        }
        at += ident.chars().count();
        if chars[at..].iter().take(2).collect::<String>() == "::" {
            at += 2;
        } else {
            // `as` renames and the rest of the statement do not change the path.
            return (vec![segments], at);
        }
    }
}

/// The import loops among sibling modules of the crate whose sources are in `src`, as "a → b → a (in x)".
fn loops(src: &Path) -> Vec<String> {
    let files = modules(src);
    let known: BTreeSet<Module> = files.iter().map(|(m, _)| m.clone()).collect();
    // parent module → (child → children it imports)
    let mut graphs: BTreeMap<Module, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for (module, path) in &files {
        let name = path.file_name().unwrap().to_string_lossy();
        if name == "tests.rs" {
            continue;
        }
        let text = std::fs::read_to_string(path).unwrap();
        for target in named_paths(module, &code(&text)) {
            // The longest prefix of the path that is a module.
            let Some(target) = (1..=target.len()).rev().map(|n| target[..n].to_vec()).find(|p| known.contains(p))
            else {
                continue;
            };
            let common = module.iter().zip(&target).take_while(|(a, b)| a == b).count();
            if common == module.len() || common == target.len() {
                continue; // itself, an ancestor or a descendant
            }
            let parent = module[..common].to_vec();
            let graph = graphs.entry(parent).or_default();
            graph.entry(module[common].clone()).or_default().insert(target[common].clone());
        }
    }
    let mut found = Vec::new();
    for (parent, graph) in &graphs {
        let place = if parent.is_empty() { "the crate".to_string() } else { parent.join("::") };
        let mut reported = BTreeSet::new();
        for start in graph.keys() {
            // The shortest path from start's imports back to start, breadth first.
            let mut back: BTreeMap<&String, &String> = BTreeMap::new();
            let mut queue = VecDeque::new();
            for next in &graph[start] {
                back.insert(next, start);
                queue.push_back(next);
            }
            while let Some(here) = queue.pop_front() {
                if here == start {
                    break;
                }
                for next in graph.get(here).into_iter().flatten() {
                    if !back.contains_key(next) {
                        back.insert(next, here);
                        queue.push_back(next);
                    }
                }
            }
            if !back.contains_key(start) {
                continue;
            }
            let mut cycle = vec![start.clone()];
            let mut at = back[start];
            while at != start {
                cycle.push(at.clone());
                at = back[at];
            }
            cycle.push(start.clone());
            cycle.reverse();
            let members: BTreeSet<String> = cycle.iter().cloned().collect();
            if reported.insert(members) {
                found.push(format!("{} (in {place})", cycle.join(" → ")));
            }
        }
    }
    found
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut all = Vec::new();
    for krate in ["autograd", "diffusion"] {
        all.extend(loops(&root.join(krate).join("src")).into_iter().map(|l| format!("{krate}: {l}")));
    }
    assert!(all.is_empty(), "import loops:\n{}", all.join("\n"));
}

/// The check itself: it finds a loop in a small tree that has one, and none once the loop is broken.
#[test]
fn the_check_finds_a_loop_it_is_shown() {
    let dir = std::env::temp_dir().join(format!("import-loops-{}", std::process::id()));
    let src = dir.join("src");
    std::fs::create_dir_all(src.join("ops")).unwrap();
    std::fs::write(src.join("lib.rs"), "pub mod a;\npub mod b;\npub mod ops;\n").unwrap();
    std::fs::write(src.join("a.rs"), "use crate::b::Thing; // crate::ops in a comment\n").unwrap();
    std::fs::write(src.join("b.rs"), "use crate::{ops::{x::F, y}, a::Other};\n").unwrap();
    std::fs::write(src.join("ops/mod.rs"), "mod x;\nmod y;\n").unwrap();
    std::fs::write(src.join("ops/x.rs"), "use super::y::G;\nfn f() { crate::a::g(); }\n").unwrap();
    std::fs::write(src.join("ops/y.rs"), "pub fn g() { super::x::F; }\n#[cfg(test)]\nmod tests { use crate::b; }\n")
        .unwrap();
    let found = loops(&src);
    assert!(found.contains(&"a → b → a (in the crate)".to_string()), "{found:?}");
    assert!(found.contains(&"x → y → x (in ops)".to_string()), "{found:?}");
    assert!(found.iter().any(|l| l.contains("ops") && l.contains("(in the crate)")), "b → ops → a → b: {found:?}");
    std::fs::write(src.join("b.rs"), "use crate::ops::x::F;\n").unwrap();
    std::fs::write(src.join("ops/y.rs"), "pub fn g() {}\n").unwrap();
    std::fs::write(src.join("ops/x.rs"), "use super::y::G;\n").unwrap();
    assert_eq!(loops(&src), Vec::<String>::new());
    std::fs::remove_dir_all(&dir).unwrap();
}
