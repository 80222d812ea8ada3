//! The operator's switches end to end (issue 12; SPEC §2 `pause`, `resume`,
//! `maintenance`, §3 `error_pages`, §5 `/apps/{app}/...`, §9): a pause
//! holds requests until resume (none fails within the max pause; 503 with
//! `Retry-After` after it); maintenance answers 503 with the page (HTML,
//! JSON or text by `Accept`, the message, `Retry-After`) and lets nothing
//! reach the app; both survive a restart of cutover; both are refused (409)
//! while a deployment of the app runs; an app's `error_pages` replace the
//! built-in pages.

mod support;

#[path = "support/progressive.rs"]
mod progressive;

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use progressive::{
    is_on, metric, new_version, newest_record, only_version_answers, push_no_wait, switches_of, wait_outcome, APP,
    DEPLOY_TIMEOUT,
};
use serde_json::Value;
use support::http::Response;
use support::load::{Load, LoadSpec, Req};
use support::{App, Cutover, TempDir};

const BROWSER: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";

fn start(app: App) -> Cutover {
    Cutover::builder().app(app).route("*", "/", APP).start()
}

/// One GET of `path` on a fresh connection with `Accept: accept`.
fn get_accepting(cutover: &Cutover, path: &str, accept: &str) -> Response {
    cutover
        .client()
        .send("GET", "t", path, &[("Accept", accept)], &[])
        .expect("proxy answers")
}

fn cli_ok(cutover: &Cutover, args: &[&str]) -> String {
    let (code, out, err) = cutover.cli(args);
    assert_eq!(code, 0, "cutover {args:?}: {out}\n{err}\nlog:\n{}", cutover.log());
    out
}

/// Operations recorded in the history, in order.
fn operations(cutover: &Cutover) -> Vec<String> {
    cutover
        .deployments()
        .iter()
        .map(|d| d["operation"].as_str().unwrap_or("?").to_string())
        .collect()
}

/// The name of the app's (only) instance.
fn instance_name(cutover: &Cutover) -> String {
    cutover.instances(APP)[0]["name"].as_str().unwrap().to_string()
}

/// A 503 the proxy answered itself, with `Retry-After` and no answer from
/// the app.
fn assert_own_503(resp: &Response) {
    assert_eq!(resp.status, 503, "{resp:?}");
    assert!(
        resp.header("retry-after").is_some(),
        "Retry-After on every 503: {resp:?}"
    );
    assert!(
        resp.header("x-app-version").is_none(),
        "the app did not answer: {resp:?}"
    );
}

/// The maintenance answer in all three forms, each naming `message`.
fn assert_maintenance_page(cutover: &Cutover, message: &str) {
    let html = get_accepting(cutover, "/", BROWSER);
    assert_own_503(&html);
    assert!(
        html.header("content-type").unwrap_or_default().contains("text/html"),
        "{html:?}"
    );
    assert!(html.text().contains(message), "{}", html.text());

    let json = get_accepting(cutover, "/", "application/json");
    assert_own_503(&json);
    assert!(
        json.header("content-type")
            .unwrap_or_default()
            .contains("application/json"),
        "{json:?}"
    );
    let body: Value = serde_json::from_slice(&json.body).expect("a JSON body");
    assert_eq!(body["status"], 503, "{body}");
    assert_eq!(body["message"], message, "{body}");
    assert!(body["error"].is_string(), "{body}");

    let plain = cutover.get("t", "/");
    assert_own_503(&plain);
    assert!(plain.text().contains(message), "{}", plain.text());
}

/// A GET that must be held by a pause of `max_pause` and then get 503.
fn assert_held_then_503(cutover: &Cutover, max_pause: Duration) {
    let started = Instant::now();
    let resp = cutover.get("t", "/");
    assert_own_503(&resp);
    assert!(
        started.elapsed() >= max_pause.mul_f32(0.9),
        "held for the max pause first ({:?})",
        started.elapsed()
    );
}

#[test]
fn pause_holds_requests_until_resume_and_fails_none() {
    let cutover = start(App::demo(APP, "v1"));
    let load = Load::start(
        cutover.proxy,
        LoadSpec {
            keepalive_clients: 3,
            fresh_clients: 2,
            mix: vec![Req::Get("/"), Req::Get("/slow?ms=300")],
            timeout: Duration::from_secs(30),
        },
    );
    load.wait_for_more(20, Duration::from_secs(20));

    cli_ok(&cutover, &["pause", APP, "--max-pause", "60s"]);
    let switches = switches_of(&cutover, APP);
    assert!(is_on(&switches, "paused"), "{switches}");
    assert_eq!(switches["paused"]["max_pause_ms"], 60_000, "{switches}");
    assert!(!is_on(&switches, "maintenance"), "{switches}");
    let status = cli_ok(&cutover, &["status"]);
    assert!(status.contains("paused"), "cutover status shows the pause:\n{status}");

    // A request sent now is held before the app: it reaches the app only
    // after resume. Every load client ends up held too.
    let proxy = cutover.proxy;
    let probe = std::thread::spawn(move || support::http::get(proxy, "t", "/headers?probe=held"));
    cutover.wait_until(Duration::from_secs(20), "every client held", |c| {
        metric(c, "cutover_held_requests", &[("app", APP)]).unwrap_or(0.0) >= 6.0
    });
    assert!(!probe.is_finished(), "the probe is held");
    assert!(!cutover.instance_log(&instance_name(&cutover)).contains("probe=held"));

    cli_ok(&cutover, &["resume", APP]);
    let resp = probe.join().unwrap().expect("the held request completes");
    assert_eq!(resp.status, 200, "{resp:?}");
    // The app logs a request as it answers it: the line may trail the answer.
    cutover.wait_until(Duration::from_secs(5), "the probe in the app's log", |c| {
        c.instance_log(&instance_name(c)).contains("probe=held")
    });
    load.wait_for_more(50, Duration::from_secs(20));
    let report = load.stop();
    assert_eq!(report.failures(), 0, "{:?}", report.samples);
    assert!(!is_on(&switches_of(&cutover, APP), "paused"));
    let ops = operations(&cutover);
    assert_eq!(ops, ["pause", "resume"], "both in the history");
    let (code, history, _) = cutover.cli(&["history", APP]);
    assert_eq!(code, 0);
    assert!(history.contains("pause") && history.contains("resume"), "{history}");
}

#[test]
fn a_pause_and_its_max_pause_survive_a_restart_of_cutover() {
    let mut cutover = start(App::demo(APP, "v1"));
    // Through the API here (the CLI's pause is the other tests').
    let resp = cutover.admin_post_json(&format!("/apps/{APP}/pause"), br#"{"max_pause": "1s"}"#);
    assert_eq!(resp.status, 200, "{}", resp.text());
    // Held past the max pause: 503 with Retry-After.
    assert_held_then_503(&cutover, Duration::from_secs(1));
    let record = newest_record(&cutover);
    assert_eq!(record["operation"], "pause", "{record}");

    let status = cutover.stop(Signal::SIGTERM, Duration::from_secs(20));
    assert!(status.is_none_or(|s| s.success()), "{status:?}");
    cutover.restart();
    cutover.wait_all_ready(Duration::from_secs(30));
    let switches = switches_of(&cutover, APP);
    assert!(is_on(&switches, "paused"), "still paused after the restart: {switches}");
    assert_eq!(switches["paused"]["max_pause_ms"], 1000, "{switches}");
    assert_held_then_503(&cutover, Duration::from_secs(1));

    let resp = cutover.admin_post_json(&format!("/apps/{APP}/resume"), b"{}");
    assert_eq!(resp.status, 200, "{}", resp.text());
    only_version_answers(&cutover, "v1");
    assert_eq!(
        operations(&cutover),
        ["pause", "resume"],
        "one record each, none replayed by the restart"
    );
}

#[test]
fn maintenance_answers_the_page_and_lets_nothing_reach_the_app() {
    let cutover = start(App::demo(APP, "v1"));
    let message = "Back at 5pm";
    cli_ok(&cutover, &["maintenance", APP, "on", "--message", message]);
    let switches = switches_of(&cutover, APP);
    assert_eq!(switches["maintenance"]["message"], message, "{switches}");
    let status = cli_ok(&cutover, &["status"]);
    assert!(status.contains("maintenance"), "cutover status shows it:\n{status}");

    assert_maintenance_page(&cutover, message);
    for path in ["/headers?probe=during", "/slow?ms=1&probe=during", "/ws?probe=during"] {
        assert_own_503(&cutover.get("t", path));
    }
    // The app keeps running and its health checks go on.
    let instances = cutover.instances(APP);
    assert!(instances.iter().all(|i| i["state"] == "ready"), "{instances:?}");

    cli_ok(&cutover, &["maintenance", APP, "off"]);
    let after = cutover.get("t", "/headers?probe=after");
    assert_eq!(after.status, 200, "{after:?}");
    let name = instance_name(&cutover);
    cutover.wait_until(Duration::from_secs(5), "the later request in the app's log", |c| {
        c.instance_log(&name).contains("probe=after")
    });
    assert!(
        !cutover.instance_log(&name).contains("probe=during"),
        "no request reached the app in maintenance:\n{}",
        cutover.instance_log(&name)
    );
    assert!(!is_on(&switches_of(&cutover, APP), "maintenance"));
    assert_eq!(operations(&cutover), ["maintenance_on", "maintenance_off"]);

    // Through the API as well.
    let on = cutover.admin_post_json(
        &format!("/apps/{APP}/maintenance"),
        br#"{"on": true, "message": "api says hi"}"#,
    );
    assert_eq!(on.status, 200, "{}", on.text());
    assert_maintenance_page(&cutover, "api says hi");
    let off = cutover.admin_post_json(&format!("/apps/{APP}/maintenance"), br#"{"on": false}"#);
    assert_eq!(off.status, 200, "{}", off.text());
    only_version_answers(&cutover, "v1");
}

#[test]
fn maintenance_survives_a_restart_of_cutover() {
    let mut cutover = start(App::demo(APP, "v1"));
    cli_ok(&cutover, &["maintenance", APP, "on", "--message", "moving house"]);
    assert_maintenance_page(&cutover, "moving house");

    let status = cutover.stop(Signal::SIGTERM, Duration::from_secs(20));
    assert!(status.is_none_or(|s| s.success()), "{status:?}");
    cutover.restart();
    cutover.wait_all_ready(Duration::from_secs(30));
    assert_eq!(switches_of(&cutover, APP)["maintenance"]["message"], "moving house");
    assert_maintenance_page(&cutover, "moving house");

    cli_ok(&cutover, &["maintenance", APP, "off"]);
    only_version_answers(&cutover, "v1");
}

#[test]
fn pause_and_maintenance_are_refused_while_a_deployment_of_the_app_runs() {
    let cutover = start(App::demo(APP, "v1"));
    // The new version takes 4 s to start: the deployment runs meanwhile.
    let id = push_no_wait(
        &cutover,
        &new_version(&cutover, "v1", "v2", &[("DEMO_START_DELAY_MS", "4000")]),
    );
    for (path, body) in [
        ("pause", &br#"{"max_pause": "60s"}"#[..]),
        ("maintenance", br#"{"on": true}"#),
    ] {
        let resp = cutover.admin_post_json(&format!("/apps/{APP}/{path}"), body);
        assert_eq!(resp.status, 409, "{path}: {}", resp.text());
        let error: Value = serde_json::from_slice(&resp.body).expect("a JSON error");
        assert!(error["error"].is_string(), "{error}");
    }
    for args in [&["pause", APP][..], &["maintenance", APP, "on"]] {
        let (code, _, _) = cutover.cli(args);
        assert_ne!(code, 0, "cutover {args:?} refused");
    }
    assert!(
        cutover.deployment(&id)["outcome"].is_null(),
        "the refusals happened while the deployment ran"
    );
    let record = wait_outcome(&cutover, &id, DEPLOY_TIMEOUT);
    assert_eq!(record["outcome"], "succeeded", "{record}");
    assert!(switches_of(&cutover, APP)
        .as_object()
        .is_none_or(|s| s.values().all(Value::is_null)));

    // Once it ended, the same switches are accepted.
    cli_ok(&cutover, &["pause", APP]);
    cli_ok(&cutover, &["resume", APP]);
    only_version_answers(&cutover, "v2");
}

#[test]
fn an_apps_error_pages_are_served_on_a_hold_timeout_and_in_maintenance() {
    let pages = TempDir::new("error-pages");
    let page_503 = "<!doctype html><title>busy</title><p>web is busy, come back soon</p>\n";
    let page_maintenance = "<!doctype html><title>maintenance</title><p>custom page: {{message}}</p>\n";
    std::fs::write(pages.path().join("503.html"), page_503).unwrap();
    std::fs::write(pages.path().join("maintenance.html"), page_maintenance).unwrap();
    let cutover = start(App::demo(APP, "v1").yaml(&format!("error_pages: {:?}", pages.path().display().to_string())));

    cli_ok(&cutover, &["pause", APP, "--max-pause", "500ms"]);
    let html = get_accepting(&cutover, "/", BROWSER);
    assert_own_503(&html);
    assert_eq!(html.text(), page_503, "the app's own 503 page");
    let json = get_accepting(&cutover, "/", "application/json");
    assert_own_503(&json);
    let body: Value = serde_json::from_slice(&json.body).expect("JSON for a JSON client");
    assert_eq!(body["status"], 503, "{body}");
    cli_ok(&cutover, &["resume", APP]);
    only_version_answers(&cutover, "v1");

    cli_ok(&cutover, &["maintenance", APP, "on", "--message", "back <soon> & well"]);
    let html = get_accepting(&cutover, "/", BROWSER);
    assert_own_503(&html);
    assert_eq!(
        html.text(),
        page_maintenance.replace("{{message}}", "back &lt;soon&gt; &amp; well"),
        "the app's maintenance page with the message, HTML-escaped"
    );
    let json = get_accepting(&cutover, "/", "application/json");
    let body: Value = serde_json::from_slice(&json.body).expect("JSON for a JSON client");
    assert_eq!(body["message"], "back <soon> & well", "{body}");
    cli_ok(&cutover, &["maintenance", APP, "off"]);
    only_version_answers(&cutover, "v1");
}
