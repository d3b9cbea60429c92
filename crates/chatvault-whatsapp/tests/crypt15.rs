//! Integration tests of the public API: the real WhatsApp fixture, round trips, every
//! flipped byte and every truncation, and the table of vectors in `tests/vectors/`.
#![allow(clippy::unwrap_used)] // tests and examples may unwrap; library and binary code may not

use std::io::Cursor;
use std::path::{Path, PathBuf};

use chatvault_whatsapp::{
    BackupHeader, EncryptOptions, Error, PayloadKind, decrypt, decrypt_to_file, encrypt,
};
use proptest::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use sha2::{Digest, Sha256};

const FIXTURE_KEY_HEX: &str = "6730a595a1484d0c39c101dc0ac82ec5e401bb6f0e1b8ee2dc104a6b3687f017";
const FIXTURE_DB_SHA256: &str = "1425b944a2e3885fc936a7bb82f6548c5cc09523a2f61f02aa836c4ed8bbd16e";

fn fixture_dir() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/whatsapp");
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!("SKIPPED: shared/fixtures/whatsapp not found");
        None
    }
}

fn fixture_key() -> [u8; 32] {
    hex::decode(FIXTURE_KEY_HEX).unwrap().try_into().unwrap()
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn rng(seed: u64) -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(seed)
}

const KEY: [u8; 32] = [0x11; 32];

fn small_backup() -> Vec<u8> {
    encrypt(
        &KEY,
        b"SQLite format 3\0 a small database",
        &EncryptOptions::default(),
        &mut rng(1),
    )
    .unwrap()
}

fn files_in(dir: &Path) -> usize {
    std::fs::read_dir(dir).unwrap().count()
}

// --- the real backup -------------------------------------------------------------------

#[test]
fn fixture_streams_to_file_equal_to_msgstore_db() {
    let Some(dir) = fixture_dir() else { return };
    let input = std::fs::File::open(dir.join("msgstore.db.crypt15")).unwrap();
    let out_dir = tempfile::tempdir().unwrap();
    let dest = out_dir.path().join("msgstore.db");
    let decrypted = decrypt_to_file(&fixture_key(), input, out_dir.path()).unwrap();
    assert_eq!(decrypted.kind(), PayloadKind::Database);
    assert_eq!(decrypted.output_len(), 1_273_856);
    assert!(!dest.exists(), "nothing at the destination before persist");
    decrypted.persist(&dest).unwrap();
    assert_eq!(
        sha256_hex(&std::fs::read(&dest).unwrap()),
        FIXTURE_DB_SHA256
    );
    assert_eq!(files_in(out_dir.path()), 1);
}

#[test]
fn fixture_with_wrong_key_is_wrong_key() {
    let Some(dir) = fixture_dir() else { return };
    let backup = std::fs::read(dir.join("msgstore.db.crypt15")).unwrap();
    let mut key = fixture_key();
    key[31] ^= 1;
    assert!(matches!(decrypt(&key, &backup), Err(Error::WrongKey)));
    let out_dir = tempfile::tempdir().unwrap();
    let err = decrypt_to_file(&key, Cursor::new(&backup), out_dir.path()).unwrap_err();
    assert!(matches!(err, Error::WrongKey));
    assert_eq!(
        files_in(out_dir.path()),
        0,
        "temporary file removed on error"
    );
}

#[test]
fn fixture_reencrypted_has_the_fixture_layout() {
    let Some(dir) = fixture_dir() else { return };
    let original = std::fs::read(dir.join("msgstore.db.crypt15")).unwrap();
    let db = std::fs::read(dir.join("msgstore.db")).unwrap();
    let header: BackupHeader = decrypt(&fixture_key(), &original).unwrap().header().clone();

    let ours = encrypt(
        &fixture_key(),
        &db,
        &EncryptOptions::from_header(&header),
        &mut rng(2),
    )
    .unwrap();
    // Same length byte, flag, key_type field, IV field framing; different IV; same info.
    assert_eq!(
        ours[..8],
        original[..8],
        "len, 0x01, key_type=1, field 3 {{ field 1: 16 bytes }}"
    );
    assert_ne!(ours[8..24], original[8..24], "fresh IV");
    let header_len = 2 + usize::from(original[0]);
    assert_eq!(
        ours[24..header_len],
        original[24..header_len],
        "field 4, byte for byte"
    );

    let back = decrypt(&fixture_key(), &ours).unwrap();
    assert_eq!(back.header(), &header);
    assert_eq!(sha256_hex(back.data()), FIXTURE_DB_SHA256);
}

// --- round trips and rejection ---------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn round_trip(data in proptest::collection::vec(any::<u8>(), 0..4096), seed: u64, key: [u8; 32]) {
        let backup = encrypt(&key, &data, &EncryptOptions::default(), &mut rng(seed)).unwrap();
        let out = decrypt(&key, &backup).unwrap();
        prop_assert_eq!(out.kind(), PayloadKind::Database);
        prop_assert_eq!(out.data(), &data[..]);

        let dir = tempfile::tempdir().unwrap();
        let file = decrypt_to_file(&key, Cursor::new(&backup), dir.path()).unwrap();
        prop_assert_eq!(std::fs::read(file.path()).unwrap(), data);
    }

    #[test]
    fn other_key_is_wrong_key(data in proptest::collection::vec(any::<u8>(), 0..512), seed: u64, key: [u8; 32], other: [u8; 32]) {
        prop_assume!(key != other);
        let backup = encrypt(&key, &data, &EncryptOptions::default(), &mut rng(seed)).unwrap();
        prop_assert!(matches!(decrypt(&other, &backup), Err(Error::WrongKey)));
    }
}

#[test]
fn round_trip_larger_than_the_read_buffers() {
    // Several 64 KiB chunks, compressible and incompressible parts.
    let mut data: Vec<u8> = (0..700_000u32).map(|i| (i % 251) as u8).collect();
    let mut r = rng(3);
    let mut noise = vec![0u8; 300_001];
    rand::RngCore::fill_bytes(&mut r, &mut noise);
    data.extend_from_slice(&noise);
    let backup = encrypt(&KEY, &data, &EncryptOptions::default(), &mut r).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = decrypt_to_file(&KEY, Cursor::new(&backup), dir.path()).unwrap();
    assert_eq!(file.output_len(), data.len() as u64);
    assert_eq!(std::fs::read(file.path()).unwrap(), data);
}

#[test]
fn every_flipped_byte_is_rejected() {
    let backup = small_backup();
    for i in 0..backup.len() {
        for mask in [0x01u8, 0x80, 0xff] {
            let mut bad = backup.clone();
            bad[i] ^= mask;
            let result = decrypt(&KEY, &bad);
            assert!(result.is_err(), "byte {i} ^ {mask:#04x} accepted");
        }
    }
}

#[test]
fn every_truncation_is_truncated_or_corrupted() {
    let backup = small_backup();
    for len in 0..backup.len() {
        match decrypt(&KEY, &backup[..len]) {
            Err(Error::Truncated { .. } | Error::Corrupted { .. }) => {}
            other => panic!("length {len}: {other:?}"),
        }
    }
}

#[test]
fn every_truncation_with_the_wrong_key_is_an_error() {
    let backup = small_backup();
    for len in 0..backup.len() {
        assert!(
            decrypt(&[0x22; 32], &backup[..len]).is_err(),
            "length {len}"
        );
    }
}

#[test]
fn fresh_iv_per_encryption() {
    let a = encrypt(&KEY, b"x", &EncryptOptions::default(), &mut rng(4)).unwrap();
    let b = encrypt(&KEY, b"x", &EncryptOptions::default(), &mut rng(5)).unwrap();
    assert_ne!(a, b);
}

#[test]
fn unknown_feature_flag_is_invalid_options() {
    let mut options = EncryptOptions::default();
    options.feature_flags.insert(38, true);
    let err = encrypt(&KEY, b"x", &options, &mut rng(6)).unwrap_err();
    assert!(matches!(err, Error::InvalidOptions { .. }), "{err}");
}

#[test]
fn oversized_header_is_invalid_options() {
    let mut options = EncryptOptions::default();
    options.app_version = "9".repeat(200);
    let err = encrypt(&KEY, b"x", &options, &mut rng(7)).unwrap_err();
    assert!(matches!(err, Error::InvalidOptions { .. }), "{err}");
}

#[test]
fn error_messages_are_distinct_and_carry_no_key() {
    let messages = [
        Error::WrongKey.to_string(),
        Error::WrongKeyOrCorrupted.to_string(),
        decrypt(&KEY, &small_backup()[..3]).unwrap_err().to_string(),
        decrypt(&KEY, b"").unwrap_err().to_string(),
    ];
    assert_eq!(
        messages[0],
        "wrong key: the 64-digit key does not decrypt this backup"
    );
    assert_ne!(messages[0], messages[1]);
    for m in &messages {
        assert!(!m.contains("1111"), "{m}");
    }
}

// --- vectors ----------------------------------------------------------------------------

struct Vector {
    name: String,
    expect: String,
    key: [u8; 32],
    kind: Option<String>,
    payload_sha256: Option<String>,
    bytes: Vec<u8>,
}

fn parse_vector(name: String, file: &[u8]) -> Vector {
    let split = file
        .windows(2)
        .position(|w| w == b"\n\n")
        .unwrap_or_else(|| panic!("{name}: no blank line after the header"));
    let head = std::str::from_utf8(&file[..split]).unwrap();
    let mut v = Vector {
        name,
        expect: String::new(),
        key: [0; 32],
        kind: None,
        payload_sha256: None,
        bytes: file[split + 2..].to_vec(),
    };
    for line in head.lines() {
        let (k, val) = line.split_once(": ").unwrap();
        match k {
            "expect" => v.expect = val.to_owned(),
            "key" => v.key = hex::decode(val).unwrap().try_into().unwrap(),
            "kind" => v.kind = Some(val.to_owned()),
            "payload-sha256" => v.payload_sha256 = Some(val.to_owned()),
            "comment" => {}
            other => panic!("{}: unknown header line {other}", v.name),
        }
    }
    v
}

fn outcome(result: &Result<(PayloadKind, Vec<u8>), Error>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(Error::WrongKey) => "wrong key",
        Err(Error::WrongKeyOrCorrupted) => "wrong key or corrupted",
        Err(Error::Corrupted { .. }) => "corrupted",
        Err(Error::Truncated { .. }) => "truncated",
        Err(Error::UnsupportedKeyType { .. }) => "unsupported key type",
        Err(Error::UnsupportedFormat { .. }) => "unsupported format",
        Err(_) => "other error",
    }
}

#[test]
fn vectors() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors");
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert!(names.len() >= 20, "vectors missing from {}", dir.display());
    for name in names {
        let v = parse_vector(name.clone(), &std::fs::read(dir.join(&name)).unwrap());
        let in_memory = decrypt(&v.key, &v.bytes).map(|d| (d.kind(), d.into_data()));
        let temp = tempfile::tempdir().unwrap();
        let streamed = decrypt_to_file(&v.key, Cursor::new(&v.bytes), temp.path())
            .map(|f| (f.kind(), std::fs::read(f.path()).unwrap()));
        for (api, result) in [("decrypt", &in_memory), ("decrypt_to_file", &streamed)] {
            assert_eq!(outcome(result), v.expect, "{name} via {api}: {result:?}");
            if let Ok((kind, data)) = result {
                let want_kind = match v.kind.as_deref() {
                    Some("database") => PayloadKind::Database,
                    Some("zip") => PayloadKind::Zip,
                    other => panic!("{name}: kind {other:?}"),
                };
                assert_eq!(*kind, want_kind, "{name}");
                assert_eq!(Some(sha256_hex(data)), v.payload_sha256, "{name}");
            }
        }
        if v.expect != "ok" {
            assert_eq!(
                files_in(temp.path()),
                0,
                "{name}: temporary file left behind"
            );
        }
    }
}
