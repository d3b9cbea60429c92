//! Key derivation: the one label crypt15 uses (FORMAT-crypt15.md, "Key derivation").

use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::Zeroizing;

/// HKDF `info` for the backup file's AES-256-GCM key. WhatsApp derives two more keys from the
/// same root ("metadata encryption", "metadata authentication") for Google Drive metadata;
/// this crate uses neither.
pub(crate) const BACKUP_ENCRYPTION_LABEL: &[u8] = b"backup encryption";

/// `HKDF-SHA256[salt = none, info = "backup encryption"](root, 32)`.
///
/// "No salt" is RFC 5869's default, 32 zero bytes; WhatsApp spells the same computation as one
/// round of its HMAC loop (`HMAC(HMAC(0^32, root), "backup encryption" || 0x01)`).
pub(crate) fn backup_encryption_key(root: &[u8; 32]) -> Zeroizing<[u8; 32]> {
    let hk = Hkdf::<Sha256>::new(None, root);
    let mut okm = Zeroizing::new([0u8; 32]);
    hk.expand(BACKUP_ENCRYPTION_LABEL, okm.as_mut())
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    okm
}

#[cfg(test)]
mod tests {
    use super::*;
    use hkdf::hmac::{Hmac, Mac};

    #[test]
    fn label_is_frozen() {
        assert_eq!(BACKUP_ENCRYPTION_LABEL, b"backup encryption");
    }

    #[test]
    fn hkdf_equals_whatsapp_hmac_loop() {
        let root = [0x42u8; 32];
        let mut prk = <Hmac<Sha256> as Mac>::new_from_slice(&[0u8; 32]).unwrap();
        prk.update(&root);
        let prk = prk.finalize().into_bytes();
        let mut okm = <Hmac<Sha256> as Mac>::new_from_slice(&prk).unwrap();
        okm.update(b"backup encryption\x01");
        let expected = okm.finalize().into_bytes();
        assert_eq!(backup_encryption_key(&root).as_slice(), expected.as_slice());
    }
}
