//! Unit tests that need the crate's internals: the real fixture's header, and the
//! generator of the test vectors in `tests/vectors/`.

use std::path::PathBuf;

use prost::Message;
use sha2::{Digest, Sha256};

use crate::prefix::{self, BackupPrefix};
use crate::{EncryptOptions, Error, PayloadKind, decrypt};

const FIXTURE_KEY_HEX: &str = "6730a595a1484d0c39c101dc0ac82ec5e401bb6f0e1b8ee2dc104a6b3687f017";

fn fixture_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/whatsapp");
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

#[test]
fn fixture_decrypts_to_msgstore_db() {
    let Some(dir) = fixture_dir() else { return };
    let backup = std::fs::read(dir.join("msgstore.db.crypt15")).unwrap();
    let out = decrypt(&fixture_key(), &backup).unwrap();
    assert_eq!(out.kind(), PayloadKind::Database);
    assert_eq!(
        hex::encode(Sha256::digest(out.data())),
        "1425b944a2e3885fc936a7bb82f6548c5cc09523a2f61f02aa836c4ed8bbd16e"
    );
    let h = out.header();
    assert!(h.feature_table);
    assert_eq!(h.key_type, Some(1));
    assert_eq!(h.app_version, "2.22.5.13");
    assert_eq!(h.jid_suffix, "67");
    assert_eq!(h.backup_version, Some(0));
    assert_eq!(h.feature_flags.len(), 33);
}

#[test]
fn fixture_key_file_ends_with_the_readme_key() {
    let Some(dir) = fixture_dir() else { return };
    let file = std::fs::read(dir.join("encrypted_backup.key")).unwrap();
    assert_eq!(file[file.len() - 32..], fixture_key());
}

#[test]
fn fixture_prefix_reencodes_byte_for_byte() {
    let Some(dir) = fixture_dir() else { return };
    let backup = std::fs::read(dir.join("msgstore.db.crypt15")).unwrap();
    let parsed = prefix::parse(&backup[..prefix::MAX_HEADER_LEN]).unwrap();
    let start = if parsed.header.feature_table { 2 } else { 1 };
    let raw = &backup[start..parsed.len];
    let decoded = BackupPrefix::decode(raw).unwrap();
    assert_eq!(decoded.encode_to_vec(), raw);
    // And our writer, fed the fixture's metadata and IV, writes the same header.
    let info = EncryptOptions::from_header(&parsed.header).info().unwrap();
    let ours = prefix::serialize(&parsed.iv, true, info).unwrap();
    assert_eq!(ours, backup[..parsed.len]);
}

#[test]
fn default_options_match_the_fixture_flags() {
    let Some(dir) = fixture_dir() else { return };
    let backup = std::fs::read(dir.join("msgstore.db.crypt15")).unwrap();
    let parsed = prefix::parse(&backup[..prefix::MAX_HEADER_LEN]).unwrap();
    let d = EncryptOptions::default();
    assert_eq!(d.feature_flags, parsed.header.feature_flags);
    assert_eq!(d.app_version, parsed.header.app_version);
    assert_eq!(d.backup_version, parsed.header.backup_version);
}

#[test]
fn fixture_payload_is_zlib_level_1() {
    let Some(dir) = fixture_dir() else { return };
    let backup = std::fs::read(dir.join("msgstore.db.crypt15")).unwrap();
    let parsed = prefix::parse(&backup[..prefix::MAX_HEADER_LEN]).unwrap();
    let key = crate::kdf::backup_encryption_key(&fixture_key());
    let gcm = crate::gcm::Gcm::new(&key, &parsed.iv);
    let mut first = [0u8; 2];
    first.copy_from_slice(&backup[parsed.len..parsed.len + 2]);
    gcm.keystream().apply(&mut first);
    assert_eq!(first, [0x78, 0x01]);
}

#[test]
fn key_type_password_is_unsupported() {
    let mut prefix = BackupPrefix {
        key_type: Some(1),
        e2ee_key_data: Some(prefix::C15Iv { iv: vec![0; 16] }),
        key_type_new: Some(2),
        ..Default::default()
    };
    let mut file = vec![0u8];
    let body = prefix.encode_to_vec();
    file[0] = body.len() as u8;
    file.extend_from_slice(&body);
    assert!(matches!(
        prefix::parse(&file),
        Err(Error::UnsupportedKeyType { key_type: 2 })
    ));
    prefix.key_type_new = Some(3);
    let body = prefix.encode_to_vec();
    file.truncate(1);
    file[0] = body.len() as u8;
    file.extend_from_slice(&body);
    assert!(prefix::parse(&file).is_ok());
}

/// Writes `tests/vectors/*`: one defect per file, `header lines, blank line, raw bytes`.
/// Run with `cargo test -p chatvault-whatsapp --lib -- --ignored regenerate_vectors` after a
/// deliberate format change, and review the diff.
#[test]
#[ignore = "writes tests/vectors; run by hand"]
fn regenerate_vectors() {
    use crate::encrypt::{compress, seal};
    use crate::prefix::{BackupInfo, C15Iv};

    let key: [u8; 32] = std::array::from_fn(|i| i as u8);
    let other_key: [u8; 32] = std::array::from_fn(|i| 0xff - i as u8);
    let iv: [u8; 16] = std::array::from_fn(|i| 0xa0 + i as u8);
    let db: &[u8] = b"SQLite format 3\0chatvault crypt15 test vector\n";
    let zip: &[u8] = b"PK\x05\x06\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0";

    let header_with = |prefix: &BackupPrefix, flag: bool| {
        let body = prefix.encode_to_vec();
        let mut h = vec![body.len() as u8];
        if flag {
            h.push(0x01);
        }
        h.extend_from_slice(&body);
        h
    };
    let std_prefix = || BackupPrefix {
        key_type: Some(1),
        e2ee_key_data: Some(C15Iv { iv: iv.to_vec() }),
        info: Some(EncryptOptions::default().info().unwrap()),
        ..Default::default()
    };
    let std_header = || header_with(&std_prefix(), true);
    let ok = || seal(&key, &iv, std_header(), compress(db, 1), true);
    let md5_fix = |mut f: Vec<u8>| {
        let n = f.len() - 16;
        let d = md5::Md5::digest(&f[..n]);
        f[n..].copy_from_slice(&d);
        f
    };
    let hdr_len = std_header().len();

    // (file name, expect, comment, bytes, Some((kind, payload)) for "ok")
    type Vector<'a> = (
        &'a str,
        &'a str,
        &'a str,
        Vec<u8>,
        Option<(&'a str, &'a [u8])>,
    );
    let mut vectors: Vec<Vector> = Vec::new();
    vectors.push((
        "ok_msgstore",
        "ok",
        "a msgstore backup as encrypt() writes it",
        ok(),
        Some(("database", db)),
    ));
    vectors.push((
        "ok_no_feature_table",
        "ok",
        "no 0x01 byte after the length byte, no feature flags (non-msgstore backups)",
        {
            let mut p = std_prefix();
            p.info = Some(BackupInfo {
                app_version: "2.24.1.1".into(),
                jid_suffix: "42".into(),
                ..Default::default()
            });
            seal(&key, &iv, header_with(&p, false), compress(db, 6), true)
        },
        Some(("database", db)),
    ));
    vectors.push((
        "ok_key_type_new_3",
        "ok",
        "field 6 key_type_new = 3 (E2EE_ENCRYPTION_KEY), as WhatsApp 2.26 writes",
        {
            let mut p = std_prefix();
            p.key_type_new = Some(3);
            seal(&key, &iv, header_with(&p, true), compress(db, 1), true)
        },
        Some(("database", db)),
    ));
    vectors.push((
        "ok_multi_file_zip",
        "ok",
        "multi-file backup: the plaintext is a ZIP (not zlib) and there is no MD5 trailer",
        seal(
            &key,
            &iv,
            header_with(&std_prefix(), false),
            zip.to_vec(),
            false,
        ),
        Some(("zip", zip)),
    ));
    vectors.push((
        "ok_zip_inside_zlib",
        "ok",
        "a ZIP archive zlib-compressed, with the MD5 trailer",
        seal(&key, &iv, std_header(), compress(zip, 1), true),
        Some(("zip", zip)),
    ));
    vectors.push((
        "wrong_key",
        "wrong key",
        "intact file encrypted under another key",
        seal(&other_key, &iv, std_header(), compress(db, 1), true),
        None,
    ));
    vectors.push((
        "wrong_key_multi_file",
        "wrong key or corrupted",
        "multi-file backup under another key: no MD5 trailer, so not told apart from damage",
        seal(
            &other_key,
            &iv,
            header_with(&std_prefix(), false),
            zip.to_vec(),
            false,
        ),
        None,
    ));
    vectors.push((
        "tampered_tag_md5_recomputed",
        "wrong key",
        "tag flipped and MD5 recomputed: indistinguishable from a wrong key (by design)",
        {
            let mut f = ok();
            let n = f.len();
            f[n - 20] ^= 0x01;
            md5_fix(f)
        },
        None,
    ));
    vectors.push((
        "md5_mismatch",
        "corrupted",
        "MD5 trailer flipped; the ciphertext authenticates",
        {
            let mut f = ok();
            let n = f.len();
            f[n - 1] ^= 0x01;
            f
        },
        None,
    ));
    vectors.push((
        "ciphertext_flipped",
        "corrupted",
        "one ciphertext byte flipped (MD5 and tag both fail)",
        {
            let mut f = ok();
            f[hdr_len + 10] ^= 0x80;
            f
        },
        None,
    ));
    vectors.push((
        "header_flipped",
        "corrupted",
        "one byte of the app version flipped: header is not authenticated by GCM, MD5 catches it",
        {
            let mut f = ok();
            f[25] ^= 0x01;
            f
        },
        None,
    ));
    vectors.push((
        "truncated_in_ciphertext",
        "corrupted",
        "file cut in the middle of the ciphertext",
        {
            let mut f = ok();
            f.truncate(hdr_len + 20);
            f
        },
        None,
    ));
    vectors.push((
        "md5_trailer_missing",
        "truncated",
        "the last 16 bytes cut off: ciphertext and tag verify as a multi-file layout, but the \
         payload is zlib, not a ZIP",
        {
            let mut f = ok();
            f.truncate(f.len() - 16);
            f
        },
        None,
    ));
    vectors.push((
        "truncated_before_tag",
        "truncated",
        "fewer than 16 bytes after the header",
        {
            let mut f = ok();
            f.truncate(hdr_len + 15);
            f
        },
        None,
    ));
    vectors.push((
        "truncated_header",
        "truncated",
        "file ends inside the protobuf",
        {
            let mut f = ok();
            f.truncate(40);
            f
        },
        None,
    ));
    vectors.push((
        "trailing_garbage",
        "corrupted",
        "8 bytes appended after the MD5 trailer",
        {
            let mut f = ok();
            f.extend_from_slice(b"GARBAGE!");
            f
        },
        None,
    ));
    vectors.push((
        "bad_protobuf",
        "corrupted",
        "header bytes are not a valid protobuf (field 3 length runs past the header)",
        {
            let mut h = vec![4u8, 0x01, 0x08, 0x01, 0x1a, 0x7f];
            h.extend_from_slice(&[0u8; 64]);
            md5_fix(h)
        },
        None,
    ));
    vectors.push((
        "no_iv",
        "corrupted",
        "header without field 3 (and without crypt14's field 2)",
        {
            let mut p = std_prefix();
            p.e2ee_key_data = None;
            seal(&key, &iv, header_with(&p, true), compress(db, 1), true)
        },
        None,
    ));
    vectors.push((
        "iv_12_bytes",
        "corrupted",
        "the IV in field 3 is 12 bytes, not 16",
        {
            let mut p = std_prefix();
            p.e2ee_key_data = Some(C15Iv {
                iv: iv[..12].to_vec(),
            });
            seal(&key, &iv, header_with(&p, true), compress(db, 1), true)
        },
        None,
    ));
    vectors.push((
        "crypt14_header",
        "unsupported format",
        "field 2 (crypt14 cipher data) instead of field 3",
        {
            let mut p = std_prefix();
            p.e2ee_key_data = None;
            p.key_type = None;
            p.crypt14_data = Some(vec![0x0a, 0x00]);
            seal(&key, &iv, header_with(&p, true), compress(db, 1), true)
        },
        None,
    ));
    vectors.push((
        "key_type_password",
        "unsupported key type",
        "field 6 key_type_new = 2 (E2EE_PASSWORD)",
        {
            let mut p = std_prefix();
            p.key_type_new = Some(2);
            seal(&key, &iv, header_with(&p, true), compress(db, 1), true)
        },
        None,
    ));
    vectors.push((
        "key_type_wa_provided",
        "unsupported key type",
        "field 1 key_type = 0 written explicitly (WhatsApp-held key)",
        {
            let mut p = std_prefix();
            p.key_type = Some(0);
            seal(&key, &iv, header_with(&p, true), compress(db, 1), true)
        },
        None,
    ));
    vectors.push((
        "zlib_trailing_data",
        "corrupted",
        "authenticated payload: a complete zlib stream followed by extra bytes",
        {
            let mut z = compress(db, 1);
            z.extend_from_slice(b"extra");
            seal(&key, &iv, std_header(), z, true)
        },
        None,
    ));
    vectors.push((
        "zlib_incomplete",
        "corrupted",
        "authenticated payload: a zlib stream cut short before encryption",
        {
            let mut z = compress(db, 1);
            z.truncate(z.len() - 6);
            seal(&key, &iv, std_header(), z, true)
        },
        None,
    ));
    vectors.push((
        "payload_not_zlib",
        "corrupted",
        "authenticated payload that is neither zlib nor ZIP",
        seal(&key, &iv, std_header(), db.to_vec(), true),
        None,
    ));
    vectors.push((
        "payload_empty",
        "corrupted",
        "authenticated empty payload",
        seal(&key, &iv, std_header(), Vec::new(), true),
        None,
    ));

    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vectors");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, expect, comment, bytes, payload) in vectors {
        let mut text = format!(
            "expect: {expect}\ncomment: {comment}\nkey: {}\n",
            hex::encode(key)
        );
        if let Some((kind, data)) = payload {
            text.push_str(&format!(
                "kind: {kind}\npayload-sha256: {}\n",
                hex::encode(Sha256::digest(data))
            ));
        }
        text.push('\n');
        let mut file = text.into_bytes();
        file.extend_from_slice(&bytes);
        std::fs::write(dir.join(name), file).unwrap();
    }
}
