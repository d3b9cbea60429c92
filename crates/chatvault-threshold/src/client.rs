//! The client side: registration (`register1` → `register2`) and recovery (`recover1` →
//! `recover2` → `recover3`) as typed states, each consuming the previous one (PROTOCOL.md
//! §13.3, §13.8).
//!
//! The caller does the I/O: it sends each request to each realm and hands every realm's answer
//! back as `(share_index, Result<response, reason>)`, where `reason` says why the realm gave no
//! usable answer (down, HTTP error, refused). Realms that answer wrongly (bad signature, bad
//! proof, bad commitment) are skipped and named in the error if fewer than `t` usable answers
//! remain, and in [`Unlocked::faults`] otherwise.

use std::collections::BTreeMap;

use chatvault_vault_core::{AccountId, BackupKey, KsfParams};
use curve25519_dalek::ristretto::RistrettoPoint;
use curve25519_dalek::scalar::Scalar;
use ed25519_dalek::SigningKey;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, Zeroizing};

use crate::error::{Error, Result};
use crate::kdf;
use crate::labels;
use crate::messages::*;
use crate::oprf;
use crate::shamir;
use crate::sign;
use crate::types::{B64, RealmSet, RegistrationVersion, Secret32};

/// One realm's answer as the caller saw it: the response, or why there is none.
pub type Answer<T> = (u8, core::result::Result<T, String>);

fn unlock_tag(
    unlock_key: &[u8; 32],
    set: &RealmSet,
    version: &RegistrationVersion,
    index: u8,
) -> [u8; 32] {
    let id = set.realm(index).expect("index checked by caller").id;
    kdf::mac(
        unlock_key,
        labels::UNLOCK_TAG,
        &[&id.0, &version.0, &[index]],
    )
}

fn secret_commitment(
    unlock_key: &[u8; 32],
    set: &RealmSet,
    version: &RegistrationVersion,
    index: u8,
    scalar_share: &[u8; 32],
    encrypted: &[u8; ENCRYPTED_SECRET_LEN],
) -> [u8; 32] {
    let id = set.realm(index).expect("index checked by caller").id;
    kdf::mac(
        unlock_key,
        labels::SECRET_COMMITMENT,
        &[&id.0, &version.0, &[index], scalar_share, encrypted],
    )
}

fn random_nonzero_scalar(rng: &mut impl rand_core::CryptoRngCore) -> Scalar {
    loop {
        let s = shamir::random_scalar(rng);
        if s != Scalar::ZERO {
            return s;
        }
    }
}

fn not_enough(phase: &'static str, needed: usize, usable: usize, failures: &[String]) -> Error {
    Error::NotEnoughRealms {
        phase,
        needed,
        usable,
        failures: if failures.is_empty() {
            "none".into()
        } else {
            failures.join("; ")
        },
    }
}

/// Registration after `register1`: the `register2` requests were built and sent.
#[derive(Debug)]
pub struct RegistrationPending {
    set: RealmSet,
    account: AccountId,
    version: RegistrationVersion,
}

/// A completed registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    /// The new registration version.
    pub version: RegistrationVersion,
    /// Share indices of the realms that stored it.
    pub stored_at: Vec<u8>,
    /// Realms that did not store it, with the reason.
    pub failures: Vec<String>,
}

/// Builds one `register2` request per realm (PROTOCOL.md §13.3): stretches the password, shares
/// a fresh OPRF root key and a fresh encryption scalar, commits to the OPRF result, signs each
/// realm's OPRF public key with a throw-away key and drops it. The caller has checked each realm
/// with `register1` (its id matches the pin).
pub fn register(
    rng: &mut impl rand_core::CryptoRngCore,
    set: &RealmSet,
    account: &AccountId,
    password: &[u8],
    backup_key: &BackupKey,
    ksf: KsfParams,
    max_attempts: u32,
) -> Result<(RegistrationPending, Vec<(u8, Register2Request)>)> {
    ksf.validate_registration()?;
    let (t, n) = (usize::from(set.threshold), set.len());
    shamir::check_config(t, n)?;
    let mut v = [0u8; 16];
    rng.fill_bytes(&mut v);
    let version = B64(v);
    let stretched = kdf::stretch(password, &version.0, account, &ksf)?;

    let mut root = random_nonzero_scalar(rng);
    let key_shares = Zeroizing::new(shamir::split(rng, &root, t, n)?);
    let out = oprf::evaluate_unblinded(&root, stretched.access_key.as_ref());
    root.zeroize();
    let commitment: [u8; 32] = out[..32].try_into().expect("64-byte output");
    let unlock_key = Zeroizing::new(<[u8; 32]>::try_from(&out[32..]).expect("64-byte output"));

    let signing = SigningKey::generate(rng);
    let verifying = B64(signing.verifying_key().to_bytes());

    let mut enc_scalar = random_nonzero_scalar(rng);
    let enc_shares = Zeroizing::new(shamir::split(rng, &enc_scalar, t, n)?);
    let enc_key = kdf::encryption_key(&stretched.encryption_seed, enc_scalar.as_bytes());
    enc_scalar.zeroize();
    let encrypted = kdf::encrypt_secret(&enc_key, &version.0, account, backup_key.expose_secret());

    let mut requests = Vec::with_capacity(n);
    for (k, (share, enc_share)) in key_shares.iter().zip(enc_shares.iter()).enumerate() {
        let index = u8::try_from(k + 1).expect("n ≤ 16");
        let id = set.realm(index).expect("index in range").id;
        let public = B64(oprf::public_key(share).compress().to_bytes());
        requests.push((
            index,
            Register2Request {
                version,
                share_index: index,
                threshold: set.threshold,
                realms: u8::try_from(n).expect("n ≤ 16"),
                ksf,
                max_attempts,
                oprf_key_share: Secret32(share.to_bytes()),
                oprf_public_key: public,
                verifying_key: verifying,
                signature: sign::sign(&signing, &version, &id, index, &public),
                unlock_key_commitment: B64(commitment),
                unlock_tag: B64(unlock_tag(&unlock_key, set, &version, index)),
                encryption_scalar_share: Secret32(enc_share.to_bytes()),
                encrypted_secret: B64(encrypted),
                secret_commitment: B64(secret_commitment(
                    &unlock_key,
                    set,
                    &version,
                    index,
                    enc_share.as_bytes(),
                    &encrypted,
                )),
            },
        ));
    }
    drop(signing); // zeroized on drop: no later registration can be signed with it
    Ok((
        RegistrationPending {
            set: set.clone(),
            account: account.clone(),
            version,
        },
        requests,
    ))
}

impl RegistrationPending {
    /// The version being registered.
    pub fn version(&self) -> &RegistrationVersion {
        &self.version
    }

    /// Succeeds if at least `t` realms stored the registration, each proven by a receipt signed
    /// with its pinned identity key.
    pub fn finish(self, answers: Vec<Answer<Register2Response>>) -> Result<Registered> {
        let mut stored_at = Vec::new();
        let mut failures = Vec::new();
        for (index, a) in answers {
            let name = self.set.name(index);
            match (a, self.set.realm(index)) {
                (Ok(r), Some(realm))
                    if crate::realm_keys::verify_register_receipt(
                        &realm.id,
                        &self.account,
                        &self.version,
                        index,
                        &r.receipt,
                    ) =>
                {
                    if !stored_at.contains(&index) {
                        stored_at.push(index)
                    }
                }
                (Ok(_), _) => failures.push(format!(
                    "{name}: receipt not signed by the pinned realm identity key"
                )),
                (Err(e), _) => failures.push(format!("{name}: {e}")),
            }
        }
        let t = usize::from(self.set.threshold);
        if stored_at.len() < t {
            return Err(not_enough("register", t, stored_at.len(), &failures));
        }
        Ok(Registered {
            version: self.version,
            stored_at,
            failures,
        })
    }
}

/// Recovery before `recover1`.
#[derive(Debug)]
pub struct Recovery {
    set: RealmSet,
    account: AccountId,
}

/// Recovery after `recover1`: a threshold of realms agree on a registration.
#[derive(Debug)]
pub struct Chosen {
    set: RealmSet,
    account: AccountId,
    version: RegistrationVersion,
    ksf: KsfParams,
    realms: Vec<u8>,
    failures: Vec<String>,
}

/// The outcome of a successful `recover2`: the unlocked state and the `recover3` requests, one
/// per realm of the agreeing group (share index, request).
pub type UnlockStep = (Unlocked, Vec<(u8, Recover3Request)>);

/// Verified evaluations grouped by `(vk_tmp, unlock-key commitment)`: `(index, Z_i, guesses
/// left)`.
type EvalGroups = BTreeMap<([u8; 32], [u8; 32]), Vec<(u8, RistrettoPoint, u32)>>;

/// Recovery after `recover2` was built: the password is stretched and blinded.
///
/// Answers can be handed over in several rounds ([`accept`](Self::accept), then
/// [`try_unlock`](Self::try_unlock)): a client asks `t` realms first and another realm only when
/// one of them fails or lies (PROTOCOL.md §13.9); [`finish`](Self::finish) does both at once.
pub struct Blinded {
    set: RealmSet,
    account: AccountId,
    version: RegistrationVersion,
    ksf: KsfParams,
    blind: oprf::Blind,
    blinded: RistrettoPoint,
    blinded_bytes: B64<32>,
    encryption_seed: Zeroizing<[u8; 32]>,
    groups: EvalGroups,
    failures: Vec<String>,
}

/// Recovery after `recover2`: the password was right; the unlock tags are ready.
pub struct Unlocked {
    set: RealmSet,
    account: AccountId,
    version: RegistrationVersion,
    unlock_key: Zeroizing<[u8; 32]>,
    encryption_seed: Zeroizing<[u8; 32]>,
    good: Vec<(u8, Scalar)>,
    encrypted: Option<[u8; ENCRYPTED_SECRET_LEN]>,
    failures: Vec<String>,
}

impl Drop for Unlocked {
    fn drop(&mut self) {
        for (_, s) in self.good.iter_mut() {
            s.zeroize();
        }
    }
}

impl Recovery {
    /// Starts a recovery of `account`'s backup key from `set`.
    pub fn new(set: RealmSet, account: AccountId) -> Self {
        Self { set, account }
    }

    /// `recover1`: keeps the realms that agree on one registration (version, KSF, t, n) and whose
    /// share index is their position; needs `t` of them. The KSF must be within the client's
    /// recovery ceiling (PROTOCOL.md §2.1).
    pub fn choose(self, answers: Vec<Answer<Recover1Response>>) -> Result<Chosen> {
        let t = usize::from(self.set.threshold);
        let mut failures = Vec::new();
        let mut groups: BTreeMap<([u8; 16], [u32; 3]), Vec<u8>> = BTreeMap::new();
        for (index, a) in answers {
            let name = self.set.name(index);
            match a {
                Err(e) => failures.push(format!("{name}: {e}")),
                Ok(r)
                    if self.set.realm(index).is_none()
                        || r.share_index != index
                        || r.threshold != self.set.threshold
                        || usize::from(r.realms) != self.set.len() =>
                {
                    failures.push(format!(
                        "{name}: holds a registration for another realm configuration \
                         (share {} of a {}-of-{})",
                        r.share_index, r.threshold, r.realms
                    ))
                }
                Ok(r) if r.ksf.validate_recovery().is_err() => failures.push(format!(
                    "{name}: asks for Argon2id parameters beyond the client's ceiling"
                )),
                Ok(r) => {
                    let g = groups
                        .entry((r.version.0, [r.ksf.m_kib, r.ksf.t, r.ksf.p]))
                        .or_default();
                    if !g.contains(&index) {
                        g.push(index);
                    }
                }
            }
        }
        let best = groups.into_iter().max_by_key(|(_, v)| v.len());
        match best {
            Some(((version, [m, tt, p]), realms)) if realms.len() >= t => Ok(Chosen {
                set: self.set,
                account: self.account,
                version: B64(version),
                ksf: KsfParams { m_kib: m, t: tt, p },
                realms,
                failures,
            }),
            best => {
                let usable = best.map(|(_, v)| v.len()).unwrap_or(0);
                if usable > 0 {
                    failures.push(format!(
                        "only {usable} realm(s) agree on the current registration"
                    ));
                }
                Err(not_enough("recover1", t, usable, &failures))
            }
        }
    }
}

impl Chosen {
    /// The realms to send `recover2` to (share indices).
    pub fn realms(&self) -> &[u8] {
        &self.realms
    }

    /// The Argon2id parameters of the registration.
    pub fn ksf(&self) -> KsfParams {
        self.ksf
    }

    /// The chosen registration version.
    pub fn version(&self) -> &RegistrationVersion {
        &self.version
    }

    /// Stretches and blinds the password; the request is the same for every realm.
    pub fn blind(
        self,
        rng: &mut impl rand_core::CryptoRngCore,
        password: &[u8],
    ) -> Result<(Blinded, Recover2Request)> {
        let stretched = kdf::stretch(password, &self.version.0, &self.account, &self.ksf)?;
        let (blind, blinded) = oprf::blind(rng, stretched.access_key.as_ref());
        let blinded_bytes = B64(blinded.compress().to_bytes());
        let req = Recover2Request {
            version: self.version,
            blinded: blinded_bytes,
        };
        Ok((
            Blinded {
                set: self.set,
                account: self.account,
                version: self.version,
                ksf: self.ksf,
                blind,
                blinded,
                blinded_bytes,
                encryption_seed: stretched.encryption_seed,
                groups: BTreeMap::new(),
                failures: self.failures,
            },
            req,
        ))
    }
}

impl Blinded {
    /// Of further `recover1` answers (realms asked only after one of the first ones failed),
    /// the share indices of the realms that hold the chosen registration (same version and KSF,
    /// their own position, the configured `t` and `n`); the others are named in the faults.
    pub fn admit(&mut self, answers: Vec<Answer<Recover1Response>>) -> Vec<u8> {
        let mut agree = Vec::new();
        for (index, a) in answers {
            let name = self.set.name(index);
            match a {
                Err(e) => self.failures.push(format!("{name}: {e}")),
                Ok(r)
                    if self.set.realm(index).is_some()
                        && r.share_index == index
                        && r.threshold == self.set.threshold
                        && usize::from(r.realms) == self.set.len()
                        && r.version == self.version
                        && r.ksf == self.ksf =>
                {
                    if !agree.contains(&index) {
                        agree.push(index);
                    }
                }
                Ok(_) => self.failures.push(format!(
                    "{name}: holds another registration or realm configuration"
                )),
            }
        }
        agree
    }

    /// Verifies `recover2` answers and keeps the good evaluations: each realm's signature of its
    /// evaluation under the pinned realm id (§13.1), the throw-away signature of its OPRF public
    /// key (§13.6) and the DLEQ proof (§13.5). A realm failing any check is skipped and named.
    pub fn accept(&mut self, answers: Vec<Answer<Recover2Response>>) {
        for (index, a) in answers {
            let name = self.set.name(index);
            let r = match a {
                Err(e) => {
                    self.failures.push(format!("{name}: {e}"));
                    continue;
                }
                Ok(r) => r,
            };
            let Some(realm) = self.set.realm(index) else {
                continue;
            };
            let checked = (|| {
                let p = oprf::decode_point(r.oprf_public_key.as_bytes(), "public key").ok()?;
                let z = oprf::decode_point(r.evaluation.as_bytes(), "evaluation").ok()?;
                let pinned = crate::realm_keys::verify_evaluation(
                    &realm.id,
                    &self.account,
                    &self.version,
                    &self.blinded_bytes,
                    &r.evaluation,
                    &r.realm_signature,
                );
                let signed = pinned
                    && sign::verify(
                        &r.verifying_key,
                        &r.signature,
                        &self.version,
                        &realm.id,
                        index,
                        &r.oprf_public_key,
                    );
                let proven = signed
                    && oprf::verify(
                        &r.proof.0,
                        (&p, &r.oprf_public_key.0),
                        (&self.blinded, &self.blinded_bytes.0),
                        (&z, &r.evaluation.0),
                    );
                proven.then_some(z)
            })();
            match checked {
                Some(z) => {
                    let g = self
                        .groups
                        .entry((r.verifying_key.0, r.unlock_key_commitment.0))
                        .or_default();
                    if !g.iter().any(|(i, _, _)| *i == index) {
                        g.push((index, z, r.max_attempts.saturating_sub(r.attempts)));
                    }
                }
                None => self.failures.push(format!(
                    "{name}: evaluation proof, key signature or realm identity signature invalid \
                     (misbehaving realm, skipped)"
                )),
            }
        }
    }

    /// How many more verified evaluations the largest agreeing group needs to reach `t`.
    pub fn missing(&self) -> usize {
        let best = self.groups.values().map(Vec::len).max().unwrap_or(0);
        usize::from(self.set.threshold).saturating_sub(best)
    }

    /// The error for a recovery that ends without `t` agreeing verified evaluations.
    pub fn not_enough(&self) -> Error {
        let best = self.groups.values().map(Vec::len).max().unwrap_or(0);
        not_enough(
            "recover2",
            usize::from(self.set.threshold),
            best,
            &self.failures,
        )
    }

    /// Once `t` verified evaluations agree on `(vk_tmp, commitment)`: combines `t` of them and
    /// checks the result against the commitment (constant time). `Ok(None)`: not yet `t`
    /// (ask another realm, or give up with [`not_enough`](Self::not_enough)). A mismatch is a
    /// wrong password ([`Error::WrongPassword`]), never a reason to ask more realms. Returns the
    /// `recover3` requests for every realm of the group.
    pub fn try_unlock(&mut self) -> Result<Option<UnlockStep>> {
        let t = usize::from(self.set.threshold);
        let Some(((_, commitment), group)) = self
            .groups
            .iter()
            .max_by_key(|(_, v)| v.len())
            .filter(|(_, v)| v.len() >= t)
        else {
            return Ok(None);
        };
        let evaluations: Vec<(u8, RistrettoPoint)> =
            group.iter().take(t).map(|(i, z, _)| (*i, *z)).collect();
        let out = self.blind.finalize(&evaluations)?;
        if !bool::from(out[..32].ct_eq(commitment)) {
            let guesses_remaining = group.iter().map(|(_, _, left)| *left).min().unwrap_or(0);
            return Err(Error::WrongPassword { guesses_remaining });
        }
        let unlock_key = Zeroizing::new(<[u8; 32]>::try_from(&out[32..]).expect("64 bytes"));
        let requests = group
            .iter()
            .map(|(i, _, _)| {
                (
                    *i,
                    Recover3Request {
                        version: self.version,
                        unlock_tag: B64(unlock_tag(&unlock_key, &self.set, &self.version, *i)),
                    },
                )
            })
            .collect();
        Ok(Some((
            Unlocked {
                set: self.set.clone(),
                account: self.account.clone(),
                version: self.version,
                unlock_key,
                encryption_seed: self.encryption_seed.clone(),
                good: Vec::new(),
                encrypted: None,
                failures: std::mem::take(&mut self.failures),
            },
            requests,
        )))
    }

    /// `recover2` in one round: [`accept`](Self::accept) every answer, then
    /// [`try_unlock`](Self::try_unlock); fewer than `t` agreeing verified evaluations is
    /// [`Error::NotEnoughRealms`].
    pub fn finish(
        mut self,
        answers: Vec<Answer<Recover2Response>>,
    ) -> Result<(Unlocked, Vec<(u8, Recover3Request)>)> {
        self.accept(answers);
        match self.try_unlock()? {
            Some(done) => Ok(done),
            None => Err(self.not_enough()),
        }
    }
}

impl Unlocked {
    /// Realms skipped so far (down, refused, or misbehaving), one line each.
    pub fn faults(&self) -> &[String] {
        &self.failures
    }

    /// The `recover3` request for realm `index` (a realm asked because one of the group failed
    /// to release its share); `None` for an index outside the realm set.
    pub fn request(&self, index: u8) -> Option<Recover3Request> {
        self.set.realm(index)?;
        Some(Recover3Request {
            version: self.version,
            unlock_tag: B64(unlock_tag(
                &self.unlock_key,
                &self.set,
                &self.version,
                index,
            )),
        })
    }

    /// Keeps the `recover3` releases whose secret commitment verifies and that agree on the
    /// encrypted backup key; the others are skipped and named.
    pub fn accept(&mut self, answers: Vec<Answer<Recover3Response>>) {
        for (index, a) in answers {
            let name = self.set.name(index);
            let r = match a {
                Err(e) => {
                    self.failures.push(format!("{name}: {e}"));
                    continue;
                }
                Ok(r) => r,
            };
            if self.set.realm(index).is_none() || self.good.iter().any(|(i, _)| *i == index) {
                continue;
            }
            let expect = secret_commitment(
                &self.unlock_key,
                &self.set,
                &self.version,
                index,
                r.encryption_scalar_share.expose_secret(),
                &r.encrypted_secret.0,
            );
            let scalar = oprf::decode_scalar(r.encryption_scalar_share.expose_secret(), "share");
            match scalar {
                Ok(s) if bool::from(expect.ct_eq(&r.secret_commitment.0)) => {
                    self.encrypted.get_or_insert(r.encrypted_secret.0);
                    if self.encrypted == Some(r.encrypted_secret.0) {
                        self.good.push((index, s));
                    }
                }
                _ => self.failures.push(format!(
                    "{name}: released a share that does not match its commitment (skipped)"
                )),
            }
        }
    }

    /// How many more verified releases are needed to reach `t`.
    pub fn missing(&self) -> usize {
        usize::from(self.set.threshold).saturating_sub(self.good.len())
    }

    /// Once `t` releases verified: combines `t` scalar shares and decrypts the backup key.
    /// `Ok(None)`: not yet `t` (ask another realm, or give up with
    /// [`not_enough`](Self::not_enough)).
    pub fn try_finish(&mut self) -> Result<Option<(BackupKey, Vec<String>)>> {
        let t = usize::from(self.set.threshold);
        let (Some(encrypted), true) = (self.encrypted, self.good.len() >= t) else {
            return Ok(None);
        };
        let mut scalar = shamir::combine_scalars(&self.good[..t])?;
        let key = kdf::encryption_key(&self.encryption_seed, scalar.as_bytes());
        scalar.zeroize();
        let secret = kdf::decrypt_secret(&key, &self.version.0, &self.account, &encrypted)?;
        Ok(Some((
            BackupKey::from_bytes(*secret),
            std::mem::take(&mut self.failures),
        )))
    }

    /// The error for a recovery that ends without `t` verified releases.
    pub fn not_enough(&self) -> Error {
        not_enough(
            "recover3",
            usize::from(self.set.threshold),
            self.good.len(),
            &self.failures,
        )
    }

    /// `recover3` in one round: [`accept`](Self::accept) every release, then
    /// [`try_finish`](Self::try_finish); fewer than `t` is [`Error::NotEnoughRealms`].
    pub fn finish(
        mut self,
        answers: Vec<Answer<Recover3Response>>,
    ) -> Result<(BackupKey, Vec<String>)> {
        self.accept(answers);
        match self.try_finish()? {
            Some(done) => Ok(done),
            None => Err(self.not_enough()),
        }
    }
}
