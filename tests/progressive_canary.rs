//! Canary deployments end to end (issue 12; SPEC §3 `canary`, §4 canary
//! and abort, §2/§5 promote and abort, §6 `canary_weight` and
//! `deployment_analysis`): a healthy canary walks its steps at their
//! weights with sticky clients kept on their version and then serves alone;
//! a canary that answers 5xx, or is slow, is rolled back by the analysis
//! within its step, the proxy adding no failure of its own; manual pauses
//! wait for `promote`; `abort` returns to the stable version. Real
//! processes, traffic running throughout.

mod support;

#[path = "support/progressive.rs"]
mod progressive;

#[path = "support/canary.rs"]
mod canary;

use std::time::Duration;

use canary::{close_code, failures, share_in, step_windows, sticky_switches, ws_pinned, Answer, StatusWatch, Traffic};
use progressive::{
    canary_app, canary_of, event_text, metric, new_version, only_version_answers, push_no_wait, running_pids,
    wait_canary, wait_outcome, wait_pids_gone, waiting_at, APP, DEPLOY_TIMEOUT, LENIENT_ANALYSIS,
};
use serde_json::Value;
use support::load::{Load, LoadSpec, Req};
use support::Cutover;

/// Steps short enough for CI, long enough to sample each one's share.
const THREE_STEPS: &str = "[{ weight: 20, pause: 2s }, { weight: 50, pause: 2s }, { weight: 80, pause: 2s }]";

/// A step that lasts far longer than any abort may take: a canary still at
/// it when the deployment ends was aborted within it.
const LONG_STEPS: &str = "[{ weight: 30, pause: 60s }, { weight: 60, pause: 60s }]";

fn cutover_with(app: support::App) -> Cutover {
    Cutover::builder().app(app).route("*", "/", APP).start()
}

/// The canary weight gauge of the app.
fn canary_weight(cutover: &Cutover) -> Option<f64> {
    metric(cutover, "cutover_canary_weight", &[("app", APP)])
}

/// Waits until the canary weight gauge reads `percent`.
fn wait_canary_weight(cutover: &Cutover, percent: f64) {
    cutover.wait_until(
        Duration::from_secs(10),
        &format!("cutover_canary_weight {percent}"),
        |c| canary_weight(c) == Some(percent),
    );
}

/// During a split: an answer to a client without a cookie sets the sticky
/// cookie in the documented form; sent back (among other cookies) it keeps
/// the client on the same version, and the backend sees the other cookies
/// but never the sticky one.
fn check_cookies(cutover: &Cutover) {
    let mut client = cutover.client();
    let first = client.get("t", "/headers").expect("proxy answers");
    assert_eq!(first.status, 200, "{}", first.text());
    let set = first
        .header("set-cookie")
        .expect("a canary sets the sticky cookie")
        .to_string();
    let attributes = set.to_ascii_lowercase();
    assert!(set.starts_with("cutover-web="), "{set}");
    for attribute in ["path=/", "httponly", "samesite=lax"] {
        assert!(attributes.contains(attribute), "{attribute} in {set}");
    }
    let pair = set.split(';').next().unwrap().trim().to_string();
    let version = first.header("x-app-version").map(str::to_string);
    assert!(version.is_some(), "{first:?}");
    for _ in 0..10 {
        let cookies = format!("a=1; {pair}; b=2");
        let resp = client
            .send("GET", "t", "/headers", &[("Cookie", &cookies)], &[])
            .expect("proxy answers");
        assert_eq!(resp.status, 200);
        assert_eq!(
            resp.header("x-app-version").map(str::to_string),
            version,
            "the cookie keeps its version"
        );
        let echoed = resp.text();
        assert!(
            !echoed.contains("cutover-web"),
            "the sticky cookie reached the app:\n{echoed}"
        );
        let cookie_line = echoed
            .lines()
            .find(|l| l.starts_with("cookie:"))
            .unwrap_or_else(|| panic!("the other cookies reach the app:\n{echoed}"));
        assert!(
            cookie_line.contains("a=1") && cookie_line.contains("b=2"),
            "{cookie_line}"
        );
    }
}

/// A sticky cookie (`cutover-web=TAG`) that pins a client to `version`,
/// got by asking without one until the weight sends a request there; the
/// cookie is checked to keep its version.
fn cookie_of(cutover: &Cutover, version: &str) -> String {
    for _ in 0..500 {
        let resp = cutover.get("t", "/");
        assert_eq!(resp.status, 200, "{resp:?}");
        if resp.header("x-app-version") != Some(version) {
            continue;
        }
        let set = resp.header("set-cookie").expect("a split sets the sticky cookie");
        let pair = set.split(';').next().unwrap().trim().to_string();
        for _ in 0..5 {
            let again = cutover
                .client()
                .send("GET", "t", "/", &[("Cookie", &pair)], &[])
                .expect("proxy answers");
            assert_eq!(again.header("x-app-version"), Some(version), "{pair} keeps its version");
        }
        return pair;
    }
    panic!("{version} never answered 500 requests");
}

/// Asserts that every answer but 200s is a 500 the new version gave
/// itself: no error of the proxy's (502/503/504, its own 500) and no reset,
/// refused or timed-out request. The number of those 500s.
fn only_failures_of(answers: &[Answer], version: &str) -> usize {
    let mut own = 0;
    for a in answers.iter().filter(|a| !a.ok()) {
        assert!(
            a.status == Some(500) && a.version.as_deref() == Some(version),
            "a failure not answered by {version} itself: {a:?}\nall failures: {:?}",
            failures(answers)
        );
        own += 1;
    }
    own
}

/// After a canary that did not finish: the stable instances serve alone
/// (same pids), the canary instances are gone, no canary is shown.
fn assert_stable_serves_on(cutover: &Cutover, stable: &[u32], version: &str) {
    cutover.wait_until(DEPLOY_TIMEOUT, "only the stable instances running", |c| {
        running_pids(c) == stable
    });
    let instances = cutover.instances(APP);
    assert!(
        instances.iter().all(|i| i["role"] != "canary"),
        "no canary instance is left: {instances:?}"
    );
    only_version_answers(cutover, version);
    assert!(canary_of(cutover, APP).is_none(), "{}", cutover.status());
    wait_canary_weight(cutover, 0.0);
}

#[test]
fn a_healthy_canary_walks_its_steps_at_their_weights_keeps_sticky_clients_and_then_serves_alone() {
    let cutover = cutover_with(canary_app("v1", THREE_STEPS, LENIENT_ANALYSIS).instances(2));
    let stable = running_pids(&cutover);
    assert_eq!(stable.len(), 2);
    let watch = StatusWatch::start(&cutover);
    let traffic = Traffic::start(cutover.proxy, "/", 6, 3);
    traffic.wait_for_more(50, Duration::from_secs(20));

    let id = push_no_wait(&cutover, &new_version(&cutover, "v1", "v2", &[]));
    let first = wait_canary(&cutover, "the canary's first step", |c| c["step"] == 1);
    assert_eq!(first["deployment"], id.as_str(), "{first}");
    assert_eq!(first["steps"], 3, "{first}");
    check_cookies(&cutover);
    let record = wait_outcome(&cutover, &id, DEPLOY_TIMEOUT);
    traffic.wait_for_more(50, Duration::from_secs(20));
    let answers = traffic.stop();
    let seen = watch.stop();

    assert_eq!(record["outcome"], "succeeded", "{record}");
    assert_eq!(record["strategy"], "canary", "{record}");
    assert_eq!(failures(&answers), Vec::<String>::new(), "no request failed");

    let windows = step_windows(&seen);
    let mut order: Vec<u64> = windows.iter().map(|w| w.step).filter(|s| *s > 0).collect();
    order.dedup();
    assert_eq!(order, [1, 2, 3], "every step, in order: {windows:?}");
    for (step, weight) in [(1, 20.0), (2, 50.0), (3, 80.0)] {
        let (mut new, mut all) = (0, 0);
        for window in windows.iter().filter(|w| w.step == step) {
            // 100 once the last step ended and the new version takes over.
            assert!(
                window.weight == weight || (step == 3 && window.weight == 100.0),
                "step {step} at weight {weight}: {window:?}"
            );
            if window.weight != weight {
                continue;
            }
            let (n, a) = share_in(&answers, window, "v2");
            new += n;
            all += a;
        }
        assert!(all >= 40, "step {step}: only {all} requests ran inside it");
        let share = 100.0 * new as f64 / all as f64;
        assert!(
            (share - weight).abs() <= 10.0,
            "step {step}: v2 answered {share:.1}% of {all} requests, its weight is {weight}%"
        );
    }

    // Sticky clients kept their version while the steps ran (until the
    // last step was seen: its end hands every client to the new version).
    let last_step = windows.iter().find(|w| w.step == 3).map(|w| w.from).unwrap();
    assert!(
        answers
            .iter()
            .any(|a| a.sticky && a.sent_cookie.is_some() && a.end <= last_step),
        "the sticky clients got and sent the cookie"
    );
    assert_eq!(sticky_switches(&answers, last_step), Vec::<String>::new());

    // The new version serves alone; the stable instances are gone.
    wait_pids_gone(&cutover, &stable, "the stable instances to stop");
    only_version_answers(&cutover, "v2");
    assert!(canary_of(&cutover, APP).is_none(), "{}", cutover.status());
    let instances = cutover.instances(APP);
    assert_eq!(instances.len(), 2, "{instances:?}");
    assert!(
        instances
            .iter()
            .all(|i| i["pid"].as_u64().is_some_and(|p| !stable.contains(&(p as u32)))),
        "/status shows no stable instance: {instances:?}"
    );
    let running = running_pids(&cutover);
    assert_eq!(running.len(), 2, "{running:?}");
    assert!(running.iter().all(|p| !stable.contains(p)), "{running:?} {stable:?}");
    wait_canary_weight(&cutover, 0.0);
}

#[test]
fn a_canary_answering_errors_is_rolled_back_by_the_analysis_within_its_step() {
    let analysis = "{ max_error_rate: \"5%\", max_latency_ratio: 100, min_requests: 20 }";
    let cutover = cutover_with(canary_app("v1", LONG_STEPS, analysis));
    let stable = running_pids(&cutover);
    let watch = StatusWatch::start(&cutover);
    let traffic = Traffic::start(cutover.proxy, "/", 6, 0);
    traffic.wait_for_more(30, Duration::from_secs(20));

    // Every 5th request to the new version's `/` answers 500.
    let id = push_no_wait(
        &cutover,
        &new_version(&cutover, "v1", "v2", &[("DEMO_ERROR_RATE", "0.2")]),
    );
    // Far less than the step's 60 s: the analysis acts within the step.
    let record = wait_outcome(&cutover, &id, Duration::from_secs(45));
    traffic.wait_for_more(30, Duration::from_secs(20));
    let answers = traffic.stop();
    let seen = watch.stop();

    assert_eq!(record["outcome"], "rolled_back", "{record}");
    let events = event_text(&record).to_lowercase();
    assert!(events.contains("error rate"), "the reason is in the events:\n{events}");
    let windows = step_windows(&seen);
    assert!(
        windows.iter().all(|w| w.step <= 1),
        "aborted within the first step: {windows:?}"
    );
    let own = only_failures_of(&answers, "v2");
    assert!(own > 0, "the new version did answer 500s (it was seen failing)");

    let (code, history, _) = cutover.cli(&["history", APP]);
    assert_eq!(code, 0);
    assert!(history.contains("rolled_back"), "{history}");
    assert!(
        history.to_lowercase().contains("error rate"),
        "the reason is in the history too:\n{history}"
    );
    assert_stable_serves_on(&cutover, &stable, "v1");
}

#[test]
fn a_slow_canary_is_rolled_back_for_its_latency() {
    let analysis = "{ max_error_rate: \"50%\", max_latency_ratio: 3, min_requests: 10 }";
    let cutover = cutover_with(canary_app(
        "v1",
        "[{ weight: 50, pause: 60s }, { weight: 80, pause: 60s }]",
        analysis,
    ));
    let stable = running_pids(&cutover);
    let traffic = Traffic::start(cutover.proxy, "/", 8, 0);
    traffic.wait_for_more(30, Duration::from_secs(20));

    // Every answer of the new version takes a second; the stable one's p99
    // on loopback is far below a third of that.
    let id = push_no_wait(
        &cutover,
        &new_version(&cutover, "v1", "v2", &[("DEMO_LATENCY_MS", "1000")]),
    );
    let record = wait_outcome(&cutover, &id, Duration::from_secs(45));
    traffic.wait_for_more(30, Duration::from_secs(20));
    let answers = traffic.stop();

    assert_eq!(record["outcome"], "rolled_back", "{record}");
    let events = event_text(&record).to_lowercase();
    assert!(events.contains("latency"), "the reason is in the events:\n{events}");
    let (code, history, _) = cutover.cli(&["history", APP]);
    assert_eq!(code, 0);
    assert!(
        history.contains("rolled_back") && history.to_lowercase().contains("latency"),
        "the outcome and reason in the history:\n{history}"
    );
    assert_eq!(failures(&answers), Vec::<String>::new(), "slow is not failed");
    assert!(
        answers.iter().any(|a| a.version.as_deref() == Some("v2")),
        "the canary did serve before its abort"
    );
    assert_stable_serves_on(&cutover, &stable, "v1");
}

/// The analysis values a canary status shows, by metric: (value, limit).
fn analysis_of(canary: &Value) -> Vec<(String, f64)> {
    canary["analysis"]
        .as_array()
        .unwrap_or_else(|| panic!("analysis in {canary}"))
        .iter()
        .map(|a| {
            (
                a["metric"].as_str().unwrap_or("?").to_string(),
                a["limit"].as_f64().unwrap_or(-1.0),
            )
        })
        .collect()
}

#[test]
fn manual_pauses_wait_for_promote_and_abort_returns_to_the_stable_version_with_the_weight_in_the_metrics() {
    let steps = "[{ weight: 30, pause: manual }, { weight: 60, pause: manual }, { weight: 90, pause: 2s }]";
    let cutover = cutover_with(canary_app("v1", steps, LENIENT_ANALYSIS));
    // Every configured app's series exist from start-up, at 0.
    let m = cutover.metrics();
    assert_eq!(
        support::prom::value(&m, "cutover_canary_weight", &[("app", APP)]),
        Some(0.0)
    );
    for name in ["error_rate", "latency_ratio", "requests"] {
        let labels = [("app", APP), ("metric", name)];
        assert!(
            support::prom::value(&m, "cutover_deployment_analysis", &labels).is_some(),
            "cutover_deployment_analysis{{metric={name}}} at start-up"
        );
    }
    let load = Load::start(
        cutover.proxy,
        LoadSpec {
            keepalive_clients: 4,
            fresh_clients: 2,
            mix: vec![Req::Get("/")],
            timeout: Duration::from_secs(30),
        },
    );
    load.wait_for_more(30, Duration::from_secs(20));

    // Step 1 waits for promote.
    let id = push_no_wait(&cutover, &new_version(&cutover, "v1", "v2", &[]));
    let canary = wait_canary(&cutover, "step 1 waiting for promote", |c| waiting_at(c, 1));
    assert_eq!(canary["deployment"], id.as_str());
    assert_eq!(canary["weight"], 30.0, "{canary}");
    let analysis = analysis_of(&canary);
    for (name, limit) in [("error_rate", 0.01), ("latency_ratio", 100.0), ("requests", 10.0)] {
        assert!(
            analysis.iter().any(|(m, l)| m == name && (l - limit).abs() < 1e-9),
            "{name} against {limit} in {canary}"
        );
    }
    wait_canary_weight(&cutover, 30.0);
    load.wait_for_more(100, Duration::from_secs(20));
    cutover.wait_until(
        Duration::from_secs(10),
        "the analysis counting the canary's requests",
        |c| {
            metric(
                c,
                "cutover_deployment_analysis",
                &[("app", APP), ("metric", "requests")],
            )
            .unwrap_or(0.0)
                > 0.0
        },
    );
    assert!(
        waiting_at(&canary_of(&cutover, APP).expect("still a canary"), 1),
        "still waiting"
    );
    assert!(cutover.deployment(&id)["outcome"].is_null());
    let (code, out, _) = cutover.cli(&["status"]);
    assert_eq!(code, 0);
    assert!(out.contains("manual"), "cutover status shows the wait:\n{out}");
    let (code, out, _) = cutover.cli(&["status", "--json"]);
    assert_eq!(code, 0);
    let json: Value = serde_json::from_str(&out).expect("status --json is JSON");
    let app = json["apps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == APP)
        .unwrap()
        .clone();
    assert!(waiting_at(&app["canary"], 1), "{app}");

    // promote: on to the next manual pause.
    let (code, out, err) = cutover.cli(&["promote", APP]);
    assert_eq!(code, 0, "{out}\n{err}");
    let canary = wait_canary(&cutover, "step 2 waiting for promote", |c| waiting_at(c, 2));
    assert_eq!(canary["weight"], 60.0, "{canary}");
    wait_canary_weight(&cutover, 60.0);
    let unknown = cutover.admin_post_json("/deployments/web-999/promote", br#"{"full": false}"#);
    assert_eq!(unknown.status, 404, "{}", unknown.text());

    // promote with full (here through the API): every remaining step.
    let resp = cutover.admin_post_json(&format!("/deployments/{id}/promote"), br#"{"full": true}"#);
    assert_eq!(resp.status, 200, "{}", resp.text());
    let record = wait_outcome(&cutover, &id, DEPLOY_TIMEOUT);
    assert_eq!(record["outcome"], "succeeded", "{record}");
    cutover.wait_until(DEPLOY_TIMEOUT, "the stable instance stopped", |c| {
        running_pids(c).len() == 1
    });
    only_version_answers(&cutover, "v2");
    wait_canary_weight(&cutover, 0.0);

    // abort: back to the version that served (v2), canaries gone.
    let stable = running_pids(&cutover);
    let id = push_no_wait(&cutover, &new_version(&cutover, "v2", "v3", &[]));
    wait_canary(&cutover, "the v3 canary waiting", |c| {
        c["deployment"] == id.as_str() && waiting_at(c, 1)
    });
    // One operation per app at a time: the waiting canary holds the app
    // (which has a previous version to roll back to by now).
    for (path, body) in [
        ("/deploy".to_string(), &br#"{"app": "web"}"#[..]),
        ("/rollback".to_string(), br#"{"app": "web"}"#),
        (format!("/apps/{APP}/pause"), br#"{"max_pause": "60s"}"#),
        (format!("/apps/{APP}/maintenance"), br#"{"on": true}"#),
    ] {
        let resp = cutover.admin_post_json(&path, body);
        assert_eq!(resp.status, 409, "{path} while the canary runs: {}", resp.text());
    }
    let aborted_cookie = cookie_of(&cutover, "v3");
    // A WebSocket pinned to the canary is told when the canary drains.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut ws = runtime.block_on(ws_pinned(cutover.proxy, &aborted_cookie, "v3"));
    let (code, out, err) = cutover.cli(&["abort", APP]);
    assert_eq!(code, 0, "{out}\n{err}");
    let record = wait_outcome(&cutover, &id, DEPLOY_TIMEOUT);
    assert_eq!(record["outcome"], "aborted", "{record}");
    let close = runtime.block_on(close_code(&mut ws, Duration::from_secs(30)));
    assert_eq!(close, 1012, "the canary's WebSocket got the service-restart close");
    assert_stable_serves_on(&cutover, &stable, "v2");
    // A client still holding the aborted version's cookie is served by the
    // stable version, and the cookie still never reaches the app.
    let resp = cutover
        .client()
        .send("GET", "t", "/headers", &[("Cookie", &aborted_cookie)], &[])
        .expect("proxy answers");
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.header("x-app-version"), Some("v2"));
    assert!(!resp.text().contains("cutover-web"), "{}", resp.text());

    // In the next canary that cookie names no version: it is ignored and a
    // new one issued. That canary is aborted through the API.
    let aborted_id = id;
    let id = push_no_wait(&cutover, &new_version(&cutover, "v3", "v4", &[]));
    wait_canary(&cutover, "the v4 canary waiting", |c| {
        c["deployment"] == id.as_str() && waiting_at(c, 1)
    });
    for _ in 0..5 {
        let resp = cutover
            .client()
            .send("GET", "t", "/", &[("Cookie", &aborted_cookie)], &[])
            .expect("proxy answers");
        assert_eq!(resp.status, 200, "{resp:?}");
        assert!(matches!(resp.header("x-app-version"), Some("v2" | "v4")), "{resp:?}");
        let set = resp.header("set-cookie").expect("a new sticky cookie");
        assert!(set.starts_with("cutover-web="), "{set}");
        assert_ne!(set.split(';').next().unwrap().trim(), aborted_cookie, "re-issued");
    }
    let resp = cutover.admin_post_json(&format!("/deployments/{id}/abort"), b"{}");
    assert_eq!(resp.status, 200, "{}", resp.text());
    let record = wait_outcome(&cutover, &id, DEPLOY_TIMEOUT);
    assert_eq!(record["outcome"], "aborted", "{record}");
    assert_stable_serves_on(&cutover, &stable, "v2");
    let id = aborted_id;
    for verb in ["promote", "abort"] {
        let resp = cutover.admin_post_json(&format!("/deployments/{id}/{verb}"), b"{}");
        assert_eq!(resp.status, 409, "{verb} of an ended deployment: {}", resp.text());
    }
    let (code, _, _) = cutover.cli(&["abort", APP]);
    assert_ne!(code, 0, "nothing to abort");
    let (code, history, _) = cutover.cli(&["history", APP]);
    assert_eq!(code, 0);
    assert!(history.contains("aborted"), "{history}");

    load.wait_for_more(30, Duration::from_secs(20));
    let report = load.stop();
    assert_eq!(report.failures(), 0, "{:?}", report.samples);
}
