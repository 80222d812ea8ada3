//! The forwarded headers the backend gets (SPEC §4a "Forwarded headers").
//!
//! cutover sets `X-Forwarded-For`, `X-Forwarded-Proto`, `X-Forwarded-Host`
//! and `X-Real-IP`. What the client sent counts only when the client is a
//! trusted proxy (`proxy.trusted_proxies`):
//!
//! - from an **untrusted** peer, every such header and `Forwarded` is
//!   removed, then set from the real peer: a client can never choose the
//!   address a backend logs or rate-limits on;
//! - from a **trusted** peer, they are kept: the peer is appended to
//!   `X-Forwarded-For`, and `X-Real-IP`, `X-Forwarded-Proto` and
//!   `X-Forwarded-Host` are set only where the proxy in front left them out.
//!
//! IPv4-mapped IPv6 peers (`::ffff:10.0.0.1`, what a dual-stack listener
//! reports) are IPv4 addresses here, both for the trust check and in the
//! headers. This runs for every request: one `String` (the new
//! `X-Forwarded-For`) is its only allocation.

use std::fmt::Write as _;
use std::net::IpAddr;

use http::header::{HeaderName, HeaderValue, HOST};
use pingora::http::RequestHeader;
use pingora::Result;

/// `X-Forwarded-For`.
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Proto`.
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `X-Forwarded-Host`.
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// `X-Real-IP`.
pub const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// Who sent a request and how, as far as the forwarded headers care.
#[derive(Debug, Clone, Copy)]
pub struct Peer<'a> {
    /// The client's address on the TCP connection (`None`: not an inet
    /// socket; it is then untrusted and no address is forwarded).
    pub addr: Option<IpAddr>,
    /// The scheme the client used (`http` or `https`).
    pub proto: &'static str,
    /// `proxy.trusted_proxies`.
    pub trusted: &'a [ipnet::IpNet],
}

impl Peer<'_> {
    /// Is the peer a trusted proxy?
    pub fn is_trusted(&self) -> bool {
        self.addr
            .is_some_and(|ip| self.trusted.iter().any(|net| net.contains(&ip)))
    }
}

/// An address with IPv4-mapped IPv6 turned into IPv4.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// Sets the forwarded headers on `request` (the head going to the
/// backend) for a request from `peer`.
pub fn apply(request: &mut RequestHeader, peer: Peer<'_>) -> Result<()> {
    let peer = Peer {
        addr: peer.addr.map(canonical),
        ..peer
    };
    let trusted = peer.is_trusted();
    if !trusted {
        for name in [
            &X_FORWARDED_FOR,
            &X_FORWARDED_PROTO,
            &X_FORWARDED_HOST,
            &X_REAL_IP,
            &http::header::FORWARDED,
        ] {
            request.remove_header(name);
        }
    }

    if let Some(ip) = peer.addr {
        // A trusted proxy's list (possibly over several lines) comes first,
        // then the peer: the order the hops were made in.
        let mut forwarded_for = String::with_capacity(64);
        if trusted {
            for value in request.headers.get_all(&X_FORWARDED_FOR) {
                let Ok(text) = value.to_str() else { continue };
                let text = text.trim();
                if !text.is_empty() {
                    forwarded_for.push_str(text);
                    forwarded_for.push_str(", ");
                }
            }
        }
        let at = forwarded_for.len();
        // Writing to a String cannot fail.
        let _ = write!(forwarded_for, "{ip}");
        if !(trusted && request.headers.contains_key(&X_REAL_IP)) {
            let real_ip = HeaderValue::from_str(&forwarded_for[at..]).map_err(invalid)?;
            request.insert_header(X_REAL_IP, real_ip)?;
        }
        request.insert_header(X_FORWARDED_FOR, forwarded_for)?;
    }

    if !(trusted && request.headers.contains_key(&X_FORWARDED_PROTO)) {
        request.insert_header(X_FORWARDED_PROTO, peer.proto)?;
    }
    if !(trusted && request.headers.contains_key(&X_FORWARDED_HOST)) {
        if let Some(host) = request.headers.get(HOST).cloned() {
            request.insert_header(X_FORWARDED_HOST, host)?;
        }
    }
    Ok(())
}

fn invalid(e: http::header::InvalidHeaderValue) -> Box<pingora::Error> {
    pingora::Error::because(pingora::ErrorType::InvalidHTTPHeader, "forwarded header", e)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: &[(&str, &str)]) -> RequestHeader {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        for (name, value) in headers {
            req.append_header(name.to_string(), *value).unwrap();
        }
        req
    }

    fn values(req: &RequestHeader, name: &str) -> Vec<String> {
        req.headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect()
    }

    fn peer<'a>(addr: &str, trusted: &'a [ipnet::IpNet]) -> Peer<'a> {
        Peer {
            addr: Some(addr.parse().unwrap()),
            proto: "http",
            trusted,
        }
    }

    const SPOOFED: &[(&str, &str)] = &[
        ("host", "app.example"),
        ("x-forwarded-for", "6.6.6.6"),
        ("x-forwarded-for", "7.7.7.7"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "evil.example"),
        ("x-real-ip", "6.6.6.6"),
        ("forwarded", "for=6.6.6.6"),
    ];

    #[test]
    fn an_untrusted_peer_cannot_choose_any_forwarded_header() {
        let mut req = request(SPOOFED);
        apply(&mut req, peer("10.1.2.3", &[])).unwrap();
        assert_eq!(values(&req, "x-forwarded-for"), ["10.1.2.3"]);
        assert_eq!(values(&req, "x-real-ip"), ["10.1.2.3"]);
        assert_eq!(values(&req, "x-forwarded-proto"), ["http"]);
        assert_eq!(values(&req, "x-forwarded-host"), ["app.example"]);
        assert!(values(&req, "forwarded").is_empty());
    }

    #[test]
    fn a_peer_outside_the_trusted_ranges_is_untrusted() {
        let trusted = ["10.0.0.0/8".parse().unwrap()];
        let mut req = request(SPOOFED);
        apply(&mut req, peer("192.168.0.9", &trusted)).unwrap();
        assert_eq!(values(&req, "x-forwarded-for"), ["192.168.0.9"]);
        assert!(values(&req, "forwarded").is_empty());
    }

    #[test]
    fn a_trusted_peer_keeps_its_headers_and_is_appended() {
        let trusted = ["10.0.0.0/8".parse().unwrap()];
        let mut req = request(SPOOFED);
        apply(&mut req, peer("10.1.2.3", &trusted)).unwrap();
        assert_eq!(values(&req, "x-forwarded-for"), ["6.6.6.6, 7.7.7.7, 10.1.2.3"]);
        assert_eq!(values(&req, "x-real-ip"), ["6.6.6.6"]);
        assert_eq!(values(&req, "x-forwarded-proto"), ["https"]);
        assert_eq!(values(&req, "x-forwarded-host"), ["evil.example"]);
        assert_eq!(values(&req, "forwarded"), ["for=6.6.6.6"]);
    }

    #[test]
    fn a_trusted_peer_that_sent_nothing_gets_them_set() {
        let trusted = ["127.0.0.1/32".parse().unwrap()];
        let mut req = request(&[("host", "app.example")]);
        apply(&mut req, peer("127.0.0.1", &trusted)).unwrap();
        assert_eq!(values(&req, "x-forwarded-for"), ["127.0.0.1"]);
        assert_eq!(values(&req, "x-real-ip"), ["127.0.0.1"]);
        assert_eq!(values(&req, "x-forwarded-proto"), ["http"]);
        assert_eq!(values(&req, "x-forwarded-host"), ["app.example"]);
    }

    #[test]
    fn ipv4_mapped_peers_compare_and_print_as_ipv4() {
        let trusted = ["10.0.0.0/8".parse().unwrap()];
        let mut req = request(&[("x-forwarded-for", "1.2.3.4")]);
        apply(&mut req, peer("::ffff:10.0.0.7", &trusted)).unwrap();
        assert_eq!(values(&req, "x-forwarded-for"), ["1.2.3.4, 10.0.0.7"]);

        let mut req = request(&[("x-forwarded-for", "1.2.3.4")]);
        apply(&mut req, peer("::ffff:192.0.2.1", &trusted)).unwrap();
        assert_eq!(values(&req, "x-forwarded-for"), ["192.0.2.1"]);
    }

    #[test]
    fn ipv6_peers_are_written_plain() {
        let mut req = request(&[]);
        apply(&mut req, peer("2001:db8::1", &[])).unwrap();
        assert_eq!(values(&req, "x-forwarded-for"), ["2001:db8::1"]);
        assert_eq!(values(&req, "x-real-ip"), ["2001:db8::1"]);
    }

    #[test]
    fn without_an_inet_peer_nothing_is_trusted_or_forwarded() {
        let mut req = request(SPOOFED);
        apply(
            &mut req,
            Peer {
                addr: None,
                proto: "http",
                trusted: &["0.0.0.0/0".parse().unwrap()],
            },
        )
        .unwrap();
        assert!(values(&req, "x-forwarded-for").is_empty());
        assert!(values(&req, "x-real-ip").is_empty());
        assert_eq!(values(&req, "x-forwarded-host"), ["app.example"]);
    }
}
