//! Writing YAML by hand: quoted scalars, keys, maps and sequences, indented.

use std::fmt::Write as _;

use serde_json::{Map, Value};

pub(crate) fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// A value as block YAML. Every string is double-quoted with escapes for everything
/// outside printable ASCII, so no value can start a new key, document or comment.
pub fn yaml(v: &Value) -> String {
    let mut out = String::new();
    match v {
        Value::Object(m) if !m.is_empty() => map(&mut out, m, 0),
        _ => {
            out.push_str(&scalar(v).unwrap_or_default());
            out.push('\n');
        }
    }
    out
}

pub(crate) fn quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            ' '..='~' => out.push(c),
            c if u32::from(c) <= 0xffff => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => {
                let _ = write!(out, "\\U{:08x}", u32::from(c));
            }
        }
    }
    out.push('"');
    out
}

pub(crate) fn key(k: &str) -> String {
    let plain = k.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._/-".contains(c))
        && !matches!(
            k.to_ascii_lowercase().as_str(),
            "y" | "n" | "yes" | "no" | "true" | "false" | "on" | "off" | "null"
        );
    if plain { k.to_owned() } else { quote(k) }
}

pub(crate) fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::Null => Some("null".to_owned()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) => Some(quote(s)),
        Value::Array(a) if a.is_empty() => Some("[]".to_owned()),
        Value::Object(m) if m.is_empty() => Some("{}".to_owned()),
        Value::Array(_) | Value::Object(_) => None,
    }
}

pub(crate) fn pad(out: &mut String, indent: usize) {
    out.extend(std::iter::repeat_n(' ', indent));
}

pub(crate) fn map(out: &mut String, m: &Map<String, Value>, indent: usize) {
    for (k, v) in m {
        pad(out, indent);
        out.push_str(&key(k));
        out.push(':');
        nested(out, v, indent);
    }
}

/// A value after `key:`.
pub(crate) fn nested(out: &mut String, v: &Value, indent: usize) {
    if let Some(s) = scalar(v) {
        out.push(' ');
        out.push_str(&s);
        out.push('\n');
        return;
    }
    out.push('\n');
    match v {
        Value::Object(m) => map(out, m, indent + 2),
        Value::Array(a) => seq(out, a, indent),
        _ => {}
    }
}

pub(crate) fn seq(out: &mut String, a: &[Value], indent: usize) {
    for item in a {
        pad(out, indent);
        out.push('-');
        if let Some(s) = scalar(item) {
            out.push(' ');
            out.push_str(&s);
            out.push('\n');
            continue;
        }
        let mut inner = String::new();
        match item {
            Value::Object(m) => map(&mut inner, m, indent + 2),
            Value::Array(a) => seq(&mut inner, a, indent + 2),
            _ => {}
        }
        // The first line goes after the dash.
        out.push(' ');
        out.push_str(&inner[indent + 2..]);
    }
}
