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

/// The JOSE header [`issue`] writes.
const HEADER: &str = r#"{"alg":"EdDSA","typ":"JWT"}"#;
/// Maximum accepted token length.
pub const MAX_TOKEN_LEN: usize = 4096;
/// Accepted clock skew for `iat` and `nbf` (seconds).
const LEEWAY: u64 = 60;
/// `iss` of tokens from the development issuer key in a vault's data directory.
pub const DEV_ISSUER: &str = "chatvault-vault-dev";
/// Default maximum of `exp − iat` (seconds).
pub const DEFAULT_MAX_LIFETIME: u64 = 3600;
/// Default age (`now − iat`, seconds) under which a token counts as recent (PROTOCOL.md §8).
pub const DEFAULT_RECENT: u64 = 300;

/// Claims (RFC 7519 §4.1). Other claims are ignored (§4).
#[derive(Serialize, Deserialize)]
struct Claims {
    iss: String,
    sub: String,
    aud: String,
    iat: u64,
    exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    nbf: Option<u64>,
}

/// The JOSE header (RFC 7515 §4.1). Unknown header parameters are ignored (RFC 7515 §4), except
/// that `crit` is always refused: this verifier implements no extension (§4.1.11).
#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    typ: Option<String>,
    #[serde(default)]
    crit: Option<serde_json::Value>,
}

/// Issues a development token for `account` (issuer [`DEV_ISSUER`]), valid for `ttl` seconds.
pub fn issue(key: &SigningKey, account: &str, now: u64, ttl: u64) -> String {
    issue_as(key, DEV_ISSUER, account, now, ttl)
}

/// Issues a token for `account` from `issuer`, valid for `ttl` seconds from `now`.
pub fn issue_as(key: &SigningKey, issuer: &str, account: &str, now: u64, ttl: u64) -> String {
    let claims = Claims {
        iss: issuer.to_owned(),
        sub: account.to_owned(),
        aud: TOKEN_AUDIENCE.to_owned(),
        iat: now,
        exp: now.saturating_add(ttl),
        nbf: None,
    };
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(HEADER),
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).expect("claims serialize"))
    );
    let sig = key.sign(signing_input.as_bytes());
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes()))
}

/// What the vault requires of account tokens (PROTOCOL.md §8).
#[derive(Clone, Debug)]
pub struct TokenPolicy {
    /// Expected `iss`.
    pub issuer: String,
    /// Maximum `exp − iat` in seconds.
    pub max_lifetime: u64,
    /// A token is recent if `now − iat` ≤ this (for reset and re-registration over a record).
    pub recent: u64,
}

impl TokenPolicy {
    /// The policy for the development issuer: `iss` = [`DEV_ISSUER`], 1 h, 5 min.
    pub fn dev() -> Self {
        Self {
            issuer: DEV_ISSUER.to_owned(),
            max_lifetime: DEFAULT_MAX_LIFETIME,
            recent: DEFAULT_RECENT,
        }
    }
}

/// A verified token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    /// The account (`sub`).
    pub sub: String,
    /// Issued at (unix seconds).
    pub iat: u64,
}

/// Verifies tokens against the issuer's public key and a [`TokenPolicy`].
#[derive(Clone, Debug)]
pub struct Verifier {
    key: VerifyingKey,
    policy: TokenPolicy,
}

impl Verifier {
    /// A verifier for the development issuer `key` ([`TokenPolicy::dev`]).
    pub fn new(key: VerifyingKey) -> Self {
        Self::with_policy(key, TokenPolicy::dev())
    }

    /// A verifier for `key` with `policy`.
    pub fn with_policy(key: VerifyingKey, policy: TokenPolicy) -> Self {
        Self { key, policy }
    }

    /// The policy.
    pub fn policy(&self) -> &TokenPolicy {
        &self.policy
    }

    /// Checks signature, header, issuer, audience and times; returns the account (`sub`).
    pub fn verify(&self, token: &str, now: u64) -> Result<String> {
        self.verify_claims(token, now).map(|v| v.sub)
    }

    /// Like [`Verifier::verify`], also returning `iat`.
    pub fn verify_claims(&self, token: &str, now: u64) -> Result<Verified> {
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
        // RFC 7519 §5.1: `typ` is optional; if present it must say JWT (case-insensitive).
        if header
            .typ
            .as_deref()
            .is_some_and(|t| !t.eq_ignore_ascii_case("JWT"))
        {
            return Err(Error::Token("typ must be JWT"));
        }
        // RFC 7515 §4.1.11: extensions listed in `crit` must be understood; none are.
        if header.crit.is_some() {
            return Err(Error::Token("crit: unsupported critical header parameters"));
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
        if claims.iss != self.policy.issuer {
            return Err(Error::Token("wrong issuer"));
        }
        if claims.aud != TOKEN_AUDIENCE {
            return Err(Error::Token("wrong audience"));
        }
        if now >= claims.exp {
            return Err(Error::Token("expired"));
        }
        if claims.iat > now.saturating_add(LEEWAY) {
            return Err(Error::Token("issued in the future"));
        }
        if claims.exp <= claims.iat || claims.exp - claims.iat > self.policy.max_lifetime {
            return Err(Error::Token("lifetime (exp - iat) over the maximum"));
        }
        if claims
            .nbf
            .is_some_and(|nbf| nbf > now.saturating_add(LEEWAY))
        {
            return Err(Error::Token("not yet valid (nbf)"));
        }
        Ok(Verified {
            sub: claims.sub,
            iat: claims.iat,
        })
    }

    /// Whether a token issued at `iat` counts as recent at `now` (PROTOCOL.md §8).
    pub fn is_recent(&self, iat: u64, now: u64) -> bool {
        now.saturating_sub(iat) <= self.policy.recent
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

    fn custom(key: &SigningKey, header: &str, claims: &str) -> String {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(claims)
        );
        let sig = key.sign(input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes()))
    }

    #[test]
    fn verify_policy_iss_lifetime_nbf_typ_crit() {
        let v = Verifier::new(key(1).verifying_key());
        let ok = r#"{"alg":"EdDSA","typ":"JWT"}"#;
        let claims = |iss: &str, iat: u64, exp: u64, extra: &str| {
            format!(
                r#"{{"iss":"{iss}","sub":"alice","aud":"chatvault-vault","iat":{iat},"exp":{exp}{extra}}}"#
            )
        };
        let t = |h: &str, c: &str| custom(&key(1), h, c);
        assert!(
            v.verify(&t(ok, &claims(DEV_ISSUER, 1000, 1060, "")), 1000)
                .is_ok()
        );
        assert!(
            v.verify(
                &t(r#"{"alg":"EdDSA"}"#, &claims(DEV_ISSUER, 1000, 1060, "")),
                1000
            )
            .is_ok()
        );
        assert!(
            v.verify(&t(ok, &claims("evil", 1000, 1060, "")), 1000)
                .is_err(),
            "iss"
        );
        assert!(
            v.verify(&t(ok, &claims(DEV_ISSUER, 1000, 4601, "")), 1000)
                .is_err(),
            "lifetime"
        );
        assert!(
            v.verify(&t(ok, &claims(DEV_ISSUER, 1000, 4600, "")), 1000)
                .is_ok()
        );
        assert!(
            v.verify(&t(ok, &claims(DEV_ISSUER, 1000, 1000, "")), 999)
                .is_err(),
            "exp=iat"
        );
        assert!(
            v.verify(
                &t(ok, &claims(DEV_ISSUER, 1000, 1060, r#","nbf":1100"#)),
                1000
            )
            .is_err(),
            "nbf"
        );
        assert!(
            v.verify(
                &t(ok, &claims(DEV_ISSUER, 1000, 1060, r#","nbf":1050"#)),
                1000
            )
            .is_ok()
        );
        assert!(
            v.verify(
                &t(
                    r#"{"alg":"EdDSA","typ":"JOSE+JSON"}"#,
                    &claims(DEV_ISSUER, 1000, 1060, "")
                ),
                1000
            )
            .is_err(),
            "typ"
        );
        assert!(
            v.verify(
                &t(
                    r#"{"alg":"EdDSA","crit":["exp"]}"#,
                    &claims(DEV_ISSUER, 1000, 1060, "")
                ),
                1000
            )
            .is_err(),
            "crit"
        );
        assert!(
            v.verify(
                &t(
                    ok,
                    r#"{"sub":"alice","aud":"chatvault-vault","iat":1000,"exp":1060}"#
                ),
                1000
            )
            .is_err(),
            "no iss"
        );
        assert!(
            v.verify(
                &t(ok, &claims(DEV_ISSUER, 1000, 1060, r#","scope":"x""#)),
                1000
            )
            .is_ok(),
            "other claims ignored"
        );
        assert!(v.is_recent(1000, 1300) && !v.is_recent(1000, 1301));
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
