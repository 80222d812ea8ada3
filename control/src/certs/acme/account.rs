//! The ACME account: created once, its credentials kept in
//! `state_dir/acme/account.json`, reused by every later start (and by a
//! cutover that took over through `cutover upgrade`).

use instant_acme::{Account, NewAccount};

use super::http::BoundedClient;
use super::storage::{AccountFile, Storage};
use super::AcmeError;
use crate::config::AcmeConfig;

/// The stored account for `config.directory`, or a new one registered
/// (terms of service agreed, `mailto:` contact when `email` is set) and
/// stored before it is used.
pub(super) async fn load_or_create(
    config: &AcmeConfig,
    storage: &Storage,
    client: &BoundedClient,
) -> Result<Account, AcmeError> {
    if let Some(file) = storage.load_account(&config.directory)? {
        let account = Account::builder_with_http(Box::new(client.clone()))
            .from_credentials(file.credentials)
            .await
            .map_err(|e| AcmeError::Acme(format!("cannot reach the ACME server with the stored account: {e}")))?;
        tracing::debug!(directory = %config.directory, "using the stored ACME account");
        return Ok(account);
    }
    let contact = config.email.as_ref().map(|email| format!("mailto:{email}"));
    let contact: Vec<&str> = contact.iter().map(String::as_str).collect();
    let (account, credentials) = Account::builder_with_http(Box::new(client.clone()))
        .create(
            &NewAccount {
                contact: &contact,
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            config.directory.clone(),
            None,
        )
        .await
        .map_err(|e| AcmeError::Acme(format!("cannot create the ACME account: {e}")))?;
    storage.save_account(&AccountFile {
        directory: config.directory.clone(),
        credentials,
    })?;
    tracing::info!(directory = %config.directory, account = account.id(), "created the ACME account");
    Ok(account)
}
