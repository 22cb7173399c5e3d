//! The error convention, checked over the workspace's sources: no `#[error("…")]` message
//! names a field that `source()` also returns (`#[source]`, `#[from]`, or a field called
//! `source`). Such a message would print its cause twice in [`describe`](super::describe).

use std::path::{Path, PathBuf};

/// The crates whose errors reach people: this one, the daemon and the controller.
const TREES: [&str; 3] = ["src", "meshtun/src", "controller/src"];

/// The text from `open` (just after an opening bracket) to its matching closing bracket,
/// skipping string and character literals.
fn bracketed(text: &str) -> &str {
    let mut depth = 1;
    let mut chars = text.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => {
                while let Some((_, c)) = chars.next() {
                    match c {
                        '\\' => {
                            chars.next();
                        }
                        '"' => break,
                        _ => {}
                    }
                }
            }
            '(' | '{' | '[' => depth += 1,
            ')' | '}' | ']' => {
                depth -= 1;
                if depth == 0 {
                    return &text[..i];
                }
            }
            _ => {}
        }
    }
    text
}

/// Splits `fields` at the commas outside brackets and angle brackets.
fn fields(body: &str) -> Vec<&str> {
    let (mut out, mut depth, mut start) = (Vec::new(), 0i32, 0);
    for (i, c) in body.char_indices() {
        match c {
            '(' | '{' | '[' | '<' => depth += 1,
            ')' | '}' | ']' | '>' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&body[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&body[start..]);
    out.into_iter().filter(|f| !f.trim().is_empty()).collect()
}

/// The names (`source`, or `0` for a tuple variant) of the fields `source()` returns.
fn source_fields(item: &str) -> Vec<String> {
    let Some(open) = item.find(['(', '{', ',', ';']) else {
        return Vec::new();
    };
    let tuple = match &item[open..open + 1] {
        "(" => true,
        "{" => false,
        _ => return Vec::new(),
    };
    let body = bracketed(&item[open + 1..]);
    let mut names = Vec::new();
    for (index, field) in fields(body).into_iter().enumerate() {
        let marked = field.contains("#[source]") || field.contains("#[from]");
        let code: String = field
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join(" ");
        let name = code
            .split(':')
            .next()
            .and_then(|n| n.split_whitespace().last())
            .unwrap_or("");
        if tuple && marked {
            names.push(index.to_string());
        } else if !tuple && (marked || name == "source") {
            names.push(name.to_owned());
        }
    }
    names
}

/// Every `#[error(…)]` of `text` that interpolates a source field, as `line: attribute`.
fn repeats(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (at, _) in text.match_indices("#[error(") {
        let rest = &text[at + "#[error(".len()..];
        let attribute = bracketed(rest);
        if attribute.trim() == "transparent" {
            continue;
        }
        let item = &rest[attribute.len()..];
        // Past `)]`, further attributes and doc comments, to the variant or struct.
        let item = item
            .lines()
            .skip(1)
            .skip_while(|l| l.trim_start().starts_with("///") || l.trim_start().starts_with("#["))
            .collect::<Vec<_>>()
            .join("\n");
        for name in source_fields(&item) {
            let said = [
                format!("{{{name}}}"),
                format!("{{{name}:"),
                format!(".{name})"),
                format!(".{name},"),
                format!(".{name}."),
            ];
            if said.iter().any(|s| attribute.contains(s.as_str())) {
                let line = text[..at].lines().count() + 1;
                found.push(format!("{line}: #[error({attribute})]"));
            }
        }
    }
    found
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn the_scanner_finds_a_repeated_source() {
    let twice = "#[error(\"cannot read {}: {source}\", .path.display())]\n    Read {\n        \
                 path: PathBuf,\n        #[source]\n        source: io::Error,\n    },";
    assert_eq!(repeats(twice).len(), 1);
    let tuple = "#[error(\"bad key: {0}\")]\n    Key(#[from] KeyError),";
    assert_eq!(repeats(tuple).len(), 1);
    let once = "#[error(\"cannot read {}\", .path.display())]\n    Read {\n        path: \
                PathBuf,\n        #[source]\n        source: io::Error,\n    },";
    assert!(repeats(once).is_empty());
    let no_source = "#[error(\"bad URL: {0}\")]\n    Url(String),";
    assert!(repeats(no_source).is_empty());
}

#[test]
fn no_error_message_repeats_its_source() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for tree in TREES {
        rust_files(&root.join(tree), &mut files);
    }
    assert!(files.len() > 100, "only {} source files found", files.len());
    let mut found = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for repeat in repeats(&text) {
            found.push(format!("{}:{repeat}", file.display()));
        }
    }
    assert!(
        found.is_empty(),
        "these messages print their source, which source() returns too:\n{}",
        found.join("\n")
    );
}
