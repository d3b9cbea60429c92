//! Threshold mode (PROTOCOL.md §13): one account's backup key spread over `n` realms (each a
//! `chatvault-vault` run by an independent operator), `t` of which must take part in a recovery.
//!
//! [`ThresholdClient`] runs the client side of `chatvault-threshold` against the realms in
//! parallel (one thread per realm and phase). A recovery asks `t` realms and another one only
//! for each that is down, refuses or fails a check (PROTOCOL.md §13.9). It tolerates up to
//! `n − t` realms that are down or misbehave; errors name the realms that failed and why, and a
//! wrong password says how many guesses remain. Each realm's identity key is pinned: [`ThresholdClient::register`] returns
//! the ids to store, later calls take them with [`ThresholdClient::with_pins`].

use std::collections::VecDeque;
use std::fmt;

use chatvault_threshold::{
    self as th, Realm, RealmSet, Recover1Response, Recover2Request, Recover2Response,
    Recover3Request, Recover3Response, Register1Response, Register2Request, Register2Response,
};
use chatvault_vault_core::{AccountId, BackupKey, KsfParams};
use secrecy::ExposeSecret as _;
use secrecy::SecretString;
use serde::Serialize;
use serde::de::DeserializeOwned;
use zeroize::Zeroizing;

use crate::{Error, Result, VaultClient, normalize_password, normalize_vault_url};

pub use chatvault_threshold::RealmId;

/// One realm: its URL and the account token it accepts.
pub struct RealmEndpoint {
    /// Base URL (normalised like a vault URL).
    pub url: String,
    /// Account token for this realm (realms may trust different issuers).
    pub token: SecretString,
}

impl fmt::Debug for RealmEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RealmEndpoint({}, token redacted)", self.url)
    }
}

/// A completed threshold registration.
#[derive(Debug, Clone)]
pub struct ThresholdRegistered {
    /// The realm ids to pin, in realm order; `None` for a realm that was neither pinned nor
    /// reachable (it got no share; its id is learned the next time it answers).
    pub realm_ids: Vec<Option<RealmId>>,
    /// Realms that did not store the registration (at most `n − t`), one line each.
    pub warnings: Vec<String>,
}

/// A recovered backup key, with the realms that were skipped.
pub struct ThresholdRecovered {
    /// The backup key (zeroized on drop).
    pub backup_key: Zeroizing<[u8; 32]>,
    /// The realm ids (to pin on a new device), in realm order; `None` for a realm that was
    /// neither pinned nor reachable.
    pub realm_ids: Vec<Option<RealmId>>,
    /// Realms skipped (down, refused or misbehaving), one line each.
    pub warnings: Vec<String>,
}

impl fmt::Debug for ThresholdRecovered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ThresholdRecovered")
            .field("backup_key", &"(redacted)")
            .field("warnings", &self.warnings)
            .finish()
    }
}

/// Blocking client for one account on `n` realms.
pub struct ThresholdClient {
    realms: Vec<VaultClient>,
    urls: Vec<String>,
    threshold: u8,
    account: AccountId,
    pins: Vec<Option<RealmId>>,
    ksf: KsfParams,
    max_attempts: u32,
}

impl fmt::Debug for ThresholdClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ThresholdClient")
            .field("realms", &self.urls)
            .field("threshold", &self.threshold)
            .field("account", &self.account)
            .finish_non_exhaustive()
    }
}

fn th_error(e: th::Error) -> Error {
    match e {
        th::Error::WrongPassword { guesses_remaining } => Error::WrongPassword {
            attempts_left: guesses_remaining,
        },
        th::Error::NotEnoughRealms { .. } => Error::NotEnoughRealms(e.to_string()),
        th::Error::InvalidConfig(_) | th::Error::Core(_) => Error::InvalidInput(e.to_string()),
        other => Error::Protocol(other.to_string()),
    }
}

impl ThresholdClient {
    /// A client for `account_id` on `realms` with threshold `threshold` (`1 ≤ t ≤ n ≤ 16`;
    /// recommended `t > n/2`, PROTOCOL.md §13.10). Registrations use [`KsfParams::PRODUCTION`]
    /// and a limit of 10 guesses per realm.
    pub fn new(realms: Vec<RealmEndpoint>, threshold: u8, account_id: &str) -> Result<Self> {
        let account = AccountId::new(account_id)?;
        let mut clients = Vec::with_capacity(realms.len());
        let mut urls = Vec::with_capacity(realms.len());
        for r in realms {
            let url = normalize_vault_url(&r.url)?;
            if urls.contains(&url) {
                return Err(Error::InvalidInput(format!("realm {url} is listed twice")));
            }
            clients.push(VaultClient::new(&url, account_id, r.token)?);
            urls.push(url);
        }
        if threshold == 0 || usize::from(threshold) > urls.len() || urls.len() > th::MAX_REALMS {
            return Err(Error::InvalidInput(format!(
                "threshold {threshold} of {} realms: need 1 ≤ threshold ≤ realms ≤ 16",
                urls.len()
            )));
        }
        Ok(Self {
            realms: clients,
            urls,
            threshold,
            account,
            pins: Vec::new(),
            ksf: KsfParams::PRODUCTION,
            max_attempts: 10,
        })
    }

    /// Trusts each realm only with the given identity (in realm order).
    pub fn with_pins(self, pins: Vec<RealmId>) -> Result<Self> {
        self.with_partial_pins(pins.into_iter().map(Some).collect())
    }

    /// Like [`with_pins`](Self::with_pins) where some ids are unknown (`None`): those realms'
    /// ids are asked with `register1` and then authenticated by the registration (§13.1).
    pub fn with_partial_pins(mut self, pins: Vec<Option<RealmId>>) -> Result<Self> {
        if pins.len() != self.urls.len() {
            return Err(Error::InvalidInput(
                "one pinned realm id per realm is needed".into(),
            ));
        }
        self.pins = pins;
        Ok(self)
    }

    /// Trusts each realm's CA certificates in `pem` (see [`VaultClient::with_ca_pem`]).
    #[cfg(feature = "tls")]
    pub fn with_ca_pem(mut self, pem: &[u8]) -> Result<Self> {
        self.realms = self
            .realms
            .into_iter()
            .map(|c| c.with_ca_pem(pem))
            .collect::<Result<_>>()?;
        Ok(self)
    }

    /// Uses `ksf` for new registrations (tests only: cheaper parameters weaken the protection
    /// against a threshold of compromised realms).
    pub fn with_registration_ksf(mut self, ksf: KsfParams) -> Result<Self> {
        ksf.validate()?;
        self.ksf = ksf;
        Ok(self)
    }

    /// Guess limit per realm for new registrations (each realm also applies its own maximum).
    pub fn with_max_attempts(mut self, max_attempts: u32) -> Self {
        self.max_attempts = max_attempts;
        self
    }

    /// The realm URLs, in realm order.
    pub fn urls(&self) -> &[String] {
        &self.urls
    }

    /// Runs `f` for each `(0-based realm position, input)` in parallel: one thread per realm but
    /// the last, which runs on the calling thread.
    fn run<I: Sync, T: Send>(
        &self,
        jobs: &[(usize, I)],
        f: impl Fn(&VaultClient, &I) -> Result<T> + Sync,
    ) -> Vec<(u8, std::result::Result<T, String>)> {
        let Some(((last, last_input), rest)) = jobs.split_last() else {
            return Vec::new();
        };
        std::thread::scope(|s| {
            let handles: Vec<_> = rest
                .iter()
                .map(|(k, input)| {
                    let c = &self.realms[*k];
                    let f = &f;
                    (*k, s.spawn(move || f(c, input)))
                })
                .collect();
            let here = f(&self.realms[*last], last_input);
            let mut out: Vec<_> = handles
                .into_iter()
                .map(|(k, h)| {
                    let r = h
                        .join()
                        .unwrap_or_else(|_| Err(Error::Protocol("worker thread panicked".into())));
                    ((k + 1) as u8, r.map_err(|e| e.to_string()))
                })
                .collect();
            out.push(((*last + 1) as u8, here.map_err(|e| e.to_string())));
            out
        })
    }

    fn all(&self) -> Vec<(usize, ())> {
        (0..self.realms.len()).map(|k| (k, ())).collect()
    }

    fn post_realm<B: Serialize + Sync, R: DeserializeOwned>(
        c: &VaultClient,
        phase: &str,
        body: &B,
    ) -> Result<R> {
        let url = format!("{}/v1/realm/accounts/{}/{phase}", c.base, c.account);
        let resp = c
            .agent
            .post(&url)
            .header(
                "Authorization",
                &format!("Bearer {}", c.token.expose_secret()),
            )
            .send_json(body)
            .map_err(|e| Error::Unreachable(Box::new(e)))?;
        VaultClient::parse(resp)
    }

    /// The realm set and which ids are known: pinned ids, and for the others (first
    /// registration, new device) the ids the realms announce, which are then authenticated by
    /// the registration itself (PROTOCOL.md §13.1). A realm whose id is unknown (down, never
    /// pinned) gets a placeholder id that no answer verifies against.
    fn realm_set(&self) -> Result<(RealmSet, Vec<Option<RealmId>>)> {
        let mut ids: Vec<Option<RealmId>> = if self.pins.is_empty() {
            vec![None; self.urls.len()]
        } else {
            self.pins.clone()
        };
        let unknown: Vec<(usize, ())> = ids
            .iter()
            .enumerate()
            .filter(|(_, id)| id.is_none())
            .map(|(k, _)| (k, ()))
            .collect();
        for (i, r) in self.run(&unknown, |c, _| {
            Self::post_realm::<_, Register1Response>(c, "register1", &Empty {})
        }) {
            if let Ok(r) = r {
                ids[usize::from(i) - 1] = Some(r.realm_id);
            }
        }
        let realms = ids
            .iter()
            .zip(&self.urls)
            .enumerate()
            .map(|(k, (id, url))| Realm {
                // A realm whose id is unknown gets a placeholder that no answer verifies against.
                id: id.unwrap_or(th::B64([k as u8; 32])),
                name: url.clone(),
            })
            .collect();
        Ok((
            RealmSet::new(realms, self.threshold).map_err(th_error)?,
            ids,
        ))
    }

    /// Registers `backup_key` behind `password` on every reachable realm (at least `t` must
    /// store it). Replaces any registration this account has at those realms (the realms ask for
    /// a recent token for that).
    pub fn register(
        &self,
        password: &SecretString,
        backup_key: &[u8; 32],
    ) -> Result<ThresholdRegistered> {
        let (set, known) = self.realm_set()?;
        let pw = normalize_password(password);
        let key = BackupKey::from_bytes(*backup_key);
        let (pending, requests) = th::register(
            &mut rand_core::OsRng,
            &set,
            &self.account,
            pw.as_bytes(),
            &key,
            self.ksf,
            self.max_attempts,
        )
        .map_err(th_error)?;
        let jobs: Vec<(usize, Register2Request)> = requests
            .into_iter()
            .map(|(i, r)| (usize::from(i) - 1, r))
            .collect();
        let answers = self.run(&jobs, |c, req| {
            Self::post_realm::<_, Register2Response>(c, "register2", req)
        });
        let done = pending.finish(answers).map_err(th_error)?;
        Ok(ThresholdRegistered {
            realm_ids: known,
            warnings: done.failures,
        })
    }

    /// Recovers the backup key with `password`. Only `t` realms are asked (the first ones in
    /// realm order); another realm is asked only when one of them is down, refuses, holds another
    /// registration or gives an answer whose signature or proof does not verify (PROTOCOL.md
    /// §13.9). Each realm that evaluates counts one guess; a wrong password gives
    /// [`Error::WrongPassword`] with the guesses left, and when a threshold of realms destroyed
    /// the registration, [`Error::Locked`].
    pub fn recover(&self, password: &SecretString) -> Result<ThresholdRecovered> {
        let (set, known) = self.realm_set()?;
        let mut untried: VecDeque<usize> = (0..set.len()).collect();
        let chosen = self.choose_registration(&set, &mut untried)?;
        let (unlocked, tags) = self.evaluate(chosen, password, &mut untried)?;
        let (key, warnings) = self.release(set.len(), unlocked, tags)?;
        Ok(ThresholdRecovered {
            backup_key: key.into_zeroizing(),
            realm_ids: known,
            warnings,
        })
    }

    /// recover1: asks `t` realms (taken from `untried`) which registration they hold, and all
    /// the others if those do not agree on one.
    fn choose_registration(
        &self,
        set: &RealmSet,
        untried: &mut VecDeque<usize>,
    ) -> Result<th::Chosen> {
        let (n, t) = (set.len(), usize::from(self.threshold));
        let mut r1 = Vec::new();
        let mut wave = t;
        loop {
            let ask: Vec<(usize, ())> = untried
                .drain(..wave.min(untried.len()))
                .map(|k| (k, ()))
                .collect();
            r1.extend(self.run(&ask, Self::recover1));
            let locked = r1
                .iter()
                .filter(|(_, r)| r.as_ref().is_err_and(|e: &String| e.starts_with("locked")))
                .count();
            if locked > n - t {
                return Err(Error::Locked);
            }
            match th::Recovery::new(set.clone(), self.account.clone()).choose(r1.clone()) {
                Ok(chosen) => return Ok(chosen),
                Err(e) if untried.is_empty() => {
                    let not_registered = Error::NotRegistered.to_string();
                    if r1
                        .iter()
                        .filter(|(_, r)| r.as_ref().is_err_and(|e| *e == not_registered))
                        .count()
                        > n - t
                    {
                        return Err(Error::NotRegistered);
                    }
                    return Err(th_error(e));
                }
                Err(_) => wave = untried.len(),
            }
        }
    }

    /// One realm's recover1 answer.
    fn recover1(c: &VaultClient, _: &()) -> Result<Recover1Response> {
        Self::post_realm::<_, Recover1Response>(c, "recover1", &Empty {})
    }

    /// recover2: the blinded password to `t` realms holding the chosen registration, one more
    /// for each that fails or lies (asking the untried realms which registration they hold when
    /// the candidates run out), until `t` verified evaluations unlock.
    fn evaluate(
        &self,
        chosen: th::Chosen,
        password: &SecretString,
        untried: &mut VecDeque<usize>,
    ) -> Result<th::UnlockStep> {
        let mut candidates: VecDeque<u8> = chosen.realms().iter().copied().collect();
        let pw = normalize_password(password);
        let (mut blinded, req): (_, Recover2Request) = chosen
            .blind(&mut rand_core::OsRng, pw.as_bytes())
            .map_err(th_error)?;
        let mut wave = usize::from(self.threshold);
        loop {
            if candidates.len() < wave && !untried.is_empty() {
                // The realms not asked yet: which of them hold the chosen registration?
                let ask: Vec<(usize, ())> = untried.drain(..).map(|k| (k, ())).collect();
                candidates.extend(blinded.admit(self.run(&ask, Self::recover1)));
            }
            let ask: Vec<(usize, ())> = candidates
                .drain(..wave.min(candidates.len()))
                .map(|i| (usize::from(i) - 1, ()))
                .collect();
            if ask.is_empty() {
                return Err(th_error(blinded.not_enough()));
            }
            let r2 = self.run(&ask, |c, _| {
                Self::post_realm::<_, Recover2Response>(c, "recover2", &req)
            });
            blinded.accept(r2);
            match blinded.try_unlock().map_err(th_error)? {
                Some(done) => return Ok(done),
                None => wave = blinded.missing().max(1),
            }
        }
    }

    /// recover3: the unlock tags to the realms that evaluated, another realm for each release
    /// that fails; returns the backup key and the warnings about realms that failed.
    fn release(
        &self,
        n: usize,
        mut unlocked: th::Unlocked,
        tags: Vec<(u8, Recover3Request)>,
    ) -> Result<(BackupKey, Vec<String>)> {
        let mut asked: Vec<u8> = tags.iter().map(|(i, _)| *i).collect();
        let mut jobs: Vec<(usize, Recover3Request)> = tags
            .into_iter()
            .map(|(i, r)| (usize::from(i) - 1, r))
            .collect();
        loop {
            let r3 = self.run(&jobs, |c, req| {
                Self::post_realm::<_, Recover3Response>(c, "recover3", req)
            });
            unlocked.accept(r3);
            if let Some(done) = unlocked.try_finish().map_err(th_error)? {
                return Ok(done);
            }
            let more: Vec<u8> = (1..=n as u8)
                .filter(|i| !asked.contains(i))
                .take(unlocked.missing())
                .collect();
            if more.is_empty() {
                return Err(th_error(unlocked.not_enough()));
            }
            asked.extend(&more);
            jobs = more
                .into_iter()
                .filter_map(|i| Some((usize::from(i) - 1, unlocked.request(i)?)))
                .collect();
        }
    }

    /// Changes the password: recovers with `old` (one guess per realm if wrong), then registers
    /// the same backup key behind `new` (a new registration version replaces the old one).
    pub fn change_password(&self, old: &SecretString, new: &SecretString) -> Result<Vec<String>> {
        let recovered = self.recover(old)?;
        let done = self.register(new, &recovered.backup_key)?;
        Ok(done.warnings)
    }

    /// Deletes the registration at every realm; realms that could not be reached are named (their
    /// share alone is useless, but delete it there later).
    pub fn delete(&self) -> Result<Vec<String>> {
        let answers = self.run(&self.all(), |c, _| {
            let url = format!("{}/v1/realm/accounts/{}/delete", c.base, c.account);
            let resp = c
                .agent
                .post(&url)
                .header(
                    "Authorization",
                    &format!("Bearer {}", c.token.expose_secret()),
                )
                .send_json(Empty {})
                .map_err(|e| Error::Unreachable(Box::new(e)))?;
            VaultClient::check(resp).map(|_| ())
        });
        Ok(answers
            .into_iter()
            .filter_map(|(i, r)| {
                r.err()
                    .map(|e| format!("{}: {e}", self.urls[usize::from(i) - 1]))
            })
            .collect())
    }
}

/// The empty JSON object of `register1`, `recover1` and `delete`.
#[derive(Serialize)]
struct Empty {}
