//! Fuzz harnesses for the decoders of `chatvault-vault-core`, one function per fuzz target.
//!
//! This file is the single source of truth for what each fuzz target does: the libFuzzer
//! targets in `fuzz/fuzz_targets/` include it (via `#[path]` in `fuzz/src/lib.rs`) and call
//! these functions, and `tests/fuzz_regressions.rs` replays every saved input in
//! `tests/fuzz_regressions/<target>/` through the same function. A harness must never panic
//! except through its own `assert!`s, which check invariants the server relies on.
//!
//! Every harness runs against one deterministic [`Fixture`]: a vault with keys from a fixed RNG,
//! the clock fixed at [`FUZZ_NOW`], and one real registration and one real login of
//! [`FUZZ_ACCOUNT`] made with the client of this crate. So the seeds (real messages, tickets,
//! states, proofs and records, written by `fuzz/examples/seed_corpus.rs`) stay valid forever and
//! the fuzzer reaches the code behind the AEAD checks.
//!
//! Sealed blobs are opened with keys only the vault holds, so harnesses that take a *mode* byte
//! first can also seal the fuzz bytes themselves (XChaCha20-Poly1305 with the AD layout of
//! PROTOCOL.md §5, §7 and the key bytes from `VaultKeys::to_bytes`), the way the vault would, to
//! reach the plaintext parsers. Only public API of `chatvault-vault-core` is used.

#![allow(dead_code)]

use std::sync::OnceLock;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use chatvault_vault_core::api::{self, b64_decode, b64_encode, b64std_decode, b64std_encode};
use chatvault_vault_core::{
    AccountId, AccountState, BINDING_LEN, BLOB_VERSION, BackupKey, CommitmentDecision, Error,
    GuessCounter, Ke2Params, Key32, KsfParams, MAX_COMMITMENT_LEN, MAX_COMMITMENT_SEQ,
    MIN_COMMITMENT_SEQ, PASSWORD_FILE_LEN, ProofBinding, RECORD_PLAINTEXT_LEN, RECORD_VERSION,
    Record, RecoveryClient, RegistrationAnswer, RegistrationClient, RegistrationFinish,
    SEALED_RECORD_LEN, SUITE_ID, ServerIdentity, Vault, VaultConfig, VaultKeys, WRAPPED_KEY_LEN,
    decide_commitment, labels, registration_transcript, validate_commitment, verify_signature,
};

pub use chatvault_fuzz_support::{FixedRng, Harness};

/// The clock of every harness (2026-01-01T00:00:00Z).
pub const FUZZ_NOW: u64 = 1_767_225_600;
/// The account of the fixture.
pub const FUZZ_ACCOUNT: &str = "alice";
/// The fixture's password (test data).
pub const FUZZ_PASSWORD: &[u8] = b"correct horse battery staple";
/// The backup key the fixture registers (test data).
pub const FUZZ_BACKUP_KEY: [u8; 32] = [0x42; 32];
/// The guess limit of the fixture's record.
pub const FUZZ_MAX_ATTEMPTS: u32 = 10;
/// Seed of the RNG the fixture's vault keys are generated with.
const KEYS_SEED: u64 = 0x0076_6175_6c74;

/// One real registration and login of [`FUZZ_ACCOUNT`] against a vault with fixed keys, at
/// [`FUZZ_NOW`]. Every field is the real output of the protocol step that makes it.
pub struct Fixture {
    pub vault: Vault,
    pub account: AccountId,
    /// `record_key`, `state_key` (from `VaultKeys::to_bytes`).
    pub record_key: [u8; 32],
    pub state_key: [u8; 32],
    pub identity: ServerIdentity,
    /// `register/start` → `register/finish` of the first registration.
    pub registration_request: Vec<u8>,
    pub registration_response: Vec<u8>,
    pub ticket: Vec<u8>,
    /// The vault's signature of that registration transcript.
    pub signature: Vec<u8>,
    pub upload: Vec<u8>,
    pub wrapped_key: Vec<u8>,
    /// The registered record (generation 1) and its counter after one counted guess.
    pub generation: u64,
    pub sealed_record: Vec<u8>,
    pub counter: GuessCounter,
    /// `recover/start` → `recover/finish` of a login with the right password.
    pub ke1: Vec<u8>,
    pub ke2: Vec<u8>,
    pub login_state: Vec<u8>,
    pub ke3: Vec<u8>,
    /// The proof issued after that login, the release that carried it, and the login's binding.
    pub proof: Vec<u8>,
    pub release: Vec<u8>,
    pub binding: ProofBinding,
    /// A dummy login state (unknown account path).
    pub dummy_state: Vec<u8>,
}

fn client_rng() -> FixedRng {
    FixedRng(11)
}

fn vault_keys() -> VaultKeys {
    VaultKeys::generate(&mut FixedRng(KEYS_SEED))
}

/// The fixture (built once per process).
pub fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(build_fixture)
}

fn build_fixture() -> Fixture {
    let keys = vault_keys();
    let key_bytes = keys.to_bytes();
    let record_key: [u8; 32] = key_bytes[128..160].try_into().unwrap();
    let state_key: [u8; 32] = key_bytes[160..192].try_into().unwrap();
    let vault = Vault::new(keys, VaultConfig::default());
    let identity = vault.server_identity();
    let account = AccountId::new(FUZZ_ACCOUNT).unwrap();
    let mut rng = FixedRng(3);
    let (reg, registration_request) =
        RegistrationClient::start(&mut client_rng(), &account, FUZZ_PASSWORD).unwrap();
    let started = vault
        .register_start(&mut rng, FUZZ_NOW, &account, &registration_request)
        .unwrap();
    let out = reg
        .finish(
            &mut client_rng(),
            FUZZ_PASSWORD,
            RegistrationAnswer {
                response: &started.response,
                ticket: &started.ticket,
                signature: &started.signature,
                server_identity: started.server_identity,
            },
            &BackupKey::from_bytes(FUZZ_BACKUP_KEY),
            KsfParams::INSECURE_FOR_TESTS,
            Some(&identity),
        )
        .unwrap();
    let new = vault
        .register_finish(
            &mut rng,
            FUZZ_NOW,
            &account,
            &AccountState::NoRecord { generation: 0 },
            RegistrationFinish {
                ticket: &started.ticket,
                upload: &out.upload,
                wrapped_key: out.wrapped_key.as_bytes(),
                ksf: KsfParams::INSECURE_FOR_TESTS,
                proof: None,
                binding: None,
            },
            FUZZ_MAX_ATTEMPTS,
        )
        .unwrap();
    let counter = new.counter.count_guess().unwrap();
    let record = vault
        .open_record(&account, new.generation, &new.sealed, &counter)
        .unwrap();
    let (client, ke1) = RecoveryClient::start(&mut client_rng(), &account, FUZZ_PASSWORD).unwrap();
    let rs = vault
        .recover_start(
            &mut rng,
            FUZZ_NOW,
            &account,
            Some((&record, &counter)),
            &ke1,
            FUZZ_MAX_ATTEMPTS,
        )
        .unwrap();
    let (ke3, unwrapper) = client
        .finish(
            &mut client_rng(),
            FUZZ_PASSWORD,
            &rs.ke2,
            ke2_params(rs.ksf, identity),
            &identity,
        )
        .unwrap();
    let session = vault
        .open_login_state(FUZZ_NOW, &account, &rs.state)
        .unwrap()
        .finish(&account, &ke3)
        .unwrap();
    let (proof, _) = vault.issue_proof(&mut rng, FUZZ_NOW, &account, new.generation, &session);
    let release = vault.seal_release(&mut rng, &account, &session, &record.wrapped_key, &proof);
    let released = unwrapper.open_release(&release).unwrap();
    assert_eq!(*released.backup_key.expose_secret(), FUZZ_BACKUP_KEY);
    assert_eq!(released.proof, proof);
    let dummy = vault
        .recover_start(&mut rng, FUZZ_NOW, &account, None, &ke1, FUZZ_MAX_ATTEMPTS)
        .unwrap();
    Fixture {
        record_key,
        state_key,
        identity,
        registration_request,
        registration_response: started.response,
        ticket: started.ticket,
        signature: started.signature.to_vec(),
        upload: out.upload,
        wrapped_key: out.wrapped_key.as_bytes().to_vec(),
        generation: new.generation,
        sealed_record: new.sealed,
        counter,
        ke1,
        ke2: rs.ke2,
        login_state: rs.state,
        ke3,
        proof,
        release,
        binding: released.binding,
        dummy_state: dummy.state,
        vault,
        account,
    }
}

fn ke2_params(ksf: KsfParams, server_identity: ServerIdentity) -> Ke2Params {
    Ke2Params {
        ksf,
        suite: SUITE_ID,
        record_version: RECORD_VERSION,
        server_identity,
    }
}

impl Fixture {
    /// The account's row: the registered record with the counter after one counted guess.
    pub fn registered(&self) -> AccountState {
        AccountState::Registered {
            generation: self.generation,
            sealed: self.sealed_record.clone(),
            counter: self.counter,
        }
    }

    /// The opened fixture record.
    pub fn record(&self) -> Record {
        self.vault
            .open_record(
                &self.account,
                self.generation,
                &self.sealed_record,
                &self.counter,
            )
            .unwrap()
    }
}

fn split_mode(data: &[u8]) -> Option<(u8, &[u8])> {
    data.split_first().map(|(m, rest)| (*m, rest))
}

/// All targets by name, for the regression runner and the fuzz crate.
pub const TARGETS: &[Harness] = &[
    ("vault_request", vault_request),
    ("vault_record", vault_record),
    ("vault_login_state", vault_login_state),
    ("vault_opaque", vault_opaque),
    ("vault_values", vault_values),
];

// ---------------------------------------------------------------------------------------------
// sealing like the vault does (PROTOCOL.md §1, §5, §7)

/// `label || u16(version) || lp(account) || extra`.
pub fn ad(label: &[u8], version: u16, account: &AccountId, extra: &[u8]) -> Vec<u8> {
    let mut out = label.to_vec();
    out.extend_from_slice(&version.to_be_bytes());
    out.extend_from_slice(&(account.as_bytes().len() as u16).to_be_bytes());
    out.extend_from_slice(account.as_bytes());
    out.extend_from_slice(extra);
    out
}

/// `u16(version) || nonce || XChaCha20-Poly1305(key, nonce, ad, plaintext)` with a fixed nonce.
pub fn seal(key: &[u8; 32], version: u16, ad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let nonce = [0x24u8; 24];
    let ct = XChaCha20Poly1305::new(key.into())
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad: ad,
            },
        )
        .unwrap();
    let mut out = version.to_be_bytes().to_vec();
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    out
}

/// Opens what [`seal`] made (to get the plaintext of real blobs for the seeds).
pub fn open(key: &[u8; 32], ad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
    if sealed.len() < 2 + 24 + 16 {
        return None;
    }
    XChaCha20Poly1305::new(key.into())
        .decrypt(
            XNonce::from_slice(&sealed[2..26]),
            Payload {
                msg: &sealed[26..],
                aad: ad,
            },
        )
        .ok()
}

/// The AD of the record of [`FUZZ_ACCOUNT`] at `generation`.
pub fn record_ad(generation: u64) -> Vec<u8> {
    ad(
        labels::RECORD_AD,
        RECORD_VERSION,
        &fixture().account,
        &generation.to_be_bytes(),
    )
}

/// The AD of login states of [`FUZZ_ACCOUNT`].
pub fn login_state_ad() -> Vec<u8> {
    ad(
        labels::LOGIN_STATE_AD,
        BLOB_VERSION,
        &fixture().account,
        &[],
    )
}

// ---------------------------------------------------------------------------------------------
// vault_request: the JSON bodies of the HTTP API, converted and handled as the server does

/// Mirror of `chatvault-vault`'s private `http::decode`: strict base64url, then an exact length.
fn decode(field: &str, what: &'static str, len: Option<usize>) -> Option<Vec<u8>> {
    let bytes = b64_decode(field, what).ok()?;
    if len.is_some_and(|len| bytes.len() != len) {
        return None;
    }
    // The strict decoder must round trip.
    assert_eq!(
        b64_encode(&bytes),
        field,
        "{what}: non-canonical base64url accepted"
    );
    Some(bytes)
}

/// Request kinds of `vault_request` (the mode byte, modulo this count).
pub const REQUEST_KINDS: [&str; 6] = [
    "register/start",
    "register/finish",
    "recover/start",
    "recover/finish",
    "delete",
    "PUT commitment",
];

/// `vault_request`: `kind ‖ JSON body` (kind = mode byte modulo 6, see [`REQUEST_KINDS`]). The body is deserialized into the `api::*` request type
/// of that endpoint with `serde_json` (what axum's `Json` extractor does), its fields are
/// decoded and length-checked as in `chatvault-vault`'s handlers, and the core step runs at
/// [`FUZZ_NOW`] against the fixture's registered account (and, where it matters, against an
/// account without a record). Invariants: a step that succeeds returns what the protocol says,
/// and sealed inputs (ticket, state, proof) are only accepted if they are the real ones.
pub fn vault_request(data: &[u8]) {
    let Some((mode, body)) = split_mode(data) else {
        return;
    };
    let f = fixture();
    let mut rng = FixedRng(5);
    match mode % REQUEST_KINDS.len() as u8 {
        0 => {
            let Ok(req) = serde_json::from_slice::<api::RegisterStartRequest>(body) else {
                return;
            };
            let Some(request) = decode(&req.request, "request", Some(32)) else {
                return;
            };
            if let Ok(started) = f
                .vault
                .register_start(&mut rng, FUZZ_NOW, &f.account, &request)
            {
                assert_eq!(started.response.len(), 64);
            }
        }
        1 => {
            let Ok(req) = serde_json::from_slice::<api::RegisterFinishRequest>(body) else {
                return;
            };
            let (Some(ticket), Some(upload), Some(wrapped)) = (
                decode(&req.ticket, "ticket", None),
                decode(&req.upload, "upload", Some(192)),
                decode(&req.wrapped_key, "wrapped_key", Some(WRAPPED_KEY_LEN)),
            ) else {
                return;
            };
            let proof = match req.proof.as_deref() {
                Some(p) => match decode(p, "proof", None) {
                    Some(p) => Some(p),
                    None => return,
                },
                None => None,
            };
            let binding = match req.binding.as_deref() {
                Some(b) => match decode(b, "binding", Some(BINDING_LEN)) {
                    Some(b) => Some(b),
                    None => return,
                },
                None => None,
            };
            for state in [f.registered(), AccountState::NoRecord { generation: 7 }] {
                let input = RegistrationFinish {
                    ticket: &ticket,
                    upload: &upload,
                    wrapped_key: &wrapped,
                    ksf: req.ksf,
                    proof: proof.as_deref(),
                    binding: binding.as_deref(),
                };
                let Ok(new) = f.vault.register_finish(
                    &mut rng,
                    FUZZ_NOW,
                    &f.account,
                    &state,
                    input,
                    FUZZ_MAX_ATTEMPTS,
                ) else {
                    continue;
                };
                assert_eq!(ticket, f.ticket, "forged registration ticket accepted");
                if matches!(state, AccountState::Registered { .. }) {
                    assert_eq!(
                        proof.as_deref(),
                        Some(&f.proof[..]),
                        "forged proof accepted"
                    );
                    let expected = f
                        .binding
                        .reregistration_mac(&f.account, &ticket, &upload, &wrapped, &req.ksf);
                    assert_eq!(
                        binding.as_deref(),
                        Some(&expected[..]),
                        "forged binding accepted"
                    );
                }
                check_new_record(&new, &state, req.ksf, &wrapped);
            }
        }
        2 => {
            let Ok(req) = serde_json::from_slice::<api::RecoverStartRequest>(body) else {
                return;
            };
            let Some(ke1) = decode(&req.ke1, "ke1", Some(96)) else {
                return;
            };
            check_ke1(&ke1);
        }
        3 => {
            let Ok(req) = serde_json::from_slice::<api::RecoverFinishRequest>(body) else {
                return;
            };
            let (Some(state), Some(ke3)) = (
                decode(&req.state, "state", None),
                decode(&req.ke3, "ke3", Some(64)),
            ) else {
                return;
            };
            let Ok(login) = f.vault.open_login_state(FUZZ_NOW, &f.account, &state) else {
                return;
            };
            assert!(
                state == f.login_state || state == f.dummy_state,
                "forged login state accepted"
            );
            assert!(login.expires_at > FUZZ_NOW);
            if login.finish(&f.account, &ke3).is_ok() {
                assert_eq!(state, f.login_state, "dummy state verified");
                assert_eq!(ke3, f.ke3, "forged KE3 accepted");
            }
        }
        4 => {
            let Ok(req) = serde_json::from_slice::<api::DeleteRequest>(body) else {
                return;
            };
            let Some(proof) = decode(&req.proof, "proof", None) else {
                return;
            };
            for generation in [f.generation, f.generation + 1] {
                if f.vault
                    .check_proof(FUZZ_NOW, &f.account, &proof, generation)
                    .is_ok()
                {
                    assert_eq!(proof, f.proof, "forged proof accepted");
                    assert_eq!(generation, f.generation, "stale proof accepted");
                }
            }
        }
        _ => {
            let Ok(req) = serde_json::from_slice::<api::PutCommitmentRequest>(body) else {
                return;
            };
            // The server refuses longer text before decoding.
            if req.commitment.len() > MAX_COMMITMENT_LEN.div_ceil(3) * 4 {
                return;
            }
            let Ok(blob) = b64std_decode(&req.commitment, "commitment") else {
                return;
            };
            assert_eq!(b64std_encode(&blob), req.commitment, "non-canonical base64");
            if validate_commitment(req.seq, &blob).is_err() {
                return;
            }
            assert!((1..=MAX_COMMITMENT_LEN).contains(&blob.len()));
            assert!((MIN_COMMITMENT_SEQ..=MAX_COMMITMENT_SEQ).contains(&req.seq));
            let stored =
                req.seq.wrapping_add(u64::from(body.len() as u8)) % (MAX_COMMITMENT_SEQ + 1);
            for stored in [None, Some(stored)] {
                let stale = stored.is_some_and(|s| s >= req.seq);
                assert_eq!(
                    decide_commitment(stored, req.seq),
                    if stale {
                        CommitmentDecision::Stale {
                            current_seq: stored.unwrap(),
                        }
                    } else {
                        CommitmentDecision::Store
                    }
                );
            }
        }
    }
}

/// A record `register/finish` built must open, carry what was sent, and serve a login (the
/// server stores it and later runs `recover/start` on it: a record that cannot be used would
/// lock the account out for good).
fn check_new_record(
    new: &chatvault_vault_core::NewRecord,
    state: &AccountState,
    ksf: KsfParams,
    wrapped: &[u8],
) {
    let f = fixture();
    assert_eq!(new.expected_generation, state.generation());
    assert_eq!(new.generation, state.generation() + 1);
    assert_eq!(new.sealed.len(), SEALED_RECORD_LEN);
    let record = f
        .vault
        .open_record(&f.account, new.generation, &new.sealed, &new.counter)
        .expect("a new record opens");
    assert_eq!(record.ksf, ksf);
    assert!(ksf.validate().is_ok());
    assert_eq!(&record.wrapped_key.as_bytes()[..], wrapped);
    let counted = new.counter.count_guess().expect("a fresh counter counts");
    f.vault
        .recover_start(
            &mut FixedRng(6),
            FUZZ_NOW,
            &f.account,
            Some((&record, &counted)),
            &f.ke1,
            FUZZ_MAX_ATTEMPTS,
        )
        .expect("recover/start works on a record register/finish accepted");
}

/// `recover/start`: the server counts a guess after `validate_ke1` and before `recover_start`,
/// so a KE1 that validates must never make `recover_start` fail (the guess would be lost).
fn check_ke1(ke1: &[u8]) {
    let f = fixture();
    if Vault::validate_ke1(ke1).is_err() {
        return;
    }
    let record = f.record();
    let mut rng = FixedRng(7);
    for counted in [Some((&record, &f.counter)), None] {
        let started = f
            .vault
            .recover_start(
                &mut rng,
                FUZZ_NOW,
                &f.account,
                counted,
                ke1,
                FUZZ_MAX_ATTEMPTS,
            )
            .expect("recover_start fails on a KE1 that validate_ke1 accepted");
        assert_eq!(started.ke2.len(), 320);
        let login = f
            .vault
            .open_login_state(FUZZ_NOW, &f.account, &started.state)
            .expect("a fresh login state opens");
        assert_eq!(login.expires_at, FUZZ_NOW + f.vault.config().state_ttl);
    }
}

// ---------------------------------------------------------------------------------------------
// vault_record

/// The plaintext layout of a record (PROTOCOL.md §5), as `Record::seal` writes it.
pub fn record_plaintext(r: &Record) -> Vec<u8> {
    let mut pt = Vec::with_capacity(RECORD_PLAINTEXT_LEN);
    pt.extend_from_slice(&SUITE_ID.to_be_bytes());
    pt.extend_from_slice(&r.generation.to_be_bytes());
    pt.extend_from_slice(&r.created_at.to_be_bytes());
    pt.extend_from_slice(&r.max_attempts.to_be_bytes());
    pt.extend_from_slice(&r.ksf.m_kib.to_be_bytes());
    pt.extend_from_slice(&r.ksf.t.to_be_bytes());
    pt.extend_from_slice(&r.ksf.p.to_be_bytes());
    pt.extend_from_slice(&r.credential_nonce);
    pt.extend_from_slice(&r.password_file[..]);
    pt.extend_from_slice(r.wrapped_key.as_bytes());
    pt.resize(RECORD_PLAINTEXT_LEN, 0);
    pt
}

/// `vault_record`: the stored record (`Record::open` through `Vault::open_record`, as the server
/// calls it on every `recover/start` and `recover/finish`).
///
/// - mode 0: the bytes are the stored (sealed) record of the fixture account at generation 1;
/// - mode 1: the bytes are a record plaintext, sealed with the vault's record key for generation
///   1 (short or long plaintexts are sealed as they are);
/// - mode 2: `u64be generation ‖ max_attempts u32be ‖ plaintext`, sealed for that generation.
///
/// A record that opens is then used like the server does: `recover_start` with the fixture's
/// KE1 (which parses the stored OPAQUE password file) and `Record::seal`/`open` round trip.
pub fn vault_record(data: &[u8]) {
    let Some((mode, rest)) = split_mode(data) else {
        return;
    };
    let f = fixture();
    let (generation, max_attempts, sealed) = match mode {
        0 => (f.generation, f.counter.max_attempts, rest.to_vec()),
        1 => (
            f.generation,
            f.counter.max_attempts,
            seal(
                &f.record_key,
                RECORD_VERSION,
                &record_ad(f.generation),
                rest,
            ),
        ),
        2 => {
            if rest.len() < 12 {
                return;
            }
            let generation = u64::from_be_bytes(rest[..8].try_into().unwrap());
            let max_attempts = u32::from_be_bytes(rest[8..12].try_into().unwrap());
            (
                generation,
                max_attempts,
                seal(
                    &f.record_key,
                    RECORD_VERSION,
                    &record_ad(generation),
                    &rest[12..],
                ),
            )
        }
        _ => return,
    };
    let counter = GuessCounter {
        max_attempts,
        ..f.counter
    };
    let direct = Record::open(
        &sealed,
        &Key32::from_bytes(f.record_key),
        &f.account,
        generation,
    );
    let Ok(record) = f
        .vault
        .open_record(&f.account, generation, &sealed, &counter)
    else {
        if let Ok(r) = direct {
            assert_ne!(
                r.max_attempts, max_attempts,
                "open_record rejected a good record"
            );
        }
        return;
    };
    let direct = direct.expect("Record::open agrees with open_record");
    assert_eq!(sealed.len(), SEALED_RECORD_LEN);
    assert_eq!(record.generation, generation);
    assert_eq!(record.max_attempts, max_attempts);
    let pt = record_plaintext(&record);
    assert_eq!(pt, record_plaintext(&direct));
    if mode == 1 {
        assert_eq!(
            pt, rest,
            "record opened but does not re-encode to its plaintext"
        );
    }
    // Round trip through the real sealer.
    let resealed = record.seal(
        &mut FixedRng(8),
        &Key32::from_bytes(f.record_key),
        &f.account,
    );
    let again = Record::open(
        &resealed,
        &Key32::from_bytes(f.record_key),
        &f.account,
        generation,
    )
    .expect("a resealed record opens");
    assert_eq!(record_plaintext(&again), pt);
    // What recover/start does with it (a guess was counted first).
    let Ok(counted) = counter.count_guess() else {
        return;
    };
    let _ = f.vault.recover_start(
        &mut FixedRng(9),
        FUZZ_NOW,
        &f.account,
        Some((&record, &counted)),
        &f.ke1,
        FUZZ_MAX_ATTEMPTS,
    );
}

// ---------------------------------------------------------------------------------------------
// vault_login_state

/// Login state plaintext: `kind u8 ‖ generation u64 ‖ guess_seq u64 ‖ expires u64 ‖ ServerLogin`.
pub const LOGIN_STATE_PT_LEN: usize = 1 + 8 + 8 + 8 + 128;

/// `vault_login_state`: the sealed KE2→KE3 login state `recover/finish` echoes back
/// (`Vault::open_login_state`, then `LoginState::finish`).
///
/// - mode 0: the bytes are the sealed state; KE3 is the fixture's;
/// - mode 1: the bytes are a state plaintext, sealed with the vault's state key; KE3 is the
///   fixture's;
/// - mode 2: `KE3[64] ‖ plaintext`, the plaintext sealed as in mode 1.
///
/// Invariants: an opened state has not expired; only a real (non-dummy) state verifies a KE3.
pub fn vault_login_state(data: &[u8]) {
    let Some((mode, rest)) = split_mode(data) else {
        return;
    };
    let f = fixture();
    let (blob, ke3, plaintext) = match mode {
        0 => (rest.to_vec(), &f.ke3[..], None),
        1 => (
            seal(&f.state_key, BLOB_VERSION, &login_state_ad(), rest),
            &f.ke3[..],
            Some(rest),
        ),
        2 => {
            if rest.len() < 64 {
                return;
            }
            let (ke3, pt) = rest.split_at(64);
            (
                seal(&f.state_key, BLOB_VERSION, &login_state_ad(), pt),
                ke3,
                Some(pt),
            )
        }
        _ => return,
    };
    let Ok(login) = f.vault.open_login_state(FUZZ_NOW, &f.account, &blob) else {
        return;
    };
    assert!(login.expires_at > FUZZ_NOW, "expired login state accepted");
    let generation = login.generation;
    if let Some(pt) = plaintext {
        assert_eq!(pt.len(), LOGIN_STATE_PT_LEN);
        assert_eq!(&pt[1..9], &generation.to_be_bytes());
    } else {
        assert!(blob == f.login_state || blob == f.dummy_state);
    }
    if login.finish(&f.account, ke3).is_ok() {
        let pt = match plaintext {
            Some(pt) => pt.to_vec(),
            None => open(&f.state_key, &login_state_ad(), &blob).unwrap(),
        };
        assert_eq!(pt[0], 1, "a dummy login state verified a KE3");
    }
}

// ---------------------------------------------------------------------------------------------
// vault_opaque: the OPAQUE message byte strings

/// `vault_opaque`: the byte strings of OPAQUE messages, as the server and the client get them
/// (after base64url decoding) and hand them to opaque-ke's deserializers. No length check is
/// made first: opaque-ke ignores bytes after a message (the server's exact-length checks in
/// `chatvault-vault` reject them), so the invariants only look at the message's own bytes.
///
/// - mode 0: KE1 (`recover/start`): `validate_ke1`, then `recover_start` against the real record
///   and as a dummy, which must then succeed (the guess is already counted);
/// - mode 1: KE3 (`recover/finish`): verified against the fixture's real and dummy login
///   states; only the real KE3 may verify;
/// - mode 2: `RegistrationRequest` (`register/start`);
/// - mode 3: `RegistrationUpload` (`register/finish`, with the fixture's valid ticket): a record
///   built from an accepted upload must serve `recover/start`;
/// - mode 4: KE2 as the client gets it (`RecoveryClient::finish` with the right password);
/// - mode 5: `RegistrationResponse` as the client gets it (`RegistrationClient::finish`);
/// - mode 6: the sealed release `recover/finish` returns (`Unwrapper::open_release` after a
///   real login): only the real release opens;
/// - mode 7: the registration signature (`verify_signature` over the fixture's transcript):
///   only the vault's own signature verifies.
pub fn vault_opaque(data: &[u8]) {
    let Some((mode, msg)) = split_mode(data) else {
        return;
    };
    let f = fixture();
    let mut rng = FixedRng(10);
    match mode {
        0 => check_ke1(msg),
        1 => {
            for state in [&f.login_state, &f.dummy_state] {
                let login = f
                    .vault
                    .open_login_state(FUZZ_NOW, &f.account, state)
                    .unwrap();
                if login.finish(&f.account, msg).is_ok() {
                    assert!(state == &f.login_state, "dummy state verified");
                    // opaque-ke ignores trailing bytes; the server's exact-length check
                    // (64 bytes) is what rejects them.
                    assert!(msg.starts_with(&f.ke3), "forged KE3 accepted");
                }
            }
        }
        2 => {
            if let Ok(started) = f.vault.register_start(&mut rng, FUZZ_NOW, &f.account, msg) {
                assert_eq!(started.response.len(), 64);
                assert!(msg.len() >= 32);
            }
        }
        3 => {
            let state = AccountState::NoRecord { generation: 0 };
            let input = RegistrationFinish {
                ticket: &f.ticket,
                upload: msg,
                wrapped_key: &f.wrapped_key,
                ksf: KsfParams::INSECURE_FOR_TESTS,
                proof: None,
                binding: None,
            };
            if let Ok(new) = f.vault.register_finish(
                &mut rng,
                FUZZ_NOW,
                &f.account,
                &state,
                input,
                FUZZ_MAX_ATTEMPTS,
            ) {
                assert!(msg.len() >= 192);
                check_new_record(&new, &state, KsfParams::INSECURE_FOR_TESTS, &f.wrapped_key);
            }
        }
        4 => {
            let (client, ke1) =
                RecoveryClient::start(&mut client_rng(), &f.account, FUZZ_PASSWORD).unwrap();
            assert_eq!(ke1, f.ke1);
            let record = f.record();
            if let Ok((ke3, unwrapper)) = client.finish(
                &mut client_rng(),
                FUZZ_PASSWORD,
                msg,
                ke2_params(KsfParams::INSECURE_FOR_TESTS, f.identity),
                &f.identity,
            ) {
                // Only the server that holds the record can answer so that the client accepts,
                // and then both sides share the session key.
                assert_eq!(ke3.len(), 64);
                let session = f
                    .vault
                    .open_login_state(FUZZ_NOW, &f.account, &f.login_state)
                    .unwrap()
                    .finish(&f.account, &ke3)
                    .expect("the KE3 of an accepted KE2 verifies");
                let release =
                    f.vault
                        .seal_release(&mut rng, &f.account, &session, &record.wrapped_key, b"p");
                let released = unwrapper
                    .open_release(&release)
                    .expect("an accepted KE2 gives the session and wrap keys");
                assert_eq!(*released.backup_key.expose_secret(), FUZZ_BACKUP_KEY);
            }
        }
        5 => {
            let (reg, request) =
                RegistrationClient::start(&mut client_rng(), &f.account, FUZZ_PASSWORD).unwrap();
            assert_eq!(request, f.registration_request);
            if let Ok(out) = reg.finish(
                &mut client_rng(),
                FUZZ_PASSWORD,
                RegistrationAnswer {
                    response: msg,
                    ticket: &f.ticket,
                    signature: &f.signature,
                    server_identity: f.identity,
                },
                &BackupKey::from_bytes(FUZZ_BACKUP_KEY),
                KsfParams::INSECURE_FOR_TESTS,
                Some(&f.identity),
            ) {
                assert_eq!(out.upload.len(), 192);
                assert!(out.server_identity.ct_matches(&f.identity));
                assert_eq!(
                    msg,
                    &f.registration_response[..],
                    "unsigned response accepted"
                );
            }
        }
        6 => {
            let (client, _) =
                RecoveryClient::start(&mut client_rng(), &f.account, FUZZ_PASSWORD).unwrap();
            let (_, unwrapper) = client
                .finish(
                    &mut client_rng(),
                    FUZZ_PASSWORD,
                    &f.ke2,
                    ke2_params(KsfParams::INSECURE_FOR_TESTS, f.identity),
                    &f.identity,
                )
                .unwrap();
            if let Ok(released) = unwrapper.open_release(msg) {
                assert_eq!(msg, &f.release[..], "forged release accepted");
                assert_eq!(*released.backup_key.expose_secret(), FUZZ_BACKUP_KEY);
                assert_eq!(released.proof, f.proof);
            }
        }
        7 => {
            let transcript = registration_transcript(
                &f.account,
                &f.registration_request,
                &f.registration_response,
                &f.ticket,
            );
            if verify_signature(&f.identity, &transcript, msg).is_ok() {
                assert_eq!(
                    msg,
                    &f.signature[..],
                    "forged registration signature accepted"
                );
            }
        }
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------------
// vault_values: small value parsers

/// `vault_values`: the small parsers.
///
/// - mode 0: `AccountId::new` (UTF-8 text; the `{account}` path segment);
/// - mode 1: `ServerIdentity::from_b64` (the pinned server key), round trip through `Display`;
/// - mode 2: `api::b64_decode`, round trip through `b64_encode`;
/// - mode 3: `VaultKeys::from_bytes` (the key file body), round trip through `to_bytes`;
/// - mode 4: `KsfParams` from JSON (a field of `register/finish`), `validate` against its
///   documented bounds.
pub fn vault_values(data: &[u8]) {
    let Some((mode, rest)) = split_mode(data) else {
        return;
    };
    match mode {
        0 => {
            let Ok(text) = std::str::from_utf8(rest) else {
                return;
            };
            match AccountId::new(text) {
                Ok(id) => {
                    assert_eq!(id.as_str(), text);
                    assert!((1..=128).contains(&text.len()));
                    assert!(
                        text.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"._~+@-".contains(&b))
                    );
                }
                Err(e) => assert_eq!(e, Error::InvalidAccountId),
            }
        }
        1 => {
            let Ok(text) = std::str::from_utf8(rest) else {
                return;
            };
            if let Ok(id) = ServerIdentity::from_b64(text) {
                let shown = id.to_string();
                assert_eq!(shown, text.trim());
                assert!(ServerIdentity::from_b64(&shown).unwrap().ct_matches(&id));
            }
        }
        2 => {
            let Ok(text) = std::str::from_utf8(rest) else {
                return;
            };
            if let Ok(bytes) = b64_decode(text, "field") {
                assert_eq!(b64_encode(&bytes), text);
            }
        }
        3 => {
            if let Ok(keys) = VaultKeys::from_bytes(rest) {
                assert_eq!(&keys.to_bytes()[..], rest);
                let again = VaultKeys::from_bytes(&keys.to_bytes()).unwrap();
                assert!(again.server_identity().ct_matches(&keys.server_identity()));
            }
        }
        4 => {
            if let Ok(ksf) = serde_json::from_slice::<KsfParams>(rest) {
                let ok = (1..=16).contains(&ksf.p)
                    && (1..=64).contains(&ksf.t)
                    && ksf.m_kib >= 8 * ksf.p
                    && ksf.m_kib <= 1 << 20;
                assert_eq!(ksf.validate().is_ok(), ok);
                assert_eq!(KsfParams::new(ksf.m_kib, ksf.t, ksf.p).is_ok(), ok);
            }
        }
        _ => {}
    }
}

/// Sizes the seeds and tests rely on.
pub const SIZES: (usize, usize) = (PASSWORD_FILE_LEN, SEALED_RECORD_LEN);
