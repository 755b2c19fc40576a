//! The walls of the code map, read from the source: which crates each layer
//! may use, which layers it may call, and that the modules of a layer do not
//! import each other in a circle. docs/architecture.md states these
//! invariants; this is where they are checked.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// The layers from the bottom up; a layer may use the ones below it.
const FLOORS: &[&[&str]] = &[
    &["domain"],
    &["store", "log"],
    &["engine"],
    &["grpc"],
    &["server", "client"],
    &["telemetry"],
    &["cli"],
];

/// The crates a layer must not name.
fn forbidden() -> [(&'static str, Vec<&'static str>); 4] {
    [
        ("domain", [TONIC, PROST, SLED, CLAP, TOKIO].concat()),
        ("engine", [TONIC, PROST, SLED, CLAP].concat()),
        ("store", [TONIC, PROST, CLAP].concat()),
        ("log", [TONIC, PROST, SLED, CLAP].concat()),
    ]
}

/// The network stack: tonic and what it is built on.
const TONIC: &[&str] = &[
    "tonic",
    "tonic_health",
    "tonic_reflection",
    "tonic_types",
    "tonic_prost",
    "tower",
    "tower_http",
    "http",
];
/// Protocol buffers.
const PROST: &[&str] = &["prost", "prost_types"];
/// The embedded database.
const SLED: &[&str] = &["sled"];
/// The command line.
const CLAP: &[&str] = &["clap"];
/// The async runtime: the domain does no I/O.
const TOKIO: &[&str] = &["tokio", "tokio_stream", "tokio_util"];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file below `dir`, in a stable order.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// The layer's files: `src/<layer>.rs` or everything below `src/<layer>/`.
fn layer_files(layer: &str) -> Vec<PathBuf> {
    let dir = src().join(layer);
    if dir.is_dir() {
        rust_files(&dir)
    } else {
        vec![src().join(format!("{layer}.rs"))]
    }
}

/// The code of a file without comments and without the contents of string
/// literals, so that prose and messages never count as uses.
fn code(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap();
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
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
            '/' if chars.peek() == Some(&'*') => {
                let mut last = ' ';
                for c in chars.by_ref() {
                    if last == '*' && c == '/' {
                        break;
                    }
                    last = c;
                }
            }
            '"' => {
                out.push('"');
                let mut escaped = false;
                for c in chars.by_ref() {
                    if !escaped && c == '"' {
                        break;
                    }
                    escaped = !escaped && c == '\\';
                }
                out.push('"');
            }
            // A char literal such as '"' or '{'; lifetimes pass through.
            '\'' => {
                let rest: String = chars.clone().take(3).collect();
                if rest.starts_with('\\') {
                    for c in chars.by_ref() {
                        if c == '\'' {
                            break;
                        }
                    }
                } else if rest.chars().nth(1) == Some('\'') {
                    chars.next();
                    chars.next();
                } else {
                    out.push(c);
                }
            }
            _ => out.push(c),
        }
    }
    out
}

/// The paths the code names: every `a::b::c` run, with `use` groups such
/// as `a::{b, c::d}` expanded into `a::b` and `a::c::d`.
fn paths(code: &str) -> Vec<Vec<String>> {
    let tokens = tokenize(code);
    let mut found = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let starts_path = is_ident(&tokens[i])
            && tokens.get(i + 1).is_some_and(|t| t == "::")
            && (i == 0 || tokens[i - 1] != "::");
        if starts_path {
            let (end, mut expanded) = expand(&tokens, i);
            found.append(&mut expanded);
            i = end;
        } else {
            i += 1;
        }
    }
    found
}

/// Expands the path that starts at `tokens[start]`; returns where it ends.
fn expand(tokens: &[String], start: usize) -> (usize, Vec<Vec<String>>) {
    let mut prefix = Vec::new();
    let mut i = start;
    loop {
        match tokens.get(i) {
            Some(token) if is_ident(token) => {
                prefix.push(token.clone());
                i += 1;
            }
            Some(token) if token == "{" => {
                let mut all = Vec::new();
                i += 1;
                while i < tokens.len() && tokens[i] != "}" {
                    if tokens[i] == "," {
                        i += 1;
                        continue;
                    }
                    let (end, inner) = expand(tokens, i);
                    for path in inner {
                        all.push(prefix.iter().cloned().chain(path).collect());
                    }
                    i = end.max(i + 1);
                }
                return (i + 1, all);
            }
            _ => return (i, vec![prefix]),
        }
        if tokens.get(i).is_some_and(|t| t == "::") {
            i += 1;
        } else {
            return (i, vec![prefix]);
        }
    }
}

fn is_ident(token: &str) -> bool {
    token
        .chars()
        .next()
        .is_some_and(|c| c.is_alphabetic() || c == '_')
}

fn tokenize(code: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    let mut chars = code.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_alphanumeric() || c == '_' {
            let mut word = c.to_string();
            while let Some(&next) = chars.peek() {
                if !(next.is_alphanumeric() || next == '_') {
                    break;
                }
                word.push(next);
                chars.next();
            }
            tokens.push(word);
        } else if c == ':' && chars.peek() == Some(&':') {
            chars.next();
            tokens.push("::".to_owned());
        } else if !c.is_whitespace() {
            tokens.push(c.to_string());
        }
    }
    tokens
}

fn floor_of(layer: &str) -> usize {
    FLOORS
        .iter()
        .position(|floor| floor.contains(&layer))
        .unwrap_or_else(|| panic!("src/{layer} is on no floor of the code map"))
}

fn relative(path: &Path) -> String {
    path.strip_prefix(env!("CARGO_MANIFEST_DIR"))
        .unwrap()
        .display()
        .to_string()
}

#[test]
fn every_top_level_module_is_on_a_floor() {
    for entry in fs::read_dir(src()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_str().unwrap();
        if !["lib", "main"].contains(&name) {
            floor_of(name);
        }
    }
}

#[test]
fn layers_do_not_name_the_crates_of_other_layers() {
    let mut breaches = Vec::new();
    for (layer, crates) in forbidden() {
        for file in layer_files(layer) {
            for path in paths(&code(&file)) {
                if crates.contains(&path[0].as_str()) {
                    breaches.push(format!("{} names {}", relative(&file), path.join("::")));
                }
            }
        }
    }
    assert!(breaches.is_empty(), "{}", breaches.join("\n"));
}

#[test]
fn layers_call_only_the_layers_below_them() {
    let mut breaches = Vec::new();
    for floor in FLOORS {
        for layer in *floor {
            for file in layer_files(layer) {
                for path in paths(&code(&file)) {
                    let [root, module, ..] = path.as_slice() else {
                        continue;
                    };
                    if root != "crate" || module == layer {
                        continue;
                    }
                    if floor_of(module) >= floor_of(layer) {
                        breaches.push(format!(
                            "{} (floor {}) names crate::{module} (floor {})",
                            relative(&file),
                            floor_of(layer),
                            floor_of(module)
                        ));
                    }
                }
            }
        }
    }
    assert!(breaches.is_empty(), "{}", breaches.join("\n"));
}

/// The sibling modules each module of `layer` names, by module name.
fn sibling_imports(layer: &str) -> BTreeMap<String, BTreeSet<String>> {
    let dir = src().join(layer);
    let siblings: BTreeSet<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_dir() || path.extension().is_some_and(|ext| ext == "rs"))
        .map(|path| path.file_stem().unwrap().to_str().unwrap().to_owned())
        .filter(|name| name != "mod")
        .collect();
    let mut graph = BTreeMap::new();
    for file in rust_files(&dir) {
        let inside = file.strip_prefix(&dir).unwrap();
        let mut parts: Vec<String> = inside
            .with_extension("")
            .iter()
            .map(|part| part.to_str().unwrap().to_owned())
            .collect();
        if parts.last().is_some_and(|last| last == "mod") {
            parts.pop();
        }
        let Some(module) = parts.first().cloned() else {
            continue; // the layer's own mod.rs
        };
        // `super` in a file directly below the layer names a sibling; one
        // level deeper it names the module's own children.
        let depth = parts.len();
        for path in paths(&code(&file)) {
            let named = match path.as_slice() {
                [root, layer_name, name, ..] if root == "crate" && layer_name == layer => name,
                [root, name, ..] if root == "super" && depth == 1 => name,
                [root, up, name, ..] if root == "super" && up == "super" && depth == 2 => name,
                _ => continue,
            };
            if siblings.contains(named) && *named != module {
                graph
                    .entry(module.clone())
                    .or_insert_with(BTreeSet::new)
                    .insert(named.clone());
            }
        }
    }
    graph
}

/// A circle in `graph`, if there is one.
fn circle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        trail: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = trail.iter().position(|seen| seen == node) {
            let mut found = trail[at..].to_vec();
            found.push(node.to_owned());
            return Some(found);
        }
        if done.contains(node) {
            return None;
        }
        trail.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(found) = visit(next, graph, trail, done) {
                return Some(found);
            }
        }
        trail.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}

#[test]
fn the_modules_of_a_layer_import_each_other_in_no_circle() {
    for layer in ["domain", "store", "engine", "grpc", "server", "client"] {
        if let Some(found) = circle(&sibling_imports(layer)) {
            panic!("src/{layer}: {}", found.join(" → "));
        }
    }
}

#[test]
fn the_checks_see_what_they_look_for() {
    let sample = r#"
        // use sled::Db; in a comment
        use crate::{domain::Error, engine::{self, Engine}};
        let text = "tonic::Status in a string";
        #[derive(clap::ValueEnum)]
        let c = '"'; let d = '{';
        super::frame::Frame::new();
    "#;
    let file = std::env::temp_dir().join(format!("walls-{}.rs", std::process::id()));
    fs::write(&file, sample).unwrap();
    let found: BTreeSet<String> = paths(&code(&file)).iter().map(|p| p.join("::")).collect();
    fs::remove_file(&file).unwrap();
    let expected: BTreeSet<String> = [
        "crate::domain::Error",
        "crate::engine::self",
        "crate::engine::Engine",
        "clap::ValueEnum",
        "super::frame::Frame::new",
    ]
    .map(str::to_owned)
    .into();
    assert_eq!(found, expected);

    let mut graph = BTreeMap::new();
    graph.insert("frame".to_owned(), BTreeSet::from(["select".to_owned()]));
    graph.insert("select".to_owned(), BTreeSet::from(["frame".to_owned()]));
    assert_eq!(
        circle(&graph),
        Some(vec![
            "frame".to_owned(),
            "select".to_owned(),
            "frame".to_owned()
        ])
    );
}
