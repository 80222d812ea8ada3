//! Property tests: random configs through `parse` (never a panic: a config
//! or a list of problems) and, where valid, through the arithmetic the
//! runtime does with the values. The runtime's own expressions are repeated
//! here as written (unchecked `Instant + Duration`, `Duration + Duration`),
//! each naming the code it stands for, so a bound too loose for them fails
//! here rather than in production.

use std::time::{Duration, Instant};

use proptest::prelude::*;
use serde_yaml::{Mapping, Value};

use super::{base, parse_ok, EXAMPLE};
use crate::config::bounds::{self, DurationBounds, DURATIONS};
use crate::config::timing;
use crate::config::{parse, Config, ConfigError};

// === random values ===

fn text(s: impl Into<String>) -> Value {
    Value::String(s.into())
}

/// Strings an operator, a typo or an attacker might write: empty, blank,
/// unicode, control characters, YAML-looking text.
fn junk_string() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(text("")),
        Just(text("  ")),
        Just(text("\0")),
        Just(text("∞")),
        Just(text("1\u{2009}s")),
        Just(text("null")),
        Just(text("~")),
        "\\PC{0,12}".prop_map(text),
        "[ -~]{0,12}".prop_map(text),
    ]
}

/// Numbers of every kind YAML has: small, negative, huge, floats.
fn junk_number() -> impl Strategy<Value = Value> {
    prop_oneof![
        (-5i64..300).prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        Just(Value::from(1e20)),
        Just(Value::from(-0.5)),
        Just(Value::from(f64::NAN)),
    ]
}

/// Anything at all in place of a value: scalars, lists, mappings.
fn junk() -> impl Strategy<Value = Value> {
    let scalar = prop_oneof![
        junk_string(),
        junk_number(),
        any::<bool>().prop_map(Value::Bool),
        Just(Value::Null),
    ];
    scalar.prop_recursive(2, 8, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Sequence),
            prop::collection::vec(("[a-z_]{1,8}", inner), 0..3)
                .prop_map(|entries| { Value::Mapping(entries.into_iter().map(|(k, v)| (text(k), v)).collect()) }),
        ]
    })
}

/// A duration as written, any size: plausible numbers in every unit,
/// absurd ones, junk.
fn wild_duration() -> BoxedStrategy<Value> {
    let unit = prop::sample::select(vec!["ns", "us", "ms", "s", "m", "h", "d", "w", "M", "y"]);
    prop_oneof![
        4 => (0u64..5000, unit.clone()).prop_map(|(n, u)| text(format!("{n}{u}"))),
        2 => (any::<u64>(), unit).prop_map(|(n, u)| text(format!("{n}{u}"))),
        2 => prop::sample::select(vec![
            "500000000000y",
            "18446744073709551615s",
            "18446744073709551616s",
            "584942417355y",
            "1h 30m",
            "-5s",
            "0",
            "0s",
        ])
        .prop_map(text),
        1 => junk(),
    ]
    .boxed()
}

/// A duration that parses, of any size: what a typo or an attacker gives
/// one key while the rest of the file is fine.
fn absurd_duration() -> BoxedStrategy<Value> {
    let unit = prop::sample::select(vec!["ns", "us", "ms", "s", "m", "h", "d", "w", "M", "y"]);
    prop_oneof![
        (0u64..100_000, unit.clone()).prop_map(|(n, u)| text(format!("{n}{u}"))),
        (any::<u64>(), prop::sample::select(vec!["ns", "us", "ms", "s"])).prop_map(|(n, u)| text(format!("{n}{u}"))),
        prop::sample::select(vec!["500000000000y", "18446744073709551615s", "0s", "1ns"]).prop_map(text),
    ]
    .boxed()
}

/// A duration within `bounds`, in a unit chosen at random (whole units
/// where they fit, else nanoseconds).
fn sane_duration(bounds: DurationBounds) -> BoxedStrategy<Value> {
    let (min, max) = (bounds.min.as_nanos() as u64, bounds.max.as_nanos() as u64);
    let units = vec![
        ("ns", 1u64),
        ("ms", 1_000_000),
        ("s", 1_000_000_000),
        ("m", 60_000_000_000),
    ];
    (min..=max, prop::sample::select(units))
        .prop_map(move |(nanos, (unit, size))| {
            let whole = nanos / size;
            if whole * size >= min && whole > 0 {
                text(format!("{whole}{unit}"))
            } else {
                text(format!("{nanos}ns"))
            }
        })
        .boxed()
}

/// A whole number of any kind: small, negative, huge, junk.
fn wild_count() -> BoxedStrategy<Value> {
    prop_oneof![
        3 => (-2i64..300).prop_map(Value::from),
        2 => junk_number(),
        1 => junk(),
    ]
    .boxed()
}

/// `sane` with probability `1 - p_wild`, else `wild`.
fn field(p_wild: f64, sane: BoxedStrategy<Value>, wild: BoxedStrategy<Value>) -> BoxedStrategy<Value> {
    let wild_weight = (p_wild * 1000.0) as u32;
    if wild_weight == 0 {
        return sane;
    }
    prop_oneof![1000 - wild_weight => sane, wild_weight => wild].boxed()
}

/// One of the strings in `pool`.
fn pick(pool: &'static [&'static str]) -> BoxedStrategy<Value> {
    prop::sample::select(pool).prop_map(text).boxed()
}

/// A list of strings from `pool`, `len` long.
fn list(pool: &'static [&'static str], len: std::ops::Range<usize>) -> BoxedStrategy<Value> {
    prop::collection::vec(pick(pool), len).prop_map(Value::Sequence).boxed()
}

/// A mapping with each of `optional` present or not, each of `required`
/// present, and now and then an unknown key.
fn mapping(
    p_wild: f64,
    required: Vec<(&'static str, BoxedStrategy<Value>)>,
    optional: Vec<(&'static str, BoxedStrategy<Value>)>,
) -> BoxedStrategy<Value> {
    let required: Vec<_> = required
        .into_iter()
        .map(|(key, value)| value.prop_map(move |v| Some((key, v))).boxed())
        .collect();
    let optional: Vec<_> = optional
        .into_iter()
        .map(|(key, value)| {
            prop::option::weighted(0.6, value)
                .prop_map(move |v| v.map(|v| (key, v)))
                .boxed()
        })
        .collect();
    (
        required,
        optional,
        prop::option::weighted((p_wild / 4.0).max(0.001), junk()),
    )
        .prop_map(|(required, optional, unknown)| {
            let mut map = Mapping::new();
            for (key, value) in required.into_iter().chain(optional).flatten() {
                map.insert(text(key), value);
            }
            if let Some(value) = unknown {
                map.insert(text("surprise"), value);
            }
            Value::Mapping(map)
        })
        .boxed()
}

/// A random `deploy.yaml`: every key, each value sane (within its bounds)
/// or, with probability `p_wild`, anything at all; the duration key
/// numbered `absurd` (0 to 10, in the order below) gets a value of any size.
fn config_with(p_wild: f64, absurd: Option<usize>) -> BoxedStrategy<Value> {
    let d = |key: usize, bounds: DurationBounds| {
        if absurd == Some(key) {
            absurd_duration()
        } else {
            field(p_wild, sane_duration(bounds), wild_duration())
        }
    };
    let f = |sane: BoxedStrategy<Value>, wild: BoxedStrategy<Value>| field(p_wild, sane, wild);
    let j = || junk().boxed();
    let addresses: &'static [&'static str] = &["127.0.0.1:8080", "127.0.0.1:0", "[::1]:8081", "localhost:9180", ":80"];
    let limits = mapping(
        p_wild,
        vec![],
        vec![
            ("header_timeout", d(0, bounds::HEADER_TIMEOUT)),
            ("keepalive_timeout", d(1, bounds::KEEPALIVE_TIMEOUT)),
            (
                "max_connections",
                f((1i64..=1_000_000).prop_map(Value::from).boxed(), wild_count()),
            ),
        ],
    );
    let long_lived = mapping(
        p_wild,
        vec![],
        vec![
            ("spread", d(2, bounds::SPREAD)),
            ("close_grace", d(3, bounds::CLOSE_GRACE)),
            ("idle_timeout", d(4, bounds::IDLE_TIMEOUT)),
        ],
    );
    let count = |(min, max): (i64, i64)| f((min..=max).prop_map(Value::from).boxed(), wild_count());
    let tuning = mapping(
        p_wild,
        vec![],
        vec![
            ("l4_read_buffer", count(bounds::L4_READ_BUFFER)),
            ("listener_tasks", count(bounds::LISTENER_TASKS)),
            ("upstream_pool", count(bounds::UPSTREAM_POOL)),
        ],
    );
    let proxy = mapping(
        p_wild,
        vec![],
        vec![
            ("listen", f(list(&["127.0.0.1:8080"], 1..2), list(addresses, 0..3))),
            ("threads", f((1i64..=256).prop_map(Value::from).boxed(), wild_count())),
            ("hold_timeout", d(5, bounds::HOLD_TIMEOUT)),
            (
                "trusted_proxies",
                f(
                    list(&["10.0.0.0/8", "::1", "fd00::/8"], 0..3),
                    list(&["1.2.3.4/33", "x", ""], 0..2),
                ),
            ),
            ("limits", f(limits, j())),
            ("long_lived", f(long_lived, j())),
            ("tuning", f(tuning, j())),
        ],
    );
    let admin = mapping(
        p_wild,
        vec![],
        vec![
            ("listen", f(pick(&["127.0.0.1:9180", "[::1]:9181"]), pick(addresses))),
            (
                "token_env",
                f(pick(&["CUTOVER_ADMIN_TOKEN", "", "OTHER"]), pick(&["A=B", "\0"])),
            ),
            (
                "allowed_origins",
                f(
                    list(&["https://ops.example.com", "http://localhost:3000"], 0..3),
                    list(&["*", "null", "ftp://x", "https://x/p"], 0..2),
                ),
            ),
        ],
    );
    let health = mapping(
        p_wild,
        vec![],
        vec![
            ("path", f(pick(&["/health", "/h?x=1"]), pick(&["health", "/a b", ""]))),
            ("interval", d(6, bounds::HEALTH_INTERVAL)),
            ("timeout", d(7, bounds::HEALTH_TIMEOUT)),
            ("start_timeout", d(8, bounds::START_TIMEOUT)),
        ],
    );
    let app = mapping(
        p_wild,
        vec![(
            "command",
            f(list(&["bin/web", "--port"], 1..3), list(&["", "a\0b"], 0..2)),
        )],
        vec![
            ("cwd", f(pick(&[".", "/srv", "sub/dir"]), pick(&["", "\0"]))),
            (
                "env",
                f(mapping(p_wild, vec![], vec![("APP_MODE", pick(&["x", "", "∞"]))]), j()),
            ),
            ("instances", f((1i64..=64).prop_map(Value::from).boxed(), wild_count())),
            ("health", f(health, j())),
            (
                "hooks",
                f(mapping(p_wild, vec![], vec![("build", pick(&["", "make"]))]), j()),
            ),
            ("drain_timeout", d(9, bounds::DRAIN_TIMEOUT)),
            ("stop_timeout", d(10, bounds::STOP_TIMEOUT)),
            (
                "deploy_strategy",
                f(pick(&["rolling", "stopstart"]), pick(&["canary", ""])),
            ),
            (
                "manual_deployments",
                f(any::<bool>().prop_map(Value::Bool).boxed(), j()),
            ),
        ],
    );
    let name = f(pick(&["web"]), pick(&["api", "Bad", "", "web"]));
    let apps = prop::collection::vec((name, app), 1..3)
        .prop_map(|apps| Value::Mapping(apps.into_iter().collect()))
        .boxed();
    let route = mapping(
        p_wild,
        vec![("app", f(pick(&["web"]), pick(&["api", "nope", ""])))],
        vec![
            (
                "host",
                f(pick(&["*", "example.com", "*.example.com"]), pick(&["a:b", "", "*.*"])),
            ),
            ("path", f(pick(&["/", "/api", "/api/v1"]), pick(&["api", "/a?b"]))),
        ],
    );
    let routes = prop::collection::vec(route, 1..3).prop_map(Value::Sequence).boxed();
    mapping(
        p_wild,
        vec![("apps", f(apps, j())), ("routes", f(routes, j()))],
        vec![
            ("proxy", f(proxy, j())),
            ("admin", f(admin, j())),
            (
                "state_dir",
                f(pick(&[".cutover", "/var/lib/cutover"]), pick(&["", "\0"])),
            ),
        ],
    )
}

/// A random `deploy.yaml`, from all sane to mostly wild.
fn random_config() -> impl Strategy<Value = Value> {
    prop_oneof![
        prop::sample::select(vec![0.0, 0.01, 0.05, 0.3, 0.8]).prop_flat_map(|p| config_with(p, None)),
        (0usize..11).prop_flat_map(|key| config_with(0.0, Some(key))),
    ]
}

// === what a parse must give ===

/// Parses `source`; every outcome but a panic is acceptable, and problems
/// are well-formed.
fn parse_any(source: &str) -> Option<Config> {
    match parse(source, "deploy.yaml", base()) {
        Ok(config) => Some(config),
        Err(ConfigError::Invalid(problems)) => {
            assert!(!problems.is_empty(), "an invalid config names at least one problem");
            for problem in problems.iter() {
                assert!(!problem.message.is_empty(), "{problem}");
                if let Some((line, col)) = problem.location {
                    assert!(line >= 1 && col >= 1, "{problem}");
                }
            }
            None
        }
        Err(err) => panic!("parse of text gave {err}"),
    }
}

/// Every duration of a valid config, by key (`apps.*` per app).
fn durations(config: &Config) -> Vec<(String, Duration, DurationBounds)> {
    let proxy = &config.proxy;
    let mut all = vec![
        (
            "proxy.hold_timeout".to_string(),
            proxy.hold_timeout,
            bounds::HOLD_TIMEOUT,
        ),
        (
            "proxy.limits.header_timeout".into(),
            proxy.limits.header_timeout,
            bounds::HEADER_TIMEOUT,
        ),
        (
            "proxy.limits.keepalive_timeout".into(),
            proxy.limits.keepalive_timeout,
            bounds::KEEPALIVE_TIMEOUT,
        ),
        (
            "proxy.long_lived.spread".into(),
            proxy.long_lived.spread,
            bounds::SPREAD,
        ),
        (
            "proxy.long_lived.close_grace".into(),
            proxy.long_lived.close_grace,
            bounds::CLOSE_GRACE,
        ),
        (
            "proxy.long_lived.idle_timeout".into(),
            proxy.long_lived.idle_timeout,
            bounds::IDLE_TIMEOUT,
        ),
    ];
    for (name, app) in &config.apps {
        all.extend([
            (
                format!("apps.{name}.health.interval"),
                app.health.interval,
                bounds::HEALTH_INTERVAL,
            ),
            (
                format!("apps.{name}.health.timeout"),
                app.health.timeout,
                bounds::HEALTH_TIMEOUT,
            ),
            (
                format!("apps.{name}.health.start_timeout"),
                app.health.start_timeout,
                bounds::START_TIMEOUT,
            ),
            (
                format!("apps.{name}.drain_timeout"),
                app.drain_timeout,
                bounds::DRAIN_TIMEOUT,
            ),
            (
                format!("apps.{name}.stop_timeout"),
                app.stop_timeout,
                bounds::STOP_TIMEOUT,
            ),
        ]);
    }
    all
}

/// The invariants validation promises, then the runtime's arithmetic on
/// the values, exactly as the runtime writes it.
fn check_valid(config: &Config, attempt: u32) {
    for (key, value, bounds) in durations(config) {
        assert!(bounds.contains(value), "{key} = {value:?} outside {bounds:?}");
    }
    let threads = i64::try_from(config.proxy.threads).unwrap_or(i64::MAX);
    assert!((bounds::THREADS.0..=bounds::THREADS.1).contains(&threads));
    let tuning = &config.proxy.tuning;
    for (value, (min, max)) in [
        (tuning.l4_read_buffer, bounds::L4_READ_BUFFER),
        (tuning.listener_tasks, bounds::LISTENER_TASKS),
        (tuning.upstream_pool, bounds::UPSTREAM_POOL),
    ] {
        let value = i64::try_from(value).unwrap_or(i64::MAX);
        assert!(
            (min..=max).contains(&value),
            "proxy.tuning: {value} outside {min}..={max}"
        );
    }
    let window = timing::notice_window(&config.proxy.long_lived);
    for app in config.apps.values() {
        assert!((1..=64).contains(&app.instances));
        assert!(app.drain_timeout >= window, "spread + close_grace <= drain_timeout");
        assert!(app.health.timeout <= app.health.start_timeout);
    }

    let now = Instant::now();
    let tokio_now = tokio::time::Instant::now();
    let long_lived = &config.proxy.long_lived;
    // Every `Instant + duration` the runtime may do, with either clock, and
    // the checked helper agreeing with it.
    for (_, value, _) in durations(config) {
        assert_eq!(timing::deadline(now, value), now + value);
        assert_eq!(timing::deadline(tokio_now, value), tokio_now + value);
    }
    // proxy/src/service.rs `ProxyService::hold`: `start + hold_timeout`.
    let _ = tokio_now + config.proxy.hold_timeout;
    // proxy/src/longlived/websocket.rs: `last_activity + idle_timeout`,
    // `Instant::now() + jittered(spread)`, `Instant::now() + close_grace`.
    let _ = tokio_now + long_lived.idle_timeout;
    let _ = tokio_now + cutover_proxy::longlived::jittered(long_lived.spread);
    let _ = tokio_now + long_lived.close_grace;
    // proxy/src/longlived/sse.rs `finish`: `100 + jittered(spread).as_millis()`.
    let retry = timing::sse_retry_ms(long_lived.spread);
    assert!(retry >= 100 && retry <= 100 + long_lived.spread.as_millis());
    // The whole notice sequence of one connection fits in any app's drain.
    let _ = now + long_lived.spread + long_lived.close_grace;
    // src/up.rs: `max_drain(&config) + Duration::from_secs(5)`, and
    // `DataPlane::shutdown`: `Instant::now() + drain`.
    let drain = timing::shutdown_drain(config);
    let _ = drain + Duration::from_secs(5);
    let _ = tokio_now + drain;
    assert_eq!(timing::shutdown_grace(config), drain + Duration::from_secs(5));
    for previous in config.apps.values() {
        for target in config.apps.values() {
            // deploy/ops.rs `AppOps::drain_and_stop` then deploy/drain.rs
            // `drain_and_stop`: `Instant::now() + max(previous, target)`.
            let _ = tokio_now + previous.drain_timeout.max(target.drain_timeout);
            assert_eq!(
                timing::deploy_drain(previous, target),
                previous.drain_timeout.max(target.drain_timeout)
            );
        }
    }
    for app in config.apps.values() {
        // supervisor/instance.rs `run_once`: `Instant::now() + start_timeout`;
        // `become_ready`: `health.timeout.min(left)`, and
        // `tokio::time::interval(health.interval)` panics on zero.
        let ready_by = tokio_now + app.health.start_timeout;
        let left = ready_by.saturating_duration_since(tokio::time::Instant::now());
        assert!(timing::probe_timeout(&app.health, left) <= app.health.timeout);
        assert!(
            !app.health.interval.is_zero(),
            "tokio::time::interval panics on a zero period"
        );
        // supervisor/process.rs `Process::stop`: tokio::time::timeout(stop_timeout).
        let _ = tokio_now + app.stop_timeout;
    }
    // supervisor/instance.rs `run`: `timeout(backoff(attempt))`.
    let _ = tokio_now + timing::restart_backoff(attempt);
    // The keep-alive timeout given to pingora in whole seconds is never 0
    // ("no timeout" would be the 19,950-idle-connections finding again).
    assert!(config.proxy.limits.keepalive_timeout.as_secs() >= 1);
    assert_eq!(
        timing::keepalive_secs(config.proxy.limits.keepalive_timeout),
        config.proxy.limits.keepalive_timeout.as_secs()
    );
    let _ = tokio_now + config.proxy.limits.header_timeout;
}

/// A duration within `bounds`, written in nanoseconds (humantime reads them).
fn within(bounds: DurationBounds) -> impl Strategy<Value = Duration> {
    let (min, max) = (bounds.min.as_nanos() as u64, bounds.max.as_nanos() as u64);
    prop_oneof![Just(min), Just(max), min..=max].prop_map(Duration::from_nanos)
}

/// A config whose every value lies within its documented bounds and meets
/// the cross-key rules: must always be valid.
fn in_bounds_config() -> impl Strategy<Value = String> {
    let b = |key: &str| {
        DURATIONS
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, b)| *b)
            .unwrap_or(bounds::HOLD_TIMEOUT)
    };
    (
        (
            within(b("proxy.hold_timeout")),
            within(b("proxy.limits.header_timeout")),
            within(b("proxy.limits.keepalive_timeout")),
            within(b("proxy.long_lived.spread")),
            within(b("proxy.long_lived.close_grace")),
            within(b("proxy.long_lived.idle_timeout")),
        ),
        (
            within(b("apps.*.health.interval")),
            within(b("apps.*.health.timeout")),
            within(b("apps.*.health.start_timeout")),
            0.0..=1.0f64,
            within(b("apps.*.stop_timeout")),
        ),
        bounds::THREADS.0..=bounds::THREADS.1,
        bounds::INSTANCES.0..=bounds::INSTANCES.1,
        (
            bounds::L4_READ_BUFFER.0..=bounds::L4_READ_BUFFER.1,
            bounds::LISTENER_TASKS.0..=bounds::LISTENER_TASKS.1,
            bounds::UPSTREAM_POOL.0..=bounds::UPSTREAM_POOL.1,
        ),
    )
        .prop_map(|(proxy, app, threads, instances, tuning)| {
            let (l4_read_buffer, listener_tasks, upstream_pool) = tuning;
            let (hold, header, keepalive, spread, grace, idle) = proxy;
            let (interval, timeout, start, drain_at, stop) = app;
            // Cross-key rules: timeout <= start_timeout, window <= drain.
            let (timeout, start) = (timeout.min(start), timeout.max(start));
            let window = spread + grace;
            let room = bounds::DRAIN_TIMEOUT.max.saturating_sub(window);
            let drain = window + room.mul_f64(drain_at);
            let ns = |d: Duration| format!("{}ns", d.as_nanos());
            format!(
                "proxy:\n  threads: {threads}\n  hold_timeout: {}\n  limits: {{ header_timeout: {}, keepalive_timeout: {} }}\n  \
                 long_lived: {{ spread: {}, close_grace: {}, idle_timeout: {} }}\n  \
                 tuning: {{ l4_read_buffer: {l4_read_buffer}, listener_tasks: {listener_tasks}, upstream_pool: {upstream_pool} }}\n\
                 apps:\n  web:\n    command: [bin/web]\n    instances: {instances}\n    \
                 health: {{ interval: {}, timeout: {}, start_timeout: {} }}\n    drain_timeout: {}\n    stop_timeout: {}\n\
                 routes: [{{ app: web }}]\n",
                ns(hold),
                ns(header),
                ns(keepalive),
                ns(spread),
                ns(grace),
                ns(idle),
                ns(interval),
                ns(timeout),
                ns(start),
                ns(drain),
                ns(stop),
            )
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Random configs (every key, absurd and junk values): a config or
    /// problems, never a panic; a valid one survives the runtime's sums.
    #[test]
    fn random_configs_validate_without_panicking(config in random_config(), attempt in any::<u32>()) {
        let source = serde_yaml::to_string(&config).expect("a Value serialises");
        if let Some(config) = parse_any(&source) {
            check_valid(&config, attempt);
        }
    }

    /// Every value within its documented bounds is accepted: the bounds in
    /// the README are the ones enforced, no stricter.
    #[test]
    fn every_in_bounds_config_is_valid(source in in_bounds_config(), attempt in any::<u32>()) {
        let config = parse_ok(&source);
        check_valid(&config, attempt);
    }

    /// Arbitrary text: never a panic.
    #[test]
    fn arbitrary_text_never_panics(source in "\\PC{0,200}") {
        parse_any(&source);
    }

    /// The shipped example with random text spliced in anywhere: never a
    /// panic, and a valid result still meets every bound.
    #[test]
    fn the_example_with_random_edits_never_panics(at in 0usize..EXAMPLE.len(), cut in 0usize..8, insert in "\\PC{0,12}") {
        let at = (0..=at).rev().find(|&i| EXAMPLE.is_char_boundary(i)).unwrap_or(0);
        let end = (at + cut..=EXAMPLE.len()).find(|&i| EXAMPLE.is_char_boundary(i)).unwrap_or(EXAMPLE.len());
        let source = format!("{}{insert}{}", &EXAMPLE[..at], &EXAMPLE[end..]);
        if let Some(config) = parse_any(&source) {
            check_valid(&config, 0);
        }
    }
}

/// The generators reach both outcomes: a property test whose configs were
/// all invalid would check nothing about the runtime's arithmetic.
#[test]
fn random_configs_are_sometimes_valid() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;

    let mut runner = TestRunner::deterministic();
    let strategy = random_config();
    let (mut valid, mut invalid) = (0, 0);
    for _ in 0..500 {
        let value = strategy.new_tree(&mut runner).expect("a tree").current();
        let source = serde_yaml::to_string(&value).expect("a Value serialises");
        match parse_any(&source) {
            Some(_) => valid += 1,
            None => invalid += 1,
        }
    }
    assert!(valid >= 50 && invalid >= 50, "valid {valid}, invalid {invalid}");
}

/// The fuzzer's seeds (`control/fuzz/seeds/config_reader`) through the
/// same checks: a seed the reader no longer takes as meant (after a new
/// key, say) shows here without running the fuzzer.
#[test]
fn the_fuzz_seeds_parse_without_panicking() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/config_reader");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("the seed directory") {
        let path = entry.expect("a seed").path();
        let source = std::fs::read_to_string(&path).expect("a UTF-8 seed");
        if let Some(config) = parse_any(&source) {
            check_valid(&config, 0);
        }
        seen += 1;
    }
    assert!(seen >= 10, "only {seen} seeds in {}", dir.display());
    // The seeds that spell every key are valid configs.
    for valid in ["every-key-flow.yaml", "minimal.yaml", "shipped-deploy.yaml"] {
        let source = std::fs::read_to_string(dir.join(valid)).expect("a seed");
        let config = parse_any(&source).unwrap_or_else(|| panic!("{valid} is valid"));
        check_valid(&config, 0);
    }
}
