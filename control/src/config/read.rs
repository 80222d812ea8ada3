//! YAML text → [`RawConfig`], reporting every structural problem.
//!
//! serde stops at the first error, so the document is first parsed to a
//! `serde_yaml::Value` (a syntax error ends reading here) and then
//! deserialized piece by piece: the sections, each app, each route. Within a
//! piece, the node at fault is removed and the piece deserialized again, so
//! an unknown key and a wrong type in the same app are both reported. A
//! removed node's key path is suppressed, so the validator does not also
//! complain about the default that took its place.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_path_to_error::Segment;
use serde_yaml::Value;

use super::location::Locations;
use super::problem::{join_key, Findings};
use super::raw::{RawApp, RawConfig, RawRoute};
use super::wording::{humanize, suggestion};

/// Upper bound on retries within one piece; each retry removes one node.
const MAX_ATTEMPTS: usize = 64;

/// The file is not YAML at all: one problem, at serde_yaml's position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SyntaxError {
    pub message: String,
    pub location: Option<(usize, usize)>,
    /// Known for a repeated key.
    pub key_path: Option<String>,
}

/// The top level, one `Value` per section, so each section is read on its
/// own. Must list the same keys as [`RawConfig`] (a test checks it).
#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with proxy, admin, state_dir, apps and routes"
)]
struct Sections {
    proxy: Option<Value>,
    admin: Option<Value>,
    state_dir: Option<Value>,
    apps: Option<Value>,
    routes: Option<Value>,
}

/// Reads `source` into a [`RawConfig`], pushing structural problems (unknown
/// keys, wrong types) into `findings`.
pub(crate) fn read(source: &str, findings: &mut Findings) -> Result<RawConfig, SyntaxError> {
    let document: Value = serde_yaml::from_str(source).map_err(|e| syntax_error(e, source))?;
    if document.is_null() {
        findings.push(
            "",
            "the file is empty; it needs at least apps: and routes: (see the example deploy.yaml)",
        );
        findings.suppress("");
        return Ok(RawConfig::default());
    }
    let sections: Sections = piece(document, "", findings);
    Ok(RawConfig {
        proxy: sections.proxy.and_then(|v| piece(v, "proxy", findings)),
        admin: sections.admin.and_then(|v| piece(v, "admin", findings)),
        state_dir: sections.state_dir.and_then(|v| piece(v, "state_dir", findings)),
        apps: sections.apps.and_then(|v| read_apps(v, findings)),
        routes: sections.routes.and_then(|v| read_routes(v, findings)),
    })
}

fn read_apps(value: Value, findings: &mut Findings) -> Option<BTreeMap<String, RawApp>> {
    let mapping = match value {
        Value::Null => return None,
        Value::Mapping(mapping) => mapping,
        other => {
            findings.push(
                "apps",
                format!(
                    "apps must map each app's name to its settings, e.g. apps: {{ web: {{ command: [\"bin/web\"] }} }}; found {}",
                    kind(&other)
                ),
            );
            findings.suppress("apps");
            return None;
        }
    };
    let mut apps = BTreeMap::new();
    for (name, app) in mapping {
        // `2048:` is a fine app name even though YAML reads it as a number.
        let name = match name {
            Value::String(name) => name,
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            other => {
                findings.push(
                    "apps",
                    format!("an app name is {}; app names look like web or api-v2", kind(&other)),
                );
                continue;
            }
        };
        let app = piece::<RawApp>(app, &join_key("apps", &name), findings);
        apps.insert(name, app);
    }
    Some(apps)
}

fn read_routes(value: Value, findings: &mut Findings) -> Option<Vec<RawRoute>> {
    let list = match value {
        Value::Null => return None,
        Value::Sequence(list) => list,
        other => {
            findings.push(
                "routes",
                format!(
                    "routes must be a list, one route per item, e.g. routes: [{{ host: \"*\", path: /, app: web }}]; found {}",
                    kind(&other)
                ),
            );
            findings.suppress("routes");
            return None;
        }
    };
    Some(
        list.into_iter()
            .enumerate()
            .map(|(i, route)| piece::<RawRoute>(route, &format!("routes[{i}]"), findings))
            .collect(),
    )
}

/// Deserializes one piece of the document at key path `prefix`, reporting
/// every problem in it. Returns the piece without its faulty nodes, or the
/// default when the piece as a whole has the wrong shape.
fn piece<T: DeserializeOwned + Default>(mut value: Value, prefix: &str, findings: &mut Findings) -> T {
    for _ in 0..MAX_ATTEMPTS {
        let error = match serde_path_to_error::deserialize::<_, T>(value.clone()) {
            Ok(piece) => return piece,
            Err(error) => error,
        };
        let segments: Vec<Segment> = error.path().iter().cloned().collect();
        let at = key_path(prefix, &segments);
        let serde_message = error.inner().to_string();
        findings.push(at.clone(), humanize(&serde_message));
        findings.suppress(at);
        // `comand:` with no `command:` beside it: the unknown-key message
        // already says what to do, so "command is missing" would be noise.
        if let Some(near) = suggestion(&serde_message) {
            let parent = &segments[..segments.len().saturating_sub(1)];
            if !has_key(&value, parent, &near) {
                findings.suppress(join_key(&key_path(prefix, parent), &near));
            }
        }
        // A list item cannot be removed without renumbering its siblings, so
        // a bad item removes its whole list: one problem per list at a time.
        let keep = segments
            .iter()
            .rposition(|s| matches!(s, Segment::Map { .. }))
            .map_or(0, |i| i + 1);
        let target = &segments[..keep];
        findings.suppress(key_path(prefix, target));
        if target.is_empty() || !remove(&mut value, target) {
            break;
        }
    }
    findings.suppress(prefix);
    T::default()
}

/// `prefix` followed by the segments: `apps.web` + `[health, interval]`.
fn key_path(prefix: &str, segments: &[Segment]) -> String {
    let mut path = prefix.to_string();
    for segment in segments {
        match segment {
            Segment::Seq { index } => path.push_str(&format!("[{index}]")),
            Segment::Map { key } => path = join_key(&path, key),
            Segment::Enum { variant } => path = join_key(&path, variant),
            // A key serde could not name (e.g. a list used as a key): the
            // enclosing path is the best we can say.
            Segment::Unknown => {}
        }
    }
    path
}

/// Removes the node at `segments` (all `Map` segments but possibly inner
/// `Seq` ones). Returns false when there is no such node.
fn remove(value: &mut Value, segments: &[Segment]) -> bool {
    let Some((last, parents)) = segments.split_last() else {
        return false;
    };
    let mut node = value;
    for segment in parents {
        let child = match (segment, node) {
            (Segment::Map { key }, Value::Mapping(map)) => map.get_mut(key.as_str()),
            (Segment::Seq { index }, Value::Sequence(list)) => list.get_mut(*index),
            _ => None,
        };
        match child {
            Some(child) => node = child,
            None => return false,
        }
    }
    match (last, node) {
        // shift_remove keeps the order, so problems are found in file order.
        (Segment::Map { key }, Value::Mapping(map)) => map.shift_remove(key.as_str()).is_some(),
        _ => false,
    }
}

/// The key path (if serde_yaml gave one) and the number of an integer too
/// large for a YAML value, from serde_yaml's message.
fn too_large_integer(message: &str) -> Option<(Option<String>, &str)> {
    let at = message.find("invalid type: integer `")?;
    let rest = &message[at + "invalid type: integer `".len()..];
    let (number, tail) = rest.split_once('`')?;
    if !(tail.starts_with(" as u128") || tail.starts_with(" as i128")) {
        return None;
    }
    let path = message[..at]
        .strip_suffix(": ")
        .filter(|p| !p.is_empty())
        .map(str::to_string);
    Some((path, number))
}

/// True when the mapping at `segments` has `key`.
fn has_key(value: &Value, segments: &[Segment], key: &str) -> bool {
    let mut node = value;
    for segment in segments {
        let child = match (segment, node) {
            (Segment::Map { key }, Value::Mapping(map)) => map.get(key.as_str()),
            (Segment::Seq { index }, Value::Sequence(list)) => list.get(*index),
            _ => None,
        };
        match child {
            Some(child) => node = child,
            None => return false,
        }
    }
    matches!(node, Value::Mapping(map) if map.contains_key(key))
}

fn syntax_error(error: serde_yaml::Error, source: &str) -> SyntaxError {
    let location = error.location().map(|l| (l.line(), l.column()));
    let message = error.to_string();
    if message.contains("more than one document") {
        return SyntaxError {
            message: "the file holds more than one YAML document (separated by ---); keep only one".into(),
            location: None,
            key_path: None,
        };
    }
    // serde_yaml words it "[path: ]duplicate entry with key \"K\"".
    const DUPLICATE: &str = "duplicate entry with key ";
    if let Some(key) = message.find(DUPLICATE).map(|i| &message[i + DUPLICATE.len()..]) {
        // serde_yaml points at the mapping; point at the repeat instead.
        let key = key.split(" at line ").next().unwrap_or(key).trim_matches('"');
        let repeat = Locations::scan(source).duplicate(key);
        return SyntaxError {
            message: format!("key \"{key}\" appears twice in the same mapping; keep one"),
            location: repeat.as_ref().map(|(_, place)| *place).or(location),
            key_path: repeat.map(|(path, _)| path),
        };
    }
    // A whole number past 64 bits cannot even be held as a YAML value;
    // serde_yaml words it "[path: ]invalid type: integer `N` as u128,
    // expected any YAML value".
    if let Some((path, number)) = too_large_integer(&message) {
        return SyntaxError {
            message: format!(
                "the number {number} is too large for any setting (none takes more than 64 bits); \
                 the file cannot be read further until it is fixed"
            ),
            location,
            key_path: path,
        };
    }
    // serde_yaml appends the position we already show in front.
    let message = match location {
        Some((line, col)) => message.replacen(&format!(" at line {line} column {col}"), "", 1),
        None => message,
    };
    SyntaxError {
        message: format!("invalid YAML: {message}"),
        location,
        key_path: None,
    }
}

/// What kind of YAML node `value` is, for messages.
fn kind(value: &Value) -> String {
    match value {
        Value::Null => "an empty value".to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => format!("the string {s:?}"),
        Value::Sequence(_) => "a list".to_string(),
        Value::Mapping(_) => "a mapping".to_string(),
        Value::Tagged(tagged) => format!("a value tagged {}", tagged.tag),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_ok(source: &str) -> (RawConfig, Vec<(String, String)>) {
        let mut findings = Findings::default();
        let raw = read(source, &mut findings).expect("valid YAML");
        let list = findings
            .into_problems("f", &Default::default())
            .0
            .into_iter()
            .map(|p| (p.key_path.unwrap_or_default(), p.message))
            .collect();
        (raw, list)
    }

    #[test]
    fn sections_list_the_same_keys_as_raw_config() {
        let all = "{ proxy: {}, admin: {}, state_dir: x, apps: {}, routes: [] }";
        assert!(serde_yaml::from_str::<RawConfig>(all).is_ok());
        assert!(serde_yaml::from_str::<Sections>(all).is_ok());
        let err = serde_yaml::from_str::<RawConfig>("nope: 1").unwrap_err().to_string();
        let sections_err = serde_yaml::from_str::<Sections>("nope: 1").unwrap_err().to_string();
        assert_eq!(err, sections_err);
    }

    #[test]
    fn every_problem_in_one_app_is_reported() {
        let (raw, found) =
            read_ok("apps:\n  web:\n    comand: [x]\n    instances: two\n    health: { pth: /h, interval: 1s }\n");
        let keys: Vec<&str> = found.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["apps.web.comand", "apps.web.instances", "apps.web.health.pth"]);
        // What could be read survives.
        let web = &raw.apps.unwrap()["web"];
        assert_eq!(
            web.health.as_ref().and_then(|h| h.interval.clone()).map(|d| d.0),
            Some("1s".into())
        );
    }

    #[test]
    fn a_bad_list_item_is_reported_with_its_index() {
        let (_, found) = read_ok("proxy:\n  listen: [\"a:1\", 2]\n");
        assert_eq!(found[0].0, "proxy.listen[1]");
        assert_eq!(found[0].1, "expected a string, found the number 2");
    }

    #[test]
    fn a_number_past_64_bits_is_named_with_its_key() {
        for number in ["18446744073709551616", "-99999999999999999999"] {
            let mut findings = Findings::default();
            let source = format!("apps:\n  web: {{ command: [x], instances: {number} }}\n");
            let err = read(&source, &mut findings).unwrap_err();
            assert_eq!(err.key_path.as_deref(), Some("apps.web.instances"));
            assert_eq!(
                err.message,
                format!(
                    "the number {number} is too large for any setting (none takes more than 64 bits); \
                     the file cannot be read further until it is fixed"
                )
            );
            assert_eq!(err.location.map(|(line, _)| line), Some(2));
        }
    }

    #[test]
    fn syntax_errors_carry_serde_yaml_position() {
        let mut findings = Findings::default();
        let err = read("a: [b\n", &mut findings).unwrap_err();
        assert_eq!(err.location, Some((2, 1)));
        assert!(
            err.message
                .starts_with("invalid YAML: did not find expected ',' or ']'"),
            "{}",
            err.message
        );
    }

    #[test]
    fn unknown_key_messages_suggest_the_closest_key() {
        let (_, found) = read_ok("apps:\n  web:\n    comand: [x]\n");
        assert_eq!(
            found[0].1,
            "unknown key \"comand\" (did you mean \"command\"?); expected one of command, cwd, env, \
             instances, health, hooks, drain_timeout, stop_timeout, deploy_strategy, manual_deployments, upstream, error_pages, canary, bluegreen"
        );
    }
}
