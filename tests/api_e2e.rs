//! The typed admin API against a live cutover: `/openapi.json` names every
//! endpoint of SPEC §5, the answers parse into `cutover_control::api`'s
//! types, and the new verbs' commands handle their arguments and the API's
//! refusals (what happens when a verb runs is tested with the controller's
//! verbs, not here).

mod support;

use std::collections::BTreeSet;

use cutover_control::api::{CertificatesBody, Deployment, ErrorBody, Outcome, StatusBody};
use serde_json::Value;
use support::{App, Client, Cutover};

const TOKEN: &str = "api-e2e-token";

fn cutover() -> Cutover {
    Cutover::builder()
        .app(App::demo("web", "v1"))
        .route("*", "/", "web")
        .admin_token("CUTOVER_ADMIN_TOKEN", TOKEN)
        .start()
}

/// The JSON error of a refusal, checked to be one.
fn error_of(resp: &support::Response) -> ErrorBody {
    assert!(
        resp.header("content-type")
            .is_some_and(|t| t.starts_with("application/json")),
        "{} {:?} {}",
        resp.status,
        resp.headers,
        resp.text()
    );
    serde_json::from_slice(&resp.body).unwrap_or_else(|e| panic!("{e}: {}", resp.text()))
}

#[test]
fn the_openapi_document_names_every_endpoint_and_needs_the_token() {
    let cutover = cutover();
    let anonymous = Client::connect(cutover.admin)
        .unwrap()
        .send("GET", &cutover.admin_host(), "/openapi.json", &[], &[])
        .unwrap();
    assert_eq!(anonymous.status, 401, "{}", anonymous.text());

    let resp = cutover.admin_get("/openapi.json");
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert!(resp
        .header("content-type")
        .is_some_and(|t| t.starts_with("application/json")));
    let doc: Value = serde_json::from_slice(&resp.body).expect("the document is JSON");
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
        "{}",
        doc["openapi"]
    );
    let operations: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .expect("a path item")
                .keys()
                .map(move |method| (method.to_uppercase(), path.clone()))
        })
        .collect();
    // SPEC §5, line by line.
    let spec = [
        ("GET", "/healthz"),
        ("GET", "/status"),
        ("POST", "/deploy"),
        ("POST", "/push"),
        ("GET", "/deployments"),
        ("GET", "/deployments/{id}"),
        ("GET", "/deployments/{id}/events"),
        ("GET", "/metrics"),
        ("POST", "/rollback"),
        ("POST", "/deployments/{id}/promote"),
        ("POST", "/deployments/{id}/abort"),
        ("POST", "/apps/{app}/pause"),
        ("POST", "/apps/{app}/resume"),
        ("POST", "/apps/{app}/maintenance"),
        ("POST", "/upgrade"),
        ("GET", "/certificates"),
    ];
    for (method, path) in spec {
        assert!(
            operations.contains(&(method.to_string(), path.to_string())),
            "{method} {path} is missing from {operations:?}"
        );
    }
    assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    // Every documented operation exists on the live router: none is
    // answered by the fallback's "no such endpoint" or a 405.
    for (method, path) in &operations {
        let concrete = path.replace("{id}", "web-999").replace("{app}", "ghost");
        let resp = cutover.admin_send(
            method,
            &concrete,
            &[("Content-Type", "application/json")],
            b"{\"x\": 1}",
        );
        assert_ne!(resp.status, 405, "{method} {concrete}: {}", resp.text());
        if resp.status == 404 {
            assert_ne!(error_of(&resp).error, "no such endpoint", "{method} {concrete}");
        }
    }
}

#[test]
fn live_answers_parse_into_the_typed_api() {
    let cutover = cutover();
    let resp = cutover.admin_get("/status");
    assert_eq!(resp.status, 200, "{}", resp.text());
    let status: StatusBody = serde_json::from_slice(&resp.body).unwrap_or_else(|e| panic!("{e}: {}", resp.text()));
    assert_eq!(status.pid, cutover.pid());
    let web = status.apps.iter().find(|a| a.name == "web").expect("web in the status");
    assert_eq!(web.instances.len(), 1);
    assert_eq!(web.instances[0].state, "ready");
    assert_eq!(web.instances[0].role.as_str(), "original");
    // `cutover status --json` prints that same type.
    let (code, out, err) = cutover.cli(&["status", "--json"]);
    assert_eq!(code, 0, "{err}");
    let printed: StatusBody = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(printed.apps[0].instances[0].name, "web-0");

    // A deploy, then its record, the history and the CLI's table.
    let (code, out, err) = cutover.cli(&["deploy", "web", "--strategy", "stopstart"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let resp = cutover.admin_get("/deployments");
    let history: Vec<Deployment> =
        serde_json::from_slice(&resp.body).unwrap_or_else(|e| panic!("{e}: {}", resp.text()));
    let last = history.last().expect("the deploy is in the history");
    assert_eq!(last.outcome, Some(Outcome::Succeeded));
    let resp = cutover.admin_get(&format!("/deployments/{}", last.id));
    let one: Deployment = serde_json::from_slice(&resp.body).unwrap_or_else(|e| panic!("{e}: {}", resp.text()));
    assert!(!one.events.is_empty(), "one deployment comes with its events");
    let (code, out, _) = cutover.cli(&["history", "web"]);
    assert_eq!(code, 0);
    let row = out
        .lines()
        .find(|l| l.starts_with(&last.id))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(row.contains(" stopstart ") && row.contains(" succeeded "), "{row}");

    let resp = cutover.admin_get("/certificates");
    let certs: CertificatesBody = serde_json::from_slice(&resp.body).unwrap_or_else(|e| panic!("{e}: {}", resp.text()));
    assert!(certs.certificates.is_empty());
}

#[test]
fn the_new_verbs_refuse_bad_arguments_before_anything_runs() {
    let cutover = cutover();
    // Bodies the handlers refuse themselves: 400 with the JSON error.
    for (path, body, says) in [
        ("/apps/web/pause", &br#"{"max_pause": "soon"}"#[..], "max_pause"),
        ("/apps/web/pause", br#"{"max_pause": "0s"}"#, "max_pause"),
        (
            "/apps/web/pause",
            br#"{"max_pause": "2h"}"#,
            "max_pause must be between 100ms and 1h",
        ),
        ("/apps/web/pause", br#"{"max_pause": 60}"#, "bad pause request"),
        ("/apps/web/pause", br#"{"bogus": true}"#, "unknown field"),
        ("/apps/web/maintenance", br#"{}"#, "missing field `on`"),
        ("/apps/web/maintenance", br#"{"on": "yes"}"#, "bad maintenance request"),
        ("/rollback", br#"{"app": 3}"#, "bad rollback request"),
        (
            "/deployments/web-1/promote",
            br#"{"full": "yes"}"#,
            "bad promote request",
        ),
        ("/deployments/web-1/promote", br#"[]"#, "bad promote request"),
    ] {
        let resp = cutover.admin_post_json(path, body);
        assert_eq!(
            resp.status,
            400,
            "{path} {}: {}",
            String::from_utf8_lossy(body),
            resp.text()
        );
        let error = error_of(&resp).error;
        assert!(error.contains(says), "{path}: {error}");
    }
    // A POST to a path without one is 405 with Allow, whatever its type.
    let wrong = cutover.admin_send("POST", "/status", &[], &[]);
    assert_eq!(wrong.status, 405, "{}", wrong.text());
    assert!(wrong.header("allow").is_some_and(|a| a.contains("GET")));
    error_of(&wrong);
    // A verb's POST still needs JSON.
    let form = cutover.admin_send("POST", "/apps/web/pause", &[("Content-Type", "text/plain")], b"{}");
    assert_eq!(form.status, 415, "{}", form.text());

    // The CLI shows the API's error and exits 1.
    let (code, out, err) = cutover.cli(&["pause", "web", "--max-pause", "soon"]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(err.contains("max_pause") && err.contains("soon"), "{err}");
    for verb in [
        &["pause", "ghost"][..],
        &["rollback", "ghost"],
        &["maintenance", "ghost", "on"],
    ] {
        let (code, out, err) = cutover.cli(verb);
        assert_eq!(code, 1, "{verb:?}: {out}\n{err}");
        assert!(err.contains("ghost"), "{verb:?}: {err}");
    }
    // promote and abort need the app's running deployment, from /status.
    for verb in ["promote", "abort"] {
        let (code, out, err) = cutover.cli(&[verb, "web"]);
        assert_eq!(code, 1, "{out}\n{err}");
        assert!(err.contains("no deployment of web is running"), "{verb}: {err}");
        let (code, _, err) = cutover.cli(&[verb, "ghost"]);
        assert_eq!(code, 1);
        assert!(err.contains("no app named \"ghost\""), "{verb}: {err}");
    }
    // Arguments clap refuses (exit 2): the on/off switch, a strategy the
    // API does not know (its error lists the ones it does).
    let (code, _, err) = cutover.cli(&["maintenance", "web", "maybe"]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = cutover.cli(&["deploy", "web", "--strategy", "yolo"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("rolling") && err.contains("stopstart"), "{err}");
    // Nothing ran: no deployment, no entry.
    assert!(cutover.deployments().is_empty(), "{:?}", cutover.deployments());
}
