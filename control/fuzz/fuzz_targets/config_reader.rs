//! The config reader on arbitrary text: YAML → `read` → `validate`, as
//! `cutover validate` and `cutover up` run it. Never panics: a config or a
//! list of problems, each with a message; a valid config keeps every bound,
//! and the runtime's arithmetic on it (`config::timing`, and the unchecked
//! `Instant + Duration` the runtime writes today) cannot overflow.
//! Run: `.ci/fuzz` (every target), or `cd control/fuzz && cargo fuzz run config_reader`.
#![no_main]

use std::path::Path;
use std::time::{Duration, Instant};

use cutover_control::config::{bounds, parse, timing, Config, ConfigError};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // `load` reads the file as UTF-8 and refuses anything else before parsing.
    let Ok(source) = std::str::from_utf8(data) else { return };
    match parse(source, "deploy.yaml", Path::new("/srv/site")) {
        Ok(config) => check(&config),
        Err(ConfigError::Invalid(problems)) => {
            assert!(!problems.is_empty());
            for problem in problems.iter() {
                assert!(!problem.message.is_empty());
                let _ = problem.to_string();
            }
        }
        Err(ConfigError::Read { .. }) => unreachable!("parse reads no file"),
    }
});

fn check(config: &Config) {
    let now = Instant::now();
    let proxy = &config.proxy;
    let mut all = vec![
        (proxy.hold_timeout, bounds::HOLD_TIMEOUT),
        (proxy.limits.header_timeout, bounds::HEADER_TIMEOUT),
        (proxy.limits.keepalive_timeout, bounds::KEEPALIVE_TIMEOUT),
        (proxy.long_lived.spread, bounds::SPREAD),
        (proxy.long_lived.close_grace, bounds::CLOSE_GRACE),
        (proxy.long_lived.idle_timeout, bounds::IDLE_TIMEOUT),
    ];
    let window = timing::notice_window(&proxy.long_lived);
    for app in config.apps.values() {
        assert!(app.drain_timeout >= window);
        assert!(app.health.timeout <= app.health.start_timeout);
        all.extend([
            (app.health.interval, bounds::HEALTH_INTERVAL),
            (app.health.timeout, bounds::HEALTH_TIMEOUT),
            (app.health.start_timeout, bounds::START_TIMEOUT),
            (app.drain_timeout, bounds::DRAIN_TIMEOUT),
            (app.stop_timeout, bounds::STOP_TIMEOUT),
        ]);
    }
    for (value, bounds) in all {
        assert!(bounds.contains(value), "{value:?} outside {bounds:?}");
        // What the runtime writes: unchecked, panics on overflow.
        assert_eq!(timing::deadline(now, value), now + value);
    }
    let threads = i64::try_from(proxy.threads).unwrap_or(i64::MAX);
    assert!((bounds::THREADS.0..=bounds::THREADS.1).contains(&threads));
    for (value, (min, max)) in [
        (proxy.tuning.l4_read_buffer, bounds::L4_READ_BUFFER),
        (proxy.tuning.listener_tasks, bounds::LISTENER_TASKS),
        (proxy.tuning.upstream_pool, bounds::UPSTREAM_POOL),
    ] {
        assert!((min..=max).contains(&i64::try_from(value).unwrap_or(i64::MAX)));
    }
    let _ = timing::shutdown_drain(config) + Duration::from_secs(5);
    let _ = timing::sse_retry_ms(proxy.long_lived.spread);
}
