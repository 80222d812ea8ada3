//! Certificates for the TLS listeners (SPEC §8).
//!
//! - [`files`]: `proxy.tls.certificates` read and checked (readable, key
//!   matches, valid now, hosts covered), problems reported at their keys
//!   like any config problem.
//! - [`manager`]: [`CertManager`], every certificate in use (files and
//!   ACME) published to the data plane's `CertStore` in one swap, the
//!   status behind `GET /certificates`, the expiry metric.
//! - `acme`: certificates obtained and renewed from an ACME server, installed
//!   through [`CertManager::install_acme`].

pub mod files;
pub mod manager;

#[cfg(test)]
mod tests;

pub use files::LoadedCert;
pub use manager::{AcmeReport, AcmeState, AcmeStatus, CertInfo, CertManager, Prepared};

use crate::config::{Config, Problems};

/// Checks every certificate file `config` names (what `cutover validate`
/// adds to the config's own checks). `file` names the config in problems.
/// Returns warnings that do not refuse the config (see
/// [`files::key_warnings`]).
pub fn check_files(config: &Config, file: &str) -> Result<Vec<String>, Problems> {
    let Some(tls) = &config.proxy.tls else {
        return Ok(Vec::new());
    };
    files::load_all(&tls.certificates, file, std::time::SystemTime::now())?;
    Ok(files::key_warnings(&tls.certificates))
}
