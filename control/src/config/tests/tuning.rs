//! `proxy.tuning`: the data plane's buffer and task sizes. Optional, each
//! key defaulted to what the data plane measured best, each bounded, every
//! problem placed at its key's line and column.

use super::*;
use crate::config::bounds::TUNING;
use crate::config::validate::DEFAULT_TUNING;

fn with_tuning(tuning: &str) -> String {
    format!("proxy:\n  tuning:\n{tuning}{MINIMAL}")
}

/// `value` written for `key` (`proxy.tuning.<leaf>`), alone under `tuning:`.
fn tuning_key(key: &str, value: &str) -> String {
    let leaf = key.rsplit('.').next().unwrap_or(key);
    with_tuning(&format!("    {leaf}: {value}\n"))
}

/// Asserts one problem at `key_path`, placed where `source` writes the key
/// (`leaf` at the reported line and column), with `message`.
#[track_caller]
fn assert_placed(source: &str, key_path: &str, message: &str) {
    let found = problems(source);
    let shown: Vec<String> = found.iter().map(|p| p.to_string()).collect();
    assert_eq!(found.len(), 1, "{shown:#?}");
    assert_eq!(found[0].key_path.as_deref(), Some(key_path), "{shown:#?}");
    assert_eq!(found[0].message, message, "{shown:#?}");
    let (line, col) = found[0].location.expect("placed at line:col");
    let leaf = key_path.rsplit('.').next().unwrap_or(key_path);
    let text = source.lines().nth(line - 1).unwrap_or_default();
    assert_eq!(text.get(col - 1..col - 1 + leaf.len()), Some(leaf), "{shown:#?}");
}

#[test]
fn without_tuning_every_key_takes_the_data_planes_default() {
    let defaults = cutover_proxy::Tuning::default();
    let expected = TuningConfig {
        l4_read_buffer: defaults.l4_read_buffer,
        listener_tasks: defaults.listener_tasks,
        upstream_pool: defaults.upstream_pool,
    };
    assert_eq!(DEFAULT_TUNING, expected, "the two defaults agree");
    assert_eq!(parse_ok(MINIMAL).proxy.tuning, expected);
    // An empty section, and a null one, are the same as none.
    assert_eq!(
        parse_ok(&format!("proxy: {{ tuning: {{}} }}\n{MINIMAL}")).proxy.tuning,
        expected
    );
    assert_eq!(parse_ok(&with_tuning("")).proxy.tuning, expected);
}

#[test]
fn each_key_is_read_and_the_others_keep_their_defaults() {
    let tuning = |t: &str| parse_ok(&with_tuning(t)).proxy.tuning;
    assert_eq!(
        tuning("    l4_read_buffer: 65536\n"),
        TuningConfig {
            l4_read_buffer: 65536,
            ..DEFAULT_TUNING
        }
    );
    assert_eq!(
        tuning("    listener_tasks: 4\n"),
        TuningConfig {
            listener_tasks: 4,
            ..DEFAULT_TUNING
        }
    );
    assert_eq!(
        tuning("    upstream_pool: 0\n"),
        TuningConfig {
            upstream_pool: 0,
            ..DEFAULT_TUNING
        }
    );
    assert_eq!(
        tuning("    l4_read_buffer: 4096\n    listener_tasks: 2\n    upstream_pool: 1024\n"),
        TuningConfig {
            l4_read_buffer: 4096,
            listener_tasks: 2,
            upstream_pool: 1024,
        }
    );
}

#[test]
fn the_documented_bounds() {
    let b = |key: &str| TUNING.iter().find(|(k, _)| *k == key).map(|(_, b)| *b).unwrap();
    assert_eq!(b("proxy.tuning.l4_read_buffer"), (0, 1_048_576));
    assert_eq!(b("proxy.tuning.listener_tasks"), (1, 16));
    assert_eq!(b("proxy.tuning.upstream_pool"), (0, 65_536));
}

#[test]
fn every_key_is_accepted_at_both_bounds_and_refused_just_outside() {
    for (key, (min, max)) in TUNING {
        for edge in [min, max] {
            parse_ok(&tuning_key(key, &edge.to_string()));
        }
        for outside in [min - 1, max + 1, i64::MIN, i64::MAX] {
            assert_placed(
                &tuning_key(key, &outside.to_string()),
                key,
                &format!("must be between {min} and {max}, got {outside}"),
            );
        }
    }
}

#[test]
fn the_range_is_named_in_the_message() {
    let found = problems(&tuning_key("listener_tasks", "0"));
    assert_eq!(
        found[0].to_string(),
        "deploy.yaml:3:5: proxy.tuning.listener_tasks: must be between 1 and 16, got 0"
    );
    let found = problems(&tuning_key("l4_read_buffer", "2097152"));
    assert_eq!(
        found[0].to_string(),
        "deploy.yaml:3:5: proxy.tuning.l4_read_buffer: must be between 0 and 1048576, got 2097152"
    );
}

#[test]
fn wrong_types_say_what_was_expected() {
    for (key, _) in TUNING {
        assert_placed(
            &tuning_key(key, "lots"),
            key,
            "expected a whole number, found the string \"lots\"",
        );
        assert_placed(
            &tuning_key(key, "1.5"),
            key,
            "expected a whole number, found the number 1.5",
        );
    }
    // Beyond 64 bits: the reader stops at the number itself.
    let found = problems(&tuning_key("upstream_pool", "18446744073709551616"));
    assert_eq!(
        found.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
        [
            "deploy.yaml:3:20: proxy.tuning.upstream_pool: the number 18446744073709551616 is too large for any \
             setting (none takes more than 64 bits); the file cannot be read further until it is fixed"
        ]
    );
    // The section itself must be a mapping.
    let found = problems(&format!("proxy:\n  tuning: 256\n{MINIMAL}"));
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].key_path.as_deref(), Some("proxy.tuning"));
    assert_eq!(found[0].location, Some((2, 3)));
    assert!(
        found[0]
            .message
            .contains("l4_read_buffer, listener_tasks and upstream_pool"),
        "{}",
        found[0].message
    );
}

#[test]
fn unknown_keys_under_tuning_are_errors_with_a_suggestion() {
    assert_placed(
        &with_tuning("    upstream_pol: 10\n"),
        "proxy.tuning.upstream_pol",
        "unknown key \"upstream_pol\" (did you mean \"upstream_pool\"?); expected one of l4_read_buffer, \
         listener_tasks, upstream_pool",
    );
    assert_placed(
        &with_tuning("    read_ahead: 10\n"),
        "proxy.tuning.read_ahead",
        "unknown key \"read_ahead\"; expected one of l4_read_buffer, listener_tasks, upstream_pool",
    );
}

#[test]
fn every_problem_in_tuning_is_reported_with_the_rest_of_the_file() {
    let source = "proxy:\n  threads: 0\n  tuning:\n    l4_read_buffer: -1\n    listener_tasks: many\n    \
                  upstream_pool: 70000\n    spare: 1\n"
        .to_string()
        + MINIMAL;
    let shown: Vec<String> = problems(&source).iter().map(|p| p.to_string()).collect();
    assert_eq!(
        shown,
        [
            "deploy.yaml:2:3: proxy.threads: threads must be between 1 and 256, got 0; leave it out to use one per CPU",
            "deploy.yaml:4:5: proxy.tuning.l4_read_buffer: must be between 0 and 1048576, got -1",
            "deploy.yaml:5:5: proxy.tuning.listener_tasks: expected a whole number, found the string \"many\"",
            "deploy.yaml:6:5: proxy.tuning.upstream_pool: must be between 0 and 65536, got 70000",
            "deploy.yaml:7:5: proxy.tuning.spare: unknown key \"spare\"; expected one of l4_read_buffer, \
             listener_tasks, upstream_pool",
        ]
    );
}
