//! `[compression.NAME]`: which codings, in which order of preference, at which level,
//! from which length, for which media types.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{at, key, Validator};
use crate::config::schema::CompressionSection;
use crate::config::{defaults, Coding, Compression};

/// Levels each coding accepts (gzip 1-9, brotli 1-11, zstd 1-19).
fn level_range(c: Coding) -> std::ops::RangeInclusive<u32> {
    match c {
        Coding::Gzip => 1..=9,
        Coding::Br => 1..=11,
        Coding::Zstd => 1..=19,
    }
}

fn default_level(c: Coding) -> u32 {
    match c {
        Coding::Gzip => defaults::GZIP_LEVEL,
        Coding::Br => defaults::BR_LEVEL,
        Coding::Zstd => defaults::ZSTD_LEVEL,
    }
}

/// `type/subtype`, with at most one `*` (`text/*`, `application/*+json`).
fn valid_type(t: &str) -> bool {
    let Some((ty, sub)) = t.split_once('/') else {
        return false;
    };
    let ok = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+*".contains(&b))
    };
    ok(ty) && ok(sub) && t.matches('*').count() <= 1 && !ty.contains('*')
}

impl Validator<'_> {
    pub(super) fn compression_policies(
        &mut self,
        m: BTreeMap<String, CompressionSection>,
    ) -> Vec<Compression> {
        let mut out = Vec::new();
        for (name, c) in m {
            let base = [key("compression"), key(&name)];
            if name == "off" {
                self.err(
                    &base,
                    "\"off\" is how a route turns compression off: pick another name",
                );
            }
            let names = c.encodings.unwrap_or_else(|| {
                defaults::COMPRESSION_ENCODINGS
                    .iter()
                    .map(|s| (*s).to_owned())
                    .collect()
            });
            if names.is_empty() {
                self.err(
                    &at(&base, "encodings"),
                    "at least one of \"zstd\", \"br\", \"gzip\"",
                );
            }
            let mut codings: Vec<Coding> = Vec::new();
            for n in &names {
                match Coding::parse(n) {
                    Some(c) if codings.contains(&c) => {
                        self.err(&at(&base, "encodings"), format!("{n:?} is listed twice"))
                    }
                    Some(c) => codings.push(c),
                    None => self.err(
                        &at(&base, "encodings"),
                        format!("unknown encoding {n:?}; the gateway compresses with \"zstd\", \"br\" and \"gzip\""),
                    ),
                }
            }
            let levels = c.levels.unwrap_or_default();
            for (n, level) in &levels {
                let path = {
                    let mut p = at(&base, "levels");
                    p.push(key(n));
                    p
                };
                match Coding::parse(n) {
                    Some(c) if !codings.contains(&c) => {
                        self.err(&path, format!("{n:?} is not in `encodings`"))
                    }
                    Some(c) if !level_range(c).contains(level) => {
                        let r = level_range(c);
                        self.err(
                            &path,
                            format!("{n} levels go from {} to {}", r.start(), r.end()),
                        )
                    }
                    Some(_) => {}
                    None => self.err(&path, format!("unknown encoding {n:?}")),
                }
            }
            let encodings = codings
                .iter()
                .map(|&c| {
                    let level = levels
                        .iter()
                        .find(|(n, _)| Coding::parse(n) == Some(c))
                        .map_or(default_level(c), |(_, l)| *l);
                    (
                        c,
                        level.clamp(*level_range(c).start(), *level_range(c).end()),
                    )
                })
                .collect();
            let types: Vec<String> = c
                .types
                .unwrap_or_else(|| {
                    defaults::COMPRESSION_TYPES
                        .iter()
                        .map(|s| (*s).to_owned())
                        .collect()
                })
                .into_iter()
                .map(|t| t.trim().to_ascii_lowercase())
                .collect();
            for t in &types {
                if !valid_type(t) {
                    self.err(
                        &at(&base, "types"),
                        format!("{t:?} is not a media type; write e.g. \"text/*\", \"application/json\", \"application/*+json\""),
                    );
                }
            }
            out.push(Compression {
                name: Arc::from(name.as_str()),
                encodings,
                min_length: c
                    .min_length
                    .map_or(defaults::COMPRESSION_MIN_LENGTH, |s| s.0),
                types,
            });
        }
        out
    }
}
