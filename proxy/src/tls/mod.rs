//! TLS at the edge: the certificate store chosen by SNI, and the ACME
//! challenges the data plane answers while the control plane obtains
//! certificates.

pub mod challenges;
pub mod store;

pub use challenges::Challenges;
pub use store::{CertEntry, CertSet, CertSource, CertStore};
