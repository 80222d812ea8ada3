//! What ACME keeps in `state_dir/acme/`: the account credentials and every
//! certificate obtained, so a restart (or a restarted cutover taking over)
//! reuses the account and serves the stored certificates at once.
//!
//! ```text
//! state_dir/acme/              0700
//!   account.json               0600  {"directory": url, "credentials": …}
//!   certs/                     0700
//!     <host>.pem               0600  chain (leaf first), then the PKCS#8 key
//! ```
//!
//! Every write goes to a temporary file (`<name>.tmp<pid>`) created 0600 in
//! the same directory, is synced, then renamed over the old one, and the
//! directory is synced: a crash leaves the old file or the new one, never
//! half of either. Chain and key share one file so that they are replaced
//! together by that one rename; a crash never leaves a key next to another
//! certificate's chain, and the previous certificate keeps serving until
//! the new one is complete. Temporary files a killed cutover left behind
//! are removed at start-up ([`Storage::remove_temp_files`]).
//!
//! Earlier builds kept the key apart, in `<host>.key`, next to a chain-only
//! `<host>.pem`; that pair is still read (a `<host>.pem` without a key), and
//! the `.key` file is removed once the host's certificate is next saved.

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

    /// Where the chain and the key of `host` are kept, in one file.
    pub fn cert_path(&self, host: &str) -> PathBuf {
        self.dir.join("certs").join(format!("{host}.pem"))
    }

    /// Where earlier builds kept the key of `host`, next to a chain-only
    /// [`cert_path`](Self::cert_path).
    fn legacy_key_path(&self, host: &str) -> PathBuf {
        self.dir.join("certs").join(format!("{host}.key"))
    }

    /// Removes the temporary files (`<name>.tmp<pid>`) that a cutover
    /// killed in the middle of a write left in `state_dir/acme/` and its
    /// `certs/`: they may hold a private key. Those of a process still
    /// running (a cutover handing over to this one may be saving) are
    /// left alone. Nothing else is touched.
    pub fn remove_temp_files(&self) {
        for dir in [self.dir.clone(), self.dir.join("certs")] {
            let Ok(listing) = fs::read_dir(&dir) else {
                continue;
            };
            for entry in listing.flatten() {
                let name = entry.file_name();
                let Some(pid) = name.to_str().and_then(temp_file_pid) else {
                    continue;
                };
                if pid == std::process::id() || Path::new("/proc").join(pid.to_string()).exists() {
                    continue;
                }
                let path = entry.path();
                match fs::remove_file(&path) {
                    Ok(()) => {
                        tracing::info!(path = %path.display(), "removed a temporary file left by a killed cutover")
                    }
                    Err(e) => {
                        tracing::warn!(path = %path.display(), error = %e, "cannot remove a leftover temporary file")
                    }
                }
            }
        }
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
        let loaded = (|| -> Result<Option<Issued>, AcmeError> {
            let Some(pem) = read_bounded(&self.cert_path(host))? else {
                return Ok(None);
            };
            let stored_pem = if has_key(&pem)? {
                pem
            } else {
                // An earlier build's layout: the key in its own file.
                let Some(key_pem) = read_bounded(&self.legacy_key_path(host))? else {
                    return Ok(None);
                };
                bundle(&pem, &key_pem)
            };
            let chain = parse_chain(&stored_pem)?;
            let key = parse_key(&stored_pem)?;
            let issued = Issued::new(host, chain, key, stored_pem)?;
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

    /// Replaces the stored certificate of `host`, chain and key together.
    pub(super) fn save_cert(&self, issued: &Issued) -> Result<(), AcmeError> {
        let path = self.cert_path(&issued.host);
        self.ensure_dir(&self.dir)?;
        if let Some(parent) = path.parent() {
            self.ensure_dir(parent)?;
        }
        write_atomic(&path, &issued.stored_pem)?;
        // An earlier build's key: no longer read now that the `.pem` holds
        // one, and a private key better not left lying around.
        let legacy = self.legacy_key_path(&issued.host);
        if let Err(e) = fs::remove_file(&legacy) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %legacy.display(), error = %e, "cannot remove the old key file");
            }
        }
        Ok(())
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

/// The pid in a temporary file name of [`write_atomic`] (`<name>.tmp<pid>`,
/// `<name>` one of the files kept here), `None` for any other name.
fn temp_file_pid(name: &str) -> Option<u32> {
    let (stem, pid) = name.rsplit_once(".tmp")?;
    let ours = stem == "account.json" || stem.ends_with(".pem") || stem.ends_with(".key");
    if !ours || pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok()
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
    // The rename is durable once the directory entry is. The new file is
    // in place either way, so a failure here is only logged.
    if let Some(parent) = path.parent() {
        if let Err(e) = fs::File::open(parent).and_then(|dir| dir.sync_all()) {
            tracing::warn!(dir = %parent.display(), error = %e, "cannot sync the directory after a rename");
        }
    }
    Ok(())
}

/// What [`Storage::save_cert`] writes: the chain, then the key.
pub(super) fn bundle(chain_pem: &[u8], key_pem: &[u8]) -> Vec<u8> {
    let mut pem = Vec::with_capacity(chain_pem.len() + key_pem.len() + 1);
    pem.extend_from_slice(chain_pem);
    if !pem.is_empty() && !pem.ends_with(b"\n") {
        pem.push(b'\n');
    }
    pem.extend_from_slice(key_pem);
    pem
}

/// Whether a PEM file holds a private key.
fn has_key(pem: &[u8]) -> Result<bool, AcmeError> {
    rustls_pemfile::private_key(&mut &pem[..])
        .map(|key| key.is_some())
        .map_err(|e| AcmeError::Certificate(format!("PEM: {e}")))
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

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// Splits a stored bundle into the chain and the key, as an earlier
    /// build stored them.
    fn split(issued: &Issued) -> (Vec<u8>, Vec<u8>) {
        let text = std::str::from_utf8(&issued.stored_pem).unwrap();
        let at = text.find("-----BEGIN PRIVATE KEY-----").unwrap();
        (text.as_bytes()[..at].to_vec(), text.as_bytes()[at..].to_vec())
    }

    #[test]
    fn a_stored_certificate_is_loaded_only_while_valid_and_for_its_host() {
        let state = temp_dir("load");
        let storage = Storage::new(&state);
        let issued = cert::tests::self_signed("a.test");
        storage.save_cert(&issued).unwrap();
        let path = storage.cert_path("a.test");
        assert_eq!(mode(&path), 0o600);
        assert_eq!(
            names(&state.join("acme/certs")),
            ["a.test.pem"],
            "chain and key in one file"
        );
        let loaded = storage
            .load_cert("a.test", SystemTime::now())
            .expect("valid stored certificate");
        assert_eq!(loaded.key.cert, issued.key.cert);
        assert_eq!(loaded.stored_pem, issued.stored_pem, "round trip");
        assert!(storage.load_cert("a.test", issued.not_after).is_none(), "expired");

        // Stored under another host's name: refused.
        fs::copy(&path, storage.cert_path("b.test")).unwrap();
        assert!(storage.load_cert("b.test", SystemTime::now()).is_none());

        // A key that does not match the chain: refused.
        let other = cert::tests::self_signed("a.test");
        let (chain, _) = split(&issued);
        let (_, other_key) = split(&other);
        fs::write(&path, bundle(&chain, &other_key)).unwrap();
        assert!(storage.load_cert("a.test", SystemTime::now()).is_none());
        fs::remove_dir_all(&state).unwrap();
    }

    #[test]
    fn an_earlier_builds_two_files_are_read_and_replaced_by_one() {
        let state = temp_dir("legacy");
        let storage = Storage::new(&state);
        let old = cert::tests::self_signed("a.test");
        let (chain, key) = split(&old);
        let certs = state.join("acme/certs");
        storage.ensure_dir(&certs).unwrap();
        fs::write(certs.join("a.test.pem"), &chain).unwrap();
        fs::write(certs.join("a.test.key"), &key).unwrap();
        let loaded = storage
            .load_cert("a.test", SystemTime::now())
            .expect("the old layout loads");
        assert_eq!(loaded.key.cert, old.key.cert);

        let new = cert::tests::self_signed("a.test");
        storage.save_cert(&new).unwrap();
        assert_eq!(names(&certs), ["a.test.pem"], "the old key file is gone");
        assert_eq!(mode(&certs.join("a.test.pem")), 0o600);
        let loaded = storage.load_cert("a.test", SystemTime::now()).unwrap();
        assert_eq!(loaded.key.cert, new.key.cert);
        fs::remove_dir_all(&state).unwrap();
    }

    /// The states a cutover killed while saving can leave behind: at the
    /// next start the certificate stored before (or the new one, once
    /// renamed in place) still loads, and the temporary files are gone.
    #[test]
    fn a_write_torn_by_a_kill_leaves_a_valid_pair_and_no_temporary_file() {
        let state = temp_dir("torn");
        let storage = Storage::new(&state);
        let certs = state.join("acme/certs");
        let old = cert::tests::self_signed("a.test");
        let new = cert::tests::self_signed("a.test");
        // A pid that is not running: far above any pid_max.
        let dead = "4294967295";

        // Killed before the rename: the previous certificate (an earlier
        // build's two files) and the new one half written.
        let (chain, key) = split(&old);
        storage.ensure_dir(&certs).unwrap();
        fs::write(certs.join("a.test.pem"), &chain).unwrap();
        fs::write(certs.join("a.test.key"), &key).unwrap();
        fs::write(certs.join(format!("a.test.pem.tmp{dead}")), &new.stored_pem[..100]).unwrap();
        fs::write(state.join(format!("acme/account.json.tmp{dead}")), b"{").unwrap();
        // Not ours: left alone.
        fs::write(certs.join("notes.tmp1"), b"x").unwrap();
        fs::write(certs.join("a.test.pem.tmpx"), b"x").unwrap();
        storage.remove_temp_files();
        assert_eq!(
            names(&certs),
            ["a.test.key", "a.test.pem", "a.test.pem.tmpx", "notes.tmp1"]
        );
        assert_eq!(names(&state.join("acme")), ["certs"]);
        let loaded = storage
            .load_cert("a.test", SystemTime::now())
            .expect("the previous certificate serves");
        assert_eq!(loaded.key.cert, old.key.cert);

        // Killed after the rename, before the old key file went: the new
        // bundle is whole and wins over the stale key next to it.
        fs::write(certs.join("a.test.pem"), &new.stored_pem).unwrap();
        let loaded = storage
            .load_cert("a.test", SystemTime::now())
            .expect("the new certificate serves");
        assert_eq!(loaded.key.cert, new.key.cert);
        fs::remove_dir_all(&state).unwrap();
    }

    #[test]
    fn only_write_atomic_temporary_names_are_recognised() {
        assert_eq!(temp_file_pid("a.test.pem.tmp123"), Some(123));
        assert_eq!(temp_file_pid("a.test.key.tmp9"), Some(9));
        assert_eq!(temp_file_pid("account.json.tmp42"), Some(42));
        for other in [
            "a.test.pem",
            "a.test.pem.tmp",
            "a.test.pem.tmp1x",
            "notes.tmp1",
            "x.json.tmp1",
            "a.tmp1.pem",
        ] {
            assert_eq!(temp_file_pid(other), None, "{other}");
        }
        // Our own are in use.
        let state = temp_dir("own");
        let storage = Storage::new(&state);
        storage.ensure_dir(storage.dir()).unwrap();
        let own = storage.dir().join(format!("account.json.tmp{}", std::process::id()));
        fs::write(&own, b"{").unwrap();
        storage.remove_temp_files();
        assert!(own.exists());
        fs::remove_dir_all(&state).unwrap();
    }
}
