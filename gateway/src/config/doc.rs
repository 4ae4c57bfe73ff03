//! Finds where a key path sits in the TOML source, and expands `${VAR}` in strings.
//!
//! Validation works on typed values; when it finds a problem it knows the key path
//! (`routes[2].pool`). This module maps that path back to a byte span of the source,
//! so every error can name line:column.

use std::ops::Range;

use toml_edit::{ImDocument, Item, Table, Value};

/// One step of a key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    Key(String),
    Index(usize),
}

/// Renders a path as operators write it: `pools.api.replicas[0]`.
pub fn render(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

enum Node<'a> {
    Item(&'a Item),
    Value(&'a Value),
    Table(&'a Table),
}

impl<'a> Node<'a> {
    fn span(&self) -> Option<Range<usize>> {
        match self {
            Node::Item(i) => i.span(),
            Node::Value(v) => v.span(),
            Node::Table(t) => t.span(),
        }
    }

    fn child(&self, seg: &Seg) -> Option<Node<'a>> {
        match (self, seg) {
            (Node::Table(t), Seg::Key(k)) => t.get(k).map(Node::Item),
            (Node::Item(Item::Table(t)), Seg::Key(k)) => t.get(k).map(Node::Item),
            (Node::Item(Item::Value(Value::InlineTable(t))), Seg::Key(k))
            | (Node::Value(Value::InlineTable(t)), Seg::Key(k)) => t.get(k).map(Node::Value),
            (Node::Item(Item::ArrayOfTables(a)), Seg::Index(i)) => a.get(*i).map(Node::Table),
            (Node::Item(Item::Value(Value::Array(a))), Seg::Index(i))
            | (Node::Value(Value::Array(a)), Seg::Index(i)) => a.get(*i).map(Node::Value),
            _ => None,
        }
    }
}

/// The span of the deepest node along `path` that exists in the document
/// (for a missing key, the table that should hold it).
pub fn span_of(doc: &ImDocument<String>, path: &[Seg]) -> Option<Range<usize>> {
    let mut node = Node::Table(doc.as_table());
    let mut best = None;
    for seg in path {
        match node.child(seg) {
            Some(next) => {
                if let Some(s) = next.span() {
                    best = Some(s);
                }
                node = next;
            }
            None => break,
        }
    }
    best
}

/// A `${VAR}` that could not be expanded: where, and why.
#[derive(Debug)]
pub struct ExpandError {
    pub span: Option<Range<usize>>,
    pub path: Vec<Seg>,
    pub message: String,
}

/// Expands `${VAR}` and `${VAR:-default}` in every string value of `text`, using `env`.
/// `$${` stands for a literal `${`. Returns the new text: only the expanded string
/// literals change, so line numbers stay those of the operator's file.
pub fn expand_env(
    doc: &ImDocument<String>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, Vec<ExpandError>> {
    let mut edits: Vec<(Range<usize>, String)> = Vec::new();
    let mut errors = Vec::new();
    let mut path = Vec::new();
    walk_table(doc.as_table(), &mut path, &mut |path, value| {
        let Some(s) = value.as_str() else { return };
        if !s.contains("${") {
            return;
        }
        match expand_str(s, env) {
            Ok(expanded) => {
                if let Some(span) = value.span() {
                    edits.push((span, Value::from(expanded).to_string().trim().to_owned()));
                }
            }
            Err(message) => errors.push(ExpandError {
                span: value.span(),
                path: path.to_vec(),
                message,
            }),
        }
    });
    if !errors.is_empty() {
        return Err(errors);
    }
    let mut text = doc.raw().to_owned();
    edits.sort_by_key(|(span, _)| std::cmp::Reverse(span.start));
    for (span, replacement) in edits {
        text.replace_range(span, &replacement);
    }
    Ok(text)
}

fn walk_table(t: &Table, path: &mut Vec<Seg>, f: &mut dyn FnMut(&[Seg], &Value)) {
    for (k, item) in t.iter() {
        path.push(Seg::Key(k.to_owned()));
        walk_item(item, path, f);
        path.pop();
    }
}

fn walk_item(item: &Item, path: &mut Vec<Seg>, f: &mut dyn FnMut(&[Seg], &Value)) {
    match item {
        Item::Value(v) => walk_value(v, path, f),
        Item::Table(t) => walk_table(t, path, f),
        Item::ArrayOfTables(a) => {
            for (i, t) in a.iter().enumerate() {
                path.push(Seg::Index(i));
                walk_table(t, path, f);
                path.pop();
            }
        }
        Item::None => {}
    }
}

fn walk_value(v: &Value, path: &mut Vec<Seg>, f: &mut dyn FnMut(&[Seg], &Value)) {
    match v {
        Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                path.push(Seg::Index(i));
                walk_value(v, path, f);
                path.pop();
            }
        }
        Value::InlineTable(t) => {
            for (k, v) in t.iter() {
                path.push(Seg::Key(k.to_owned()));
                walk_value(v, path, f);
                path.pop();
            }
        }
        other => f(path, other),
    }
}

/// Expands one string; the error says which variable is missing or malformed.
pub fn expand_str(s: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        if let Some(r) = rest.strip_prefix("$${") {
            out.push_str("${");
            rest = r;
        } else if let Some(r) = rest.strip_prefix("${") {
            let end = r
                .find('}')
                .ok_or_else(|| format!("unclosed \"${{\" in {s:?}"))?;
            let inner = &r[..end];
            let (name, default) = match inner.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (inner, None),
            };
            let valid = name
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(format!("invalid variable name {name:?} in {s:?}"));
            }
            let value = match (env(name).filter(|v| !v.is_empty()), default) {
                (Some(v), _) => v,
                (None, Some(d)) => d.to_owned(),
                (None, None) => {
                    return Err(format!("environment variable {name} is not set (write ${{{name}:-default}} for a default)"))
                }
            };
            if value.chars().any(char::is_control) {
                return Err(format!(
                    "environment variable {name} contains control characters"
                ));
            }
            out.push_str(&value);
            rest = &r[end + 1..];
        } else {
            out.push('$');
            rest = &rest[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "DOMAIN" => Some("example.com".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn expands_vars_and_defaults() {
        assert_eq!(expand_str("${DOMAIN}", &env).as_deref(), Ok("example.com"));
        assert_eq!(
            expand_str("a.${MISSING:-localhost}", &env).as_deref(),
            Ok("a.localhost")
        );
        assert_eq!(expand_str("${EMPTY:-x}", &env).as_deref(), Ok("x"));
        assert_eq!(
            expand_str("cost $5 $${LIT}", &env).as_deref(),
            Ok("cost $5 ${LIT}")
        );
        assert!(expand_str("${MISSING}", &env)
            .unwrap_err()
            .contains("MISSING is not set"));
        assert!(expand_str("${1BAD}", &env).is_err());
        assert!(expand_str("${OPEN", &env).is_err());
    }

    #[test]
    fn expansion_keeps_lines_and_quotes_safely() {
        let doc =
            ImDocument::parse("a = 1\nhost = \"${DOMAIN}\"\nx = \"${Q:-a\\\"b}\"\n".to_owned())
                .unwrap();
        let text = expand_env(&doc, &env).unwrap();
        assert_eq!(text.lines().count(), 3);
        let parsed: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(parsed["host"].as_str(), Some("example.com"));
    }

    #[test]
    fn span_of_nested_paths() {
        let src = "[pools.api]\nreplicas = [\"a:1\", \"b:2\"]\n\n[[routes]]\npool = \"x\"\n";
        let doc = ImDocument::parse(src.to_owned()).unwrap();
        let span = span_of(
            &doc,
            &[
                Seg::Key("pools".into()),
                Seg::Key("api".into()),
                Seg::Key("replicas".into()),
                Seg::Index(1),
            ],
        )
        .unwrap();
        assert_eq!(&src[span], "\"b:2\"");
        let span = span_of(
            &doc,
            &[
                Seg::Key("routes".into()),
                Seg::Index(0),
                Seg::Key("pool".into()),
            ],
        )
        .unwrap();
        assert_eq!(&src[span], "\"x\"");
    }
}
