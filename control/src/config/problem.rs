//! What is wrong with a config file, and where.
//!
//! Reading and validation never stop at the first mistake: they push
//! [`Finding`]s (a key path and a message) into [`Findings`], and
//! [`Findings::into_problems`] turns them into user-facing [`Problem`]s with a
//! file name and, where the YAML parser knows it, a line and column.

use std::fmt;
use std::io;
use std::path::PathBuf;

use super::location::Locations;

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read (missing, unreadable, not UTF-8).
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file we tried to read.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
    /// The file was read but is not a valid config; every problem is listed.
    #[error("{0}")]
    Invalid(Problems),
}

/// Every problem found in one config file, in file order (problems whose place
/// is unknown come last). Displays as one problem per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problems(pub Vec<Problem>);

impl Problems {
    /// Number of problems.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are none (never the case inside a [`ConfigError`]).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The problems, in order.
    pub fn iter(&self) -> std::slice::Iter<'_, Problem> {
        self.0.iter()
    }
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

/// One thing wrong with a config file.
///
/// Displays as `file:line:col: key.path: message` when the place is known,
/// `file: key.path: message` when only the key is, else `file: message`
/// (SPEC §2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The config file as the user named it.
    pub file: String,
    /// 1-based line and column of the key or list item at fault, if known.
    pub location: Option<(usize, usize)>,
    /// Where in the document, e.g. `apps.web.health.interval` or `routes[2].app`.
    pub key_path: Option<String>,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some((line, col)) = self.location {
            write!(f, ":{line}:{col}")?;
        }
        if let Some(key_path) = &self.key_path {
            write!(f, ": {key_path}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// A problem before it is given a file and a place. An empty `key_path`
/// means the document as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Finding {
    pub key_path: String,
    pub message: String,
}

/// Collects findings while reading and validating.
///
/// A key path can be *suppressed*: once a value could not be read at all, the
/// validator sees a default in its place and would otherwise complain about
/// that default too (a route naming an app whose settings were unreadable, a
/// `command` removed for having the wrong type reported as missing).
#[derive(Debug, Default)]
pub(crate) struct Findings {
    list: Vec<Finding>,
    suppressed: Vec<String>,
}

impl Findings {
    /// Records a problem at `key_path`, unless that path is suppressed.
    pub fn push(&mut self, key_path: impl Into<String>, message: impl Into<String>) {
        let key_path = key_path.into();
        if self.is_suppressed(&key_path) {
            return;
        }
        let finding = Finding {
            key_path,
            message: message.into(),
        };
        if !self.list.contains(&finding) {
            self.list.push(finding);
        }
    }

    /// Drops future findings at `key_path` and below it.
    pub fn suppress(&mut self, key_path: impl Into<String>) {
        self.suppressed.push(key_path.into());
    }

    /// True when `key_path` is, or is below, a suppressed path.
    pub fn is_suppressed(&self, key_path: &str) -> bool {
        self.suppressed.iter().any(|s| is_within(key_path, s))
    }

    /// True when something at or below `key_path` was found wrong (or
    /// could not be read).
    pub fn any_within(&self, key_path: &str) -> bool {
        self.is_suppressed(key_path) || self.list.iter().any(|f| is_within(&f.key_path, key_path))
    }

    /// True when nothing was found wrong.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Places each finding in `file` (nearest known line and column) and
    /// orders them as they appear in the file.
    pub fn into_problems(self, file: &str, locations: &Locations) -> Problems {
        let mut problems: Vec<Problem> = self
            .list
            .into_iter()
            .map(|finding| Problem {
                file: file.to_string(),
                location: locations.nearest(&finding.key_path),
                key_path: (!finding.key_path.is_empty()).then_some(finding.key_path),
                message: finding.message,
            })
            .collect();
        // Stable: findings at the same place keep the order they were found in.
        problems.sort_by_key(|p| (p.location.is_none(), p.location));
        Problems(problems)
    }
}

/// True when `path` equals `ancestor` or lies below it (`a.b` is within `a`,
/// `a[0]` is within `a`, `ab` is not within `a`). The empty path holds all.
pub(crate) fn is_within(path: &str, ancestor: &str) -> bool {
    if ancestor.is_empty() {
        return true;
    }
    match path.strip_prefix(ancestor) {
        Some(rest) => rest.is_empty() || rest.starts_with('.') || rest.starts_with('['),
        None => false,
    }
}

/// Joins a parent key path and a key: `("apps", "web")` → `apps.web`.
pub(crate) fn join_key(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(location: Option<(usize, usize)>, key_path: Option<&str>) -> Problem {
        Problem {
            file: "deploy.yaml".into(),
            location,
            key_path: key_path.map(str::to_string),
            message: "bad".into(),
        }
    }

    #[test]
    fn problem_display_follows_spec_formats() {
        let full = problem(Some((3, 5)), Some("apps.web.cwd"));
        assert_eq!(full.to_string(), "deploy.yaml:3:5: apps.web.cwd: bad");
        let key_only = problem(None, Some("apps"));
        assert_eq!(key_only.to_string(), "deploy.yaml: apps: bad");
        let bare = problem(None, None);
        assert_eq!(bare.to_string(), "deploy.yaml: bad");
        let place_only = problem(Some((1, 2)), None);
        assert_eq!(place_only.to_string(), "deploy.yaml:1:2: bad");
    }

    #[test]
    fn problems_display_one_per_line() {
        let all = Problems(vec![problem(None, None), problem(None, Some("x"))]);
        assert_eq!(all.to_string(), "deploy.yaml: bad\ndeploy.yaml: x: bad");
    }

    #[test]
    fn suppression_covers_descendants_only() {
        assert!(is_within("apps.web.command", "apps.web"));
        assert!(is_within("routes[1].app", "routes"));
        assert!(is_within("apps", "apps"));
        assert!(!is_within("apps.webby", "apps.web"));
        assert!(is_within("anything", ""));

        let mut findings = Findings::default();
        findings.suppress("apps.web");
        findings.push("apps.web.command", "hidden");
        findings.push("apps.api.command", "shown");
        assert_eq!(findings.list.len(), 1);
        assert_eq!(findings.list[0].key_path, "apps.api.command");
    }
}
