//! JSON messages of the HTTP API (PROTOCOL.md §4, §6, §9). Binary fields are base64url without
//! padding; use [`b64_encode`] / [`b64_decode`].

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::types::KsfParams;

/// base64url without padding.
pub fn b64_encode(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Strict base64url-without-padding decoding; `what` names the field in the error.
pub fn b64_decode(s: &str, what: &'static str) -> Result<Vec<u8>> {
    URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| Error::Malformed { what })
}

/// Standard base64 with padding (RFC 4648 §4), used by the rollback commitment fields.
pub fn b64std_encode(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// Strict standard-base64 (with canonical padding) decoding; `what` names the field in the error.
pub fn b64std_decode(s: &str, what: &'static str) -> Result<Vec<u8>> {
    STANDARD.decode(s).map_err(|_| Error::Malformed { what })
}

/// `POST /v1/accounts/{account}/register/start` request.
#[derive(Serialize, Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct RegisterStartRequest {
    /// `RegistrationRequest`, 32 bytes.
    pub request: String,
}

/// `register/start` response.
#[derive(Serialize, Deserialize, Debug)]
pub struct RegisterStartResponse {
    /// `RegistrationResponse`, 64 bytes.
    pub response: String,
    /// Sealed registration ticket.
    pub ticket: String,
    /// Ed25519 signature of the registration transcript with the identity key, 64 bytes
    /// (PROTOCOL.md §4.1). The client checks it against its pin before uploading anything.
    pub signature: String,
    /// The vault's Ed25519 identity public key, 32 bytes.
    pub server_identity: String,
    /// Suite id (1).
    pub suite: u16,
    /// Record version (1).
    pub record_version: u16,
}

/// `POST /v1/accounts/{account}/register/finish` request.
#[derive(Serialize, Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct RegisterFinishRequest {
    /// Ticket from `register/start`.
    pub ticket: String,
    /// `RegistrationUpload`, 192 bytes.
    pub upload: String,
    /// Wrapped backup key, 72 bytes.
    pub wrapped_key: String,
    /// KSF parameters the client used.
    pub ksf: KsfParams,
    /// Recovery proof (required to replace a live record).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proof: Option<String>,
    /// With `proof`: the 32-byte MAC binding this re-registration to the login that earned the
    /// proof (PROTOCOL.md §4.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binding: Option<String>,
}

/// `register/finish` response.
#[derive(Serialize, Deserialize, Debug)]
pub struct RegisterFinishResponse {
    /// The vault's Ed25519 identity public key, 32 bytes.
    pub server_identity: String,
    /// Guess limit of the new record.
    pub max_attempts: u32,
    /// Generation of the new record.
    pub generation: u64,
}

/// `POST /v1/accounts/{account}/recover/start` request.
#[derive(Serialize, Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct RecoverStartRequest {
    /// KE1, 96 bytes.
    pub ke1: String,
}

/// `recover/start` response.
#[derive(Serialize, Deserialize, Debug)]
pub struct RecoverStartResponse {
    /// KE2, 320 bytes.
    pub ke2: String,
    /// The vault's Ed25519 identity public key, 32 bytes (the OPAQUE server identifier).
    pub server_identity: String,
    /// Sealed login state to echo in `recover/finish`.
    pub state: String,
    /// Guesses left if this one is wrong.
    pub attempts_left: u32,
    /// KSF parameters.
    pub ksf: KsfParams,
    /// Suite id.
    pub suite: u16,
    /// Record version.
    pub record_version: u16,
}

/// `POST /v1/accounts/{account}/recover/finish` request.
#[derive(Serialize, Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct RecoverFinishRequest {
    /// Login state from `recover/start`.
    pub state: String,
    /// KE3, 64 bytes.
    pub ke3: String,
}

/// `recover/finish` response.
#[derive(Serialize, Deserialize, Debug)]
pub struct RecoverFinishResponse {
    /// The wrapped backup key and the recovery proof, sealed under a key derived from the
    /// OPAQUE session key (PROTOCOL.md §6.5).
    pub release: String,
    /// Proof expiry (unix seconds).
    pub proof_expires_at: u64,
}

/// `POST /v1/accounts/{account}/delete` request.
#[derive(Serialize, Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct DeleteRequest {
    /// Recovery proof.
    pub proof: String,
}

/// `PUT /v1/accounts/{account}/commitment` request (PROTOCOL.md §9.1).
#[derive(Serialize, Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct PutCommitmentRequest {
    /// Sequence number of the commitment (1 to 2^63-1); must exceed the stored one.
    pub seq: u64,
    /// Sealed commitment, standard base64 with padding, 1 to 512 bytes decoded.
    pub commitment: String,
}

/// `GET /v1/accounts/{account}/commitment` response (PROTOCOL.md §9.1).
#[derive(Serialize, Deserialize, Debug)]
pub struct CommitmentResponse {
    /// Sequence number of the stored commitment.
    pub seq: u64,
    /// Sealed commitment, standard base64 with padding.
    pub commitment: String,
}

/// 409 answer of `PUT /v1/accounts/{account}/commitment`: the stored sequence number is equal
/// or higher.
#[derive(Serialize, Deserialize, Debug)]
pub struct CommitmentConflict {
    /// `stale_commitment`.
    pub error: ErrorCode,
    /// Human-readable message.
    pub message: String,
    /// Sequence number currently stored.
    pub current_seq: u64,
}

/// The machine-readable error codes of the API (PROTOCOL.md §9), shared by the server, which
/// writes them, and the client, which matches on them: one list instead of string literals on
/// both sides. Serialized as the snake_case string; a code this build does not know reads as
/// [`ErrorCode::Unknown`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// `bad_request`: malformed JSON, unknown field, bad base64url, wrong field size, bad account id, KSF bounds, invalid OPAQUE message.
    BadRequest,
    /// `unsupported_version`: a sealed blob or stored record has an unknown version.
    UnsupportedVersion,
    /// `invalid_state`: login state or ticket does not open for this account.
    InvalidState,
    /// `invalid_proof`: recovery proof (or its binding) does not open or verify for this account.
    InvalidProof,
    /// `unauthorized`: missing, malformed, forged or expired account token, or one breaking the token policy.
    Unauthorized,
    /// `token_not_recent`: reset or re-registration over a live record with a token older than 5 minutes.
    TokenNotRecent,
    /// `forbidden`: token for another account.
    Forbidden,
    /// `authentication_failed`: KE3 did not verify.
    AuthenticationFailed,
    /// `not_found`: no such endpoint.
    NotFound,
    /// `not_registered`: PUT …/commitment without a live record.
    NotRegistered,
    /// `no_commitment`: GET …/commitment: none stored.
    NoCommitment,
    /// `already_registered`: register/finish over a live record without proof.
    AlreadyRegistered,
    /// `stale_state`: state already used, superseded, or for another generation.
    StaleState,
    /// `stale_proof`: proof already used, superseded, or for another generation.
    StaleProof,
    /// `conflict`: concurrent change of the same row; start again.
    Conflict,
    /// `stale_commitment`: PUT …/commitment with seq not above the stored one.
    StaleCommitment,
    /// `expired`: state, ticket or proof past its expiry.
    Expired,
    /// `payload_too_large`: body over the size limit.
    PayloadTooLarge,
    /// `unsupported_media_type`: JSON body without Content-Type: application/json.
    UnsupportedMediaType,
    /// `method_not_allowed`: method not supported by the endpoint.
    MethodNotAllowed,
    /// `timeout`: request exceeded the server timeout.
    Timeout,
    /// `locked`: record destroyed after too many wrong guesses.
    Locked,
    /// `rate_limited`: in-memory per-IP / per-account limits.
    RateLimited,
    /// `internal`: a stored record does not open, or another server fault.
    Internal,
    /// `unavailable`: database unreachable.
    Unavailable,
    /// A code from a newer server.
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    /// Every code a server writes (all but [`ErrorCode::Unknown`]).
    pub const ALL: &[ErrorCode] = &[
        Self::BadRequest,
        Self::UnsupportedVersion,
        Self::InvalidState,
        Self::InvalidProof,
        Self::Unauthorized,
        Self::TokenNotRecent,
        Self::Forbidden,
        Self::AuthenticationFailed,
        Self::NotFound,
        Self::NotRegistered,
        Self::NoCommitment,
        Self::AlreadyRegistered,
        Self::StaleState,
        Self::StaleProof,
        Self::Conflict,
        Self::StaleCommitment,
        Self::Expired,
        Self::PayloadTooLarge,
        Self::UnsupportedMediaType,
        Self::MethodNotAllowed,
        Self::Timeout,
        Self::Locked,
        Self::RateLimited,
        Self::Internal,
        Self::Unavailable,
    ];

    /// The wire string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "bad_request",
            Self::UnsupportedVersion => "unsupported_version",
            Self::InvalidState => "invalid_state",
            Self::InvalidProof => "invalid_proof",
            Self::Unauthorized => "unauthorized",
            Self::TokenNotRecent => "token_not_recent",
            Self::Forbidden => "forbidden",
            Self::AuthenticationFailed => "authentication_failed",
            Self::NotFound => "not_found",
            Self::NotRegistered => "not_registered",
            Self::NoCommitment => "no_commitment",
            Self::AlreadyRegistered => "already_registered",
            Self::StaleState => "stale_state",
            Self::StaleProof => "stale_proof",
            Self::Conflict => "conflict",
            Self::StaleCommitment => "stale_commitment",
            Self::Expired => "expired",
            Self::PayloadTooLarge => "payload_too_large",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::Timeout => "timeout",
            Self::Locked => "locked",
            Self::RateLimited => "rate_limited",
            Self::Internal => "internal",
            Self::Unavailable => "unavailable",
            Self::Unknown => "unknown",
        }
    }
}

impl core::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error body of every non-2xx answer.
#[derive(Serialize, Deserialize, Debug)]
pub struct ErrorBody {
    /// Machine-readable code (PROTOCOL.md §9).
    pub error: ErrorCode,
    /// Human-readable message (never contains secrets).
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn b64_decode_rejects_padding_and_std_alphabet() {
        assert_eq!(b64_decode("AQID", "x").unwrap(), vec![1, 2, 3]);
        assert!(b64_decode("AQ==", "x").is_err());
        assert!(b64_decode("+/8", "x").is_err());
        assert!(b64_decode("A Q", "x").is_err());
        assert_eq!(b64_encode(&[0xfb, 0xff]), "-_8");
    }

    #[test]
    fn error_codes_round_trip_and_unknown_tolerated() {
        for code in [
            ErrorCode::StaleCommitment,
            ErrorCode::TokenNotRecent,
            ErrorCode::Locked,
        ] {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            assert_eq!(serde_json::from_str::<ErrorCode>(&json).unwrap(), code);
        }
        assert_eq!(
            serde_json::from_str::<ErrorCode>("\"from_the_future\"").unwrap(),
            ErrorCode::Unknown
        );
    }

    #[test]
    fn b64std_is_strict_standard_with_padding() {
        assert_eq!(b64std_encode(&[0xfb, 0xff]), "+/8=");
        assert_eq!(b64std_decode("+/8=", "x").unwrap(), vec![0xfb, 0xff]);
        assert!(b64std_decode("+/8", "x").is_err());
        assert!(b64std_decode("-_8=", "x").is_err());
        assert!(b64std_decode("+/9=", "x").is_err()); // non-canonical trailing bits
    }
}
