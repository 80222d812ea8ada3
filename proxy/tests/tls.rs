//! SPEC §4a/§8: TLS listeners. Certificates by SNI (exact, then one-label
//! wildcard; unknown or missing SNI gets an alert, never another host's
//! certificate), TLS 1.2 and 1.3 only, certificate swaps that leave open
//! connections alone, ACME tls-alpn-01, the handshake under the head
//! deadline, and `cutover_tls_handshakes_total{result}`.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{client, client_config, connect_tls, entry, get, peer_cert, settings, until_closed, Ca, Edge};
use tokio::io::AsyncWriteExt;

const RESULTS: [&str; 5] = ["ok", "unknown_sni", "timeout", "error", "acme"];

fn handshakes(result: &str) -> String {
    format!("cutover_tls_handshakes_total{{result=\"{result}\"}}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_picks_the_exact_host_then_the_wildcard_and_an_unknown_or_missing_name_gets_an_alert() {
    let ca = Ca::new();
    let (exact, wildcard) = (ca.issue(&["a.test"]), ca.issue(&["*.wild.test"]));
    let edge = Edge::start(settings(&[
        entry(&["a.test"], &exact),
        entry(&["*.wild.test"], &wildcard),
    ]))
    .await;

    // Every result's series and every listener's count exist from start-up.
    for result in RESULTS {
        assert!(
            edge.metrics().contains(&format!("{} 0", handshakes(result))),
            "{}",
            edge.metrics()
        );
    }
    for listener in [edge.plain, edge.tls] {
        let series = format!("cutover_client_connections{{listener=\"{listener}\"}} 0");
        assert!(edge.metrics().contains(&series), "{}", edge.metrics());
    }

    let config = client(&ca, &[b"http/1.1"]);
    let mut tls = connect_tls(config.clone(), edge.tls, Some("a.test")).await.unwrap();
    assert_eq!(peer_cert(&tls), exact.der);
    // The TLS listener's own count, apart from the plain one.
    edge.wait_metric(&format!("cutover_client_connections{{listener=\"{}\"}}", edge.tls), 1.0)
        .await;
    assert_eq!(
        edge.metric(&format!("cutover_client_connections{{listener=\"{}\"}}", edge.plain)),
        0.0
    );
    assert_eq!(get(&mut tls, "a.test", "/", "").await.status(), 200);

    let tls = connect_tls(config.clone(), edge.tls, Some("x.wild.test"))
        .await
        .unwrap();
    assert_eq!(peer_cert(&tls), wildcard.der);

    for sni in [Some("other.test"), Some("y.x.wild.test"), Some("wild.test"), None] {
        let refused = connect_tls(config.clone(), edge.tls, sni).await;
        let error = refused.err().unwrap_or_else(|| panic!("{sni:?} got a certificate"));
        // An alert from the server, not a certificate the client rejected.
        assert!(error.to_string().contains("received fatal alert"), "{sni:?}: {error}");
    }
    edge.wait_metric(&handshakes("ok"), 2.0).await;
    edge.wait_metric(&handshakes("unknown_sni"), 4.0).await;
    assert_eq!(edge.metric(&handshakes("error")), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_1_3_and_1_2_are_served_and_1_1_is_refused() {
    let ca = Ca::new();
    let leaf = ca.issue(&["a.test"]);
    let edge = Edge::start(settings(&[entry(&["a.test"], &leaf)])).await;

    for (version, expected) in [
        (&rustls::version::TLS13, rustls::ProtocolVersion::TLSv1_3),
        (&rustls::version::TLS12, rustls::ProtocolVersion::TLSv1_2),
    ] {
        let config = client_config(&ca, &[b"http/1.1"], &[version]);
        let mut tls = connect_tls(config, edge.tls, Some("a.test")).await.unwrap();
        assert_eq!(tls.get_ref().1.protocol_version(), Some(expected));
        let response = get(&mut tls, "a.test", "/", "").await;
        assert_eq!(response.status(), 200, "{expected:?}");
    }

    // OpenSSL speaking TLS 1.1 only (its security level lowered so that it
    // is willing to try): the server refuses with an alert.
    let tls_port = edge.tls.to_string();
    let output = tokio::task::spawn_blocking(move || {
        Command::new("openssl")
            .args(["s_client", "-connect", &tls_port, "-servername", "a.test", "-tls1_1"])
            .args(["-cipher", "DEFAULT@SECLEVEL=0"])
            .stdin(Stdio::null())
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).to_string() + &String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "TLS 1.1 was accepted:\n{text}");
    // rustls answers a hello without 1.2 or 1.3 with a fatal alert.
    assert!(
        text.contains("alert handshake failure") || text.contains("alert protocol version"),
        "{text}"
    );
    assert!(text.contains("Cipher is (NONE)"), "{text}");
    // The same client with TLS 1.2 gets through: the refusal was the version.
    let tls_port = edge.tls.to_string();
    let output = tokio::task::spawn_blocking(move || {
        Command::new("openssl")
            .args(["s_client", "-connect", &tls_port, "-servername", "a.test", "-tls1_2"])
            .stdin(Stdio::null())
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains("Protocol  : TLSv1.2") || text.contains("TLSv1.2"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_swap_serves_new_connections_and_leaves_open_ones_on_theirs() {
    let ca = Ca::new();
    let (old, new) = (ca.issue(&["a.test"]), ca.issue(&["a.test"]));
    let edge = Edge::start(settings(&[entry(&["a.test"], &old)])).await;
    let config = client(&ca, &[b"http/1.1"]);

    let mut open = connect_tls(config.clone(), edge.tls, Some("a.test")).await.unwrap();
    assert_eq!(get(&mut open, "a.test", "/", "").await.status(), 200);

    edge.settings.certs.replace(&[entry(&["a.test"], &new)]);

    let mut fresh = connect_tls(config.clone(), edge.tls, Some("a.test")).await.unwrap();
    assert_eq!(peer_cert(&fresh), new.der, "a new connection gets the new certificate");
    assert_eq!(get(&mut fresh, "a.test", "/", "").await.status(), 200);
    // The open connection is untouched: same session, still serving.
    assert_eq!(peer_cert(&open), old.der);
    assert_eq!(get(&mut open, "a.test", "/", "").await.status(), 200);

    // A swap that drops the host: new handshakes for it get an alert.
    edge.settings.certs.replace(&[]);
    assert!(connect_tls(config, edge.tls, Some("a.test")).await.is_err());
    assert_eq!(get(&mut open, "a.test", "/", "").await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_alpn_01_gets_the_challenge_certificate_and_never_http() {
    let ca = Ca::new();
    let served = ca.issue(&["a.test", "b.test"]);
    let edge = Edge::start(settings(&[entry(&["a.test", "b.test"], &served)])).await;
    let challenge = support::acme_challenge_cert("a.test");
    edge.settings.challenges.add_tls_alpn01("a.test", challenge.key.clone());

    // The validator does not check the chain (RFC 8737 §3): accept any.
    let mut validator = (*client(&ca, &[b"acme-tls/1"])).clone();
    validator
        .dangerous()
        .set_certificate_verifier(std::sync::Arc::new(AnyCertificate(
            rustls::crypto::ring::default_provider(),
        )));
    let validator = std::sync::Arc::new(validator);

    let mut tls = connect_tls(validator.clone(), edge.tls, Some("a.test")).await.unwrap();
    assert_eq!(
        peer_cert(&tls),
        challenge.der,
        "the challenge certificate, not the served one"
    );
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"acme-tls/1"[..]));
    // No HTTP on it: a request gets no answer, the server closes.
    let _ = tls.write_all(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n").await;
    let answer = until_closed(&mut tls).await;
    assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
    edge.wait_metric(&handshakes("acme"), 1.0).await;

    // No challenge pending for b.test: an alert, even though b.test has a
    // served certificate.
    assert!(connect_tls(validator, edge.tls, Some("b.test")).await.is_err());
    edge.wait_metric(&handshakes("unknown_sni"), 1.0).await;

    // Ordinary clients for a.test still get the served certificate.
    let tls = connect_tls(client(&ca, &[b"h2", b"http/1.1"]), edge.tls, Some("a.test"))
        .await
        .unwrap();
    assert_eq!(peer_cert(&tls), served.der);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_sends_nothing_or_half_a_hello_is_closed_after_header_timeout() {
    let ca = Ca::new();
    let leaf = ca.issue(&["a.test"]);
    let mut settings = settings(&[entry(&["a.test"], &leaf)]);
    settings.limits.header_timeout = Duration::from_millis(800);
    let edge = Edge::start(settings).await;

    // The first bytes of a real ClientHello, from a client that then stalls.
    let hello = {
        let (mut capture, mut server) = tokio::io::duplex(64 * 1024);
        let config = client(&ca, &[b"http/1.1"]);
        let name = rustls::pki_types::ServerName::try_from("a.test").unwrap();
        let handshake = tokio::spawn(async move {
            let _ = tokio_rustls::TlsConnector::from(config)
                .connect(name, &mut capture)
                .await;
        });
        let mut buf = vec![0u8; 2048];
        let n = tokio::io::AsyncReadExt::read(&mut server, &mut buf).await.unwrap();
        handshake.abort();
        buf.truncate(n);
        buf
    };
    assert!(hello.len() > 40);

    let started = Instant::now();
    let mut silent = tokio::net::TcpStream::connect(edge.tls).await.unwrap();
    let mut half = tokio::net::TcpStream::connect(edge.tls).await.unwrap();
    half.write_all(&hello[..hello.len() / 2]).await.unwrap();
    assert!(until_closed(&mut silent).await.is_empty());
    assert!(until_closed(&mut half).await.is_empty());
    assert!(
        started.elapsed() >= Duration::from_millis(700),
        "closed before header_timeout: {:?}",
        started.elapsed()
    );
    edge.wait_metric(&handshakes("timeout"), 2.0).await;
    // Both connections gave their slots back.
    edge.wait_metric(&format!("cutover_client_connections{{listener=\"{}\"}}", edge.tls), 0.0)
        .await;

    // Not TLS at all: a protocol error, at once.
    let mut plaintext = tokio::net::TcpStream::connect(edge.tls).await.unwrap();
    plaintext
        .write_all(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
        .await
        .unwrap();
    until_closed(&mut plaintext).await;
    edge.wait_metric(&handshakes("error"), 1.0).await;
    assert_eq!(edge.metric(&handshakes("ok")), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_is_checked_before_the_handshake() {
    let ca = Ca::new();
    let leaf = ca.issue(&["a.test"]);
    let mut settings = settings(&[entry(&["a.test"], &leaf)]);
    settings.limits.max_connections = 1;
    let edge = Edge::start(settings).await;
    let config = client(&ca, &[b"http/1.1"]);
    // Start-up's own listening probes may hold the one slot for a moment:
    // connect until admitted, then count from there.
    let deadline = tokio::time::Instant::now() + support::WAIT;
    let mut first = loop {
        match connect_tls(config.clone(), edge.tls, Some("a.test")).await {
            Ok(tls) => break tls,
            Err(e) => assert!(tokio::time::Instant::now() < deadline, "never admitted: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    edge.wait_metric(
        &format!("cutover_client_connections{{listener=\"{}\"}}", edge.plain),
        0.0,
    )
    .await;
    let refused_before = edge.metric("cutover_connections_refused_total");
    assert_eq!(get(&mut first, "a.test", "/", "").await.status(), 200);
    // One slot over all listeners: a plain connection is refused too, and a
    // TLS one never gets as far as a handshake.
    let mut plain = tokio::net::TcpStream::connect(edge.plain).await.unwrap();
    assert!(until_closed(&mut plain).await.is_empty());
    assert!(connect_tls(config.clone(), edge.tls, Some("a.test")).await.is_err());
    assert_eq!(edge.metric("cutover_connections_refused_total") - refused_before, 2.0);
    assert_eq!(edge.metric(&handshakes("ok")), 1.0, "only the admitted one");
    assert_eq!(
        edge.metric(&handshakes("error")),
        0.0,
        "a refused connection is no handshake"
    );

    drop(first);
    edge.wait_metric(&format!("cutover_client_connections{{listener=\"{}\"}}", edge.tls), 0.0)
        .await;
    let mut again = connect_tls(config, edge.tls, Some("a.test")).await.unwrap();
    assert_eq!(get(&mut again, "a.test", "/", "").await.status(), 200);
}

/// Accepts any server certificate (the ACME validator's view: it checks
/// the acmeIdentifier extension, not the chain).
#[derive(Debug)]
struct AnyCertificate(rustls::crypto::CryptoProvider);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    // webpki refuses to parse a certificate with the critical
    // acmeIdentifier extension, so the signature is not checked either
    // (as Go's InsecureSkipVerify, which real validators use).
    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &rustls::pki_types::CertificateDer<'_>,
        _dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &rustls::pki_types::CertificateDer<'_>,
        _dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
