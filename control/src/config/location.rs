//! Where each key and list item sits in the YAML source.
//!
//! serde_yaml forgets positions once a document is a `Value`, so problems
//! found later (by key path) are placed by walking yaml-rust2's marked event
//! stream once and recording, for every key path such as
//! `apps.web.health.interval` or `routes[2].app`, the line and column of the
//! key (for mapping entries) or of the item (for list entries).

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

use super::problem::join_key;

/// Key path → 1-based (line, column), for the first document of a source.
#[derive(Debug, Default)]
pub(crate) struct Locations {
    found: HashMap<String, Position>,
    /// Keys seen a second time in the same mapping, in file order: key
    /// path, key, place.
    duplicates: Vec<(String, String, Position)>,
}

#[derive(Debug, Clone, Copy)]
struct Position {
    /// Offset in the source, to tell which of two marks comes first.
    index: usize,
    line: usize,
    col: usize,
}

impl Locations {
    /// Walks `source`. A source yaml-rust2 cannot parse gives whatever was
    /// found before the error (serde_yaml reports the error itself).
    pub fn scan(source: &str) -> Locations {
        let mut walker = Walker::default();
        // Errors are deliberately ignored: see above.
        let _ = Parser::new_from_str(source).load(&mut walker, false);
        Locations {
            found: walker.found,
            duplicates: walker.duplicates,
        }
    }

    /// The first repeated occurrence of a mapping key named `key`: its key
    /// path and place. serde_yaml places a duplicate at the start of the
    /// mapping; this finds the offending line.
    pub fn duplicate(&self, key: &str) -> Option<(String, (usize, usize))> {
        self.duplicates
            .iter()
            .find(|(_, name, _)| name == key)
            .map(|(path, _, p)| (path.clone(), (p.line, p.col)))
    }

    /// The place of exactly `key_path`, if it appears in the source.
    pub fn get(&self, key_path: &str) -> Option<(usize, usize)> {
        self.found.get(key_path).map(|p| (p.line, p.col))
    }

    /// The place of `key_path`, or of its nearest ancestor that appears in the
    /// source (a problem with a defaulted `apps.web.health.timeout` points at
    /// `health:` or `web:`). The document root has no place.
    pub fn nearest(&self, key_path: &str) -> Option<(usize, usize)> {
        let mut path = key_path;
        while !path.is_empty() {
            if let Some(place) = self.get(path) {
                return Some(place);
            }
            path = parent(path);
        }
        None
    }
}

/// `apps.web.cwd` → `apps.web`; `routes[2]` → `routes`; `apps` → ``.
fn parent(path: &str) -> &str {
    match path.rfind(['.', '[']) {
        Some(i) => &path[..i],
        None => "",
    }
}

/// What the next node inside a mapping is.
fn position(mark: Marker) -> Position {
    Position {
        index: mark.index(),
        line: mark.line(),
        // yaml-rust2 columns are 0-based.
        col: mark.col() + 1,
    }
}

#[derive(Debug)]
enum MapState {
    /// A key.
    Key,
    /// The value of this key.
    Value(String),
}

#[derive(Debug)]
enum Frame {
    Map {
        path: String,
        state: MapState,
        /// Set while this mapping is a list item whose first key has not been
        /// seen: a block mapping's start mark lies *after* its first key, so
        /// the item is placed at whichever comes first.
        item: Option<String>,
    },
    Seq {
        path: String,
        next: usize,
    },
}

#[derive(Debug, Default)]
struct Walker {
    stack: Vec<Frame>,
    found: HashMap<String, Position>,
    duplicates: Vec<(String, String, Position)>,
    /// Only the first document counts (serde_yaml rejects more than one).
    done: bool,
}

impl Walker {
    fn record(&mut self, path: String, mark: Marker) {
        self.found.entry(path).or_insert(position(mark));
    }

    /// A node starts. Returns its key path, or `None` when it is a key.
    fn enter(&mut self, mark: Marker) -> Option<String> {
        let item = match self.stack.last_mut() {
            None => return Some(String::new()),
            Some(Frame::Map {
                state: MapState::Key, ..
            }) => return None,
            Some(Frame::Map {
                path,
                state: MapState::Value(key),
                ..
            }) => return Some(join_key(path, key)),
            Some(Frame::Seq { path, next }) => format!("{path}[{next}]"),
        };
        self.record(item.clone(), mark);
        Some(item)
    }

    /// A node inside the top frame ended; `key` is its text when it was a
    /// scalar.
    fn leave(&mut self, key: Option<String>) {
        match self.stack.last_mut() {
            Some(Frame::Map { state, .. }) => {
                *state = match state {
                    MapState::Key => MapState::Value(key.unwrap_or_else(|| "?".to_string())),
                    MapState::Value(_) => MapState::Key,
                }
            }
            Some(Frame::Seq { next, .. }) => *next += 1,
            None => {}
        }
    }

    /// A scalar key: record where it is, and where its list item starts.
    fn key(&mut self, text: &str, mark: Marker) {
        let (path, item) = match self.stack.last_mut() {
            Some(Frame::Map { path, item, .. }) => (join_key(path, text), item.take()),
            _ => return,
        };
        if self.found.contains_key(&path) {
            self.duplicates.push((path.clone(), text.to_string(), position(mark)));
        }
        if let Some(item) = item {
            match self.found.get(&item) {
                Some(start) if start.index <= mark.index() => {}
                _ => {
                    self.found.remove(&item);
                    self.record(item, mark);
                }
            }
        }
        self.record(path, mark);
    }

    fn parent_is_seq(&self) -> bool {
        matches!(self.stack.last(), Some(Frame::Seq { .. }))
    }
}

impl MarkedEventReceiver for Walker {
    fn on_event(&mut self, event: Event, mark: Marker) {
        if self.done {
            return;
        }
        match event {
            Event::Scalar(text, ..) => match self.enter(mark) {
                None => {
                    self.key(&text, mark);
                    self.leave(Some(text));
                }
                Some(_) => self.leave(None),
            },
            Event::Alias(_) => {
                self.enter(mark);
                self.leave(None);
            }
            Event::MappingStart(..) => {
                let in_seq = self.parent_is_seq();
                let path = self.enter(mark).unwrap_or_else(|| "?".to_string());
                let item = in_seq.then(|| path.clone());
                self.stack.push(Frame::Map {
                    path,
                    state: MapState::Key,
                    item,
                });
            }
            Event::SequenceStart(..) => {
                let path = self.enter(mark).unwrap_or_else(|| "?".to_string());
                self.stack.push(Frame::Seq { path, next: 0 });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
                self.leave(None);
            }
            Event::DocumentEnd => self.done = true,
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentStart => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOURCE: &str = "\
proxy:
  listen: [\"127.0.0.1:8080\", \"127.0.0.1:8081\"]
apps:
  web:
    health: { path: /health, interval: 500ms }
    env:
      A: b
routes:
  - { host: \"*\", path: /, app: web }
  - host: example.com
    app: web
";

    #[test]
    fn keys_are_placed_at_the_key() {
        let at = Locations::scan(SOURCE);
        assert_eq!(at.get("proxy"), Some((1, 1)));
        assert_eq!(at.get("proxy.listen"), Some((2, 3)));
        assert_eq!(at.get("apps.web"), Some((4, 3)));
        assert_eq!(at.get("apps.web.health.interval"), Some((5, 30)));
        assert_eq!(at.get("apps.web.env.A"), Some((7, 7)));
        assert_eq!(at.get("routes[1].app"), Some((11, 5)));
    }

    #[test]
    fn list_items_are_placed_at_the_item() {
        let at = Locations::scan(SOURCE);
        assert_eq!(at.get("proxy.listen[1]"), Some((2, 30)));
        // A flow mapping starts at its brace.
        assert_eq!(at.get("routes[0]"), Some((9, 5)));
        // A block mapping starts at its first key, not where yaml-rust2 marks it.
        assert_eq!(at.get("routes[1]"), Some((10, 5)));
    }

    #[test]
    fn missing_keys_fall_back_to_the_nearest_ancestor() {
        let at = Locations::scan(SOURCE);
        assert_eq!(at.nearest("apps.web.health.timeout"), Some((5, 5)));
        assert_eq!(at.nearest("apps.web.command"), Some((4, 3)));
        assert_eq!(at.nearest("state_dir"), None);
        assert_eq!(at.nearest(""), None);
    }

    #[test]
    fn repeated_keys_are_found_at_the_repeat() {
        let at = Locations::scan("apps:\n  web: {}\n  api: {}\n  web: {}\n");
        assert_eq!(at.duplicate("web"), Some(("apps.web".to_string(), (4, 3))));
        assert_eq!(at.duplicate("api"), None);
    }

    #[test]
    fn parent_paths() {
        assert_eq!(parent("apps.web.cwd"), "apps.web");
        assert_eq!(parent("routes[2]"), "routes");
        assert_eq!(parent("routes[2].app"), "routes[2]");
        assert_eq!(parent("apps"), "");
    }

    #[test]
    fn broken_yaml_gives_what_was_seen() {
        let at = Locations::scan("proxy:\n  threads: 2\n  listen: [oops\n");
        assert_eq!(at.get("proxy.threads"), Some((2, 3)));
    }
}
