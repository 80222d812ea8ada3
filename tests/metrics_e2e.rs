//! Metrics (SPEC §6) scraped from a running cutover and parsed: counts that
//! match what the test did, the deploy phase as it happens, no series left
//! behind by removed instances, and an access log that parses.

mod support;

use std::time::{Duration, Instant};

use support::prom::value;
use support::{App, Cutover};

#[test]
fn requests_total_counts_every_request_by_app_and_code() {
    let cutover = Cutover::builder()
        .app(App::demo("web", "v1"))
        .app(App::demo("api", "v1"))
        .route("web.test", "/", "web")
        .route("api.test", "/", "api")
        .start();
    let mut client = cutover.client();
    for _ in 0..7 {
        assert_eq!(client.get("web.test", "/").unwrap().status, 200);
    }
    for _ in 0..3 {
        assert_eq!(client.get("api.test", "/").unwrap().status, 200);
        assert_eq!(
            client.get("api.test", "/nope").unwrap().status,
            404,
            "the app's own 404"
        );
    }
    assert_eq!(client.get("other.test", "/").unwrap().status, 404, "no route");
    // A request is counted after its response is written: wait for the last.
    cutover.wait_until(Duration::from_secs(10), "the last request counted", |c| {
        value(&c.metrics(), "cutover_requests_total", &[("app", ""), ("code", "404")]) == Some(1.0)
    });
    let m = cutover.metrics();
    let total = |app: &str, code: &str| value(&m, "cutover_requests_total", &[("app", app), ("code", code)]);
    assert_eq!(total("web", "200"), Some(7.0));
    assert_eq!(total("api", "200"), Some(3.0));
    assert_eq!(total("api", "404"), Some(3.0));
    assert_eq!(total("", "404"), Some(1.0));
    assert_eq!(
        value(&m, "cutover_request_duration_seconds_count", &[("app", "web")]),
        Some(7.0)
    );
    assert_eq!(
        value(
            &m,
            "cutover_instance_ready",
            &[("app", "web"), ("instance", "web-0"), ("role", "original")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &m,
            "cutover_inflight_requests",
            &[("app", "api"), ("instance", "api-0")]
        ),
        Some(0.0)
    );
    assert!(value(&m, "cutover_route_table_generation", &[]).unwrap() >= 1.0);
    assert_eq!(value(&m, "cutover_build_info", &[]), Some(1.0));
    assert!(value(&m, "process_resident_memory_bytes", &[]).unwrap() > 0.0);
    assert!(value(&m, "process_open_fds", &[]).unwrap() > 0.0);
}

#[test]
fn a_rolling_deploy_shows_in_the_metrics_and_leaves_no_clone_series() {
    let cutover = Cutover::builder()
        .app(App::demo("web", "v1").yaml("drain_timeout: 5s"))
        .route("*", "/", "web")
        .start();
    let before = value(
        &cutover.metrics(),
        "cutover_deployments_total",
        &[("app", "web"), ("outcome", "succeeded"), ("strategy", "rolling")],
    )
    .unwrap_or(0.0);
    // v2 starts slowly, so the upgrade phase lasts long enough to be seen.
    let slow_v2 = cutover.config_with_version("v1", "v2").replace(
        "APP_VERSION: \"v2\"",
        "APP_VERSION: \"v2\"\n      DEMO_START_DELAY_MS: \"1500\"",
    );
    let (code, out, err) = cutover.push(&slow_v2, &["--deploy-strategy", "rolling", "--no-wait"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let mut saw_upgrade = false;
    let mut saw_clone_ready = false;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let m = cutover.metrics();
        if value(&m, "cutover_deployment_phase", &[("app", "web"), ("phase", "upgrade")]) == Some(1.0) {
            saw_upgrade = true;
            let others: f64 = m
                .iter()
                .filter(|s| s.name == "cutover_deployment_phase" && s.labels["phase"] != "upgrade")
                .map(|s| s.value)
                .sum();
            assert_eq!(others, 0.0, "only the phase in progress is 1");
        }
        if value(
            &m,
            "cutover_instance_ready",
            &[("instance", "web-clone-0"), ("role", "clone")],
        ) == Some(1.0)
        {
            saw_clone_ready = true;
        }
        if value(
            &m,
            "cutover_deployments_total",
            &[("app", "web"), ("outcome", "succeeded"), ("strategy", "rolling")],
        )
        .unwrap_or(0.0)
            > before
        {
            break;
        }
        assert!(Instant::now() < deadline, "the deploy did not finish");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        saw_upgrade,
        "deployment_phase{{phase=upgrade}} was 1 during the upgrade"
    );
    assert!(saw_clone_ready, "the clone was reported ready while it served");
    let m = cutover.metrics();
    assert_eq!(
        value(
            &m,
            "cutover_deployments_total",
            &[("app", "web"), ("outcome", "succeeded"), ("strategy", "rolling")]
        ),
        Some(before + 1.0)
    );
    assert_eq!(
        value(
            &m,
            "cutover_deployment_duration_seconds_count",
            &[("app", "web"), ("strategy", "rolling")]
        ),
        Some(1.0)
    );
    let phases: f64 = m
        .iter()
        .filter(|s| s.name == "cutover_deployment_phase")
        .map(|s| s.value)
        .sum();
    assert_eq!(phases, 0.0, "no phase in progress after the deploy");
    let clone_series: Vec<_> = m
        .iter()
        .filter(|s| s.labels.get("instance").is_some_and(|i| i.contains("clone")))
        .collect();
    assert!(
        clone_series.is_empty(),
        "series of the removed clone remain: {clone_series:?}"
    );
}

#[test]
fn fifty_deploys_do_not_grow_the_series_count() {
    let cutover = Cutover::builder()
        .app(App::demo("web", "v1").yaml("drain_timeout: 2s"))
        // The notice window must fit in the drain (spread + close_grace).
        .proxy_yaml("long_lived: { spread: 1s, close_grace: 1s }")
        .route("*", "/", "web")
        .start();
    let deploy = |n: usize| {
        let resp = cutover.admin_post_json("/deploy", br#"{"app": "web", "strategy": "rolling"}"#);
        assert_eq!(resp.status, 202, "deploy {n}: {}", resp.text());
        let id = serde_json::from_slice::<serde_json::Value>(&resp.body).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string();
        // The outcome is recorded a moment before the app's deployment slot
        // is released; the next deploy waits for both.
        cutover.wait_until(Duration::from_secs(30), "the deploy to finish", |c| {
            c.deployment(&id)["outcome"] == "succeeded"
                && c.status()["deployments"].as_array().is_some_and(Vec::is_empty)
        });
        assert_eq!(cutover.get("t", "/").status, 200);
    };
    deploy(0);
    let series_after_first = cutover.metrics().len();
    for n in 1..50 {
        deploy(n);
    }
    let m = cutover.metrics();
    assert_eq!(
        value(
            &m,
            "cutover_deployments_total",
            &[("outcome", "succeeded"), ("strategy", "rolling")]
        ),
        Some(50.0)
    );
    assert_eq!(
        m.len(),
        series_after_first,
        "the number of series is stable across deploys"
    );
}

#[test]
fn the_access_log_in_json_has_one_parsable_line_per_request() {
    let cutover = Cutover::builder()
        .app(App::demo("web", "v1"))
        .route("shop.test", "/", "web")
        .up_args(&["--log-format", "json", "--access-log", "{dir}/access.log"])
        .start();
    let mut client = cutover.client();
    client.request("POST", "shop.test", "/", b"0123456789").unwrap();
    client.get("shop.test", "/slow?ms=30").unwrap();
    assert_eq!(client.get("nowhere.test", "/").unwrap().status, 404);
    let path = cutover.dir.path().join("access.log");
    let mut lines = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while lines.len() < 3 {
        assert!(Instant::now() < deadline, "access log lines did not arrive: {lines:?}");
        std::thread::sleep(Duration::from_millis(50));
        lines = std::fs::read_to_string(&path)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect();
    }
    let entries: Vec<serde_json::Value> = lines.iter().map(|l| serde_json::from_str(l).expect("JSON")).collect();
    let post = &entries[0];
    assert_eq!(post["method"], "POST");
    assert_eq!(post["host"], "shop.test");
    assert_eq!(post["path"], "/");
    assert_eq!(post["status"], 200);
    assert_eq!(post["app"], "web");
    assert_eq!(post["instance"], "web-0");
    assert!(post["upstream"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert_eq!(post["bytes_in"], 10);
    assert!(post["bytes_out"].as_u64().unwrap() > 0);
    assert_eq!(post["retries"], 0);
    assert!(post["duration_ms"].is_number() && post["held_ms"].is_number());
    assert!(post["client"].as_str().unwrap().starts_with("127.0.0.1"));
    assert!(entries[1]["duration_ms"].as_f64().unwrap() >= 30.0);
    assert_eq!(entries[2]["status"], 404);
    assert_eq!(entries[2]["app"], "");
    // cutover's own log lines are not in the access log.
    assert!(entries.iter().all(|e| e["message"] == "request"));
}

/// SPEC §6: every family is present from start-up, each configured app's
/// series at 0, so a dashboard shows 0 rather than "no data". Regression:
/// `cutover_long_lived_connections` and `cutover_long_lived_closed_total`
/// were absent until the first long-lived connection.
#[test]
fn every_family_is_present_from_start_up_with_each_app_at_zero() {
    let cutover = Cutover::builder()
        .app(App::demo("web", "v1").instances(2))
        .app(App::demo("api", "v1"))
        .route("web.test", "/", "web")
        .route("api.test", "/", "api")
        .start();
    // No request has gone through the proxy and nothing was deployed.
    let m = cutover.metrics();
    let per_app = [
        "cutover_requests_total",
        "cutover_request_duration_seconds_count",
        "cutover_upstream_connect_errors_total",
        "cutover_retries_total",
        "cutover_held_requests",
        "cutover_inflight_requests",
        "cutover_long_lived_connections",
        "cutover_long_lived_closed_total",
        "cutover_deployments_total",
        "cutover_deployment_duration_seconds_count",
        "cutover_deployment_phase",
    ];
    let mut missing = Vec::new();
    for family in per_app {
        for app in ["web", "api"] {
            let series: Vec<_> = m
                .iter()
                .filter(|s| s.name == family && s.labels.get("app").is_some_and(|a| a == app))
                .collect();
            if series.is_empty() {
                missing.push(format!("{family}{{app={app}}}"));
            }
            for s in series {
                assert_eq!(s.value, 0.0, "{family} {:?} before any traffic", s.labels);
            }
        }
    }
    assert!(missing.is_empty(), "absent at start-up: {missing:?}");
    // Per instance: each ready instance, each kind.
    for (app, instance) in [("web", "web-0"), ("web", "web-1"), ("api", "api-0")] {
        for kind in ["websocket", "sse"] {
            assert_eq!(
                value(
                    &m,
                    "cutover_long_lived_connections",
                    &[("app", app), ("instance", instance), ("kind", kind)]
                ),
                Some(0.0),
                "{app} {instance} {kind}"
            );
        }
        assert_eq!(
            value(&m, "cutover_instance_ready", &[("app", app), ("instance", instance)]),
            Some(1.0)
        );
    }
    assert!(value(&m, "cutover_route_table_generation", &[]).is_some());
    for outcome in ["succeeded", "failed"] {
        assert_eq!(
            value(&m, "cutover_upgrades_total", &[("outcome", outcome)]),
            Some(0.0),
            "cutover_upgrades_total{{outcome={outcome}}}"
        );
    }
    // Progressive delivery: no canary yet, its series at 0, the default
    // analysis limits (SPEC §3: 1%, 1.5, 50) beside them.
    for app in ["web", "api"] {
        assert_eq!(value(&m, "cutover_canary_weight", &[("app", app)]), Some(0.0), "{app}");
        for (metric, limit) in [("error_rate", 0.01), ("latency_ratio", 1.5), ("requests", 50.0)] {
            let labels = [("app", app), ("metric", metric)];
            assert_eq!(
                value(&m, "cutover_deployment_analysis", &labels),
                Some(0.0),
                "{app} {metric}"
            );
            assert_eq!(
                value(&m, "cutover_deployment_analysis_limit", &labels),
                Some(limit),
                "{app} {metric}"
            );
        }
    }
}

#[test]
fn an_app_added_by_a_push_has_its_series_at_zero_and_a_removed_one_leaves_none() {
    let cutover = Cutover::builder()
        .app(App::demo("web", "v1"))
        .app(App::demo("api", "v1"))
        .route("web.test", "/", "web")
        .route("api.test", "/", "api")
        .start();
    let with_api = cutover.config_text();
    let without_api = cutover.config_without_app("api");
    let deploy_series = |app: &str| {
        cutover
            .metrics()
            .into_iter()
            .filter(|s| s.name == "cutover_deployments_total" && s.labels.get("app").is_some_and(|a| a == app))
            .count()
    };
    assert!(deploy_series("api") > 0);

    let (code, out, err) = cutover.push(&without_api, &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(deploy_series("api"), 0, "a removed app's deployment series are deleted");

    let (code, out, err) = cutover.push(&with_api, &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    let m = cutover.metrics();
    assert_eq!(
        value(
            &m,
            "cutover_deployments_total",
            &[("app", "api"), ("strategy", "rolling"), ("outcome", "succeeded")]
        ),
        Some(0.0),
        "an added app's series start at 0"
    );
}
