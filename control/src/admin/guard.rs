//! Who may call the admin API (SPEC §5, "Browsers are not trusted
//! callers"), checked before any handler runs.
//!
//! A web page the operator visits can make the browser send requests to
//! `127.0.0.1`: simple `no-cors` POSTs (form encodings and `text/plain`,
//! no custom headers), and, after a DNS rebinding, any request at all to a
//! name the attacker controls that resolves to the admin listener. So every
//! request passes, in this order:
//!
//! 1. **Host** (421, or 400 when absent): the request must name this
//!    listener. After a DNS rebinding the browser believes it talks to
//!    `evil.example:9180` and says so in `Host`; nothing may answer it, not
//!    even a 401, because a rebound page could read that answer. First,
//!    because a request for another site gets no information about this
//!    one.
//! 2. **Origin** (403): a browser names the page that sent the request;
//!    only configured origins may drive the API. Before the token check,
//!    since a page's request is refused whatever credentials it carries.
//! 3. **Bearer token** (401), when configured; `/healthz` is exempt.
//!    Before the Content-Type check so an unauthenticated caller learns
//!    nothing about what an endpoint accepts.
//! 4. **Content-Type** (415) on every POST handler: a browser can only send
//!    `application/x-www-form-urlencoded`, `multipart/form-data` and
//!    `text/plain` (or nothing) without a CORS preflight, which this API
//!    never grants; requiring JSON (or YAML for `/push`) means no such
//!    request reaches a handler. Checked on the head alone: nothing is read
//!    from the body of a refused request. This one is [`content_type`], a
//!    layer on each POST method router (the router's `posted`), so it runs
//!    after routing: a POST to a path that has none is a 405 (with
//!    `Allow`), not a 415, and runs nothing either way.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use super::{AdminState, ApiError};

/// The challenge sent with every 401 (RFC 6750).
pub const WWW_AUTHENTICATE: &str = "Bearer realm=\"cutover\"";

/// Body types every POST may carry.
const JSON_TYPES: &[&str] = &["application/json"];
/// Body types `POST /push` may carry: a deploy.yaml (JSON is YAML too).
const PUSH_TYPES: &[&str] = &[
    "application/json",
    "application/yaml",
    "application/x-yaml",
    "text/yaml",
];

/// The middleware: Host → Origin → token, then routing (and, for a POST
/// handler, [`content_type`]).
pub(super) async fn guard(State(state): State<Arc<AdminState>>, request: Request, next: Next) -> Response {
    let checked = check_host(state.listen, &request)
        .and_then(|()| check_origin(&state.allowed_origins, request.headers()))
        .and_then(|()| check_token(state.token.as_deref(), &request));
    match checked {
        Ok(()) => next.run(request).await,
        Err(refused) => refused.into_response(),
    }
}

/// The middleware on every POST handler: JSON (YAML for `/push`) or 415.
pub(super) async fn content_type(request: Request, next: Next) -> Response {
    match check_content_type(&request) {
        Ok(()) => next.run(request).await,
        Err(refused) => refused.into_response(),
    }
}

/// Why a request was refused: the JSON error, and whether to challenge
/// for a bearer token (`WWW-Authenticate`, on a 401).
#[derive(Debug)]
pub(super) struct Refusal {
    error: ApiError,
    challenge: bool,
}

impl From<ApiError> for Refusal {
    fn from(error: ApiError) -> Self {
        Self {
            error,
            challenge: false,
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut response = self.error.into_response();
        if self.challenge {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(WWW_AUTHENTICATE));
        }
        response
    }
}

// === Host ===

fn check_host(listen: SocketAddr, request: &Request) -> Result<(), Refusal> {
    // HTTP/1 names the target in `Host`; an absolute-form request line (or
    // HTTP/2) in the URI's authority.
    let named = match request.headers().get(header::HOST) {
        Some(value) => Some(value.to_str().unwrap_or("")),
        None => request.uri().authority().map(|a| a.as_str()),
    };
    let Some(host) = named else {
        // RFC 9112 §3.2: a server MUST answer 400 to an HTTP/1.1 request
        // without Host. Browsers always send one, so this is never a
        // rebinding attempt, just a broken client.
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("a Host header is required; send Host: {listen}"),
        )
        .into());
    };
    if host_names_listener(listen, host) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::MISDIRECTED_REQUEST,
            format!(
                "Host {host:?} is not this admin listener; use {listen} or localhost:{}",
                listen.port()
            ),
        )
        .into())
    }
}

/// True when `host` (a `Host` header value) names the listener on
/// `listen`: its port, and `localhost`, the listener's own address, or,
/// for a loopback listener any loopback address, for a wildcard listener
/// any address. An IP literal can never be rebound to another site, so
/// accepting the literals that reach this socket gives nothing away; a
/// name other than `localhost` is refused because a page's DNS can point
/// any name here.
pub(crate) fn host_names_listener(listen: SocketAddr, host: &str) -> bool {
    let Some((name, port)) = split_host(host) else {
        return false;
    };
    if port != listen.port() {
        return false;
    }
    if name.eq_ignore_ascii_case("localhost") {
        return true;
    }
    let Ok(ip) = name.parse::<IpAddr>() else {
        return false;
    };
    let own = listen.ip();
    ip == own || own.is_unspecified() || (own.is_loopback() && ip.is_loopback())
}

/// `host[:port]` or `[v6][:port]` → (host, port), port 80 when absent.
fn split_host(host: &str) -> Option<(&str, u16)> {
    let (name, port) = if let Some(rest) = host.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        match after {
            "" => (inside, None),
            _ => (inside, Some(after.strip_prefix(':')?)),
        }
    } else {
        match host.split_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (host, None),
        }
    };
    if name.is_empty() {
        return None;
    }
    let port = match port {
        None => 80,
        // Digits only: `u16::from_str` would take a leading `+`.
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => p.parse().ok()?,
        Some(_) => return None,
    };
    Some((name, port))
}

// === Origin ===

fn check_origin(allowed: &[String], headers: &HeaderMap) -> Result<(), Refusal> {
    origin_verdict(allowed, headers.get(header::ORIGIN), headers.get("sec-fetch-site"))
        .map_err(|message| ApiError::new(StatusCode::FORBIDDEN, message).into())
}

/// Whether a request with these `Origin` and `Sec-Fetch-Site` values may
/// go on; the refusal's message otherwise.
pub(crate) fn origin_verdict(
    allowed: &[String],
    origin: Option<&HeaderValue>,
    fetch_site: Option<&HeaderValue>,
) -> Result<(), String> {
    if let Some(origin) = origin {
        let text = origin.to_str().unwrap_or("").trim().to_ascii_lowercase();
        // `null` (sandboxed frames, file: pages, some redirects) says
        // nothing about who sent it, so it is never allowed.
        if text != "null" && allowed.contains(&text) {
            return Ok(());
        }
        return Err(format!(
            "requests from origin {:?} are not allowed; list it in admin.allowed_origins to allow it",
            origin.to_str().unwrap_or("(not text)")
        ));
    }
    // Defence in depth for requests without an Origin (a browser omits it
    // on some no-cors GETs): `cross-site` and `same-site` (another port of
    // localhost is the same site) both come from a page of another origin.
    // `same-origin` can only be a page this API served (it serves none),
    // `none` is the operator typing the URL.
    match fetch_site.and_then(|v| v.to_str().ok()) {
        Some(site) if site.eq_ignore_ascii_case("cross-site") || site.eq_ignore_ascii_case("same-site") => Err(
            format!("a {site} browser request is not allowed; list its origin in admin.allowed_origins to allow it"),
        ),
        _ => Ok(()),
    }
}

// === Bearer token ===

fn check_token(expected: Option<&str>, request: &Request) -> Result<(), Refusal> {
    let Some(expected) = expected else {
        return Ok(());
    };
    // The liveness probe answers without credentials (it tells nothing).
    if request.uri().path() == "/healthz" {
        return Ok(());
    }
    if bearer_matches(request.headers().get(header::AUTHORIZATION), expected) {
        return Ok(());
    }
    Err(Refusal {
        error: ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token (set CUTOVER_ADMIN_TOKEN)",
        ),
        challenge: true,
    })
}

/// True when `authorization` is `Bearer <expected>` (scheme in any case,
/// RFC 9110 §11.1), the token compared in constant time.
pub(crate) fn bearer_matches(authorization: Option<&HeaderValue>, expected: &str) -> bool {
    let value = authorization.and_then(|v| v.to_str().ok()).unwrap_or("");
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    let scheme_ok = scheme.eq_ignore_ascii_case("bearer");
    // Constant time in the token's content; the length is not secret.
    let token_ok: bool = token
        .trim_start_matches(' ')
        .as_bytes()
        .ct_eq(expected.as_bytes())
        .into();
    scheme_ok & token_ok
}

// === Content-Type ===

fn check_content_type(request: &Request) -> Result<(), Refusal> {
    if request.method() != Method::POST {
        return Ok(());
    }
    let path = request.uri().path();
    let accepted = if path == "/push" { PUSH_TYPES } else { JSON_TYPES };
    content_type_verdict(accepted, request.headers().get(header::CONTENT_TYPE)).map_err(|given| {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("POST {path} needs Content-Type {}, not {given}", accepted.join(" or ")),
        )
        .into()
    })
}

/// Ok when the media type of `content_type` (parameters ignored) is one of
/// `accepted`; otherwise how to describe what was given.
pub(crate) fn content_type_verdict(accepted: &[&str], content_type: Option<&HeaderValue>) -> Result<(), String> {
    let Some(value) = content_type else {
        return Err("none".to_string());
    };
    let text = value.to_str().unwrap_or("");
    let media = text.split(';').next().unwrap_or("").trim();
    if accepted.iter().any(|a| media.eq_ignore_ascii_case(a)) {
        Ok(())
    } else {
        Err(format!("{text:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn host_must_name_the_listener() {
        let v4 = addr("127.0.0.1:9180");
        for ok in [
            "127.0.0.1:9180",
            "localhost:9180",
            "LOCALHOST:9180",
            "[::1]:9180",
            "127.0.0.2:9180",
        ] {
            assert!(host_names_listener(v4, ok), "{ok}");
        }
        for bad in [
            "evil.example:9180",
            "127.0.0.1:9181",
            "127.0.0.1",
            "localhost",
            "10.0.0.1:9180",
            "127.0.0.1:+9180",
            "127.0.0.1:",
            ":9180",
            "",
            "[::1:9180",
            "localhost.:9180",
            "127.0.0.1:9180.evil.example",
        ] {
            assert!(!host_names_listener(v4, bad), "{bad}");
        }
        let any = addr("0.0.0.0:9180");
        assert!(host_names_listener(any, "192.0.2.7:9180"));
        assert!(!host_names_listener(any, "ops.example:9180"));
        let public = addr("192.0.2.7:80");
        assert!(host_names_listener(public, "192.0.2.7"));
        assert!(host_names_listener(public, "localhost:80"));
        assert!(!host_names_listener(public, "127.0.0.1:80"));
    }

    #[test]
    fn only_listed_origins_pass() {
        let allowed = vec!["https://ops.example.com".to_string()];
        let hv = HeaderValue::from_static;
        assert!(origin_verdict(&allowed, Some(&hv("https://ops.example.com")), None).is_ok());
        assert!(origin_verdict(&allowed, Some(&hv("HTTPS://OPS.example.com")), None).is_ok());
        assert!(origin_verdict(&allowed, Some(&hv("https://ops.example.com")), Some(&hv("cross-site"))).is_ok());
        assert!(origin_verdict(&allowed, Some(&hv("http://evil.example")), None).is_err());
        assert!(origin_verdict(&allowed, Some(&hv("null")), None).is_err());
        assert!(origin_verdict(&["null".to_string()], Some(&hv("null")), None).is_err());
        assert!(origin_verdict(&[], Some(&hv("http://localhost:9180")), None).is_err());
        assert!(origin_verdict(&allowed, None, Some(&hv("cross-site"))).is_err());
        assert!(origin_verdict(&allowed, None, Some(&hv("same-site"))).is_err());
        assert!(origin_verdict(&allowed, None, Some(&hv("none"))).is_ok());
        assert!(origin_verdict(&allowed, None, Some(&hv("same-origin"))).is_ok());
        assert!(origin_verdict(&allowed, None, None).is_ok());
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        let hv = HeaderValue::from_static;
        assert!(bearer_matches(Some(&hv("Bearer s3cret")), "s3cret"));
        assert!(bearer_matches(Some(&hv("bearer s3cret")), "s3cret"));
        assert!(bearer_matches(Some(&hv("BEARER  s3cret")), "s3cret"));
        assert!(!bearer_matches(Some(&hv("Basic s3cret")), "s3cret"));
        assert!(!bearer_matches(Some(&hv("Bearer s3cre")), "s3cret"));
        assert!(!bearer_matches(Some(&hv("Bearers3cret")), "s3cret"));
        assert!(!bearer_matches(Some(&hv("s3cret")), "s3cret"));
        assert!(!bearer_matches(None, "s3cret"));
    }

    #[test]
    fn only_json_or_yaml_bodies_reach_a_handler() {
        let hv = HeaderValue::from_static;
        assert!(content_type_verdict(JSON_TYPES, Some(&hv("application/json"))).is_ok());
        assert!(content_type_verdict(JSON_TYPES, Some(&hv("Application/JSON; charset=utf-8"))).is_ok());
        assert!(content_type_verdict(PUSH_TYPES, Some(&hv("text/yaml"))).is_ok());
        assert!(content_type_verdict(PUSH_TYPES, Some(&hv("application/x-yaml"))).is_ok());
        for browser in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
        ] {
            assert!(
                content_type_verdict(PUSH_TYPES, Some(&hv(browser))).is_err(),
                "{browser}"
            );
        }
        assert!(content_type_verdict(JSON_TYPES, Some(&hv("application/yaml"))).is_err());
        assert!(content_type_verdict(JSON_TYPES, Some(&hv("application/jsonx"))).is_err());
        assert!(content_type_verdict(JSON_TYPES, None).is_err());
    }
}
