//! Typed 32-byte identifiers (docs/FORMAT.md §2). Each object kind has its own type so an index
//! id cannot be used where a snapshot id is expected. All print and parse as 64 lowercase hex
//! digits and serialize as such in JSON.

use std::fmt;
use std::str::FromStr;

use rand_core::{CryptoRng, RngCore};

/// Error parsing an id from hex.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid {kind} id: expected 64 hex digits")]
pub struct IdParseError {
    kind: &'static str,
}

macro_rules! define_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name([u8; 32]);

        impl $name {
            /// Wraps raw id bytes.
            pub const fn from_bytes(b: [u8; 32]) -> Self {
                $name(b)
            }
            /// The raw id bytes.
            pub fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }
            /// A fresh random id.
            pub fn random<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
                let mut b = [0u8; 32];
                rng.fill_bytes(&mut b);
                $name(b)
            }
            /// Full 64-digit lowercase hex form.
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }
            /// Short 8-digit form for display.
            pub fn short(&self) -> String {
                hex::encode(&self.0[..4])
            }
            /// Name of the kind, for messages.
            pub const KIND: &'static str = $kind;
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.short())
            }
        }

        impl FromStr for $name {
            type Err = IdParseError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let mut b = [0u8; 32];
                hex::decode_to_slice(s, &mut b).map_err(|_| IdParseError { kind: $kind })?;
                Ok($name(b))
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.to_hex())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

define_id!(
    /// Random id of a repository, chosen at `init`; the HKDF salt of its subkeys.
    RepoId, "repository"
);
define_id!(
    /// Keyed hash of a blob's plaintext (§4.2).
    BlobId, "blob"
);
define_id!(
    /// Random id of a pack file.
    PackId, "pack"
);
define_id!(
    /// Keyed hash of an index object's plaintext.
    IndexId, "index"
);
define_id!(
    /// Keyed hash of a snapshot object's plaintext.
    SnapshotId, "snapshot"
);
define_id!(
    /// Random id of a lock object.
    LockId, "lock"
);
define_id!(
    /// Keyed hash of a prune plan object's plaintext.
    PlanId, "prune plan"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_round_trips_through_hex_and_json() {
        let id = SnapshotId::from_bytes([0xab; 32]);
        assert_eq!(id.to_hex().parse::<SnapshotId>().unwrap(), id);
        let j = serde_json::to_string(&id).unwrap();
        assert_eq!(serde_json::from_str::<SnapshotId>(&j).unwrap(), id);
        assert_eq!(id.short(), "abababab");
        assert!("zz".parse::<SnapshotId>().is_err());
    }
}
