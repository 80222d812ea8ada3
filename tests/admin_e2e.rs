//! The admin API: bearer token, JSON errors, status and metrics, and the
//! client commands that read them; requests shaped as a web page can send
//! them (SPEC §5, "Browsers are not trusted callers") change and run
//! nothing.

mod support;

use serde_json::Value;
use support::{App, Client, Cutover};

fn get(cutover: &Cutover, path: &str, token: Option<&str>) -> support::Response {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
    Client::connect(cutover.admin)
        .unwrap()
        .send("GET", &cutover.admin_host(), path, &headers, &[])
        .unwrap()
}

/// The parsed `{"error": "..."}` of a refusal; panics when it is not one.
fn error_of(resp: &support::Response) -> String {
    assert!(
        resp.header("content-type")
            .is_some_and(|t| t.starts_with("application/json")),
        "{} {:?} {}",
        resp.status,
        resp.headers,
        resp.text()
    );
    let body: Value = serde_json::from_slice(&resp.body).unwrap_or_else(|e| panic!("{e}: {}", resp.text()));
    body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error in {body}"))
        .to_string()
}

#[test]
fn a_configured_token_is_required_everywhere_but_healthz() {
    let cutover = Cutover::builder()
        .app(App::demo("web", "v1"))
        .route("*", "/", "web")
        .admin_token("TEST_ADMIN_TOKEN", "s3cret-token")
        .start();
    assert_eq!(get(&cutover, "/healthz", None).status, 200);
    for path in ["/status", "/metrics", "/deployments"] {
        let missing = get(&cutover, path, None);
        assert_eq!(missing.status, 401, "{path}");
        assert!(error_of(&missing).contains("token"));
        assert_eq!(
            missing.header("www-authenticate"),
            Some("Bearer realm=\"cutover\""),
            "{path}: 401 names the scheme"
        );
        assert_eq!(
            get(&cutover, path, Some("s3cret-tokeN")).status,
            401,
            "{path}: wrong token"
        );
        assert_eq!(
            get(&cutover, path, Some("s3cret")).status,
            401,
            "{path}: a prefix is not the token"
        );
        assert_eq!(get(&cutover, path, Some("s3cret-token")).status, 200, "{path}");
        // The scheme is case-insensitive (RFC 9110 §11.1).
        let lower = Client::connect(cutover.admin)
            .unwrap()
            .send(
                "GET",
                &cutover.admin_host(),
                path,
                &[("Authorization", "bearer s3cret-token")],
                &[],
            )
            .unwrap();
        assert_eq!(lower.status, 200, "{path}: lowercase bearer");
    }
    // Unknown paths need the token too: nothing is learned without it.
    assert_eq!(get(&cutover, "/nope", None).status, 401);
    // The CLI sends $CUTOVER_ADMIN_TOKEN.
    let (code, out, err) = cutover.cli(&["status", "--json"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"web-0\""), "{out}");
}

#[test]
fn errors_are_json_with_the_right_code() {
    let cutover = Cutover::builder()
        .app(App::demo("web", "v1"))
        .route("*", "/", "web")
        .start();
    let unknown = get(&cutover, "/nope", None);
    assert_eq!(unknown.status, 404);
    error_of(&unknown);

    let bad = cutover.admin_post_json("/deploy", b"{\"app\": 3}");
    assert_eq!(bad.status, 400, "{}", bad.text());
    error_of(&bad);
    let no_app = cutover.admin_post_json("/deploy", br#"{"app": "ghost"}"#);
    assert_eq!(no_app.status, 404, "{}", no_app.text());
    assert!(error_of(&no_app).contains("ghost"));
    let bad_strategy = cutover.admin_send(
        "POST",
        "/push?deploy_strategy=yolo",
        &[("Content-Type", "application/yaml")],
        b"x: 1",
    );
    assert_eq!(bad_strategy.status, 400, "{}", bad_strategy.text());
    error_of(&bad_strategy);
    let missing = get(&cutover, "/deployments/web-99", None);
    assert_eq!(missing.status, 404);
    error_of(&missing);

    // axum's own answers are JSON too: 405 keeps its Allow header...
    let wrong_method = cutover.admin_send("DELETE", "/status", &[], &[]);
    assert_eq!(wrong_method.status, 405);
    assert!(
        wrong_method.header("allow").is_some_and(|a| a.contains("GET")),
        "{:?}",
        wrong_method.headers
    );
    let message = error_of(&wrong_method);
    assert!(message.contains("DELETE"), "{message}");
    let get_on_post = cutover.admin_send("GET", "/deploy", &[], &[]);
    assert_eq!(get_on_post.status, 405);
    assert!(get_on_post.header("allow").is_some_and(|a| a.contains("POST")));
    error_of(&get_on_post);
    // ...413 past the body limit...
    let huge = vec![b' '; 3 * 1024 * 1024];
    let too_big = cutover.admin_post_json("/deploy", &huge);
    assert_eq!(too_big.status, 413, "{}", too_big.text());
    error_of(&too_big);
    // ...and 415 for a body that is not JSON.
    let not_json = cutover.admin_send("POST", "/deploy", &[("Content-Type", "text/plain")], b"{}");
    assert_eq!(not_json.status, 415);
    assert!(error_of(&not_json).contains("application/json"));
}

#[test]
fn the_cli_keeps_working_under_the_content_type_rule() {
    let cutover = Cutover::builder()
        .app(App::demo("web", "v1"))
        .route("*", "/", "web")
        .start();
    // `cutover deploy` with no app and no strategy (a JSON body of nulls).
    let (code, out, err) = cutover.cli(&["deploy"]);
    assert_eq!(code, 0, "{out}\n{err}");
    // `cutover push` sends the YAML as application/yaml.
    let (code, out, err) = cutover.push(&cutover.config_with_version("v1", "v2"), &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(cutover.get("t", "/").text().starts_with("v2 "));
    // A POST with no body and no Content-Type is refused, whatever it
    // would have meant.
    let bare = cutover.admin_send("POST", "/deploy", &[], &[]);
    assert_eq!(bare.status, 415, "{}", bare.text());
    error_of(&bare);
}

#[test]
fn status_and_metrics_describe_the_running_apps() {
    let cutover = Cutover::builder()
        .app(App::demo("web", "v1").instances(2))
        .route("*", "/", "web")
        .start();
    for _ in 0..5 {
        assert_eq!(cutover.get("t", "/").status, 200);
    }
    let status = cutover.status();
    let instances = status["apps"][0]["instances"].as_array().unwrap();
    assert_eq!(instances.len(), 2);
    for i in instances {
        assert_eq!(i["role"], "original");
        assert_eq!(i["state"], "ready");
        assert!(i["address"].as_str().unwrap().starts_with("127.0.0.1:"));
        assert_eq!(i["version"], status["apps"][0]["version"]);
    }

    let (code, out, _) = cutover.cli(&["status"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("web-0") && out.contains("web-1") && out.contains("ready"),
        "{out}"
    );

    let metrics = get(&cutover, "/metrics", None);
    assert!(metrics.header("content-type").unwrap().starts_with("text/plain"));
    let text = metrics.text();
    assert!(
        text.contains("cutover_requests_total{app=\"web\",code=\"200\"} 5"),
        "{text}"
    );
    assert!(
        text.contains("cutover_request_duration_seconds_bucket{app=\"web\""),
        "{text}"
    );
}

/// A config for `web` whose build hook creates `marker`: what an attacker
/// would push to run a command.
fn evil_config(cutover: &Cutover, marker: &std::path::Path) -> String {
    cutover.config_with(
        "    stop_timeout: 3s",
        &format!(
            "    stop_timeout: 3s\n    hooks: {{ build: 'touch {}' }}",
            marker.display()
        ),
    )
}

/// What must not change after a refused request: the versions serving,
/// the instances, the table, the deployments.
fn observable(cutover: &Cutover) -> Value {
    let mut status = cutover.status();
    status.as_object_mut().unwrap().remove("uptime_seconds");
    for app in status["apps"].as_array_mut().unwrap() {
        for instance in app["instances"].as_array_mut().unwrap() {
            // Counters that move with our own probes.
            instance.as_object_mut().unwrap().remove("inflight");
        }
    }
    serde_json::json!({ "status": status, "deployments": cutover.deployments().len() })
}

/// (what, Host, headers, expected status)
type Case<'a> = (&'a str, String, Vec<(&'a str, &'a str)>, u16);

#[test]
fn requests_a_web_page_can_send_change_and_run_nothing() {
    let cutover = Cutover::builder()
        .app(App::demo("web", "v1"))
        .route("*", "/", "web")
        .admin_yaml("allowed_origins: [\"https://ops.example.com\"]")
        .start();
    let marker = cutover.dir.path().join("pwned");
    let evil = evil_config(&cutover, &marker);
    let before = observable(&cutover);
    let host = cutover.admin_host();
    let wrong_host = format!("evil.example:{}", cutover.admin.port());
    let yaml = ("Content-Type", "application/yaml");
    let cases: Vec<Case> = vec![
        // The no-cors shapes: a form, a multipart form, text/plain, no type.
        (
            "text/plain",
            host.clone(),
            vec![("Content-Type", "text/plain;charset=UTF-8")],
            415,
        ),
        (
            "urlencoded form",
            host.clone(),
            vec![("Content-Type", "application/x-www-form-urlencoded")],
            415,
        ),
        (
            "multipart form",
            host.clone(),
            vec![("Content-Type", "multipart/form-data; boundary=----x")],
            415,
        ),
        ("no Content-Type", host.clone(), vec![], 415),
        // A page of another origin, even with the right type (it would need
        // a preflight, but refuse it anyway).
        (
            "foreign Origin",
            host.clone(),
            vec![yaml, ("Origin", "http://evil.example")],
            403,
        ),
        ("Origin null", host.clone(), vec![yaml, ("Origin", "null")], 403),
        (
            "cross-site fetch without Origin",
            host.clone(),
            vec![yaml, ("Sec-Fetch-Site", "cross-site")],
            403,
        ),
        (
            "allowed origin but form type",
            host.clone(),
            vec![("Content-Type", "text/plain"), ("Origin", "https://ops.example.com")],
            415,
        ),
        // DNS rebinding: the browser names the attacker's host.
        ("rebound Host", wrong_host.clone(), vec![yaml], 421),
        (
            "rebound Host with allowed origin",
            wrong_host.clone(),
            vec![yaml, ("Origin", "https://ops.example.com")],
            421,
        ),
    ];
    for (what, host, headers, code) in &cases {
        let resp = Client::connect(cutover.admin)
            .unwrap()
            .send(
                "POST",
                host,
                "/push?deploy_strategy=stopstart",
                headers,
                evil.as_bytes(),
            )
            .unwrap();
        assert_eq!(resp.status, *code, "{what}: {}", resp.text());
        error_of(&resp);
    }
    // No deployment was started (the history and the running list are
    // unchanged), so no hook can still be on its way.
    assert!(!marker.exists(), "a refused push ran its build hook");
    assert_eq!(observable(&cutover), before, "a refused request changed something");

    // A rebound page cannot read anything either.
    for path in ["/status", "/metrics", "/deployments", "/healthz"] {
        let resp = Client::connect(cutover.admin)
            .unwrap()
            .send("GET", &wrong_host, path, &[], &[])
            .unwrap();
        assert_eq!(resp.status, 421, "{path}");
        error_of(&resp);
    }

    // Nor read it from another origin (a CORS fetch carries Origin), nor
    // get a preflight approved.
    let read = cutover.admin_send("GET", "/status", &[("Origin", "http://evil.example")], &[]);
    assert_eq!(read.status, 403);
    error_of(&read);
    let preflight = cutover.admin_send(
        "OPTIONS",
        "/push",
        &[
            ("Origin", "https://ops.example.com"),
            ("Access-Control-Request-Method", "POST"),
        ],
        &[],
    );
    assert_eq!(preflight.status, 405);
    assert!(preflight.header("access-control-allow-origin").is_none());
    error_of(&preflight);

    // The allowed origin with a YAML body is a push like any other.
    let resp = cutover.admin_send(
        "POST",
        "/push",
        &[
            ("Content-Type", "application/yaml"),
            ("Origin", "https://ops.example.com"),
        ],
        evil.as_bytes(),
    );
    assert_eq!(resp.status, 202, "{}", resp.text());
    cutover.wait_until(std::time::Duration::from_secs(30), "the build hook to run", |_| {
        marker.exists()
    });
}

/// Regression: issue 9's finding, `curl -X POST -H 'Content-Type:
/// text/plain' -H 'Origin: http://evil.example' --data-binary @evil.yaml
/// http://127.0.0.1:9180/push` answered 202 and the hook ran; `Host:
/// evil.example:9180` got 200 on `/status` and 202 on `/push`.
#[test]
fn the_issues_curl_finding_is_refused() {
    let cutover = Cutover::builder()
        .app(App::demo("web", "v1"))
        .route("*", "/", "web")
        .start();
    let marker = cutover.dir.path().join("pwned");
    let evil = evil_config(&cutover, &marker);
    let curl = |host: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]| {
        let mut all = vec![("Accept", "*/*")];
        all.extend_from_slice(headers);
        Client::connect(cutover.admin)
            .unwrap()
            .send(method, host, path, &all, body)
            .unwrap()
    };
    let host = cutover.admin_host();
    let from_evil = [("Content-Type", "text/plain"), ("Origin", "http://evil.example")];
    let resp = curl(&host, "POST", "/push", &from_evil, evil.as_bytes());
    assert_eq!(resp.status, 403, "{}", resp.text());
    assert!(error_of(&resp).contains("evil.example"));
    let rebound = format!("evil.example:{}", cutover.admin.port());
    assert_eq!(curl(&rebound, "GET", "/status", &[], &[]).status, 421);
    let resp = curl(
        &rebound,
        "POST",
        "/push",
        &[("Content-Type", "application/yaml")],
        evil.as_bytes(),
    );
    assert_eq!(resp.status, 421, "{}", resp.text());
    assert!(!marker.exists(), "the pushed build hook ran");
    assert!(cutover.deployments().is_empty(), "a deployment started");
}

#[test]
fn a_request_without_host_is_a_bad_request() {
    use std::io::{Read, Write};
    let cutover = Cutover::builder()
        .app(App::demo("web", "v1"))
        .route("*", "/", "web")
        .start();
    let mut raw = std::net::TcpStream::connect(cutover.admin).unwrap();
    raw.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    raw.write_all(b"GET /status HTTP/1.1\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    raw.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("\"error\""), "{answer}");
    // Loopback names of the listener are accepted.
    for host in [format!("localhost:{}", cutover.admin.port()), cutover.admin_host()] {
        let resp = Client::connect(cutover.admin)
            .unwrap()
            .send("GET", &host, "/status", &[], &[])
            .unwrap();
        assert_eq!(resp.status, 200, "{host}");
    }
}
