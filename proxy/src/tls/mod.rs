//! TLS at the edge: the certificate store chosen by SNI, the ACME
//! challenges the data plane answers while the control plane obtains
//! certificates, the handshake ([`acceptor`]) and the handshaken stream
//! ([`stream`]), and what changes for requests over TLS ([`https`]: HSTS,
//! the redirect from plain listeners).

pub mod acceptor;
pub mod challenges;
pub mod https;
pub mod store;
pub mod stream;

pub use acceptor::{HandshakeMetrics, TlsAcceptor};
pub use challenges::Challenges;
pub use store::{CertEntry, CertSet, CertSource, CertStore};
