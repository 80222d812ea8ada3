//! What ACME keeps in `state_dir/acme/`: the account credentials and every
//! certificate obtained, so a restart (or a restarted cutover taking over)
//! reuses the account and serves the stored certificates at once.
//!
//! ```text
//! state_dir/acme/              0700
//!   account.json               0600  {"directory": url, "credentials": …}
//!   certs/                     0700
//!     <host>.pem               0600  chain, leaf first
//!     <host>.key               0600  PKCS#8 private key
//! ```
//!
//! Every write goes to a temporary file created 0600 in the same directory,
//! is synced, then renamed over the old one: a crash leaves the old file or
//! the new one, never half of either. The key is written before the chain,
//! so a crash between the two leaves a chain that does not match its key,
//! which loading refuses (and a new order replaces).

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use serde::{Deserialize, Serialize};

use super::cert::Issued;
use super::AcmeError;

/// Largest file read back from the state directory; an account or a
/// certificate chain is a few KiB.
const MAX_FILE: u64 = 1024 * 1024;

/// `state_dir/acme/` and what is in it.
#[derive(Debug, Clone)]
pub struct Storage {
    dir: PathBuf,
}

/// The account file: the credentials and the directory they belong to.
#[derive(Serialize, Deserialize)]
pub(super) struct AccountFile {
    pub directory: String,
    pub credentials: instant_acme::AccountCredentials,
}

impl Storage {
    /// The ACME directory inside `state_dir` (nothing is created yet).
    pub fn new(state_dir: &Path) -> Self {
        Self {
            dir: state_dir.join("acme"),
        }
    }

    /// `state_dir/acme/`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the account credentials are kept.
    pub fn account_path(&self) -> PathBuf {
        self.dir.join("account.json")
    }

    /// Where the chain and the key of `host` are kept.
    pub fn cert_paths(&self, host: &str) -> (PathBuf, PathBuf) {
        let certs = self.dir.join("certs");
        (certs.join(format!("{host}.pem")), certs.join(format!("{host}.key")))
    }

    /// The stored account, if there is one for `directory`. An account of
    /// another ACME server (the config switched from staging to
    /// production, say) is `None`: a new one replaces it.
    pub(super) fn load_account(&self, directory: &str) -> Result<Option<AccountFile>, AcmeError> {
        let path = self.account_path();
        let Some(bytes) = read_bounded(&path)? else {
            return Ok(None);
        };
        let file: AccountFile =
            serde_json::from_slice(&bytes).map_err(|e| AcmeError::Storage(format!("{}: {e}", path.display())))?;
        Ok((file.directory == directory).then_some(file))
    }

    /// Whether the stored account (and so the stored certificates) came
    /// from `directory`.
    pub(super) fn account_matches(&self, directory: &str) -> bool {
        matches!(self.load_account(directory), Ok(Some(_)))
    }

    /// Drops the stored account (the server no longer knows it): the next
    /// order registers a new one.
    pub(super) fn forget_account(&self) {
        let path = self.account_path();
        if let Err(e) = fs::remove_file(&path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove the stale ACME account");
            }
        }
    }

    pub(super) fn save_account(&self, file: &AccountFile) -> Result<(), AcmeError> {
        let json = serde_json::to_vec_pretty(file).map_err(|e| AcmeError::Storage(e.to_string()))?;
        self.ensure_dir(&self.dir)?;
        write_atomic(&self.account_path(), &json)
    }

    /// The stored certificate of `host`, when it parses, matches its key,
    /// names `host` and has not expired. Anything else is `None` (logged):
    /// a new order replaces it.
    pub(super) fn load_cert(&self, host: &str, now: SystemTime) -> Option<Issued> {
        let (pem_path, key_path) = self.cert_paths(host);
        let loaded = (|| -> Result<Option<Issued>, AcmeError> {
            let (Some(chain_pem), Some(key_pem)) = (read_bounded(&pem_path)?, read_bounded(&key_path)?) else {
                return Ok(None);
            };
            let chain = parse_chain(&chain_pem)?;
            let key = parse_key(&key_pem)?;
            let issued = Issued::new(host, chain, key, chain_pem, key_pem)?;
            Ok(Some(issued))
        })();
        match loaded {
            Ok(Some(issued)) if issued.not_after > now => Some(issued),
            Ok(Some(_)) => {
                tracing::info!(host, "stored ACME certificate has expired; a new one will be ordered");
                None
            }
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(host, error = %e, "stored ACME certificate is unusable; a new one will be ordered");
                None
            }
        }
    }

    pub(super) fn save_cert(&self, issued: &Issued) -> Result<(), AcmeError> {
        let (pem_path, key_path) = self.cert_paths(&issued.host);
        self.ensure_dir(&self.dir)?;
        if let Some(parent) = pem_path.parent() {
            self.ensure_dir(parent)?;
        }
        write_atomic(&key_path, &issued.key_pem)?;
        write_atomic(&pem_path, &issued.chain_pem)
    }

    /// Creates `dir` 0700 if missing, and narrows it to 0700 if it exists
    /// wider (an operator's `mkdir`).
    fn ensure_dir(&self, dir: &Path) -> Result<(), AcmeError> {
        let io = |e: std::io::Error| AcmeError::Storage(format!("{}: {e}", dir.display()));
        DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io)?;
        let mode = fs::metadata(dir).map_err(io)?.permissions().mode() & 0o777;
        if mode != 0o700 {
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io)?;
        }
        Ok(())
    }
}

/// A file's bytes, `None` when it does not exist; refuses files over
/// [`MAX_FILE`].
fn read_bounded(path: &Path) -> Result<Option<Vec<u8>>, AcmeError> {
    use std::io::Read;
    let io = |e: std::io::Error| AcmeError::Storage(format!("{}: {e}", path.display()));
    let file = match fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(e)),
    };
    let mut bytes = Vec::new();
    file.take(MAX_FILE + 1).read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() as u64 > MAX_FILE {
        return Err(AcmeError::Storage(format!(
            "{}: larger than {MAX_FILE} bytes",
            path.display()
        )));
    }
    Ok(Some(bytes))
}

/// Writes `bytes` to `path` atomically, the file mode 0600 from its
/// creation on (never readable by others, not even for a moment).
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), AcmeError> {
    let io = |e: std::io::Error| AcmeError::Storage(format!("{}: {e}", path.display()));
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let written = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        // `mode` applies only when the file is created; a leftover
        // temporary file keeps its mode otherwise.
        file.set_permissions(fs::Permissions::from_mode(0o600))?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written.map_err(io)?;
    // The rename is durable once the directory entry is.
    if let Some(parent) = path.parent() {
        if let Ok(dir) = fs::File::open(parent) {
            let _ = dir.sync_all();
        }
    }
    Ok(())
}

/// Every certificate of a PEM chain, leaf first.
pub(super) fn parse_chain(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, AcmeError> {
    let chain = rustls_pemfile::certs(&mut &pem[..])
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| AcmeError::Certificate(format!("chain PEM: {e}")))?;
    if chain.is_empty() {
        return Err(AcmeError::Certificate("no certificate in the chain PEM".into()));
    }
    Ok(chain)
}

/// The one private key of a PEM file.
pub(super) fn parse_key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, AcmeError> {
    rustls_pemfile::private_key(&mut &pem[..])
        .map_err(|e| AcmeError::Certificate(format!("key PEM: {e}")))?
        .ok_or_else(|| AcmeError::Certificate("no private key in the key PEM".into()))
}

/// The chain and key as rustls serves them; refuses a key that does not
/// match the leaf.
pub(super) fn certified_key(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<CertifiedKey>, AcmeError> {
    let provider = rustls::crypto::ring::default_provider();
    CertifiedKey::from_der(chain, key, &provider)
        .map(Arc::new)
        .map_err(|e| AcmeError::Certificate(format!("chain and key: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::acme::cert;

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("cutover-acme-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn atomic_writes_are_0600_in_a_0700_directory() {
        let state = temp_dir("modes");
        let storage = Storage::new(&state);
        storage.ensure_dir(storage.dir()).unwrap();
        let path = storage.dir().join("x");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(fs::metadata(storage.dir()).unwrap().permissions().mode() & 0o777, 0o700);
        let leftovers: Vec<_> = fs::read_dir(storage.dir()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary file left behind");
        fs::remove_dir_all(&state).unwrap();
    }

    #[test]
    fn a_wider_existing_directory_is_narrowed() {
        let state = temp_dir("narrow");
        let storage = Storage::new(&state);
        fs::create_dir_all(storage.dir()).unwrap();
        fs::set_permissions(storage.dir(), fs::Permissions::from_mode(0o755)).unwrap();
        storage.ensure_dir(storage.dir()).unwrap();
        assert_eq!(fs::metadata(storage.dir()).unwrap().permissions().mode() & 0o777, 0o700);
        fs::remove_dir_all(&state).unwrap();
    }

    #[test]
    fn a_stored_certificate_is_loaded_only_while_valid_and_for_its_host() {
        let state = temp_dir("load");
        let storage = Storage::new(&state);
        let issued = cert::tests::self_signed("a.test");
        storage.save_cert(&issued).unwrap();
        let (pem, key) = storage.cert_paths("a.test");
        for path in [&pem, &key] {
            assert_eq!(fs::metadata(path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let loaded = storage
            .load_cert("a.test", SystemTime::now())
            .expect("valid stored certificate");
        assert_eq!(loaded.key.cert, issued.key.cert);
        assert!(storage.load_cert("a.test", issued.not_after).is_none(), "expired");

        // Stored under another host's name: refused.
        let (other_pem, other_key) = storage.cert_paths("b.test");
        fs::copy(&pem, &other_pem).unwrap();
        fs::copy(&key, &other_key).unwrap();
        assert!(storage.load_cert("b.test", SystemTime::now()).is_none());

        // A key that does not match the chain: refused.
        let other = cert::tests::self_signed("a.test");
        fs::write(&key, &other.key_pem).unwrap();
        assert!(storage.load_cert("a.test", SystemTime::now()).is_none());
        fs::remove_dir_all(&state).unwrap();
    }
}
