//! Fuzz harnesses for the decoders of `chatvault-threshold`, one function per fuzz target
//! (included by `fuzz/src/lib.rs`; `tests/fuzz_regressions.rs` replays saved inputs through the
//! same functions). A harness must never panic except through its own `assert!`s.
//!
//! - `threshold_messages`: byte 0 picks one of the eight JSON messages (PROTOCOL.md §13.8), the
//!   rest is the JSON text. A decoded message re-encodes to JSON that decodes to the same value;
//!   requests are fed to the realm steps of a fixed registration, responses to the client steps.
//! - `threshold_record`: byte 0 = 0 decodes the bytes as a stored record
//!   (`RealmRecord::from_bytes`); 1 opens them as a sealed record (`RealmKeys::open_record`);
//!   2 seals them with the fixture's realm key first, so the fuzzer reaches the decoder behind
//!   the AEAD. A decoded record re-encodes to the same bytes.

#![allow(dead_code)]

use std::sync::OnceLock;

use chatvault_threshold::*;
use chatvault_vault_core::{AccountId, BackupKey, GuessCounter, KsfParams};

pub use chatvault_fuzz_support::FixedRng;

/// A fixed 2-of-3 registration of `alice`.
pub struct Fixture {
    pub keys: Vec<RealmKeys>,
    pub set: RealmSet,
    pub account: AccountId,
    pub records: Vec<RealmRecord>,
}

pub fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let mut rng = FixedRng(7);
        let keys: Vec<RealmKeys> = (1..=3u8)
            .map(|i| RealmKeys::derive(&[i; 32]).unwrap())
            .collect();
        let set = RealmSet::new(
            keys.iter()
                .enumerate()
                .map(|(k, r)| Realm {
                    id: r.realm_id(),
                    name: format!("realm{k}"),
                })
                .collect(),
            2,
        )
        .unwrap();
        let account = AccountId::new("alice").unwrap();
        let (_, reqs) = register(
            &mut rng,
            &set,
            &account,
            b"pw",
            &BackupKey::from_bytes([0x42; 32]),
            KsfParams::INSECURE_FOR_TESTS,
            10,
        )
        .unwrap();
        let records = reqs
            .into_iter()
            .map(|(i, r)| RealmRecord::register2(&keys[usize::from(i) - 1].realm_id(), r).unwrap())
            .collect();
        Fixture {
            keys,
            set,
            account,
            records,
        }
    })
}

fn roundtrip<T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug>(
    v: &T,
) {
    let text = serde_json::to_string(v).unwrap();
    let back: T = serde_json::from_str(&text).unwrap();
    assert_eq!(&back, v, "JSON round trip");
}

pub fn threshold_messages(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let f = fixture();
    let counted = GuessCounter::new(10).count_guess().unwrap();
    match mode % 8 {
        0 => {
            if let Ok(m) = serde_json::from_slice::<Register1Response>(rest) {
                roundtrip(&m);
            }
        }
        1 => {
            if let Ok(m) = serde_json::from_slice::<Register2Request>(rest) {
                roundtrip(&m);
                let _ = RealmRecord::register2(&f.keys[0].realm_id(), m);
            }
        }
        2 => {
            if let Ok(m) = serde_json::from_slice::<Register2Response>(rest) {
                roundtrip(&m);
            }
        }
        3 => {
            if let Ok(m) = serde_json::from_slice::<Recover1Response>(rest) {
                roundtrip(&m);
                let _ = Recovery::new(f.set.clone(), f.account.clone())
                    .choose(vec![(1, Ok(m)), (2, Ok(f.records[1].recover1()))]);
            }
        }
        4 => {
            if let Ok(m) = serde_json::from_slice::<Recover2Request>(rest) {
                roundtrip(&m);
                let _ =
                    f.records[0].recover2(&mut FixedRng(1), &f.keys[0], &f.account, &counted, &m);
            }
        }
        5 => {
            if let Ok(m) = serde_json::from_slice::<Recover2Response>(rest) {
                roundtrip(&m);
                let chosen = Recovery::new(f.set.clone(), f.account.clone())
                    .choose(vec![
                        (1, Ok(f.records[0].recover1())),
                        (2, Ok(f.records[1].recover1())),
                    ])
                    .unwrap();
                let (blinded, _) = chosen.blind(&mut FixedRng(2), b"pw").unwrap();
                let r = blinded.finish(vec![(1, Ok(m)), (3, Err("down".into()))]);
                assert!(r.is_err(), "one answer cannot reach a 2-of-3 threshold");
            }
        }
        6 => {
            if let Ok(m) = serde_json::from_slice::<Recover3Request>(rest) {
                roundtrip(&m);
                let _ = f.records[0].recover3(&counted, &m);
            }
        }
        _ => {
            if let Ok(m) = serde_json::from_slice::<Recover3Response>(rest) {
                roundtrip(&m);
            }
        }
    }
}

pub fn threshold_record(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let f = fixture();
    let decoded = match mode % 3 {
        0 => RealmRecord::from_bytes(rest)
            .ok()
            .map(|r| (r, rest.to_vec())),
        1 => f.keys[0].open_record(&f.account, 1, rest).ok().map(|r| {
            let b = r.to_bytes().to_vec();
            (r, b)
        }),
        _ => {
            // Seal the fuzz bytes the way the realm would (through a record only if they decode).
            match RealmRecord::from_bytes(rest) {
                Ok(r) => {
                    let sealed = f.keys[0].seal_record(&mut FixedRng(3), &f.account, 1, &r);
                    let back = f.keys[0].open_record(&f.account, 1, &sealed).unwrap();
                    assert_eq!(*back.to_bytes(), *rest, "seal → open round trip");
                    Some((back, rest.to_vec()))
                }
                Err(_) => None,
            }
        }
    };
    if let Some((r, bytes)) = decoded {
        assert_eq!(*r.to_bytes(), bytes[..], "decode → encode round trip");
        let _ = r.recover1();
    }
}

/// A fuzz target: name and harness.
pub type Target = (&'static str, fn(&[u8]));

/// Every target.
pub const TARGETS: &[Target] = &[
    ("threshold_messages", threshold_messages),
    ("threshold_record", threshold_record),
];
