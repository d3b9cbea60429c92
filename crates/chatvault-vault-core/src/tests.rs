//! Scenario tests: one per transition (`scenario_expected`), driving the pure steps through a tiny
//! in-memory model of the server's store that applies the counter transitions of
//! [`crate::counter`] exactly as the SQL stores do.

use std::collections::HashMap;

use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::*;

const PW: &[u8] = b"correct horse battery staple";
const KEY: [u8; 32] = [0x42; 32];
const T0: u64 = 1_700_000_000;

struct Model {
    rng: StdRng,
    vault: Vault,
    rows: HashMap<String, AccountState>,
    max_attempts: u32,
    now: u64,
}

/// A recovery proof and the binding key of the login that earned it.
struct Proof {
    proof: Vec<u8>,
    binding: ProofBinding,
}

struct Started {
    client: RecoveryClient,
    server: RecoverStarted,
}

fn answer(started: &RegistrationStarted) -> RegistrationAnswer<'_> {
    RegistrationAnswer {
        response: &started.response,
        ticket: &started.ticket,
        signature: &started.signature,
        server_identity: started.server_identity,
    }
}

impl Model {
    fn new() -> Self {
        let mut rng = StdRng::seed_from_u64(7);
        let vault = Vault::new(VaultKeys::generate(&mut rng), VaultConfig::default());
        Self {
            rng,
            vault,
            rows: HashMap::new(),
            max_attempts: 10,
            now: T0,
        }
    }

    fn state(&self, account: &AccountId) -> AccountState {
        self.rows
            .get(account.as_str())
            .cloned()
            .unwrap_or(AccountState::NoRecord { generation: 0 })
    }

    fn register(
        &mut self,
        account: &str,
        pw: &[u8],
        proof: Option<&Proof>,
    ) -> Result<ServerIdentity> {
        let account = AccountId::new(account)?;
        let (client, request) = RegistrationClient::start(&mut self.rng, &account, pw)?;
        let started = self
            .vault
            .register_start(&mut self.rng, self.now, &account, &request)?;
        let out = client.finish(
            &mut self.rng,
            pw,
            answer(&started),
            &BackupKey::from_bytes(KEY),
            KsfParams::INSECURE_FOR_TESTS,
            None,
        )?;
        let binding = proof.map(|p| {
            p.binding.reregistration_mac(
                &account,
                &started.ticket,
                &out.upload,
                out.wrapped_key.as_bytes(),
                &KsfParams::INSECURE_FOR_TESTS,
            )
        });
        let state = self.state(&account);
        let new = self.vault.register_finish(
            &mut self.rng,
            self.now,
            &account,
            &state,
            RegistrationFinish {
                ticket: &started.ticket,
                upload: &out.upload,
                wrapped_key: out.wrapped_key.as_bytes(),
                ksf: KsfParams::INSECURE_FOR_TESTS,
                proof: proof.map(|p| p.proof.as_slice()),
                binding: binding.as_ref().map(|b| b.as_slice()),
            },
            self.max_attempts,
        )?;
        assert_eq!(new.expected_generation, state.generation());
        self.rows.insert(
            account.as_str().to_owned(),
            AccountState::Registered {
                generation: new.generation,
                sealed: new.sealed,
                counter: new.counter,
            },
        );
        Ok(out.server_identity)
    }

    /// `recover/start` as the server does it (PROTOCOL.md §6.1).
    fn recover_start(&mut self, account: &str, pw: &[u8]) -> Result<Started> {
        let account = AccountId::new(account)?;
        let (client, ke1) = RecoveryClient::start(&mut self.rng, &account, pw)?;
        let server = self.server_start(&account, &ke1)?;
        Ok(Started { client, server })
    }

    fn server_start(&mut self, account: &AccountId, ke1: &[u8]) -> Result<RecoverStarted> {
        let st = self.state(account);
        match &st {
            AccountState::Destroyed { .. } => Err(Error::Locked),
            AccountState::NoRecord { .. } => self.vault.recover_start(
                &mut self.rng,
                self.now,
                account,
                None,
                ke1,
                self.max_attempts,
            ),
            &AccountState::Registered {
                generation,
                ref sealed,
                counter,
            } => {
                let record = self
                    .vault
                    .open_record(account, generation, sealed, &counter)?;
                match counter.count_guess() {
                    Ok(counted) => {
                        self.rows.insert(
                            account.as_str().to_owned(),
                            AccountState::Registered {
                                generation,
                                sealed: sealed.clone(),
                                counter: counted,
                            },
                        );
                        self.vault.recover_start(
                            &mut self.rng,
                            self.now,
                            account,
                            Some((&record, &counted)),
                            ke1,
                            self.max_attempts,
                        )
                    }
                    Err(Exhausted) => {
                        let destroyed = st.destroy_if_exhausted(self.now).expect("exhausted");
                        self.rows.insert(account.as_str().to_owned(), destroyed);
                        Err(Error::Locked)
                    }
                }
            }
        }
    }

    fn client_finish(
        &mut self,
        account: &str,
        started: Started,
        pw: &[u8],
        pinned: &ServerIdentity,
    ) -> Result<(Vec<u8>, Unwrapper, Vec<u8>)> {
        let _ = account;
        let params = Ke2Params {
            ksf: started.server.ksf,
            suite: SUITE_ID,
            record_version: RECORD_VERSION,
            server_identity: started.server.server_identity,
        };
        let (ke3, unwrapper) =
            started
                .client
                .finish(&mut self.rng, pw, &started.server.ke2, params, pinned)?;
        Ok((ke3, unwrapper, started.server.state))
    }

    /// `recover/finish` as the server does it (PROTOCOL.md §6.3).
    fn server_finish(&mut self, account: &str, state: &[u8], ke3: &[u8]) -> Result<Vec<u8>> {
        let account = AccountId::new(account)?;
        let login = self.vault.open_login_state(self.now, &account, state)?;
        let (generation, sealed, counter) = match self.state(&account) {
            AccountState::Destroyed { .. } => return Err(Error::Locked),
            AccountState::NoRecord { .. } => {
                login.finish(&account, ke3)?;
                return Err(Error::StaleState);
            }
            AccountState::Registered {
                generation,
                sealed,
                counter,
            } => (generation, sealed, counter),
        };
        if login.generation != generation {
            return Err(Error::StaleState);
        }
        let seq = login.guess_seq;
        let session = login.finish(&account, ke3)?;
        let next = counter
            .record_success(seq)
            .map_err(|Stale| Error::StaleState)?;
        let record = self
            .vault
            .open_record(&account, generation, &sealed, &counter)?;
        self.rows.insert(
            account.as_str().to_owned(),
            AccountState::Registered {
                generation,
                sealed,
                counter: next,
            },
        );
        let (proof, _) =
            self.vault
                .issue_proof(&mut self.rng, self.now, &account, generation, &session);
        Ok(self.vault.seal_release(
            &mut self.rng,
            &account,
            &session,
            &record.wrapped_key,
            &proof,
        ))
    }

    fn recover(
        &mut self,
        account: &str,
        pw: &[u8],
        pinned: &ServerIdentity,
    ) -> Result<(BackupKey, Proof)> {
        let started = self.recover_start(account, pw)?;
        let (ke3, unwrapper, state) = self.client_finish(account, started, pw, pinned)?;
        let release = self.server_finish(account, &state, &ke3)?;
        let r = unwrapper.open_release(&release)?;
        Ok((
            r.backup_key,
            Proof {
                proof: r.proof,
                binding: r.binding,
            },
        ))
    }

    fn counter(&self, account: &str) -> GuessCounter {
        match &self.rows[account] {
            AccountState::Registered { counter, .. } => *counter,
            other => panic!("not registered: {other:?}"),
        }
    }
}

#[test]
fn register_then_recover_releases_key() {
    let mut m = Model::new();
    let pinned = m.register("alice", PW, None).unwrap();
    assert!(pinned.ct_matches(&m.vault.server_identity()));
    let (key, _proof) = m.recover("alice", PW, &pinned).unwrap();
    assert_eq!(key.expose_secret(), &KEY);
    assert_eq!(m.counter("alice").attempts, 0);
}

#[test]
fn message_sizes_match_protocol() {
    let mut m = Model::new();
    m.register("alice", PW, None).unwrap();
    let s = m.recover_start("alice", PW).unwrap();
    assert_eq!(s.server.ke2.len(), 320);
    assert_eq!(s.server.state.len(), 195);
    let AccountState::Registered { sealed, .. } = &m.rows["alice"] else {
        panic!()
    };
    assert_eq!(sealed.len(), SEALED_RECORD_LEN);
    assert_eq!(SEALED_RECORD_LEN, 426);
    let account = AccountId::new("x").unwrap();
    let (_, ke1) = RecoveryClient::start(&mut m.rng, &account, PW).unwrap();
    assert_eq!(ke1.len(), 96);
}

#[test]
fn recover_wrong_password_counts_guess() {
    let mut m = Model::new();
    let pinned = m.register("alice", PW, None).unwrap();
    for expected_left in (7..10).rev() {
        let s = m.recover_start("alice", b"wrong").unwrap();
        assert_eq!(s.server.attempts_left, expected_left);
        let err = m
            .client_finish("alice", s, b"wrong", &pinned)
            .err()
            .unwrap();
        assert_eq!(err, Error::WrongPassword);
    }
    assert_eq!(m.counter("alice").attempts, 3);
    // A success resets the counter.
    m.recover("alice", PW, &pinned).unwrap();
    assert_eq!(m.counter("alice").attempts, 0);
}

#[test]
fn recover_limit_reached_destroys_record() {
    let mut m = Model::new();
    let pinned = m.register("alice", PW, None).unwrap();
    for i in 0..10 {
        let s = m.recover_start("alice", b"wrong").unwrap();
        assert_eq!(s.server.attempts_left, 9 - i);
        assert_eq!(
            m.client_finish("alice", s, b"wrong", &pinned).err(),
            Some(Error::WrongPassword)
        );
    }
    assert_eq!(
        m.recover_start("alice", b"wrong").err(),
        Some(Error::Locked)
    );
    assert!(matches!(m.rows["alice"], AccountState::Destroyed { .. }));
}

#[test]
fn recover_locked_stays_locked_with_right_password() {
    let mut m = Model::new();
    let pinned = m.register("alice", PW, None).unwrap();
    for _ in 0..11 {
        let _ = m.recover_start("alice", b"wrong");
    }
    for _ in 0..3 {
        assert_eq!(m.recover("alice", PW, &pinned).err(), Some(Error::Locked));
    }
}

#[test]
fn recover_last_guess_right_still_succeeds() {
    let mut m = Model::new();
    let pinned = m.register("alice", PW, None).unwrap();
    for _ in 0..9 {
        let _ = m.recover_start("alice", b"wrong").unwrap();
    }
    let (key, _) = m.recover("alice", PW, &pinned).unwrap();
    assert_eq!(key.expose_secret(), &KEY);
    assert_eq!(m.counter("alice").attempts, 0);
}

#[test]
fn recover_unknown_account_dummy_ke2_indistinguishable() {
    let mut m = Model::new();
    let pinned = m.register("alice", PW, None).unwrap();
    let real = m.recover_start("alice", b"guess").unwrap();
    let dummy = m.recover_start("nobody", b"guess").unwrap();
    assert_eq!(real.server.ke2.len(), dummy.server.ke2.len());
    assert_eq!(real.server.state.len(), dummy.server.state.len());
    assert_eq!(dummy.server.attempts_left, 9);
    assert_eq!(dummy.server.ksf, KsfParams::PRODUCTION);
    // The client cannot tell: both are "wrong password" (the dummy KE2 uses production Argon2,
    // so pass the cheap parameters to keep the test fast; the outcome does not depend on them).
    let mut params_dummy = dummy;
    params_dummy.server.ksf = KsfParams::INSECURE_FOR_TESTS;
    assert_eq!(
        m.client_finish("nobody", params_dummy, b"guess", &pinned)
            .err(),
        Some(Error::WrongPassword)
    );
    // Same KE1 twice → same OPRF evaluation for an unknown account (like a registered one).
    let account = AccountId::new("nobody").unwrap();
    let (_, ke1) = RecoveryClient::start(&mut m.rng, &account, b"guess").unwrap();
    let a = m.server_start(&account, &ke1).unwrap();
    let b = m.server_start(&account, &ke1).unwrap();
    assert_eq!(a.ke2[..32], b.ke2[..32]);
    assert_ne!(a.ke2, b.ke2);
    assert!(
        !m.rows.contains_key("nobody"),
        "unknown accounts leave no trace"
    );
}

#[test]
fn recover_finish_dummy_state_authentication_failed() {
    let mut m = Model::new();
    let s = m.recover_start("nobody", b"guess").unwrap();
    let err = m.server_finish("nobody", &s.server.state, &[0u8; 64]).err();
    assert_eq!(err, Some(Error::AuthenticationFailed));
}

#[test]
fn recover_finish_replayed_ke3_rejected() {
    let mut m = Model::new();
    let pinned = m.register("alice", PW, None).unwrap();
    let s = m.recover_start("alice", PW).unwrap();
    let (ke3, _, state) = m.client_finish("alice", s, PW, &pinned).unwrap();
    m.server_finish("alice", &state, &ke3).unwrap();
    let _ = m.recover_start("alice", b"wrong").unwrap();
    let before = m.counter("alice");
    assert_eq!(
        m.server_finish("alice", &state, &ke3).err(),
        Some(Error::StaleState)
    );
    assert_eq!(
        m.counter("alice"),
        before,
        "a replay must not touch the counter"
    );
}

#[test]
fn recover_finish_old_state_after_success_rejected() {
    let mut m = Model::new();
    let pinned = m.register("alice", PW, None).unwrap();
    let old = m.recover_start("alice", PW).unwrap();
    let (old_ke3, _, old_state) = m.client_finish("alice", old, PW, &pinned).unwrap();
    m.recover("alice", PW, &pinned).unwrap();
    assert_eq!(
        m.server_finish("alice", &old_state, &old_ke3).err(),
        Some(Error::StaleState)
    );
}

#[test]
fn recover_finish_expired_state_rejected() {
    let mut m = Model::new();
    let pinned = m.register("alice", PW, None).unwrap();
    let s = m.recover_start("alice", PW).unwrap();
    let (ke3, _, state) = m.client_finish("alice", s, PW, &pinned).unwrap();
    m.now += 120;
    let before = m.counter("alice");
    assert_eq!(
        m.server_finish("alice", &state, &ke3).err(),
        Some(Error::Expired {
            what: "login state"
        })
    );
    assert_eq!(m.counter("alice"), before);
}

#[test]
fn recover_finish_other_account_state_rejected() {
    let mut m = Model::new();
    let pinned = m.register("alice", PW, None).unwrap();
    m.register("bob", PW, None).unwrap();
    let s = m.recover_start("alice", PW).unwrap();
    let (ke3, _, state) = m.client_finish("alice", s, PW, &pinned).unwrap();
    assert_eq!(
        m.server_finish("bob", &state, &ke3).err(),
        Some(Error::Corrupted {
            what: "login state"
        })
    );
    // Bob's own state with Alice's KE3 fails authentication.
    let sb = m.recover_start("bob", PW).unwrap();
    assert_eq!(
        m.server_finish("bob", &sb.server.state, &ke3).err(),
        Some(Error::AuthenticationFailed)
    );
}

#[test]
fn recover_finish_after_reregistration_stale() {
    let mut m = Model::new();
    let pinned = m.register("alice", PW, None).unwrap();
    let s = m.recover_start("alice", PW).unwrap();
    let (ke3, _, state) = m.client_finish("alice", s, PW, &pinned).unwrap();
    let (_, proof) = m.recover("alice", PW, &pinned).unwrap();
    m.register("alice", b"new password", Some(&proof)).unwrap();
    assert_eq!(
        m.server_finish("alice", &state, &ke3).err(),
        Some(Error::StaleState)
    );
}

#[test]
fn recover_wrong_server_key_mismatch() {
    let mut m = Model::new();
    m.register("alice", PW, None).unwrap();
    let other = ServerIdentity::from_bytes([9; 32]);
    let s = m.recover_start("alice", PW).unwrap();
    assert_eq!(
        m.client_finish("alice", s, PW, &other).err(),
        Some(Error::ServerKeyMismatch)
    );
}

#[test]
fn the_envelope_binds_the_identity_a_new_phone_pins() {
    let mut m = Model::new();
    let pinned = m.register("alice", PW, None).unwrap();
    // A vault naming another identity (the real KE2 relayed, the name swapped) is refused with a
    // pin, and without one the envelope does not open: only the registered identity can be pinned.
    let other = ServerIdentity::from_bytes(
        ed25519_dalek::SigningKey::from_bytes(&[4; 32])
            .verifying_key()
            .to_bytes(),
    );
    let mut s = m.recover_start("alice", PW).unwrap();
    s.server.server_identity = other;
    assert_eq!(
        m.client_finish("alice", s, PW, &pinned).err(),
        Some(Error::ServerKeyMismatch)
    );
    let s = m.recover_start("alice", PW).unwrap();
    let mut params = Ke2Params {
        ksf: s.server.ksf,
        suite: SUITE_ID,
        record_version: RECORD_VERSION,
        server_identity: other,
    };
    let err = s
        .client
        .finish_unpinned(&mut m.rng, PW, &s.server.ke2, params)
        .err();
    assert_eq!(err, Some(Error::WrongPassword));
    let s = m.recover_start("alice", PW).unwrap();
    params.server_identity = s.server.server_identity;
    let (_, _, seen) = s
        .client
        .finish_unpinned(&mut m.rng, PW, &s.server.ke2, params)
        .unwrap();
    assert!(seen.ct_matches(&pinned));
}

#[test]
fn recover_different_ksf_params_wrong_password() {
    let mut m = Model::new();
    let pinned = m.register("alice", PW, None).unwrap();
    let mut s = m.recover_start("alice", PW).unwrap();
    s.server.ksf = KsfParams::new(16, 1, 1).unwrap();
    assert_eq!(
        m.client_finish("alice", s, PW, &pinned).err(),
        Some(Error::WrongPassword)
    );
}

#[test]
fn recover_unsupported_suite_rejected() {
    let mut m = Model::new();
    let pinned = m.register("alice", PW, None).unwrap();
    let s = m.recover_start("alice", PW).unwrap();
    let params = Ke2Params {
        ksf: s.server.ksf,
        suite: 2,
        record_version: 1,
        server_identity: s.server.server_identity,
    };
    let err = s
        .client
        .finish(&mut m.rng, PW, &s.server.ke2, params, &pinned)
        .err();
    assert!(matches!(
        err,
        Some(Error::UnsupportedVersion { found: 2, .. })
    ));
}

#[test]
fn register_over_live_record_requires_fresh_proof() {
    let mut m = Model::new();
    let pinned = m.register("alice", PW, None).unwrap();
    assert_eq!(
        m.register("alice", b"other", None).err(),
        Some(Error::AlreadyRegistered)
    );
    assert_eq!(
        m.register(
            "alice",
            b"other",
            Some(&Proof {
                proof: b"garbage".to_vec(),
                binding: ProofBinding::from_key(Key32::from_bytes([0; 32])),
            })
        )
        .err(),
        Some(Error::UnsupportedVersion {
            what: "recovery proof",
            found: u16::from_be_bytes(*b"ga"),
            supported: 1
        })
    );
    let (_, proof) = m.recover("alice", PW, &pinned).unwrap();
    m.register("alice", b"new password", Some(&proof)).unwrap();
    // The proof was for the previous generation: single use.
    assert_eq!(
        m.register("alice", b"third", Some(&proof)).err(),
        Some(Error::StaleProof)
    );
    assert_eq!(
        m.recover("alice", PW, &pinned).err(),
        Some(Error::WrongPassword)
    );
    let (key, _) = m.recover("alice", b"new password", &pinned).unwrap();
    assert_eq!(key.expose_secret(), &KEY);
}

#[test]
fn register_proof_expired_rejected() {
    let mut m = Model::new();
    let pinned = m.register("alice", PW, None).unwrap();
    let (_, proof) = m.recover("alice", PW, &pinned).unwrap();
    m.now += 300;
    assert_eq!(
        m.register("alice", b"new", Some(&proof)).err(),
        Some(Error::Expired {
            what: "recovery proof"
        })
    );
}

#[test]
fn register_after_destruction_allowed() {
    let mut m = Model::new();
    let pinned = m.register("alice", PW, None).unwrap();
    for _ in 0..11 {
        let _ = m.recover_start("alice", b"wrong");
    }
    assert!(matches!(
        m.rows["alice"],
        AccountState::Destroyed { generation: 1, .. }
    ));
    m.register("alice", b"fresh", None).unwrap();
    let (key, _) = m.recover("alice", b"fresh", &pinned).unwrap();
    assert_eq!(key.expose_secret(), &KEY);
}

#[test]
fn register_ticket_expired_or_other_account_rejected() {
    let mut m = Model::new();
    let alice = AccountId::new("alice").unwrap();
    let bob = AccountId::new("bob").unwrap();
    let (client, req) = RegistrationClient::start(&mut m.rng, &alice, PW).unwrap();
    let started = m
        .vault
        .register_start(&mut m.rng, T0, &alice, &req)
        .unwrap();
    let out = client
        .finish(
            &mut m.rng,
            PW,
            answer(&started),
            &BackupKey::from_bytes(KEY),
            KsfParams::INSECURE_FOR_TESTS,
            None,
        )
        .unwrap();
    let input = || RegistrationFinish {
        ticket: &started.ticket,
        upload: &out.upload,
        wrapped_key: out.wrapped_key.as_bytes(),
        ksf: KsfParams::INSECURE_FOR_TESTS,
        proof: None,
        binding: None,
    };
    let none = AccountState::NoRecord { generation: 0 };
    let err = m
        .vault
        .register_finish(&mut m.rng, T0, &bob, &none, input(), 10)
        .err();
    assert_eq!(
        err,
        Some(Error::Corrupted {
            what: "registration ticket"
        })
    );
    let err = m
        .vault
        .register_finish(&mut m.rng, T0 + 600, &alice, &none, input(), 10)
        .err();
    assert_eq!(
        err,
        Some(Error::Expired {
            what: "registration ticket"
        })
    );
    assert!(
        m.vault
            .register_finish(&mut m.rng, T0 + 599, &alice, &none, input(), 10)
            .is_ok()
    );
}

#[test]
fn sealed_record_any_flipped_byte_rejected() {
    let mut m = Model::new();
    m.register("alice", PW, None).unwrap();
    let AccountState::Registered {
        sealed,
        counter,
        generation,
    } = m.rows["alice"].clone()
    else {
        panic!()
    };
    let alice = AccountId::new("alice").unwrap();
    assert!(
        m.vault
            .open_record(&alice, generation, &sealed, &counter)
            .is_ok()
    );
    for i in 2..sealed.len() {
        let mut bad = sealed.clone();
        bad[i] ^= 0x01;
        assert_eq!(
            m.vault
                .open_record(&alice, generation, &bad, &counter)
                .err(),
            Some(Error::Corrupted {
                what: "vault record"
            }),
            "byte {i}"
        );
    }
}

#[test]
fn sealed_record_wrong_account_or_generation_rejected() {
    let mut m = Model::new();
    m.register("alice", PW, None).unwrap();
    let AccountState::Registered {
        sealed,
        counter,
        generation,
    } = m.rows["alice"].clone()
    else {
        panic!()
    };
    let bob = AccountId::new("bob").unwrap();
    let alice = AccountId::new("alice").unwrap();
    assert_eq!(
        m.vault
            .open_record(&bob, generation, &sealed, &counter)
            .err(),
        Some(Error::Corrupted {
            what: "vault record"
        })
    );
    assert_eq!(
        m.vault
            .open_record(&alice, generation + 1, &sealed, &counter)
            .err(),
        Some(Error::Corrupted {
            what: "vault record"
        })
    );
    let tampered_column = GuessCounter {
        max_attempts: 1000,
        ..counter
    };
    assert_eq!(
        m.vault
            .open_record(&alice, generation, &sealed, &tampered_column)
            .err(),
        Some(Error::Corrupted {
            what: "max_attempts column"
        })
    );
}

#[test]
fn sealed_record_unsupported_version_rejected() {
    let mut m = Model::new();
    m.register("alice", PW, None).unwrap();
    let AccountState::Registered {
        mut sealed,
        counter,
        generation,
    } = m.rows["alice"].clone()
    else {
        panic!()
    };
    sealed[1] = 2;
    let alice = AccountId::new("alice").unwrap();
    assert_eq!(
        m.vault
            .open_record(&alice, generation, &sealed, &counter)
            .err(),
        Some(Error::UnsupportedVersion {
            what: "vault record",
            found: 2,
            supported: 1
        })
    );
}

#[test]
fn login_state_unsupported_version_rejected() {
    let mut m = Model::new();
    m.register("alice", PW, None).unwrap();
    let s = m.recover_start("alice", PW).unwrap();
    let mut state = s.server.state;
    state[0] = 0xff;
    let alice = AccountId::new("alice").unwrap();
    assert!(matches!(
        m.vault.open_login_state(T0, &alice, &state).err(),
        Some(Error::UnsupportedVersion {
            what: "login state",
            ..
        })
    ));
}

#[test]
fn release_tampered_rejected() {
    let mut m = Model::new();
    let pinned = m.register("alice", PW, None).unwrap();
    let s = m.recover_start("alice", PW).unwrap();
    let (ke3, unwrapper, state) = m.client_finish("alice", s, PW, &pinned).unwrap();
    let mut release = m.server_finish("alice", &state, &ke3).unwrap();
    release[40] ^= 1;
    assert_eq!(
        unwrapper.open_release(&release).err(),
        Some(Error::Corrupted {
            what: "released key"
        })
    );
}

/// PROTOCOL.md §6.5: whoever replays a captured (state, KE3) first gets a release that only the
/// session of the login that made the KE3 can open, and no usable proof.
#[test]
fn release_of_replayed_ke3_opens_only_for_its_session() {
    let mut m = Model::new();
    let pinned = m.register("alice", PW, None).unwrap();
    let s = m.recover_start("alice", PW).unwrap();
    let (ke3, victim, state) = m.client_finish("alice", s, PW, &pinned).unwrap();
    // The attacker forwards the captured pair first and holds an Unwrapper of its own login.
    let captured = m.server_finish("alice", &state, &ke3).unwrap();
    let s2 = m.recover_start("alice", PW).unwrap();
    let (_, attacker, _) = m.client_finish("alice", s2, PW, &pinned).unwrap();
    assert_eq!(
        attacker.open_release(&captured).err(),
        Some(Error::Corrupted {
            what: "released key"
        })
    );
    assert!(victim.open_release(&captured).is_ok());
}

/// PROTOCOL.md §4.2: a proof is only usable with the binding MAC of the login that earned it.
#[test]
fn reregistration_with_proof_of_another_session_rejected() {
    let mut m = Model::new();
    let pinned = m.register("alice", PW, None).unwrap();
    let (_, proof) = m.recover("alice", PW, &pinned).unwrap();
    let (_, other) = m.recover("alice", PW, &pinned).unwrap();
    // The newer login superseded nothing (same generation): only the binding differs.
    let stolen = Proof {
        proof: proof.proof.clone(),
        binding: other.binding,
    };
    assert_eq!(
        m.register("alice", b"new", Some(&stolen)).err(),
        Some(Error::Corrupted {
            what: "recovery proof"
        })
    );
    m.register("alice", b"new", Some(&proof)).unwrap();
}

/// PROTOCOL.md §4.1: a man in the middle answering `register/start` from another vault, even
/// with the pinned public key spliced into the response, is refused before any upload exists.
#[test]
fn register_answer_from_another_vault_refused_by_pinned_client() {
    let mut m = Model::new();
    let pinned = m.vault.server_identity();
    let mitm = Vault::new(VaultKeys::generate(&mut m.rng), VaultConfig::default());
    let alice = AccountId::new("alice").unwrap();
    for splice in [false, true] {
        let (client, req) = RegistrationClient::start(&mut m.rng, &alice, PW).unwrap();
        let mut started = mitm.register_start(&mut m.rng, T0, &alice, &req).unwrap();
        if splice {
            started.response[32..].copy_from_slice(pinned.as_bytes());
        }
        let err = client
            .finish(
                &mut m.rng,
                PW,
                answer(&started),
                &BackupKey::from_bytes(KEY),
                KsfParams::INSECURE_FOR_TESTS,
                Some(&pinned),
            )
            .err();
        assert_eq!(err, Some(Error::ServerKeyMismatch), "splice={splice}");
    }
    // Without a pin (trust on first use) a tampered signature is still refused.
    let (client, req) = RegistrationClient::start(&mut m.rng, &alice, PW).unwrap();
    let mut started = m
        .vault
        .register_start(&mut m.rng, T0, &alice, &req)
        .unwrap();
    started.ticket[5] ^= 1;
    let err = client
        .finish(
            &mut m.rng,
            PW,
            answer(&started),
            &BackupKey::from_bytes(KEY),
            KsfParams::INSECURE_FOR_TESTS,
            None,
        )
        .err();
    assert_eq!(err, Some(Error::ServerKeyMismatch));
}

#[test]
fn vault_keys_roundtrip_same_identity() {
    let mut rng = StdRng::seed_from_u64(1);
    let keys = VaultKeys::generate(&mut rng);
    let bytes = keys.to_bytes();
    assert_eq!(bytes.len(), VaultKeys::SERIALIZED_LEN);
    let again = VaultKeys::from_bytes(&bytes).unwrap();
    assert_eq!(again.server_identity(), keys.server_identity());
    assert!(VaultKeys::from_bytes(&bytes[1..]).is_err());
    assert!(!format!("{keys:?}").contains(&format!("{:?}", &bytes[130..140])));
}

#[test]
fn validate_ke1_rejects_invalid_point() {
    let mut m = Model::new();
    let account = AccountId::new("alice").unwrap();
    let (_, ke1) = RecoveryClient::start(&mut m.rng, &account, PW).unwrap();
    assert!(Vault::validate_ke1(&ke1).is_ok());
    assert!(Vault::validate_ke1(&[0xff; 96]).is_err());
    assert!(Vault::validate_ke1(&ke1[..95]).is_err());
}
