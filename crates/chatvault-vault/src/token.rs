//! Account tokens (PROTOCOL.md §8): compact JWTs signed with EdDSA/Ed25519 (RFC 7519, RFC 8037).
//!
//! The app's account service issues them; the vault only verifies. [`issue`] exists for the
//! development issuer key (`chatvault-vault token`) and tests.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chatvault_vault_core::labels::TOKEN_AUDIENCE;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The only accepted JOSE header.
const HEADER: &str = r#"{"alg":"EdDSA","typ":"JWT"}"#;
/// Maximum accepted token length.
pub const MAX_TOKEN_LEN: usize = 4096;
/// Accepted clock skew for `iat` (seconds).
const IAT_LEEWAY: u64 = 60;

#[derive(Serialize, Deserialize)]
struct Claims {
    sub: String,
    aud: String,
    iat: u64,
    exp: u64,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
}

/// Issues a token for `account`, valid for `ttl` seconds from `now`.
pub fn issue(key: &SigningKey, account: &str, now: u64, ttl: u64) -> String {
    let claims = Claims {
        sub: account.to_owned(),
        aud: TOKEN_AUDIENCE.to_owned(),
        iat: now,
        exp: now.saturating_add(ttl),
    };
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(HEADER),
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).expect("claims serialize"))
    );
    let sig = key.sign(signing_input.as_bytes());
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes()))
}

/// Verifies tokens against the issuer's public key.
#[derive(Clone, Debug)]
pub struct Verifier {
    key: VerifyingKey,
}

impl Verifier {
    /// A verifier for `key`.
    pub fn new(key: VerifyingKey) -> Self {
        Self { key }
    }

    /// Checks signature, header, audience and time; returns the account (`sub`).
    pub fn verify(&self, token: &str, now: u64) -> Result<String> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(Error::Token("too long"));
        }
        let mut parts = token.split('.');
        let (Some(h), Some(c), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(Error::Token("not a compact JWT"));
        };
        let header: Header = URL_SAFE_NO_PAD
            .decode(h)
            .ok()
            // Whole-text UTF-8 check first: serde skips unread fields without validating them,
            // and RFC 7515 §5.2 requires rejecting invalid UTF-8 anywhere.
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|t| serde_json::from_str(&t).ok())
            .ok_or(Error::Token("bad header"))?;
        if header.alg != "EdDSA" {
            return Err(Error::Token("algorithm must be EdDSA"));
        }
        let sig: [u8; 64] = URL_SAFE_NO_PAD
            .decode(s)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or(Error::Token("bad signature encoding"))?;
        let signing_input = &token[..h.len() + 1 + c.len()];
        self.key
            .verify_strict(signing_input.as_bytes(), &Signature::from_bytes(&sig))
            .map_err(|_| Error::Token("bad signature"))?;
        let claims: Claims = URL_SAFE_NO_PAD
            .decode(c)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|t| serde_json::from_str(&t).ok())
            .ok_or(Error::Token("bad claims"))?;
        if claims.aud != TOKEN_AUDIENCE {
            return Err(Error::Token("wrong audience"));
        }
        if now >= claims.exp {
            return Err(Error::Token("expired"));
        }
        if claims.iat > now.saturating_add(IAT_LEEWAY) {
            return Err(Error::Token("issued in the future"));
        }
        Ok(claims.sub)
    }
}

/// Parses an issuer public key file: 32 bytes in base64url (one line).
pub fn parse_public_key(text: &str, path: &str) -> Result<VerifyingKey> {
    let bytes: [u8; 32] = URL_SAFE_NO_PAD
        .decode(text.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| Error::IssuerKey { path: path.into() })?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| Error::IssuerKey { path: path.into() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    #[test]
    fn verify_valid_token_returns_account() {
        let t = issue(&key(1), "alice", 1000, 60);
        let v = Verifier::new(key(1).verifying_key());
        assert_eq!(v.verify(&t, 1000).unwrap(), "alice");
    }

    #[test]
    fn verify_expired_forged_or_altered_rejected() {
        let v = Verifier::new(key(1).verifying_key());
        let t = issue(&key(1), "alice", 1000, 60);
        assert!(v.verify(&t, 1060).is_err(), "expired");
        assert!(
            v.verify(&issue(&key(2), "alice", 1000, 60), 1000).is_err(),
            "other issuer"
        );
        // Swap the claims for Bob's, keep Alice's signature.
        let bob = issue(&key(2), "bob", 1000, 60);
        let parts: Vec<&str> = t.split('.').collect();
        let bob_claims = bob.split('.').nth(1).unwrap();
        let spliced = format!("{}.{}.{}", parts[0], bob_claims, parts[2]);
        assert!(v.verify(&spliced, 1000).is_err(), "altered claims");
        assert!(v.verify("a.b", 1000).is_err());
        assert!(v.verify(&format!("{t}.x"), 1000).is_err());
    }

    #[test]
    fn verify_alg_none_rejected() {
        let v = Verifier::new(key(1).verifying_key());
        let t = issue(&key(1), "alice", 1000, 60);
        let parts: Vec<&str> = t.split('.').collect();
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#),
            parts[1]
        );
        assert!(v.verify(&none, 1000).is_err());
    }
}
