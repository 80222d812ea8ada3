//! Shared helpers for the certificate tests: certificates made by rcgen
//! at test time, written to a fresh directory.

mod files;
mod manager;

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use rcgen::{date_time_ymd, CertificateParams, KeyPair};

use crate::config::CertificateConfig;

/// A throwaway RSA key (PKCS#8), used only to cover PKCS#1 keys: ring, which
/// rcgen uses here, cannot generate RSA keys. Never used outside tests.
pub(super) const TEST_RSA_PKCS8: &str = "\
-----BEGIN PRIVATE KEY-----\n\
MIIEvgIBADANBgkqhkiG9w0BAQEFAASCBKgwggSkAgEAAoIBAQCVSl5+aS+T9zsK\n\
Ccu8XjSoHORojEvmkSxL4EdtNQEBqIQTN5PVGKMHxjXNoPGRSHk0HG+c4Ovmjx5Q\n\
T1PNh+VAS+PgfGnGJ26UNETNW37CirQE1kA5M3M5FQly+4ydKwlVq7waK5e7H53L\n\
TW1SqMRmKpr8QQ90M7vEGZN1RlHKdFAtYWaE5YrQQ+ftDL9kaorupZMoew+L5keF\n\
htJiI0COcVa5HQ3z0H/3ampz7uVGx32ri5v95sMZEsaPn5qWXFpqAinDZrQhf65H\n\
w28yXqb/AUIu3QagXKJAO+EoF6roy408e+QTnlV41cKng2pG6kCmJa+r6i9toFRx\n\
kVLpfJ0tAgMBAAECggEACGeCeHsrRJkZWlg7qgv4oBKDpkIS/3TNPwFDgXRHgqR4\n\
uPc66+HCQyIHWInhXN8tBEAUkCBBD36fmNWlFK/m5Jl7x4u2za2zGzCdGJ14aPMe\n\
LXEyoOBoBxQ2Lw0BDmkEPRiDqJ/VynY+Gm+ZAltXYR6wERgy3++4opJuW3QHueNV\n\
LEE/UZLPqB+WE5un2Jt0Tl0QpLygAQECeNGQd9vafBhsSnTfl82p9HGNH/acdV8z\n\
6nTLLBYLvtQuWvUKE30NAg10L3AzfImEeDz8Na31kcIXEuQJ84oIMcXb6xvz2Mqg\n\
2eWZhjLeFuG23jUTpMYgrYfXzELqdPCcdIyWr2KsoQKBgQDP7KKeD5wRyGGBMSm4\n\
XZGiy9CDLiOzrHEN2hTadJl9YzASW/Z1HBwL2qK3bFrb9kG5p2UooOqiTcbmmUo7\n\
VckwWNZ2sn66WBCRH/O+WFgUZymkKclAe+EoKNTXGKs4TWzMQwT3GmlvPxQYIR42\n\
cGxk0qkJcNGSWN9lv+YCDiffDQKBgQC3zxr4lFFB022D9imBX6d62IVwiHOhFAAy\n\
6Rlx0YSUqlnDVBoEYBvnerOeUP3LXTWS9ayS6IOdCSA6kqvTqOD7mtgg7/R0EOok\n\
vdMkBJnC46MgJuVaYMgHrc1lXXQGirUObrc8dZ7VlBKIG70fCCv2It1tmPUAqZFw\n\
Ixv0zGkuoQKBgQDH1YuZVDFQmgC0VRbe3fcZur9lRJQFnGdvw7ilGMloTEsoagBe\n\
H60I65HVritJGs2ibDL6MGYxpYTTnmJM0q8xa0B8BiNsXzVU9Zuixm+o9Fl+MLb+\n\
5dDJcyzUqh3tV+SIEKWWBGlvBPYAFtxdwAE9iYXyz95rxES5Gw0pzocdhQKBgQCJ\n\
YuK89Fc8BWUxIlhpm+6Z8qbiswsCVenEI9jh6wHXAPEw/3am2JNi1KLW7aCVVakK\n\
nFiOQf7F7KFLRn/qJ6tqRJXRIKmt60qnhb8Ah/PJ6M3v5UK+5+H7Y1xHrK9hiGHG\n\
VNje9uduqkujsmAMhtYdFng9R/uwsA3GLGfj9LmVoQKBgDGY/ROIts8r1sCfROpK\n\
ec8QFuLy3Y5I2LRm9gEYzyEqGpVG3Uw8Recz/WaJsY1Th19daRaSKcHTpI0iENC8\n\
abRbLvH1SdncY37XXVHcSe4Q/VtW4ot49S+urqU3sAN0qLtdmiqIhVFplba9o4L3\n\
cWgF8d0yvt5z0ve2m7dq5T0I\n\
-----END PRIVATE KEY-----\n\
";

/// A fresh directory for one test's files.
pub(super) fn dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("cutover-certs-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A self-signed certificate for `names` and its key (PKCS#8 PEM).
pub(super) struct Made {
    pub cert_pem: String,
    pub key_pem: String,
    pub key: KeyPair,
}

/// (not before, not after) as (year, month, day).
pub(super) type Validity = ((i32, u8, u8), (i32, u8, u8));

/// Valid from 2000 to 2100 unless `validity` says otherwise.
pub(super) fn make(names: &[&str], validity: Option<Validity>) -> Made {
    make_with(KeyPair::generate().unwrap(), names, validity)
}

pub(super) fn make_with(key: KeyPair, names: &[&str], validity: Option<Validity>) -> Made {
    let mut params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    let ((y1, m1, d1), (y2, m2, d2)) = validity.unwrap_or(((2000, 1, 1), (2100, 1, 1)));
    params.not_before = date_time_ymd(y1, m1, d1);
    params.not_after = date_time_ymd(y2, m2, d2);
    let cert = params.self_signed(&key).unwrap();
    Made {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        key,
    }
}

/// Writes `cert` and `key` PEM as `<name>.pem`/`<name>.key` in `dir`, for
/// `hosts`.
pub(super) fn write(dir: &Path, name: &str, hosts: &[&str], cert: &str, key: &str) -> CertificateConfig {
    let cert_path = dir.join(format!("{name}.pem"));
    let key_path = dir.join(format!("{name}.key"));
    std::fs::write(&cert_path, cert).unwrap();
    std::fs::write(&key_path, key).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    CertificateConfig {
        hosts: hosts.iter().map(|h| h.to_string()).collect(),
        cert: cert_path,
        key: key_path,
    }
}

/// The inner key of a PKCS#8 PEM (PKCS#1 for RSA, SEC1 for EC) as PEM
/// with `label`: the OCTET STRING inside the PrivateKeyInfo.
pub(super) fn unwrap_pkcs8(pkcs8_pem: &str, label: &str) -> String {
    let der = rustls_pemfile::private_key(&mut pkcs8_pem.as_bytes()).unwrap().unwrap();
    let der = der.secret_der();
    // SEQUENCE { INTEGER version, SEQUENCE algorithm, OCTET STRING key, ... }
    let (_, body) = tlv(der);
    let (rest, _version) = split_tlv(body);
    let (rest, _algorithm) = split_tlv(rest);
    let (_, key) = tlv(rest);
    pem(label, key)
}

/// (tag and length bytes, value) of the first TLV of `der`.
fn tlv(der: &[u8]) -> (&[u8], &[u8]) {
    let (header, len) = match der[1] {
        n if n < 0x80 => (2, n as usize),
        0x81 => (3, der[2] as usize),
        0x82 => (4, (der[2] as usize) << 8 | der[3] as usize),
        other => panic!("unexpected DER length byte {other:#x}"),
    };
    (&der[..header], &der[header..header + len])
}

/// (what follows the first TLV, the first TLV's value).
fn split_tlv(der: &[u8]) -> (&[u8], &[u8]) {
    let (header, value) = tlv(der);
    let end = header.len() + value.len();
    (&der[end..], value)
}

fn pem(label: &str, der: &[u8]) -> String {
    let encoded = base64(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in encoded.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (*b as u32) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

pub(super) fn now() -> SystemTime {
    SystemTime::now()
}
