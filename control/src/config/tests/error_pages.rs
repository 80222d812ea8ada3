//! `apps.*.error_pages` (SPEC §3): resolved like `cwd`, the directory and
//! its pages checked on the file system for a config a user gives, not for
//! the journal's.

use super::*;

/// A scratch config directory, removed when dropped.
struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("cutover-pages-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Dir(dir)
    }

    fn parse(&self, source: &str) -> Result<Config, ConfigError> {
        parse(source, "deploy.yaml", &self.0)
    }

    /// The single problem of `source`, at `apps.web.error_pages`.
    #[track_caller]
    fn problem(&self, source: &str) -> String {
        match self.parse(source) {
            Err(ConfigError::Invalid(problems)) => {
                let shown: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
                assert_eq!(problems.len(), 1, "{shown:#?}");
                assert_eq!(problems.0[0].key_path.as_deref(), Some("apps.web.error_pages"));
                assert!(problems.0[0].location.is_some(), "placed in the file: {shown:#?}");
                problems.0[0].message.clone()
            }
            Ok(_) => panic!("expected a problem"),
            Err(e) => panic!("unexpected error {e}"),
        }
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn error_pages_are_optional_and_blank_means_none() {
    assert_eq!(parse_ok(MINIMAL).apps["web"].error_pages, None);
    assert_eq!(parse_ok(&web_with("error_pages: \"\"")).apps["web"].error_pages, None);
}

#[test]
fn a_relative_directory_is_resolved_against_the_config_files_directory() {
    let dir = Dir::new("relative");
    std::fs::create_dir_all(dir.0.join("pages/web")).unwrap();
    std::fs::write(dir.0.join("pages/web/503.html"), "<h1>busy</h1>").unwrap();
    let config = dir.parse(&web_with("error_pages: ./pages/web")).unwrap();
    assert_eq!(config.apps["web"].error_pages, Some(dir.0.join("pages/web")));
    let absolute = format!("error_pages: {}", dir.0.join("pages/web").display());
    let config = dir.parse(&web_with(&absolute)).unwrap();
    assert_eq!(config.apps["web"].error_pages, Some(dir.0.join("pages/web")));
}

#[test]
fn every_page_is_optional() {
    let dir = Dir::new("empty");
    std::fs::create_dir_all(dir.0.join("pages")).unwrap();
    assert!(dir.parse(&web_with("error_pages: pages")).is_ok());
}

#[test]
fn a_missing_directory_is_refused_at_its_key() {
    let dir = Dir::new("missing");
    let message = dir.problem(&web_with("error_pages: nowhere"));
    assert!(message.contains("does not exist"), "{message}");
    assert!(
        message.contains(&dir.0.join("nowhere").display().to_string()),
        "{message}"
    );
}

#[test]
fn a_file_is_not_a_directory() {
    let dir = Dir::new("file");
    std::fs::write(dir.0.join("pages"), "not a directory").unwrap();
    let message = dir.problem(&web_with("error_pages: pages"));
    assert!(message.contains("is not a directory"), "{message}");
}

#[test]
fn an_oversized_page_is_refused() {
    let dir = Dir::new("oversized");
    std::fs::create_dir_all(dir.0.join("pages")).unwrap();
    let limit = crate::config::error_pages::MAX_PAGE_BYTES;
    std::fs::write(dir.0.join("pages/502.html"), vec![b'x'; limit as usize]).unwrap();
    assert!(
        dir.parse(&web_with("error_pages: pages")).is_ok(),
        "exactly 1 MiB is fine"
    );
    std::fs::write(dir.0.join("pages/502.html"), vec![b'x'; limit as usize + 1]).unwrap();
    let message = dir.problem(&web_with("error_pages: pages"));
    assert!(message.contains("502.html is 1048577 bytes"), "{message}");
    assert!(message.contains("at most 1048576 bytes"), "{message}");
}

#[test]
fn a_page_that_is_not_a_regular_file_is_refused() {
    let dir = Dir::new("page-dir");
    std::fs::create_dir_all(dir.0.join("pages/maintenance.html")).unwrap();
    let message = dir.problem(&web_with("error_pages: pages"));
    assert!(message.contains("maintenance.html is not a regular file"), "{message}");
}

#[test]
fn the_journal_reads_without_looking_at_the_files() {
    let dir = Dir::new("journaled");
    let source = web_with("error_pages: gone");
    assert!(dir.parse(&source).is_err());
    let config = parse_journaled(&source, "journal", &dir.0).unwrap();
    assert_eq!(config.apps["web"].error_pages, Some(dir.0.join("gone")));
}

#[test]
fn error_pages_is_not_part_of_the_version() {
    let dir = Dir::new("version");
    std::fs::create_dir_all(dir.0.join("a")).unwrap();
    std::fs::create_dir_all(dir.0.join("b")).unwrap();
    let a = dir.parse(&web_with("error_pages: a")).unwrap();
    let b = dir.parse(&web_with("error_pages: b")).unwrap();
    assert_ne!(a.apps["web"], b.apps["web"]);
    assert_eq!(a.apps["web"].version(), b.apps["web"].version());
    assert_eq!(
        a.apps["web"].version(),
        dir.parse(MINIMAL).unwrap().apps["web"].version()
    );
}
