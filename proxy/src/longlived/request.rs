//! The request head a taken-over request sends to its backend.
//!
//! pingora's own path removes hop-by-hop headers before our hooks run (its
//! default `HttpUpstreamRequestPolicy`); the takeover path writes the head
//! itself, so it does the same here (SPEC §4a "Hop-by-hop headers"):
//! `Connection` and every header it names, `Keep-Alive`, `TE`, `Trailer`,
//! `Transfer-Encoding`, `Upgrade`, `Proxy-Authorization`,
//! `Proxy-Authenticate`, `Proxy-Connection`, `HTTP2-Settings`. Then it says
//! what this connection is: `Connection: Upgrade` + `Upgrade: websocket` for
//! a WebSocket, `Connection: close` for an event stream (the backend
//! connection is the stream's alone).

use http::header::{self, HeaderName};
use http::Version;
use pingora::http::RequestHeader;
use pingora::Result;

use super::Kind;

/// At most this many `Connection` tokens are honoured; more is an attack,
/// not a client (pingora's own limit is of the same order).
const MAX_NOMINATIONS: usize = 32;

/// Headers that never reach a backend, on any path (SPEC §4a).
pub(crate) const HOP_BY_HOP: [HeaderName; 10] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
    header::PROXY_AUTHENTICATE,
    HeaderName::from_static("proxy-connection"),
    HeaderName::from_static("http2-settings"),
];

/// Why a client's request head cannot be forwarded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("too many tokens in the Connection header")]
    TooManyNominations,
    #[error("an HTTP/2 request needs a valid :authority or Host")]
    BadAuthority,
}

/// The head for the backend: `client`'s, without hop-by-hop headers, as
/// HTTP/1.1, with the connection headers `kind` needs. The request has no
/// body (only bodiless requests are taken over), so its framing headers go
/// too. An HTTP/2 request's `:authority` becomes `Host` (RFC 9113 §8.3.1);
/// its other pseudo-headers are not headers at all in pingora's head, and
/// the request line carries the path and query only.
pub fn for_backend(client: &RequestHeader, kind: Kind) -> std::result::Result<RequestHeader, RequestError> {
    let mut request = client.clone();
    if client.version == Version::HTTP_2 {
        if let Some(authority) = client.uri.authority() {
            let host = http::HeaderValue::from_str(authority.as_str()).map_err(|_| RequestError::BadAuthority)?;
            request
                .insert_header(header::HOST, host)
                .map_err(|_| RequestError::BadAuthority)?;
        }
        if !request.headers.contains_key(header::HOST) {
            return Err(RequestError::BadAuthority);
        }
        if let Some(target) = client.uri.path_and_query() {
            let target = http::Uri::try_from(target.as_str()).map_err(|_| RequestError::BadAuthority)?;
            request.set_uri(target);
        }
        // HTTP/2 may split `cookie` into several fields; HTTP/1.1 allows
        // one, so they are joined with "; " (RFC 9113 §8.2.3).
        let cookies: Vec<&[u8]> = client
            .headers
            .get_all(header::COOKIE)
            .iter()
            .map(|v| v.as_bytes())
            .collect();
        if cookies.len() > 1 {
            let joined = cookies.join(&b"; "[..]);
            let joined = http::HeaderValue::from_bytes(&joined).map_err(|_| RequestError::BadAuthority)?;
            request
                .insert_header(header::COOKIE, joined)
                .map_err(|_| RequestError::BadAuthority)?;
        }
    }
    request.set_version(Version::HTTP_11);
    let mut nominated: [Option<HeaderName>; MAX_NOMINATIONS] = std::array::from_fn(|_| None);
    let tokens = client
        .headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty());
    for (count, token) in tokens.enumerate() {
        let slot = nominated.get_mut(count).ok_or(RequestError::TooManyNominations)?;
        // A token that is no header name names nothing; `Host` is never
        // removed (the backend routes on it).
        match HeaderName::from_bytes(token) {
            Ok(name) if name != header::HOST => *slot = Some(name),
            _ => {}
        }
    }
    for name in nominated.iter().flatten() {
        request.remove_header(name);
    }
    for name in &HOP_BY_HOP {
        request.remove_header(name);
    }
    request.remove_header(&header::CONTENT_LENGTH);
    let set = |request: &mut RequestHeader, name: HeaderName, value: &'static str| -> Result<()> {
        request.insert_header(name, value).map(|_| ())
    };
    // Static, valid values: these inserts cannot fail.
    let _ = match kind {
        Kind::WebSocket => set(&mut request, header::CONNECTION, "Upgrade")
            .and_then(|()| set(&mut request, header::UPGRADE, "websocket")),
        Kind::Sse => set(&mut request, header::CONNECTION, "close"),
    };
    Ok(request)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(headers: &[(&str, &str)]) -> RequestHeader {
        let mut req = RequestHeader::build("GET", b"/ws", None).unwrap();
        for (name, value) in headers {
            req.append_header(name.to_string(), *value).unwrap();
        }
        req
    }

    const HOSTILE: &[(&str, &str)] = &[
        ("host", "app.example"),
        ("connection", "keep-alive, X-Secret, host"),
        ("connection", "Upgrade"),
        ("upgrade", "websocket"),
        ("x-secret", "1"),
        ("keep-alive", "timeout=5"),
        ("te", "trailers"),
        ("trailer", "X-Checksum"),
        ("transfer-encoding", "chunked"),
        ("content-length", "0"),
        ("proxy-authorization", "Basic c2VjcmV0"),
        ("proxy-connection", "keep-alive"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];

    #[test]
    fn a_websocket_head_keeps_only_the_upgrade() {
        let req = for_backend(&client(HOSTILE), Kind::WebSocket).unwrap();
        let names: Vec<&str> = req.headers.keys().map(|n| n.as_str()).collect();
        assert_eq!(
            names.iter().filter(|n| **n != "sec-websocket-key").count(),
            3,
            "only host, connection and upgrade besides the key: {names:?}"
        );
        assert_eq!(req.headers["connection"], "Upgrade");
        assert_eq!(req.headers["upgrade"], "websocket");
        assert_eq!(req.headers["host"], "app.example");
        assert_eq!(req.headers["sec-websocket-key"], "dGhlIHNhbXBsZSBub25jZQ==");
        assert_eq!(req.version, Version::HTTP_11);
    }

    #[test]
    fn an_event_stream_head_asks_for_close_and_drops_the_upgrade() {
        let req = for_backend(&client(HOSTILE), Kind::Sse).unwrap();
        assert_eq!(req.headers["connection"], "close");
        assert!(req.headers.get("upgrade").is_none());
        assert!(req.headers.get("x-secret").is_none());
        assert!(req.headers.get("proxy-authorization").is_none());
    }

    #[test]
    fn an_http2_request_becomes_an_http11_head_with_host_from_authority() {
        // As pingora's HTTP/2 server builds it: from the request's parts.
        let (parts, ()) = http::Request::builder()
            .method("GET")
            .uri("https://app.example:8443/events?x=1")
            .version(Version::HTTP_2)
            .body(())
            .unwrap()
            .into_parts();
        let mut h2 = RequestHeader::from(parts);
        h2.append_header("accept", "text/event-stream").unwrap();
        let req = for_backend(&h2, Kind::Sse).unwrap();
        assert_eq!(req.version, Version::HTTP_11);
        assert_eq!(req.headers["host"], "app.example:8443");
        let wire = pingora::protocols::http::v1::client::http_req_header_to_wire(&req).unwrap();
        let wire = String::from_utf8(wire.to_vec()).unwrap();
        assert!(wire.starts_with("GET /events?x=1 HTTP/1.1\r\n"), "{wire}");
        assert!(
            !wire.contains(':') || !wire.lines().any(|l| l.starts_with(':')),
            "{wire}"
        );
        assert_eq!(
            wire.matches("host:").count() + wire.matches("Host:").count(),
            1,
            "{wire}"
        );
    }

    #[test]
    fn http2_cookie_fields_are_joined_into_one_http11_header() {
        let (parts, ()) = http::Request::builder()
            .uri("https://app.example/events")
            .version(Version::HTTP_2)
            .body(())
            .unwrap()
            .into_parts();
        let mut h2 = RequestHeader::from(parts);
        h2.append_header("cookie", "a=1").unwrap();
        h2.append_header("cookie", "b=2").unwrap();
        let req = for_backend(&h2, Kind::Sse).unwrap();
        let cookies: Vec<_> = req.headers.get_all("cookie").iter().collect();
        assert_eq!(cookies, ["a=1; b=2"]);
    }

    #[test]
    fn endless_connection_tokens_are_refused() {
        let many = vec!["x"; MAX_NOMINATIONS + 1].join(",");
        assert_eq!(
            for_backend(&client(&[("connection", &many)]), Kind::Sse).err(),
            Some(RequestError::TooManyNominations)
        );
    }
}
