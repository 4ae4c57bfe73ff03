//! docs/configuration.md is the whole reference: every key the schema accepts
//! (`config/schema.rs`, whose sections all deny unknown fields) has a row in its
//! section's table, and every key a table shows is accepted. A new key without a row,
//! or a row for a key that is gone, fails here with the section and the key.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Each documented section, and the schema struct that reads it.
const SECTIONS: &[(&str, &str)] = &[
    ("[server]", "ServerSection"),
    ("[log]", "LogSection"),
    ("[[listeners]]", "ListenerSection"),
    ("[admin]", "AdminSection"),
    ("[tls]", "TlsSection"),
    ("[[sites]]", "SiteSection"),
    ("[sites.acme]", "AcmeSection"),
    ("[sites.on_demand]", "OnDemandSection"),
    ("[pools.NAME]", "PoolSection"),
    ("[pools.NAME.health]", "HealthSection"),
    ("[[routes]]", "RouteSection"),
    ("[route_defaults]", "PolicySection"),
    ("[headers]", "HeadersSection"),
    ("[limits]", "LimitsSection"),
    ("[rate_limits.NAME]", "RateLimitSection"),
    ("[store]", "StoreSection"),
    ("[dns]", "DnsSection"),
    ("[cors.NAME]", "CorsSection"),
    ("[compression.NAME]", "CompressionSection"),
];

/// `pub` fields of every struct in schema.rs that denies unknown fields.
fn schema() -> BTreeMap<String, BTreeSet<String>> {
    let src =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/config/schema.rs"))
            .unwrap();
    let mut out = BTreeMap::new();
    let mut rest = src.as_str();
    while let Some(i) = rest.find("#[serde(deny_unknown_fields)]") {
        rest = &rest[i..];
        let start = rest.find("pub struct ").unwrap() + "pub struct ".len();
        let name: String = rest[start..]
            .chars()
            .take_while(|c| c.is_alphanumeric())
            .collect();
        let body_start = rest.find('{').unwrap();
        let body_end = body_start + rest[body_start..].find("\n}").unwrap();
        let fields = rest[body_start + 1..body_end]
            .lines()
            .filter_map(|l| l.trim().strip_prefix("pub "))
            .filter_map(|l| l.split_once(':').map(|(f, _)| f.trim().to_owned()))
            .collect();
        out.insert(name, fields);
        rest = &rest[body_end..];
    }
    out
}

/// The keys of the first table under each `## ` or `### ` heading that starts with a
/// backquoted section name (`` ## `[server]` ``).
fn reference() -> BTreeMap<String, BTreeSet<String>> {
    let doc = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/configuration.md"),
    )
    .unwrap();
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut current: Option<String> = None;
    let mut in_table = false;
    for line in doc.lines() {
        if let Some(h) = line
            .strip_prefix("### `")
            .or_else(|| line.strip_prefix("## `"))
        {
            current = h.split('`').next().map(str::to_owned);
            in_table = false;
            continue;
        }
        if line.starts_with("## ") || line.starts_with("### ") {
            current = None;
            continue;
        }
        let Some(section) = &current else { continue };
        if let Some(cells) = line.strip_prefix("| `") {
            in_table = true;
            let first = cells.split(" |").next().unwrap_or("");
            for key in first.split(", ") {
                let key = key.trim_matches('`');
                out.entry(section.clone())
                    .or_default()
                    .insert(key.to_owned());
            }
        } else if in_table && !line.starts_with('|') {
            // Only the first table of a section lists its keys.
            in_table = false;
            current = None;
        }
    }
    out
}

#[test]
fn every_key_the_schema_accepts_is_in_the_reference_and_back() {
    let schema = schema();
    let reference = reference();
    // The route's own table, plus the policy keys it shares with [route_defaults].
    let policy: BTreeSet<String> = reference
        .get("[route_defaults]")
        .cloned()
        .unwrap_or_default();
    let mut problems = Vec::new();
    for (section, ty) in SECTIONS {
        let accepted = schema
            .get(*ty)
            .unwrap_or_else(|| panic!("schema.rs has no struct {ty}"));
        let mut documented = reference.get(*section).cloned().unwrap_or_default();
        if *section == "[[routes]]" {
            documented.extend(policy.iter().cloned());
        }
        // A nested table (`[sites.acme]`, `[pools.NAME.health]`) has its own section.
        let base = section.trim_matches(|c| c == '[' || c == ']');
        for (sub, _) in SECTIONS {
            if let Some(field) = sub
                .trim_matches(|c| c == '[' || c == ']')
                .strip_prefix(base)
                .and_then(|r| r.strip_prefix('.'))
            {
                documented.insert(field.to_owned());
            }
        }
        for k in accepted.difference(&documented) {
            problems.push(format!(
                "{section} {k}: accepted, but not in docs/configuration.md"
            ));
        }
        for k in documented.difference(accepted) {
            problems.push(format!(
                "{section} {k}: in docs/configuration.md, but not accepted"
            ));
        }
    }
    // Every section of the file has its place in the list above.
    let top = schema.get("File").unwrap();
    for field in top {
        let named = SECTIONS.iter().any(|(s, _)| {
            s.trim_matches(|c| c == '[' || c == ']').split('.').next() == Some(field)
        });
        if !named {
            problems.push(format!(
                "[{field}]: a section of the file with no reference section"
            ));
        }
    }
    // And every denying struct is documented somewhere (or is a nested value).
    let nested = ["File", "RouteHeadersSection"];
    for ty in schema.keys() {
        if !nested.contains(&ty.as_str()) && !SECTIONS.iter().any(|(_, t)| t == ty) {
            problems.push(format!("{ty}: no reference section names it"));
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn the_reference_lists_the_route_headers_keys() {
    // `headers = { set = {...}, remove = [...] }` of a route: both keys in its row.
    let schema = schema();
    let doc = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/configuration.md"),
    )
    .unwrap();
    let row = doc
        .lines()
        .find(|l| l.starts_with("| `headers` |") && l.contains("set ="))
        .expect("the route policy `headers` row");
    for k in &schema["RouteHeadersSection"] {
        assert!(row.contains(&format!("{k} =")), "{k} missing from: {row}");
    }
}

/// `gateway_*` names in a text, each once.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("gateway_") {
        let name: String = rest[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[i + name.len()..];
        // Families only: not `gateway_upgrade...` paths or crate names.
        if [
            "_total",
            "_seconds",
            "_up",
            "_keys",
            "_replicas",
            "_healthy",
            "_flight",
            "_open",
        ]
        .iter()
        .any(|s| name.ends_with(s))
        {
            out.insert(name);
        }
    }
    out
}

#[test]
fn every_metric_is_in_the_metrics_list_and_back() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let code = std::fs::read_to_string(root.join("src/metrics.rs")).unwrap();
    let doc = std::fs::read_to_string(root.join("../docs/operations.md")).unwrap();
    // The metrics table: the rows that start with a metric name.
    let listed: BTreeSet<String> = doc
        .lines()
        .filter(|l| l.starts_with("| `gateway_"))
        .flat_map(metric_names)
        .collect();
    let exported = metric_names(&code);
    assert!(exported.len() > 20, "found {exported:?}");
    let missing: Vec<_> = exported.difference(&listed).collect();
    let gone: Vec<_> = listed.difference(&exported).collect();
    assert!(
        missing.is_empty() && gone.is_empty(),
        "exported but not in docs/operations.md: {missing:?}; listed but not exported: {gone:?}"
    );
}
