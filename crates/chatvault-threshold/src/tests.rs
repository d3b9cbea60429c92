//! Scenario tests of the whole protocol (client and realm steps together), the test vectors and
//! the single-realm attacker test at the core level.

use chatvault_vault_core::{AccountId, BackupKey, GuessCounter, KsfParams};
use proptest::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

use crate::*;

const KSF: KsfParams = KsfParams::INSECURE_FOR_TESTS;

fn rng(seed: u64) -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(seed)
}

fn realm_keys(n: u8) -> Vec<RealmKeys> {
    (1..=n)
        .map(|i| RealmKeys::derive(&[i; 32]).unwrap())
        .collect()
}

fn realm_set(n: u8, t: u8) -> (RealmSet, Vec<RealmId>) {
    let ids: Vec<RealmId> = realm_keys(n).iter().map(|k| k.realm_id()).collect();
    let set = RealmSet::new(
        ids.iter()
            .enumerate()
            .map(|(k, id)| Realm {
                id: *id,
                name: format!("https://realm{}.test", k + 1),
            })
            .collect(),
        t,
    )
    .unwrap();
    (set, ids)
}

struct Fixture {
    set: RealmSet,
    keys: Vec<RealmKeys>,
    account: AccountId,
    records: Vec<RealmRecord>,
    counters: Vec<GuessCounter>,
    key: BackupKey,
}

fn setup(seed: u64, n: u8, t: u8, password: &[u8]) -> Fixture {
    let mut r = rng(seed);
    let (set, ids) = realm_set(n, t);
    let account = AccountId::new("alice").unwrap();
    let key = BackupKey::from_bytes([seed as u8; 32]);
    let (pending, reqs) = register(&mut r, &set, &account, password, &key, KSF, 10).unwrap();
    let records: Vec<RealmRecord> = reqs
        .into_iter()
        .map(|(i, req)| RealmRecord::register2(&ids[usize::from(i) - 1], req).unwrap())
        .collect();
    let keys = realm_keys(n);
    pending
        .finish(
            (1..=n)
                .map(|i| {
                    let receipt = keys[usize::from(i) - 1].register_receipt(
                        &account,
                        records[usize::from(i) - 1].version(),
                        i,
                    );
                    (i, Ok(Register2Response { receipt }))
                })
                .collect(),
        )
        .unwrap();
    Fixture {
        set,
        keys,
        account,
        counters: vec![GuessCounter::new(10); usize::from(n)],
        records,
        key,
    }
}

/// How one realm behaves in a simulated recovery.
#[derive(Clone, Copy, PartialEq)]
enum Behaviour {
    Honest,
    Down,
    /// Returns `Z_i + G`: a wrong evaluation with the original proof.
    WrongEvaluation,
    /// Releases a wrong scalar share in recover3.
    WrongRelease,
}

#[allow(clippy::needless_range_loop)] // k indexes records, counters and behaviours together
fn recover(
    f: &mut Fixture,
    seed: u64,
    password: &[u8],
    behave: &[Behaviour],
) -> Result<(BackupKey, Vec<String>)> {
    let mut r = rng(seed);
    let up = |k: usize| behave[k] != Behaviour::Down;
    let n = f.records.len();
    let answers = (0..n)
        .map(|k| {
            let i = (k + 1) as u8;
            if up(k) {
                (i, Ok(f.records[k].recover1()))
            } else {
                (i, Err("connection refused".to_string()))
            }
        })
        .collect();
    let chosen = Recovery::new(f.set.clone(), f.account.clone()).choose(answers)?;
    let (blinded, req) = chosen.blind(&mut r, password)?;
    let mut answers = Vec::new();
    for k in 0..n {
        let i = (k + 1) as u8;
        if !up(k) {
            answers.push((i, Err("connection refused".to_string())));
            continue;
        }
        f.counters[k] = f.counters[k].count_guess().expect("not exhausted");
        let mut resp = f.records[k]
            .recover2(&mut r, &f.keys[k], &f.account, &f.counters[k], &req)
            .unwrap();
        if behave[k] == Behaviour::WrongEvaluation {
            let z = oprf::decode_point(&resp.evaluation.0, "z").unwrap()
                + curve25519_dalek::constants::RISTRETTO_BASEPOINT_POINT;
            resp.evaluation = B64(z.compress().to_bytes());
        }
        answers.push((i, Ok(resp)));
    }
    let (unlocked, tags) = blinded.finish(answers)?;
    let releases = tags
        .iter()
        .map(|(i, req)| {
            let k = usize::from(*i) - 1;
            let mut rel = f.records[k].recover3(&f.counters[k], req).unwrap();
            f.counters[k] = f.counters[k]
                .record_success(f.counters[k].guess_seq)
                .unwrap();
            if behave[k] == Behaviour::WrongRelease {
                rel.encryption_scalar_share.0[0] ^= 1;
            }
            (*i, Ok(rel))
        })
        .collect();
    unlocked.finish(releases)
}

use Behaviour::*;

#[test]
fn recover_all_realms_up_returns_key() {
    let mut f = setup(1, 3, 2, b"correct horse");
    let (key, faults) = recover(&mut f, 2, b"correct horse", &[Honest; 3]).unwrap();
    assert_eq!(key.expose_secret(), f.key.expose_secret());
    assert!(faults.is_empty());
    assert!(
        f.counters.iter().all(|c| c.attempts == 0),
        "reset on success"
    );
}

#[test]
fn recover_any_one_realm_down_returns_key() {
    for down in 0..3 {
        let mut f = setup(3, 3, 2, b"pw");
        let mut b = [Honest; 3];
        b[down] = Down;
        let (key, faults) = recover(&mut f, 4, b"pw", &b).unwrap();
        assert_eq!(key.expose_secret(), f.key.expose_secret());
        assert!(
            faults[0].contains(&format!("realm{}", down + 1)),
            "{faults:?}"
        );
    }
}

#[test]
fn recover_two_realms_down_not_enough_realms() {
    let mut f = setup(5, 3, 2, b"pw");
    let err = recover(&mut f, 6, b"pw", &[Down, Honest, Down]).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(
        err,
        Error::NotEnoughRealms {
            phase: "recover1",
            needed: 2,
            usable: 1,
            ..
        }
    ));
    assert!(
        msg.contains("realm1.test") && msg.contains("realm3.test"),
        "{msg}"
    );
}

#[test]
fn recover_wrong_evaluation_detected_and_skipped() {
    let mut f = setup(7, 3, 2, b"pw");
    let (key, faults) = recover(&mut f, 8, b"pw", &[WrongEvaluation, Honest, Honest]).unwrap();
    assert_eq!(key.expose_secret(), f.key.expose_secret());
    assert!(
        faults
            .iter()
            .any(|x| x.contains("realm1.test") && x.contains("proof")),
        "{faults:?}"
    );
}

#[test]
fn recover_wrong_evaluation_without_spare_realm_fails_naming_it() {
    let mut f = setup(9, 3, 2, b"pw");
    let err = recover(&mut f, 10, b"pw", &[WrongEvaluation, Honest, Down]).unwrap_err();
    assert!(
        matches!(
            err,
            Error::NotEnoughRealms {
                phase: "recover2",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("realm1.test"));
}

#[test]
fn recover_evaluation_signed_by_other_identity_skipped() {
    let mut f = setup(25, 3, 2, b"pw");
    // Realm 1's record served by an impostor holding another identity key.
    f.keys[0] = RealmKeys::derive(&[99; 32]).unwrap();
    let (key, faults) = recover(&mut f, 26, b"pw", &[Honest; 3]).unwrap();
    assert_eq!(key.expose_secret(), f.key.expose_secret());
    assert!(
        faults.iter().any(|x| x.contains("realm1.test")),
        "{faults:?}"
    );
}

#[test]
fn sealed_record_other_account_or_generation_rejected() {
    let f = setup(27, 3, 2, b"pw");
    let sealed = f.keys[0].seal_record(&mut rng(1), &f.account, 4, &f.records[0]);
    assert!(f.keys[0].open_record(&f.account, 4, &sealed).is_ok());
    assert_eq!(
        f.keys[0].open_record(&f.account, 5, &sealed).unwrap_err(),
        Error::Corrupted
    );
    let bob = AccountId::new("bob").unwrap();
    assert_eq!(
        f.keys[0].open_record(&bob, 4, &sealed).unwrap_err(),
        Error::Corrupted
    );
    assert_eq!(
        f.keys[1].open_record(&f.account, 4, &sealed).unwrap_err(),
        Error::Corrupted
    );
}

#[test]
fn recover_wrong_release_detected_and_skipped() {
    let mut f = setup(11, 3, 2, b"pw");
    let (key, faults) = recover(&mut f, 12, b"pw", &[Honest, WrongRelease, Honest]).unwrap();
    assert_eq!(key.expose_secret(), f.key.expose_secret());
    assert!(
        faults.iter().any(|x| x.contains("realm2.test")),
        "{faults:?}"
    );
}

#[test]
fn recover_wrong_password_counts_and_reports_guesses_left() {
    let mut f = setup(13, 3, 2, b"pw");
    for left in (7..10).rev() {
        let err = recover(&mut f, 14, b"wrong", &[Honest; 3]).unwrap_err();
        assert_eq!(
            err,
            Error::WrongPassword {
                guesses_remaining: left
            }
        );
    }
    assert!(f.counters.iter().all(|c| c.attempts == 3));
    // The right password still works and resets every counter.
    recover(&mut f, 15, b"pw", &[Honest; 3]).unwrap();
    assert!(f.counters.iter().all(|c| c.attempts == 0));
}

#[test]
fn recover3_wrong_tag_bad_unlock_tag_no_release() {
    let f = setup(16, 3, 2, b"pw");
    let counter = GuessCounter::new(10).count_guess().unwrap();
    let req = Recover3Request {
        version: *f.records[0].version(),
        unlock_tag: B64([0; 32]),
    };
    assert_eq!(
        f.records[0].recover3(&counter, &req).unwrap_err(),
        Error::BadUnlockTag {
            guesses_remaining: 9
        }
    );
}

#[test]
fn recover2_uncounted_guess_refused() {
    let f = setup(17, 3, 2, b"pw");
    let req = Recover2Request {
        version: *f.records[0].version(),
        blinded: B64(curve25519_dalek::constants::RISTRETTO_BASEPOINT_COMPRESSED.to_bytes()),
    };
    assert!(
        f.records[0]
            .recover2(
                &mut rng(1),
                &f.keys[0],
                &f.account,
                &GuessCounter::new(10),
                &req
            )
            .is_err()
    );
    let wrong_version = Recover2Request {
        version: B64([0; 16]),
        ..req
    };
    assert_eq!(
        f.records[0].check_recover2(&wrong_version).unwrap_err(),
        Error::VersionMismatch
    );
}

#[test]
fn register2_tampered_request_rejected() {
    let (set, ids) = realm_set(3, 2);
    let account = AccountId::new("alice").unwrap();
    let key = BackupKey::from_bytes([1; 32]);
    let fresh = || {
        register(&mut rng(20), &set, &account, b"pw", &key, KSF, 10)
            .unwrap()
            .1
    };
    // Sent to another realm than the one it was signed for.
    let (_, req) = fresh().into_iter().next().unwrap();
    assert!(RealmRecord::register2(&ids[1], req).is_err());
    // A key share that does not match the public key.
    let (_, mut req) = fresh().into_iter().next().unwrap();
    req.oprf_key_share.0[0] ^= 1;
    assert!(RealmRecord::register2(&ids[0], req).is_err());
    // Cheap KSF parameters outside the policy (tests accept only exactly the test params).
    let (_, mut req) = fresh().into_iter().next().unwrap();
    req.ksf = KsfParams {
        m_kib: 16,
        t: 1,
        p: 1,
    };
    assert!(RealmRecord::register2(&ids[0], req).is_err());
    // Guess limit 0.
    let (_, mut req) = fresh().into_iter().next().unwrap();
    req.max_attempts = 0;
    assert!(RealmRecord::register2(&ids[0], req).is_err());
}

#[test]
fn register_fewer_than_t_acks_fails_naming_realms() {
    let (set, _) = realm_set(3, 2);
    let account = AccountId::new("alice").unwrap();
    let key = BackupKey::from_bytes([1; 32]);
    let (pending, _) = register(&mut rng(21), &set, &account, b"pw", &key, KSF, 10).unwrap();
    let forged = Register2Response {
        receipt: B64([0; 64]),
    };
    let err = pending
        .finish(vec![
            (1, Ok(forged)),
            (2, Err("HTTP 503".into())),
            (3, Err("timeout".into())),
        ])
        .unwrap_err();
    assert!(err.to_string().contains("realm2.test: HTTP 503"), "{err}");
    assert!(
        err.to_string().contains("realm1.test: receipt not signed"),
        "{err}"
    );
}

#[test]
fn recover1_disagreeing_versions_not_enough() {
    let f = setup(22, 3, 2, b"pw");
    let g = setup(23, 3, 2, b"pw");
    // Realm 1 holds a newer registration than realms 2 and 3 only if at least t agree.
    let answers = vec![
        (1, Ok(f.records[0].recover1())),
        (2, Ok(g.records[1].recover1())),
        (3, Err("down".into())),
    ];
    let err = Recovery::new(f.set.clone(), f.account.clone())
        .choose(answers)
        .unwrap_err();
    assert!(matches!(
        err,
        Error::NotEnoughRealms {
            phase: "recover1",
            ..
        }
    ));
}

#[test]
fn record_roundtrip_and_flipped_version_rejected() {
    let f = setup(24, 3, 2, b"pw");
    let bytes = f.records[1].to_bytes();
    assert_eq!(bytes.len(), REALM_RECORD_LEN);
    let back = RealmRecord::from_bytes(&bytes).unwrap();
    assert_eq!(*back.to_bytes(), *bytes);
    let mut bad = bytes.to_vec();
    bad[1] = 2;
    assert!(matches!(
        RealmRecord::from_bytes(&bad),
        Err(Error::UnsupportedVersion { found: 2, .. })
    ));
    assert!(RealmRecord::from_bytes(&bytes[..bytes.len() - 1]).is_err());
}

#[test]
fn messages_unknown_field_rejected() {
    let json = r#"{"version":"AAAAAAAAAAAAAAAAAAAAAA","blinded":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA","x":1}"#;
    assert!(serde_json::from_str::<Recover2Request>(json).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    /// Any t-subset of honest realms recovers, for t-of-n up to 5.
    #[test]
    fn recover_any_t_subset(seed in any::<u64>(), n in 2u8..=5, t_off in 0u8..5, mask in any::<u8>()) {
        let t = 1 + t_off % n;
        let mut f = setup(seed, n, t, b"pw");
        let behave: Vec<Behaviour> = (0..n).map(|k| if mask & (1 << k) != 0 { Honest } else { Down }).collect();
        let up = behave.iter().filter(|b| **b == Honest).count();
        let got = recover(&mut f, seed ^ 1, b"pw", &behave);
        if up >= usize::from(t) {
            let got = got.unwrap().0;
            prop_assert_eq!(got.expose_secret(), f.key.expose_secret());
        } else {
            let is_not_enough = matches!(got, Err(Error::NotEnoughRealms { .. }));
            prop_assert!(is_not_enough);
        }
    }

    /// Decoding arbitrary bytes as a record never panics, and any flipped bit of a valid record
    /// is either rejected or changes the re-encoding.
    #[test]
    fn record_decode_arbitrary_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = RealmRecord::from_bytes(&bytes);
    }
}

/// The property the mode exists for, at the core level: with one realm's full record (its key
/// share, tag, commitment, encrypted secret, scalar share) an attacker cannot tell the right
/// password among candidates. The process-level version (database + key file) is in
/// crates/chatvault-vault/tests/threshold.rs.
#[test]
fn attacker_one_realm_cannot_single_out_password() {
    let f = setup(30, 3, 2, b"password-617");
    let stolen = f.records[0].to_bytes();
    let realm_id = f.set.realm(1).unwrap().id;
    let candidates: Vec<String> = (0..1000).map(|c| format!("password-{c}")).collect();
    let hits = crate::attacks::run_all(&stolen, &f.account, &realm_id, &candidates).unwrap();
    assert_eq!(hits.len(), 4);
    for (attack, matches) in hits {
        assert!(
            matches.len() != 1 || matches[0] != 617,
            "attack {attack} singled out the right password"
        );
        assert!(
            matches.is_empty(),
            "attack {attack} matched candidates {matches:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Test vectors (tests/vectors/threshold-v1.json).

mod vectors {
    use super::*;
    use serde_json::{Value, json};

    const PATH: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/vectors/threshold-v1.json"
    );

    /// The full transcript of a 2-of-3 registration and a recovery from realms 1 and 3 under a
    /// seeded ChaCha20 RNG.
    fn transcript() -> Value {
        let seed = 0x6368_6174_7661_756c_u64;
        let mut r = rng(seed);
        let (set, ids) = realm_set(3, 2);
        let account = AccountId::new("alice@example.org").unwrap();
        let key = BackupKey::from_bytes(*b"chatvault test vector backup key");
        let pw = b"correct horse battery staple";
        let (_, reqs) = register(&mut r, &set, &account, pw, &key, KSF, 10).unwrap();
        let reg_json: Vec<Value> = reqs
            .iter()
            .map(|(_, q)| serde_json::to_value(q).unwrap())
            .collect();
        let records: Vec<RealmRecord> = reqs
            .into_iter()
            .map(|(i, q)| RealmRecord::register2(&ids[usize::from(i) - 1], q).unwrap())
            .collect();
        let chosen = Recovery::new(set, account.clone())
            .choose(vec![
                (1, Ok(records[0].recover1())),
                (3, Ok(records[2].recover1())),
            ])
            .unwrap();
        let (blinded, req2) = chosen.blind(&mut r, pw).unwrap();
        let counted = GuessCounter::new(10).count_guess().unwrap();
        let r2: Vec<(u8, Recover2Response)> = [0usize, 2]
            .iter()
            .map(|&k| {
                (
                    (k + 1) as u8,
                    records[k]
                        .recover2(&mut r, &realm_keys(3)[k], &account, &counted, &req2)
                        .unwrap(),
                )
            })
            .collect();
        let r2_json: Vec<Value> = r2
            .iter()
            .map(|(_, x)| serde_json::to_value(x).unwrap())
            .collect();
        let (unlocked, tags) = blinded
            .finish(r2.into_iter().map(|(i, x)| (i, Ok(x))).collect())
            .unwrap();
        let tags_json: Vec<Value> = tags
            .iter()
            .map(|(_, x)| serde_json::to_value(x).unwrap())
            .collect();
        let rel: Vec<(u8, Recover3Response)> = tags
            .iter()
            .map(|(i, q)| {
                (
                    *i,
                    records[usize::from(*i) - 1].recover3(&counted, q).unwrap(),
                )
            })
            .collect();
        let rel_json: Vec<Value> = rel
            .iter()
            .map(|(_, x)| serde_json::to_value(x).unwrap())
            .collect();
        let (got, _) = unlocked
            .finish(rel.into_iter().map(|(i, x)| (i, Ok(x))).collect())
            .unwrap();
        assert_eq!(got.expose_secret(), key.expose_secret());
        let h1 = oprf::hash_to_group(b"chatvault").compress().to_bytes();
        let f =
            oprf::evaluate_unblinded(&curve25519_dalek::scalar::Scalar::from(7u64), b"chatvault");
        json!({
            "comment": "chatvault threshold protocol v1 (PROTOCOL.md §13): 2-of-3 registration and a \
                        recovery from realms 1 and 3. RNG: ChaCha20Rng::seed_from_u64(seed), \
                        consumed in protocol order. Regenerate with \
                        `cargo test -p chatvault-threshold -- --ignored regenerate_vectors`.",
            "seed": seed,
            "account": account.as_str(),
            "password": String::from_utf8_lossy(pw),
            "backup_key_hex": hex::encode(key.expose_secret()),
            "ksf": KSF,
            "realm_ids": ids.iter().map(|i| hex::encode(i.0)).collect::<Vec<_>>(),
            "threshold": 2,
            "h1_of_chatvault_hex": hex::encode(h1),
            "oprf_k7_of_chatvault_hex": hex::encode(*f),
            "register2": reg_json,
            "recover2_request": serde_json::to_value(&req2).unwrap(),
            "recover2_responses": r2_json,
            "recover3_requests": tags_json,
            "recover3_responses": rel_json,
            "record_2_hex": hex::encode(&*records[1].to_bytes()),
        })
    }

    #[test]
    #[ignore = "writes tests/vectors/threshold-v1.json"]
    fn regenerate_vectors() {
        let v = transcript();
        std::fs::write(PATH, serde_json::to_string_pretty(&v).unwrap() + "\n").unwrap();
    }

    #[test]
    fn vectors_match_published_file() {
        let file: Value = serde_json::from_str(&std::fs::read_to_string(PATH).unwrap()).unwrap();
        assert_eq!(
            file,
            transcript(),
            "the protocol output changed: a format change?"
        );
        // Independent checks that do not rerun the client: every published record decodes, every
        // published DLEQ proof verifies against the published request.
        let rec = hex::decode(file["record_2_hex"].as_str().unwrap()).unwrap();
        RealmRecord::from_bytes(&rec).unwrap();
        let req: Recover2Request =
            serde_json::from_value(file["recover2_request"].clone()).unwrap();
        let b = oprf::decode_point(&req.blinded.0, "b").unwrap();
        for resp in file["recover2_responses"].as_array().unwrap() {
            let resp: Recover2Response = serde_json::from_value(resp.clone()).unwrap();
            let p = oprf::decode_point(&resp.oprf_public_key.0, "p").unwrap();
            let z = oprf::decode_point(&resp.evaluation.0, "z").unwrap();
            assert!(oprf::verify_points(&resp.proof.0, &p, &b, &z));
        }
    }
}

/// PROTOCOL.md §13.9: the client asks `t` realms first; a realm whose evaluation fails its proof
/// (or whose release fails its commitment) is replaced by another realm, with the same blinded
/// input, and the round-by-round API reaches the key without asking the spare before it is needed.
#[test]
fn t_realms_first_then_a_spare_for_each_lying_one() {
    let mut f = setup(31, 3, 2, b"pw");
    let mut r = rng(32);
    // recover1 at realms 1 and 2 only.
    let chosen = Recovery::new(f.set.clone(), f.account.clone())
        .choose(vec![
            (1, Ok(f.records[0].recover1())),
            (2, Ok(f.records[1].recover1())),
        ])
        .unwrap();
    assert_eq!(chosen.realms(), &[1, 2]);
    let (mut blinded, req) = chosen.blind(&mut r, b"pw").unwrap();
    let eval = |f: &mut Fixture, k: usize, r: &mut ChaCha20Rng| {
        f.counters[k] = f.counters[k].count_guess().unwrap();
        f.records[k]
            .recover2(r, &f.keys[k], &f.account, &f.counters[k], &req)
            .unwrap()
    };
    let good1 = eval(&mut f, 0, &mut r);
    let mut bad2 = eval(&mut f, 1, &mut r);
    let z = oprf::decode_point(&bad2.evaluation.0, "z").unwrap()
        + curve25519_dalek::constants::RISTRETTO_BASEPOINT_POINT;
    bad2.evaluation = B64(z.compress().to_bytes());
    blinded.accept(vec![(1, Ok(good1)), (2, Ok(bad2))]);
    assert_eq!(blinded.missing(), 1);
    assert!(blinded.try_unlock().unwrap().is_none());
    // Realm 3 was not asked yet: recover1 admits it, its evaluation completes the group.
    assert_eq!(
        blinded.admit(vec![(3, Ok(f.records[2].recover1()))]),
        vec![3]
    );
    let good3 = eval(&mut f, 2, &mut r);
    blinded.accept(vec![(3, Ok(good3))]);
    let (mut unlocked, tags) = blinded
        .try_unlock()
        .unwrap()
        .expect("t verified evaluations");
    assert_eq!(tags.iter().map(|(i, _)| *i).collect::<Vec<_>>(), vec![1, 3]);
    assert!(
        unlocked
            .faults()
            .iter()
            .any(|w| w.contains("realm2") && w.contains("misbehaving"))
    );
    // recover3: realm 1 releases a wrong share; realm 2 (asked now) a good one.
    let mut rel1 = f.records[0].recover3(&f.counters[0], &tags[0].1).unwrap();
    rel1.encryption_scalar_share.0[0] ^= 1;
    let rel3 = f.records[2].recover3(&f.counters[2], &tags[1].1).unwrap();
    unlocked.accept(vec![(1, Ok(rel1)), (3, Ok(rel3))]);
    assert_eq!(unlocked.missing(), 1);
    assert!(unlocked.try_finish().unwrap().is_none());
    let req2 = unlocked.request(2).unwrap();
    let rel2 = f.records[1].recover3(&f.counters[1], &req2).unwrap();
    unlocked.accept(vec![(2, Ok(rel2))]);
    let (key, faults) = unlocked.try_finish().unwrap().expect("t releases");
    assert_eq!(key.expose_secret(), f.key.expose_secret());
    assert!(faults.iter().any(|w| w.contains("realm1")));
}

/// A wrong password is decided by `t` verified evaluations and is final: no spare is needed.
#[test]
fn wrong_password_from_t_realms_is_final() {
    let mut f = setup(33, 3, 2, b"pw");
    let mut r = rng(34);
    let chosen = Recovery::new(f.set.clone(), f.account.clone())
        .choose(vec![
            (1, Ok(f.records[0].recover1())),
            (2, Ok(f.records[1].recover1())),
        ])
        .unwrap();
    let (mut blinded, req) = chosen.blind(&mut r, b"wrong").unwrap();
    let answers = (0..2)
        .map(|k| {
            f.counters[k] = f.counters[k].count_guess().unwrap();
            let a = f.records[k]
                .recover2(&mut r, &f.keys[k], &f.account, &f.counters[k], &req)
                .unwrap();
            ((k + 1) as u8, Ok(a))
        })
        .collect();
    blinded.accept(answers);
    assert!(matches!(
        blinded.try_unlock(),
        Err(Error::WrongPassword {
            guesses_remaining: 9
        })
    ));
    assert_eq!(f.counters[2].attempts, 0);
}
