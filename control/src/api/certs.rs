//! `GET /certificates` and `POST /certificates/reload`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AcmeInfo;

/// The body of `GET /certificates`: one entry per served host (and per
/// ACME host still waiting for its first certificate).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CertificatesBody {
    pub certificates: Vec<CertInfo>,
}

/// One host in `GET /certificates` (and `cutover certs`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CertInfo {
    pub host: String,
    /// `file` or `acme`.
    pub source: String,
    /// The leaf's issuer; `None` for an ACME host without a certificate yet.
    pub issuer: Option<String>,
    /// RFC 3339.
    pub not_before: Option<String>,
    /// RFC 3339.
    pub not_after: Option<String>,
    /// For files: the PEM chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub cert: Option<PathBuf>,
    /// For files: the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub key: Option<PathBuf>,
    /// For ACME hosts: the service's last report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acme: Option<AcmeInfo>,
}

impl From<crate::certs::CertInfo> for CertInfo {
    fn from(info: crate::certs::CertInfo) -> Self {
        Self {
            host: info.host,
            source: info.source.to_string(),
            issuer: info.issuer,
            not_before: info.not_before,
            not_after: info.not_after,
            cert: info.cert,
            key: info.key,
            acme: info.acme,
        }
    }
}
