//! `apps.*.error_pages`: the directory and its files, checked on the file
//! system when a user gives a config (`cutover validate`, `up`, `push`).
//!
//! The data plane reads the same files (`cutover_proxy::ErrorPages`) and
//! holds the same limits; checking them here turns a bad page into a
//! config problem at its key instead of a missing page at run time. A
//! journaled config is not checked (see [`super::parse_journaled`]): a page
//! removed since it was deployed must not make the journal's definition of
//! the app unreadable.

use std::fs::{self, File};
use std::io;
use std::path::Path;

use super::model::Config;
use super::problem::{join_key, Findings};

/// The files an error-page directory may hold; each is optional.
pub const PAGES: [&str; 4] = ["502.html", "503.html", "504.html", "maintenance.html"];

/// The largest page accepted: the proxy keeps every page in memory.
pub const MAX_PAGE_BYTES: u64 = 1024 * 1024;

/// Checks every app's `error_pages` directory: it exists and is a
/// directory; each page present in it is a readable regular file of at
/// most [`MAX_PAGE_BYTES`]. Apps whose key already has a problem are
/// skipped.
pub(crate) fn check(config: &Config, findings: &mut Findings) {
    for (name, app) in &config.apps {
        let Some(dir) = &app.error_pages else { continue };
        let at = join_key(&join_key("apps", name), "error_pages");
        if findings.any_within(&at) {
            continue;
        }
        for message in problems(dir) {
            findings.push(&at, message);
        }
    }
}

/// What is wrong with the error-page directory `dir`, if anything.
pub fn problems(dir: &Path) -> Vec<String> {
    let shown = dir.display();
    match fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => {
            return vec![format!(
                "{shown} is not a directory; give the directory that holds the pages ({})",
                PAGES.join(", ")
            )]
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return vec![format!(
                "directory {shown} does not exist; create it with any of {}, or leave error_pages out",
                PAGES.join(", ")
            )]
        }
        Err(e) => return vec![format!("cannot read directory {shown}: {e}")],
    }
    PAGES.iter().filter_map(|page| page_problem(&dir.join(page))).collect()
}

/// What is wrong with one page, if it exists.
fn page_problem(path: &Path) -> Option<String> {
    let shown = path.display();
    // `metadata` follows a symlink: a link to a page is fine.
    let meta = match fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
        Err(e) => return Some(format!("cannot read {shown}: {e}")),
    };
    if !meta.is_file() {
        return Some(format!("{shown} is not a regular file; a page must be an HTML file"));
    }
    if meta.len() > MAX_PAGE_BYTES {
        return Some(format!(
            "{shown} is {} bytes; a page may be at most {MAX_PAGE_BYTES} bytes (1 MiB)",
            meta.len()
        ));
    }
    // Readable by cutover (permissions), not only present.
    File::open(path).err().map(|e| format!("cannot read {shown}: {e}"))
}
