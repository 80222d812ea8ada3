//! The admin API: bearer token, JSON errors, status and metrics, and the
//! client commands that read them.

mod support;

use serde_json::Value;
use support::{App, Client, Cutover};

fn get(cutover: &Cutover, path: &str, token: Option<&str>) -> support::Response {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
    Client::connect(cutover.admin)
        .unwrap()
        .send("GET", "admin", path, &headers, &[])
        .unwrap()
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
        let body: Value = serde_json::from_slice(&missing.body).unwrap();
        assert!(body["error"].as_str().unwrap().contains("token"), "{body}");
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
    }
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
    assert!(serde_json::from_slice::<Value>(&unknown.body).unwrap()["error"].is_string());

    let mut admin = Client::connect(cutover.admin).unwrap();
    let bad = admin.request("POST", "admin", "/deploy", b"{\"app\": 3}").unwrap();
    assert_eq!(bad.status, 400, "{}", bad.text());
    let no_app = admin
        .request("POST", "admin", "/deploy", br#"{"app": "ghost"}"#)
        .unwrap();
    assert_eq!(no_app.status, 404, "{}", no_app.text());
    assert!(no_app.text().contains("ghost"));
    let bad_strategy = admin
        .request("POST", "admin", "/push?deploy_strategy=yolo", b"x: 1")
        .unwrap();
    assert_eq!(bad_strategy.status, 400, "{}", bad_strategy.text());
    let missing = get(&cutover, "/deployments/web-99", None);
    assert_eq!(missing.status, 404);
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
