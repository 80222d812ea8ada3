//! Every duration and count has bounds (`config::bounds`); values outside
//! them are problems naming the bound, placed at the key's line and column.
//! Regression tests for values that passed `validate` and then panicked at
//! run time (`500000000000y`, `18446744073709551615s`, `threads: 100000`,
//! `idle_timeout: 0s`).

use std::time::Duration;

use super::*;
use crate::config::bounds::{self, DurationBounds, DURATIONS};
use crate::config::rules::human;

/// A config with every duration key written out, each with a value that
/// lets any other key take any value within its own bounds (long-lived
/// notices take no time, drains are as long as allowed, a probe is as short
/// as allowed and a start as long as allowed), with `key` set to `value`.
fn every_duration_with(key: &str, value: &str) -> String {
    let mut values: Vec<(&str, String)> = vec![
        ("proxy.hold_timeout", "30s".into()),
        ("proxy.limits.header_timeout", "10s".into()),
        ("proxy.limits.keepalive_timeout", "75s".into()),
        ("proxy.long_lived.spread", "0s".into()),
        ("proxy.long_lived.close_grace", "0s".into()),
        ("proxy.long_lived.idle_timeout", "1h".into()),
        ("apps.*.health.interval", "500ms".into()),
        ("apps.*.health.timeout", "1ns".into()),
        ("apps.*.health.start_timeout", "1h".into()),
        ("apps.*.drain_timeout", "24h".into()),
        ("apps.*.stop_timeout", "10s".into()),
        ("proxy.tls.hsts", "0s".into()),
        ("apps.*.bluegreen.keep_previous", "5m".into()),
    ];
    let slot = values.iter_mut().find(|(k, _)| *k == key);
    slot.unwrap_or_else(|| panic!("no key {key}")).1 = value.to_string();
    let v = |k: &str| {
        values
            .iter()
            .find(|(name, _)| *name == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    format!(
        "proxy:\n\
         \x20 hold_timeout: {}\n\
         \x20 limits:\n\
         \x20   header_timeout: {}\n\
         \x20   keepalive_timeout: {}\n\
         \x20 long_lived:\n\
         \x20   spread: {}\n\
         \x20   close_grace: {}\n\
         \x20   idle_timeout: {}\n\
         \x20 tls:\n\
         \x20   hsts: {}\n\
         \x20   certificates: [{{ hosts: [example.com], cert: c.pem, key: c.key }}]\n\
         apps:\n\
         \x20 web:\n\
         \x20   command: [bin/web]\n\
         \x20   health:\n\
         \x20     interval: {}\n\
         \x20     timeout: {}\n\
         \x20     start_timeout: {}\n\
         \x20   drain_timeout: {}\n\
         \x20   stop_timeout: {}\n\
         \x20   bluegreen:\n\
         \x20     keep_previous: {}\n\
         routes:\n\
         \x20 - app: web\n",
        v("proxy.hold_timeout"),
        v("proxy.limits.header_timeout"),
        v("proxy.limits.keepalive_timeout"),
        v("proxy.long_lived.spread"),
        v("proxy.long_lived.close_grace"),
        v("proxy.long_lived.idle_timeout"),
        v("proxy.tls.hsts"),
        v("apps.*.health.interval"),
        v("apps.*.health.timeout"),
        v("apps.*.health.start_timeout"),
        v("apps.*.drain_timeout"),
        v("apps.*.stop_timeout"),
        v("apps.*.bluegreen.keep_previous"),
    )
}

/// Asserts one problem at `key` (with `apps.*` as `apps.web`), on the line
/// that writes it, with `message`.
#[track_caller]
fn assert_out_of_bounds(source: &str, key: &str, message: &str) {
    let key_path = key.replace("apps.*", "apps.web");
    let found = problems(source);
    let shown: Vec<String> = found.iter().map(|p| p.to_string()).collect();
    assert_eq!(found.len(), 1, "{key}: {shown:#?}");
    assert_eq!(found[0].key_path.as_deref(), Some(key_path.as_str()), "{shown:#?}");
    assert_eq!(found[0].message, message, "{shown:#?}");
    let (line, col) = found[0].location.expect("placed at line:col");
    let leaf = key.rsplit('.').next().unwrap_or(key);
    let text = source.lines().nth(line - 1).unwrap_or_default();
    assert_eq!(&text[col - 1..col - 1 + leaf.len()], leaf, "{shown:#?}");
}

#[test]
fn the_base_config_is_valid() {
    parse_ok(&every_duration_with("proxy.hold_timeout", "30s"));
}

#[test]
fn absurd_durations_are_refused_naming_the_bound() {
    for (key, bounds) in DURATIONS {
        for absurd in ["500000000000y", "18446744073709551615s", "18446744073709551616s"] {
            assert_out_of_bounds(
                &every_duration_with(key, absurd),
                key,
                &format!("must be at most {}, got {absurd}", human(bounds.max)),
            );
        }
    }
}

#[test]
fn every_duration_is_accepted_at_both_bounds_and_refused_just_outside() {
    for (key, bounds) in DURATIONS {
        for edge in [bounds.min, bounds.max] {
            parse_ok(&every_duration_with(key, &humantime::format_duration(edge).to_string()));
        }
        let above = format!("{} 1ms", human(bounds.max));
        assert_out_of_bounds(
            &every_duration_with(key, &above),
            key,
            &format!("must be at most {}, got {above}", human(bounds.max)),
        );
        if bounds.min.is_zero() {
            continue;
        }
        let below = if bounds.min <= Duration::from_nanos(1) {
            "0s".to_string()
        } else {
            format!("{}ms", bounds.min.as_millis() - 1)
        };
        let message = if bounds.min <= Duration::from_nanos(1) {
            "must be greater than zero, e.g. 500ms or 30s".to_string()
        } else {
            format!("must be at least {}, got {below}", human(bounds.min))
        };
        assert_out_of_bounds(&every_duration_with(key, &below), key, &message);
    }
}

#[test]
fn the_documented_bounds() {
    let b = |key: &str| DURATIONS.iter().find(|(k, _)| *k == key).map(|(_, b)| *b).unwrap();
    let range = |min: u64, max: u64| DurationBounds {
        min: Duration::from_millis(min),
        max: Duration::from_millis(max),
    };
    const S: u64 = 1000;
    const M: u64 = 60 * S;
    const H: u64 = 60 * M;
    assert_eq!(b("proxy.hold_timeout").max, Duration::from_millis(10 * M));
    assert_eq!(b("proxy.limits.header_timeout"), range(100, 10 * M));
    assert_eq!(b("proxy.limits.keepalive_timeout"), range(S, H));
    assert_eq!(b("proxy.long_lived.spread"), range(0, 10 * M));
    assert_eq!(b("proxy.long_lived.close_grace"), range(0, 10 * M));
    assert_eq!(b("proxy.long_lived.idle_timeout"), range(S, 7 * 24 * H));
    assert_eq!(b("apps.*.health.interval"), range(10, H));
    assert_eq!(b("apps.*.health.timeout").max, Duration::from_millis(M));
    assert_eq!(b("apps.*.health.start_timeout").max, Duration::from_millis(H));
    assert_eq!(b("apps.*.drain_timeout"), range(0, 24 * H));
    assert_eq!(b("apps.*.stop_timeout"), range(0, H));
    assert_eq!(bounds::THREADS, (1, 256));
    assert_eq!(bounds::INSTANCES, (1, 64));
}

#[test]
fn a_huge_duration_in_a_config_with_other_problems_is_reported_with_them() {
    let source = MINIMAL.replace(
        "    command: [bin/web]\n",
        "    command: [bin/web]\n    drain_timeout: 500000000000y\n    stop_timeout: 18446744073709551615s\n    instances: 0\n",
    );
    let shown: Vec<String> = problems(&source).iter().map(|p| p.to_string()).collect();
    assert_eq!(
        shown,
        [
            "deploy.yaml:4:5: apps.web.drain_timeout: must be at most 24h, got 500000000000y",
            "deploy.yaml:5:5: apps.web.stop_timeout: must be at most 1h, got 18446744073709551615s",
            "deploy.yaml:6:5: apps.web.instances: instances must be between 1 and 64, got 0",
        ]
    );
}

// === spread + close_grace <= drain_timeout ===

#[test]
fn a_drain_shorter_than_the_notice_window_is_refused_at_the_drain() {
    let source = format!(
        "proxy:\n  long_lived: {{ spread: 2s, close_grace: 1s }}\n{}",
        web_with("drain_timeout: 2500ms")
    );
    let found = problems(&source);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(
        found[0].to_string(),
        "deploy.yaml:6:5: apps.web.drain_timeout: drain_timeout (2500ms) is shorter than \
         proxy.long_lived.spread + close_grace (2s + 1s = 3s), so a WebSocket or SSE client could be cut before \
         its close notice; raise drain_timeout to at least 3s, or lower proxy.long_lived.spread or close_grace"
    );
    // Exactly the window is enough.
    parse_ok(&source.replace("2500ms", "3s"));
}

#[test]
fn a_defaulted_drain_is_named_as_the_default() {
    let source = format!("proxy:\n  long_lived: {{ spread: 20s, close_grace: 11s }}\n{MINIMAL}");
    let found = problems(&source);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].key_path.as_deref(), Some("apps.web.drain_timeout"));
    assert!(
        found[0].message.starts_with(
            "drain_timeout (30s, the default) is shorter than proxy.long_lived.spread + close_grace (20s + 11s = 31s)"
        ),
        "{}",
        found[0].message
    );
    // Placed at the app, as the key is not written.
    assert_eq!(found[0].location, Some((4, 3)));
}

#[test]
fn each_app_is_checked_against_the_notice_window() {
    let source = "proxy: { long_lived: { spread: 5s, close_grace: 5s } }\n\
                  apps:\n  web: { command: [bin/web], drain_timeout: 10s }\n  \
                  api: { command: [bin/api], drain_timeout: 9s }\n\
                  routes: [{ app: web }]\n";
    let found = problems(source);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].key_path.as_deref(), Some("apps.api.drain_timeout"));
}

#[test]
fn the_notice_window_is_not_checked_against_a_value_already_refused() {
    // The spread is reported; its default is not compared with the drain.
    let source = format!(
        "proxy:\n  long_lived: {{ spread: 1y }}\n{}",
        web_with("drain_timeout: 1s")
    );
    let found = problems(&source);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].key_path.as_deref(), Some("proxy.long_lived.spread"));
    let source = web_with("drain_timeout: 2y");
    assert_eq!(problems(&source).len(), 1);
}
