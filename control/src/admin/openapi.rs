//! The OpenAPI 3.1 document of the admin API, served at
//! `GET /openapi.json` (behind the same guard as every other endpoint: it
//! needs the bearer token when one is set).
//!
//! Each handler carries its own `#[utoipa::path]`; [`ApiDoc`] lists them
//! all and [`GuardResponses`] adds what the guard can answer on every
//! operation (it runs before any handler). The unit test below reads
//! [`super::router`] and fails on a route the document does not name, so
//! a new endpoint cannot ship undocumented.

use std::sync::OnceLock;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
use utoipa::{Modify, OpenApi};

/// The security scheme's name in the document.
const BEARER: &str = "bearer";

/// The admin API's document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "cutover admin API",
        description = "The admin API of cutover (SPEC §5). Every answer is JSON but `/metrics` (Prometheus text), \
`/healthz` (text) and the event streams (`text/event-stream`); every error is JSON `{\"error\": \"...\"}` \
(with the running deployment's `id` on a 409). When cutover has an admin token (`admin.token_env`), every \
endpoint but `/healthz` needs it as `Authorization: Bearer TOKEN`, this document included. Every request must \
name the admin listener in `Host` (else 421), carry no `Origin` outside `admin.allowed_origins` (else 403), \
and every POST must say it carries JSON (`/push`: YAML or JSON) in `Content-Type` (else 415).",
    ),
    paths(
        super::healthz,
        super::status,
        super::metrics,
        serve,
        super::deploy,
        super::push,
        super::verbs::rollback,
        super::certificates::list,
        super::certificates::reload,
        super::deployments::list,
        super::deployments::one,
        super::deployments::events,
        super::verbs::promote,
        super::verbs::abort,
        super::apps::pause,
        super::apps::resume,
        super::apps::maintenance,
        super::upgrades::start,
        super::upgrades::events,
    ),
    modifiers(&GuardResponses),
    security(("bearer" = [])),
    tags(
        (name = "cutover", description = "the process: health, status, metrics, this document"),
        (name = "deployments", description = "deploy, push, rollback, promote, abort, history and live events"),
        (name = "apps", description = "the operator's switches: pause, resume, maintenance"),
        (name = "certificates", description = "certificates in use, reload"),
        (name = "upgrades", description = "upgrading cutover itself"),
    )
)]
pub struct ApiDoc;

/// Adds the bearer scheme and, on every operation, the guard's refusals
/// (SPEC §5 "Browsers are not trusted callers"), each with the JSON error
/// body.
pub struct GuardResponses;

impl Modify for GuardResponses {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(BEARER, SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
        for item in doc.paths.paths.values_mut() {
            if let Some(get) = item.get.as_mut() {
                add_refusals(get, false);
            }
            if let Some(post) = item.post.as_mut() {
                add_refusals(post, true);
            }
        }
    }
}

fn add_refusals(operation: &mut Operation, post: bool) {
    let mut refusals = vec![
        ("400", "no Host header"),
        ("403", "an Origin outside admin.allowed_origins"),
        ("421", "Host does not name the admin listener (DNS rebinding)"),
    ];
    // `security(())` (an empty requirement) marks the one endpoint the
    // token does not guard.
    let open = operation
        .security
        .as_ref()
        .is_some_and(|s| s.iter().any(|r| r == &SecurityRequirement::default()));
    if !open {
        refusals.push(("401", "missing or wrong bearer token (with WWW-Authenticate)"));
    }
    if post {
        refusals.push(("413", "body over 2 MiB"));
        refusals.push(("415", "Content-Type is not application/json (for /push: YAML or JSON)"));
    }
    for (status, why) in refusals {
        let response = ResponseBuilder::new()
            .description(why)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorBody")))
                    .build(),
            )
            .build();
        // A handler's own description of the code (a bad body's 400) wins.
        operation
            .responses
            .responses
            .entry(status.to_string())
            .or_insert_with(|| response.into());
    }
}

/// The document as served, built once.
pub fn document() -> &'static str {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| {
        ApiDoc::openapi()
            .to_json()
            .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    })
}

/// This document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "cutover",
    responses((status = 200, description = "the OpenAPI 3.1 document of this API", body = Object, content_type = "application/json"))
)]
pub(super) async fn serve() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], document()).into_response()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// Every `.route("PATH", get(..)/post(..))` of [`super::super::router`],
    /// read from its source: the router cannot list its routes, and this
    /// keeps the check on the real thing, not on a copy of the list.
    fn routed() -> BTreeSet<(String, String)> {
        let source = include_str!("mod.rs");
        let body = source
            .split("pub fn router(")
            .nth(1)
            .and_then(|rest| rest.split("\n}\n").next())
            .expect("admin/mod.rs defines router()");
        let mut routes = BTreeSet::new();
        for line in body.lines() {
            let Some(rest) = line.trim().strip_prefix(".route(\"") else {
                continue;
            };
            let (path, methods) = rest.split_once('"').expect("a quoted path");
            assert!(
                !methods.contains(" post("),
                "{path}: POST routes use `posted`, which checks the Content-Type"
            );
            for (call, method) in [("get(", "get"), ("posted(", "post")] {
                if methods.contains(call) {
                    routes.insert((path.to_string(), method.to_string()));
                }
            }
        }
        routes
    }

    fn documented() -> BTreeSet<(String, String)> {
        let doc: serde_json::Value = serde_json::from_str(document()).expect("the document is JSON");
        let mut operations = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for method in item.as_object().expect("a path item").keys() {
                operations.insert((path.clone(), method.clone()));
            }
        }
        operations
    }

    #[test]
    fn the_document_names_every_route_of_the_router_and_no_other() {
        let routed = routed();
        assert!(routed.len() >= 19, "the source scan found the routes: {routed:?}");
        let documented = documented();
        let undocumented: Vec<_> = routed.difference(&documented).collect();
        assert!(
            undocumented.is_empty(),
            "routes without #[utoipa::path] in ApiDoc: {undocumented:?}"
        );
        let stale: Vec<_> = documented.difference(&routed).collect();
        assert!(stale.is_empty(), "documented but not routed: {stale:?}");
    }

    #[test]
    fn every_operation_documents_its_errors_and_bodies() {
        let doc: serde_json::Value = serde_json::from_str(document()).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        assert_eq!(doc["components"]["securitySchemes"][BEARER]["scheme"], "bearer");
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                let responses = operation["responses"].as_object().unwrap();
                let mut expected = vec!["403", "421"];
                if path != "/healthz" {
                    expected.push("401");
                }
                if method == "post" {
                    expected.extend(["413", "415"]);
                    assert!(
                        operation["requestBody"].is_object(),
                        "{method} {path} documents its body"
                    );
                }
                for code in expected {
                    let error = &responses[code]["content"]["application/json"]["schema"]["$ref"];
                    assert_eq!(error, "#/components/schemas/ErrorBody", "{method} {path} {code}");
                }
                assert!(
                    responses.keys().any(|code| code.starts_with('2')),
                    "{method} {path} has a success answer"
                );
            }
        }
        // The endpoints that are not JSON say so.
        let content = |path: &str| doc["paths"][path]["get"]["responses"]["200"]["content"].clone();
        assert!(content("/metrics")["text/plain"].is_object());
        assert!(content("/deployments/{id}/events")["text/event-stream"].is_object());
        assert!(content("/upgrades/{id}/events")["text/event-stream"].is_object());
        let push = &doc["paths"]["/push"]["post"]["requestBody"]["content"];
        assert!(push["application/yaml"].is_object() && push["text/yaml"].is_object());
        assert_eq!(doc["paths"]["/healthz"]["get"]["security"], serde_json::json!([{}]));
    }
}
