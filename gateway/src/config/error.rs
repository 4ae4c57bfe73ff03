//! Config errors that name the file, line:column, key path and what is wrong.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based line and column, when the problem has a place in the file.
    pub position: Option<(usize, usize)>,
    /// Dotted key path, e.g. `pools.api.health.interval` or `routes[2].pool`.
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some((line, col)) = self.position {
            write!(f, ":{line}:{col}")?;
        }
        if self.key.is_empty() {
            write!(f, ": {}", self.message)
        } else {
            write!(f, ": {}: {}", self.key, self.message)
        }
    }
}

/// Every problem found in one file (never empty).
#[derive(Debug, Clone)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Turns byte offsets into 1-based line:column for one source text.
pub struct Locator<'a> {
    pub file: &'a Path,
    pub text: &'a str,
}

impl Locator<'_> {
    pub fn position(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let col = self.text[line_start..offset].chars().count() + 1;
        (line, col)
    }

    pub fn error(
        &self,
        span: Option<Range<usize>>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError {
            file: self.file.to_path_buf(),
            position: span.map(|s| self.position(s.start)),
            key: key.into(),
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based() {
        let l = Locator {
            file: Path::new("x.toml"),
            text: "a = 1\nbb = 2\n",
        };
        assert_eq!(l.position(0), (1, 1));
        assert_eq!(l.position(6), (2, 1));
        assert_eq!(l.position(11), (2, 6));
    }

    #[test]
    fn display_names_file_line_key() {
        let e = ConfigError {
            file: "g.toml".into(),
            position: Some((3, 7)),
            key: "routes[0].pool".into(),
            message: "no pool named \"x\"".into(),
        };
        assert_eq!(
            e.to_string(),
            "g.toml:3:7: routes[0].pool: no pool named \"x\""
        );
    }
}
