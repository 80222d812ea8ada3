//! The sticky cookie `cutover-<app>=<tag>`: read from the request (every
//! `Cookie` header, so HTTP/2's split cookies too), stripped before the
//! backend sees it (other cookies kept), and the `Set-Cookie` value the
//! proxy sends to a client without a valid one.
//!
//! The request's cookie is kept as a hash of its value (no allocation per
//! request): the pick compares it with the hashes of the split's tags. A
//! client that forges a colliding value gets the version it could as well
//! have asked for by name.

use http::header::{HeaderMap, COOKIE};
use http::HeaderValue;
use pingora::http::RequestHeader;

/// Every sticky cookie's name starts with this; the app name follows.
pub const COOKIE_PREFIX: &str = "cutover-";

/// FNV-1a, 64 bit: a tag or cookie value's identity for the pick.
pub(crate) fn tag_hash(value: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in value {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// Is `name` the sticky cookie's name for `app` (`cutover-<app>`)?
fn is_ours(name: &[u8], app: &str) -> bool {
    name.strip_prefix(COOKIE_PREFIX.as_bytes()) == Some(app.as_bytes())
}

/// `name=value` pairs of one `Cookie` header value (RFC 6265 §5.4: `; `
/// separated; tolerant of missing spaces and empty pieces).
fn pairs(value: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    value.split(|&b| b == b';').filter_map(|piece| {
        let piece = piece.trim_ascii();
        if piece.is_empty() {
            return None;
        }
        let eq = piece.iter().position(|&b| b == b'=')?;
        let (name, value) = (piece[..eq].trim_ascii(), piece[eq + 1..].trim_ascii());
        let value = value
            .strip_prefix(b"\"")
            .and_then(|v| v.strip_suffix(b"\""))
            .unwrap_or(value);
        Some((name, value))
    })
}

/// The hash of the first `cutover-<app>` cookie's value in the request,
/// if it carries one.
pub fn find(headers: &HeaderMap, app: &str) -> Option<u64> {
    headers
        .get_all(COOKIE)
        .iter()
        .flat_map(|v| pairs(v.as_bytes()))
        .find(|(name, _)| is_ours(name, app))
        .map(|(_, value)| tag_hash(value))
}

/// Removes every `cutover-<app>` cookie from the request, keeping the
/// others (each `Cookie` header on its own); a header left empty is
/// removed. Nothing changes (and nothing is allocated) when there is none.
pub fn strip(request: &mut RequestHeader, app: &str) {
    let carries = request
        .headers
        .get_all(COOKIE)
        .iter()
        .any(|v| pairs(v.as_bytes()).any(|(name, _)| is_ours(name, app)));
    if !carries {
        return;
    }
    let kept: Vec<HeaderValue> = request
        .headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| without_ours(v, app))
        .collect();
    request.remove_header(&COOKIE);
    for value in kept {
        // A value rebuilt from a valid header value's own bytes is valid.
        let _ = request.append_header(COOKIE, value);
    }
}

/// One header value without our cookie; `None` when nothing is left.
fn without_ours(value: &HeaderValue, app: &str) -> Option<HeaderValue> {
    let bytes = value.as_bytes();
    if !pairs(bytes).any(|(name, _)| is_ours(name, app)) {
        return Some(value.clone());
    }
    let mut out = Vec::with_capacity(bytes.len());
    for piece in bytes.split(|&b| b == b';') {
        let trimmed = piece.trim_ascii();
        if trimmed.is_empty() {
            continue;
        }
        let name = trimmed.split(|&b| b == b'=').next().unwrap_or(trimmed).trim_ascii();
        if trimmed.contains(&b'=') && is_ours(name, app) {
            continue;
        }
        if !out.is_empty() {
            out.extend_from_slice(b"; ");
        }
        out.extend_from_slice(trimmed);
    }
    if out.is_empty() {
        return None;
    }
    HeaderValue::from_bytes(&out).ok()
}

/// A tag as a cookie value: bytes outside RFC 6265's cookie-octet set
/// (and `%`) percent-encoded, so any tag makes a valid cookie.
pub(crate) fn cookie_value(tag: &str) -> String {
    let mut out = String::with_capacity(tag.len());
    for &b in tag.as_bytes() {
        let octet = matches!(b, 0x21 | 0x23..=0x24 | 0x26..=0x2B | 0x2D..=0x3A | 0x3C..=0x5B | 0x5D..=0x7E);
        if octet {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The `Set-Cookie` value giving a client the version tagged `tag`.
pub(crate) fn set_cookie(app: &str, tag: &str) -> Option<HeaderValue> {
    let header = format!(
        "{COOKIE_PREFIX}{app}={}; Path=/; HttpOnly; SameSite=Lax",
        cookie_value(tag)
    );
    HeaderValue::from_str(&header).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(cookies: &[&str]) -> RequestHeader {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        for c in cookies {
            req.append_header(COOKIE, *c).unwrap();
        }
        req
    }

    fn cookies(req: &RequestHeader) -> Vec<String> {
        req.headers
            .get_all(COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn finds_our_cookie_in_any_cookie_header() {
        let req = request(&["a=1", "b=2;cutover-web=v2 ; c=3"]);
        assert_eq!(find(&req.headers, "web"), Some(tag_hash(b"v2")));
        assert_eq!(find(&req.headers, "api"), None);
        // Another app's cookie, or one whose name only starts like ours.
        let req = request(&["cutover-webx=v2; cutover-api=v1"]);
        assert_eq!(find(&req.headers, "web"), None);
        // Quoted values are the same value.
        let req = request(&["cutover-web=\"v2\""]);
        assert_eq!(find(&req.headers, "web"), Some(tag_hash(b"v2")));
    }

    #[test]
    fn strips_ours_and_keeps_the_rest() {
        let mut req = request(&["a=1; cutover-web=v2; b=2"]);
        strip(&mut req, "web");
        assert_eq!(cookies(&req), ["a=1; b=2"]);

        // HTTP/2 sends each cookie in its own field.
        let mut req = request(&["a=1", "cutover-web=v2", "b=2", "cutover-web=v1"]);
        strip(&mut req, "web");
        assert_eq!(cookies(&req), ["a=1", "b=2"]);

        // Nothing left: no Cookie header at all.
        let mut req = request(&["cutover-web=v2", "cutover-web=x;"]);
        strip(&mut req, "web");
        assert!(req.headers.get(COOKIE).is_none());

        // Another app's cookie stays.
        let mut req = request(&["cutover-api=v2"]);
        strip(&mut req, "web");
        assert_eq!(cookies(&req), ["cutover-api=v2"]);
    }

    #[test]
    fn any_tag_makes_a_valid_set_cookie() {
        let v = set_cookie("web", "v2").unwrap();
        assert_eq!(v, "cutover-web=v2; Path=/; HttpOnly; SameSite=Lax");
        let v = set_cookie("web", "a b;c\"d%").unwrap();
        assert_eq!(v, "cutover-web=a%20b%3Bc%22d%25; Path=/; HttpOnly; SameSite=Lax");
        // The client sends back what it was given: it hashes as the tag.
        assert_eq!(tag_hash(cookie_value("a b").as_bytes()), tag_hash(b"a%20b"));
    }

    proptest::proptest! {
        /// Whatever the other cookies, after `strip` no `cutover-web`
        /// cookie is left, every other pair is kept in order, and `find`
        /// saw the first of ours.
        #[test]
        fn strip_removes_ours_and_keeps_the_rest(
            headers in proptest::collection::vec(
                proptest::collection::vec(
                    (proptest::prop_oneof!["cutover-web", "cutover-api", "[a-z]{1,6}"], "[a-zA-Z0-9]{0,6}"),
                    1..5,
                ),
                1..4,
            )
        ) {
            let values: Vec<String> = headers
                .iter()
                .map(|pairs| pairs.iter().map(|(n, v)| format!("{n}={v}")).collect::<Vec<_>>().join("; "))
                .collect();
            let mut req = RequestHeader::build("GET", b"/", None).unwrap();
            for v in &values {
                req.append_header(COOKIE, v.as_str()).unwrap();
            }
            let first = headers.iter().flatten().find(|(n, _)| n == "cutover-web");
            proptest::prop_assert_eq!(find(&req.headers, "web"), first.map(|(_, v)| tag_hash(v.as_bytes())));
            strip(&mut req, "web");
            let kept: Vec<(String, String)> = req
                .headers
                .get_all(COOKIE)
                .iter()
                .flat_map(|v| pairs(v.as_bytes()).map(|(n, v)| (String::from_utf8_lossy(n).into_owned(), String::from_utf8_lossy(v).into_owned())).collect::<Vec<_>>())
                .collect();
            let expected: Vec<(String, String)> = headers.iter().flatten().filter(|(n, _)| n != "cutover-web").cloned().collect();
            proptest::prop_assert_eq!(kept, expected);
            proptest::prop_assert!(req.headers.get_all(COOKIE).iter().all(|v| !v.is_empty()));
        }
    }
}
