//! Helpers of the ACME tests: cutover's data plane answering the
//! challenges (and serving the certificates over TLS), a TLS client that
//! verifies what it is served, short timings.
#![allow(dead_code)] // each test binary uses a different part

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cutover_control::certs::acme::Timing;
use cutover_proxy::tls::{CertStore, Challenges};
use cutover_proxy::{DataPlane, DataPlaneConfig, ProxyMetrics, ProxySettings, RouteTable, TableHandle};
use rustls::pki_types::CertificateDer;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::pebble::free_tcp_port;

/// A data plane on a free port answering http-01 from `challenges` (no
/// routes: the answer comes before routing).
pub fn data_plane(challenges: &Arc<Challenges>) -> (DataPlane, u16) {
    let port = free_tcp_port();
    (
        start_data_plane(challenges, Arc::new(CertStore::new()), port, None),
        port,
    )
}

/// The same with a TLS listener serving `certs`, which also answers
/// tls-alpn-01 from `challenges`: (plane, plain port, TLS port).
pub fn data_plane_with_tls(challenges: &Arc<Challenges>, certs: &Arc<CertStore>) -> (DataPlane, u16, u16) {
    let (port, tls_port) = (free_tcp_port(), free_tcp_port());
    let plane = start_data_plane(challenges, Arc::clone(certs), port, Some(tls_port));
    (plane, port, tls_port)
}

/// A data plane on 127.0.0.1 `port` (and `tls_port`), no routes.
pub fn start_data_plane(
    challenges: &Arc<Challenges>,
    certs: Arc<CertStore>,
    port: u16,
    tls_port: Option<u16>,
) -> DataPlane {
    let registry = prometheus::Registry::new();
    let metrics = ProxyMetrics::new(&registry).unwrap();
    let handle = TableHandle::new(RouteTable::builder().build());
    let config = DataPlaneConfig {
        listen: vec![SocketAddr::from(([127, 0, 0, 1], port))],
        tls_listen: tls_port
            .map(|p| SocketAddr::from(([127, 0, 0, 1], p)))
            .into_iter()
            .collect(),
        threads: 1,
        settings: ProxySettings {
            challenges: Arc::clone(challenges),
            certs,
            ..ProxySettings::default()
        },
        grace: Duration::from_secs(1),
    };
    DataPlane::start(config, handle, &metrics).unwrap()
}

/// A TLS handshake with the data plane's TLS listener as `host`, by a
/// client that trusts only `root` (Pebble's issuing root) and checks the
/// chain and the name as any browser would; the leaf it was served.
pub async fn served_over_tls(tls_port: u16, host: &str, root: &[u8]) -> CertificateDer<'static> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut &root[..]) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let handshake = async {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", tls_port)).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from(host.to_owned()).unwrap();
        tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
    };
    let tls = tokio::time::timeout(Duration::from_secs(10), handshake)
        .await
        .expect("handshake within 10s")
        .unwrap_or_else(|e| panic!("{host}: verified TLS handshake: {e}"));
    tls.get_ref().1.peer_certificates().unwrap()[0].clone().into_owned()
}

/// Short timeouts and retries.
pub fn fast_timing() -> Timing {
    Timing {
        request_timeout: Duration::from_secs(5),
        order_deadline: Duration::from_secs(60),
        poll_limit: Duration::from_secs(30),
        retry_first: Duration::from_millis(200),
        retry_max: Duration::from_secs(2),
    }
}

/// A fresh state_dir.
pub fn state_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cutover-acme-e2e-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The DNS names of a certificate, as x509-parser prints them.
pub fn dns_names(der: &CertificateDer<'_>) -> Vec<String> {
    let (_, cert) = X509Certificate::from_der(der.as_ref()).unwrap();
    cert.subject_alternative_name()
        .unwrap()
        .map(|san| san.value.general_names.iter().map(|n| n.to_string()).collect())
        .unwrap_or_default()
}
