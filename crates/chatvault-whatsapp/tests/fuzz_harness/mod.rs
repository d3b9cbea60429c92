//! Fuzz harness for `chatvault_whatsapp::decrypt`, shared by the libFuzzer target `crypt15`
//! in `fuzz/` (included via `#[path]` in `fuzz/src/lib.rs`) and `tests/fuzz_regressions.rs`,
//! which replays every saved input in `tests/fuzz_regressions/crypt15/`.
//!
//! The first byte selects a mode:
//! - 0: `decrypt` on the raw bytes (reaches the cleartext header parser; the MD5 trailer
//!   and the tag reject almost everything else);
//! - 1: the same with the MD5 trailer recomputed (reaches the tag check and the layout
//!   diagnosis past the trailer);
//! - 2: `flags u8 || payload`: the payload is sealed with AES-256-GCM under `FUZZ_KEY` behind a
//!   valid header (flag bit 0: feature table, bit 1: no MD5 trailer, i.e. the multi-file
//!   layout), so the zlib/ZIP payload decoder is reached; checked against `flate2` when
//!   `decrypt` succeeds;
//! - 3: `encrypt` then `decrypt` round trip of the bytes as a database.
//!
//! Only the public API and the crate's own dependencies (aes-gcm, hkdf, sha2, md-5, flate2,
//! rand_core) are used.

#![allow(dead_code)]

use std::io::Read;
use std::sync::OnceLock;

use aes_gcm::aead::consts::U16;
use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{AesGcm, Nonce};
use chatvault_whatsapp::{EncryptOptions, PayloadKind, decrypt, encrypt};
use md5::{Digest, Md5};
use rand_core::RngCore;

pub use chatvault_fuzz_support::{FixedRng, Harness};

/// The key of the WhatsApp reference fixture (published with it), so that seeding the corpus
/// with `msgstore.db.crypt15` gives an input that decrypts.
pub const FUZZ_KEY: [u8; 32] = [
    0x67, 0x30, 0xa5, 0x95, 0xa1, 0x48, 0x4d, 0x0c, 0x39, 0xc1, 0x01, 0xdc, 0x0a, 0xc8, 0x2e, 0xc5,
    0xe4, 0x01, 0xbb, 0x6f, 0x0e, 0x1b, 0x8e, 0xe2, 0xdc, 0x10, 0x4a, 0x6b, 0x36, 0x87, 0xf0, 0x17,
];

pub const TARGETS: &[Harness] = &[("crypt15", crypt15)];

/// The cleartext header `encrypt` writes (with or without the feature table) and its IV.
fn header(feature_table: bool) -> &'static (Vec<u8>, [u8; 16]) {
    static HEADERS: [OnceLock<(Vec<u8>, [u8; 16])>; 2] = [OnceLock::new(), OnceLock::new()];
    HEADERS[usize::from(feature_table)].get_or_init(|| {
        let mut opts = EncryptOptions::default();
        opts.feature_table = feature_table;
        let file = encrypt(&FUZZ_KEY, b"", &opts, &mut FixedRng(7)).expect("encrypt");
        let len = 1 + usize::from(feature_table) + usize::from(file[0]);
        let mut iv = [0u8; 16];
        FixedRng(7).fill_bytes(&mut iv);
        (file[..len].to_vec(), iv)
    })
}

/// `header || AES-256-GCM(payload) || tag || MD5(everything before)?`, under `FUZZ_KEY`.
pub fn seal_payload(feature_table: bool, md5_trailer: bool, payload: &[u8]) -> Vec<u8> {
    let (head, iv) = header(feature_table);
    let hk = hkdf::Hkdf::<sha2::Sha256>::new(None, &FUZZ_KEY);
    let mut key = [0u8; 32];
    hk.expand(b"backup encryption", &mut key).unwrap();
    let cipher = AesGcm::<aes::Aes256, U16>::new((&key).into());
    let mut out = head.clone();
    let start = out.len();
    out.extend_from_slice(payload);
    let tag = cipher
        .encrypt_in_place_detached(Nonce::<U16>::from_slice(iv), b"", &mut out[start..])
        .unwrap();
    out.extend_from_slice(&tag);
    if md5_trailer {
        let digest = Md5::digest(&out);
        out.extend_from_slice(&digest);
    }
    out
}

fn fix_md5(bytes: &[u8]) -> Vec<u8> {
    let mut v = bytes.to_vec();
    if v.len() >= 16 {
        let n = v.len() - 16;
        let digest = Md5::digest(&v[..n]);
        v[n..].copy_from_slice(&digest);
    }
    v
}

/// `crypt15`: see the module documentation for the modes.
pub fn crypt15(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 4 {
        0 => {
            let _ = decrypt(&FUZZ_KEY, rest);
        }
        1 => {
            let _ = decrypt(&FUZZ_KEY, &fix_md5(rest));
        }
        2 => {
            let Some((&flags, payload)) = rest.split_first() else {
                return;
            };
            let md5_trailer = flags & 2 == 0;
            let file = seal_payload(flags & 1 != 0, md5_trailer, payload);
            let Ok(out) = decrypt(&FUZZ_KEY, &file) else {
                return;
            };
            let is_zip = payload.starts_with(b"PK\x03\x04") || payload.starts_with(b"PK\x05\x06");
            if is_zip {
                assert_eq!(out.kind(), PayloadKind::Zip);
                assert_eq!(out.data(), payload);
            } else {
                assert!(md5_trailer, "a zlib payload needs the MD5 trailer");
                let mut inflated = Vec::new();
                flate2::read::ZlibDecoder::new(payload)
                    .read_to_end(&mut inflated)
                    .expect("decrypt accepted a zlib stream flate2 rejects");
                assert_eq!(out.data(), inflated.as_slice());
            }
        }
        _ => {
            let file = encrypt(
                &FUZZ_KEY,
                rest,
                &EncryptOptions::default(),
                &mut FixedRng(3),
            )
            .expect("encrypt with default options");
            let out = decrypt(&FUZZ_KEY, &file).expect("round trip");
            assert_eq!(out.data(), rest);
        }
    }
}
