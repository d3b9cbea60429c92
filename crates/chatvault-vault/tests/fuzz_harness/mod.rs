//! Fuzz harness for the account token verifier of `chatvault-vault` (`token::Verifier`).
//!
//! Same pattern as `chatvault-format`'s harnesses: `fuzz/src/lib.rs` includes this file with
//! `#[path]` and the libFuzzer target `vault_token` calls [`vault_token`];
//! `tests/fuzz_regressions.rs` replays every file in `tests/fuzz_regressions/vault_token/`
//! through the same function. Only public API (`chatvault_vault::token`) is used.

#![allow(dead_code)]

use std::sync::OnceLock;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chatvault_vault::token::{self, MAX_TOKEN_LEN, Verifier};
use ed25519_dalek::{Signer as _, SigningKey};

pub use chatvault_fuzz_support::Harness;

/// The clock of the harness (2026-01-01T00:00:00Z).
pub const FUZZ_NOW: u64 = 1_767_225_600;
/// Seed of the issuer key (test data).
pub const FUZZ_ISSUER: [u8; 32] = [0x1d; 32];

#[derive(serde::Deserialize)]
struct HeaderCheck {
    alg: String,
}

#[derive(serde::Deserialize)]
struct ClaimsCheck {
    iss: String,
    sub: String,
    aud: String,
    iat: u64,
    exp: u64,
}

/// All targets by name, for the regression runner and the fuzz crate.
pub const TARGETS: &[Harness] = &[("vault_token", vault_token)];

/// The issuer's signing key (derived once: curve arithmetic is slow under the fuzzer's
/// instrumentation).
pub fn issuer() -> &'static SigningKey {
    static KEY: OnceLock<SigningKey> = OnceLock::new();
    KEY.get_or_init(|| SigningKey::from_bytes(&FUZZ_ISSUER))
}

fn verifier() -> &'static Verifier {
    static V: OnceLock<Verifier> = OnceLock::new();
    V.get_or_init(|| Verifier::new(issuer().verifying_key()))
}

/// Signs `header_json` and `claims_json` as a compact JWT (whatever the JSON says).
pub fn sign(header_json: &[u8], claims_json: &[u8]) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header_json),
        URL_SAFE_NO_PAD.encode(claims_json)
    );
    let sig = issuer().sign(input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes()))
}

/// `vault_token`: `Verifier::verify` at [`FUZZ_NOW`] with the issuer key [`FUZZ_ISSUER`].
///
/// - mode 0: the bytes are the token (UTF-8);
/// - mode 1: `header_len u8 ‖ header JSON ‖ claims JSON`, signed with the issuer key, so the
///   header and claims parsers behind the signature are reached;
/// - mode 2: `token::parse_public_key` on the text (the issuer key file).
///
/// Invariants: an accepted token is at most `MAX_TOKEN_LEN` bytes, has three parts, a header
/// with `"alg":"EdDSA"`, the vault's audience, is not expired nor issued in the future, and its
/// subject is what `verify` returns; `token::issue` output verifies.
pub fn vault_token(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let verifier = verifier();
    let token = match mode {
        0 => match std::str::from_utf8(rest) {
            Ok(t) => t.to_owned(),
            Err(_) => return,
        },
        1 => {
            let Some((&n, rest)) = rest.split_first() else {
                return;
            };
            let n = usize::from(n).min(rest.len());
            sign(&rest[..n], &rest[n..])
        }
        2 => {
            if let Ok(text) = std::str::from_utf8(rest)
                && let Ok(key) = token::parse_public_key(text, "issuer.pub")
            {
                assert_eq!(URL_SAFE_NO_PAD.encode(key.as_bytes()), text.trim());
            }
            return;
        }
        _ => return,
    };
    let Ok(sub) = verifier.verify(&token, FUZZ_NOW) else {
        return;
    };
    assert!(token.len() <= MAX_TOKEN_LEN);
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3);
    // Typed like the verifier's own structs: `serde_json` does not check the UTF-8 (nor the
    // escapes) of strings in fields it skips, so an accepted header or claims set is not always
    // valid JSON for `serde_json::Value` (tests/fuzz_regressions/vault_token/
    // header-invalid-utf8-in-ignored-field; RFC 7515 §5.2 wants it rejected, see fuzz/README.md).
    let header: HeaderCheck =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
    assert_eq!(header.alg, "EdDSA");
    let claims: ClaimsCheck =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    assert_eq!(claims.aud, chatvault_vault_core::labels::TOKEN_AUDIENCE);
    assert_eq!(claims.sub, sub);
    let (exp, iat) = (claims.exp, claims.iat);
    assert!(FUZZ_NOW < exp, "expired token accepted");
    assert!(iat <= FUZZ_NOW + 60, "token from the future accepted");
    assert_eq!(claims.iss, token::DEV_ISSUER, "wrong issuer accepted");
    assert!(
        exp > iat && exp - iat <= token::DEFAULT_MAX_LIFETIME,
        "overlong token accepted"
    );
    let header: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
    assert!(header.get("crit").is_none(), "crit accepted");
    // What the issuer would write for that subject verifies too.
    let again = token::issue(issuer(), &sub, FUZZ_NOW, 60);
    if again.len() <= MAX_TOKEN_LEN {
        assert_eq!(verifier.verify(&again, FUZZ_NOW).unwrap(), sub);
    }
}
