//! `proxy.tls`, `proxy.http2`, `proxy.h2c` and `apps.*.upstream` (SPEC §3,
//! §8): defaults, paths, and every refusal placed at its key.

use super::*;

/// `MINIMAL` with a `proxy:` section.
fn with_proxy(proxy: &str) -> String {
    let indented: String = proxy.lines().map(|l| format!("  {l}\n")).collect();
    format!("proxy:\n{indented}{MINIMAL}")
}

#[test]
fn without_tls_the_proxy_is_plain_with_http2_on_and_h2c_off() {
    let config = parse_ok(MINIMAL);
    assert_eq!(config.proxy.tls, None);
    assert!(config.proxy.http2);
    assert!(!config.proxy.h2c);
    assert_eq!(config.apps["web"].upstream, Upstream::Http1);
}

#[test]
fn the_spec_tls_block_reads_with_paths_resolved_against_the_config_dir() {
    let config = parse_ok(&with_proxy(
        "tls:
  listen: [\"127.0.0.1:8443\"]
  certificates:
    - { hosts: [\"Example.com\", \"*.example.com\"], cert: certs/example.pem, key: /etc/keys/example.key }
  acme:
    directory: https://acme-v02.api.letsencrypt.org/directory
    email: ops@example.com
    challenge: tls-alpn-01
    ca_roots: pebble.pem
    hosts: [api.test]
  redirect_http: true
  hsts: 1d
http2: false
h2c: true",
    ));
    let tls = config.proxy.tls.expect("tls");
    assert_eq!(tls.listen, vec!["127.0.0.1:8443".parse::<SocketAddr>().unwrap()]);
    assert_eq!(
        tls.certificates,
        vec![CertificateConfig {
            hosts: vec!["example.com".into(), "*.example.com".into()],
            cert: PathBuf::from("/srv/site/certs/example.pem"),
            key: PathBuf::from("/etc/keys/example.key"),
        }]
    );
    let acme = tls.acme.expect("acme");
    assert_eq!(acme.challenge, AcmeChallenge::TlsAlpn01);
    assert_eq!(acme.email.as_deref(), Some("ops@example.com"));
    assert_eq!(acme.ca_roots, Some(PathBuf::from("/srv/site/pebble.pem")));
    assert_eq!(acme.hosts, vec!["api.test".to_string()]);
    assert!(tls.redirect_http);
    assert_eq!(tls.hsts, Duration::from_secs(86_400));
    assert!(!config.proxy.http2);
    assert!(config.proxy.h2c);
}

#[test]
fn tls_defaults_listen_on_8443_with_http_01_and_no_hsts() {
    let config = parse_ok(&with_proxy(
        "tls: { acme: { directory: \"https://localhost:14000/dir\", ca_roots: \"\" } }",
    ));
    let tls = config.proxy.tls.unwrap();
    assert_eq!(tls.listen, vec!["127.0.0.1:8443".parse::<SocketAddr>().unwrap()]);
    assert!(!tls.redirect_http);
    assert_eq!(tls.hsts, Duration::ZERO);
    let acme = tls.acme.unwrap();
    assert_eq!(acme.challenge, AcmeChallenge::Http01);
    assert_eq!(acme.ca_roots, None);
    assert!(acme.hosts.is_empty(), "empty: derived from the routes at run time");
}

#[test]
fn tls_without_any_certificate_source_is_refused() {
    assert_single(
        &with_proxy("tls: { listen: [\"127.0.0.1:8443\"] }"),
        "proxy.tls",
        "TLS listeners need certificates: add certificates: [{ hosts: [...], cert: ..., key: ... }] or acme: { directory: ... }",
    );
}

#[test]
fn tls_listeners_need_their_own_ports() {
    let source = with_proxy(
        "listen: [\"127.0.0.1:8080\"]
tls:
  listen: [\"0.0.0.0:8080\", \"127.0.0.1:8443\", \"127.0.0.1:8443\"]
  certificates: [{ hosts: [a.test], cert: a.pem, key: a.key }]",
    );
    let found = problems(&source);
    let keys: Vec<_> = found.iter().map(|p| p.key_path.clone().unwrap_or_default()).collect();
    assert_eq!(keys, ["proxy.tls.listen[0]", "proxy.tls.listen[2]"], "{found:#?}");
    assert!(
        found[0].message.contains("conflicts with proxy.listen[0]"),
        "{}",
        found[0].message
    );

    let admin_on_tls = format!(
        "{}admin: {{ listen: \"127.0.0.1:8443\" }}\n",
        with_proxy("tls: { certificates: [{ hosts: [a.test], cert: a.pem, key: a.key }] }")
    );
    let found = problems(&admin_on_tls);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].key_path.as_deref(), Some("admin.listen"));
    assert!(found[0].message.contains("conflicts with proxy.tls.listen[0]"));
}

#[test]
fn certificate_entries_name_hosts_and_files() {
    let source = with_proxy(
        "tls:
  certificates:
    - { hosts: [], cert: a.pem, key: a.key }
    - { hosts: [\"*\", \"http://b.test\", \"a*.test\"], cert: \"\" }
    - { hosts: [c.test], cert: c.pem, key: c.key }
    - { hosts: [C.test], cert: d.pem, key: d.key }",
    );
    let found: Vec<(String, String)> = problems(&source)
        .into_iter()
        .map(|p| (p.key_path.unwrap_or_default(), p.message))
        .collect();
    let keys: Vec<&str> = found.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        [
            "proxy.tls.certificates[0].hosts",
            // A missing key is placed at its mapping, before the keys in it.
            "proxy.tls.certificates[1].key",
            "proxy.tls.certificates[1].hosts[0]",
            "proxy.tls.certificates[1].hosts[1]",
            "proxy.tls.certificates[1].hosts[2]",
            "proxy.tls.certificates[1].cert",
            "proxy.tls.certificates[3].hosts",
        ],
        "{found:#?}"
    );
    assert!(found[6]
        .1
        .contains("c.test is already served by proxy.tls.certificates[2]"));
}

#[test]
fn acme_settings_are_checked() {
    let source = with_proxy(
        "tls:
  certificates: [{ hosts: [a.test], cert: a.pem, key: a.key }]
  acme:
    directory: http://acme.test/dir
    email: ops
    challenge: dns-01
    hosts: [a.test, \"*.b.test\", c.test, c.test]",
    );
    let found: Vec<(String, String)> = problems(&source)
        .into_iter()
        .map(|p| (p.key_path.unwrap_or_default(), p.message))
        .collect();
    let keys: Vec<&str> = found.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        [
            "proxy.tls.acme.directory",
            "proxy.tls.acme.email",
            "proxy.tls.acme.challenge",
            "proxy.tls.acme.hosts[0]",
            "proxy.tls.acme.hosts[1]",
            "proxy.tls.acme.hosts[3]",
        ],
        "{found:#?}"
    );
    assert!(found[3].1.contains("already has a certificate file"));
    assert!(found[4].1.contains("cannot prove a wildcard"));
    let missing = with_proxy("tls: { acme: { email: ops@example.com } }");
    assert_eq!(
        problems(&missing)[0].key_path.as_deref(),
        Some("proxy.tls.acme.directory")
    );
}

#[test]
fn upstream_is_http1_or_h2c() {
    assert_eq!(parse_ok(&web_with("upstream: h2c")).apps["web"].upstream, Upstream::H2c);
    let found = problems(&web_with("upstream: grpc"));
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].key_path.as_deref(), Some("apps.web.upstream"));
}

#[test]
fn unknown_tls_keys_are_refused() {
    let found = problems(&with_proxy(
        "tls: { certificates: [{ hosts: [a.test], cert: a.pem, key: a.key, chain: x }], hstss: 1s }",
    ));
    let keys: Vec<_> = found.iter().map(|p| p.key_path.clone().unwrap_or_default()).collect();
    assert!(keys.contains(&"proxy.tls.hstss".to_string()), "{found:#?}");
    assert!(
        keys.contains(&"proxy.tls.certificates[0].chain".to_string()),
        "{found:#?}"
    );
}
