//! Certificates for the TLS listeners.
//!
//! - [`acme`]: certificates obtained and renewed from an ACME server.

pub mod acme;
