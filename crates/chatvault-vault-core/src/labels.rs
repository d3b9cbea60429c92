//! Every domain-separation label of the vault protocol (PROTOCOL.md §12), in one place.
//!
//! Changing any of these changes the wire or storage format: the golden test below freezes them.

/// HKDF info deriving the backup-key wrapping key from the OPAQUE export key (PROTOCOL.md §3).
pub const WRAP_KEY_INFO: &[u8] = b"chatvault/v1/vault/wrap-key";
/// Prefix of the associated data of the wrapped backup key (PROTOCOL.md §3).
pub const WRAP_AD: &[u8] = b"chatvault/v1/vault/wrap-ad";
/// OPAQUE context string shared by client and server (PROTOCOL.md §2).
pub const OPAQUE_CONTEXT: &[u8] = b"chatvault/v1/vault/opaque-context";
/// Prefix of the OPAQUE credential identifier (PROTOCOL.md §3.1).
pub const CREDENTIAL_ID: &[u8] = b"chatvault/v1/vault/credential-id";
/// HKDF info prefix of the dummy credential nonce for accounts without a record (PROTOCOL.md §3.1).
pub const DUMMY_NONCE: &[u8] = b"chatvault/v1/vault/dummy-nonce";
/// AD prefix of sealed records (PROTOCOL.md §5).
pub const RECORD_AD: &[u8] = b"chatvault/v1/vault/record";
/// AD prefix of sealed login states (PROTOCOL.md §7).
pub const LOGIN_STATE_AD: &[u8] = b"chatvault/v1/vault/login-state";
/// AD prefix of sealed registration tickets (PROTOCOL.md §7).
pub const TICKET_AD: &[u8] = b"chatvault/v1/vault/registration-ticket";
/// AD prefix of sealed recovery proofs (PROTOCOL.md §7).
pub const PROOF_AD: &[u8] = b"chatvault/v1/vault/recovery-proof";
/// Prefix of the signed registration transcript (PROTOCOL.md §4.1).
pub const REG_TRANSCRIPT: &[u8] = b"chatvault/v1/vault/registration-transcript";
/// HKDF info of the release key derived from the OPAQUE session key (PROTOCOL.md §6.5).
pub const RELEASE_KEY: &[u8] = b"chatvault/v1/vault/release-key";
/// AD prefix of the sealed release (PROTOCOL.md §6.5).
pub const RELEASE_AD: &[u8] = b"chatvault/v1/vault/release";
/// HKDF info of the proof binding key derived from the OPAQUE session key (PROTOCOL.md §6.5).
pub const PROOF_BINDING: &[u8] = b"chatvault/v1/vault/proof-binding";
/// MAC prefix of a re-registration bound to a login (PROTOCOL.md §4.2).
pub const REREGISTRATION: &[u8] = b"chatvault/v1/vault/reregistration";
/// `aud` claim of account tokens (PROTOCOL.md §8).
pub const TOKEN_AUDIENCE: &str = "chatvault-vault";
/// Magic bytes at the start of the server key file (PROTOCOL.md §9).
pub const KEY_FILE_MAGIC: &[u8] = b"CVVKEY";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_golden_unchanged() {
        let all: [(&str, &[u8]); 16] = [
            ("wrap-key", WRAP_KEY_INFO),
            ("wrap-ad", WRAP_AD),
            ("context", OPAQUE_CONTEXT),
            ("credential-id", CREDENTIAL_ID),
            ("dummy-nonce", DUMMY_NONCE),
            ("record", RECORD_AD),
            ("login-state", LOGIN_STATE_AD),
            ("ticket", TICKET_AD),
            ("proof", PROOF_AD),
            ("audience", TOKEN_AUDIENCE.as_bytes()),
            ("magic", KEY_FILE_MAGIC),
            ("transcript", REG_TRANSCRIPT),
            ("release-key", RELEASE_KEY),
            ("release", RELEASE_AD),
            ("binding", PROOF_BINDING),
            ("reregistration", REREGISTRATION),
        ];
        let rendered: Vec<String> = all
            .iter()
            .map(|(n, v)| format!("{n}={}", String::from_utf8_lossy(v)))
            .collect();
        assert_eq!(
            rendered.join("\n"),
            "wrap-key=chatvault/v1/vault/wrap-key\n\
             wrap-ad=chatvault/v1/vault/wrap-ad\n\
             context=chatvault/v1/vault/opaque-context\n\
             credential-id=chatvault/v1/vault/credential-id\n\
             dummy-nonce=chatvault/v1/vault/dummy-nonce\n\
             record=chatvault/v1/vault/record\n\
             login-state=chatvault/v1/vault/login-state\n\
             ticket=chatvault/v1/vault/registration-ticket\n\
             proof=chatvault/v1/vault/recovery-proof\n\
             audience=chatvault-vault\n\
             magic=CVVKEY\n\
             transcript=chatvault/v1/vault/registration-transcript\n\
             release-key=chatvault/v1/vault/release-key\n\
             release=chatvault/v1/vault/release\n\
             binding=chatvault/v1/vault/proof-binding\n\
             reregistration=chatvault/v1/vault/reregistration"
        );
        // Labels must be pairwise distinct (domain separation).
        for (i, (_, a)) in all.iter().enumerate() {
            for (_, b) in &all[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }
}
