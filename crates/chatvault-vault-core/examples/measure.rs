//! Measures the protocol's costs on this machine: server KE2 (CPU, no I/O) and the client's
//! Argon2id with the production parameters. `cargo run --release -p chatvault-vault-core --example measure`
#![allow(clippy::unwrap_used)] // tests and examples may unwrap; library and binary code may not
use std::time::Instant;

use chatvault_vault_core::*;

fn main() -> Result<()> {
    let mut rng = rand::rngs::OsRng;
    let vault = Vault::new(VaultKeys::generate(&mut rng), VaultConfig::default());
    let pinned = vault.server_identity();
    let account = AccountId::new("alice")?;
    let pw = b"correct horse battery staple";
    let t = Instant::now();
    let (reg, request) = RegistrationClient::start(&mut rng, &account, pw)?;
    let started = vault.register_start(&mut rng, 0, &account, &request)?;
    let out = reg.finish(
        &mut rng,
        pw,
        RegistrationAnswer {
            response: &started.response,
            ticket: &started.ticket,
            signature: &started.signature,
            server_identity: started.server_identity,
        },
        &BackupKey::from_bytes([1; 32]),
        KsfParams::PRODUCTION,
        Some(&pinned),
    )?;
    println!(
        "client registration with production Argon2id (64 MiB, t=3, p=1): {:?}",
        t.elapsed()
    );
    let new = vault.register_finish(
        &mut rng,
        0,
        &account,
        &AccountState::NoRecord { generation: 0 },
        RegistrationFinish {
            ticket: &started.ticket,
            upload: &out.upload,
            wrapped_key: out.wrapped_key.as_bytes(),
            ksf: KsfParams::PRODUCTION,
            proof: None,
            binding: None,
        },
        10,
    )?;
    let record = vault.open_record(&account, new.generation, &new.sealed, &new.counter)?;
    let counted = new.counter.count_guess().expect("fresh");
    let (_, ke1) = RecoveryClient::start(&mut rng, &account, pw)?;
    let n = 2000;
    let t = Instant::now();
    for _ in 0..n {
        let _ = vault.recover_start(&mut rng, 0, &account, Some((&record, &counted)), &ke1, 10)?;
    }
    println!(
        "server KE2 incl. state sealing (real record): {:?} each",
        t.elapsed() / n
    );
    let t = Instant::now();
    for _ in 0..n {
        let _ = vault.recover_start(&mut rng, 0, &account, None, &ke1, 10)?;
    }
    println!(
        "server KE2 dummy (unknown account): {:?} each",
        t.elapsed() / n
    );
    let (rc, ke1) = RecoveryClient::start(&mut rng, &account, pw)?;
    let s = vault.recover_start(&mut rng, 0, &account, Some((&record, &counted)), &ke1, 10)?;
    let t = Instant::now();
    let (ke3, _) = rc.finish(
        &mut rng,
        pw,
        &s.ke2,
        Ke2Params {
            ksf: s.ksf,
            suite: SUITE_ID,
            record_version: RECORD_VERSION,
            server_identity: s.server_identity,
        },
        &pinned,
    )?;
    println!(
        "client KE2 processing with production Argon2id: {:?}",
        t.elapsed()
    );
    let t = Instant::now();
    let login = vault.open_login_state(0, &account, &s.state)?;
    login.finish(&account, &ke3)?;
    println!("server KE3 verification: {:?}", t.elapsed());
    Ok(())
}
