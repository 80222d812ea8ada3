//! Host and path matching: which app a request belongs to.
//!
//! Precedence, most specific first:
//! 1. an exact host (`api.example.com`);
//! 2. a wildcard host (`*.example.com`), the longest suffix first;
//! 3. any host (`*`).
//!
//! Within a host, the longest path prefix wins. A prefix matches on segment
//! boundaries: `/api` matches `/api`, `/api/` and `/api/v1`, never `/apiary`.
//! When none of a host's paths match, the next less specific host is tried,
//! so `*` with `/` is a catch-all under any more specific route.
//!
//! Lookup costs one hash probe for the exact host, one per dot-separated
//! suffix for wildcards, and a scan of that host's prefixes (longest first).

use std::collections::HashMap;

/// Index of an app in a [`crate::RouteTable`]. The control plane keeps ids
/// stable across tables, so a request routed on one table can be served from
/// the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AppId(pub u32);

/// The host side of a route.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostMatch {
    /// `*`
    Any,
    /// An exact, lowercase host name.
    Exact(String),
    /// `*.example.com`, stored as the lowercase suffix `example.com`.
    Wildcard(String),
}

/// A route that would shadow another one exactly.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("duplicate route: host {host:?} path {path:?}")]
pub struct DuplicateRoute {
    pub host: HostMatch,
    pub path: String,
}

/// Compiled routes. Immutable once built.
#[derive(Debug, Default, Clone)]
pub struct Router {
    exact: HashMap<Box<str>, Prefixes>,
    /// Keyed by the suffix *with* its leading dot (`.example.com`), so a
    /// probe is a plain slice of the request host.
    wildcard: HashMap<Box<str>, Prefixes>,
    any: Prefixes,
}

/// One host's path prefixes, longest first.
#[derive(Debug, Default, Clone)]
struct Prefixes(Vec<(Box<str>, AppId)>);

impl Prefixes {
    fn insert(&mut self, path: &str, app: AppId) -> bool {
        if self.0.iter().any(|(p, _)| &**p == path) {
            return false;
        }
        // Keep longest first; among equal lengths, insertion order.
        let at = self.0.partition_point(|(p, _)| p.len() >= path.len());
        self.0.insert(at, (path.into(), app));
        true
    }

    #[inline]
    fn find(&self, path: &str) -> Option<AppId> {
        self.0
            .iter()
            .find(|(prefix, _)| prefix_matches(prefix, path))
            .map(|(_, app)| *app)
    }
}

/// Does `prefix` cover `path`, on a segment boundary?
#[inline]
fn prefix_matches(prefix: &str, path: &str) -> bool {
    match path.strip_prefix(prefix) {
        None => false,
        Some(rest) => rest.is_empty() || prefix.ends_with('/') || rest.starts_with('/'),
    }
}

impl Router {
    /// Adds a route; refuses an exact duplicate (same host, same path).
    pub fn insert(&mut self, host: HostMatch, path: &str, app: AppId) -> Result<(), DuplicateRoute> {
        let set = match &host {
            HostMatch::Any => &mut self.any,
            HostMatch::Exact(name) => self.exact.entry(name.as_str().into()).or_default(),
            HostMatch::Wildcard(suffix) => self.wildcard.entry(format!(".{suffix}").into()).or_default(),
        };
        if set.insert(path, app) {
            Ok(())
        } else {
            Err(DuplicateRoute {
                host,
                path: path.to_string(),
            })
        }
    }

    /// Finds the app for a request. `host` is the raw `Host` header value
    /// (any case, maybe with a port); `path` is the URI path without query.
    #[inline]
    pub fn lookup(&self, host: &str, path: &str) -> Option<AppId> {
        let host = strip_port(host);
        let host = host.strip_suffix('.').unwrap_or(host);
        if host.bytes().any(|b| b.is_ascii_uppercase()) {
            // Rare: clients send lowercase hosts. Pay for the copy only here.
            return self.lookup_normalised(&host.to_ascii_lowercase(), path);
        }
        self.lookup_normalised(host, path)
    }

    fn lookup_normalised(&self, host: &str, path: &str) -> Option<AppId> {
        if !self.exact.is_empty() {
            if let Some(app) = self.exact.get(host).and_then(|p| p.find(path)) {
                return Some(app);
            }
        }
        if !self.wildcard.is_empty() {
            // Probe ".b.example.com", ".example.com", ".com": longest first.
            for (i, _) in host.match_indices('.') {
                if let Some(app) = self.wildcard.get(&host[i..]).and_then(|p| p.find(path)) {
                    return Some(app);
                }
            }
        }
        self.any.find(path)
    }

    /// Number of routes.
    pub fn len(&self) -> usize {
        let count = |m: &HashMap<Box<str>, Prefixes>| m.values().map(|p| p.0.len()).sum::<usize>();
        count(&self.exact) + count(&self.wildcard) + self.any.0.len()
    }

    /// True when there is no route at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// `example.com:8080` → `example.com`; `[::1]:8080` → `[::1]`.
#[inline]
fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return match host.find(']') {
            Some(end) => &host[..=end],
            None => host,
        };
    }
    match host.rfind(':') {
        Some(i) if host[i + 1..].bytes().all(|b| b.is_ascii_digit()) => &host[..i],
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router(routes: &[(HostMatch, &str, u32)]) -> Router {
        let mut r = Router::default();
        for (host, path, app) in routes {
            r.insert(host.clone(), path, AppId(*app)).unwrap();
        }
        r
    }

    fn exact(h: &str) -> HostMatch {
        HostMatch::Exact(h.into())
    }

    fn wild(h: &str) -> HostMatch {
        HostMatch::Wildcard(h.into())
    }

    #[test]
    fn longest_path_prefix_wins() {
        let r = router(&[
            (HostMatch::Any, "/", 1),
            (HostMatch::Any, "/api", 2),
            (HostMatch::Any, "/api/v2", 3),
        ]);
        assert_eq!(r.lookup("x", "/"), Some(AppId(1)));
        assert_eq!(r.lookup("x", "/other"), Some(AppId(1)));
        assert_eq!(r.lookup("x", "/api"), Some(AppId(2)));
        assert_eq!(r.lookup("x", "/api/v1/users"), Some(AppId(2)));
        assert_eq!(r.lookup("x", "/api/v2"), Some(AppId(3)));
        assert_eq!(r.lookup("x", "/api/v2/x"), Some(AppId(3)));
    }

    #[test]
    fn prefixes_match_on_segment_boundaries() {
        let r = router(&[(HostMatch::Any, "/api", 2), (HostMatch::Any, "/static/", 3)]);
        assert_eq!(r.lookup("x", "/apiary"), None);
        assert_eq!(r.lookup("x", "/api/"), Some(AppId(2)));
        assert_eq!(r.lookup("x", "/static/a.css"), Some(AppId(3)));
        assert_eq!(r.lookup("x", "/static"), None);
    }

    #[test]
    fn exact_host_beats_wildcard_beats_any() {
        let r = router(&[
            (HostMatch::Any, "/", 1),
            (wild("example.com"), "/", 2),
            (exact("api.example.com"), "/", 3),
        ]);
        assert_eq!(r.lookup("api.example.com", "/"), Some(AppId(3)));
        assert_eq!(r.lookup("www.example.com", "/"), Some(AppId(2)));
        assert_eq!(r.lookup("a.b.example.com", "/"), Some(AppId(2)));
        assert_eq!(
            r.lookup("example.com", "/"),
            Some(AppId(1)),
            "a wildcard does not cover its bare domain"
        );
        assert_eq!(r.lookup("other.org", "/"), Some(AppId(1)));
    }

    #[test]
    fn longest_wildcard_suffix_wins() {
        let r = router(&[(wild("example.com"), "/", 1), (wild("eu.example.com"), "/", 2)]);
        assert_eq!(r.lookup("a.eu.example.com", "/"), Some(AppId(2)));
        assert_eq!(r.lookup("a.us.example.com", "/"), Some(AppId(1)));
    }

    #[test]
    fn falls_through_to_less_specific_host_when_path_is_not_covered() {
        let r = router(&[(exact("a.test"), "/admin", 1), (HostMatch::Any, "/", 2)]);
        assert_eq!(r.lookup("a.test", "/admin/x"), Some(AppId(1)));
        assert_eq!(r.lookup("a.test", "/"), Some(AppId(2)));
    }

    #[test]
    fn host_is_normalised() {
        let r = router(&[(exact("a.test"), "/", 1), (wild("w.test"), "/", 2)]);
        assert_eq!(r.lookup("A.Test", "/"), Some(AppId(1)));
        assert_eq!(r.lookup("a.test:8080", "/"), Some(AppId(1)));
        assert_eq!(r.lookup("a.test.", "/"), Some(AppId(1)));
        assert_eq!(r.lookup("X.W.TEST:80", "/"), Some(AppId(2)));
        assert_eq!(r.lookup("b.test", "/"), None);
    }

    #[test]
    fn ipv6_hosts_keep_their_brackets() {
        assert_eq!(strip_port("[::1]:8080"), "[::1]");
        assert_eq!(strip_port("[::1]"), "[::1]");
        assert_eq!(strip_port("host"), "host");
        assert_eq!(strip_port("host:"), "host");
    }

    #[test]
    fn no_route_is_none() {
        let r = router(&[(exact("a.test"), "/", 1)]);
        assert_eq!(r.lookup("b.test", "/"), None);
        assert!(Router::default().lookup("a", "/").is_none());
    }

    #[test]
    fn duplicates_are_refused() {
        let mut r = Router::default();
        r.insert(HostMatch::Any, "/", AppId(1)).unwrap();
        let err = r.insert(HostMatch::Any, "/", AppId(2)).unwrap_err();
        assert_eq!(err.path, "/");
        // Same path on another host is not a duplicate.
        r.insert(exact("a.test"), "/", AppId(2)).unwrap();
        assert_eq!(r.len(), 2);
    }
}
