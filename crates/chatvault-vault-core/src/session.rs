//! Keys derived from the OPAQUE `session_key` of a login (PROTOCOL.md §6.5): the release of the
//! wrapped key and the recovery proof is sealed under one, and a re-registration with the proof
//! is bound by a MAC under the other. Whoever replays a captured (state, KE3) gets the counter
//! reset the real client earned anyway, but neither the wrapped key nor a usable proof.
//!
//! ```text
//! release_key = HKDF-SHA256[none, RELEASE_KEY](session_key, 32)
//! binding_key = HKDF-SHA256[none, PROOF_BINDING](session_key, 32)
//! release     = XSEAL[release_key, RELEASE_AD || lp(account)](wrapped_key[72] || proof)
//! binding     = HMAC-SHA256(binding_key, REREGISTRATION || lp(account) || lp(ticket)
//!                           || lp(upload) || lp(wrapped_key) || u32(m) || u32(t) || u32(p))
//! ```

use core::fmt;

use hmac::{Hmac, Mac};
use subtle::ConstantTimeEq;

use crate::error::{Error, Result};
use crate::labels;
use crate::seal;
use crate::types::{AccountId, Key32, KsfParams};

/// Size of the re-registration binding MAC.
pub const BINDING_LEN: usize = 32;

fn derive(session_key: &[u8], info: &[u8]) -> Key32 {
    let hk = hkdf::Hkdf::<sha2::Sha256>::new(None, session_key);
    let mut k = [0u8; 32];
    hk.expand(info, &mut k)
        .expect("32 bytes is a valid HKDF-SHA256 length");
    Key32::from_bytes(k)
}

/// `RELEASE_AD || lp(account)`.
pub(crate) fn release_ad(account: &AccountId) -> Vec<u8> {
    let mut ad = labels::RELEASE_AD.to_vec();
    seal::lp(&mut ad, account.as_bytes());
    ad
}

/// The two keys one login session yields (server and client derive the same). Zeroized on drop.
pub struct SessionKeys {
    pub(crate) release: Key32,
    pub(crate) binding: Key32,
}

impl fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionKeys(redacted)")
    }
}

impl SessionKeys {
    pub(crate) fn derive(session_key: &[u8]) -> Self {
        Self {
            release: derive(session_key, labels::RELEASE_KEY),
            binding: derive(session_key, labels::PROOF_BINDING),
        }
    }
}

/// The key that binds a re-registration to the login whose proof it uses (PROTOCOL.md §4.2).
/// Zeroized on drop; `Debug` is redacted; no `Clone`.
pub struct ProofBinding(Key32);

impl fmt::Debug for ProofBinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ProofBinding(redacted)")
    }
}

impl ProofBinding {
    pub(crate) fn from_key(key: Key32) -> Self {
        Self(key)
    }

    /// The binding MAC of a re-registration (client side).
    pub fn reregistration_mac(
        &self,
        account: &AccountId,
        ticket: &[u8],
        upload: &[u8],
        wrapped_key: &[u8],
        ksf: &KsfParams,
    ) -> [u8; BINDING_LEN] {
        let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(self.0.expose_secret())
            .expect("HMAC takes any key length");
        let mut m = labels::REREGISTRATION.to_vec();
        seal::lp(&mut m, account.as_bytes());
        seal::lp(&mut m, ticket);
        seal::lp(&mut m, upload);
        seal::lp(&mut m, wrapped_key);
        for v in [ksf.m_kib, ksf.t, ksf.p] {
            m.extend_from_slice(&v.to_be_bytes());
        }
        mac.update(&m);
        mac.finalize().into_bytes().into()
    }

    /// Checks a binding MAC in constant time (server side). A wrong or missing MAC means the
    /// proof is used by someone who did not run the login that earned it.
    pub(crate) fn verify_reregistration(
        &self,
        account: &AccountId,
        ticket: &[u8],
        upload: &[u8],
        wrapped_key: &[u8],
        ksf: &KsfParams,
        mac: &[u8],
    ) -> Result<()> {
        let expected = self.reregistration_mac(account, ticket, upload, wrapped_key, ksf);
        if mac.len() == BINDING_LEN && bool::from(expected.ct_eq(mac)) {
            Ok(())
        } else {
            Err(Error::Corrupted {
                what: "recovery proof",
            })
        }
    }
}
