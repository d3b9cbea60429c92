//! Client side of the protocol (PROTOCOL.md §3, §4, §6): pure steps that consume their state.

use core::fmt;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use opaque_ke::{
    ClientLogin, ClientLoginFinishParameters, ClientRegistration,
    ClientRegistrationFinishParameters, CredentialResponse, Identifiers, RegistrationResponse,
};

use crate::error::{Error, Result};
use crate::labels;
use crate::seal;
use crate::session::{ProofBinding, SessionKeys, release_ad};
use crate::sign;
use crate::types::{
    AccountId, BackupKey, Key32, KsfParams, RECORD_VERSION, SUITE_ID, ServerIdentity, Suite,
    WRAPPED_KEY_LEN, WrappedKey,
};

/// The OPAQUE identifiers (PROTOCOL.md §3): the account and the vault's identity key, so the
/// envelope authenticates the identity a recovery pins.
fn identifiers<'a>(account: &'a AccountId, identity: &'a ServerIdentity) -> Identifiers<'a> {
    Identifiers {
        client: Some(account.as_bytes()),
        server: Some(identity.as_bytes()),
    }
}

/// `wrap_key = HKDF-SHA256[none, "chatvault/v1/vault/wrap-key"](export_key, 32)` (PROTOCOL.md §3).
fn wrap_key(export_key: &[u8]) -> Key32 {
    let hk = hkdf::Hkdf::<sha2::Sha256>::new(None, export_key);
    let mut k = [0u8; 32];
    hk.expand(labels::WRAP_KEY_INFO, &mut k)
        .expect("32 bytes is a valid HKDF-SHA256 length");
    Key32::from_bytes(k)
}

/// `wrap_ad = label || u16(record_version) || u16(suite) || lp(account)` (PROTOCOL.md §3).
fn wrap_ad(account: &AccountId, record_version: u16, suite: u16) -> Vec<u8> {
    let mut ad = labels::WRAP_AD.to_vec();
    ad.extend_from_slice(&record_version.to_be_bytes());
    ad.extend_from_slice(&suite.to_be_bytes());
    seal::lp(&mut ad, account.as_bytes());
    ad
}

fn check_versions(suite: u16, record_version: u16) -> Result<()> {
    if suite != SUITE_ID {
        return Err(Error::UnsupportedVersion {
            what: "OPAQUE suite",
            found: suite,
            supported: SUITE_ID,
        });
    }
    if record_version != RECORD_VERSION {
        return Err(Error::UnsupportedVersion {
            what: "vault record",
            found: record_version,
            supported: RECORD_VERSION,
        });
    }
    Ok(())
}

/// Client registration in progress (after `register/start` was sent).
pub struct RegistrationClient {
    account: AccountId,
    state: ClientRegistration<Suite>,
    request: Vec<u8>,
}

/// The vault's answer to `register/start`, as the client received it.
#[derive(Clone, Copy, Debug)]
pub struct RegistrationAnswer<'a> {
    /// `RegistrationResponse` (64 bytes).
    pub response: &'a [u8],
    /// The sealed ticket (opaque to the client, but signed).
    pub ticket: &'a [u8],
    /// Signature of the transcript with the identity key (64 bytes, PROTOCOL.md §4.1).
    pub signature: &'a [u8],
    /// The identity key the vault names (checked against the pin, if any).
    pub server_identity: ServerIdentity,
}

impl fmt::Debug for RegistrationClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RegistrationClient({}, state redacted)", self.account)
    }
}

/// What the client uploads in `register/finish`.
pub struct RegistrationOutput {
    /// Serialized `RegistrationUpload` (192 bytes).
    pub upload: Vec<u8>,
    /// The wrapped backup key (72 bytes).
    pub wrapped_key: WrappedKey,
    /// The vault identity the registration was signed by and bound to (pin it).
    pub server_identity: ServerIdentity,
}

impl RegistrationClient {
    /// Blinds the password; returns the state and the `RegistrationRequest` (32 bytes).
    pub fn start(
        rng: &mut impl rand_core::CryptoRngCore,
        account: &AccountId,
        password: &[u8],
    ) -> Result<(Self, Vec<u8>)> {
        let started = ClientRegistration::<Suite>::start(rng, password)
            .map_err(|_| Error::Protocol("registration start"))?;
        let request = started.message.serialize().to_vec();
        Ok((
            Self {
                account: account.clone(),
                state: started.state,
                request: request.clone(),
            },
            request,
        ))
    }

    /// Finishes OPAQUE registration with KSF `ksf` and wraps `backup_key` under the export key.
    ///
    /// First (PROTOCOL.md §4.1) the signature of the transcript (account, request, response,
    /// ticket) is checked against `pinned`, or, with no pin (trust on first use), against the key
    /// the response names; a vault that does not hold the pinned key fails with
    /// [`Error::ServerKeyMismatch`] before anything that allows an offline attack exists.
    pub fn finish(
        self,
        rng: &mut impl rand_core::CryptoRngCore,
        password: &[u8],
        answer: RegistrationAnswer<'_>,
        backup_key: &BackupKey,
        ksf: KsfParams,
        pinned: Option<&ServerIdentity>,
    ) -> Result<RegistrationOutput> {
        ksf.validate_registration()?;
        let argon = ksf.argon2()?;
        let named = answer.server_identity;
        let expected = pinned.copied().unwrap_or(named);
        if !expected.ct_matches(&named) {
            return Err(Error::ServerKeyMismatch);
        }
        sign::verify(
            &expected,
            &sign::registration_transcript(
                &self.account,
                &self.request,
                answer.response,
                answer.ticket,
            ),
            answer.signature,
        )?;
        let response =
            RegistrationResponse::<Suite>::deserialize(answer.response).map_err(|_| {
                Error::Malformed {
                    what: "registration response",
                }
            })?;
        let finished = self
            .state
            .finish(
                rng,
                password,
                response,
                ClientRegistrationFinishParameters::new(
                    identifiers(&self.account, &expected),
                    Some(&argon),
                ),
            )
            .map_err(|_| Error::Protocol("registration finish"))?;
        let key = wrap_key(&finished.export_key);
        let wrapped = seal::xseal(
            rng,
            key.expose_secret(),
            &wrap_ad(&self.account, RECORD_VERSION, SUITE_ID),
            backup_key.expose_secret(),
        );
        Ok(RegistrationOutput {
            upload: finished.message.serialize().to_vec(),
            wrapped_key: WrappedKey::from_slice(&wrapped)?,
            server_identity: expected,
        })
    }
}

/// Client recovery in progress (after KE1 was sent).
pub struct RecoveryClient {
    account: AccountId,
    state: ClientLogin<Suite>,
}

impl fmt::Debug for RecoveryClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RecoveryClient({}, state redacted)", self.account)
    }
}

/// Parameters of a KE2 answer besides the KE2 itself.
#[derive(Clone, Copy, Debug)]
pub struct Ke2Params {
    /// KSF parameters of the record.
    pub ksf: KsfParams,
    /// Suite id announced by the server.
    pub suite: u16,
    /// Record version announced by the server.
    pub record_version: u16,
    /// The identity the vault names (PROTOCOL.md §6.1): checked against the pin; with no pin, it
    /// is authenticated by the envelope the password opens.
    pub server_identity: ServerIdentity,
}

/// Holds the wrap key and the session keys between KE3 and the server's release. Zeroized on
/// drop.
pub struct Unwrapper {
    account: AccountId,
    key: Key32,
    session: SessionKeys,
}

impl fmt::Debug for Unwrapper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Unwrapper({}, key redacted)", self.account)
    }
}

/// What a successful recovery yields (PROTOCOL.md §6.5).
pub struct Released {
    /// The backup key.
    pub backup_key: BackupKey,
    /// The recovery proof (authorises one delete or re-registration for a few minutes).
    pub proof: Vec<u8>,
    /// Binds a re-registration with `proof` to this login.
    pub binding: ProofBinding,
}

impl fmt::Debug for Released {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Released(redacted)")
    }
}

impl Unwrapper {
    /// Opens the `release` of `recover/finish` (sealed under this session's release key) and
    /// unwraps the backup key in it.
    pub fn open_release(self, release: &[u8]) -> Result<Released> {
        const WHAT: &str = "released key";
        let pt = seal::xopen(
            self.session.release.expose_secret(),
            &release_ad(&self.account),
            release,
            WHAT,
        )?;
        if pt.len() <= WRAPPED_KEY_LEN {
            return Err(Error::Malformed { what: WHAT });
        }
        let wrapped = WrappedKey::from_slice(&pt[..WRAPPED_KEY_LEN])?;
        let bytes = wrapped.as_bytes();
        let cipher = chacha20poly1305::XChaCha20Poly1305::new(self.key.expose_secret().into());
        let key = zeroize::Zeroizing::new(
            cipher
                .decrypt(
                    chacha20poly1305::XNonce::from_slice(&bytes[..seal::NONCE_LEN]),
                    Payload {
                        msg: &bytes[seal::NONCE_LEN..],
                        aad: &wrap_ad(&self.account, RECORD_VERSION, SUITE_ID),
                    },
                )
                .map_err(|_| Error::Corrupted {
                    what: "wrapped backup key",
                })?,
        );
        let key: [u8; 32] = key
            .as_slice()
            .try_into()
            .map_err(|_| Error::Malformed { what: "backup key" })?;
        Ok(Released {
            backup_key: BackupKey::from_bytes(key),
            proof: pt[WRAPPED_KEY_LEN..].to_vec(),
            binding: ProofBinding::from_key(Key32::from_bytes(
                *self.session.binding.expose_secret(),
            )),
        })
    }
}

impl RecoveryClient {
    /// Blinds the password; returns the state and KE1 (96 bytes).
    pub fn start(
        rng: &mut impl rand_core::CryptoRngCore,
        account: &AccountId,
        password: &[u8],
    ) -> Result<(Self, Vec<u8>)> {
        let started = ClientLogin::<Suite>::start(rng, password)
            .map_err(|_| Error::Protocol("login start"))?;
        Ok((
            Self {
                account: account.clone(),
                state: started.state,
            },
            started.message.serialize().to_vec(),
        ))
    }

    /// Processes KE2 (PROTOCOL.md §6.1 step 3). Returns KE3 and the [`Unwrapper`].
    ///
    /// Fails with [`Error::WrongPassword`] if the password is wrong or no record exists (the guess
    /// is already counted), and [`Error::ServerKeyMismatch`] if the server is not the pinned one.
    pub fn finish(
        self,
        rng: &mut impl rand_core::CryptoRngCore,
        password: &[u8],
        ke2: &[u8],
        params: Ke2Params,
        pinned: &ServerIdentity,
    ) -> Result<(Vec<u8>, Unwrapper)> {
        let (ke3, unwrapper, _) = self.finish_inner(rng, password, ke2, params, Some(pinned))?;
        Ok((ke3, unwrapper))
    }

    /// Like [`RecoveryClient::finish`] for a device that has no pinned identity yet (a new
    /// phone): returns the identity to pin from now on. This is safe because the OPAQUE
    /// envelope, opened with the password, authenticates both the server public key and the
    /// server identifier (the identity key) used at registration (RFC 9807 §4.1.2,
    /// `CleartextCredentials`): a vault that does not hold the user's record, or that names
    /// another identity, fails here exactly like a wrong password (PROTOCOL.md §6.1).
    pub fn finish_unpinned(
        self,
        rng: &mut impl rand_core::CryptoRngCore,
        password: &[u8],
        ke2: &[u8],
        params: Ke2Params,
    ) -> Result<(Vec<u8>, Unwrapper, ServerIdentity)> {
        self.finish_inner(rng, password, ke2, params, None)
    }

    fn finish_inner(
        self,
        rng: &mut impl rand_core::CryptoRngCore,
        password: &[u8],
        ke2: &[u8],
        params: Ke2Params,
        pinned: Option<&ServerIdentity>,
    ) -> Result<(Vec<u8>, Unwrapper, ServerIdentity)> {
        check_versions(params.suite, params.record_version)?;
        let identity = params.server_identity;
        if pinned.is_some_and(|p| !p.ct_matches(&identity)) {
            return Err(Error::ServerKeyMismatch);
        }
        params.ksf.validate_recovery()?;
        let argon = params.ksf.argon2()?;
        let ke2 = CredentialResponse::<Suite>::deserialize(ke2)
            .map_err(|_| Error::Malformed { what: "KE2" })?;
        let finished = self
            .state
            .finish(
                rng,
                password,
                ke2,
                ClientLoginFinishParameters::new(
                    Some(labels::OPAQUE_CONTEXT),
                    identifiers(&self.account, &identity),
                    Some(&argon),
                ),
            )
            .map_err(|e| match e {
                opaque_ke::errors::ProtocolError::InvalidLoginError => Error::WrongPassword,
                _ => Error::Protocol("login finish"),
            })?;
        Ok((
            finished.message.serialize().to_vec(),
            Unwrapper {
                account: self.account,
                key: wrap_key(&finished.export_key),
                session: SessionKeys::derive(&finished.session_key),
            },
            identity,
        ))
    }
}
