//! The architecture, checked: reads `src/` and fails on a circle between top-level modules, or
//! on an import that breaks the layer order written in `docs/architecture.md`.
//!
//! A module may import only modules of lower layers. Test code (`tests.rs`, `*_tests.rs`,
//! `#[cfg(test)]` items) may import anything: the scenario tests start the whole controller.
//! Comments (and so doc links) are not imports. `cargo test --test architecture -- --ignored
//! --nocapture` prints the import graph as a Mermaid diagram (the picture in the doc).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// An import of another top-level module: where it is written, and what it names.
#[derive(Debug, Clone)]
struct Import {
    file: PathBuf,
    line: usize,
    to: String,
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The layers of `docs/architecture.md`'s table (between `<!-- layers -->` and
/// `<!-- /layers -->`): module name → layer number.
fn written_layers() -> BTreeMap<String, u32> {
    let doc = std::fs::read_to_string(root().join("docs/architecture.md")).expect("the doc");
    let start = doc
        .find("<!-- layers -->")
        .expect("a <!-- layers --> marker");
    let end = doc
        .find("<!-- /layers -->")
        .expect("a <!-- /layers --> marker");
    let mut layers = BTreeMap::new();
    for row in doc[start..end].lines().filter(|l| l.starts_with('|')) {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let Some(Ok(n)) = cells.get(1).map(|c| c.parse::<u32>()) else {
            continue; // the header and its rule
        };
        for name in cells[2].split('`').skip(1).step_by(2) {
            let before = layers.insert(name.to_string(), n);
            assert!(before.is_none(), "`{name}` is in two layers of the table");
        }
    }
    assert!(!layers.is_empty(), "no layer rows between the markers");
    layers
}

/// The top-level modules, as `src/lib.rs` declares them.
fn modules() -> BTreeSet<String> {
    let lib = std::fs::read_to_string(root().join("src/lib.rs")).expect("lib.rs");
    lib.lines()
        .filter_map(|l| l.trim().strip_prefix("pub mod "))
        .map(|l| l.trim_end_matches(';').to_string())
        .collect()
}

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("readable src")
        .map(|e| e.expect("entry").path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// The module path of a file below `src/` (`reconcile/plan.rs` → `["reconcile", "plan"]`);
/// `None` for the crate root and the binaries.
fn module_path(rel: &Path) -> Option<Vec<String>> {
    let parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let first = parts.first()?;
    if first == "bin" || first == "lib.rs" || first == "main.rs" {
        return None;
    }
    let mut path: Vec<String> = parts
        .iter()
        .map(|p| p.trim_end_matches(".rs").to_string())
        .collect();
    if path.last().is_some_and(|l| l == "mod") {
        path.pop();
    }
    Some(path)
}

fn is_test_file(rel: &Path) -> bool {
    let name = rel.file_name().unwrap_or_default().to_string_lossy();
    name == "tests.rs" || name.ends_with("_tests.rs")
}

fn ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// The source with comments, strings and character literals blanked (line breaks kept, so line
/// numbers still hold), and anything else that is not ASCII made a space.
fn code_only(src: &str) -> String {
    let b: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    // Keeps the line breaks of a skipped stretch.
    let blank = |out: &mut String, from: usize, to: usize| {
        for c in &b[from..to.min(b.len())] {
            if *c == '\n' {
                out.push('\n');
            }
        }
    };
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < b.len() && b[i] != '\n' {
                i += 1;
            }
            continue;
        }
        if c == '/' && next == Some('*') {
            let (start, mut depth) = (i, 0);
            while i < b.len() {
                if b[i] == '/' && b.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if b[i] == '*' && b.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            blank(&mut out, start, i);
            continue;
        }
        let after_ident = out.chars().last().is_some_and(ident_char);
        if !after_ident && (c == 'r' || (c == 'b' && next == Some('r'))) {
            let mut j = i + if c == 'b' { 2 } else { 1 };
            let mut hashes = 0;
            while b.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if b.get(j) == Some(&'"') {
                let start = i;
                j += 1;
                while j < b.len() {
                    if b[j] == '"' && (0..hashes).all(|k| b.get(j + 1 + k) == Some(&'#')) {
                        j += 1 + hashes;
                        break;
                    }
                    j += 1;
                }
                out.push_str("\"\"");
                blank(&mut out, start, j);
                i = j;
                continue;
            }
        }
        if c == '"' {
            let start = i;
            i += 1;
            while i < b.len() && b[i] != '"' {
                if b[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push_str("\"\"");
            blank(&mut out, start, i);
            continue;
        }
        if c == '\'' {
            if next == Some('\\') {
                let mut j = i + 2;
                while j < b.len() && b[j] != '\'' {
                    j += 1;
                }
                i = j + 1;
                out.push_str("' '");
                continue;
            }
            if b.get(i + 2) == Some(&'\'') {
                i += 3;
                out.push_str("' '");
                continue;
            }
            // A lifetime: kept as it is.
        }
        out.push(if c.is_ascii() { c } else { ' ' });
        i += 1;
    }
    out
}

/// `code` (ASCII, as [`code_only`] leaves it) with every `#[cfg(test)]` item blanked (line
/// breaks kept).
fn without_test_items(code: &str) -> String {
    const MARK: &str = "#[cfg(test)]";
    let mut b = code.as_bytes().to_vec();
    let mut from = 0;
    while let Some(start) = code[from..].find(MARK).map(|k| from + k) {
        let mut i = start + MARK.len();
        let skip_ws = |i: &mut usize, b: &[u8]| {
            while *i < b.len() && b[*i].is_ascii_whitespace() {
                *i += 1;
            }
        };
        skip_ws(&mut i, &b);
        // Further attributes of the same item.
        while b.get(i) == Some(&b'#') {
            let mut depth = 0;
            while i < b.len() {
                match b[i] {
                    b'[' => depth += 1,
                    b']' => {
                        depth -= 1;
                        if depth == 0 {
                            i += 1;
                            break;
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
            skip_ws(&mut i, &b);
        }
        // The item: up to its `;`, or through its `{ ... }`.
        while i < b.len() && b[i] != b';' && b[i] != b'{' {
            i += 1;
        }
        if b.get(i) == Some(&b'{') {
            let mut depth = 0;
            while i < b.len() {
                match b[i] {
                    b'{' => depth += 1,
                    b'}' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
        }
        let end = (i + 1).min(b.len());
        for c in &mut b[start..end] {
            if *c != b'\n' {
                *c = b' ';
            }
        }
        from = end;
    }
    String::from_utf8(b).expect("ASCII")
}

/// The names a path starting at `rest` reaches at its first segment: `watch` for
/// `watch::store`, `a` and `b` for `{a::x, b}`.
fn first_segments(rest: &str) -> Vec<String> {
    let rest = rest.trim_start();
    if let Some(group) = rest.strip_prefix('{') {
        let mut depth = 0;
        let mut items = vec![String::new()];
        for c in group.chars() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => break,
                '}' => depth -= 1,
                ',' if depth == 0 => items.push(String::new()),
                _ => {}
            }
            if depth > 0 || (c != ',' && c != '{') {
                items.last_mut().expect("one").push(c);
            }
        }
        items
            .iter()
            .filter_map(|i| {
                let name: String = i.trim().chars().take_while(|c| ident_char(*c)).collect();
                (!name.is_empty()).then_some(name)
            })
            .collect()
    } else {
        let name: String = rest.chars().take_while(|c| ident_char(*c)).collect();
        if name.is_empty() {
            Vec::new()
        } else {
            vec![name]
        }
    }
}

/// Every import of another top-level module, by importing module.
fn imports() -> BTreeMap<String, Vec<Import>> {
    let modules = modules();
    let src = root().join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut out: BTreeMap<String, Vec<Import>> = BTreeMap::new();
    for file in files {
        let rel = file.strip_prefix(&src).expect("below src").to_path_buf();
        let Some(path) = module_path(&rel) else {
            continue;
        };
        if is_test_file(&rel) {
            continue;
        }
        let me = path[0].clone();
        let text = std::fs::read_to_string(&file).expect("readable");
        let code = without_test_items(&code_only(&text));
        for (n, line) in code.lines().enumerate() {
            let mut found = Vec::new();
            for (at, _) in line.match_indices("crate::") {
                let before = line[..at].chars().last();
                if before.is_some_and(|c| ident_char(c) || c == ':' || c == '$') {
                    continue;
                }
                found.extend(first_segments(&line[at + "crate::".len()..]));
            }
            // `super::` that climbs to the crate root names a top-level module.
            let supers = "super::".repeat(path.len());
            for (at, _) in line.match_indices(&supers) {
                let before = line[..at].chars().last();
                if before.is_some_and(|c| ident_char(c) || c == ':') {
                    continue;
                }
                let rest = &line[at + supers.len()..];
                if !rest.starts_with("super::") {
                    found.extend(first_segments(rest));
                }
            }
            for to in found {
                if to != me && modules.contains(&to) {
                    out.entry(me.clone()).or_default().push(Import {
                        file: Path::new("src").join(&rel),
                        line: n + 1,
                        to,
                    });
                }
            }
        }
        out.entry(me).or_default();
    }
    out
}

/// Module → the modules it imports.
fn graph(imports: &BTreeMap<String, Vec<Import>>) -> BTreeMap<String, BTreeSet<String>> {
    imports
        .iter()
        .map(|(m, list)| (m.clone(), list.iter().map(|i| i.to.clone()).collect()))
        .collect()
}

/// The circles of `graph` (strongly connected components of more than one module), each as
/// a path that closes on its start.
fn circles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    let reaches = |from: &str, to: &str| -> Option<Vec<String>> {
        // Breadth-first, so the path shown is a shortest one.
        let mut prev: BTreeMap<String, String> = BTreeMap::new();
        let mut queue = std::collections::VecDeque::from([from.to_string()]);
        while let Some(m) = queue.pop_front() {
            for n in graph.get(&m).into_iter().flatten() {
                if n == to {
                    let mut path = vec![to.to_string(), m.clone()];
                    let mut at = m.clone();
                    while let Some(p) = prev.get(&at) {
                        path.push(p.clone());
                        at = p.clone();
                    }
                    path.reverse();
                    return Some(path);
                }
                if n != from && !prev.contains_key(n) {
                    prev.insert(n.clone(), m.clone());
                    queue.push_back(n.clone());
                }
            }
        }
        None
    };
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut out = Vec::new();
    for m in graph.keys() {
        if seen.contains(m) {
            continue;
        }
        if let Some(path) = reaches(m, m) {
            seen.extend(path.iter().cloned());
            out.push(path);
        }
    }
    out
}

#[test]
fn the_top_level_modules_import_one_another_without_a_circle() {
    let imports = imports();
    let found = circles(&graph(&imports));
    let mut report = String::new();
    for circle in &found {
        report.push_str(&format!("circle: {}\n", circle.join(" → ")));
        for pair in circle.windows(2) {
            if let Some(i) = imports[&pair[0]].iter().find(|i| i.to == pair[1]) {
                report.push_str(&format!(
                    "  {}:{}: {} imports {}\n",
                    i.file.display(),
                    i.line,
                    pair[0],
                    pair[1]
                ));
            }
        }
    }
    assert!(found.is_empty(), "{report}");
}

#[test]
fn every_import_runs_down_the_written_layers() {
    let layers = written_layers();
    let modules = modules();
    let unplaced: Vec<&String> = modules
        .iter()
        .filter(|m| !layers.contains_key(*m))
        .collect();
    assert!(
        unplaced.is_empty(),
        "modules of src/lib.rs missing from the layer table of docs/architecture.md: {unplaced:?}"
    );
    let gone: Vec<&String> = layers.keys().filter(|m| !modules.contains(*m)).collect();
    assert!(
        gone.is_empty(),
        "the layer table of docs/architecture.md names modules src/lib.rs does not have: {gone:?}"
    );
    let mut report = String::new();
    for (from, list) in imports() {
        for i in list {
            let (a, b) = (layers[&from], layers[&i.to]);
            if b >= a {
                report.push_str(&format!(
                    "{}:{}: `{from}` (layer {a}) imports `{}` (layer {b}): a module may import \
                     only lower layers; hand it a narrow handle or a trait defined below it\n",
                    i.file.display(),
                    i.line,
                    i.to
                ));
            }
        }
    }
    assert!(report.is_empty(), "{report}");
}

#[test]
fn the_layout_of_lib_rs_names_every_module_and_every_module_root_says_what_it_is() {
    let lib = std::fs::read_to_string(root().join("src/lib.rs")).expect("lib.rs");
    let layout = &lib[lib.find("# Layout").expect("a # Layout section")..];
    let mut problems = Vec::new();
    for m in modules() {
        if !layout.contains(&format!("[`{m}`]")) {
            problems.push(format!("src/lib.rs: `# Layout` does not name [`{m}`]"));
        }
        let file = [format!("src/{m}.rs"), format!("src/{m}/mod.rs")]
            .into_iter()
            .map(|f| root().join(f))
            .find(|f| f.exists())
            .expect("a module root");
        let text = std::fs::read_to_string(&file).expect("readable");
        if !text.starts_with("//! ") {
            problems.push(format!(
                "{}: opens without a `//!` line",
                file.strip_prefix(root()).unwrap_or(&file).display()
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_source_reader_sees_imports_and_nothing_else() {
    let code = code_only(
        "use crate::a::b; // crate::c\n/* crate::d */ let s = \"crate::e\"; let c = '{';\n\
         let r = r#\"crate::f\"#; fn x<'a>(y: &'a str) {}\n#[cfg(test)]\nmod tests {\n    use crate::g;\n    fn h() { let x = '}'; }\n}\nuse crate::{h::i, j};\n",
    );
    let code = without_test_items(&code);
    let names: Vec<String> = code
        .lines()
        .flat_map(|l| {
            l.match_indices("crate::")
                .flat_map(|(at, _)| first_segments(&l[at + 7..]))
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(names, ["a", "h", "j"]);
    assert_eq!(code.lines().count(), 9, "line numbers hold");
}

/// Prints the import graph as a Mermaid diagram (for `docs/architecture.md`): each import not
/// already implied by a longer chain of imports (the transitive reduction), so the picture shows
/// the layers rather than every arrow.
#[test]
#[ignore]
fn print_the_import_graph() {
    let graph = graph(&imports());
    let reaches = |from: &str, to: &str, skip_direct: bool| -> bool {
        let mut stack: Vec<&str> = graph[from]
            .iter()
            .map(String::as_str)
            .filter(|n| !(skip_direct && *n == to))
            .collect();
        let mut seen = BTreeSet::new();
        while let Some(m) = stack.pop() {
            if m == to {
                return true;
            }
            if seen.insert(m) {
                stack.extend(graph.get(m).into_iter().flatten().map(String::as_str));
            }
        }
        false
    };
    println!("```mermaid\nflowchart BT");
    for (from, to) in &graph {
        for t in to {
            if !reaches(from, t, true) {
                println!("  {from} --> {t}");
            }
        }
    }
    println!("```");
}
