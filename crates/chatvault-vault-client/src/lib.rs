//! Blocking HTTP client of the chatvault **Backup Key Vault** (docs/PROTOCOL.md), used by the
//! `chatvault` CLI to register, recover, change and delete the 32-byte backup key behind a password.
//!
//! [`VaultClient`] runs the client side of OPAQUE (RFC 9807) from `chatvault-vault-core` over
//! HTTP/JSON with `ureq`. It pins the vault's OPAQUE server key ([`ServerIdentity`]): the first
//! [`VaultClient::register`] returns it, the caller stores it, and every later call refuses a vault
//! that proves a different key ([`Error::ServerKeyMismatch`]).
//!
//! It must never log, print or send the password, the export key or the backup key; passwords
//! are `secrecy::SecretString`, the recovered key is zeroized on drop, and [`Error`] messages
//! contain no secrets. Only `https://` URLs are accepted (with the `tls` feature), except plain
//! `http://` to a loopback host for local development and tests.
//!
//! ```no_run
//! use chatvault_vault_client::{VaultClient, SecretString};
//! let client = VaultClient::new("https://vault.example", "alice", SecretString::from("token"))?;
//! let pinned = client.register(&SecretString::from("pw"), &[7u8; 32])?;
//! let recovered = client.recover(&SecretString::from("pw"), &pinned)?;
//! assert_eq!(*recovered.backup_key, [7u8; 32]);
//! # Ok::<(), chatvault_vault_client::Error>(())
//! ```

use std::fmt;
use std::time::Duration;

pub mod threshold;
pub use threshold::{
    RealmEndpoint, RealmId, ThresholdClient, ThresholdRecovered, ThresholdRegistered,
};

pub use chatvault_vault_core::api::ErrorCode as WireErrorCode;
use chatvault_vault_core::api::{self, ErrorCode, b64_decode, b64_encode};
use chatvault_vault_core::{
    AccountId, BackupKey, Error as CoreError, Ke2Params, ProofBinding, RecoveryClient,
    RegistrationAnswer, RegistrationClient,
};
pub use chatvault_vault_core::{KsfParams, ServerIdentity};
use secrecy::ExposeSecret as _;
pub use secrecy::SecretString;
use serde::Serialize;
use serde::de::DeserializeOwned;
use zeroize::Zeroizing;

/// Errors a caller can act on. Messages are meant for end users and never contain secrets.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The password is wrong (or no backup key is registered for this account: the vault does not
    /// reveal which). The guess was counted.
    #[error(
        "wrong password (or no backup key is registered for this account); {attempts_left} attempt(s) left before the backup key is destroyed"
    )]
    WrongPassword {
        /// Wrong guesses left before the backup key is destroyed.
        attempts_left: u32,
    },
    /// Too many wrong guesses: the vault destroyed the backup key for good.
    #[error(
        "locked: backup key destroyed after too many wrong passwords; the old backup cannot be restored (you can register a new backup key)"
    )]
    Locked,
    /// Registration refused: a backup key is already registered (use `change_password`, or `reset`).
    #[error(
        "a backup key is already registered for this account; change the password with the current one, or reset (the old backup is then lost)"
    )]
    AlreadyRegistered,
    /// The vault proved a different OPAQUE server key than the pinned one.
    #[error(
        "the vault's server key differs from the pinned one; refusing to continue (possible impersonation, or the vault's keys were replaced)"
    )]
    ServerKeyMismatch,
    /// The account token was missing, invalid or expired (HTTP 401).
    #[error("the vault rejected the account token (invalid or expired); sign in again")]
    Unauthorized,
    /// The account token is for another account (HTTP 403).
    #[error("the account token is for a different account")]
    Forbidden,
    /// Rate limited (HTTP 429).
    #[error("too many requests to the vault; wait a minute and try again")]
    RateLimited,
    /// The recovery took too long, was superseded, or the record changed meanwhile; retrying is safe.
    #[error("the vault operation was interrupted ({0}); try again")]
    Retry(String),
    /// The vault could not be reached (DNS, connection, TLS, timeout).
    #[error("cannot reach the vault: {0}")]
    Unreachable(#[source] Box<ureq::Error>),
    /// The vault answered with an error this client cannot map to anything more specific.
    #[error("the vault refused the request (HTTP {status}, {code}): {message}")]
    Server {
        /// HTTP status.
        status: u16,
        /// Error code from the body.
        code: ErrorCode,
        /// Message from the body.
        message: String,
    },
    /// The vault uses a protocol version this client does not implement; update the app.
    #[error("the vault uses an unsupported protocol version ({0}); update the app")]
    UnsupportedVersion(String),
    /// The vault's answer was malformed or did not verify.
    #[error("protocol error talking to the vault: {0}")]
    Protocol(String),
    /// The account has no registered (live) backup key at the vault: never registered, deleted,
    /// reset or destroyed (HTTP 409 `not_registered`).
    #[error("no backup key is registered for this account at the vault")]
    NotRegistered,
    /// Threshold mode: fewer than `t` realms gave a usable answer. The message names every realm
    /// that failed and why (down, refused, misbehaving).
    #[error("{0}")]
    NotEnoughRealms(String),
    /// Invalid argument (account id, URL, KSF parameters).
    #[error("invalid input: {0}")]
    InvalidInput(String),
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<CoreError> for Error {
    fn from(e: CoreError) -> Self {
        match e {
            CoreError::ServerKeyMismatch => Error::ServerKeyMismatch,
            CoreError::UnsupportedVersion { .. } => Error::UnsupportedVersion(e.to_string()),
            CoreError::InvalidAccountId | CoreError::InvalidKsfParams(_) => {
                Error::InvalidInput(e.to_string())
            }
            other => Error::Protocol(other.to_string()),
        }
    }
}

/// A recovery proof: authorises one change of the current record for a few minutes, and only
/// together with the binding key of the login that earned it (PROTOCOL.md §4.2).
/// Redacted `Debug`; zeroized on drop.
pub struct RecoveryProof {
    proof: SecretString,
    binding: ProofBinding,
    /// Expiry (unix seconds).
    pub expires_at: u64,
}

impl fmt::Debug for RecoveryProof {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RecoveryProof(redacted, expires_at={})", self.expires_at)
    }
}

/// The result of a successful recovery.
pub struct Recovered {
    /// The backup key (zeroized on drop).
    pub backup_key: Zeroizing<[u8; 32]>,
    /// Proof of the current password, for [`VaultClient::register_with_proof`] / delete.
    pub proof: RecoveryProof,
}

impl fmt::Debug for Recovered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Recovered")
            .field("backup_key", &"(redacted)")
            .field("proof", &self.proof)
            .finish()
    }
}

/// Outcome of [`VaultClient::put_commitment`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommitmentPut {
    /// The vault stored the commitment (none was stored, or the new sequence number is higher).
    Stored,
    /// The vault refused it: a commitment with an equal or higher sequence number is stored.
    Stale {
        /// The sequence number the vault holds.
        current_seq: u64,
    },
}

/// Blocking client for one account on one vault.
pub struct VaultClient {
    base: String,
    account: AccountId,
    token: SecretString,
    agent: ureq::Agent,
    ksf: KsfParams,
}

impl fmt::Debug for VaultClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VaultClient")
            .field("base", &self.base)
            .field("account", &self.account)
            .field("token", &"(redacted)")
            .field("ksf", &self.ksf)
            .finish()
    }
}

/// The password as the protocol sees it (PROTOCOL.md §2.2): Unicode NFKC, so that the same
/// password typed on two keyboards (composed or decomposed accents, full-width digits from an
/// IME, a no-break space) gives the same bytes. The buffer is sized so that normalisation never
/// reallocates (NFKC expands a character to at most 18), and is zeroized on drop.
pub fn normalize_password(password: &SecretString) -> Zeroizing<String> {
    use unicode_normalization::UnicodeNormalization as _;
    let raw = password.expose_secret();
    let mut out = Zeroizing::new(String::with_capacity(raw.len().saturating_mul(18)));
    out.extend(raw.nfkc());
    out
}

/// Checks and normalises a vault base URL (PROTOCOL.md §1, SECURITY.md): parsed by a real URL
/// parser; `https://`, or plain `http://` only to a loopback address (`localhost`, 127.0.0.0/8,
/// `::1`); no user name or password (`http://localhost:1@evil.example/` is refused), no query,
/// no fragment. Returns the URL without a trailing slash, so two spellings of one vault compare
/// equal (the pin is kept per normalised URL).
pub fn normalize_vault_url(text: &str) -> Result<String> {
    let bad = |why: &str| Error::InvalidInput(format!("vault URL {why}"));
    let url = url::Url::parse(text.trim()).map_err(|e| bad(&format!("does not parse ({e})")))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("must not contain a user name or password"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("must not have a query or fragment"));
    }
    let loopback = match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => return Err(bad("has no host")),
    };
    match url.scheme() {
        "https" => {}
        "http" if loopback => {}
        _ => {
            return Err(bad(
                "must be https:// (plain http:// only to localhost, 127.0.0.1 or [::1])",
            ));
        }
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

/// ureq's resolver, except that a URL whose host is an IP address is not looked up. ureq asks its
/// resolver before every request (pooled connection or not), and its default resolver runs each
/// lookup on a new thread when a timeout is set: for `http://127.0.0.1:…` that is a thread per
/// request for nothing.
#[derive(Debug, Default)]
struct IpLiteralResolver(ureq::unversioned::resolver::DefaultResolver);

impl ureq::unversioned::resolver::Resolver for IpLiteralResolver {
    fn resolve(
        &self,
        uri: &ureq::http::Uri,
        config: &ureq::config::Config,
        timeout: ureq::unversioned::transport::NextTimeout,
    ) -> std::result::Result<ureq::unversioned::resolver::ResolvedSocketAddrs, ureq::Error> {
        let literal = uri.authority().and_then(|a| {
            let host = a.host().trim_start_matches('[').trim_end_matches(']');
            let ip: std::net::IpAddr = host.parse().ok()?;
            let port = a.port_u16().or(match uri.scheme_str() {
                Some("https") => Some(443),
                Some("http") => Some(80),
                _ => None,
            })?;
            Some(std::net::SocketAddr::new(ip, port))
        });
        match literal {
            Some(addr) => {
                let mut out = self.empty();
                out.push(addr);
                Ok(out)
            }
            None => self.0.resolve(uri, config, timeout),
        }
    }
}

impl VaultClient {
    /// A client for `account_id` at `base_url` (e.g. `https://vault.example`), authenticating
    /// with the account `token`. Registrations use [`KsfParams::PRODUCTION`].
    pub fn new(base_url: &str, account_id: &str, token: SecretString) -> Result<Self> {
        let base = normalize_vault_url(base_url)?;
        let account = AccountId::new(account_id)?;
        let agent = Self::agent(Self::agent_config())?;
        Ok(Self {
            base,
            account,
            token,
            agent,
            ksf: KsfParams::PRODUCTION,
        })
    }

    fn agent_config() -> ureq::config::ConfigBuilder<ureq::typestate::AgentScope> {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            // The vault closes a keep-alive connection that sends no request head for 10 s (its
            // header-read timeout, PROTOCOL.md §9.2). Reusing a connection idle for about that
            // long races the server's close and fails with "peer disconnected" (seen after a
            // slow Argon2 between two requests on a loaded machine), so an idle connection is
            // reused only well inside that window and a new one is opened otherwise.
            .max_idle_age(Duration::from_secs(4))
            .user_agent("chatvault-vault-client/1")
    }

    fn agent(
        config: ureq::config::ConfigBuilder<ureq::typestate::AgentScope>,
    ) -> Result<ureq::Agent> {
        Ok(ureq::Agent::with_parts(
            config.build(),
            ureq::unversioned::transport::DefaultConnector::default(),
            IpLiteralResolver::default(),
        ))
    }

    /// Trusts only the CA certificates in `pem` (PEM, one or more) for `https://`, instead of
    /// the public web PKI: for a vault with a private CA (`chatvault --vault-ca FILE`).
    #[cfg(feature = "tls")]
    pub fn with_ca_pem(mut self, pem: &[u8]) -> Result<Self> {
        use ureq::tls::{Certificate, RootCerts, TlsConfig};
        let certs: Vec<Certificate<'static>> = ureq::tls::parse_pem(pem)
            .filter_map(|item| match item {
                Ok(ureq::tls::PemItem::Certificate(c)) => Some(Ok(c)),
                Ok(_) => None,
                Err(e) => Some(Err(e)),
            })
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| Error::InvalidInput(format!("vault CA file: {e}")))?;
        if certs.is_empty() {
            return Err(Error::InvalidInput(
                "vault CA file: no PEM certificate in it".into(),
            ));
        }
        let tls = TlsConfig::builder()
            .root_certs(RootCerts::Specific(std::sync::Arc::new(certs)))
            .build();
        self.agent = Self::agent(Self::agent_config().tls_config(tls))?;
        Ok(self)
    }

    /// Uses `ksf` for new registrations (default [`KsfParams::PRODUCTION`]). Cheaper parameters
    /// weaken the protection against a stolen vault database: tests only.
    pub fn with_registration_ksf(mut self, ksf: KsfParams) -> Result<Self> {
        ksf.validate()?;
        self.ksf = ksf;
        Ok(self)
    }

    /// The account this client acts for.
    pub fn account(&self) -> &str {
        self.account.as_str()
    }

    fn url(&self, tail: &str) -> String {
        format!("{}/v1/accounts/{}{}", self.base, self.account, tail)
    }

    fn auth(&self) -> String {
        format!("Bearer {}", self.token.expose_secret())
    }

    fn post<B: Serialize, R: DeserializeOwned>(&self, tail: &str, body: &B) -> Result<R> {
        let resp = self
            .agent
            .post(&self.url(tail))
            .header("Authorization", &self.auth())
            .send_json(body)
            .map_err(|e| Error::Unreachable(Box::new(e)))?;
        Self::parse(resp)
    }

    fn post_empty<B: Serialize>(&self, tail: &str, body: &B) -> Result<()> {
        let resp = self
            .agent
            .post(&self.url(tail))
            .header("Authorization", &self.auth())
            .send_json(body)
            .map_err(|e| Error::Unreachable(Box::new(e)))?;
        Self::check(resp).map(|_| ())
    }

    fn check(
        mut resp: ureq::http::Response<ureq::Body>,
    ) -> Result<ureq::http::Response<ureq::Body>> {
        let status = resp.status().as_u16();
        if (200..300).contains(&status) {
            return Ok(resp);
        }
        let body: Option<api::ErrorBody> = resp
            .body_mut()
            .with_config()
            .limit(64 * 1024)
            .read_json()
            .ok();
        let (code, message) = body
            .map(|b| (b.error, b.message))
            .unwrap_or_else(|| (ErrorCode::Unknown, String::new()));
        Err(match (status, code) {
            (401, _) => Error::Unauthorized,
            (403, ErrorCode::Forbidden) => Error::Forbidden,
            (423, _) | (_, ErrorCode::Locked) => Error::Locked,
            (409, ErrorCode::AlreadyRegistered) => Error::AlreadyRegistered,
            (409 | 404, ErrorCode::NotRegistered) => Error::NotRegistered,
            (429, _) => Error::RateLimited,
            (409, ErrorCode::StaleState | ErrorCode::StaleProof | ErrorCode::Conflict)
            | (410, _)
            | (408, _)
            | (503, _) => Error::Retry(if message.is_empty() {
                format!("HTTP {status}")
            } else {
                message
            }),
            (_, ErrorCode::UnsupportedVersion) => Error::UnsupportedVersion(message),
            _ => Error::Server {
                status,
                code,
                message,
            },
        })
    }

    fn parse<R: DeserializeOwned>(resp: ureq::http::Response<ureq::Body>) -> Result<R> {
        let mut resp = Self::check(resp)?;
        resp.body_mut()
            .with_config()
            .limit(64 * 1024)
            .read_json()
            .map_err(|e| Error::Protocol(format!("malformed answer: {e}")))
    }

    fn decode(s: &str, what: &'static str) -> Result<Vec<u8>> {
        b64_decode(s, what).map_err(|e| Error::Protocol(e.to_string()))
    }

    /// Registers `backup_key` behind `password` on a vault that has no record for this account
    /// (first registration, trust on first use). Returns the vault's server identity: store it
    /// and pass it to every later call.
    pub fn register(
        &self,
        password: &SecretString,
        backup_key: &[u8; 32],
    ) -> Result<ServerIdentity> {
        self.register_inner(password, backup_key, None, None)
    }

    /// Like [`register`](Self::register), but refuses a vault whose key is not `pinned`.
    pub fn register_pinned(
        &self,
        password: &SecretString,
        backup_key: &[u8; 32],
        pinned: &ServerIdentity,
    ) -> Result<ServerIdentity> {
        self.register_inner(password, backup_key, Some(pinned), None)
    }

    /// Replaces the current record (new password and/or key) using a fresh [`RecoveryProof`].
    /// The proof is consumed: it cannot be used twice.
    pub fn register_with_proof(
        &self,
        password: &SecretString,
        backup_key: &[u8; 32],
        pinned: &ServerIdentity,
        proof: RecoveryProof,
    ) -> Result<ServerIdentity> {
        self.register_inner(password, backup_key, Some(pinned), Some(proof))
    }

    fn register_inner(
        &self,
        password: &SecretString,
        backup_key: &[u8; 32],
        pinned: Option<&ServerIdentity>,
        proof: Option<RecoveryProof>,
    ) -> Result<ServerIdentity> {
        let mut rng = rand_core::OsRng;
        let pw = normalize_password(password);
        let pw = pw.as_bytes();
        let (client, request) = RegistrationClient::start(&mut rng, &self.account, pw)?;
        let started: api::RegisterStartResponse = self.post(
            "/register/start",
            &api::RegisterStartRequest {
                request: b64_encode(&request),
            },
        )?;
        check_versions(started.suite, started.record_version)?;
        let response = Self::decode(&started.response, "registration response")?;
        let ticket = Self::decode(&started.ticket, "ticket")?;
        let signature = Self::decode(&started.signature, "registration signature")?;
        let named = ServerIdentity::from_b64(&started.server_identity)?;
        let key = BackupKey::from_bytes(*backup_key);
        // PROTOCOL.md §4.1: the signature is checked against the pin before anything is sent.
        let out = client.finish(
            &mut rng,
            pw,
            RegistrationAnswer {
                response: &response,
                ticket: &ticket,
                signature: &signature,
                server_identity: named,
            },
            &key,
            self.ksf,
            pinned,
        )?;
        let binding = proof.as_ref().map(|p| {
            b64_encode(&p.binding.reregistration_mac(
                &self.account,
                &ticket,
                &out.upload,
                out.wrapped_key.as_bytes(),
                &self.ksf,
            ))
        });
        let finished: api::RegisterFinishResponse = self.post(
            "/register/finish",
            &api::RegisterFinishRequest {
                ticket: started.ticket,
                upload: b64_encode(&out.upload),
                wrapped_key: b64_encode(out.wrapped_key.as_bytes()),
                ksf: self.ksf,
                proof: proof.map(|p| p.proof.expose_secret().to_owned()),
                binding,
            },
        )?;
        let announced = ServerIdentity::from_b64(&finished.server_identity)?;
        if !announced.ct_matches(&out.server_identity) {
            return Err(Error::ServerKeyMismatch);
        }
        Ok(out.server_identity)
    }

    /// Recovers the backup key with `password` from the vault pinned as `pinned`.
    ///
    /// A wrong password costs one of the account's attempts: [`Error::WrongPassword`] says how
    /// many are left; when none are left the vault destroys the key ([`Error::Locked`]).
    pub fn recover(&self, password: &SecretString, pinned: &ServerIdentity) -> Result<Recovered> {
        self.recover_inner(password, Some(pinned)).map(|(r, _)| r)
    }

    /// Recovers on a device that has no pinned server key yet (a new phone) and returns the key
    /// to pin from now on. The OPAQUE envelope authenticates the server key used at
    /// registration, so an impostor vault fails like a wrong password (PROTOCOL.md §6.1).
    pub fn recover_unpinned(&self, password: &SecretString) -> Result<(Recovered, ServerIdentity)> {
        self.recover_inner(password, None)
    }

    fn recover_inner(
        &self,
        password: &SecretString,
        pinned: Option<&ServerIdentity>,
    ) -> Result<(Recovered, ServerIdentity)> {
        let mut rng = rand_core::OsRng;
        let pw = normalize_password(password);
        let pw = pw.as_bytes();
        let (client, ke1) = RecoveryClient::start(&mut rng, &self.account, pw)?;
        let started: api::RecoverStartResponse = self.post(
            "/recover/start",
            &api::RecoverStartRequest {
                ke1: b64_encode(&ke1),
            },
        )?;
        let ke2 = Self::decode(&started.ke2, "KE2")?;
        let params = Ke2Params {
            ksf: started.ksf,
            suite: started.suite,
            record_version: started.record_version,
            server_identity: ServerIdentity::from_b64(&started.server_identity)?,
        };
        let finished = match pinned {
            Some(p) => client
                .finish(&mut rng, pw, &ke2, params, p)
                .map(|(ke3, u)| (ke3, u, *p)),
            None => client.finish_unpinned(&mut rng, pw, &ke2, params),
        };
        let (ke3, unwrapper, seen) = match finished {
            Ok(v) => v,
            Err(CoreError::WrongPassword) => {
                return Err(Error::WrongPassword {
                    attempts_left: started.attempts_left,
                });
            }
            Err(e) => return Err(e.into()),
        };
        let finished: api::RecoverFinishResponse = self.post(
            "/recover/finish",
            &api::RecoverFinishRequest {
                state: started.state,
                ke3: b64_encode(&ke3),
            },
        )?;
        let released = unwrapper.open_release(&Self::decode(&finished.release, "release")?)?;
        Ok((
            Recovered {
                backup_key: released.backup_key.into_zeroizing(),
                proof: RecoveryProof {
                    proof: SecretString::from(b64_encode(&released.proof)),
                    binding: released.binding,
                    expires_at: finished.proof_expires_at,
                },
            },
            seen,
        ))
    }

    /// Changes the password: recovers with `old` (one attempt if wrong), then re-registers the
    /// same backup key behind `new`, bound to the session key of that login (PROTOCOL.md §4.2)
    /// and to the pin (§4.1). The backup key does not change.
    pub fn change_password(
        &self,
        old: &SecretString,
        new: &SecretString,
        pinned: &ServerIdentity,
    ) -> Result<()> {
        let recovered = self.recover(old, pinned)?;
        self.register_with_proof(new, &recovered.backup_key, pinned, recovered.proof)?;
        Ok(())
    }

    /// Deletes the record after proving `password` (e.g. when turning encrypted backups off).
    pub fn delete(&self, password: &SecretString, pinned: &ServerIdentity) -> Result<()> {
        let recovered = self.recover(password, pinned)?;
        self.delete_with_proof(recovered.proof)
    }

    /// Deletes the record with a proof from a recent [`recover`](Self::recover).
    pub fn delete_with_proof(&self, proof: RecoveryProof) -> Result<()> {
        self.post_empty(
            "/delete",
            &api::DeleteRequest {
                proof: proof.proof.expose_secret().to_owned(),
            },
        )
    }

    /// Forgot password: erases the record without a password. **The old backup key, and with it
    /// every backup encrypted under it, is lost for good.** Afterwards a new key can be registered.
    pub fn reset(&self) -> Result<()> {
        let resp = self
            .agent
            .delete(&self.url(""))
            .header("Authorization", &self.auth())
            .call()
            .map_err(|e| Error::Unreachable(Box::new(e)))?;
        Self::check(resp).map(|_| ())
    }

    /// The rollback commitment stored with this account's record (PROTOCOL.md §9.1): its
    /// sequence number and the opaque sealed bytes, or `None` if none is stored (or no backup key
    /// is registered). The vault cannot forge it but can withhold it or serve an older one: the
    /// caller must open it with its backup-key-derived key and compare with what it remembers.
    pub fn get_commitment(&self) -> Result<Option<(u64, Vec<u8>)>> {
        let mut resp = self
            .agent
            .get(&self.url("/commitment"))
            .header("Authorization", &self.auth())
            .call()
            .map_err(|e| Error::Unreachable(Box::new(e)))?;
        if resp.status().as_u16() == 404 {
            let body: Option<api::ErrorBody> = resp
                .body_mut()
                .with_config()
                .limit(64 * 1024)
                .read_json()
                .ok();
            return match body {
                Some(b) if b.error == ErrorCode::NoCommitment => Ok(None),
                Some(b) => Err(Error::Server {
                    status: 404,
                    code: b.error,
                    message: b.message,
                }),
                None => Err(Error::Server {
                    status: 404,
                    code: ErrorCode::Unknown,
                    message: "the vault does not support rollback commitments".into(),
                }),
            };
        }
        let got: api::CommitmentResponse = Self::parse(resp)?;
        let blob = api::b64std_decode(&got.commitment, "commitment")
            .map_err(|e| Error::Protocol(e.to_string()))?;
        chatvault_vault_core::validate_commitment(got.seq, &blob)
            .map_err(|e| Error::Protocol(e.to_string()))?;
        Ok(Some((got.seq, blob)))
    }

    /// Stores `commitment` (1 to 512 opaque bytes, sealed by the caller under a key derived from
    /// the backup key) with sequence number `seq` (≥ 1). The vault keeps it only if `seq` is
    /// higher than the stored one; otherwise it answers [`CommitmentPut::Stale`] with the stored
    /// sequence number (not an error). [`Error::NotRegistered`] if the account has no live record.
    pub fn put_commitment(&self, seq: u64, commitment: &[u8]) -> Result<CommitmentPut> {
        chatvault_vault_core::validate_commitment(seq, commitment)
            .map_err(|e| Error::InvalidInput(e.to_string()))?;
        let mut resp = self
            .agent
            .put(&self.url("/commitment"))
            .header("Authorization", &self.auth())
            .send_json(&api::PutCommitmentRequest {
                seq,
                commitment: api::b64std_encode(commitment),
            })
            .map_err(|e| Error::Unreachable(Box::new(e)))?;
        if resp.status().as_u16() == 409 {
            /// Any 409 body: `stale_commitment` carries `current_seq`.
            #[derive(serde::Deserialize)]
            struct Conflict {
                error: ErrorCode,
                #[serde(default)]
                message: String,
                current_seq: Option<u64>,
            }
            let body: Option<Conflict> = resp
                .body_mut()
                .with_config()
                .limit(64 * 1024)
                .read_json()
                .ok();
            return match body {
                Some(Conflict {
                    current_seq: Some(current_seq),
                    ..
                }) => Ok(CommitmentPut::Stale { current_seq }),
                Some(c) if c.error == ErrorCode::Conflict => Err(Error::Retry(c.message)),
                Some(c) if c.error == ErrorCode::NotRegistered => Err(Error::NotRegistered),
                Some(c) => Err(Error::Server {
                    status: 409,
                    code: c.error,
                    message: c.message,
                }),
                None => Err(Error::Protocol("malformed 409 answer".into())),
            };
        }
        Self::check(resp).map(|_| CommitmentPut::Stored)
    }
}

fn check_versions(suite: u16, record_version: u16) -> Result<()> {
    if suite != chatvault_vault_core::SUITE_ID
        || record_version != chatvault_vault_core::RECORD_VERSION
    {
        return Err(Error::UnsupportedVersion(format!(
            "suite {suite}, record version {record_version}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_rejects_plain_http_to_remote_host() {
        let t = || SecretString::from("t");
        assert!(VaultClient::new("http://vault.example", "alice", t()).is_err());
        assert!(VaultClient::new("http://127.0.0.1:8080", "alice", t()).is_ok());
        assert!(VaultClient::new("http://127.0.0.2:8080", "alice", t()).is_ok());
        assert!(VaultClient::new("http://localhost:1/", "alice", t()).is_ok());
        assert!(VaultClient::new("http://[::1]:1", "alice", t()).is_ok());
        assert!(VaultClient::new("http://127.0.0.1.evil.example", "alice", t()).is_err());
        assert!(VaultClient::new("https://vault.example", "alice", t()).is_ok());
        assert!(VaultClient::new("https://vault.example", "bad id", t()).is_err());
    }

    #[test]
    fn url_guard_rejects_userinfo_and_other_tricks() {
        for bad in [
            "http://localhost:1@evil.example/",
            "http://localhost@evil.example",
            "http://127.0.0.1:80@evil.example:80/",
            "https://user:pw@vault.example",
            "http://[::1]@evil.example",
            "http://evil.example#@localhost",
            "http://evil.example?@localhost",
            "http://evil.example\\@localhost",
            "ftp://localhost/",
            "http://0x7f000001.evil.example",
            "localhost:8700",
        ] {
            assert!(normalize_vault_url(bad).is_err(), "{bad} accepted");
        }
        // The WHATWG parser canonicalises these to loopback addresses.
        assert!(normalize_vault_url("http://0x7f000001:1").is_ok());
        assert!(normalize_vault_url("http://LOCALHOST:1").is_ok());
    }

    #[test]
    fn password_normalised_nfkc() {
        let n = |s: &str| normalize_password(&SecretString::from(s.to_owned())).to_string();
        assert_eq!(n("cafe\u{301}"), n("caf\u{e9}"));
        assert_eq!(n("\u{ff11}\u{ff12}\u{ff13}"), "123");
        assert_eq!(n("a\u{a0}b"), "a b");
        assert_eq!(n("\u{fb01}"), "fi");
        assert_ne!(n("Secret"), n("secret"));
        let long = "\u{fdfa}".repeat(10);
        assert!(n(&long).chars().count() == 180);
    }

    #[test]
    fn url_normalised_without_trailing_slash() {
        assert_eq!(
            normalize_vault_url("https://vault.example/").unwrap(),
            normalize_vault_url("https://vault.example").unwrap()
        );
        assert_eq!(
            normalize_vault_url("http://127.0.0.1:8700/").unwrap(),
            "http://127.0.0.1:8700"
        );
        assert_eq!(
            normalize_vault_url("https://vault.example/base/").unwrap(),
            "https://vault.example/base"
        );
    }

    /// A binding key from a real (in-memory) login, for the redaction test.
    fn test_binding() -> ProofBinding {
        use chatvault_vault_core::*;
        let mut rng = rand_core::OsRng;
        let vault = Vault::new(VaultKeys::generate(&mut rng), VaultConfig::default());
        let account = AccountId::new("a").unwrap();
        let (reg, req) = RegistrationClient::start(&mut rng, &account, b"pw").unwrap();
        let st = vault.register_start(&mut rng, 0, &account, &req).unwrap();
        let out = reg
            .finish(
                &mut rng,
                b"pw",
                RegistrationAnswer {
                    response: &st.response,
                    ticket: &st.ticket,
                    signature: &st.signature,
                    server_identity: st.server_identity,
                },
                &BackupKey::from_bytes([1; 32]),
                KsfParams::INSECURE_FOR_TESTS,
                None,
            )
            .unwrap();
        let new = vault
            .register_finish(
                &mut rng,
                0,
                &account,
                &AccountState::NoRecord { generation: 0 },
                RegistrationFinish {
                    ticket: &st.ticket,
                    upload: &out.upload,
                    wrapped_key: out.wrapped_key.as_bytes(),
                    ksf: KsfParams::INSECURE_FOR_TESTS,
                    proof: None,
                    binding: None,
                },
                10,
            )
            .unwrap();
        let record = vault
            .open_record(&account, new.generation, &new.sealed, &new.counter)
            .unwrap();
        let counted = new.counter.count_guess().unwrap();
        let (rc, ke1) = RecoveryClient::start(&mut rng, &account, b"pw").unwrap();
        let s = vault
            .recover_start(&mut rng, 0, &account, Some((&record, &counted)), &ke1, 10)
            .unwrap();
        let params = Ke2Params {
            ksf: s.ksf,
            suite: SUITE_ID,
            record_version: RECORD_VERSION,
            server_identity: s.server_identity,
        };
        let (ke3, unwrapper) = rc
            .finish(&mut rng, b"pw", &s.ke2, params, &vault.server_identity())
            .unwrap();
        let login = vault.open_login_state(0, &account, &s.state).unwrap();
        let session = login.finish(&account, &ke3).unwrap();
        let (proof, _) = vault.issue_proof(&mut rng, 0, &account, new.generation, &session);
        let release = vault.seal_release(&mut rng, &account, &session, &record.wrapped_key, &proof);
        unwrapper.open_release(&release).unwrap().binding
    }

    #[test]
    fn debug_redacts_token_and_key() {
        let c = VaultClient::new(
            "https://v.example",
            "alice",
            SecretString::from("tok-SECRET"),
        )
        .unwrap();
        assert!(!format!("{c:?}").contains("SECRET"));
        let r = Recovered {
            backup_key: Zeroizing::new([0xAB; 32]),
            proof: RecoveryProof {
                proof: SecretString::from("PROOF-SECRET"),
                binding: test_binding(),
                expires_at: 5,
            },
        };
        let s = format!("{r:?}");
        assert!(!s.contains("SECRET") && !s.contains("171"), "{s}");
    }

    #[test]
    fn error_messages_are_actionable() {
        assert_eq!(
            Error::WrongPassword { attempts_left: 3 }.to_string(),
            "wrong password (or no backup key is registered for this account); 3 attempt(s) left before the backup key is destroyed"
        );
        assert!(
            Error::Locked
                .to_string()
                .starts_with("locked: backup key destroyed")
        );
    }
}
