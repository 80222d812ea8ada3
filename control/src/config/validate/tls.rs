//! `proxy.tls:` — TLS listeners, certificate files, ACME, redirect, HSTS.
//!
//! Only the shape is checked here; whether the certificate files can be
//! read, match their keys, cover their hosts and are still valid is checked
//! by `certs::files` when the config is loaded or pushed, because that needs
//! the file system and a clock.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use super::Check;
use crate::config::bounds;
use crate::config::model::{AcmeChallenge, AcmeConfig, CertificateConfig, HostPattern, TlsConfig};
use crate::config::raw::{RawAcme, RawCertificate, RawTls};
use crate::config::rules;

/// Default `proxy.tls.listen` (SPEC §3).
const DEFAULT_TLS_LISTEN: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8443);

impl Check<'_> {
    /// `proxy.tls:`. `plain` is `proxy.listen` with each address's index as
    /// written.
    pub(super) fn tls(&mut self, raw: &RawTls, plain: &[(usize, SocketAddr)], base_dir: &Path) -> TlsConfig {
        let listen = self.tls_listen(raw, plain);
        let certificates: Vec<CertificateConfig> = raw
            .certificates
            .as_deref()
            .unwrap_or_default()
            .iter()
            .enumerate()
            .map(|(i, cert)| self.certificate(&format!("proxy.tls.certificates[{i}]"), cert, base_dir))
            .collect();
        self.hosts_named_once(&certificates);
        let acme = raw.acme.as_ref().map(|acme| self.acme(acme, &certificates, base_dir));
        if certificates.is_empty() && acme.is_none() {
            self.push(
                "proxy.tls",
                "TLS listeners need certificates: add certificates: [{ hosts: [...], cert: ..., key: ... }] or acme: { directory: ... }",
            );
        }
        TlsConfig {
            listen,
            certificates,
            acme,
            redirect_http: raw.redirect_http.unwrap_or(false),
            hsts: self.duration("proxy.tls.hsts", raw.hsts.as_ref(), Duration::ZERO, bounds::HSTS),
        }
    }

    fn tls_listen(&mut self, raw: &RawTls, plain: &[(usize, SocketAddr)]) -> Vec<SocketAddr> {
        let list = match &raw.listen {
            None => return vec![DEFAULT_TLS_LISTEN],
            Some(list) if list.0.is_empty() => {
                self.push(
                    "proxy.tls.listen",
                    "no listen address; give at least one, e.g. [\"127.0.0.1:8443\"], or remove proxy.tls",
                );
                return Vec::new();
            }
            Some(list) => list,
        };
        let mut listen: Vec<(usize, SocketAddr)> = Vec::new();
        for (i, text) in list.0.iter().enumerate() {
            let key_path = format!("proxy.tls.listen[{i}]");
            let Ok(addr) = rules::listen_addr(text).map_err(|m| self.push(&key_path, m)) else {
                continue;
            };
            if let Some((j, other)) = plain.iter().find(|(_, p)| rules::listeners_conflict(addr, *p)) {
                self.push(
                    &key_path,
                    format!("{addr} conflicts with proxy.listen[{j}] ({other}); a TLS listener needs its own port"),
                );
            } else if let Some((j, other)) = listen.iter().find(|(_, p)| rules::listeners_conflict(addr, *p)) {
                self.push(
                    &key_path,
                    format!("{addr} conflicts with proxy.tls.listen[{j}] ({other}); each listener needs its own address and port"),
                );
            }
            listen.push((i, addr));
        }
        listen.into_iter().map(|(_, addr)| addr).collect()
    }

    fn certificate(&mut self, at: &str, raw: &RawCertificate, base_dir: &Path) -> CertificateConfig {
        let mut hosts = Vec::new();
        match raw.hosts.as_deref() {
            None | Some([]) => self.push(
                format!("{at}.hosts"),
                "no hosts; name the hosts this certificate serves, e.g. [example.com, \"*.example.com\"]",
            ),
            Some(list) => {
                for (i, text) in list.iter().enumerate() {
                    match rules::host_pattern(text) {
                        Ok(HostPattern::Exact(host)) => hosts.push(host),
                        Ok(HostPattern::Wildcard(suffix)) => hosts.push(format!("*.{suffix}")),
                        Ok(HostPattern::Any) => self.push(
                            format!("{at}.hosts[{i}]"),
                            "\"*\" is not a certificate host; name the hosts, e.g. example.com or *.example.com",
                        ),
                        Err(message) => {
                            self.push(format!("{at}.hosts[{i}]"), message.replacen("route host", "host", 1))
                        }
                    }
                }
            }
        }
        let mut file = |key: &str, raw: Option<&str>, example: &str| match raw {
            None | Some("") => {
                self.push(
                    format!("{at}.{key}"),
                    format!("missing; give the PEM file's path, e.g. {example}"),
                );
                base_dir.to_path_buf()
            }
            Some(text) => {
                if let Err(message) = rules::no_nul(text) {
                    self.push(format!("{at}.{key}"), message);
                }
                super::resolve(base_dir, text)
            }
        };
        CertificateConfig {
            hosts,
            cert: file("cert", raw.cert.as_deref(), "certs/example.pem"),
            key: file("key", raw.key.as_deref(), "certs/example.key"),
        }
    }

    /// A host served by two certificate files would be chosen by file order,
    /// which nobody reads that closely: refused.
    fn hosts_named_once(&mut self, certificates: &[CertificateConfig]) {
        for (i, cert) in certificates.iter().enumerate() {
            for host in &cert.hosts {
                let earlier = certificates[..i].iter().position(|c| c.hosts.contains(host));
                if let Some(j) = earlier {
                    self.push(
                        format!("proxy.tls.certificates[{i}].hosts"),
                        format!("{host} is already served by proxy.tls.certificates[{j}]; name each host once"),
                    );
                }
            }
        }
    }

    fn acme(&mut self, raw: &RawAcme, certificates: &[CertificateConfig], base_dir: &Path) -> AcmeConfig {
        let directory = match raw.directory.as_deref() {
            None | Some("") => {
                self.push(
                    "proxy.tls.acme.directory",
                    "missing; give the ACME server's directory URL, e.g. https://acme-v02.api.letsencrypt.org/directory",
                );
                String::new()
            }
            Some(url) => {
                if let Err(message) = acme_directory(url) {
                    self.push("proxy.tls.acme.directory", message);
                }
                url.to_string()
            }
        };
        let email = match raw.email.as_deref() {
            None | Some("") => None,
            Some(email) => {
                if let Err(message) = contact_email(email) {
                    self.push("proxy.tls.acme.email", message);
                }
                Some(email.to_string())
            }
        };
        let challenge = match raw.challenge.as_deref() {
            None | Some("http-01") => AcmeChallenge::Http01,
            Some("tls-alpn-01") => AcmeChallenge::TlsAlpn01,
            Some(other) => {
                self.push(
                    "proxy.tls.acme.challenge",
                    format!("unknown challenge \"{other}\"; use http-01 or tls-alpn-01"),
                );
                AcmeChallenge::Http01
            }
        };
        let ca_roots = match raw.ca_roots.as_deref() {
            None | Some("") => None,
            Some(text) => {
                if let Err(message) = rules::no_nul(text) {
                    self.push("proxy.tls.acme.ca_roots", message);
                }
                Some(super::resolve(base_dir, text))
            }
        };
        let mut hosts: Vec<String> = Vec::new();
        for (i, text) in raw.hosts.as_deref().unwrap_or_default().iter().enumerate() {
            let at = format!("proxy.tls.acme.hosts[{i}]");
            match rules::host_pattern(text) {
                Ok(HostPattern::Exact(host)) => {
                    if certificates.iter().any(|c| c.hosts.contains(&host)) {
                        self.push(at, format!("{host} already has a certificate file; remove it from one of the two"));
                    } else if hosts.contains(&host) {
                        self.push(at, format!("{host} is listed twice"));
                    } else {
                        hosts.push(host);
                    }
                }
                Ok(_) => self.push(
                    at,
                    format!(
                        "\"{text}\": ACME certificates are for exact host names (http-01 and tls-alpn-01 cannot prove a wildcard); \
                         use a certificate file for wildcards"
                    ),
                ),
                Err(message) => self.push(at, message.replacen("route host", "host", 1)),
            }
        }
        AcmeConfig {
            directory,
            email,
            challenge,
            ca_roots,
            hosts,
        }
    }
}

/// An ACME directory URL: `https://host[:port]/path`, nothing the HTTP
/// client would have to guess at.
fn acme_directory(url: &str) -> Result<(), String> {
    let Some(rest) = url.strip_prefix("https://") else {
        return Err(format!(
            "\"{url}\" is not an https URL; ACME servers are reached over https, e.g. https://acme-v02.api.letsencrypt.org/directory"
        ));
    };
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty() || rest.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "\"{url}\" is not a valid URL; e.g. https://acme-v02.api.letsencrypt.org/directory"
        ));
    }
    Ok(())
}

/// A contact address: `user@domain`, no scheme, spaces or commas.
fn contact_email(email: &str) -> Result<(), String> {
    let valid = email.split_once('@').is_some_and(|(user, domain)| {
        !user.is_empty() && domain.contains('.') && !domain.starts_with('.') && !domain.ends_with('.')
    }) && !email
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || matches!(c, ',' | ':' | '<' | '>'));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "\"{email}\" is not an e-mail address; write it as ops@example.com"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directory_urls_are_https() {
        assert!(acme_directory("https://localhost:14000/dir").is_ok());
        assert!(acme_directory("http://localhost:14000/dir").is_err());
        assert!(acme_directory("https:///dir").is_err());
        assert!(acme_directory("https://a b/dir").is_err());
    }

    #[test]
    fn contact_emails() {
        assert!(contact_email("ops@example.com").is_ok());
        for bad in [
            "ops",
            "@example.com",
            "ops@localhost",
            "mailto:ops@example.com",
            "a@b.com, c@d.com",
        ] {
            assert!(contact_email(bad).is_err(), "{bad}");
        }
    }
}
