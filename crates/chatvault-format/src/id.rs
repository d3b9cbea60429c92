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

/// Value of each byte as a hex digit (either case), or 0xff.
static HEX_DIGIT: [u8; 256] = {
    let mut t = [0xff_u8; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        t[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    t
};

/// 64 hex digits (either case, as `hex::decode_to_slice` accepts) to 32 bytes. Reading an index
/// object parses one id per blob, and `hex`'s per-digit decoding was 15 % of a new phone's
/// restore start; a table lookup per digit, with one validity check at the end, is a few times
/// faster.
fn decode_hex32(s: &[u8]) -> Option<[u8; 32]> {
    let s: &[u8; 64] = s.try_into().ok()?;
    let mut out = [0u8; 32];
    let mut bad = 0u8;
    for (o, pair) in out.iter_mut().zip(s.chunks_exact(2)) {
        let (hi, lo) = (
            HEX_DIGIT[usize::from(pair[0])],
            HEX_DIGIT[usize::from(pair[1])],
        );
        bad |= hi | lo;
        *o = (hi << 4) | lo;
    }
    // Every digit's value is below 16; an invalid one (0xff) sets the high bits.
    (bad < 16).then_some(out)
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
                decode_hex32(s.as_bytes())
                    .map($name)
                    .ok_or(IdParseError { kind: $kind })
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                // On the stack: a tree of a year of photos holds tens of thousands of ids.
                let mut digits = [0u8; 64];
                hex::encode_to_slice(self.0, &mut digits).expect("32 bytes are 64 digits");
                s.serialize_str(std::str::from_utf8(&digits).expect("hex digits are ASCII"))
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                // A visitor of `&str`, not a `Cow<str>` (which serde always fills with a new
                // String): an index or tree holds tens of thousands of ids.
                struct V;
                impl serde::de::Visitor<'_> for V {
                    type Value = $name;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        write!(f, "a {} id (64 hex digits)", $kind)
                    }
                    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<$name, E> {
                        v.parse().map_err(E::custom)
                    }
                }
                d.deserialize_str(V)
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

    /// The table decoder agrees with the `hex` crate on every id and refuses exactly what it
    /// refuses: each non-digit byte in each position, either case, wrong lengths.
    #[test]
    fn hex_ids_parse_exactly_as_the_hex_crate_does() {
        let mut b = [0u8; 32];
        for (i, x) in b.iter_mut().enumerate() {
            *x = (i as u8).wrapping_mul(37) ^ 0x5c;
        }
        let lower = hex::encode(b);
        assert_eq!(lower.parse::<BlobId>().unwrap().as_bytes(), &b);
        assert_eq!(
            lower.to_uppercase().parse::<BlobId>().unwrap().as_bytes(),
            &b
        );
        for pos in [0, 1, 31, 62, 63] {
            for byte in 0..=255u8 {
                let mut t = lower.clone().into_bytes();
                t[pos] = byte;
                let mut want = [0u8; 32];
                let ours = decode_hex32(&t);
                let theirs = hex::decode_to_slice(&t, &mut want).ok().map(|()| want);
                assert_eq!(ours, theirs, "position {pos}, byte {byte:#04x}");
            }
        }
        for len in [0, 2, 63, 65, 128] {
            assert!("a".repeat(len).parse::<BlobId>().is_err(), "length {len}");
        }
    }
}
