//! Exit codes (documented in `chatvault --help` and the README's table) and [`code`], the one
//! mapping from a failed run's typed error to its code. The SDK's [`DeviceError`] is the
//! table; the engine's, the client's and the vault client's errors get the code of the
//! [`DeviceError`] kind the SDK reports them as.

use chatvault_client::{ClientError, DeviceError};
use chatvault_repo::RepoError;
use chatvault_vault_client::Error as VaultError;

/// Success.
pub const OK: u8 = 0;
/// Any other error (bad input, I/O, storage, vault unreachable).
pub const ERROR: u8 = 1;
/// Done, but some files could not be backed up or restored (listed).
pub const PARTIAL: u8 = 3;
/// Wrong key or password.
pub const WRONG_KEY: u8 = 4;
/// No repository at the location.
pub const NO_REPO: u8 = 5;
/// The repository is damaged.
pub const DAMAGED: u8 = 6;
/// The vault destroyed the key after too many wrong guesses.
pub const LOCKED: u8 = 7;
/// Another run holds the repository's lock.
pub const BUSY: u8 = 8;
/// The storage served an older state than this device (or the vault) has seen.
pub const ROLLED_BACK: u8 = 9;

/// A key given by the user that does not work for what it was given for (a WhatsApp crypt15
/// backup): exit code [`WRONG_KEY`].
#[derive(Debug)]
pub struct WrongKey(pub String);

impl std::fmt::Display for WrongKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for WrongKey {}

/// The exit code of a failed run: the outermost typed error in `e`'s chain decides, an error of
/// no known type is [`ERROR`].
pub fn code(e: &anyhow::Error) -> u8 {
    e.chain().find_map(typed_code).unwrap_or(ERROR)
}

/// The code of one error of the chain, if it is of a type that carries one.
fn typed_code(e: &(dyn std::error::Error + 'static)) -> Option<u8> {
    if let Some(d) = e.downcast_ref::<DeviceError>() {
        return Some(device_code(d));
    }
    if let Some(r) = e.downcast_ref::<RepoError>() {
        return Some(repo_code(r));
    }
    if let Some(c) = e.downcast_ref::<ClientError>() {
        return Some(match c {
            ClientError::Repo(r) => repo_code(r),
            ClientError::Vault(v) => vault_code(v),
            ClientError::NotConfigured(_) => NO_REPO,
            _ => ERROR,
        });
    }
    if let Some(v) = e.downcast_ref::<VaultError>() {
        return Some(vault_code(v));
    }
    e.is::<WrongKey>().then_some(WRONG_KEY)
}

/// The table: one code per kind of [`DeviceError`].
fn device_code(e: &DeviceError) -> u8 {
    match e {
        DeviceError::WrongKey { .. } | DeviceError::WrongPassword { .. } => WRONG_KEY,
        DeviceError::NoRepository { .. } => NO_REPO,
        DeviceError::Damaged { .. } => DAMAGED,
        DeviceError::Locked => LOCKED,
        DeviceError::Busy { .. } => BUSY,
        DeviceError::RolledBack { .. } => ROLLED_BACK,
        _ => ERROR,
    }
}

/// An engine error's code: that of the [`DeviceError`] kind it becomes (wrong key, no
/// repository, damaged, busy; anything else is [`ERROR`]).
fn repo_code(e: &RepoError) -> u8 {
    match e {
        RepoError::WrongKey { .. } => WRONG_KEY,
        RepoError::NotFound { .. } => NO_REPO,
        RepoError::Corrupted { .. } => DAMAGED,
        RepoError::Locked(_) => BUSY,
        _ => ERROR,
    }
}

/// A vault client error's code: that of the [`DeviceError`] kind it becomes (wrong password,
/// locked; anything else is [`ERROR`]).
fn vault_code(e: &VaultError) -> u8 {
    match e {
        VaultError::WrongPassword { .. } => WRONG_KEY,
        VaultError::Locked => LOCKED,
        _ => ERROR,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_follow_the_typed_error_through_context() {
        let e =
            anyhow::Error::from(RepoError::Locked("backup by phone-a".into())).context("opening");
        assert_eq!(code(&e), BUSY);
        let e = anyhow::Error::from(ClientError::Vault(VaultError::Locked));
        assert_eq!(code(&e), LOCKED);
        let e = anyhow::Error::from(DeviceError::RolledBack {
            message: "older".into(),
        });
        assert_eq!(code(&e), ROLLED_BACK);
        assert_eq!(code(&anyhow::Error::from(WrongKey("no".into()))), WRONG_KEY);
        assert_eq!(code(&anyhow::anyhow!("plain")), ERROR);
    }
}
