//! The rules single values must follow: listen addresses, route hosts and
//! paths, app names, environment variable names, durations.
//!
//! Each rule is a pure function from the text as written to the parsed value
//! or a message saying what is wrong and how to fix it; the validator adds
//! the key path.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use super::bounds::DurationBounds;
use super::model::HostPattern;

/// Longest app name: it is used in instance names, file names and labels.
pub(crate) const MAX_APP_NAME: usize = 63;

/// Variables cutover sets for every instance; `env:` may not override them.
pub(crate) const RESERVED_ENV: [&str; 4] = ["PORT", "CUTOVER_APP", "CUTOVER_INSTANCE", "CUTOVER_ROLE"];

/// `ip:port`, or `localhost:port` for 127.0.0.1. No other name is resolved:
/// a config must mean the same thing whatever DNS says today.
pub(crate) fn listen_addr(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if let Some((host, port)) = text.rsplit_once(':') {
        if host.eq_ignore_ascii_case("localhost") {
            if let Ok(port) = port.parse::<u16>() {
                return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
            }
        }
    }
    let hint = if text.starts_with(':') {
        format!("; to listen on every interface write 0.0.0.0{text}")
    } else if text.parse::<IpAddr>().is_ok() {
        "; add a port".to_string()
    } else {
        String::new()
    };
    Err(format!(
        "invalid listen address \"{text}\": expected ip:port such as 127.0.0.1:8080, \
         [::1]:8080 or localhost:8080 (host names are not resolved){hint}"
    ))
}

/// Two listeners cannot both bind: same port, and the same address, or one
/// of them on every interface of the other's family, or one on `[::]`
/// (dual-stack by default, so it also takes IPv4). Port 0 (any free port)
/// never conflicts.
pub(crate) fn listeners_conflict(a: SocketAddr, b: SocketAddr) -> bool {
    let covers =
        |wide: IpAddr, other: IpAddr| wide.is_unspecified() && (wide.is_ipv6() || wide.is_ipv4() == other.is_ipv4());
    a.port() == b.port() && a.port() != 0 && (a.ip() == b.ip() || covers(a.ip(), b.ip()) || covers(b.ip(), a.ip()))
}

/// A route's `host:` — `*`, `*.example.com` or `example.com`, any case.
pub(crate) fn host_pattern(text: &str) -> Result<HostPattern, String> {
    let host = text.to_ascii_lowercase();
    if host == "*" {
        return Ok(HostPattern::Any);
    }
    let problem = if host.is_empty() {
        Some("is empty; use \"*\" for any host".to_string())
    } else if host.contains("://") {
        Some("must not include a scheme; write just the host name, e.g. example.com".to_string())
    } else if host.contains('/') {
        Some("must not include a path; put the path in the route's path:".to_string())
    } else if host.contains(':') {
        Some("must not include a port; routes match the host name on every listener".to_string())
    } else {
        None
    };
    if let Some(problem) = problem {
        return Err(format!("route host \"{text}\" {problem}"));
    }
    let (pattern, name) = match host.strip_prefix("*.") {
        Some(suffix) => (HostPattern::Wildcard(suffix.to_string()), suffix),
        None => (HostPattern::Exact(host.clone()), host.as_str()),
    };
    if name.contains('*') {
        return Err(format!(
            "route host \"{text}\": \"*\" is only allowed alone or as the whole first label, as in *.example.com"
        ));
    }
    hostname(name).map_err(|why| format!("route host \"{text}\" {why}"))?;
    Ok(pattern)
}

/// A DNS name (already lowercased): dot-separated labels of letters, digits,
/// `-` and `_`, each 1 to 63 characters.
fn hostname(name: &str) -> Result<(), String> {
    if name.len() > 253 {
        return Err("is longer than 253 characters".to_string());
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err("has an empty label (a leading, trailing or doubled dot)".to_string());
        }
        if label.len() > 63 {
            return Err(format!("has a label longer than 63 characters: \"{label}\""));
        }
        if let Some(bad) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
        {
            return Err(format!(
                "contains {bad:?}; host names use letters, digits, \"-\" and \".\""
            ));
        }
    }
    Ok(())
}

/// A route's `path:` prefix: starts with `/`; no spaces, control
/// characters, query or fragment (routes match the path alone).
pub(crate) fn route_path(text: &str) -> Result<(), String> {
    url_path(text, "/api", &['?', '#'])
}

/// A health check path: starts with `/`; no spaces or control characters. A
/// query string is allowed (`/health?full=1`).
pub(crate) fn health_path(text: &str) -> Result<(), String> {
    url_path(text, "/health", &['#'])
}

fn url_path(text: &str, example: &str, forbidden: &[char]) -> Result<(), String> {
    if !text.starts_with('/') {
        return Err(format!("path \"{text}\" must start with \"/\", e.g. {example}"));
    }
    if let Some(bad) = text
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || forbidden.contains(c))
    {
        return Err(format!(
            "path \"{text}\" contains {bad:?}; use a plain path such as {example} (percent-encode spaces as %20)"
        ));
    }
    Ok(())
}

/// An app name: `[a-z0-9][a-z0-9_-]*`, at most 63 characters. Names become
/// instance names (`web-1`), state file names and metric labels.
pub(crate) fn app_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let valid_start = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let valid_rest = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if valid_start && valid_rest && name.len() <= MAX_APP_NAME {
        return Ok(());
    }
    Err(format!(
        "app name \"{name}\" is not allowed: use 1 to {MAX_APP_NAME} lowercase letters, digits, \
         \"-\" and \"_\", starting with a letter or digit (it names instances and metric labels)"
    ))
}

/// The words cutover puts between an app's name and an instance number
/// (`web-clone-0`, `web-canary-0`, `web-green-0`).
pub(crate) const INSTANCE_FAMILIES: [&str; 3] = ["clone", "canary", "green"];

/// `name` against the other apps: an app named `web-canary` would share
/// instance names (`web-canary-0`), pid files and logs with `web`'s
/// canaries, so it may not sit beside `web`. The message names the app it
/// collides with.
pub(crate) fn app_name_collision<'a>(name: &str, others: impl IntoIterator<Item = &'a str>) -> Result<(), String> {
    for other in others {
        for family in INSTANCE_FAMILIES {
            if name.strip_prefix(other).and_then(|rest| rest.strip_prefix('-')) == Some(family) {
                return Err(format!(
                    "app name \"{name}\" collides with the names of app \"{other}\"'s {family} instances \
                     ({other}-{family}-0); rename one of them"
                ));
            }
        }
    }
    Ok(())
}

/// An environment variable name as the OS accepts it: not empty, no `=`, no
/// NUL. `what` is how the message refers to it ("env key", "token_env").
pub(crate) fn env_name(name: &str, what: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err(format!("{what} is empty; give a variable name such as APP_MODE"));
    }
    if name.contains('=') {
        return Err(format!(
            "{what} \"{name}\" contains \"=\"; write the name as the key and the value after the colon, e.g. A: b"
        ));
    }
    if name.contains('\0') {
        return Err(format!("{what} {name:?} contains a NUL byte"));
    }
    Ok(())
}

/// A humantime duration such as `500ms`, `30s`, `1h` or `1h 30m`, within
/// `bounds`. The message names the bound: `must be at most 1h, got 2h`.
pub(crate) fn duration(text: &str, bounds: DurationBounds) -> Result<Duration, String> {
    let written = text.trim();
    let parsed = match humantime::parse_duration(written) {
        Ok(parsed) => parsed,
        // Too large for a `Duration` at all: certainly above the bound.
        Err(humantime::DurationError::NumberOverflow) => {
            return Err(format!("must be at most {}, got {written}", human(bounds.max)));
        }
        Err(_) => {
            return Err(format!(
                "invalid duration \"{text}\": expected a number with a unit such as 500ms, 30s, 1h"
            ))
        }
    };
    if parsed < bounds.min {
        return Err(if bounds.min <= Duration::from_nanos(1) {
            "must be greater than zero, e.g. 500ms or 30s".to_string()
        } else {
            format!("must be at least {}, got {written}", human(bounds.min))
        });
    }
    if parsed > bounds.max {
        return Err(format!("must be at most {}, got {written}", human(bounds.max)));
    }
    Ok(parsed)
}

/// A duration as an operator would write it, in the largest unit that
/// divides it exactly (`10m`, `24h`, `7d`, `100ms`, `2500ms`); humantime reads it
/// back. Days only past one day: `24h` reads better than `1d`.
pub(crate) fn human(duration: Duration) -> String {
    const DAY: u64 = 86_400;
    let secs = duration.as_secs();
    if !duration.subsec_nanos().is_multiple_of(1_000_000) {
        return humantime::format_duration(duration).to_string();
    }
    if duration.subsec_nanos() != 0 {
        return format!("{}ms", duration.as_millis());
    }
    if secs > DAY && secs.is_multiple_of(DAY) {
        format!("{}d", secs / DAY)
    } else if secs >= 3600 && secs.is_multiple_of(3600) {
        format!("{}h", secs / 3600)
    } else if secs >= 60 && secs.is_multiple_of(60) {
        format!("{}m", secs / 60)
    } else {
        format!("{secs}s")
    }
}

/// A `trusted_proxies` entry: a CIDR (`10.0.0.0/8`, `fd00::/8`) or a bare
/// address (one host).
pub(crate) fn cidr(text: &str) -> Result<ipnet::IpNet, String> {
    let text = text.trim();
    if let Ok(net) = text.parse::<ipnet::IpNet>() {
        return Ok(net.trunc());
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(ipnet::IpNet::from(ip));
    }
    Err(format!(
        "invalid network \"{text}\": expected a CIDR such as 10.0.0.0/8 or fd00::/8, or one address such as 192.0.2.7"
    ))
}

/// An `allowed_origins` entry: `scheme://host[:port]` exactly as a browser
/// sends it in `Origin` (http or https, no path), returned lowercased.
pub(crate) fn origin(text: &str) -> Result<String, String> {
    let lowered = text.trim().trim_end_matches('/').to_ascii_lowercase();
    let example = "e.g. https://ops.example.com or http://localhost:3000";
    if lowered == "*" || lowered == "null" {
        return Err(format!(
            "origin \"{text}\" would let any web page drive the admin API; name each origin, {example}"
        ));
    }
    let Some((scheme, authority)) = lowered.split_once("://") else {
        return Err(format!("origin \"{text}\" needs a scheme, {example}"));
    };
    if scheme != "http" && scheme != "https" {
        return Err(format!("origin \"{text}\" must use http or https, {example}"));
    }
    if authority.is_empty() || authority.contains(['/', '?', '#', '@', ' ']) {
        return Err(format!(
            "origin \"{text}\" must be scheme://host[:port] with no path, {example}"
        ));
    }
    Ok(lowered)
}

/// Text passed to a process must not hold NUL bytes (C strings end there).
pub(crate) fn no_nul(text: &str) -> Result<(), String> {
    if text.contains('\0') {
        return Err("contains a NUL byte, which cannot be passed to a process".to_string());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses_are_ip_port_or_localhost() {
        assert_eq!(listen_addr("127.0.0.1:8080"), Ok("127.0.0.1:8080".parse().unwrap()));
        assert_eq!(listen_addr("[::1]:80"), Ok("[::1]:80".parse().unwrap()));
        assert_eq!(listen_addr("localhost:9180"), Ok("127.0.0.1:9180".parse().unwrap()));
        let err = listen_addr("example.com:80").unwrap_err();
        assert!(err.starts_with("invalid listen address \"example.com:80\": expected ip:port"));
        assert!(listen_addr(":8080").unwrap_err().ends_with("write 0.0.0.0:8080"));
        assert!(listen_addr("127.0.0.1").unwrap_err().ends_with("add a port"));
        assert!(listen_addr("localhost:http").is_err());
    }

    #[test]
    fn listeners_on_the_same_port_conflict_when_addresses_overlap() {
        let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert!(listeners_conflict(addr("127.0.0.1:80"), addr("127.0.0.1:80")));
        assert!(listeners_conflict(addr("0.0.0.0:80"), addr("127.0.0.1:80")));
        assert!(!listeners_conflict(addr("127.0.0.1:80"), addr("127.0.0.2:80")));
        assert!(!listeners_conflict(addr("127.0.0.1:0"), addr("127.0.0.1:0")));
    }

    #[test]
    fn host_patterns() {
        assert_eq!(host_pattern("*"), Ok(HostPattern::Any));
        assert_eq!(
            host_pattern("Example.COM"),
            Ok(HostPattern::Exact("example.com".into()))
        );
        assert_eq!(
            host_pattern("*.example.com"),
            Ok(HostPattern::Wildcard("example.com".into()))
        );
        assert_eq!(host_pattern("127.0.0.1"), Ok(HostPattern::Exact("127.0.0.1".into())));
        let err = |s| host_pattern(s).unwrap_err();
        assert!(err("https://example.com").contains("must not include a scheme"));
        assert!(err("example.com:8080").contains("must not include a port"));
        assert!(err("example.com/api").contains("must not include a path"));
        assert!(err("api.*.com").contains("only allowed alone or as the whole first label"));
        assert!(err("*example.com").contains("only allowed alone"));
        assert!(err("example..com").contains("empty label"));
        assert!(err("exa mple.com").contains("contains ' '"));
        assert!(err("").contains("is empty"));
    }

    #[test]
    fn url_paths_start_with_a_slash() {
        assert!(route_path("/").is_ok());
        assert!(route_path("/api/v1").is_ok());
        assert_eq!(
            route_path("api").unwrap_err(),
            "path \"api\" must start with \"/\", e.g. /api"
        );
        assert!(route_path("/a b").is_err());
        assert!(route_path("/a?b=1").is_err());
        assert!(health_path("/health?full=1").is_ok());
        assert!(health_path("/health#x").is_err());
    }

    #[test]
    fn app_names() {
        for ok in ["web", "api-v2", "0worker", "a_b"] {
            assert!(app_name(ok).is_ok(), "{ok}");
        }
        for bad in ["Web", "-web", "_web", "web.1", "", "wéb", &"a".repeat(64)] {
            assert!(app_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn env_names() {
        assert!(env_name("APP_MODE", "env key").is_ok());
        assert!(env_name("", "env key").unwrap_err().starts_with("env key is empty"));
        assert!(env_name("A=B", "env key").unwrap_err().contains("contains \"=\""));
        assert!(env_name("A\0", "env key").unwrap_err().contains("NUL"));
    }

    #[test]
    fn trusted_proxy_networks() {
        assert_eq!(cidr("10.1.2.3/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(cidr("192.0.2.7").unwrap().to_string(), "192.0.2.7/32");
        assert_eq!(cidr("::1").unwrap().to_string(), "::1/128");
        assert!(cidr("10.0.0.0/33").is_err());
        assert!(cidr("example.com").unwrap_err().contains("expected a CIDR"));
    }

    #[test]
    fn origins() {
        assert_eq!(origin("https://Ops.Example.com/"), Ok("https://ops.example.com".into()));
        assert_eq!(origin("http://localhost:3000"), Ok("http://localhost:3000".into()));
        assert!(origin("*").unwrap_err().contains("any web page"));
        assert!(origin("ops.example.com").unwrap_err().contains("needs a scheme"));
        assert!(origin("ftp://x").unwrap_err().contains("http or https"));
        assert!(origin("https://x/path").unwrap_err().contains("no path"));
    }

    #[test]
    fn durations() {
        let up_to_1h = DurationBounds {
            min: Duration::ZERO,
            max: Duration::from_secs(3600),
        };
        let positive = DurationBounds {
            min: Duration::from_nanos(1),
            ..up_to_1h
        };
        let from_1s = DurationBounds {
            min: Duration::from_secs(1),
            ..up_to_1h
        };
        assert_eq!(duration("500ms", positive), Ok(Duration::from_millis(500)));
        assert_eq!(duration("1h", positive), Ok(Duration::from_secs(3600)));
        assert_eq!(duration(" 1m 30s ", positive), Ok(Duration::from_secs(90)));
        assert_eq!(duration("0s", up_to_1h), Ok(Duration::ZERO));
        assert_eq!(
            duration("0s", positive),
            Err("must be greater than zero, e.g. 500ms or 30s".into())
        );
        assert_eq!(duration("0s", from_1s), Err("must be at least 1s, got 0s".into()));
        assert_eq!(duration("999ms", from_1s), Err("must be at least 1s, got 999ms".into()));
        assert_eq!(
            duration("1h 1ms", up_to_1h),
            Err("must be at most 1h, got 1h 1ms".into())
        );
        assert_eq!(
            duration("5x", up_to_1h),
            Err("invalid duration \"5x\": expected a number with a unit such as 500ms, 30s, 1h".into())
        );
        assert!(duration("30", up_to_1h).is_err());
    }

    #[test]
    fn absurd_durations_name_the_bound() {
        let bounds = DurationBounds {
            min: Duration::ZERO,
            max: Duration::from_secs(3600),
        };
        // Parses (just below u64::MAX seconds) but is far above the bound.
        assert_eq!(
            duration("500000000000y", bounds),
            Err("must be at most 1h, got 500000000000y".into())
        );
        assert_eq!(
            duration("18446744073709551615s", bounds),
            Err("must be at most 1h, got 18446744073709551615s".into())
        );
        // Does not even fit a Duration.
        assert_eq!(
            duration("18446744073709551616s", bounds),
            Err("must be at most 1h, got 18446744073709551616s".into())
        );
        assert_eq!(
            duration("99999999999999999999999y", bounds),
            Err("must be at most 1h, got 99999999999999999999999y".into())
        );
    }

    #[test]
    fn bounds_are_shown_as_an_operator_writes_them() {
        assert_eq!(human(Duration::from_millis(100)), "100ms");
        assert_eq!(human(Duration::from_secs(1)), "1s");
        assert_eq!(human(Duration::from_secs(600)), "10m");
        assert_eq!(human(Duration::from_secs(86_400)), "24h");
        assert_eq!(human(Duration::from_secs(7 * 86_400)), "7d");
        assert_eq!(human(Duration::from_secs(90)), "90s");
        assert_eq!(human(Duration::from_millis(2500)), "2500ms");
        assert_eq!(human(Duration::from_nanos(1)), "1ns");
        for d in [100u64, 1000, 600_000, 86_400_000, 604_800_000, 10] {
            let d = Duration::from_millis(d);
            assert_eq!(humantime::parse_duration(&human(d)), Ok(d));
        }
    }

    #[test]
    fn an_app_may_not_be_named_like_another_apps_instances() {
        let apps = ["web", "api"];
        for bad in ["web-canary", "web-green", "web-clone", "api-canary"] {
            assert!(app_name_collision(bad, apps).is_err(), "{bad}");
        }
        for good in [
            "web",
            "web-canary2",
            "webcanary",
            "web-canary-x",
            "canary",
            "web2-canary",
        ] {
            assert!(app_name_collision(good, apps).is_ok(), "{good}");
        }
    }
}
