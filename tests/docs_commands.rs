//! Every `ms ...` command in the code blocks of README.md, docs/, packaging/ and the example
//! manifests' comments parses with today's command line: a renamed command or flag
//! (`ms stop-asg`) fails here, naming the file and line.
//!
//! The commands are parsed, not run (the end-to-end tests run what users do); what follows a
//! pipe, `&&`, a redirection or a comment is cut, and `$(...)` counts as one word.

use std::path::{Path, PathBuf};

use clap::Parser;
use microscaler::cli::Cli;

/// The words of a shell command line, up to the first `|`, `&&`, `;`, `>`, `<`, `&` or `#`.
fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut started = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                started = true;
                for c in chars.by_ref() {
                    if c == '\'' {
                        break;
                    }
                    cur.push(c);
                }
            }
            '"' => {
                started = true;
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => {
                            if let Some(n) = chars.next() {
                                cur.push(n);
                            }
                        }
                        c => cur.push(c),
                    }
                }
            }
            '$' if chars.peek() == Some(&'(') => {
                // `$(...)`: one word, whatever it holds.
                started = true;
                let mut depth = 0;
                for c in chars.by_ref() {
                    match c {
                        '(' => depth += 1,
                        ')' => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                cur.push_str("SUBSTITUTED");
            }
            '|' | ';' | '>' | '<' | '&' | '#' => break,
            c if c.is_whitespace() => {
                if started {
                    out.push(std::mem::take(&mut cur));
                    started = false;
                }
            }
            c => {
                started = true;
                cur.push(c);
            }
        }
    }
    if started {
        out.push(cur);
    }
    out
}

/// `(file, line number, command)` of every `ms` command in the shell code blocks of `path`.
fn commands(path: &Path) -> Vec<(PathBuf, usize, String)> {
    let text = std::fs::read_to_string(path).unwrap();
    let markdown = path.extension().is_some_and(|e| e == "md");
    let mut in_block = !markdown;
    let mut out = Vec::new();
    // Lines continued with `\` are joined first (keeping the first line's number).
    let mut lines: Vec<(usize, String)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        match lines.last_mut() {
            Some((_, prev)) if prev.ends_with('\\') => {
                prev.pop();
                prev.push_str(line);
            }
            _ => lines.push((i, line.to_string())),
        }
    }
    for (i, line) in &lines {
        let t = line.trim_start();
        if markdown && t.starts_with("```") {
            in_block = !in_block;
            continue;
        }
        if !in_block {
            continue;
        }
        // A shell prompt, a comment in a manifest or unit ("# ... `ms scale ...`" is prose).
        let t = t.strip_prefix("$ ").unwrap_or(t);
        let t = t.trim_start_matches("#   ").trim_start_matches("# ");
        if let Some(rest) = t.strip_prefix("ms ") {
            // A synopsis (`ms controller [--dir DIR] ...`) is not a command.
            if rest.contains("[--") {
                continue;
            }
            // Prose after a command in a comment ("ms x edits this") is not checked.
            if !markdown && !rest.starts_with(char::is_lowercase) {
                continue;
            }
            out.push((path.to_path_buf(), i + 1, format!("ms {rest}")));
        }
    }
    out
}

fn files() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![
        root.join("README.md"),
        root.join("packaging/microscaler.service"),
    ];
    for dir in ["docs", "manifests/examples"] {
        for e in std::fs::read_dir(root.join(dir)).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "md") {
                files.push(p);
            }
        }
    }
    files.sort();
    files
}

#[test]
fn every_ms_command_in_the_docs_parses() {
    let mut checked = 0;
    let mut failures = Vec::new();
    for file in files() {
        for (path, line, command) in commands(&file) {
            let argv = words(&command);
            checked += 1;
            if let Err(e) = Cli::try_parse_from(&argv) {
                if matches!(
                    e.kind(),
                    clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
                ) {
                    continue;
                }
                failures.push(format!(
                    "{}:{line}: `{command}`: {}",
                    path.display(),
                    e.to_string().lines().next().unwrap_or("")
                ));
            }
        }
    }
    assert!(
        checked > 50,
        "only {checked} commands found: is the extraction broken?"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn words_follow_the_shell_closely_enough() {
    assert_eq!(
        words(r#"ms get asgs -o jsonpath='{.items[*].name}' | wc -l"#),
        ["ms", "get", "asgs", "-o", "jsonpath={.items[*].name}"]
    );
    assert_eq!(
        words(r#"ms exec $(ms get instances -o name) -- cat /x   # note"#),
        ["ms", "exec", "SUBSTITUTED", "--", "cat", "/x"]
    );
    assert_eq!(
        words(r#"ms login --token "a b""#),
        ["ms", "login", "--token", "a b"]
    );
}

/// Every `` `ms WORD ...` `` in prose (README, docs, the example manifests' comments) names a
/// command that exists.
#[test]
fn every_command_named_in_prose_exists() {
    use clap::CommandFactory;
    let cli = Cli::command();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut all = files();
    for e in std::fs::read_dir(root.join("manifests/examples")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "yaml") {
            all.push(p);
        }
    }
    let mut failures = Vec::new();
    let mut checked = 0;
    for file in all {
        let text = std::fs::read_to_string(&file).unwrap();
        for (i, line) in text.lines().enumerate() {
            for (n, span) in line.split('`').enumerate() {
                // Odd pieces are inside backticks.
                let Some(rest) = span.strip_prefix("ms ").filter(|_| n % 2 == 1) else {
                    continue;
                };
                let Some(word) = rest.split_whitespace().next() else {
                    continue;
                };
                if word.starts_with('-')
                    || !word.chars().all(|c| c.is_ascii_lowercase() || c == '-')
                {
                    continue;
                }
                checked += 1;
                if cli.find_subcommand(word).is_none() {
                    failures.push(format!(
                        "{}:{}: `{span}`: no command `{word}`",
                        file.display(),
                        i + 1
                    ));
                }
            }
        }
    }
    assert!(checked > 20, "only {checked} found");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
