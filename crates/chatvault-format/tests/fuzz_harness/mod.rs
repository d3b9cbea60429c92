//! Fuzz harnesses for the decoders of `chatvault-format`, one function per fuzz target.
//!
//! This file is the single source of truth for what each fuzz target does: the libFuzzer
//! targets in `fuzz/fuzz_targets/` include it (via `#[path]` in `fuzz/src/lib.rs`) and call
//! these functions, and `tests/fuzz_regressions.rs` replays every saved input in
//! `tests/fuzz_regressions/<target>/` through the same function. A harness must never panic
//! except through its own `assert!`s, which check round-trip invariants.
//!
//! The AEAD rejects almost every mutated input, so most harnesses take a *mode* byte first:
//! mode 0 feeds the bytes to the decoder as they are; the other modes seal the fuzz bytes with
//! a fixed key first (as a real writer would) so the parsing behind the envelope is reached.
//!
//! Only public API of `chatvault-format` is used; dependencies are the crate's own
//! (`blake3`) and `chatvault-fuzz-support` (a dev-dependency here, a dependency of
//! `fuzz/`), so this compiles both as part of the crate's tests and in `fuzz/`.

#![allow(dead_code)]

use std::sync::OnceLock;

use chatvault_format::blob::{self, BlobType};
use chatvault_format::config::{Config, ConfigError, RepoParams};
use chatvault_format::envelope::{self, EnvelopeError, ObjectKind};
use chatvault_format::id::{BlobId, PackId, RepoId};
use chatvault_format::key::{BackupKey, RepoKeys};
use chatvault_format::objects::{self, IndexFile, Lock, ObjectError, Snapshot, Versioned};
use chatvault_format::{FORMAT_VERSION, labels, list, pack, parts};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use chatvault_fuzz_support::{FixedRng, Harness};

/// The backup key every harness uses (public: this is test data).
pub const FUZZ_KEY: [u8; 32] = [0x42; 32];
/// The repository id every harness derives its subkeys with.
pub const FUZZ_REPO: [u8; 32] = [0x17; 32];
/// The pack id of `pack_header`.
pub const FUZZ_PACK: [u8; 32] = [0x5a; 32];
/// Object id used when the content does not determine one (raw mode, locks).
pub const FUZZ_ID: [u8; 32] = [0x3c; 32];

/// The subkeys of `FUZZ_KEY` for `FUZZ_REPO` (derived once).
pub fn keys() -> &'static RepoKeys {
    static KEYS: OnceLock<RepoKeys> = OnceLock::new();
    KEYS.get_or_init(|| BackupKey::from_bytes(FUZZ_KEY).derive(&RepoId::from_bytes(FUZZ_REPO)))
}

fn rng() -> FixedRng {
    FixedRng(1)
}

fn split_mode(data: &[u8]) -> Option<(u8, &[u8])> {
    data.split_first().map(|(m, rest)| (*m, rest))
}

/// All targets by name, for the regression runner and the fuzz crate.
pub const TARGETS: &[Harness] = &[
    ("key_text", key_text),
    ("key_file", key_file),
    ("config", config),
    ("pack_header", pack_header),
    ("index_object", index_object),
    ("snapshot_object", snapshot_object),
    ("tree_blob", tree_blob),
    ("list_blob", list_blob),
    ("lock_object", lock_object),
    ("blob_payload", blob_payload),
    ("envelope", envelope),
];

// ---------------------------------------------------------------------------------------------
// key

fn is_separator(c: char) -> bool {
    c.is_whitespace() || matches!(c, '-' | '_' | ':')
}

fn check_key_round_trips(k: &BackupKey) {
    let hex = k.to_hex();
    assert_eq!(hex.len(), 64);
    assert!(BackupKey::parse_hex(&hex).expect("to_hex parses") == *k);
    assert!(BackupKey::parse_hex(&k.to_grouped_hex()).expect("grouped parses") == *k);
    assert!(BackupKey::from_key_file(hex.as_bytes()).expect("hex file parses") == *k);
    let java = k.to_java_key_file();
    assert!(BackupKey::from_key_file(&java).expect("java key file parses") == *k);
}

/// `key_text`: `BackupKey::parse_hex` on any UTF-8 text.
pub fn key_text(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match BackupKey::parse_hex(text) {
        Ok(k) => {
            // Exactly the 64 hex digits, in order, once separators are removed.
            let digits: String = text.chars().filter(|c| !is_separator(*c)).collect();
            assert_eq!(digits.to_ascii_lowercase(), k.to_hex().as_str());
            check_key_round_trips(&k);
        }
        Err(_) => {
            let digits = text.chars().filter(|c| !is_separator(*c));
            let all_hex = digits.clone().all(|c| c.is_ascii_hexdigit());
            assert!(!all_hex || digits.count() != 64, "a valid key was rejected");
        }
    }
}

/// `key_file`: `BackupKey::from_key_file` on any bytes.
pub fn key_file(data: &[u8]) {
    if let Ok(k) = BackupKey::from_key_file(data) {
        check_key_round_trips(&k);
        if data.first() == Some(&0xac) {
            // Java form: the key is the last 32 bytes.
            assert_eq!(data.len(), 59);
            assert_eq!(&data[27..], k.expose_bytes());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// config

/// Replaces (or appends) the trailing BLAKE3 checksum so the structure checks pass.
fn fix_config_checksum(bytes: &[u8]) -> Vec<u8> {
    let mut v = bytes.to_vec();
    if v.len() < 32 {
        v.resize(32, 0);
    }
    let n = v.len() - 32;
    let sum = blake3::hash(&v[..n]);
    v[n..].copy_from_slice(sum.as_bytes());
    v
}

/// A config for `FUZZ_KEY`/`FUZZ_REPO` whose sealed parameters are `json` (any bytes).
pub fn config_with_params_json(json: &[u8]) -> Vec<u8> {
    let repo_id = RepoId::from_bytes(FUZZ_REPO);
    let k = keys();
    let sealed = envelope::seal(k, ObjectKind::Config, &FUZZ_REPO, json, &mut rng());
    let mut out = Vec::new();
    out.extend_from_slice(labels::CONFIG_MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(repo_id.as_bytes());
    out.extend_from_slice(&k.key_check(&repo_id));
    out.extend_from_slice(&(sealed.len() as u32).to_le_bytes());
    out.extend_from_slice(&sealed);
    out.extend_from_slice(blake3::hash(&out).as_bytes());
    out
}

fn decode_config(bytes: &[u8]) -> Result<RepoParams, ConfigError> {
    let key = BackupKey::from_bytes(FUZZ_KEY);
    let peeked = Config::peek_repo_id(bytes);
    let decoded = Config::decode(bytes, &key);
    match (&peeked, &decoded) {
        (Ok(id), Ok((cfg, _))) => assert_eq!(*id, cfg.repo_id),
        (Err(e), Err(d)) => assert_eq!(e, d, "peek and decode disagree on a structural error"),
        (Err(e), Ok(_)) => panic!("peek failed ({e}) but decode succeeded"),
        (Ok(_), Err(_)) => {}
    }
    decoded.map(|(cfg, _)| cfg.params)
}

/// `config`: mode 0 raw bytes; mode 1 raw bytes with the checksum fixed up; mode 2 the bytes
/// are the sealed JSON parameters of an otherwise valid config.
pub fn config(data: &[u8]) {
    let Some((mode, rest)) = split_mode(data) else {
        return;
    };
    match mode % 3 {
        0 => {
            let _ = decode_config(rest);
        }
        1 => {
            let _ = decode_config(&fix_config_checksum(rest));
        }
        _ => {
            if let Ok(params) = decode_config(&config_with_params_json(rest)) {
                // Round trip through the real encoder.
                let repo_id = RepoId::from_bytes(FUZZ_REPO);
                let enc = Config::encode(&repo_id, &params, keys(), &mut rng());
                assert_eq!(
                    decode_config(&enc).expect("re-encoded config decodes"),
                    params
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// pack header

/// A pack of `area_len` zero bytes followed by `plain` sealed as its header.
pub fn pack_with_header_plaintext(area_len: usize, plain: &[u8]) -> Vec<u8> {
    let mut pack = vec![0u8; area_len];
    let sealed = envelope::seal(
        keys(),
        ObjectKind::PackHeader,
        &FUZZ_PACK,
        plain,
        &mut rng(),
    );
    pack.extend_from_slice(&sealed);
    pack.extend_from_slice(&(sealed.len() as u32).to_le_bytes());
    pack
}

/// A format 2 pack: `area_len` zero bytes, `pad` zero bytes, the sealed `plain` header and a
/// sealed trailer naming its length.
pub fn pack_v2_with_header_plaintext(area_len: usize, pad: usize, plain: &[u8]) -> Vec<u8> {
    let mut pack = vec![0u8; area_len + pad];
    let sealed = envelope::seal(
        keys(),
        ObjectKind::PackHeader,
        &FUZZ_PACK,
        plain,
        &mut rng(),
    );
    let trailer = envelope::seal(
        keys(),
        ObjectKind::PackTrailer,
        &FUZZ_PACK,
        &(sealed.len() as u32).to_le_bytes(),
        &mut rng(),
    );
    pack.extend_from_slice(&sealed);
    pack.extend_from_slice(&trailer);
    pack
}

/// `pack_header`: mode 0 raw pack bytes; mode 1 `area_len u16le || header plaintext`, sealed
/// as a format 1 pack; mode 2 `area_len u16le || pad u8 || header plaintext`, sealed as a
/// format 2 pack (trailer).
pub fn pack_header(data: &[u8]) {
    let Some((mode, rest)) = split_mode(data) else {
        return;
    };
    let pack_id = PackId::from_bytes(FUZZ_PACK);
    let pack = match mode % 3 {
        0 => rest.to_vec(),
        1 => {
            if rest.len() < 2 {
                return;
            }
            let area = u16::from_le_bytes([rest[0], rest[1]]) as usize;
            pack_with_header_plaintext(area, &rest[2..])
        }
        _ => {
            if rest.len() < 3 {
                return;
            }
            let area = u16::from_le_bytes([rest[0], rest[1]]) as usize;
            let v2 = pack_v2_with_header_plaintext(area, usize::from(rest[2]), &rest[3..]);
            if let Ok(entries) = pack::decode_header(keys(), &pack_id, &v2) {
                let tail = &v2[v2.len() - pack::TRAILER_LEN..];
                let (start, _) = pack::header_location_v2(keys(), &pack_id, tail, v2.len() as u64)
                    .expect("a pack that decoded has a trailer");
                let end = entries.last().map_or(0, |e| e.offset + u64::from(e.length));
                assert!(end <= start, "entries stay out of the header");
                let mut again = v2[..end as usize].to_vec();
                again.extend(pack::encode_tail_v2(
                    keys(),
                    &pack_id,
                    &entries,
                    end,
                    &mut rng(),
                ));
                assert_eq!(pack::padme(again.len() as u64), again.len() as u64);
                assert_eq!(
                    pack::decode_header(keys(), &pack_id, &again).expect("re-encoded v2 decodes"),
                    entries
                );
            }
            return;
        }
    };
    let Ok(entries) = pack::decode_header(keys(), &pack_id, &pack) else {
        return;
    };
    // A raw input may be a whole format 2 pack (the seeds include one): its entries end before
    // the header the trailer names.
    if pack.len() >= pack::TRAILER_LEN
        && let Some((start, _)) = pack::header_location_v2(
            keys(),
            &pack_id,
            &pack[pack.len() - pack::TRAILER_LEN..],
            pack.len() as u64,
        )
    {
        let end = entries.last().map_or(0, |e| e.offset + u64::from(e.length));
        assert!(end <= start, "entries stay out of the header");
        return;
    }
    // Format 1 from here.
    let hlen = pack::header_len_from_tail(&pack[pack.len() - 4..]).expect("4 bytes");
    let area = (pack.len() - 4 - hlen) as u64;
    let mut expected = 0u64;
    for e in &entries {
        assert_eq!(e.offset, expected, "entries tile the pack");
        assert!(e.length as usize >= envelope::OVERHEAD);
        expected += u64::from(e.length);
    }
    assert_eq!(expected, area, "entries cover the blob area");
    // Round trip through the real encoder.
    let mut again = pack[..area as usize].to_vec();
    again.extend_from_slice(&pack::encode_header(keys(), &pack_id, &entries, &mut rng()));
    assert_eq!(
        pack::decode_header(keys(), &pack_id, &again).expect("re-encoded header decodes"),
        entries
    );
}

// ---------------------------------------------------------------------------------------------
// index / snapshot objects

/// Seals `payload` (compression byte + body) as an object of `kind`, named after its
/// decompressed content when it decompresses (so `open_object` gets past the id check).
pub fn seal_object_payload(kind: ObjectKind, payload: &[u8]) -> ([u8; 32], Vec<u8>) {
    let id = match blob::decompress(payload) {
        Ok(json) => keys().keyed_id(kind.label(), &json),
        Err(_) => FUZZ_ID,
    };
    (id, envelope::seal(keys(), kind, &id, payload, &mut rng()))
}

/// Seals `json` (any bytes) exactly as `objects::seal_object` would seal a serialized value.
pub fn seal_object_json(kind: ObjectKind, json: &[u8]) -> ([u8; 32], Vec<u8>) {
    let id = keys().keyed_id(kind.label(), json);
    let sealed = envelope::seal(keys(), kind, &id, &blob::compress(json), &mut rng());
    (id, sealed)
}

fn object<T>(kind: ObjectKind, data: &[u8])
where
    T: DeserializeOwned + Serialize + Versioned + PartialEq + std::fmt::Debug,
{
    let Some((mode, rest)) = split_mode(data) else {
        return;
    };
    let k = keys();
    match mode % 3 {
        0 => {
            let _ = objects::open_object::<T>(k, kind, &FUZZ_ID, rest);
        }
        1 => {
            let (id, sealed) = seal_object_payload(kind, rest);
            match objects::open_object::<T>(k, kind, &id, &sealed) {
                Err(ObjectError::Envelope(_)) | Err(ObjectError::IdMismatch) => {
                    assert!(
                        blob::decompress(rest).is_err(),
                        "a valid object was rejected"
                    );
                }
                _ => {}
            }
        }
        _ => {
            let (id, sealed) = seal_object_json(kind, rest);
            if let Ok(v) = objects::open_object::<T>(k, kind, &id, &sealed) {
                let (id2, sealed2) = objects::seal_object(k, kind, &v, &mut rng())
                    .expect("an object that opened is small enough to seal");
                let back: T =
                    objects::open_object(k, kind, &id2, &sealed2).expect("re-sealed object opens");
                assert_eq!(back, v);
            }
        }
    }
}

/// `index_object`: `open_object::<IndexFile>` (mode 0 raw, 1 sealed payload, 2 sealed JSON).
pub fn index_object(data: &[u8]) {
    object::<IndexFile>(ObjectKind::Index, data);
}

/// `snapshot_object`: `open_object::<Snapshot>` (mode 0 raw, 1 sealed payload, 2 sealed JSON).
pub fn snapshot_object(data: &[u8]) {
    object::<Snapshot>(ObjectKind::Snapshot, data);
}

// ---------------------------------------------------------------------------------------------
// tree blobs

/// `tree_blob`: mode 0 `parse_tree_blob` on the bytes (+ round trip); mode 1 `open_blob(Tree)` on
/// raw bytes; mode 2 the bytes are a blob payload, sealed under its id, opened and parsed.
pub fn tree_blob(data: &[u8]) {
    let Some((mode, rest)) = split_mode(data) else {
        return;
    };
    let k = keys();
    let json = match mode % 3 {
        0 => rest.to_vec(),
        1 => match blob::open_blob(k, BlobType::Tree, &BlobId::from_bytes(FUZZ_ID), rest) {
            Ok(p) => p,
            Err(_) => return,
        },
        _ => {
            let Ok(plain) = blob::decompress(rest) else {
                return;
            };
            let id = blob::blob_id(k, BlobType::Tree, &plain);
            let sealed = envelope::seal(k, ObjectKind::TreeBlob, id.as_bytes(), rest, &mut rng());
            let opened = blob::open_blob(k, BlobType::Tree, &id, &sealed).expect("valid blob");
            assert_eq!(opened, plain);
            opened
        }
    };
    match objects::parse_tree_blob(&json) {
        Ok(objects::TreeBlob::Listing(tree)) => {
            let again = objects::tree_plaintext(&tree).expect("a tree that parsed re-serializes");
            assert_eq!(
                objects::parse_tree(&again).expect("re-serialized tree parses"),
                tree
            );
        }
        Ok(objects::TreeBlob::Parts(ids)) => {
            assert!(
                objects::parse_tree(&json).is_err(),
                "parts are not a listing"
            );
            let again = parts::part_list_plaintext(&ids).expect("a part list re-serializes");
            assert_eq!(
                objects::parse_tree_blob(&again).expect("re-serialized part list parses"),
                objects::TreeBlob::Parts(ids)
            );
        }
        Err(_) => assert!(objects::parse_tree(&json).is_err()),
    }
}

// ---------------------------------------------------------------------------------------------
// content lists

/// `list_blob`: mode 0 `list::decode` on the bytes (+ re-encode round trip); mode 1
/// `open_blob(List)` on raw bytes, then decode.
pub fn list_blob(data: &[u8]) {
    let Some((mode, rest)) = split_mode(data) else {
        return;
    };
    let plain = match mode % 2 {
        0 => rest.to_vec(),
        _ => match blob::open_blob(keys(), BlobType::List, &BlobId::from_bytes(FUZZ_ID), rest) {
            Ok(p) => p,
            Err(_) => return,
        },
    };
    if let Ok(l) = list::decode(&plain) {
        assert!(!l.ids.is_empty() && l.ids.len() <= list::LIST_MAX && l.level <= list::MAX_LEVEL);
        assert_eq!(
            list::encode(l.level, &l.ids),
            plain,
            "decode accepts only canonical bytes"
        );
        assert!(list::decode_at(&plain, l.level).is_ok());
    }
}

// ---------------------------------------------------------------------------------------------
// locks

/// `lock_object`: mode 0 `open_lock` on raw bytes; mode 1 the bytes are the lock JSON, sealed.
pub fn lock_object(data: &[u8]) {
    let Some((mode, rest)) = split_mode(data) else {
        return;
    };
    let k = keys();
    let sealed = if mode % 2 == 0 {
        rest.to_vec()
    } else {
        envelope::seal(k, ObjectKind::Lock, &FUZZ_ID, rest, &mut rng())
    };
    if let Ok(lock) = objects::open_lock(k, &FUZZ_ID, &sealed) {
        let again = objects::seal_lock(k, &FUZZ_ID, &lock, &mut rng());
        let back: Lock = objects::open_lock(k, &FUZZ_ID, &again).expect("re-sealed lock opens");
        assert_eq!(back, lock);
    }
}

// ---------------------------------------------------------------------------------------------
// blob payloads

/// `blob_payload`: mode 0 `blob::decompress` (+ round trip); mode 1 `open_blob(Data)` on raw
/// bytes; mode 2 the bytes are a payload sealed under its id (`open_blob` and `open_blob_into`
/// must agree); mode 3 compress round trip.
pub fn blob_payload(data: &[u8]) {
    let Some((mode, rest)) = split_mode(data) else {
        return;
    };
    let k = keys();
    match mode % 4 {
        0 => {
            let decoded = blob::decompress(rest);
            if let Some((&1, body)) = rest.split_first() {
                // Differential check against zstd's one-shot API, with a small cap to stay cheap.
                const SMALL: usize = 256 << 10;
                match (&decoded, zstd::bulk::decompress(body, SMALL)) {
                    (Ok(a), Ok(b)) => assert_eq!(*a, b),
                    (Ok(a), Err(_)) => assert!(a.len() > SMALL, "accepted a frame zstd rejects"),
                    (Err(_), Ok(b)) => panic!("rejected a frame zstd decodes ({} bytes)", b.len()),
                    (Err(_), Err(_)) => {}
                }
            }
            if let Ok(plain) = decoded {
                assert!(plain.len() <= blob::MAX_BLOB_LEN);
                assert_eq!(blob::decompress(&blob::compress(&plain)).unwrap(), plain);
            }
        }
        1 => {
            let _ = blob::open_blob(k, BlobType::Data, &BlobId::from_bytes(FUZZ_ID), rest);
        }
        2 => {
            let (id, expected) = match blob::decompress(rest) {
                Ok(plain) => (blob::blob_id(k, BlobType::Data, &plain), Some(plain)),
                Err(_) => (BlobId::from_bytes(FUZZ_ID), None),
            };
            let sealed = envelope::seal(k, ObjectKind::DataBlob, id.as_bytes(), rest, &mut rng());
            let opened = blob::open_blob(k, BlobType::Data, &id, &sealed);
            // The restore's path (open_blob_into, after other blobs in the buffer) agrees.
            let mut buf = vec![0xa5; 7];
            let mut in_place = sealed.clone();
            match (
                blob::open_blob_into(k, BlobType::Data, &id, &mut in_place, &mut buf),
                &opened,
            ) {
                (Ok(blob::Opened::InPlace(r)), Ok(plain)) => {
                    assert_eq!(&in_place[r], &plain[..]);
                    assert_eq!(buf, [0xa5; 7]);
                }
                (Ok(blob::Opened::Appended(r)), Ok(plain)) => {
                    assert_eq!(&buf[..7], [0xa5; 7]);
                    assert_eq!(&buf[r], &plain[..]);
                }
                (Err(a), Err(b)) => {
                    assert_eq!(&a, b);
                    assert_eq!(buf, [0xa5; 7]);
                }
                (a, b) => panic!("open_blob_into {a:?}, open_blob {b:?}"),
            }
            match expected {
                Some(plain) => assert_eq!(opened.expect("valid blob opens"), plain),
                None => assert!(opened.is_err()),
            }
        }
        _ => {
            let id = blob::blob_id(k, BlobType::Data, rest);
            let sealed = blob::seal_blob(k, BlobType::Data, &id, rest, &mut rng());
            assert_eq!(
                blob::open_blob(k, BlobType::Data, &id, &sealed).unwrap(),
                rest
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// envelopes

const KINDS: [ObjectKind; 7] = [
    ObjectKind::Config,
    ObjectKind::PackHeader,
    ObjectKind::DataBlob,
    ObjectKind::TreeBlob,
    ObjectKind::Index,
    ObjectKind::Snapshot,
    ObjectKind::Lock,
];

/// `envelope`: mode 0 `envelope::open` on raw bytes for every kind; mode 1
/// `kind u8 || flip u16le || plaintext`: seal/open round trip, and one flipped bit or a
/// truncation is always rejected.
pub fn envelope(data: &[u8]) {
    let Some((mode, rest)) = split_mode(data) else {
        return;
    };
    let k = keys();
    if mode % 2 == 0 {
        for kind in KINDS {
            if let Err(e) = envelope::open(k, kind, &FUZZ_ID, rest) {
                assert_eq!(
                    e,
                    if rest.len() < envelope::OVERHEAD {
                        EnvelopeError::Truncated { len: rest.len() }
                    } else {
                        EnvelopeError::Authentication
                    }
                );
            }
        }
        return;
    }
    if rest.len() < 3 {
        return;
    }
    let kind = KINDS[rest[0] as usize % KINDS.len()];
    let flip = u16::from_le_bytes([rest[1], rest[2]]) as usize;
    let plain = &rest[3..];
    let mut sealed = envelope::seal(k, kind, &FUZZ_ID, plain, &mut rng());
    assert_eq!(envelope::open(k, kind, &FUZZ_ID, &sealed).unwrap(), plain);
    let other = KINDS[(rest[0] as usize + 1) % KINDS.len()];
    assert!(envelope::open(k, other, &FUZZ_ID, &sealed).is_err());
    assert!(envelope::open(k, kind, &FUZZ_ID, &sealed[..sealed.len() - 1]).is_err());
    let bit = flip % (sealed.len() * 8);
    sealed[bit / 8] ^= 1 << (bit % 8);
    assert!(envelope::open(k, kind, &FUZZ_ID, &sealed).is_err());
}
