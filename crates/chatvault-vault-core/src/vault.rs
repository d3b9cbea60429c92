//! Server side of the protocol (PROTOCOL.md §4, §6, §7): pure steps, no storage.
//!
//! The caller (the `chatvault-vault` server) loads an [`AccountState`], calls these steps, and
//! applies the counter transitions of [`crate::counter`] atomically in its store.

use core::fmt;

use ed25519_dalek::SigningKey;
use opaque_ke::{
    CredentialFinalization, CredentialRequest, Identifiers, RegistrationRequest,
    RegistrationUpload, ServerLogin, ServerLoginParameters, ServerRegistration, ServerSetup,
};
use zeroize::Zeroizing;

use crate::counter::{AccountState, GuessCounter};
use crate::error::{Error, Result};
use crate::labels;
use crate::record::{PASSWORD_FILE_LEN, Record};
use crate::seal::{self, Reader};
use crate::session::{ProofBinding, SessionKeys, release_ad};
use crate::sign;
use crate::types::{AccountId, BLOB_VERSION, Key32, KsfParams, ServerIdentity, Suite, WrappedKey};

/// Size of the serialized OPAQUE `ServerSetup`.
pub const SERVER_SETUP_LEN: usize = 128;
/// Size of a serialized server login state.
pub const SERVER_LOGIN_LEN: usize = 128;
const LOGIN_STATE_PT_LEN: usize = 1 + 8 + 8 + 8 + SERVER_LOGIN_LEN;
const TICKET_PT_LEN: usize = 32 + 8;
const PROOF_PT_LEN: usize = 8 + 8 + 32;

/// The vault's long-term secrets (PROTOCOL.md §3). Zeroized on drop; `Debug` is redacted.
pub struct VaultKeys {
    setup: ServerSetup<Suite>,
    record_key: Key32,
    state_key: Key32,
    /// Ed25519 identity key (PROTOCOL.md §3): signs registrations and is the OPAQUE server
    /// identifier. Zeroized on drop by `ed25519-dalek`.
    identity: SigningKey,
}

impl fmt::Debug for VaultKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "VaultKeys(server_identity={}, secrets redacted)",
            self.server_identity()
        )
    }
}

impl VaultKeys {
    /// Serialized size: `server_setup[128] || record_key[32] || state_key[32] ||
    /// identity_key[32]`.
    pub const SERIALIZED_LEN: usize = SERVER_SETUP_LEN + 96;

    /// Fresh random keys.
    pub fn generate(rng: &mut impl rand_core::CryptoRngCore) -> Self {
        Self {
            setup: ServerSetup::<Suite>::new(rng),
            record_key: Key32::generate(rng),
            state_key: Key32::generate(rng),
            identity: SigningKey::generate(rng),
        }
    }

    /// Serializes the keys (secret!).
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(Self::SERIALIZED_LEN));
        out.extend_from_slice(&self.setup.serialize());
        out.extend_from_slice(self.record_key.expose_secret());
        out.extend_from_slice(self.state_key.expose_secret());
        out.extend_from_slice(self.identity.as_bytes());
        out
    }

    /// Parses [`Self::to_bytes`] output.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        const WHAT: &str = "vault keys";
        if bytes.len() != Self::SERIALIZED_LEN {
            return Err(Error::Malformed { what: WHAT });
        }
        let mut r = Reader::new(bytes, WHAT);
        let setup = ServerSetup::<Suite>::deserialize(r.take(SERVER_SETUP_LEN)?)
            .map_err(|_| Error::Malformed { what: WHAT })?;
        Ok(Self {
            setup,
            record_key: Key32::from_bytes(r.array()?),
            state_key: Key32::from_bytes(r.array()?),
            identity: SigningKey::from_bytes(&Zeroizing::new(r.array()?)),
        })
    }

    /// The Ed25519 identity public key clients pin (PROTOCOL.md §3).
    pub fn server_identity(&self) -> ServerIdentity {
        ServerIdentity::from_bytes(self.identity.verifying_key().to_bytes())
    }
}

/// Lifetimes of sealed blobs (seconds).
#[derive(Clone, Copy, Debug)]
pub struct VaultConfig {
    /// Login state lifetime between KE2 and KE3 (PROTOCOL.md §6.3). Default 120.
    pub state_ttl: u64,
    /// Recovery proof lifetime (PROTOCOL.md §6.3). Default 300.
    pub proof_ttl: u64,
    /// Registration ticket lifetime (PROTOCOL.md §4). Default 600.
    pub ticket_ttl: u64,
}

impl Default for VaultConfig {
    fn default() -> Self {
        Self {
            state_ttl: 120,
            proof_ttl: 300,
            ticket_ttl: 600,
        }
    }
}

/// Answer to `register/start`.
pub struct RegistrationStarted {
    /// Serialized `RegistrationResponse` (64 bytes).
    pub response: Vec<u8>,
    /// Sealed registration ticket to echo in `register/finish`.
    pub ticket: Vec<u8>,
    /// Ed25519 signature of the registration transcript with the identity key (PROTOCOL.md §4.1).
    pub signature: [u8; sign::SIGNATURE_LEN],
    /// The identity that signed (sent along so a first registration can pin it).
    pub server_identity: ServerIdentity,
}

/// Contents of `register/finish`.
pub struct RegistrationFinish<'a> {
    /// The ticket from `register/start`.
    pub ticket: &'a [u8],
    /// Serialized `RegistrationUpload` (192 bytes).
    pub upload: &'a [u8],
    /// The wrapped backup key (72 bytes).
    pub wrapped_key: &'a [u8],
    /// KSF parameters the client used.
    pub ksf: KsfParams,
    /// Recovery proof, required if a live record exists.
    pub proof: Option<&'a [u8]>,
    /// `binding` MAC of a re-registration with a proof (PROTOCOL.md §4.2), keyed by the session
    /// key of the login that produced the proof.
    pub binding: Option<&'a [u8]>,
}

/// A record ready to be written with a compare-and-swap on `expected_generation`.
pub struct NewRecord {
    /// Generation the row must still have when written.
    pub expected_generation: u64,
    /// The new generation.
    pub generation: u64,
    /// The sealed record.
    pub sealed: Vec<u8>,
    /// The fresh counter.
    pub counter: GuessCounter,
}

/// Answer to `recover/start`.
pub struct RecoverStarted {
    /// Serialized `CredentialResponse` (KE2, 320 bytes).
    pub ke2: Vec<u8>,
    /// Sealed login state.
    pub state: Vec<u8>,
    /// Guesses left if this one is wrong.
    pub attempts_left: u32,
    /// KSF parameters for the client.
    pub ksf: KsfParams,
    /// The vault's identity (the OPAQUE server identifier of this login).
    pub server_identity: ServerIdentity,
}

/// An opened login state (PROTOCOL.md §7).
pub struct LoginState {
    dummy: bool,
    /// Record generation the KE2 was computed for.
    pub generation: u64,
    /// Guess sequence number counted for this KE2.
    pub guess_seq: u64,
    /// Expiry (unix seconds).
    pub expires_at: u64,
    server_login: Zeroizing<[u8; SERVER_LOGIN_LEN]>,
    /// The identity of the vault that opened the state (the OPAQUE server identifier).
    identity: ServerIdentity,
}

impl fmt::Debug for LoginState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoginState")
            .field("dummy", &self.dummy)
            .field("generation", &self.generation)
            .field("guess_seq", &self.guess_seq)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

impl LoginState {
    /// Verifies the client's KE3 against this state (PROTOCOL.md §6.3 step 3). Consumes the state
    /// and returns the keys derived from the OPAQUE session key (PROTOCOL.md §6.5). A dummy state
    /// never verifies.
    pub fn finish(self, account: &AccountId, ke3: &[u8]) -> Result<SessionKeys> {
        let server_login =
            ServerLogin::<Suite>::deserialize(&self.server_login[..]).map_err(|_| {
                Error::Malformed {
                    what: "login state",
                }
            })?;
        let ke3 = CredentialFinalization::<Suite>::deserialize(ke3)
            .map_err(|_| Error::Malformed { what: "KE3" })?;
        let identity = self.identity;
        let result = server_login.finish(ke3, login_params(account, &identity));
        match result {
            Ok(finished) if !self.dummy => Ok(SessionKeys::derive(&finished.session_key)),
            _ => Err(Error::AuthenticationFailed),
        }
    }
}

/// OPAQUE parameters of a login: the account is the client identifier, the vault's identity key
/// the server identifier (PROTOCOL.md §3), so the envelope authenticates both.
pub(crate) fn login_params<'a>(
    account: &'a AccountId,
    identity: &'a ServerIdentity,
) -> ServerLoginParameters<'a, 'a> {
    ServerLoginParameters {
        context: Some(labels::OPAQUE_CONTEXT),
        identifiers: Identifiers {
            client: Some(account.as_bytes()),
            server: Some(identity.as_bytes()),
        },
    }
}

/// `label || lp(account) || nonce` (PROTOCOL.md §3.1).
pub(crate) fn credential_id(account: &AccountId, nonce: &[u8; 32]) -> Vec<u8> {
    let mut out = labels::CREDENTIAL_ID.to_vec();
    seal::lp(&mut out, account.as_bytes());
    out.extend_from_slice(nonce);
    out
}

/// The pure server-side protocol engine.
pub struct Vault {
    keys: VaultKeys,
    config: VaultConfig,
}

impl fmt::Debug for Vault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Vault")
            .field("keys", &self.keys)
            .field("config", &self.config)
            .finish()
    }
}

impl Vault {
    /// An engine over `keys`.
    pub fn new(keys: VaultKeys, config: VaultConfig) -> Self {
        Self { keys, config }
    }

    /// The configured lifetimes.
    pub fn config(&self) -> &VaultConfig {
        &self.config
    }

    /// The identity public key clients pin.
    pub fn server_identity(&self) -> ServerIdentity {
        self.keys.server_identity()
    }

    /// `register/start` (PROTOCOL.md §4 step 2): evaluates the OPRF under a fresh per-registration
    /// key. Never looks at the account's record.
    pub fn register_start(
        &self,
        rng: &mut impl rand_core::CryptoRngCore,
        now: u64,
        account: &AccountId,
        request: &[u8],
    ) -> Result<RegistrationStarted> {
        let request_bytes = request;
        let request =
            RegistrationRequest::<Suite>::deserialize(request).map_err(|_| Error::Malformed {
                what: "registration request",
            })?;
        let mut nonce = [0u8; 32];
        rng.fill_bytes(&mut nonce);
        let response = ServerRegistration::<Suite>::start(
            &self.keys.setup,
            request,
            &credential_id(account, &nonce),
        )
        .map_err(|_| Error::Protocol("registration start"))?;
        let mut pt = Zeroizing::new(Vec::with_capacity(TICKET_PT_LEN));
        pt.extend_from_slice(&nonce);
        pt.extend_from_slice(&now.saturating_add(self.config.ticket_ttl).to_be_bytes());
        let ticket = seal::seal_versioned(
            rng,
            &self.keys.state_key,
            BLOB_VERSION,
            &seal::ad(labels::TICKET_AD, BLOB_VERSION, account, &[]),
            &pt,
        );
        let response = response.message.serialize().to_vec();
        let signature = sign::sign(
            &self.keys.identity,
            &sign::registration_transcript(account, request_bytes, &response, &ticket),
        );
        Ok(RegistrationStarted {
            response,
            ticket,
            signature,
            server_identity: self.server_identity(),
        })
    }

    /// `register/finish` (PROTOCOL.md §4 step 4): checks the ticket, the authorisation against the
    /// current `state` (a live record requires a valid proof), and builds the sealed new record.
    pub fn register_finish(
        &self,
        rng: &mut impl rand_core::CryptoRngCore,
        now: u64,
        account: &AccountId,
        state: &AccountState,
        input: RegistrationFinish<'_>,
        max_attempts: u32,
    ) -> Result<NewRecord> {
        const TICKET: &str = "registration ticket";
        let pt = seal::open_versioned(
            &self.keys.state_key,
            BLOB_VERSION,
            &seal::ad(labels::TICKET_AD, BLOB_VERSION, account, &[]),
            input.ticket,
            TICKET_PT_LEN,
            TICKET,
        )?;
        let mut r = Reader::new(&pt, TICKET);
        let credential_nonce = r.array::<32>()?;
        if now >= r.u64()? {
            return Err(Error::Expired { what: TICKET });
        }
        input.ksf.validate_registration()?;
        let wrapped_key = WrappedKey::from_slice(input.wrapped_key)?;
        let upload = RegistrationUpload::<Suite>::deserialize(input.upload).map_err(|_| {
            Error::Malformed {
                what: "registration upload",
            }
        })?;
        if let AccountState::Registered { generation, .. } = state {
            match input.proof {
                None => return Err(Error::AlreadyRegistered),
                Some(proof) => {
                    let binding = self.check_proof(now, account, proof, *generation)?;
                    let mac = input.binding.ok_or(Error::Malformed {
                        what: "re-registration binding (missing)",
                    })?;
                    binding.verify_reregistration(
                        account,
                        input.ticket,
                        input.upload,
                        input.wrapped_key,
                        &input.ksf,
                        mac,
                    )?;
                }
            }
        }
        let password_file = ServerRegistration::<Suite>::finish(upload).serialize();
        let expected_generation = state.generation();
        let generation = expected_generation + 1;
        let record = Record {
            generation,
            created_at: now,
            max_attempts,
            ksf: input.ksf,
            credential_nonce,
            password_file: Zeroizing::new(
                <[u8; PASSWORD_FILE_LEN]>::try_from(password_file.as_slice())
                    .expect("password file is 192 bytes"),
            ),
            wrapped_key,
        };
        Ok(NewRecord {
            expected_generation,
            generation,
            sealed: record.seal(rng, &self.keys.record_key, account),
            counter: GuessCounter::new(max_attempts),
        })
    }

    /// Opens the sealed record of a registered account and checks it against the counter columns.
    pub fn open_record(
        &self,
        account: &AccountId,
        generation: u64,
        sealed: &[u8],
        counter: &GuessCounter,
    ) -> Result<Record> {
        let record = Record::open(sealed, &self.keys.record_key, account, generation)?;
        if record.max_attempts != counter.max_attempts {
            return Err(Error::Corrupted {
                what: "max_attempts column",
            });
        }
        Ok(record)
    }

    /// `recover/start` after the guess was counted (PROTOCOL.md §6.1 steps 4–5).
    ///
    /// `counted` is the opened record and the counter **after** the durable increment, or `None`
    /// for an account without a record (dummy KE2, indistinguishable from a real one).
    /// `default_max_attempts` is the current policy, shown for unknown accounts.
    pub fn recover_start(
        &self,
        rng: &mut impl rand_core::CryptoRngCore,
        now: u64,
        account: &AccountId,
        counted: Option<(&Record, &GuessCounter)>,
        ke1: &[u8],
        default_max_attempts: u32,
    ) -> Result<RecoverStarted> {
        let request = CredentialRequest::<Suite>::deserialize(ke1)
            .map_err(|_| Error::Malformed { what: "KE1" })?;
        let (password_file, nonce, generation, guess_seq, attempts_left, ksf) = match counted {
            Some((record, counter)) => (
                Some(
                    ServerRegistration::<Suite>::deserialize(&record.password_file[..]).map_err(
                        |_| Error::Corrupted {
                            what: "password file",
                        },
                    )?,
                ),
                record.credential_nonce,
                record.generation,
                counter.guess_seq,
                counter.attempts_left(),
                record.ksf,
            ),
            None => (
                None,
                self.dummy_nonce(account),
                0,
                0,
                default_max_attempts.saturating_sub(1),
                KsfParams::PRODUCTION,
            ),
        };
        let dummy = password_file.is_none();
        let identity = self.server_identity();
        let started = ServerLogin::start(
            rng,
            &self.keys.setup,
            password_file,
            request,
            &credential_id(account, &nonce),
            login_params(account, &identity),
        )
        .map_err(|_| Error::Protocol("login start"))?;
        let mut pt = Zeroizing::new(Vec::with_capacity(LOGIN_STATE_PT_LEN));
        pt.push(u8::from(!dummy));
        pt.extend_from_slice(&generation.to_be_bytes());
        pt.extend_from_slice(&guess_seq.to_be_bytes());
        pt.extend_from_slice(&now.saturating_add(self.config.state_ttl).to_be_bytes());
        pt.extend_from_slice(&started.state.serialize());
        let state = seal::seal_versioned(
            rng,
            &self.keys.state_key,
            BLOB_VERSION,
            &seal::ad(labels::LOGIN_STATE_AD, BLOB_VERSION, account, &[]),
            &pt,
        );
        Ok(RecoverStarted {
            ke2: started.message.serialize().to_vec(),
            state,
            attempts_left,
            ksf,
            server_identity: identity,
        })
    }

    /// Checks that `ke1` parses as a KE1, so a malformed request is rejected **before** a guess is
    /// counted (PROTOCOL.md §6.2).
    pub fn validate_ke1(ke1: &[u8]) -> Result<()> {
        CredentialRequest::<Suite>::deserialize(ke1)
            .map(|_| ())
            .map_err(|_| Error::Malformed { what: "KE1" })
    }

    /// Opens a login state for `account` and checks its expiry (PROTOCOL.md §6.3 step 1).
    pub fn open_login_state(
        &self,
        now: u64,
        account: &AccountId,
        blob: &[u8],
    ) -> Result<LoginState> {
        const WHAT: &str = "login state";
        let pt = seal::open_versioned(
            &self.keys.state_key,
            BLOB_VERSION,
            &seal::ad(labels::LOGIN_STATE_AD, BLOB_VERSION, account, &[]),
            blob,
            LOGIN_STATE_PT_LEN,
            WHAT,
        )?;
        let mut r = Reader::new(&pt, WHAT);
        let kind = r.u8()?;
        let state = LoginState {
            dummy: kind != 1,
            generation: r.u64()?,
            guess_seq: r.u64()?,
            expires_at: r.u64()?,
            server_login: Zeroizing::new(r.array()?),
            identity: self.server_identity(),
        };
        if now >= state.expires_at {
            return Err(Error::Expired { what: WHAT });
        }
        Ok(state)
    }

    /// Issues a recovery proof for `generation` (PROTOCOL.md §6.3 step 5), bound to the session
    /// of the login that earned it. Returns the proof and its expiry.
    pub fn issue_proof(
        &self,
        rng: &mut impl rand_core::CryptoRngCore,
        now: u64,
        account: &AccountId,
        generation: u64,
        session: &SessionKeys,
    ) -> (Vec<u8>, u64) {
        let expires_at = now.saturating_add(self.config.proof_ttl);
        let mut pt = Zeroizing::new(Vec::with_capacity(PROOF_PT_LEN));
        pt.extend_from_slice(&generation.to_be_bytes());
        pt.extend_from_slice(&expires_at.to_be_bytes());
        pt.extend_from_slice(session.binding.expose_secret());
        let proof = seal::seal_versioned(
            rng,
            &self.keys.state_key,
            BLOB_VERSION,
            &seal::ad(labels::PROOF_AD, BLOB_VERSION, account, &[]),
            &pt,
        );
        (proof, expires_at)
    }

    /// Seals what `recover/finish` releases (the wrapped key and the proof) under the session's
    /// release key (PROTOCOL.md §6.5): only the client that ran this login can open it.
    pub fn seal_release(
        &self,
        rng: &mut impl rand_core::CryptoRngCore,
        account: &AccountId,
        session: &SessionKeys,
        wrapped_key: &WrappedKey,
        proof: &[u8],
    ) -> Vec<u8> {
        let mut pt = Vec::with_capacity(wrapped_key.as_bytes().len() + proof.len());
        pt.extend_from_slice(wrapped_key.as_bytes());
        pt.extend_from_slice(proof);
        seal::xseal(
            rng,
            session.release.expose_secret(),
            &release_ad(account),
            &pt,
        )
    }

    /// Checks a recovery proof for the record's `current_generation`; returns the binding key of
    /// the login session that earned it.
    pub fn check_proof(
        &self,
        now: u64,
        account: &AccountId,
        proof: &[u8],
        current_generation: u64,
    ) -> Result<ProofBinding> {
        const WHAT: &str = "recovery proof";
        let pt = seal::open_versioned(
            &self.keys.state_key,
            BLOB_VERSION,
            &seal::ad(labels::PROOF_AD, BLOB_VERSION, account, &[]),
            proof,
            PROOF_PT_LEN,
            WHAT,
        )?;
        let mut r = Reader::new(&pt, WHAT);
        let generation = r.u64()?;
        let expires_at = r.u64()?;
        let binding = ProofBinding::from_key(Key32::from_bytes(r.array()?));
        if now >= expires_at {
            return Err(Error::Expired { what: WHAT });
        }
        if generation != current_generation {
            return Err(Error::StaleProof);
        }
        Ok(binding)
    }

    fn dummy_nonce(&self, account: &AccountId) -> [u8; 32] {
        let mut info = labels::DUMMY_NONCE.to_vec();
        seal::lp(&mut info, account.as_bytes());
        let hk = hkdf::Hkdf::<sha2::Sha256>::new(None, self.keys.state_key.expose_secret());
        let mut out = [0u8; 32];
        hk.expand(&info, &mut out)
            .expect("32 bytes is a valid HKDF-SHA256 length");
        out
    }
}
