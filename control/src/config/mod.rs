//! `deploy.yaml`: reading it, checking it, and the model the rest of cutover
//! uses (SPEC §3).
//!
//! Loading goes text → `read` (into the `raw` structs, the YAML as written,
//! piece by piece so every structural mistake is found) → `validate`
//! (defaults filled in, every value checked against `rules`) → [`Config`].
//! Every problem is collected, placed at a `file:line:col` by `location`,
//! and returned together in [`ConfigError::Invalid`], which is what
//! `cutover validate` prints.

pub mod bounds;
pub mod error_pages;
mod location;
mod model;
mod problem;
mod raw;
mod read;
mod rules;
pub mod timing;
mod validate;
mod wording;

#[cfg(test)]
mod tests;

use std::fs;
use std::path::Path;

pub use model::*;
pub use problem::{ConfigError, Problem, Problems};

use location::Locations;
use problem::Findings;

/// Reads and validates the config file at `path`. Relative paths inside it
/// (`cwd`, `state_dir`, `error_pages`) are resolved against the file's directory,
/// canonicalised when possible.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let source = fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let base_dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    parse(&source, &path.display().to_string(), &base_dir)
}

/// Validates config text. `file` names it in problems; `base_dir` is where
/// relative paths in it are resolved from. Files the config names are
/// checked too (`apps.*.error_pages`).
pub fn parse(source: &str, file: &str, base_dir: &Path) -> Result<Config, ConfigError> {
    parse_with(source, file, base_dir, true)
}

/// Validates config text the journal kept: like [`parse`], without
/// looking at the files it names. What was deployed stays readable even if
/// a file changed since (a missing error page then means the proxy's
/// built-in one, not a different version of the app).
pub fn parse_journaled(source: &str, file: &str, base_dir: &Path) -> Result<Config, ConfigError> {
    parse_with(source, file, base_dir, false)
}

fn parse_with(source: &str, file: &str, base_dir: &Path, check_files: bool) -> Result<Config, ConfigError> {
    let mut findings = Findings::default();
    let raw = match read::read(source, &mut findings) {
        Ok(raw) => raw,
        Err(syntax) => {
            return Err(ConfigError::Invalid(Problems(vec![Problem {
                file: file.to_string(),
                location: syntax.location,
                key_path: syntax.key_path,
                message: syntax.message,
            }])))
        }
    };
    let config = validate::validate(&raw, base_dir, &mut findings);
    if check_files {
        error_pages::check(&config, &mut findings);
    }
    if findings.is_empty() {
        return Ok(config);
    }
    let locations = Locations::scan(source);
    Err(ConfigError::Invalid(findings.into_problems(file, &locations)))
}
