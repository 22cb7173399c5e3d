//! Turning `toml` errors into messages that name the line and the key.
//!
//! `toml` reports a byte span and a message. The message of a type error does not name the
//! key, so the key is found by walking the spanned document to the span. Only the message is
//! used, never `toml`'s rendering, which quotes the source line (and so could show a key).

use std::ops::Range;
use std::path::Path;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use crate::config::ConfigError;

/// The 1-based line holding byte `offset` of `text`.
pub(super) fn line_of(text: &str, offset: usize) -> usize {
    let before = text.as_bytes().get(..offset).unwrap_or(text.as_bytes());
    before.iter().filter(|b| **b == b'\n').count() + 1
}

/// Converts a `toml` error into a [`ConfigError`] naming the line and, where possible, the key.
pub(super) fn toml_error(text: &str, path: &Path, err: &toml::de::Error) -> ConfigError {
    let offset = err.span().map_or(0, |span| span.start);
    let line = line_of(text, offset);
    let reason = err.message().trim_end().to_owned();
    let key = match DeTable::parse(text) {
        // The document is well-formed: the error is about a value or key serde rejected.
        Ok(root) => key_path_at(root.get_ref(), offset),
        // A syntax error: name the key written on that line, if there is one.
        Err(_) => key_on_line(text, line),
    };
    match key {
        Some(key) => ConfigError::Invalid {
            path: path.to_path_buf(),
            line,
            key,
            reason,
        },
        None => ConfigError::Syntax {
            path: path.to_path_buf(),
            line,
            reason,
        },
    }
}

fn covers(span: Range<usize>, offset: usize) -> bool {
    span.contains(&offset) || span.start == offset
}

/// The dotted path of the key or value at `offset`, with array-of-table entries numbered
/// from 1 (`peer#2.endpoint`).
fn key_path_at(root: &DeTable<'_>, offset: usize) -> Option<String> {
    let mut path = Vec::new();
    find_in_table(root, offset, &mut path).then(|| path.join("."))
}

fn find_in_table(table: &DeTable<'_>, offset: usize, path: &mut Vec<String>) -> bool {
    for (key, value) in table.iter() {
        path.push(key.get_ref().to_string());
        if covers(key.span(), offset) || find_in_value(value, offset, path) {
            return true;
        }
        path.pop();
    }
    false
}

fn find_in_value(value: &Spanned<DeValue<'_>>, offset: usize, path: &mut Vec<String>) -> bool {
    let inside = match value.get_ref() {
        DeValue::Table(table) => find_in_table(table, offset, path),
        DeValue::Array(items) => find_in_array(items, offset, path),
        _ => false,
    };
    inside || covers(value.span(), offset)
}

/// Searches the elements of an array; tables in it (`[[peer]]`) are numbered from 1.
fn find_in_array(items: &[Spanned<DeValue<'_>>], offset: usize, path: &mut Vec<String>) -> bool {
    for (index, item) in items.iter().enumerate() {
        let DeValue::Table(table) = item.get_ref() else {
            // An element of a plain array: the key and line say enough.
            if covers(item.span(), offset) {
                return true;
            }
            continue;
        };
        let name = path.pop().unwrap_or_default();
        path.push(format!("{name}#{}", index + 1));
        if find_in_table(table, offset, path) || covers(item.span(), offset) {
            return true;
        }
        path.pop();
        path.push(name);
    }
    false
}

/// For a syntax error: the key written at the start of `line`, prefixed with its section.
fn key_on_line(text: &str, line: usize) -> Option<String> {
    let lines: Vec<&str> = text.split('\n').collect();
    let index = line.checked_sub(1)?;
    let (key, _) = lines.get(index)?.split_once('=')?;
    let key = key.trim();
    let bare = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.';
    if key.is_empty() || !key.chars().all(bare) {
        return None;
    }
    let before = lines.get(..index).unwrap_or_default();
    let section = before
        .iter()
        .map(|l| l.trim())
        .rfind(|l| l.starts_with('['));
    let Some(section) = section else {
        return Some(key.to_owned());
    };
    let name = section.trim_matches(|c| c == '[' || c == ']').trim();
    if section.starts_with("[[") {
        let count = before.iter().filter(|l| l.trim() == section).count();
        return Some(format!("{name}#{count}.{key}"));
    }
    Some(format!("{name}.{key}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_count_from_one() {
        assert_eq!(line_of("a\nb\nc", 0), 1);
        assert_eq!(line_of("a\nb\nc", 2), 2);
        assert_eq!(line_of("a\nb\nc", 4), 3);
        assert_eq!(line_of("a\nb\nc", 99), 3);
    }

    #[test]
    fn key_paths_name_tables_and_peers() {
        let text = "[interface]\nmtu = \"x\"\n[[peer]]\na = 1\n[[peer]]\nendpoint = 2\n";
        let root = DeTable::parse(text).unwrap();
        let at = |needle: &str| text.find(needle).unwrap();
        assert_eq!(
            key_path_at(root.get_ref(), at("\"x\"")).as_deref(),
            Some("interface.mtu")
        );
        assert_eq!(
            key_path_at(root.get_ref(), at("mtu")).as_deref(),
            Some("interface.mtu")
        );
        assert_eq!(
            key_path_at(root.get_ref(), at("2\n")).as_deref(),
            Some("peer#2.endpoint")
        );
        assert_eq!(
            key_path_at(root.get_ref(), at("a =")).as_deref(),
            Some("peer#1.a")
        );
    }

    #[test]
    fn syntax_errors_find_the_key_on_their_line() {
        let text = "[interface]\nmtu = 14x0\n[[peer]]\n[[peer]]\nendpoint = =\n";
        assert_eq!(key_on_line(text, 2).as_deref(), Some("interface.mtu"));
        assert_eq!(key_on_line(text, 5).as_deref(), Some("peer#2.endpoint"));
        assert_eq!(key_on_line(text, 3), None);
        assert_eq!(key_on_line("x = [", 1).as_deref(), Some("x"));
    }
}
