//! Registers a throwaway backup key for one account on a running vault and stores a rollback
//! commitment, so that scripts (scripts/ci-schemathesis.sh) can exercise the API on a live record.
//!
//! ```sh
//! CHATVAULT_ACCOUNT_TOKEN=$(chatvault-vault token --account fuzz --data-dir DIR) \
//!   cargo run -p chatvault-vault-client --example register -- http://127.0.0.1:8700 fuzz
//! ```
//!
//! Uses cheap test Argon2 parameters and a fixed password: never for real accounts.
#![allow(clippy::unwrap_used)] // tests and examples may unwrap; library and binary code may not

use chatvault_vault_client::{KsfParams, SecretString, VaultClient};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(url), Some(account)) = (args.next(), args.next()) else {
        return Err("usage: register VAULT_URL ACCOUNT (token in CHATVAULT_ACCOUNT_TOKEN)".into());
    };
    let token = std::env::var("CHATVAULT_ACCOUNT_TOKEN")
        .map_err(|_| "set CHATVAULT_ACCOUNT_TOKEN to an account token")?;
    let client = VaultClient::new(&url, &account, SecretString::from(token))?
        .with_registration_ksf(KsfParams::INSECURE_FOR_TESTS)?;
    let identity = client.register(&SecretString::from("test password"), &[0x42; 32])?;
    client.put_commitment(1, b"test commitment")?;
    println!(
        "registered {account}; server identity (hex) {}",
        hex(identity.as_bytes())
    );
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
