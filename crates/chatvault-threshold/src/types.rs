//! Small value types: realm ids, registration versions, base64url fixed-size fields, secrets.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::{Zeroize, ZeroizeOnDrop};

/// A fixed-size byte string carried as base64url without padding in JSON. Decoding is strict:
/// wrong length or non-canonical base64 is an error (a 400 at the realm).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct B64<const N: usize>(pub [u8; N]);

impl<const N: usize> B64<N> {
    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; N] {
        &self.0
    }

    /// base64url without padding.
    pub fn to_b64(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.0)
    }

    /// Strict inverse of [`B64::to_b64`].
    pub fn from_b64(s: &str) -> Option<Self> {
        decode_fixed::<N>(s.trim()).map(B64)
    }
}

impl<const N: usize> fmt::Debug for B64<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&URL_SAFE_NO_PAD.encode(self.0))
    }
}

impl<const N: usize> Serialize for B64<N> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&URL_SAFE_NO_PAD.encode(self.0))
    }
}

impl<'de, const N: usize> Deserialize<'de> for B64<N> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        decode_fixed::<N>(&s).map(B64).ok_or_else(|| {
            serde::de::Error::custom(format_args!("expected {N} bytes of base64url"))
        })
    }
}

fn decode_fixed<const N: usize>(s: &str) -> Option<[u8; N]> {
    // Length check first so that a huge string is not decoded.
    if s.len() != (N * 4).div_ceil(3) {
        return None;
    }
    let v = URL_SAFE_NO_PAD.decode(s).ok()?;
    v.try_into().ok()
}

/// A secret 32-byte field of a message (an OPRF key share, an encryption-scalar share): zeroized on
/// drop, redacted in `Debug`, no `Clone`.
#[derive(PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct Secret32(pub(crate) [u8; 32]);

impl Secret32 {
    /// Wraps raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The secret bytes.
    pub fn expose_secret(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for Secret32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret32(redacted)")
    }
}

impl Serialize for Secret32 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut enc = URL_SAFE_NO_PAD.encode(self.0);
        let out = s.serialize_str(&enc);
        enc.zeroize();
        out
    }
}

impl<'de> Deserialize<'de> for Secret32 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut s = String::deserialize(d)?;
        let out = decode_fixed::<32>(&s)
            .map(Secret32)
            .ok_or_else(|| serde::de::Error::custom("expected 32 bytes of base64url"));
        s.zeroize();
        out
    }
}

/// A realm's identity: 32 bytes the client pins at registration and binds into every unlock tag
/// and commitment of that realm (PROTOCOL.md §13.1). The server uses its identity public key.
pub type RealmId = B64<32>;

/// A registration version: 16 random bytes chosen by the client, the same at every realm of one
/// registration, also the Argon2id salt input (PROTOCOL.md §13.3).
pub type RegistrationVersion = B64<16>;

/// One realm of the client's configuration. Its share index is its 1-based position in
/// [`RealmSet::realms`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Realm {
    /// The pinned realm id.
    pub id: RealmId,
    /// How errors name this realm (its URL). Never secret.
    pub name: String,
}

/// The client's t-of-n configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RealmSet {
    /// The realms, in share-index order (index = position + 1).
    pub realms: Vec<Realm>,
    /// How many realms must take part in a recovery.
    pub threshold: u8,
}

impl RealmSet {
    /// Validates `1 ≤ t ≤ n ≤ 16` and that realm ids are distinct.
    pub fn new(realms: Vec<Realm>, threshold: u8) -> crate::Result<Self> {
        crate::shamir::check_config(usize::from(threshold), realms.len())?;
        for (i, r) in realms.iter().enumerate() {
            if realms[i + 1..].iter().any(|o| o.id == r.id) {
                return Err(crate::Error::InvalidConfig(
                    "the same realm is listed twice (same identity key)",
                ));
            }
        }
        Ok(Self { realms, threshold })
    }

    /// `n`.
    pub fn len(&self) -> usize {
        self.realms.len()
    }

    /// Never true for a validated set.
    pub fn is_empty(&self) -> bool {
        self.realms.is_empty()
    }

    /// The realm with 1-based share `index`.
    pub fn realm(&self, index: u8) -> Option<&Realm> {
        usize::from(index)
            .checked_sub(1)
            .and_then(|k| self.realms.get(k))
    }

    pub(crate) fn name(&self, index: u8) -> String {
        self.realm(index)
            .map(|r| r.name.clone())
            .unwrap_or_else(|| format!("realm #{index}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn b64_wrong_length_rejected() {
        assert!(serde_json::from_str::<B64<16>>("\"AAAA\"").is_err());
        let ok = serde_json::to_string(&B64([7u8; 16])).unwrap();
        assert_eq!(
            serde_json::from_str::<B64<16>>(&ok).unwrap(),
            B64([7u8; 16])
        );
        // Padding and standard-alphabet characters are rejected.
        assert!(serde_json::from_str::<B64<1>>("\"AA==\"").is_err());
        assert!(serde_json::from_str::<B64<3>>("\"+/+/\"").is_err());
    }

    #[test]
    fn secret_debug_redacted() {
        assert_eq!(format!("{:?}", Secret32([1; 32])), "Secret32(redacted)");
    }
}
